//! Bit flips at random offsets, on a copy of a finished round's depot: 1 to 3 bits in random
//! files (packs, pack indexes, ref files, reflogs, the journal state, the failed log,
//! index.sqlite). Then `retro fsck` must not panic and must exit 0 or 5; `retro gc` may fail, but
//! if it succeeds every object that was readable and verified before the flips and still after
//! them (before gc) must still be readable: nothing intact is ever deleted. `retro repair` must
//! not panic (exit 0 or 5), and must not lose an intact object either.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use depot::{Depot, ObjectId};

use benchkit::Rng;

use crate::class::{Ctx, Tally};
use crate::proc;
use crate::round;

const DEADLINE: Duration = Duration::from_secs(300);

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if !matches!(name.as_str(), "lock" | "write.lock" | "config")
                && entry.metadata().is_ok_and(|m| m.len() > 0)
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every object id the store lists whose bytes read back and verify.
fn intact(dir: &Path) -> Result<HashSet<ObjectId>, depot::Error> {
    let depot = Depot::open(dir)?;
    let mut ids = Vec::new();
    depot.objects().for_each_id(&mut |id| {
        ids.push(id);
        Ok(())
    })?;
    Ok(ids
        .into_iter()
        .filter(|id| depot.read_object(id).is_ok())
        .collect())
}

/// Runs one flip run on a copy of `ctx.dir`.
pub fn run(ctx: &Ctx<'_>, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<Vec<String>> {
    let copy = ctx.tmp.join(format!("flipped-{}", ctx.tag));
    let _ = std::fs::remove_dir_all(&copy);
    proc::copy_tree(ctx.dir, &copy)?;
    let mut problems = Vec::new();
    let before = intact(&copy)?;
    let candidates = files(&copy);
    anyhow::ensure!(
        !candidates.is_empty(),
        "no files to flip in {}",
        copy.display()
    );
    let mut flipped = Vec::new();
    for _ in 0..rng.range(1, 4) {
        let file = &candidates[rng.index(candidates.len())];
        let len = std::fs::metadata(file)?.len();
        let offset = rng.range(0, len);
        let bit = rng.range(0, 8) as u8;
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)?;
        let mut byte = [0u8];
        handle.read_exact_at(&mut byte, offset)?;
        byte[0] ^= 1 << bit;
        handle.write_all_at(&byte, offset)?;
        tally.flips += 1;
        flipped.push(format!(
            "{} @{offset} bit {bit}",
            file.strip_prefix(&copy).unwrap_or(file).display()
        ));
    }
    tally.flip_runs += 1;
    let place = format!(
        "[{}, flipped {flipped:?} in the copy {} of {}]",
        ctx.tag,
        copy.display(),
        ctx.dir.display()
    );
    // What is still intact after the flips (a depot that no longer opens: nothing is known).
    let still: HashSet<ObjectId> = match intact(&copy) {
        Ok(now) => now.intersection(&before).copied().collect(),
        Err(_) => HashSet::new(),
    };
    let retro = |args: &[&str]| proc::run(round::retro(ctx.setup, &copy).args(args), DEADLINE);
    let fsck = retro(&["fsck"])?;
    if fsck.panicked() || !matches!(fsck.code, Some(0 | 5)) {
        problems.push(format!(
            "retro fsck after the flips: {} (expected exit 0 or 5, no panic) {place}",
            fsck.describe()
        ));
    }
    let gc = retro(&["gc"])?;
    if gc.panicked() || gc.timed_out || (gc.code != Some(0) && !gc.clean_error()) {
        problems.push(format!(
            "retro gc after the flips: {} (expected success or a clean error) {place}",
            gc.describe()
        ));
    }
    if gc.code == Some(0) {
        tally.flip_gc_ok += 1;
        check_kept(&copy, &still, "gc", &place, &mut problems);
    }
    let repair = retro(&["repair"])?;
    if repair.panicked() || !matches!(repair.code, Some(0 | 5)) {
        problems.push(format!(
            "retro repair after the flips: {} (expected exit 0 or 5, no panic) {place}",
            repair.describe()
        ));
    }
    check_kept(&copy, &still, "repair", &place, &mut problems);
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&copy);
    }
    Ok(problems)
}

fn check_kept(
    copy: &Path,
    still: &HashSet<ObjectId>,
    after: &str,
    place: &str,
    problems: &mut Vec<String>,
) {
    if still.is_empty() {
        return;
    }
    let depot = match Depot::open(copy) {
        Ok(depot) => depot,
        Err(e) => {
            problems.push(format!(
                "after retro {after} the flipped depot no longer opens ({e}), and {} intact \
                 objects went with it {place}",
                still.len()
            ));
            return;
        }
    };
    let lost: Vec<&ObjectId> = still
        .iter()
        .filter(|id| depot.read_object(id).is_err())
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "retro {after} lost {} of the {} objects intact after the flips, e.g. {} {place}",
            lost.len(),
            still.len(),
            lost[0]
        ));
    }
}

//! Disk full at random points: a depot on a small tmpfs, filled close to full with a filler file
//! of random size, then `retro apply`, `retro gc` and `retro import` until one fails for want of
//! space. Each failure must be a clean error (a non-zero exit, a `retro: error:` line, no panic).
//! Then, with the filler deleted, the next command must succeed and leave no `.tmp-*` file, every
//! acknowledged command must still be there exactly once, and fsck must be clean.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use benchkit::Rng;

use crate::check::{self, Ack};
use crate::class::{Ctx, Tally};
use crate::domain::ACCOUNTS;
use crate::proc;
use crate::round;

const DEADLINE: Duration = Duration::from_secs(120);

fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let mut stat: libc::statvfs = unsafe_zeroed();
    // SAFETY: a valid C string and a statvfs to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    anyhow::ensure!(
        rc == 0,
        "statvfs {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    // The field types differ between platforms (u64 on x86-64 Linux).
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn unsafe_zeroed() -> libc::statvfs {
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Mounts a tmpfs of `kib` KiB on `dir`; the reason when that is impossible here.
fn mount(dir: &Path, kib: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount -t tmpfs exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).output();
    }
}

/// Runs one disk-full run; `Ok(None)` when the class cannot run here (the reason is recorded).
pub fn run(ctx: &Ctx<'_>, rng: &mut Rng, tally: &mut Tally) -> anyhow::Result<Vec<String>> {
    let mnt = ctx.tmp.join(format!("tmpfs-{}", ctx.tag));
    let kib = rng.range(1024, 3072);
    if let Err(reason) = mount(&mnt, kib) {
        println!("disk-full class skipped: {reason}");
        tally.diskfull_skipped = Some(reason);
        return Ok(Vec::new());
    }
    let guard = Mounted(&mnt);
    tally.diskfull_runs += 1;
    let dir = mnt.join("depot");
    let place = format!("[{}, tmpfs of {kib} KiB, depot {}]", ctx.tag, dir.display());
    let mut problems = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();
    round::prepare(&dir)?;
    let mut serial = 0u64;
    let mut apply = |rng: &mut Rng, acks: &mut Vec<Ack>| -> anyhow::Result<proc::Ran> {
        serial += 1;
        let cid = format!("{}d.{serial}", ctx.tag);
        let payload = serde_json::json!({"path": ACCOUNTS[rng.index(ACCOUNTS.len())],
            "name": "deposit", "params": {"amount": rng.range(1, 100), "cid": cid}});
        let ran = proc::run(
            round::retro(ctx.setup, &dir).args(["apply", "--json", &payload.to_string()]),
            DEADLINE,
        )?;
        if ran.code == Some(0) {
            if let Some(checkpoint) = serde_json::from_str::<serde_json::Value>(ran.stdout.trim())
                .ok()
                .and_then(|v| v["checkpoint"].as_str().map(str::to_owned))
            {
                acks.push(Ack {
                    cid,
                    checkpoint,
                    via: "cli",
                });
            }
        }
        Ok(ran)
    };
    for _ in 0..rng.range(3, 20) {
        let ran = apply(rng, &mut acks)?;
        if ran.code != Some(0) {
            problems.push(format!(
                "an apply with space to spare failed: {} {place}",
                ran.describe()
            ));
        }
    }
    // Fill it up, leaving a random few KiB.
    let filler = mnt.join("filler");
    let free = free_bytes(&mnt)?;
    let leave = rng.range(0, 96 * 1024);
    let size = free.saturating_sub(leave);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
    }
    let mut import_n = 0;
    let mut failed = false;
    for step in 0..200 {
        let (what, ran) = match rng.range(0, 10) {
            0..=5 => ("apply".to_owned(), apply(rng, &mut acks)?),
            6 | 7 => {
                let args = if rng.chance(0.5) {
                    vec!["gc"]
                } else {
                    vec!["gc", "--prune", "0"]
                };
                (
                    args.join(" "),
                    proc::run(round::retro(ctx.setup, &dir).args(&args), DEADLINE)?,
                )
            }
            _ => {
                import_n += 1;
                let mut text = String::new();
                let mut cids = Vec::new();
                for i in 0..rng.range(1, 30) {
                    let cid = format!("{}di{import_n}.{i}", ctx.tag);
                    text.push_str(
                        &serde_json::json!({"session": "torture-import",
                            "message": {"path": "imports/d", "name": "import", "params": {"cid": cid}},
                            "events": [{"partition": "imports/d", "name": "Imported",
                                "data": {"cid": cid, "pad": "x".repeat(rng.range(0, 2000) as usize)}}]})
                        .to_string(),
                    );
                    text.push('\n');
                    cids.push(cid);
                }
                // The import file lives off the tmpfs.
                let file = ctx
                    .tmp
                    .join(format!("diskfull-{}-{import_n}.jsonl", ctx.tag));
                std::fs::write(&file, text)?;
                let ran = proc::run(
                    round::retro(ctx.setup, &dir)
                        .args(["import", "--batch", "5"])
                        .arg(&file),
                    DEADLINE,
                )?;
                if ran.code == Some(0) {
                    acks.extend(cids.into_iter().map(|cid| Ack {
                        cid,
                        checkpoint: String::new(),
                        via: "import",
                    }));
                }
                ("import".to_owned(), ran)
            }
        };
        if ran.code == Some(0) {
            continue;
        }
        if !ran.clean_error() || ran.timed_out {
            problems.push(format!(
                "retro {what} on a full disk (step {step}): {} (expected a clean error: non-zero \
                 exit, a 'retro: error:' line, no panic) {place}",
                ran.describe()
            ));
        }
        tally.enospc += 1;
        failed = true;
        if rng.chance(0.5) {
            break;
        }
    }
    if !failed {
        problems.push(format!(
            "200 commands on a full disk and none failed {place}"
        ));
    }
    // Free the space: the next command must succeed, and clean up after the failed ones.
    std::fs::remove_file(&filler)?;
    let ran = apply(rng, &mut acks)?;
    if ran.code != Some(0) {
        problems.push(format!(
            "the first apply after freeing the space failed: {} {place}",
            ran.describe()
        ));
    }
    let temps = proc::temp_files(&dir);
    if !temps.is_empty() {
        problems.push(format!(
            "after freeing the space and one apply, temp files remain: {temps:?} {place}"
        ));
    }
    for args in [vec!["gc"], vec!["fsck"]] {
        let ran = proc::run(round::retro(ctx.setup, &dir).args(&args), DEADLINE)?;
        if ran.code != Some(0) {
            problems.push(format!(
                "retro {} after freeing the space failed: {} {place}",
                args.join(" "),
                ran.describe()
            ));
        }
    }
    let checked = check::check(&dir, &acks, rng);
    problems.extend(checked.problems.into_iter().map(|p| format!("{p} {place}")));
    if !problems.is_empty() {
        // Keep the evidence off the tmpfs.
        let kept = ctx.tmp.join(format!("diskfull-depot-{}", ctx.tag));
        if proc::copy_tree(&dir, &kept).is_ok() {
            problems.push(format!(
                "the disk-full depot is copied to {}",
                kept.display()
            ));
        }
    }
    drop(guard);
    let _ = std::fs::remove_dir(&mnt);
    Ok(problems)
}

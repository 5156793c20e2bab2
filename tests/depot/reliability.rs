//! Regression tests for the reliability defects found by trying to break retro (issue 17): each
//! test rebuilds, by hand, the state a crash, a second process or bit rot left behind, and checks
//! that the depot opens, serves what it acknowledged, reports damage instead of hiding it, never
//! deletes the only copy of anything, and repairs what can be derived.
//!
//! Layout relied on: `packs/pack-<16 digits>.pack` (`.idx` beside it once sealed), temp files
//! `.tmp-<pid>-<n>-<final name>`, `refs/heads/master`, `logs/refs/heads/master`, `logs/failed`.

use std::fs;
use std::path::{Path, PathBuf};

use depot::{Depot, GcOptions, Options};

use crate::common::*;

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Depot::init(&path).unwrap();
    (dir, path)
}

fn pack_path(depot: &Path, seq: u64) -> PathBuf {
    depot.join(format!("packs/pack-{seq:016}.pack"))
}

fn idx_path(depot: &Path, seq: u64) -> PathBuf {
    depot.join(format!("packs/pack-{seq:016}.idx"))
}

/// Pack numbers present, with whether each has an index.
fn packs(depot: &Path) -> Vec<(u64, bool)> {
    let mut out: Vec<(u64, bool)> = fs::read_dir(depot.join("packs"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let seq = name
                .strip_prefix("pack-")?
                .strip_suffix(".pack")?
                .parse()
                .ok()?;
            Some((seq, idx_path(depot, seq).exists()))
        })
        .collect();
    out.sort();
    out
}

fn commit_n(depot: &Depot, tag: &str, n: usize) -> Vec<depot::ObjectId> {
    (0..n)
        .map(|i| {
            commit_retrying(
                depot,
                vec![(
                    p(&format!("rel/{tag}-{i}")),
                    ev(
                        "Noted",
                        &format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(200)),
                    ),
                )],
                &format!("{tag}-{i}"),
            )
            .checkpoint
        })
        .collect()
}

fn assert_all_readable(depot: &Depot, ids: &[depot::ObjectId]) {
    for id in ids {
        depot
            .read_checkpoint(id)
            .unwrap_or_else(|e| panic!("checkpoint {id} unreadable: {e}"));
    }
}

fn fsck_messages(depot: &Depot) -> Vec<String> {
    depot
        .fsck(|_| {})
        .expect("fsck runs to the end on a damaged depot")
        .problems
        .into_iter()
        .map(|p| p.message)
        .collect()
}

fn assert_clean(depot: &Depot) {
    let problems = fsck_messages(depot);
    assert!(problems.is_empty(), "fsck problems: {problems:?}");
}

#[test]
fn d2_a_gc_killed_between_its_renames_never_pairs_a_new_pack_with_a_stale_index() {
    let (_tmp, path) = fresh();
    let options = Options {
        pack_roll_size: Some(4096),
        ..Options::default()
    };
    let mut ids = {
        let depot = Depot::open_with(&path, options.clone()).unwrap();
        let ids = commit_n(&depot, "a", 3);
        depot.gc(&GcOptions::default(), |_| {}).unwrap();
        ids
    };
    // A gc killed after renaming its index into place but before renaming its pack leaves the
    // index of the next number and the pack as a temp file (what `strace -e inject=rename:
    // signal=KILL:when=2 retro gc` produces).
    let (sealed, _) = packs(&path)[0];
    let active = packs(&path).last().unwrap().0;
    let orphan = active + 1;
    fs::copy(idx_path(&path, sealed), idx_path(&path, orphan)).unwrap();
    let temp = path.join(format!("packs/.tmp-999999-0-pack-{orphan:016}.pack"));
    fs::copy(pack_path(&path, sealed), &temp).unwrap();

    let depot = Depot::open_with(&path, options).unwrap();
    assert!(
        !idx_path(&path, orphan).exists(),
        "the orphan index is removed at open"
    );
    assert!(
        !temp.exists(),
        "the killed gc's temp pack is removed at open"
    );
    // Enough commits to seal the active pack and begin the next ones.
    ids.extend(commit_n(&depot, "b", 40));
    assert!(
        packs(&path).len() > 2,
        "the active pack rolled: {:?}",
        packs(&path)
    );
    drop(depot);
    let depot = Depot::open(&path).unwrap();
    assert_all_readable(&depot, &ids);
    assert_clean(&depot);
}

#[test]
fn d2_a_new_pack_number_is_above_every_leftover_file() {
    let (_tmp, path) = fresh();
    let depot = Depot::open(&path).unwrap();
    commit_n(&depot, "a", 2);
    // A leftover from a killed writer that holds the write lock (so open cannot remove it).
    let leftover = path.join("packs/.tmp-1-0-pack-0000000000000050.pack");
    fs::write(&leftover, b"partial").unwrap();
    let depot2 = Depot::open(&path).unwrap();
    depot2.gc(&GcOptions::default(), |_| {}).unwrap();
    let numbers: Vec<u64> = packs(&path).iter().map(|p| p.0).collect();
    assert!(
        numbers.iter().all(|&n| n > 50),
        "gc chose a number a leftover carries: {numbers:?}"
    );
    drop(depot);
}

#[test]
fn d3_a_long_lived_handle_follows_packs_changed_by_another_process() {
    let (_tmp, path) = fresh();
    // The server's handle, kept open throughout.
    let server = Depot::open(&path).unwrap();
    let mut ids = commit_n(&server, "server", 1);
    for round in 0..3 {
        // Another process: commit, gc, commit, gc.
        let other = Depot::open(&path).unwrap();
        ids.extend(commit_n(&other, &format!("other{round}"), 2));
        other.gc(&GcOptions::default(), |_| {}).unwrap();
        ids.extend(commit_n(&other, &format!("later{round}"), 1));
        other.gc(&GcOptions::default(), |_| {}).unwrap();
        drop(other);
        // The long-lived handle reads what the other wrote and keeps committing.
        let head = server.head().unwrap().unwrap();
        server.read_checkpoint(&head).unwrap();
        assert_all_readable(&server, &ids);
        ids.extend(commit_n(&server, &format!("server{round}"), 1));
    }
    let fresh = Depot::open(&path).unwrap();
    assert_all_readable(&fresh, &ids);
    assert_clean(&fresh);
}

/// Flips one byte `back` bytes before the end of the active pack.
fn flip_near_end(path: &Path, back: u64) -> (PathBuf, u64) {
    let (seq, _) = *packs(path).last().unwrap();
    let pack = pack_path(path, seq);
    let mut bytes = fs::read(&pack).unwrap();
    let at = bytes.len() - back as usize;
    bytes[at] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();
    (pack, at as u64)
}

#[test]
fn d5_a_bit_flip_in_the_last_acknowledged_batch_is_corruption_not_a_torn_write() {
    let (_tmp, path) = fresh();
    let ids = {
        let depot = Depot::open(&path).unwrap();
        commit_n(&depot, "a", 3)
    };
    let (pack, at) = flip_near_end(&path, 120);
    let damaged = fs::read(&pack).unwrap();

    let depot = Depot::open(&path).unwrap();
    let problems = fsck_messages(&depot);
    assert!(
        problems
            .iter()
            .any(|m| m.contains("is damaged between bytes")),
        "fsck must report the damage: {problems:?}"
    );
    // The commits before the damaged one are still served.
    assert_all_readable(&depot, &ids[..2]);
    // gc refuses to drop the only copy of what is left in the damaged pack.
    let err = depot.gc(&GcOptions::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("will not delete"), "{err}");
    assert!(pack.exists(), "gc deleted the damaged pack");
    // A new commit appends after the damage: the acknowledged bytes are never truncated.
    commit_n(&depot, "b", 1);
    let after = fs::read(&pack).unwrap();
    assert!(after.len() > damaged.len());
    assert_eq!(
        &after[..damaged.len()],
        &damaged[..],
        "damaged bytes were rewritten"
    );
    assert_eq!(after[at as usize], damaged[at as usize]);
}

#[test]
fn d5_a_torn_unacknowledged_tail_is_still_truncated() {
    let (_tmp, path) = fresh();
    let ids = {
        let depot = Depot::open(&path).unwrap();
        commit_n(&depot, "a", 2)
    };
    // A crash during an append: bytes past the acknowledged end that never checked out.
    let (seq, _) = *packs(&path).last().unwrap();
    let pack = pack_path(&path, seq);
    let len = fs::metadata(&pack).unwrap().len();
    let mut file = fs::OpenOptions::new().append(true).open(&pack).unwrap();
    std::io::Write::write_all(&mut file, &[3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap();
    drop(file);
    let depot = Depot::open(&path).unwrap();
    assert_clean(&depot);
    commit_n(&depot, "b", 1);
    assert_all_readable(&depot, &ids);
    // Had the torn bytes stayed, the new batch would follow junk and fsck would call it damage.
    assert!(fs::metadata(&pack).unwrap().len() > len);
    assert_clean(&depot);
}

#[test]
fn d8_temp_files_left_by_killed_writers_are_removed_at_open() {
    let (_tmp, path) = fresh();
    {
        let depot = Depot::open(&path).unwrap();
        commit_n(&depot, "a", 1);
    }
    let leftovers: Vec<PathBuf> = (0..7)
        .map(|i| path.join(format!("packs/.tmp-4242-{i}-pack-{:016}.pack", 2 + i)))
        .collect();
    for file in &leftovers {
        fs::write(file, vec![0u8; 4096]).unwrap();
    }
    let depot = Depot::open(&path).unwrap();
    for file in &leftovers {
        assert!(!file.exists(), "{} survived the open", file.display());
    }
    assert_clean(&depot);
}

/// A depot with one sealed pack (after gc) and an active pack with a commit in it.
fn sealed_and_active() -> (tempfile::TempDir, PathBuf, Vec<depot::ObjectId>) {
    let (tmp, path) = fresh();
    let depot = Depot::open(&path).unwrap();
    let mut ids = commit_n(&depot, "a", 3);
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
    ids.extend(commit_n(&depot, "b", 1));
    (tmp, path, ids)
}

fn sealed_seq(path: &Path) -> u64 {
    packs(path).iter().find(|p| p.1).expect("a sealed pack").0
}

/// Damage, then: open works, fsck reports `expect` and goes on, repair fixes it, fsck is clean,
/// and every checkpoint is readable.
fn damaged_then_repaired(damage: impl FnOnce(&Path), expect: &str) {
    let (_tmp, path, ids) = sealed_and_active();
    damage(&path);
    let depot = Depot::open(&path).expect("a damaged depot still opens");
    let problems = fsck_messages(&depot);
    assert!(
        problems.iter().any(|m| m.contains(expect)),
        "expected a problem containing {expect:?}: {problems:?}"
    );
    let report = depot.repair().unwrap();
    assert!(report.unfixable.is_empty(), "{report:?}");
    drop(depot);
    let depot = Depot::open(&path).unwrap();
    assert_clean(&depot);
    assert_all_readable(&depot, &ids);
}

#[test]
fn d10_a_bad_pack_header_is_reported_and_repaired() {
    damaged_then_repaired(
        |path| {
            let active = packs(path).last().unwrap().0;
            let file = fs::OpenOptions::new()
                .write(true)
                .open(pack_path(path, active))
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"XXXX", 0).unwrap();
        },
        "does not start with the pack header",
    );
}

#[test]
fn d10_a_bad_index_header_is_reported_and_rebuilt() {
    damaged_then_repaired(
        |path| {
            let seq = sealed_seq(path);
            let file = fs::OpenOptions::new()
                .write(true)
                .open(idx_path(path, seq))
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, b"XXXX", 0).unwrap();
        },
        "is unusable",
    );
}

#[test]
fn d10_a_deleted_index_no_longer_hides_its_pack_and_is_rebuilt() {
    damaged_then_repaired(
        |path| fs::remove_file(idx_path(path, sealed_seq(path))).unwrap(),
        "has no index",
    );
}

#[test]
fn d10_a_garbage_ref_file_is_reported_and_restored_from_its_reflog() {
    damaged_then_repaired(
        |path| fs::write(path.join("refs/heads/master"), "garbage\n").unwrap(),
        "is corrupt",
    );
}

#[test]
fn d10_invalid_utf8_in_the_failed_log_is_reported_and_dropped() {
    damaged_then_repaired(
        |path| {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path.join("logs/failed"))
                .unwrap();
            std::io::Write::write_all(&mut file, b"\xff\xfe\n").unwrap();
        },
        "unreadable line",
    );
}

#[test]
fn d10_a_sealed_pack_cut_by_one_byte_is_reported_and_repair_says_what_is_lost() {
    let (_tmp, path, ids) = sealed_and_active();
    let seq = sealed_seq(&path);
    let pack = pack_path(&path, seq);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let depot = Depot::open(&path).expect("a cut pack still opens");
    let problems = fsck_messages(&depot);
    assert!(
        problems.iter().any(|m| m.contains("shorter than")),
        "{problems:?}"
    );
    // The newest commit lives in the active pack and is untouched.
    assert_all_readable(&depot, &ids[3..]);
    let report = depot.repair().unwrap();
    assert!(
        report.unfixable.iter().any(|m| m.contains("shorter than")),
        "{report:?}"
    );
    // gc must not make it worse.
    assert!(depot.gc(&GcOptions::default(), |_| {}).is_err());
    assert!(pack.exists());
}

#[test]
fn a_gc_killed_before_deleting_what_it_replaced_is_finished_by_the_next_open() {
    let (_tmp, path) = fresh();
    let mut ids = {
        let depot = Depot::open(&path).unwrap();
        let mut ids = commit_n(&depot, "a", 2);
        depot.gc(&GcOptions::default(), |_| {}).unwrap();
        ids.extend(commit_n(&depot, "b", 2));
        ids
    };
    // The state of a second gc killed after renaming its pack (a copy of everything, sealed as
    // pack 4, with pack 5 begun) but before deleting packs 2 and 3: its marker names them.
    let listing = packs(&path);
    assert_eq!(listing, vec![(2, true), (3, false)], "{listing:?}");
    let depot = Depot::open(&path).unwrap();
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
    drop(depot);
    let (done, _) = packs(&path)[0];
    fs::rename(pack_path(&path, done), pack_path(&path, 40)).unwrap();
    fs::rename(idx_path(&path, done), idx_path(&path, 40)).unwrap();
    fs::remove_file(pack_path(&path, done + 1)).unwrap();
    fs::write(pack_path(&path, 41), b"RETROPK1").unwrap();
    fs::write(path.join("packs/pack-0000000000000040.replaces"), "2\n3\n").unwrap();
    let (_tmp3, old) = fresh();
    {
        // Put the replaced packs 2 and 3 back, as the killed gc left them: the same history
        // committed the same way into another depot gives the same pack numbers.
        let depot = Depot::open(&old).unwrap();
        commit_n(&depot, "a", 2);
        depot.gc(&GcOptions::default(), |_| {}).unwrap();
        commit_n(&depot, "b", 2);
    }
    for (seq, sealed) in packs(&old) {
        fs::copy(pack_path(&old, seq), pack_path(&path, seq)).unwrap();
        if sealed {
            fs::copy(idx_path(&old, seq), idx_path(&path, seq)).unwrap();
        }
    }
    assert!(packs(&path).contains(&(3, false)));

    let depot = Depot::open(&path).unwrap();
    let now: Vec<u64> = packs(&path).iter().map(|p| p.0).collect();
    assert_eq!(now, vec![40, 41], "the replaced packs were not removed");
    assert!(!path.join("packs/pack-0000000000000040.replaces").exists());
    ids.extend(commit_n(&depot, "c", 1));
    assert_all_readable(&depot, &ids);
    assert_clean(&depot);
}

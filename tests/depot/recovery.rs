//! Recovery and corruption: a native depot's files are damaged by hand, the way crashes, reboots,
//! bit rot and dead writers damage them, and the depot must open, recover what the journal says,
//! serve everything it acknowledged, report (not hide, not destroy) corruption, and keep
//! accepting commits.
//!
//! Layout relied on: `<dir>/refs/heads/master`, `logs/refs/heads/master`, `journal` (the state
//! file: magic `[0..8]`, boot hash `[8..16]`, positions, then a big-endian crc32 over everything
//! before it in the last 4 bytes), `packs/pack-<16 digits>.pack` (`.idx` beside it once sealed),
//! `lock`, `packs/write.lock`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use depot::{
    Committed, Depot, HistoryOrder, ObjectId, Options, RefEdit, RefName, RefValue, ReflogEntry,
};

use crate::common::*;

/// Commits `count` checkpoints, each with two events on `recovery/<tag>-<n>` and one on `all`.
fn commit_some(depot: &Depot, tag: &str, count: usize) -> Vec<Committed> {
    (0..count)
        .map(|n| {
            let events = vec![
                (
                    p(&format!("recovery/{tag}-{n}")),
                    ev("Opened", &format!(r#"{{"tag":"{tag}","n":{n}}}"#)),
                ),
                (
                    p(&format!("recovery/{tag}-{n}")),
                    ev("Noted", &format!(r#"{{"note":"{}"}}"#, "x".repeat(40 + n))),
                ),
                (
                    p("all"),
                    ev("Counted", &format!(r#"{{"tag":"{tag}","n":{n}}}"#)),
                ),
            ];
            commit_retrying(depot, events, &format!("{tag}-{n}"))
        })
        .collect()
}

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Depot::init(&path).unwrap();
    (dir, path)
}

fn master_file(path: &Path) -> PathBuf {
    path.join("refs/heads/master")
}

fn master_log(path: &Path) -> PathBuf {
    path.join("logs/refs/heads/master")
}

fn journal_file(path: &Path) -> PathBuf {
    path.join("journal")
}

/// The active pack: the highest-numbered pack without an index.
fn active_pack(path: &Path) -> PathBuf {
    let mut packs: Vec<PathBuf> = std::fs::read_dir(path.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("pack-") && name.ends_with(".pack")
        })
        .collect();
    packs.sort();
    let last = packs.pop().expect("a pack exists");
    assert!(
        !last.with_extension("idx").exists(),
        "the newest pack is active"
    );
    last
}

/// Rewrites the journal state's boot hash so that the depot believes the machine rebooted.
fn fake_reboot(path: &Path) {
    let file = journal_file(path);
    let mut state = std::fs::read(&file).unwrap();
    assert!(state.len() >= 20, "journal state is {} bytes", state.len());
    assert_eq!(&state[..8], b"RETROJN1", "journal state magic");
    let crc_at = state.len() - 4;
    assert_eq!(
        crc32fast::hash(&state[..crc_at]).to_be_bytes(),
        state[crc_at..],
        "the state's crc covers everything before it"
    );
    for b in &mut state[8..16] {
        *b ^= 0xa5;
    }
    let crc = crc32fast::hash(&state[..crc_at]);
    state[crc_at..].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&file, &state).unwrap();
}

/// Everything a commit made is readable: checkpoint, affix, every event.
fn assert_readable(depot: &Depot, committed: &Committed) {
    let checkpoint = depot
        .read_checkpoint(&committed.checkpoint)
        .unwrap_or_else(|e| panic!("checkpoint {} unreadable: {e}", committed.checkpoint));
    assert_eq!(checkpoint.affix(), committed.affix);
    let affix = depot.read_affix(&committed.affix).unwrap();
    assert_eq!(affix.event_count(), committed.events.len());
    for id in &committed.events {
        depot
            .read_event(id)
            .unwrap_or_else(|e| panic!("event {id} of {} unreadable: {e}", committed.checkpoint));
    }
}

/// HEAD's whole first-parent history, newest first, with every affix and event read.
fn history(depot: &Depot) -> Vec<ObjectId> {
    let mut out = Vec::new();
    if let Some(head) = depot.head().unwrap() {
        depot
            .walk(head, HistoryOrder::FirstParent, |id, c| {
                let affix = depot.read_affix(&c.affix())?;
                for (_, ids) in affix.partitions() {
                    for event in ids {
                        depot.read_event(event)?;
                    }
                }
                out.push(id);
                Ok(true)
            })
            .unwrap();
    }
    out
}

fn assert_fsck_clean(depot: &Depot) {
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "fsck: {:?}", report.problems);
}

fn assert_no_duplicate_lines(log: &[ReflogEntry]) {
    let mut seen = HashSet::new();
    for entry in log {
        assert!(
            seen.insert((entry.old, entry.new)),
            "the reflog holds the move {:?} -> {:?} twice: {log:#?}",
            entry.old,
            entry.new
        );
    }
}

/// The reflog tells the first-parent chain, oldest first, once each.
fn assert_reflog_is_chain(depot: &Depot, commits: &[Committed]) {
    let log = depot.reflog(&RefName::master()).unwrap();
    assert_no_duplicate_lines(&log);
    let moves: Vec<_> = log.iter().map(|e| (e.old, e.new)).collect();
    let expected: Vec<_> = commits
        .iter()
        .map(|c| (c.parent, Some(c.checkpoint)))
        .collect();
    assert_eq!(
        moves, expected,
        "the reflog lists every commit once, in order"
    );
}

// a. A writer died after its fsync, before it materialized the ref: the journal has the commit,
//    the ref file, its reflog and the journal state are as before it.
#[test]
fn a_commit_fsynced_but_not_materialized_is_recovered_from_the_journal() {
    let (_dir, path) = fresh();
    let mut commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "a", 4)
    };
    let saved_ref = std::fs::read(master_file(&path)).unwrap();
    let saved_journal = std::fs::read(journal_file(&path)).unwrap();
    let saved_log = std::fs::read(master_log(&path)).unwrap();
    let last = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "a-last", 1).remove(0)
    };
    commits.push(last.clone());
    // The crash: the pack holds the fsynced commit, nothing after the fsync happened.
    std::fs::write(master_file(&path), &saved_ref).unwrap();
    std::fs::write(journal_file(&path), &saved_journal).unwrap();
    std::fs::write(master_log(&path), &saved_log).unwrap();

    let depot = Depot::open(&path).unwrap();
    assert_eq!(
        depot.head().unwrap(),
        Some(last.checkpoint),
        "HEAD recovered"
    );
    assert_eq!(
        std::fs::read_to_string(master_file(&path)).unwrap(),
        last.checkpoint.to_string(),
        "the ref file is materialized again"
    );
    assert_readable(&depot, &last);
    assert_reflog_is_chain(&depot, &commits);
    assert_fsck_clean(&depot);
    assert_eq!(
        depot
            .partition_events(&p("recovery/a-last-0"))
            .unwrap()
            .len(),
        2
    );
    drop(depot);
    // Opening again changes nothing: recovery happened once.
    let depot = Depot::open(&path).unwrap();
    assert_reflog_is_chain(&depot, &commits);
    let next = commit_some(&depot, "a-next", 1).remove(0);
    assert_eq!(next.parent, Some(last.checkpoint));
    commits.push(next);
    assert_reflog_is_chain(&depot, &commits);
    assert_fsck_clean(&depot);
}

// a'. As (a), but only the ref file and the journal state are rolled back: the reflog line was
//     written (its append is not ordered after the ref file's rename on disk). Recovery must not
//     log the move a second time.
#[test]

fn a_recovered_move_whose_reflog_line_survived_is_not_logged_twice() {
    let (_dir, path) = fresh();
    let mut commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "a2", 3)
    };
    let saved_ref = std::fs::read(master_file(&path)).unwrap();
    let saved_journal = std::fs::read(journal_file(&path)).unwrap();
    let last = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "a2-last", 1).remove(0)
    };
    commits.push(last.clone());
    std::fs::write(master_file(&path), &saved_ref).unwrap();
    std::fs::write(journal_file(&path), &saved_journal).unwrap();

    let depot = Depot::open(&path).unwrap();
    assert_eq!(
        depot.head().unwrap(),
        Some(last.checkpoint),
        "HEAD recovered"
    );
    assert_fsck_clean(&depot);
    assert_reflog_is_chain(&depot, &commits);
}

// a''. A writer died after renaming the ref file into place, before appending its reflog line:
//      the ref holds the new value, the reflog and the journal state are as before the commit.
//      Recovery must still log the move.
#[test]

fn a_recovered_move_whose_reflog_line_was_lost_is_logged() {
    let (_dir, path) = fresh();
    let mut commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "a3", 3)
    };
    let saved_journal = std::fs::read(journal_file(&path)).unwrap();
    let saved_log = std::fs::read(master_log(&path)).unwrap();
    let last = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "a3-last", 1).remove(0)
    };
    commits.push(last.clone());
    std::fs::write(journal_file(&path), &saved_journal).unwrap();
    std::fs::write(master_log(&path), &saved_log).unwrap();

    let depot = Depot::open(&path).unwrap();
    assert_eq!(depot.head().unwrap(), Some(last.checkpoint));
    assert_fsck_clean(&depot);
    assert_reflog_is_chain(&depot, &commits);
}

// b. A reboot (power cut): the state's boot hash no longer matches and the ref file, written
//    without fsync, is gone. Recovery replays from the durable position.
#[test]
fn after_a_reboot_a_lost_ref_file_is_recovered_from_the_durable_position() {
    let (_dir, path) = fresh();
    let commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "b", 6)
    };
    let last = commits.last().unwrap().clone();
    fake_reboot(&path);
    std::fs::remove_file(master_file(&path)).unwrap();

    let depot = Depot::open(&path).unwrap();
    assert_eq!(
        depot.head().unwrap(),
        Some(last.checkpoint),
        "HEAD recovered"
    );
    let chain = history(&depot);
    assert_eq!(chain.len(), commits.len());
    for c in &commits {
        assert_readable(&depot, c);
    }
    assert_fsck_clean(&depot);
    assert_eq!(
        depot.partition_events(&p("all")).unwrap().len(),
        commits.len()
    );
    // The recovery is durable and recorded: a second open has nothing to do.
    drop(depot);
    let depot = Depot::open(&path).unwrap();
    assert_eq!(depot.head().unwrap(), Some(last.checkpoint));
    let next = commit_some(&depot, "b-next", 1).remove(0);
    assert_eq!(next.parent, Some(last.checkpoint));
    assert_fsck_clean(&depot);
}

// b'. As (b), with the reflog intact (it was appended, the ref file's rename was lost): the
//     replay must not duplicate the reflog lines it finds already written.
#[test]

fn after_a_reboot_replayed_moves_are_not_logged_twice() {
    let (_dir, path) = fresh();
    let commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "b2", 5)
    };
    fake_reboot(&path);
    std::fs::remove_file(master_file(&path)).unwrap();
    let depot = Depot::open(&path).unwrap();
    assert_eq!(
        depot.head().unwrap(),
        Some(commits.last().unwrap().checkpoint)
    );
    assert_reflog_is_chain(&depot, &commits);
}

/// A plausible torn tail: a whole batch header announcing more than follows, then part of an
/// object record.
fn torn_batch(inner_len: u64, partial: &[u8]) -> Vec<u8> {
    let mut out = vec![3u8];
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&inner_len.to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&200u32.to_be_bytes());
    out.extend_from_slice(partial);
    out
}

// c. A torn tail: a crash in the middle of an append left a partial record.
#[test]
fn a_torn_tail_is_ignored_and_then_overwritten() {
    for (case, tail) in [
        ("partial batch", torn_batch(209, &[7u8; 50])),
        (
            "garbage",
            b"\x01\x00\x00\x00\x40garbage that is not a whole record".to_vec(),
        ),
        ("one byte", vec![3u8]),
    ] {
        let (_dir, path) = fresh();
        let mut commits = {
            let depot = Depot::open(&path).unwrap();
            commit_some(&depot, "c", 4)
        };
        let pack = active_pack(&path);
        let clean_len = std::fs::metadata(&pack).unwrap().len();
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&pack)
                .unwrap();
            file.write_all(&tail).unwrap();
        }

        let depot = Depot::open(&path).unwrap();
        assert_eq!(
            depot.head().unwrap(),
            Some(commits.last().unwrap().checkpoint),
            "{case}"
        );
        for c in &commits {
            assert_readable(&depot, c);
        }
        assert_eq!(history(&depot).len(), commits.len(), "{case}");
        assert_fsck_clean(&depot);
        let next = commit_some(&depot, "c-next", 1).remove(0);
        assert_eq!(
            next.parent,
            Some(commits.last().unwrap().checkpoint),
            "{case}"
        );
        commits.push(next);
        assert!(
            std::fs::metadata(&pack).unwrap().len() > clean_len,
            "{case}: the commit was appended"
        );
        drop(depot);

        let depot = Depot::open(&path).unwrap();
        assert_eq!(
            depot.head().unwrap(),
            Some(commits.last().unwrap().checkpoint),
            "{case}"
        );
        for c in &commits {
            assert_readable(&depot, c);
        }
        assert_eq!(history(&depot).len(), commits.len(), "{case}");
        assert_reflog_is_chain(&depot, &commits);
        assert_fsck_clean(&depot);
    }
}

/// Commits `count` checkpoints, one open depot each, returning them with the active pack's
/// length before each (a commit's batch spans `[before, next before)`).
fn commit_recording_offsets(path: &Path, tag: &str, count: usize) -> (Vec<Committed>, Vec<u64>) {
    let depot = Depot::open(path).unwrap();
    let mut commits = Vec::new();
    let mut starts = Vec::new();
    for n in 0..count {
        starts.push(active_pack_len(path));
        commits.extend(commit_some(&depot, &format!("{tag}{n}"), 1));
    }
    starts.push(active_pack_len(path));
    (commits, starts)
}

/// The active pack's length; a depot without a pack yet gets one holding just its 8-byte magic.
fn active_pack_len(path: &Path) -> u64 {
    let has_pack = std::fs::read_dir(path.join("packs"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".pack"));
    if has_pack {
        std::fs::metadata(active_pack(path)).unwrap().len()
    } else {
        8
    }
}

fn flip_byte(file: &Path, at: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(file, &bytes).unwrap();
}

/// What (d) checks after a byte of commit `damaged` (of `commits`) rotted.
fn assert_bit_rot_is_reported_not_spread(path: &Path, commits: &[Committed], damaged: usize) {
    let last = commits.last().unwrap().clone();
    let pack = active_pack(path);
    let before = std::fs::read(&pack).unwrap();
    let depot = Depot::open(path).unwrap();
    assert_eq!(
        depot.head().unwrap(),
        Some(last.checkpoint),
        "HEAD unchanged"
    );
    // Every failure is collected first, so that a failure also tells whether the next commit
    // destroyed data.
    let mut lost = Vec::new();
    for c in &commits[damaged + 1..] {
        let readable = depot.read_checkpoint(&c.checkpoint).is_ok()
            && depot.read_affix(&c.affix).is_ok()
            && c.events.iter().all(|id| depot.read_event(id).is_ok());
        if !readable {
            lost.push(c.checkpoint.to_short_hex(12));
        }
    }
    let report = depot.fsck(|_| {}).unwrap();
    let next = commit_some(&depot, "d-next", 1).remove(0);
    assert_eq!(next.parent, Some(last.checkpoint));
    drop(depot);
    let after = std::fs::read(&pack).unwrap();
    let kept = after.len() >= before.len() && after[..before.len()] == before[..];
    assert!(
        lost.is_empty() && kept,
        "a rotted byte in commit {damaged} of {}: later commits unreadable after reopening: \
         {lost:?}; the next commit {} the pack ({} bytes before, {} after)",
        commits.len(),
        if kept { "kept" } else { "TRUNCATED" },
        before.len(),
        after.len()
    );
    assert!(
        !report.is_clean(),
        "fsck must report the rotted byte in commit {damaged}"
    );

    // Nothing after the damage was lost to the new append.
    let depot = Depot::open(path).unwrap();
    assert_eq!(depot.head().unwrap(), Some(next.checkpoint));
    assert_readable(&depot, &next);
    for c in &commits[damaged + 1..] {
        assert_readable(&depot, c);
    }
    let report = depot.fsck(|_| {}).unwrap();
    assert!(!report.is_clean(), "the damage stays reported");
}

// d. Bit rot inside an early commit's records, with later commits after it in the same pack:
//    the byte is flipped at positions all over the commit's records (object records and the
//    journal record, headers, payloads and checksums), past the 17-byte batch header.
#[test]
fn bit_rot_inside_an_early_commit_is_reported_and_never_truncates_later_commits() {
    let (_dir, path) = fresh();
    let (_, starts) = commit_recording_offsets(&path, "d", 2);
    let batch_len = starts[2] - starts[1];
    drop(_dir);
    let mut flipped = 0;
    for delta in (17..batch_len)
        .step_by(23)
        .chain([17, 18, 22, batch_len - 1])
    {
        let (_dir, path) = fresh();
        let (commits, starts) = commit_recording_offsets(&path, "d", 5);
        let damaged = 1;
        assert_eq!(
            starts[damaged + 1] - starts[damaged],
            batch_len,
            "same-sized commits"
        );
        flip_byte(&active_pack(&path), starts[damaged] + delta);
        assert_bit_rot_is_reported_not_spread(&path, &commits, damaged);
        flipped += 1;
    }
    assert!(flipped > 10);
}

// d'. The same, with the rotted byte in the batch header that frames the early commit's append.
#[test]

fn bit_rot_in_an_early_batch_header_never_truncates_later_commits() {
    let (_dir, path) = fresh();
    let (commits, starts) = commit_recording_offsets(&path, "d2", 6);
    let damaged = 1;
    // Byte 8 of the batch record: inside the announced length of the batch.
    flip_byte(&active_pack(&path), starts[damaged] + 8);
    assert_bit_rot_is_reported_not_spread(&path, &commits, damaged);
}

// e. Lock files left behind by dead writers do not block a commit.
#[test]
fn stale_lock_files_do_not_block_commits() {
    let (_dir, path) = fresh();
    let mut commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "e", 2)
    };
    std::fs::write(path.join("refs/heads/master.lock"), "sha256:deadbeef").unwrap();
    std::fs::write(path.join("packs/write.lock"), "pid 999999").unwrap();
    std::fs::write(path.join("lock"), "pid 999999").unwrap();
    std::fs::create_dir_all(path.join("refs/consumers")).unwrap();
    std::fs::write(path.join("refs/consumers/projector.lock"), "").unwrap();

    let depot = Depot::open_with(
        &path,
        Options {
            lock_timeout: std::time::Duration::from_secs(5),
            ..Options::default()
        },
    )
    .unwrap();
    commits.extend(commit_some(&depot, "e-after", 2));
    let last = commits.last().unwrap().checkpoint;
    assert_eq!(depot.head().unwrap(), Some(last));
    // A ref move through the journal, onto a ref whose lock file was left behind.
    let consumer = RefName::new("refs/consumers/projector").unwrap();
    depot
        .update_refs(&[RefEdit {
            name: consumer.clone(),
            expected: depot::Expected::MustNotExist,
            new: Some(RefValue::Direct(last)),
            log: Default::default(),
        }])
        .unwrap();
    assert_eq!(depot.resolve_ref(&consumer).unwrap().1, Some(last));
    // Stale lock files are not refs.
    let names: Vec<String> = depot
        .list_refs("")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".lock")),
        "lock files listed as refs: {names:?}"
    );
    assert_reflog_is_chain(&depot, &commits);
    assert_fsck_clean(&depot);
    drop(depot);
    let depot = Depot::open(&path).unwrap();
    assert_eq!(depot.head().unwrap(), Some(last));
}

// f. Readers never see a HEAD whose checkpoint, affix or events cannot be read, while a writer
//    commits (and seals packs) underneath them: readers sharing the writer's depot and readers
//    with a depot of their own.
#[test]
fn concurrent_readers_never_see_a_head_they_cannot_read() {
    let (_dir, path) = fresh();
    let writer = Arc::new(
        Depot::open_with(
            &path,
            Options {
                pack_roll_size: Some(16 << 10),
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..4 {
        let done = done.clone();
        let observed = observed.clone();
        let shared = writer.clone();
        let path = path.clone();
        readers.push(std::thread::spawn(move || {
            let own;
            let depot: &Depot = if r % 2 == 0 {
                &shared
            } else {
                own = Depot::open(&path).unwrap();
                &own
            };
            let mut last_seen: Option<ObjectId> = None;
            let mut depth = 0usize;
            while !done.load(Ordering::Acquire) {
                let Some(head) = depot.head().unwrap() else {
                    continue;
                };
                let checkpoint = depot
                    .read_checkpoint(&head)
                    .unwrap_or_else(|e| panic!("reader {r}: HEAD {head} unreadable: {e}"));
                let affix = depot
                    .read_affix(&checkpoint.affix())
                    .unwrap_or_else(|e| panic!("reader {r}: affix of HEAD {head} unreadable: {e}"));
                for (_, ids) in affix.partitions() {
                    for id in ids {
                        depot.read_event(id).unwrap_or_else(|e| {
                            panic!("reader {r}: event {id} of HEAD {head} unreadable: {e}")
                        });
                    }
                }
                if let Some(parent) = checkpoint.first_parent() {
                    depot.read_checkpoint(&parent).unwrap();
                }
                if last_seen != Some(head) {
                    // HEAD only moves forward: the one seen before is an ancestor.
                    let mut n = 0usize;
                    depot
                        .walk(head, HistoryOrder::FirstParent, |_, _| {
                            n += 1;
                            Ok(true)
                        })
                        .unwrap();
                    assert!(n >= depth, "reader {r}: history shrank from {depth} to {n}");
                    depth = n;
                    last_seen = Some(head);
                }
                observed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let commits = commit_some(&writer, "f", 150);
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.join().expect("a reader failed");
    }
    assert!(observed.load(Ordering::Relaxed) > 0, "the readers read");
    assert_eq!(
        writer.head().unwrap(),
        Some(commits.last().unwrap().checkpoint)
    );
    assert!(
        std::fs::read_dir(path.join("packs")).unwrap().any(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "idx")),
        "packs were sealed while readers read"
    );
    assert_eq!(history(&writer).len(), commits.len());
    assert_fsck_clean(&writer);
}

// D1. A depot bricked by the code before the ref-name check: the journal holds a move of
//     `refs/consumers/x` that was never materialized, and `refs/consumers/x/` is a directory of
//     refs (`x/y`). Recovery must skip that move (recorded in `logs/skipped-ref-moves`, fsynced)
//     and go on: the depot opens, reads, checks, repacks, reindexes and commits again.
#[test]
fn d1_a_journaled_ref_move_that_cannot_be_written_does_not_brick_the_depot() {
    let (_dir, path) = fresh();
    let commits = {
        let depot = Depot::open(&path).unwrap();
        commit_some(&depot, "d1", 2)
    };
    let head = commits.last().unwrap().checkpoint;
    let x = RefName::new("refs/consumers/x").unwrap();
    let saved_journal = std::fs::read(journal_file(&path)).unwrap();
    {
        let depot = Depot::open(&path).unwrap();
        depot
            .update_refs(&[RefEdit::cas(x.clone(), None, head, Default::default())])
            .unwrap();
    }
    // As the old code left it: the move is in the pack, not materialized, and the ref's path is
    // a directory holding the ref `x/y` (made by hand here, since the check now refuses it).
    std::fs::remove_file(path.join("refs/consumers/x")).unwrap();
    std::fs::remove_file(path.join("logs/refs/consumers/x")).unwrap();
    std::fs::write(journal_file(&path), &saved_journal).unwrap();
    std::fs::create_dir_all(path.join("refs/consumers/x")).unwrap();
    std::fs::write(path.join("refs/consumers/x/y"), head.to_string()).unwrap();
    std::fs::create_dir_all(path.join("logs/refs/consumers/x")).unwrap();

    let depot = Depot::open(&path).expect("the depot opens despite the unwritable move");
    let skipped = depot.skipped_ref_moves().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].contains("refs/consumers/x from - to ") && skipped[0].contains("Is a directory"),
        "{}",
        skipped[0]
    );
    assert_eq!(depot.head().unwrap(), Some(head));
    let y = RefName::new("refs/consumers/x/y").unwrap();
    assert_eq!(depot.read_ref(&y).unwrap(), Some(RefValue::Direct(head)));
    assert_eq!(history(&depot).len(), 2, "log works");
    assert_fsck_clean(&depot);
    depot.gc(&Default::default(), |_| {}).expect("gc works");
    depot.reindex().expect("reindex works");
    let next = commit_some(&depot, "d1-after", 1).remove(0);
    assert_eq!(next.parent, Some(head));
    drop(depot);
    // Recovery is done: opening again skips nothing new.
    let depot = Depot::open(&path).unwrap();
    assert_eq!(depot.skipped_ref_moves().unwrap().len(), 1);
    assert_fsck_clean(&depot);
}

// D1. The name check itself, through the journal: a clashing ref is refused before anything is
//     appended, in either order, and the depot is byte-for-byte as before.
#[test]
fn d1_ref_directory_clash_does_not_brick_the_depot() {
    let (_dir, path) = fresh();
    let depot = Depot::open(&path).unwrap();
    let head = commit_some(&depot, "d1", 1).remove(0).checkpoint;
    let name = |t: &str| RefName::new(t).unwrap();
    for (first, second) in [
        ("refs/consumers/x/y", "refs/consumers/x"),
        ("refs/tags/a", "refs/tags/a/b"),
    ] {
        depot
            .update_refs(&[RefEdit::cas(name(first), None, head, Default::default())])
            .unwrap();
        let before = snapshot(&path);
        let err = depot
            .update_refs(&[RefEdit::cas(name(second), None, head, Default::default())])
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("'{first}'")) && text.contains(&format!("'{second}'")),
            "{text}"
        );
        assert!(snapshot(&path) == before, "the depot changed");
    }
    // A commit onto a new ref that clashes is refused the same way, its batch-mates unharmed.
    let mut request = depot::CommitRequest::new(
        None,
        vec![(p("d1/clash"), ev("Opened", "{}"))],
        "s1",
        "clash",
    );
    request.target = name("refs/tags/a/c");
    request.base = depot::Base::Expect(None);
    let err = depot.commit(request).unwrap_err();
    assert!(err.to_string().contains("'refs/tags/a'"), "{err}");
    drop(depot);
    let depot = Depot::open(&path).unwrap();
    assert!(depot.skipped_ref_moves().unwrap().is_empty());
    assert_fsck_clean(&depot);
}

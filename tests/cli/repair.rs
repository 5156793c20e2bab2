//! `retro fsck` on damaged depots (exit 5, every problem listed, nothing stops it) and
//! `retro repair` (rebuilds what can be derived, names what cannot), issue 17's D5, D8 and D10.

use std::fs;
use std::path::PathBuf;

use crate::common::*;

fn pack_files(depot: &TestDepot, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(depot.dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// A depot with a sealed pack (gc) and an active one holding the newest commit.
fn sealed_and_active() -> TestDepot {
    let depot = TestDepot::with_history();
    depot.ok(&["gc"]);
    depot.apply(r#"{"path":"accounts/zed","name":"open","params":{"owner":"Zed"}}"#);
    depot
}

/// Damage, then: fsck exits 5 naming it, reads still work, repair exits 0, fsck is clean.
fn fsck_then_repair(damage: impl FnOnce(&TestDepot), expect: &str) {
    let depot = sealed_and_active();
    let log = depot.ok(&["log", "--oneline"]);
    damage(&depot);
    let run = depot.fails(&["fsck"], 5);
    assert!(
        run.stdout.contains(expect),
        "fsck should say {expect:?}:\n{}",
        run.stdout
    );
    let out = depot.ok(&["repair"]);
    assert!(out.contains("fixed: "), "{out}");
    depot.ok(&["fsck"]);
    assert_eq!(depot.ok(&["log", "--oneline"]), log);
}

#[test]
fn d10_fsck_and_repair_a_bad_pack_header() {
    fsck_then_repair(
        |depot| {
            let pack = pack_files(depot, "pack").pop().unwrap();
            let mut bytes = fs::read(&pack).unwrap();
            bytes[..4].copy_from_slice(b"XXXX");
            fs::write(&pack, bytes).unwrap();
        },
        "does not start with the pack header",
    );
}

#[test]
fn d10_fsck_and_repair_a_bad_index_header() {
    fsck_then_repair(
        |depot| {
            let idx = pack_files(depot, "idx").pop().unwrap();
            let mut bytes = fs::read(&idx).unwrap();
            bytes[..4].copy_from_slice(b"XXXX");
            fs::write(&idx, bytes).unwrap();
        },
        "is unusable",
    );
}

#[test]
fn d10_fsck_and_repair_a_deleted_index() {
    fsck_then_repair(
        |depot| fs::remove_file(pack_files(depot, "idx").pop().unwrap()).unwrap(),
        "has no index",
    );
}

#[test]
fn d10_fsck_and_repair_a_garbage_ref_file() {
    fsck_then_repair(
        |depot| fs::write(depot.dir.join("refs/heads/master"), "garbage\n").unwrap(),
        "is corrupt",
    );
}

#[test]
fn d10_fsck_and_repair_invalid_utf8_in_the_failed_log() {
    fsck_then_repair(
        |depot| {
            let path = depot.dir.join("logs/failed");
            let mut bytes = fs::read(&path).unwrap_or_default();
            bytes.extend_from_slice(b"\xff\xfe\n");
            fs::write(&path, bytes).unwrap();
        },
        "unreadable line",
    );
}

#[test]
fn d10_a_cut_sealed_pack_exits_5_and_repair_names_what_is_lost() {
    let depot = sealed_and_active();
    let pack = pack_files(&depot, "pack").into_iter().next().unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let run = depot.fails(&["fsck"], 5);
    assert!(run.stdout.contains("shorter than"), "{}", run.stdout);
    let run = depot.fails(&["repair"], 5);
    assert!(run.stdout.contains("cannot fix:"), "{}", run.stdout);
    assert!(run.stderr.contains("restore"), "{}", run.stderr);
    // gc refuses to delete the damaged pack, and says why.
    let run = depot.run(&["gc"]);
    assert_error(&run, 5);
    assert!(run.stderr.contains("will not delete"), "{}", run.stderr);
    assert!(pack.exists());
}

#[test]
fn d5_a_bit_flip_in_the_newest_commit_is_reported_and_gc_keeps_the_pack() {
    let depot = TestDepot::new();
    for who in ["a", "b", "c"] {
        depot.apply(&format!(
            r#"{{"path":"accounts/{who}","name":"open","params":{{"owner":"{who}"}}}}"#
        ));
    }
    let pack = pack_files(&depot, "pack").pop().unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    // The batch ends with the journal record (about 240 bytes): 400 from the end is inside the
    // newest checkpoint.
    let at = bytes.len() - 400;
    bytes[at] ^= 1;
    fs::write(&pack, &bytes).unwrap();
    let run = depot.fails(&["fsck"], 5);
    assert!(
        run.stdout.contains("is damaged between bytes"),
        "{}",
        run.stdout
    );
    // A read of the damaged checkpoint is a corrupt-class error (exit 5), not a generic one.
    let run = depot.run(&["show", "HEAD"]);
    assert_error(&run, 5);
    let run = depot.run(&["gc"]);
    assert_error(&run, 5);
    assert!(pack.exists(), "gc deleted the only copy");
}

#[test]
fn d8_a_rejection_that_could_not_be_recorded_does_not_claim_it_was() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    // The failed-command log cannot be appended to (as on a full disk).
    let log = depot.dir.join("logs/failed");
    let _ = fs::remove_file(&log);
    fs::create_dir_all(log.join("blocked")).unwrap();
    let run = depot.run(&[
        "apply",
        r#"{"path":"accounts/a","name":"withdraw","params":{"amount":999}}"#,
    ]);
    assert_error(&run, 4);
    assert!(
        !run.stderr.contains("the failure is recorded"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("could not be recorded"),
        "{}",
        run.stderr
    );
    fs::remove_dir_all(&log).unwrap();
    // And when it is recorded, it says so.
    let run = depot.run(&[
        "apply",
        r#"{"path":"accounts/a","name":"withdraw","params":{"amount":999}}"#,
    ]);
    assert_error(&run, 4);
    assert!(
        run.stderr.contains("the failure is recorded"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failure_to_read_another_aggregate_is_corruption_not_a_domain_rejection() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    depot.apply(r#"{"path":"accounts/alice","name":"deposit","params":{"amount":100}}"#);
    depot.apply(r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#);
    // Damage Bob's event (stored uncompressed in the active pack) so that reading his account
    // fails; Alice's partition is intact.
    let pack = pack_files(&depot, "pack").pop().unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let needle = br#""owner":"Bob""#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("Bob's event data in the pack");
    bytes[at + 3] ^= 1;
    fs::write(&pack, &bytes).unwrap();
    let failed_before = depot.ok(&["failed"]);
    let run = depot.run(&[
        "apply",
        r#"{"path":"accounts/alice","name":"transfer","params":{"to":"accounts/bob","amount":10}}"#,
    ]);
    assert_error(&run, 5);
    assert!(!run.stderr.contains("rejected"), "{}", run.stderr);
    assert_eq!(
        depot.ok(&["failed"]),
        failed_before,
        "a read failure was recorded as a rejection"
    );
}

#[test]
fn a_torn_append_to_the_failed_log_is_neither_a_problem_nor_glued_to_the_next_line() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    // A power cut during an unacknowledged append leaves part of an id, and no newline.
    let log = depot.dir.join("logs/failed");
    let mut bytes = fs::read(&log).unwrap_or_default();
    bytes.extend_from_slice(b"sha256:0a1b2c");
    fs::write(&log, &bytes).unwrap();
    depot.ok(&["fsck"]);
    let run = depot.run(&[
        "apply",
        r#"{"path":"accounts/a","name":"withdraw","params":{"amount":999}}"#,
    ]);
    assert_error(&run, 4);
    assert!(
        run.stderr.contains("the failure is recorded"),
        "{}",
        run.stderr
    );
    let failed = depot.ok(&["failed", "--json"]);
    assert_eq!(failed.lines().count(), 1, "{failed}");
    assert!(failed.contains("withdraw"), "{failed}");
    depot.ok(&["fsck"]);
}

#[test]
fn a_torn_reflog_line_is_skipped_reported_and_never_glued_to_the_next_one() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    let log = depot.dir.join("logs/refs/heads/master");
    let mut bytes = fs::read(&log).unwrap();
    bytes.extend_from_slice(b"sha256:0a1b2c sha256:9f");
    fs::write(&log, &bytes).unwrap();
    // Readable: the torn line is skipped; fsck says so as a warning, not a problem.
    let reflog = depot.ok(&["reflog"]);
    assert_eq!(reflog.lines().count(), 1, "{reflog}");
    let out = depot.ok(&["fsck"]);
    assert!(out.contains("unreadable line"), "{out}");
    // The next moves are appended on lines of their own.
    depot.apply(r#"{"path":"accounts/b","name":"open","params":{"owner":"B"}}"#);
    assert_eq!(depot.ok(&["reflog"]).lines().count(), 2);
}

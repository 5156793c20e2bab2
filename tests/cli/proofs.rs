//! `retro prove` and `retro verify-proof` end to end: a proof checks with no depot at all, and a
//! truncated or tampered proof, an event not in REV's history and a REV that does not exist are
//! refused with their documented exit codes, changing nothing.

use std::fs;

use crate::common::*;

fn event_ids(depot: &TestDepot, partition: &str) -> Vec<String> {
    json_lines(&depot.ok(&["events", "--json", partition]))
        .into_iter()
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect()
}

/// A depot of eight bank commands and an event of its third.
fn bank() -> (TestDepot, String) {
    let depot = TestDepot::new();
    for n in 0..8 {
        depot.apply(&format!(
            r#"{{"path":"accounts/a{n}","name":"open","params":{{"owner":"O{n}"}}}}"#
        ));
    }
    let event = event_ids(&depot, "accounts/a2").remove(0);
    (depot, event)
}

/// `retro verify-proof FILE ARGS` in an empty directory, without --depot: no depot anywhere.
fn verify_without_depot(file: &std::path::Path, args: &[&str]) -> Run {
    let nowhere = tempfile::tempdir().unwrap();
    run(retro_in(nowhere.path())
        .arg("verify-proof")
        .arg(file)
        .args(args))
}

#[test]
fn a_proof_verifies_with_no_depot_and_says_what_it_proved() {
    let (depot, event) = bank();
    let head = depot.head().unwrap();
    let proof = depot.ok(&["prove", &event]);
    assert!(proof.len() < 4096, "{}", proof.len());
    let file = depot.tmp.path().join("proof.json");
    fs::write(&file, &proof).unwrap();
    let run = verify_without_depot(&file, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let checkpoint_of_a2 = json_lines(&depot.ok(&["events", "--json", "accounts/a2"]))[0]
        ["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        run.stdout.trim(),
        format!("event {event} (accounts/a2) is in checkpoint {checkpoint_of_a2}, leaf 2 of the 7-checkpoint log committed to by {head}")
    );
    assert!(run.stderr.contains("only as good as"), "{}", run.stderr);
    let run = verify_without_depot(&file, &["--trusted", &head, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let proved = json(run.stdout.trim());
    assert_eq!(proved["leaf"], 2);
    assert_eq!(proved["size"], 7);
    assert_eq!(proved["at"], head.as_str());
    assert_eq!(proved["trusted"], true);
    // At an older checkpoint, by prefix, from stdin.
    let older = depot.ok(&["prove", &event[7..19], "--at", "HEAD~3"]);
    let older_head = json_lines(&depot.ok(&["log", "--json", "-n", "4"]))[3]["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let nowhere = tempfile::tempdir().unwrap();
    let from_stdin = crate::common::run(
        retro_in(nowhere.path())
            .args(["verify-proof", "-", "--trusted", &older_head])
            .write_stdin(older.into_bytes()),
    );
    assert_eq!(from_stdin.code, 0, "{}", from_stdin.stderr);
    assert!(
        from_stdin.stdout.contains("leaf 2 of the 4-checkpoint log"),
        "{}",
        from_stdin.stdout
    );
}

#[test]
fn bad_proofs_and_bad_requests_are_refused() {
    let (depot, event) = bank();
    let head = depot.head().unwrap();
    let proof = depot.ok(&["prove", &event]);
    let dir = depot.tmp.path();
    // Truncated: not a proof (exit 1).
    let truncated = dir.join("truncated.json");
    fs::write(&truncated, &proof[..proof.len() / 2]).unwrap();
    let run = verify_without_depot(&truncated, &[]);
    assert_error(&run, 1);
    assert!(
        run.stderr.contains("not an inclusion proof"),
        "{}",
        run.stderr
    );
    // Tampered: one hex digit of the audit path, of the proved checkpoint, of the trusted one:
    // refused (exit 7).
    let value = json(&proof);
    for key in ["path", "checkpoint", "at", "affix"] {
        let mut tampered = value.clone();
        let text = match key {
            "path" => tampered["path"][0].as_str().unwrap().to_owned(),
            _ => tampered[key].as_str().unwrap().to_owned(),
        };
        let position = text.len() - 3;
        let digit = if &text[position..position + 1] == "0" {
            "1"
        } else {
            "0"
        };
        let changed = format!("{}{digit}{}", &text[..position], &text[position + 1..]);
        match key {
            "path" => tampered["path"][0] = changed.into(),
            _ => tampered[key] = changed.into(),
        }
        let file = dir.join(format!("tampered-{key}.json"));
        fs::write(&file, tampered.to_string()).unwrap();
        let run = verify_without_depot(&file, &["--trusted", &head]);
        assert_error(&run, 7);
        assert!(
            run.stderr.contains("does not verify"),
            "{key}: {}",
            run.stderr
        );
    }
    // A proof for another trusted checkpoint.
    let good = dir.join("proof.json");
    fs::write(&good, &proof).unwrap();
    let other = json_lines(&depot.ok(&["log", "--json", "-n", "2"]))[1]["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = verify_without_depot(&good, &["--trusted", &other]);
    assert_error(&run, 7);
    // Not JSON at all, a missing file, a bad --trusted id: exit 1.
    let junk = dir.join("junk.json");
    fs::write(&junk, b"\xff\x00 not json").unwrap();
    assert_error(&verify_without_depot(&junk, &[]), 1);
    assert_error(&verify_without_depot(&dir.join("missing.json"), &[]), 1);
    assert_error(&verify_without_depot(&good, &["--trusted", "HEAD"]), 1);
    // An event not in REV's history, a REV that does not exist, an id that is no object:
    // exit 1 (not found), nothing written.
    depot.fails_unchanged(&["prove", &event, "--at", "HEAD~6"], 1);
    depot.fails_unchanged(&["prove", &event, "--at", "no-such-branch"], 1);
    depot.fails_unchanged(
        &[
            "prove",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
        1,
    );
    depot.fails_unchanged(&["prove", "not-an-id"], 1);
    depot.usage_unchanged(&["prove"]);
}

#[test]
fn history_from_before_the_field_is_provable_at_a_checkpoint_committed_on_top() {
    let depot = TestDepot::uninitialized();
    copy_dir(&fixtures().join("depots/retro-0.1/.retro"), &depot.dir);
    let event = event_ids(&depot, "accounts/alice").remove(0);
    // The release that wrote this depot wrote no log field: nothing to prove against yet.
    let run = depot.fails_unchanged(&["prove", &event], 1);
    assert!(run.stderr.contains("no 'log' field"), "{}", run.stderr);
    depot.apply(r#"{"path":"accounts/carol","name":"open","params":{"owner":"Carol"}}"#);
    let proof = depot.ok(&["prove", &event]);
    let file = depot.tmp.path().join("proof.json");
    fs::write(&file, proof).unwrap();
    let run = verify_without_depot(&file, &["--trusted", &depot.head().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("leaf 0 of the 7-checkpoint log"),
        "{}",
        run.stdout
    );
    assert!(depot.ok(&["fsck"]).contains("no problems"));
}

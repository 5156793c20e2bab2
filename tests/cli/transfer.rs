//! export and import: a round trip gives the very same ids, and importing again skips everything.

use std::fs;

use crate::common::*;

/// A depot with a history made by `apply` (dates are now), sessions, both fixture handlers and a
/// recorded failure (exported as a `failed` line after the checkpoint it was tried on).
fn applied_depot() -> TestDepot {
    let depot = TestDepot::plain();
    let manifest = manifest();
    let manifest = manifest.to_str().unwrap();
    let session = depot.ok(&["session", "start"]).trim().to_owned();
    for command in [
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
        r#"{"path":"accounts/alice","name":"deposit","params":{"amount":40}}"#,
        r#"{"path":"notes/n1","name":"add","params":{"text":"ünïcödé \"quoted\" \\ and\nnewline"}}"#,
        r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#,
    ] {
        depot.ok(&[
            "apply",
            "--manifest",
            manifest,
            "--session",
            &session,
            command,
        ]);
    }
    depot.fails(
        &[
            "apply",
            "--manifest",
            manifest,
            r#"{"path":"accounts/bob","name":"withdraw","params":{"amount":1}}"#,
        ],
        4,
    );
    depot.ok(&["session", "end", &session]);
    depot
}

#[test]
fn export_import_round_trip() {
    let source = applied_depot();
    let file = source.tmp.path().join("history.jsonl");
    assert_eq!(source.ok(&["export", "-o", file.to_str().unwrap()]), "");
    let exported = fs::read_to_string(&file).unwrap();
    assert_eq!(exported, source.ok(&["export"]));
    let all_lines = json_lines(&exported);
    let (failed_lines, lines): (Vec<_>, Vec<_>) =
        all_lines.iter().partition(|l| l.get("failed").is_some());
    assert_eq!(failed_lines.len(), 1, "the recorded failure is exported");
    let log = source.ok(&["log", "--json"]);
    assert_eq!(lines.len(), log.lines().count());
    assert!(lines[0].get("parents").is_none(), "the root has no parents");

    let target = TestDepot::plain();
    let out = target.ok(&["import", file.to_str().unwrap()]);
    assert_eq!(
        out,
        format!(
            "imported {} checkpoints ({} events); skipped 0 already present\nrestored 1 failed command(s); 0 already recorded\n",
            lines.len(),
            lines
                .iter()
                .map(|l| l["events"].as_array().unwrap().len())
                .sum::<usize>()
        )
    );
    assert_eq!(target.head(), source.head());
    assert_eq!(target.ok(&["log", "--json"]), log);
    assert_eq!(
        target.ok(&["events", "--json"]),
        source.ok(&["events", "--json"])
    );
    assert_eq!(target.ok(&["partitions"]), source.ok(&["partitions"]));
    assert_eq!(target.ok(&["export"]), exported);
    // The failure came along, with its id.
    assert_eq!(source.ok(&["failed"]).lines().count(), 2);
    assert_eq!(target.ok(&["failed"]), source.ok(&["failed"]));
    target.ok(&["fsck"]);

    // Importing the same file again: everything is skipped, HEAD does not move.
    let head = target.head();
    let before = target.snapshot();
    let value = json(
        target
            .ok(&["import", "--json", file.to_str().unwrap()])
            .trim(),
    );
    assert_eq!(value["imported"], 0);
    assert_eq!(value["skipped"], lines.len());
    assert_eq!(value["failed_restored"], 0);
    assert_eq!(value["failed_present"], 1);
    assert_eq!(value["differing"], 0);
    assert_eq!(value["head"].as_str(), head.as_deref());
    assert_eq!(target.head(), head);
    let after = target.snapshot();
    let refs = |s: &[(String, Vec<u8>)]| {
        s.iter()
            .filter(|(n, _)| n.starts_with("refs/") || n == "HEAD")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(refs(&before), refs(&after));
    assert_eq!(target.ok(&["log", "--json"]), log);
}

#[test]
fn import_from_stdin_and_export_of_a_revision() {
    let source = TestDepot::with_history();
    let exported = source.ok(&["export"]);
    let target = TestDepot::plain();
    let value = json(
        target
            .ok_stdin(&["import", "--json", "-"], &exported)
            .trim(),
    );
    assert_eq!(value["imported"], 8);
    assert_eq!(value["events"], 12);
    assert_eq!(target.ok(&["log", "--json"]), source.ok(&["log", "--json"]));
    // No file argument means stdin too; small batches give the same result.
    let third = TestDepot::plain();
    third.ok_stdin(&["import", "--batch", "3"], &exported);
    assert_eq!(third.ok(&["log", "--json"]), source.ok(&["log", "--json"]));

    // Exporting a revision exports its history only.
    let partial = source.ok(&["export", "HEAD~5"]);
    assert_eq!(partial.lines().count(), 3);
    assert!(exported.starts_with(&partial));
}

#[test]
fn the_history_fixture_exports_back_with_ids() {
    // The fixture has no ids; exporting it adds them and keeps every other field as written.
    let depot = TestDepot::with_history();
    let input = json_lines(&fs::read_to_string(history_file()).unwrap());
    let output = json_lines(&depot.ok(&["export"]));
    assert_eq!(input.len(), output.len());
    for (i, (a, b)) in input.iter().zip(&output).enumerate() {
        let mut b = b.clone();
        let map = b.as_object_mut().unwrap();
        assert!(map.remove("id").is_some());
        if i > 0 {
            assert!(map.remove("parents").is_some());
        }
        assert_eq!(a, &b, "line {}", i + 1);
    }
}

#[test]
fn import_into_a_non_empty_depot_warns_about_differing_ids() {
    let source = TestDepot::with_history();
    let exported = source.ok(&["export"]);
    let target = TestDepot::plain();
    target.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    let run = target.run_stdin(&["import", "--json"], &exported);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_panic(&run.stderr);
    assert!(
        run.stderr
            .starts_with("retro: warning: 8 checkpoint(s) got other ids"),
        "{}",
        run.stderr
    );
    assert_eq!(json(run.stdout.trim())["differing"], 8);
    assert_eq!(target.ok(&["log", "--oneline"]).lines().count(), 9);
}

#[test]
fn import_errors_name_the_line_and_change_nothing() {
    let depot = TestDepot::with_history();
    let good = r#"{"session":"x","date":"2026-03-01T00:00:00Z","events":[{"partition":"a/b","name":"E"}]}"#;
    for (input, needle) in [
        (format!("{good}\nnot json\n"), "line 2"),
        (
            format!("{good}\n{{\"events\":[{{\"partition\":\"../x\",\"name\":\"E\"}}]}}\n"),
            "line 2",
        ),
        (
            format!("{good}\n{{\"events\":[{{\"partition\":\"a/b\",\"name\":\"has space\"}}]}}\n"),
            "line 2",
        ),
        (
            "{\"date\":\"yesterday\",\"events\":[]}\n".to_owned(),
            "line 1",
        ),
        (
            "{\"id\":\"sha256:zz\",\"events\":[]}\n".to_owned(),
            "line 1",
        ),
        ("{\"session\":\"x\"}\n".to_owned(), "line 1"),
    ] {
        let run = depot.fails_unchanged_stdin(&["import", "-"], &input, 1);
        assert!(run.stderr.contains(needle), "{input:?}: {}", run.stderr);
    }
    let missing = depot.tmp.path().join("missing.jsonl");
    depot.fails_unchanged(&["import", missing.to_str().unwrap()], 1);
    depot.usage_unchanged(&["import", "--batch", "x"]);
    depot.fails_unchanged_stdin(&["import", "--batch", "0"], good, 1);
    let nowhere = depot.tmp.path().join("no/such/dir/out.jsonl");
    depot.fails_unchanged(&["export", "-o", nowhere.to_str().unwrap()], 1);
}

/// `n` import lines with no `id`, no `date` and no `session` (the worst case: nothing in a line
/// names its checkpoint), every seventh one the very same line.
fn undated_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i % 7 == 3 {
                "{\"events\":[{\"partition\":\"ticks/t\",\"name\":\"Tick\"}]}\n".to_owned()
            } else {
                format!(
                    "{{\"events\":[{{\"partition\":\"items/i{}\",\"name\":\"Put\",\"data\":{{\"n\":{i}}}}}]}}\n",
                    i % 13
                )
            }
        })
        .collect()
}

/// How many checkpoints HEAD's history holds, from a clean fsck.
fn checkpoints_fsck_clean(depot: &TestDepot) -> usize {
    let out = depot.ok(&["fsck"]);
    assert!(out.contains("no problems"), "{out}");
    let count = out
        .split("refs: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    count.unwrap_or_else(|| panic!("no checkpoint count in {out:?}"))
}

#[test]
fn d6_reimport_after_an_interrupted_import_writes_each_line_once() {
    let depot = TestDepot::plain();
    let n = 300;
    let text = undated_lines(n);
    let whole = depot.tmp.path().join("whole.jsonl");
    let prefix = depot.tmp.path().join("prefix.jsonl");
    fs::write(&whole, &text).unwrap();
    // An import stopped after 120 lines leaves exactly a prefix of the file imported.
    let first: String = text.lines().take(120).map(|l| format!("{l}\n")).collect();
    fs::write(&prefix, first).unwrap();
    let out = depot.ok(&["import", "--batch", "50", prefix.to_str().unwrap()]);
    assert!(out.starts_with("imported 120 checkpoints"), "{out}");
    // Someone else commits in between.
    depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    let run = depot.run(&["import", "--batch", "50", whole.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("imported 180 checkpoints (180 events); skipped 120 already present"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("the first 120 line(s) of the input are already imported"),
        "{}",
        run.stderr
    );
    assert_eq!(checkpoints_fsck_clean(&depot), n + 1);
    assert_eq!(
        json_lines(&depot.ok(&["events", "--json", "ticks/t"])).len(),
        text.lines().filter(|l| l.contains("Tick")).count()
    );
    // Re-running the completed import writes nothing, and says so.
    let before = depot.snapshot();
    let out = depot.ok(&["import", whole.to_str().unwrap()]);
    assert_eq!(
        out,
        format!("imported 0 checkpoints (0 events); skipped {n} already present\nnothing written: every line is already in the history\n")
    );
    assert_same_snapshot(&before, &depot.snapshot(), &["import"]);
    // From stdin too.
    let out = depot.ok_stdin(&["import", "-"], &text);
    assert!(out.starts_with("imported 0 checkpoints"), "{out}");
    assert_eq!(checkpoints_fsck_clean(&depot), n + 1);
}

#[test]
fn d6_reimport_after_a_killed_import_writes_each_line_once() {
    let depot = TestDepot::plain();
    let n = 20_000;
    let file = depot.tmp.path().join("big.jsonl");
    fs::write(&file, undated_lines(n)).unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("--depot")
        .arg(&depot.dir)
        .args(["import", "--batch", "100", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as its first batch has moved the branch.
    let branch = depot.dir.join("refs/heads/master");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !fs::metadata(&branch).is_ok_and(|m| m.len() > 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the import never moved the branch"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::yield_now();
    }
    let _ = child.kill();
    child.wait().unwrap();
    let partial = checkpoints_fsck_clean(&depot);
    assert!(partial > 0 && partial <= n, "{partial}");
    eprintln!("the killed import had written {partial} of {n} lines");
    let out = depot.ok(&["import", "--batch", "100", file.to_str().unwrap()]);
    assert_eq!(
        out.lines().next().unwrap(),
        format!(
            "imported {} checkpoints ({} events); skipped {partial} already present",
            n - partial,
            n - partial
        )
    );
    assert_eq!(checkpoints_fsck_clean(&depot), n);
}

#[test]
fn d6_lines_whose_reflog_markers_are_lost_are_still_recognised() {
    let depot = TestDepot::plain();
    let n = 60;
    let file = depot.tmp.path().join("lines.jsonl");
    fs::write(&file, undated_lines(n)).unwrap();
    depot.ok(&["import", "--batch", "25", file.to_str().unwrap()]);
    let reflog = depot.dir.join("logs/refs/heads/master");
    let text = fs::read_to_string(&reflog).unwrap();
    assert_eq!(text.lines().count(), n, "one marker a line");
    // The newest 10 markers lost (as if the ref had moved without them): found by content.
    let kept: String = text
        .lines()
        .take(n - 10)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&reflog, kept).unwrap();
    let out = depot.ok(&["import", file.to_str().unwrap()]);
    assert!(out.starts_with("imported 0 checkpoints"), "{out}");
    // Every marker lost: the newest checkpoints are still compared with the lines.
    fs::write(&reflog, "").unwrap();
    let out = depot.ok(&["import", file.to_str().unwrap()]);
    assert!(out.starts_with("imported 0 checkpoints"), "{out}");
    assert_eq!(checkpoints_fsck_clean(&depot), n);
}

#[test]
fn i16_9_a_directory_containing_dot_retro_is_that_depot_and_clone_makes_dst_dot_retro() {
    let tmp = tempfile::tempdir().unwrap();
    let tour = tmp.path().join("tour");
    fs::create_dir(&tour).unwrap();
    let ok = |cwd: &std::path::Path, args: &[&str]| {
        let out = run(retro_in(cwd).args(args));
        assert_eq!(out.code, 0, "retro {args:?}: {}", out.stderr);
        out.stdout
    };
    ok(&tour, &["init"]);
    ok(
        &tour,
        &[
            "apply",
            r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
        ],
    );
    ok(tmp.path(), &["clone", "tour/.retro", "c1"]);
    let c1 = tmp.path().join("c1");
    assert!(
        c1.join(".retro/config").is_file(),
        "clone DST makes DST/.retro, like init"
    );
    // Found from inside the clone, by walking up, like any depot `retro init` made.
    assert!(ok(&c1, &["log", "--oneline"]).contains("accounts/a open"));
    // A directory that contains `.retro` is that depot: --depot, RETRO_DEPOT, sync's SRC/DST.
    assert!(ok(tmp.path(), &["--depot", "tour", "log", "--oneline"]).contains("accounts/a open"));
    let out = run(retro_in(tmp.path())
        .env("RETRO_DEPOT", "tour")
        .args(["refs"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    ok(
        &tour,
        &[
            "apply",
            r#"{"path":"accounts/a","name":"deposit","params":{"amount":1}}"#,
        ],
    );
    let synced = ok(tmp.path(), &["sync", "tour", "c1"]);
    assert!(synced.contains("fast-forward"), "{synced}");
}

#[test]
fn i16_10_a_diverged_sync_suggests_force_which_works() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let out = run(retro_in(tmp.path()).args(args));
        assert_eq!(out.code, 0, "retro {args:?}: {}", out.stderr);
        out.stdout
    };
    ok(&["init", "a"]);
    ok(&[
        "--depot",
        "a",
        "apply",
        r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
    ]);
    ok(&["clone", "a", "b/.retro"]);
    ok(&[
        "--depot",
        "a",
        "apply",
        r#"{"path":"accounts/a","name":"deposit","params":{"amount":1}}"#,
    ]);
    ok(&[
        "--depot",
        "b",
        "apply",
        r#"{"path":"accounts/a","name":"deposit","params":{"amount":2}}"#,
    ]);
    let out = run(retro_in(tmp.path()).args(["sync", "a", "b"]));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert!(!out.stderr.contains("other way"), "{}", out.stderr);
    // The other way is not a fast-forward either: the advice it used to give did not work.
    let out = run(retro_in(tmp.path()).args(["sync", "b", "a"]));
    assert_eq!(out.code, 3, "{}", out.stderr);
    // What it suggests now does.
    ok(&["sync", "--force", "a", "b"]);
    let head = |d: &str| ok(&["--depot", d, "log", "--json", "-n", "1"]);
    assert_eq!(head("a"), head("b"));
}

#[test]
fn i16_11_export_keeps_failed_commands() {
    let source = applied_depot();
    // A second failure, on a later checkpoint, from the built-in bank.
    source.fails(
        &[
            "apply",
            r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":999999}}"#,
        ],
        4,
    );
    let failed = source.ok(&["failed", "--json"]);
    assert_eq!(failed.lines().count(), 2);
    let exported = source.ok(&["export"]);
    let lines = json_lines(&exported);
    // Each failed line follows the line of the checkpoint it was tried on, and says why.
    for (i, line) in lines.iter().enumerate() {
        if line.get("failed").is_none() {
            continue;
        }
        assert!(line.get("id").is_none(), "{line}");
        assert_eq!(line["events"].as_array().unwrap().len(), 0);
        assert!(
            line["fields"]["error"].as_str().unwrap().contains(": "),
            "{line}"
        );
        let parent = line["parents"][0].as_str().unwrap();
        let tried_on = lines[..i]
            .iter()
            .rev()
            .find(|l| l.get("id").is_some())
            .unwrap();
        assert_eq!(tried_on["id"].as_str(), Some(parent), "{line}");
    }

    // An export of an older revision leaves out the failures tried on later checkpoints, and
    // says so.
    let run = source.run(&["export", "HEAD~1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "1 failed command(s) tried on checkpoints outside this history are not exported"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        json_lines(&run.stdout)
            .iter()
            .filter(|l| l.get("failed").is_some())
            .count(),
        1
    );

    // Into a fresh depot: `retro failed --json` is identical, fsck is clean.
    let target = TestDepot::plain();
    let out = target.ok_stdin(&["import", "--json"], &exported);
    let value = json(out.trim());
    assert_eq!(value["failed_restored"], 2);
    assert_eq!(value["failed_missing_parent"], 0);
    assert_eq!(target.ok(&["failed", "--json"]), failed);
    assert!(target.ok(&["fsck"]).contains("2 failed commands kept"));
    assert_eq!(target.ok(&["export"]), exported);

    // Idempotent: a second import records nothing twice.
    let again = target.ok_stdin(&["import"], &exported);
    assert!(
        again.contains("restored 0 failed command(s); 2 already recorded\nnothing written"),
        "{again}"
    );
    assert_eq!(target.ok(&["failed", "--json"]), failed);

    // Into a depot where the checkpoints get other ids (it was not empty): the failures' parents
    // are not there, so they are not restored, and the warning and the counts say so.
    let other = TestDepot::plain();
    other.ok(&[
        "apply",
        r#"{"path":"accounts/zed","name":"open","params":{"owner":"Zed"}}"#,
    ]);
    let run = other.run_stdin(&["import", "--json"], &exported);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let value = json(run.stdout.trim());
    assert_eq!(value["failed_restored"], 0);
    assert_eq!(value["failed_missing_parent"], 2);
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.contains("is not restored: the checkpoint it was tried on"))
            .count(),
        2,
        "{}",
        run.stderr
    );
    assert_eq!(other.ok(&["failed"]), "");
    other.ok(&["fsck"]);

    // A failed line whose content does not match its id is refused before anything is written.
    let tampered = exported.replace(r#""fields":{"error":""#, r#""fields":{"error":"x"#);
    assert_ne!(tampered, exported);
    let fresh = TestDepot::plain();
    let run = fresh.run_stdin(&["import"], &tampered);
    assert_error(&run, 1);
    assert!(run.stderr.contains("hashes to"), "{}", run.stderr);
    assert_eq!(fresh.head(), None);
}

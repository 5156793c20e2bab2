//! Every CLI command on a PostgreSQL depot; its output equals the files depot's it was synced from.

use crate::common::{command, fresh_url, json_lines, ok, retro, run};

#[test]
fn every_command_works_on_postgres_with_the_files_depot_output() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let files = w.join("files");
    let files = files.to_str().unwrap();
    let url = fresh_url();
    let url = url.as_str();

    // Build history in a files depot, then clone it into PostgreSQL (plain events, as a
    // PostgreSQL depot writes them, so that the two print the same ids).
    ok(w, &["init", "--events", "plain", files]);
    for (path, name, params) in [
        ("accounts/alice", "open", r#"{"owner":"Alice"}"#),
        ("accounts/bob", "open", r#"{"owner":"Bob"}"#),
        ("accounts/alice", "deposit", r#"{"amount":100}"#),
        (
            "accounts/alice",
            "transfer",
            r#"{"to":"accounts/bob","amount":30}"#,
        ),
    ] {
        ok(
            w,
            &[
                "--depot",
                files,
                "apply",
                "--session",
                "s1",
                &command(path, name, params),
            ],
        );
    }
    ok(
        w,
        &["--depot", files, "update-ref", "refs/tags/audit", "HEAD~1"],
    );
    let cloned = ok(w, &["clone", files, url]);
    assert!(cloned.contains("copied 4 checkpoint(s)"), "{cloned}");

    // Read commands: byte-identical output on both depots.
    for args in [
        vec!["log"],
        vec!["log", "--json"],
        vec!["log", "--oneline", "-n", "2", "--reverse"],
        vec!["log", "--partition", "accounts/bob"],
        vec!["log", "refs/tags/audit"],
        vec!["show", "HEAD~1"],
        vec!["show", "--json", "HEAD"],
        vec!["cat-object", "-p", "HEAD"],
        vec!["cat-object", "-t", "HEAD^"],
        vec!["cat-object", "-s", "master~2"],
        vec!["cat-object", "HEAD"],
        vec!["events", "accounts/*"],
        vec!["events", "**", "--json", "--since", "HEAD~2"],
        vec!["partitions"],
        vec!["partitions", "--json", "accounts/*"],
        vec!["refs"],
        vec!["refs", "--json"],
    ] {
        let mut on_files = vec!["--depot", files];
        on_files.extend(&args);
        let mut on_pg = vec!["--depot", url];
        on_pg.extend(&args);
        assert_eq!(ok(w, &on_files), ok(w, &on_pg), "retro {args:?}");
    }

    // A unique prefix resolves; RETRO_DEPOT names the depot too.
    let head = ok(w, &["--depot", url, "log", "--oneline", "-n", "1"]);
    let prefix = &head[..8];
    let by_env = crate::common::retro(w, &["cat-object", "-t", prefix])
        .env("RETRO_DEPOT", url)
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{by_env:?}");
    assert_eq!(String::from_utf8_lossy(&by_env.stdout).trim(), "checkpoint");

    // Writes: apply, a domain rejection recorded as a failed command, sessions, update-ref CAS.
    let applied = ok(
        w,
        &[
            "--depot",
            url,
            "apply",
            "--json",
            &command("accounts/bob", "deposit", r#"{"amount":5}"#),
        ],
    );
    let applied = &json_lines(&applied)[0];
    assert_eq!(applied["events"], 1, "{applied}");
    let rejected = run(
        w,
        &[
            "--depot",
            url,
            "apply",
            &command("accounts/bob", "withdraw", r#"{"amount":1000}"#),
        ],
    );
    assert_eq!(rejected.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("insufficient_funds"));
    let failed = ok(w, &["--depot", url, "failed", "--json"]);
    assert_eq!(json_lines(&failed).len(), 1, "{failed}");
    let session = ok(w, &["--depot", url, "session", "start"]);
    assert!(!session.trim().is_empty());
    let stale = run(
        w,
        &[
            "--depot",
            url,
            "update-ref",
            "refs/tags/audit",
            "HEAD~1",
            "HEAD",
        ],
    );
    assert_eq!(stale.status.code(), Some(3), "a lost CAS is a Conflict");
    ok(
        w,
        &["--depot", url, "update-ref", "refs/tags/audit", "HEAD"],
    );
    let reflog = ok(w, &["--depot", url, "reflog", "refs/tags/audit"]);
    assert_eq!(reflog.lines().count(), 2, "{reflog}");

    // Maintenance: fsck clean (the failed command is not corruption), reindex, export/import.
    let fsck = ok(w, &["--depot", url, "fsck"]);
    assert!(
        fsck.contains("no problems") && fsck.contains("1 failed commands kept"),
        "{fsck}"
    );
    ok(w, &["--depot", url, "reindex"]);
    let export = w.join("history.jsonl");
    ok(
        w,
        &["--depot", url, "export", "-o", export.to_str().unwrap()],
    );
    let other = fresh_url();
    ok(w, &["init", &other]);
    ok(w, &["--depot", &other, "import", export.to_str().unwrap()]);
    assert_eq!(
        ok(w, &["--depot", url, "log", "--json"]),
        ok(w, &["--depot", &other, "log", "--json"]),
        "an export imported elsewhere has the same ids"
    );
    assert_eq!(
        ok(w, &["--depot", url, "failed", "--json"]),
        ok(w, &["--depot", &other, "failed", "--json"]),
        "and the same failed commands (i16_11)"
    );
    // The bulk path appended the index set-based in the commit: it agrees with a replay.
    let imported = ok(w, &["--depot", &other, "fsck"]);
    assert!(imported.contains("no problems"), "{imported}");
    let gc = ok(w, &["--depot", url, "gc", "--prune", "1d"]);
    assert!(
        gc.contains("nothing to repack") && gc.contains("pruned 0"),
        "{gc}"
    );
}

#[test]
fn bad_urls_and_missing_depots_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let empty = fresh_url();
    let out = run(w, &["--depot", &empty, "log"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds no retro depot") && stderr.contains("retro init"),
        "{stderr}"
    );

    ok(w, &["init", &empty]);
    let again = run(w, &["init", &empty]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a retro depot"));

    let refused = run(
        w,
        &["--depot", "postgres://ada:secret@127.0.0.1:1/none", "log"],
    );
    // Nothing listens there: retryable (exit 6), and the hint says so.
    assert_eq!(refused.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("retro: error: could not connect to PostgreSQL"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is never printed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn d6_reimport_into_postgres_writes_each_line_once() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = fresh_url();
    let url = url.as_str();
    ok(w, &["init", url]);
    // No ids, no dates, no sessions; repeated lines; and batches that split the prefix unevenly.
    let lines: Vec<String> = (0..90)
        .map(|i| {
            format!(
                "{{\"events\":[{{\"partition\":\"items/i{}\",\"name\":\"Put\",\"data\":{{\"n\":{}}}}}]}}",
                i % 5,
                i % 4
            )
        })
        .collect();
    let whole = w.join("whole.jsonl");
    let prefix = w.join("prefix.jsonl");
    std::fs::write(&whole, lines.join("\n")).unwrap();
    std::fs::write(&prefix, lines[..47].join("\n")).unwrap();
    let out = ok(
        w,
        &[
            "--depot",
            url,
            "import",
            "--batch",
            "10",
            prefix.to_str().unwrap(),
        ],
    );
    assert!(out.starts_with("imported 47 checkpoints"), "{out}");
    let out = ok(
        w,
        &[
            "--depot",
            url,
            "import",
            "--batch",
            "10",
            whole.to_str().unwrap(),
        ],
    );
    assert!(
        out.starts_with("imported 43 checkpoints (43 events); skipped 47 already present"),
        "{out}"
    );
    let out = ok(w, &["--depot", url, "import", whole.to_str().unwrap()]);
    assert!(out.starts_with("imported 0 checkpoints"), "{out}");
    assert_eq!(
        json_lines(&ok(w, &["--depot", url, "log", "--json"])).len(),
        90
    );
    let fsck = ok(w, &["--depot", url, "fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}

#[test]
fn apply_batch_works_on_postgres_one_checkpoint_per_good_line() {
    use std::io::Write;

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = fresh_url();
    ok(w, &["init", &url]);
    let mut child = retro(w, &["--depot", &url, "apply", "--batch", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = [
        command("accounts/alice", "open", r#"{"owner":"Alice"}"#),
        String::new(),
        command("accounts/alice", "withdraw", r#"{"amount":5}"#),
        command("accounts/alice", "deposit", r#"{"amount":5}"#),
    ]
    .join("\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let answers = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers[0]["checkpoint"].is_string());
    assert_eq!(answers[1]["error"]["code"], "insufficient_funds");
    assert_eq!(answers[1]["line"], 3);
    assert_eq!(answers[2]["parent"], answers[0]["checkpoint"]);
    assert_eq!(
        ok(w, &["--depot", &url, "log", "--oneline"])
            .lines()
            .count(),
        2
    );
}

#[test]
fn a_command_id_is_applied_once_on_postgres_and_survives_a_clone_from_files() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let files = w.join("files");
    let files = files.to_str().unwrap();
    let url = fresh_url();
    let url = url.as_str();
    let open = command("accounts/alice", "open", r#"{"owner":"Alice"}"#);
    ok(w, &["init", "--events", "plain", files]);
    let first = ok(w, &["--depot", files, "apply", "--id", "open-1", &open]);
    ok(w, &["clone", files, url]);
    // The clone's index carries the id: applying it again on PostgreSQL writes nothing.
    let again = json_lines(&ok(
        w,
        &["--depot", url, "apply", "--json", "--id", "open-1", &open],
    ));
    assert_eq!(again[0]["checkpoint"], first.trim());
    assert_eq!(again[0]["replayed"], true);
    let deposit = command("accounts/alice", "deposit", r#"{"amount":5}"#);
    let made = ok(
        w,
        &[
            "--depot",
            url,
            "apply",
            "--id",
            "dep-1",
            "--correlation-id",
            "c-9",
            &deposit,
        ],
    );
    let replayed = ok(w, &["--depot", url, "apply", "--id", "dep-1", &deposit]);
    assert_eq!(made, replayed);
    let reused = run(w, &["--depot", url, "apply", "--id", "dep-1", &open]);
    assert_eq!(reused.status.code(), Some(3));
    let log = ok(
        w,
        &["--depot", url, "log", "--oneline", "--correlation", "c-9"],
    );
    assert_eq!(log.lines().count(), 1, "{log}");
    assert_eq!(
        ok(w, &["--depot", url, "log", "--oneline"]).lines().count(),
        2
    );
}

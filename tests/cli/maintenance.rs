//! fsck (clean and corrupted), gc, gc --prune, reindex, failed.

use std::fs;
use std::path::PathBuf;

use crate::common::*;

fn packs(depot: &TestDepot) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = fs::read_dir(depot.dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    packs.sort();
    packs
}

fn flip_middle_byte(path: &PathBuf) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[test]
fn fsck_clean() {
    let depot = TestDepot::with_history();
    let out = depot.ok(&["fsck"]);
    assert!(
        out.starts_with("checked 2 refs: 8 checkpoints, 8 affixes, 12 events;"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("no problems"), "{out}");
    let value = json(depot.ok(&["fsck", "--json"]).trim());
    assert_eq!(value["clean"], true);
    assert_eq!(value["checkpoints"], 8);
    assert_eq!(value["events"], 12);
    assert_eq!(value["problems"], serde_json::json!([]));
    // Clean fsck changes nothing.
    let before = depot.snapshot();
    depot.ok(&["fsck"]);
    assert_same_snapshot(&before, &depot.snapshot(), &["fsck"]);
}

#[test]
fn fsck_finds_a_damaged_pack() {
    let depot = TestDepot::with_history();
    let packs = packs(&depot);
    assert!(!packs.is_empty());
    for pack in &packs {
        flip_middle_byte(pack);
    }
    let run = depot.fails(&["fsck"], 5);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("error ")),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("fsck found"), "{}", run.stderr);
    let run = depot.run(&["fsck", "--json"]);
    assert_eq!(run.code, 5);
    assert_no_panic(&run.stderr);
    let value = json(run.stdout.trim());
    assert_eq!(value["clean"], false);
    assert!(!value["problems"].as_array().unwrap().is_empty());
}

#[test]
fn fsck_finds_a_ref_to_a_missing_object() {
    let depot = TestDepot::with_history();
    let missing = format!("sha256:{}", "1".repeat(64));
    fs::write(depot.dir.join("refs/heads/broken"), &missing).unwrap();
    let run = depot.fails(&["fsck"], 5);
    let error = run
        .stdout
        .lines()
        .find(|l| l.starts_with("error "))
        .unwrap_or_else(|| panic!("no error line:\n{}", run.stdout));
    assert!(error.contains(&missing), "{error}");
    assert!(error.contains("refs/heads/broken"), "{error}");
    // The rest of the depot is still usable, and removing the bad ref makes it clean.
    depot.ok(&["log", "--oneline"]);
    fs::remove_file(depot.dir.join("refs/heads/broken")).unwrap();
    depot.ok(&["fsck"]);
}

#[test]
fn gc_repacks_and_keeps_everything_reachable() {
    let depot = TestDepot::with_history();
    // A second pack: applies after the import.
    depot.apply(r#"{"path":"accounts/zoe","name":"open","params":{"owner":"Zoe"}}"#);
    let log = depot.ok(&["log", "--json"]);
    let events = depot.ok(&["events", "--json"]);
    let out = depot.ok(&["gc"]);
    assert!(out.starts_with("repacked "), "{out}");
    assert!(out.trim_end().ends_with("pruned 0"), "{out}");
    // One sealed pack (with its index) holds everything; any other pack is an empty active one.
    let (sealed, active): (Vec<PathBuf>, Vec<PathBuf>) = packs(&depot)
        .into_iter()
        .partition(|p| p.with_extension("idx").is_file());
    assert_eq!(sealed.len(), 1, "gc leaves one sealed pack: {sealed:?}");
    for pack in active {
        assert!(
            fs::metadata(&pack).unwrap().len() <= 64,
            "{} holds objects",
            pack.display()
        );
    }
    assert_eq!(depot.ok(&["log", "--json"]), log);
    assert_eq!(depot.ok(&["events", "--json"]), events);
    depot.ok(&["fsck"]);
    let value = json(depot.ok(&["gc", "--json"]).trim());
    assert_eq!(value["pruned"], 0);
    assert!(value["kept"].as_u64().unwrap() >= 9 + 9 + 14);
    assert_eq!(depot.ok(&["log", "--json"]), log);
}

#[test]
fn gc_prune_drops_unreachable_objects() {
    let depot = TestDepot::with_history();
    let log = depot.ok(&["log", "--json"]);
    // A side branch, then deleted: its checkpoint becomes unreachable.
    let side = depot
        .ok(&[
            "apply",
            "--ref",
            "refs/heads/side",
            r#"{"path":"accounts/zed","name":"open","params":{"owner":"Zed"}}"#,
        ])
        .trim()
        .to_owned();
    depot.ok(&["update-ref", "-d", "refs/heads/side"]);
    let fsck = depot.ok(&["fsck"]);
    assert!(
        fsck.contains(&format!("unreachable checkpoint {side}")),
        "{fsck}"
    );

    // Without --prune nothing goes.
    let value = json(depot.ok(&["gc", "--json"]).trim());
    assert_eq!(value["pruned"], 0);
    assert_eq!(depot.ok(&["cat-object", "-t", &side]), "checkpoint\n");
    // A long grace period keeps young objects.
    let value = json(depot.ok(&["gc", "--json", "--prune", "14d"]).trim());
    assert_eq!(value["pruned"], 0);
    // --prune 0 drops them: checkpoint, affix and two events.
    let value = json(depot.ok(&["gc", "--json", "--prune", "0"]).trim());
    assert_eq!(value["pruned"], 4, "{value}");
    depot.fails(&["cat-object", "-t", &side], 1);
    let fsck = depot.ok(&["fsck"]);
    assert!(
        fsck.contains("0 unreachable objects; no problems"),
        "{fsck}"
    );
    assert_eq!(depot.ok(&["log", "--json"]), log);
    // A bad age is an error that changes nothing.
    let run = depot.fails_unchanged(&["gc", "--prune", "soon"], 1);
    assert!(run.stderr.contains("soon"), "{}", run.stderr);
}

#[test]
fn gc_prune_keeps_failed_commands() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    depot.fails(
        &[
            "apply",
            r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":5}}"#,
        ],
        4,
    );
    let failed = depot.ok(&["failed"]);
    depot.ok(&["gc", "--prune", "0"]);
    assert_eq!(depot.ok(&["failed"]), failed);
    depot.ok(&["fsck"]);
}

#[test]
fn reindex_rebuilds_the_partition_index() {
    let depot = TestDepot::with_history();
    let partitions = depot.ok(&["partitions"]);
    let events = depot.ok(&["events", "--json"]);
    assert_eq!(
        depot.ok(&["reindex"]),
        "indexed 8 checkpoints, 5 partitions, 12 events\n"
    );
    assert_eq!(depot.ok(&["partitions"]), partitions);
    assert_eq!(depot.ok(&["events", "--json"]), events);
    // Even from scratch: the index is derived data.
    for entry in fs::read_dir(&depot.dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("index.sqlite")
        {
            fs::remove_file(path).unwrap();
        }
    }
    depot.ok(&["reindex"]);
    assert_eq!(depot.ok(&["partitions"]), partitions);
    assert_eq!(depot.ok(&["events", "--json"]), events);
    depot.ok(&["fsck"]);
}

#[test]
fn failed_lists_rejections_and_handler_failures() {
    let depot = TestDepot::new();
    assert_eq!(depot.ok(&["failed"]), "");
    depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    let session = depot.ok(&["session", "start"]).trim().to_owned();
    let misbehaving = misbehaving();
    depot.fails(
        &[
            "apply",
            "--session",
            &session,
            r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":999}}"#,
        ],
        4,
    );
    depot.fails(
        &[
            "apply",
            "--manifest",
            misbehaving.to_str().unwrap(),
            r#"{"path":"bad/x","name":"garbage","params":{}}"#,
        ],
        4,
    );
    let text = depot.ok(&["failed"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains(&format!(" {session} accounts/alice withdraw")),
        "{text}"
    );
    assert!(lines[1].starts_with("    insufficient_funds: "), "{text}");
    assert!(lines[2].contains(" cli bad/x garbage"), "{text}");
    assert!(lines[3].contains("invalid JSON"), "{text}");

    let json = json_lines(&depot.ok(&["failed", "--json"]));
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["session"].as_str().unwrap(), session);
    assert_eq!(json[0]["command"]["params"]["amount"], 999);
    assert_eq!(json[0]["error"]["code"], "insufficient_funds");
    assert!(json[0]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot withdraw 999"));
    // One shape with HTTP: {"error":{"code","message"}}, a broken handler included.
    assert_eq!(json[1]["error"]["code"], "handler_failed", "{}", json[1]);
    assert!(json[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    assert!(json[0]["checkpoint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(json[1]["command"]["name"], "garbage");
    // A failed command is an object in the depot, but not history.
    let id = json[0]["checkpoint"].as_str().unwrap();
    assert_eq!(depot.ok(&["cat-object", "-t", id]), "checkpoint\n");
    assert_eq!(depot.ok(&["log", "--oneline"]).lines().count(), 2);
    depot.ok(&["fsck"]);
}

/// What the read commands print: `log`, `events` of one partition and of all, `partitions`.
fn reads(run: impl Fn(&[&str]) -> Run) -> Vec<String> {
    [
        vec!["log"],
        vec!["events", "accounts/alice"],
        vec!["events", "--json"],
        vec!["partitions"],
        vec!["show"],
    ]
    .iter()
    .map(|args| {
        let result = run(args);
        assert_eq!(
            result.code, 0,
            "retro {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            result.code, result.stdout, result.stderr
        );
        assert_no_panic(&result.stderr);
        result.stdout
    })
    .collect()
}

fn write_garbage_index(depot: &TestDepot) {
    let path = depot.dir.join("index.sqlite");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(depot.dir.join(format!("index.sqlite{suffix}")));
    }
    fs::write(
        &path,
        b"this is not an SQLite database, just garbage bytes\n".repeat(200),
    )
    .unwrap();
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("retro: warning:"))
        .collect()
}

#[test]
fn d9_a_corrupt_index_file_is_replaced_and_every_command_works() {
    let depot = TestDepot::with_history();
    let expected = reads(|args| depot.run(args));
    // Each command on its own, each time on a garbage file.
    for args in [
        vec!["log"],
        vec!["events", "accounts/alice"],
        vec!["partitions"],
    ] {
        write_garbage_index(&depot);
        let run = depot.run(&args);
        assert_eq!(run.code, 0, "retro {args:?}: {}", run.stderr);
        let warned = warnings(&run.stderr);
        assert_eq!(warned.len(), 1, "one warning line: {}", run.stderr);
        assert!(
            warned[0].contains("index.sqlite") && warned[0].contains("rebuilt from history"),
            "{}",
            run.stderr
        );
    }
    write_garbage_index(&depot);
    assert_eq!(reads(|args| depot.run(args)), expected);
    // The file was replaced by a good one: no more warnings.
    let run = depot.run(&["events", "accounts/alice"]);
    assert!(warnings(&run.stderr).is_empty(), "{}", run.stderr);
    // A command commits.
    write_garbage_index(&depot);
    depot.apply(r#"{"path":"accounts/alice","name":"deposit","params":{"amount":7}}"#);
    let events = depot.ok(&["events", "accounts/alice"]);
    assert!(
        events.lines().last().unwrap().contains("Deposited"),
        "{events}"
    );
    assert!(events.contains(r#""amount":7"#), "{events}");
    // And reindex rebuilds from a garbage file.
    write_garbage_index(&depot);
    assert_eq!(
        depot.ok(&["reindex"]),
        "indexed 9 checkpoints, 5 partitions, 13 events\n"
    );
    assert_eq!(depot.ok(&["events", "accounts/alice"]), events);
    let out = depot.ok(&["fsck"]);
    assert!(out.contains("no problems"), "{out}");
}

#[test]
fn d9_an_index_that_cannot_be_opened_does_not_block_reads_or_commits() {
    let depot = TestDepot::with_history();
    let expected = reads(|args| depot.run(args));
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(depot.dir.join(format!("index.sqlite{suffix}")));
    }
    // Root ignores file modes: a directory in the file's place is what cannot be opened.
    fs::create_dir(depot.dir.join("index.sqlite")).unwrap();
    let run = depot.run(&["events", "accounts/alice"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warned = warnings(&run.stderr);
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    assert!(warned[0].contains("built in memory"), "{}", run.stderr);
    assert_eq!(reads(|args| depot.run(args)), expected);
    // Commits do not depend on the index either.
    depot.apply(r#"{"path":"accounts/alice","name":"deposit","params":{"amount":7}}"#);
    let events = depot.ok(&["events", "accounts/alice"]);
    assert!(events.contains(r#""amount":7"#), "{events}");
    // reindex cannot write the index there, and says why.
    let run = depot.fails(&["reindex"], 1);
    assert!(run.stderr.contains("index.sqlite"), "{}", run.stderr);
    let out = depot.ok(&["fsck"]);
    assert!(out.contains("no problems"), "{out}");
}

/// Runs `retro --depot DIR ARGS` with DIR bind-mounted read-only in a private mount namespace;
/// `None` when this machine cannot do that (no `unshare`, no privilege).
fn run_read_only(depot: &TestDepot, args: &[&str]) -> Option<Run> {
    let dir = depot.dir.to_str().unwrap();
    let mount = format!(r#"mount --bind "{dir}" "{dir}" && mount -o remount,bind,ro "{dir}""#);
    let probe = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(r#"{mount} && ! touch "{dir}/probe" 2>/dev/null"#))
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let mut cmd = assert_cmd::Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        &format!(r#"{mount} && exec "$0" --depot "{dir}" "$@""#),
    ])
    .arg(bin())
    .args(args)
    .current_dir(depot.tmp.path())
    .env_remove("RETRO_DEPOT")
    .env_remove("RETRO_SESSION")
    .env_remove("RETRO_MANIFEST")
    .env("NO_COLOR", "1");
    Some(run(&mut cmd))
}

#[test]
fn d9_a_read_only_depot_serves_reads() {
    let depot = TestDepot::with_history();
    // Leave the index one checkpoint behind, so that reads must catch up (which writes).
    let index = depot.dir.join("index.sqlite");
    let saved = fs::read(&index).unwrap();
    depot.apply(r#"{"path":"accounts/alice","name":"deposit","params":{"amount":7}}"#);
    let expected = reads(|args| depot.run(args));
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(depot.dir.join(format!("index.sqlite{suffix}")));
    }
    fs::write(&index, saved).unwrap();
    let Some(probe) = run_read_only(&depot, &["log", "-n", "1"]) else {
        eprintln!("skipped: cannot bind-mount the depot read-only here (unshare -m unavailable)");
        return;
    };
    assert_eq!(probe.code, 0, "{}", probe.stderr);
    let got = reads(|args| run_read_only(&depot, args).unwrap());
    assert_eq!(got, expected);
    assert!(expected[1].contains(r#""amount":7"#), "{}", expected[1]);
}

#[test]
fn i16_11_failed_json_gives_the_error_as_code_and_message_like_http() {
    let depot = TestDepot::new();
    depot.fails(
        &[
            "apply",
            r#"{"path":"accounts/x","name":"deposit","params":{"amount":1}}"#,
        ],
        4,
    );
    let json = json_lines(&depot.ok(&["failed", "--json"]));
    assert_eq!(json.len(), 1);
    let error = json[0]["error"]
        .as_object()
        .expect("an object, not a string");
    assert_eq!(error["code"], "not_open", "{}", json[0]);
    assert!(!error["message"].as_str().unwrap().is_empty());
    assert_eq!(error.len(), 2, "{}", json[0]);
}

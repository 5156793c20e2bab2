//! init, apply (argument, stdin, --json, --manifest, --session, --ref), sessions, finding the
//! depot, --version, completions, help, demo.

use std::fs;

use crate::common::*;

const OPEN_ALICE: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const DEPOSIT_50: &str = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":50}}"#;

#[test]
fn init_creates_a_depot_and_refuses_a_second_time() {
    let depot = TestDepot::uninitialized();
    let out = depot.ok(&["init"]);
    let shown = depot.dir.canonicalize().unwrap();
    assert_eq!(
        out,
        format!("Initialized empty retro depot in {}\n", shown.display())
    );
    assert!(depot.dir.join("config").is_file());
    assert!(depot.dir.join("HEAD").is_file());
    // An empty depot: no history, HEAD is unborn, fsck is clean.
    assert_eq!(depot.ok(&["log"]), "");
    assert_eq!(depot.head(), None);
    depot.ok(&["fsck"]);
    // Again: an error, and the depot is untouched.
    let run = depot.fails_unchanged(&["init"], 1);
    assert!(run.stderr.contains("already"), "{}", run.stderr);
}

#[test]
fn init_json_and_explicit_dir() {
    let depot = TestDepot::uninitialized();
    let target = depot.tmp.path().join("nested/dir");
    let out = run(retro_in(depot.tmp.path()).args(["init", "--json", target.to_str().unwrap()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let value = json(&out.stdout);
    assert_eq!(
        value["depot"].as_str().unwrap(),
        target.canonicalize().unwrap().to_str().unwrap()
    );
}

#[test]
fn init_without_arguments_makes_dot_retro_found_from_subdirectories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(retro_in(tmp.path()).arg("init"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(tmp.path().join(".retro/config").is_file());
    let sub = tmp.path().join("a/b");
    fs::create_dir_all(&sub).unwrap();
    // Found by walking up from a subdirectory, like Git.
    let applied = run(retro_in(&sub).args(["apply", OPEN_ALICE]));
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let log = run(retro_in(tmp.path()).args(["log", "--oneline"]));
    assert_eq!(log.code, 0);
    assert!(log.stdout.contains("accounts/alice open"), "{}", log.stdout);
}

#[test]
fn retro_depot_environment_variable_names_the_depot() {
    let depot = TestDepot::new();
    let id = depot.apply(OPEN_ALICE);
    let out = run(retro_in(depot.tmp.path())
        .env("RETRO_DEPOT", &depot.dir)
        .args(["log", "--oneline"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with(&id[7..19]), "{}", out.stdout);
    // --depot wins over the environment.
    let other = TestDepot::new();
    let out = run(retro_in(depot.tmp.path())
        .env("RETRO_DEPOT", &depot.dir)
        .arg("--depot")
        .arg(&other.dir)
        .args(["log", "--oneline"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn apply_prints_the_checkpoint_and_moves_head() {
    let depot = TestDepot::new();
    let first = depot.apply(OPEN_ALICE);
    assert_eq!(depot.head().as_deref(), Some(first.as_str()));
    let second = depot.apply(DEPOSIT_50);
    assert_ne!(first, second);
    assert_eq!(depot.head().as_deref(), Some(second.as_str()));
    let log = json_lines(&depot.ok(&["log", "--json"]));
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["parents"][0].as_str().unwrap(), first);
    assert_eq!(log[0]["session"], "cli");
    assert_eq!(log[0]["message"]["name"], "deposit");
}

#[test]
fn apply_reads_the_command_from_stdin() {
    let depot = TestDepot::new();
    depot.apply(OPEN_ALICE);
    let out = depot.ok_stdin(&["apply", "-"], &format!("{DEPOSIT_50}\n"));
    let id = out.trim();
    assert_eq!(depot.head().as_deref(), Some(id));
    let events = json_lines(&depot.ok(&["events", "accounts/alice", "--json"]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["name"], "Deposited");
    assert_eq!(events[1]["data"]["amount"], 50);
}

#[test]
fn apply_json_reports_the_result() {
    let depot = TestDepot::new();
    let first = depot.apply(OPEN_ALICE);
    let value = json(&depot.ok(&["apply", "--json", DEPOSIT_50]));
    assert_eq!(value["parent"].as_str().unwrap(), first);
    assert_eq!(value["path"], "accounts/alice");
    assert_eq!(value["events"], 1);
    assert_eq!(value["attempts"], 1);
    assert_eq!(value["partitions"], serde_json::json!(["accounts/alice"]));
    assert_eq!(value["checkpoint"].as_str().unwrap(), depot.head().unwrap());
    // The first apply has no parent.
    let other = TestDepot::new();
    let value = json(&other.ok(&["apply", "--json", OPEN_ALICE]));
    assert!(value["parent"].is_null());
    assert_eq!(value["events"], 2);
}

#[test]
fn apply_with_the_fixture_manifest_runs_python_and_shell_handlers() {
    let depot = TestDepot::new();
    let manifest = manifest();
    let manifest = manifest.to_str().unwrap();
    depot.ok(&[
        "apply",
        "--manifest",
        manifest,
        r#"{"path":"accounts/carol","name":"open","params":{"owner":"Carol","currency":"CHF"}}"#,
    ]);
    depot.ok(&[
        "apply",
        "--manifest",
        manifest,
        r#"{"path":"accounts/carol","name":"deposit","params":{"amount":70}}"#,
    ]);
    depot.ok(&[
        "apply",
        "--manifest",
        manifest,
        r#"{"path":"notes/n1","name":"add","params":{"text":"from sh"}}"#,
    ]);
    let events = json_lines(&depot.ok(&["events", "--json"]));
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["partition"].as_str().unwrap(),
                e["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("accounts/carol", "AccountOpened"),
            ("registry/accounts", "AccountListed"),
            ("accounts/carol", "Deposited"),
            ("notes/n1", "NoteAdded"),
        ]
    );
    assert_eq!(events[0]["data"]["currency"], "CHF");
    assert_eq!(events[3]["data"]["text"], "from sh");
    // The built-in bank does not know notes: without the manifest, that aggregate is unknown.
    depot.fails_unchanged(
        &[
            "apply",
            r#"{"path":"notes/n2","name":"add","params":{"text":"x"}}"#,
        ],
        1,
    );
}

#[test]
fn apply_finds_the_manifest_in_the_environment_and_in_the_depot() {
    let depot = TestDepot::new();
    let note = r#"{"path":"notes/n1","name":"add","params":{"text":"env"}}"#;
    let out = run(depot
        .cmd()
        .env("RETRO_MANIFEST", manifest())
        .args(["apply", note]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // <depot>/manifest.json, with its handler paths relative to the fixture directory.
    let text = fs::read_to_string(manifest()).unwrap();
    let dir = fixtures().join("domain");
    let text = text.replace("handlers/", &format!("{}/handlers/", dir.display()));
    fs::write(depot.dir.join("manifest.json"), text).unwrap();
    depot.ok(&[
        "apply",
        r#"{"path":"notes/n2","name":"add","params":{"text":"depot"}}"#,
    ]);
    assert_eq!(depot.ok(&["partitions", "notes/*"]).lines().count(), 2);
}

#[test]
fn sessions_start_end_and_sign_checkpoints() {
    let depot = TestDepot::new();
    let session = depot.ok(&["session", "start"]).trim().to_owned();
    assert!(!session.is_empty() && !session.contains(' '), "{session}");
    let id = depot.ok(&["apply", "--session", &session, OPEN_ALICE]);
    let head = json(depot.ok(&["log", "--json", "-n", "1"]).trim());
    assert_eq!(head["checkpoint"].as_str().unwrap(), id.trim());
    assert_eq!(head["session"].as_str().unwrap(), session);
    // RETRO_SESSION works as well.
    let out = run(depot
        .cmd()
        .env("RETRO_SESSION", &session)
        .args(["apply", DEPOSIT_50]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let head = json(depot.ok(&["log", "--json", "-n", "1"]).trim());
    assert_eq!(head["session"].as_str().unwrap(), session);
    // The session's start is history too.
    let partitions = depot.ok(&["partitions", "session/**"]);
    assert!(
        partitions.contains(&format!("session/{session}")),
        "{partitions}"
    );
    let out = depot.ok(&["session", "end", &session]);
    assert_eq!(out, format!("ended session {session}\n"));
    // Ending it again is idempotent (exit 0, nothing written); a session never started is not
    // found (exit 1): see i16_7 below.
    depot.fails_unchanged(&["session", "end", "never-started"], 1);
    // A malformed session id is an error before anything is written.
    depot.fails_unchanged(&["apply", "--session", "", DEPOSIT_50], 1);
    depot.fails_unchanged(&["apply", "--session", "has space", DEPOSIT_50], 1);
    let started = json(depot.ok(&["session", "start", "--json"]).trim());
    assert!(started["session"].as_str().is_some_and(|s| s != session));
}

#[test]
fn apply_ref_moves_another_branch() {
    let depot = TestDepot::new();
    let main = depot.apply(OPEN_ALICE);
    let side = depot.ok(&[
        "apply",
        "--ref",
        "refs/heads/side",
        r#"{"path":"accounts/zed","name":"open","params":{"owner":"Zed"}}"#,
    ]);
    assert_eq!(depot.head().as_deref(), Some(main.as_str()));
    let refs = depot.refs();
    assert!(
        refs.contains(&("refs/heads/side".to_owned(), side.trim().to_owned())),
        "{refs:?}"
    );
    let log = depot.ok(&["log", "--oneline", "side"]);
    assert!(log.contains("accounts/zed open"), "{log}");
}

#[test]
fn version_completions_and_help() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(retro_in(tmp.path()).arg("--version"));
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, format!("retro {}\n", env!("CARGO_PKG_VERSION")));

    let out = run(retro_in(tmp.path()).args(["completions", "bash"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("_retro()"),
        "not a bash completion script"
    );
    assert!(
        out.stdout.contains("complete -F _retro"),
        "no complete line"
    );
    assert!(out.stdout.contains("cat-object") && out.stdout.contains("update-ref"));

    let out = run(retro_in(tmp.path()).args(["help", "apply"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Usage: retro apply"), "{}", out.stdout);
    assert!(out.stdout.contains("Examples:"), "{}", out.stdout);
    assert!(out.stdout.contains("--manifest"), "{}", out.stdout);

    let out = run(retro_in(tmp.path()).args(["help", "session", "start"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Usage: retro session start"),
        "{}",
        out.stdout
    );

    for command in [
        "init",
        "log",
        "cat-object",
        "show",
        "events",
        "partitions",
        "refs",
        "update-ref",
        "reflog",
        "fsck",
        "gc",
        "reindex",
        "failed",
        "export",
        "import",
        "demo",
        "verify",
        "blame",
        "bisect",
        "completions",
    ] {
        let out = run(retro_in(tmp.path()).args(["help", command]));
        assert_eq!(out.code, 0, "help {command}: {}", out.stderr);
        assert!(
            out.stdout.contains(&format!("Usage: retro {command}")),
            "help {command}:\n{}",
            out.stdout
        );
    }

    let out = run(retro_in(tmp.path()).arg("help"));
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Usage: retro"), "{}", out.stdout);
    let out = run(retro_in(tmp.path()).arg("--help"));
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Commands:"), "{}", out.stdout);
}

#[test]
fn demo_runs_the_bank_in_a_temporary_depot() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("demo");
    let out = run(retro_in(tmp.path()).args(["demo", "--keep", keep.to_str().unwrap()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_no_panic(&out.stderr);
    assert!(
        out.stdout.contains("$ retro log --oneline"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("no problems"), "{}", out.stdout);
    let fsck = run(retro_in(tmp.path()).arg("--depot").arg(&keep).arg("fsck"));
    assert_eq!(fsck.code, 0, "{}", fsck.stdout);
}

#[test]
fn i16_3_a_command_that_emits_nothing_writes_nothing_and_says_so() {
    let depot = TestDepot::new();
    let manifest = depot.tmp.path().join("manifest.json");
    fs::write(
        &manifest,
        r#"{"aggregates":{"k":{"commands":{
            "none":{"exec":["sh","-c","cat >/dev/null; echo '{\"events\":{}}'"]},
            "empty":{"exec":["sh","-c","cat >/dev/null; echo '{\"events\":{\"k/1\":[]}}'"]},
            "one":{"exec":["sh","-c","cat >/dev/null; echo '{\"events\":{\"k/1\":[{\"name\":\"One\"}]}}'"]}}}}}"#,
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let before = depot.snapshot();
    for name in ["none", "empty"] {
        let command = format!(r#"{{"path":"k/1","name":"{name}"}}"#);
        // On an unborn branch, and on a branch with history: nothing is written either way.
        let run = depot.run(&["apply", "--manifest", m, &command]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout, "");
        assert!(
            run.stderr.contains("nothing written"),
            "{name}: {}",
            run.stderr
        );
        assert_same_snapshot(&before, &depot.snapshot(), &[name]);
    }
    depot.ok(&["apply", "--manifest", m, r#"{"path":"k/1","name":"one"}"#]);
    let head = depot.head().unwrap();
    let before = depot.snapshot();
    let out = depot.ok(&[
        "apply",
        "--json",
        "--manifest",
        m,
        r#"{"path":"k/1","name":"none"}"#,
    ]);
    let value = json(&out);
    assert_eq!(value["written"], false, "{out}");
    assert_eq!(value["checkpoint"], serde_json::Value::Null, "{out}");
    assert_eq!(value["head"].as_str(), Some(head.as_str()), "{out}");
    assert_eq!(value["events"], 0, "{out}");
    assert_same_snapshot(&before, &depot.snapshot(), &["--json"]);
    assert_eq!(depot.head().unwrap(), head);
    assert_eq!(depot.ok(&["failed"]), "", "not recorded as a failure");
}

#[test]
fn i16_4_the_stated_msrv_is_what_the_locked_dependencies_need() {
    let root = repo_root();
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |text: &str| -> (u64, u64) {
        let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap_or(0))
    };
    let (needed, by) = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].to_string())))
        .max()
        .unwrap();
    let cargo_toml = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let stated = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("[workspace.package] rust-version")
        .trim_matches('"');
    assert_eq!(
        version(stated),
        needed,
        "rust-version {stated}, but {by} needs {needed:?}"
    );
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust toolchain, {stated} or newer")),
        "README.md must state {stated}"
    );
}

#[test]
fn i16_7_session_end_of_an_ended_session_exits_0_and_of_an_unknown_one_is_not_found() {
    let depot = TestDepot::new();
    let id = depot.ok(&["session", "start"]).trim().to_owned();
    depot.ok(&["session", "end", &id]);
    let before = depot.snapshot();
    let run = depot.run(&["session", "end", &id]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("had already ended"), "{}", run.stdout);
    assert_same_snapshot(&before, &depot.snapshot(), &["session", "end", &id]);
    let run = depot.fails_unchanged(&["session", "end", "never-started"], 1);
    assert!(
        run.stderr
            .contains("no session 'never-started' was ever started"),
        "{}",
        run.stderr
    );
}

#[test]
fn i16_12_status_shows_the_depot_head_counts_and_consumers_lag() {
    let depot = TestDepot::new();
    let empty = json(depot.ok(&["status", "--json"]).trim());
    assert_eq!(empty["head"], serde_json::Value::Null);
    assert_eq!(empty["checkpoints"], 0);
    depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    depot.ok(&["watch", "--consumer", "proj", "--idle-exit", "0.3"]);
    depot.apply(r#"{"path":"accounts/b","name":"open","params":{"owner":"B"}}"#);
    depot.apply(r#"{"path":"accounts/c","name":"open","params":{"owner":"C"}}"#);
    let status = json(depot.ok(&["status", "--json"]).trim());
    assert_eq!(status["layout"], "native");
    assert_eq!(status["branch"], "refs/heads/master");
    assert_eq!(status["checkpoints"], 3);
    assert_eq!(status["partitions"], 4, "{status}");
    assert_eq!(status["events"], 6);
    assert_eq!(status["consumers"][0]["name"], "proj");
    assert_eq!(status["consumers"][0]["behind"], 2);
    let text = depot.ok(&["status"]);
    assert!(text.contains("consumer proj at sha256:"), "{text}");
    assert!(text.contains("2 checkpoint(s) behind"), "{text}");
}

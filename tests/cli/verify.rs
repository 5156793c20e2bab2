//! `retro verify`: every recorded command re-run with the current domain on its parent's state;
//! the same domain finds nothing (exit 0), a changed handler is a divergence with its diff
//! (exit 7), bad ranges are errors (exit 1), and exec-handler manifests work like Rust ones.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{assert_no_panic, manifest, TestDepot};

const OPEN_A: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const DEPOSIT_A: &str = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5000}}"#;
const OPEN_B: &str = r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#;
const TRANSFER: &str =
    r#"{"path":"accounts/alice","name":"transfer","params":{"to":"accounts/bob","amount":1200}}"#;

fn bank() -> TestDepot {
    let depot = TestDepot::new();
    for command in [OPEN_A, DEPOSIT_A, OPEN_B, TRANSFER] {
        depot.apply(command);
    }
    // A rejected command is not in history: verify never sees it.
    let run = depot.run(&[
        "apply",
        r#"{"path":"accounts/bob","name":"withdraw","params":{"amount":999999}}"#,
    ]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    depot.ok(&["session", "start"]);
    depot
}

/// A JSON manifest whose `notes/add` handler is `script` (sh), in a directory of its own.
fn notes_manifest(dir: &Path, script: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("notes.sh"), script).unwrap();
    let path = dir.join("manifest.json");
    fs::write(
        &path,
        r#"{"aggregates":{"notes":{"commands":{"add":{"exec":["sh","notes.sh"],"timeout_ms":5000}}}}}"#,
    )
    .unwrap();
    path
}

#[test]
fn the_same_domain_replays_the_whole_history_to_the_same_events() {
    let depot = bank();
    let out = depot.ok(&["verify"]);
    assert_eq!(
        out,
        "verified 5 checkpoint(s): 4 command(s) replayed, 7 event(s), 1 skipped, 0 divergence(s)\n"
    );
    let out = depot.ok(&["verify", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["commands"], 4);
    assert_eq!(summary["divergences"], 0);
}

#[test]
fn ranges_pick_first_parent_stretches_and_bad_ones_are_errors() {
    let depot = bank();
    let out = depot.ok(&["verify", "HEAD~2..HEAD~1"]);
    assert!(
        out.starts_with("verified 1 checkpoint(s): 1 command(s)"),
        "{out}"
    );
    let out = depot.ok(&["verify", "HEAD~3"]);
    assert!(
        out.starts_with("verified 2 checkpoint(s): 2 command(s)"),
        "{out}"
    );
    let out = depot.ok(&["verify", "HEAD.."]);
    assert!(out.starts_with("verified 0 checkpoint(s)"), "{out}");
    let run = depot.fails(&["verify", "nope..HEAD"], 1);
    assert!(run.stderr.contains("nope"), "{}", run.stderr);
    let run = depot.fails(&["verify", "HEAD..HEAD~2"], 1);
    assert!(
        run.stderr.contains("is not on the first-parent history"),
        "{}",
        run.stderr
    );
    depot.fails(&["verify", "HEAD~2...HEAD"], 1);
    depot.fails(&["verify", "HEAD~99"], 1);
    // An empty depot has nothing to verify.
    let empty = TestDepot::new();
    assert!(empty
        .ok(&["verify"])
        .starts_with("verified 0 checkpoint(s)"));
}

#[test]
fn a_handler_that_now_emits_other_events_is_a_divergence_with_its_diff() {
    let depot = TestDepot::new();
    let manifest_v1 = notes_manifest(
        &depot.tmp.path().join("v1"),
        "cat >/dev/null\nprintf '{\"events\":{\"%s\":[{\"name\":\"NoteAdded\",\"data\":%s}]}}\\n' \"$RETRO_PATH\" \"$RETRO_PARAMS\"\n",
    );
    let m1 = manifest_v1.to_str().unwrap();
    for text in ["one", "two"] {
        depot.ok(&[
            "apply",
            "--manifest",
            m1,
            &format!(r#"{{"path":"notes/n1","name":"add","params":{{"text":"{text}"}}}}"#),
        ]);
    }
    depot.ok(&["verify", "--manifest", m1]);
    let manifest_v2 = notes_manifest(
        &depot.tmp.path().join("v2"),
        "cat >/dev/null\nprintf '{\"events\":{\"%s\":[{\"name\":\"NoteAdded\",\"data\":{\"text\":\"upgraded\"}}]}}\\n' \"$RETRO_PATH\"\n",
    );
    let m2 = manifest_v2.to_str().unwrap();
    // Verify writes nothing, whatever it finds.
    let run = depot.fails_unchanged(&["verify", "--manifest", m2], 7);
    assert!(run.stdout.contains("diverged "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(r#"events[0].data.text: recorded "one", replayed "upgraded""#),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("verified 2 checkpoint(s): 2 command(s) replayed, 2 event(s), 0 skipped, 2 divergence(s)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("2 of 2 replayed command(s) diverged from the recorded events"),
        "{}",
        run.stderr
    );
    let run = depot.fails(&["verify", "--json", "--manifest", m2], 7);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(lines[0]["type"], "divergence");
    assert_eq!(lines[0]["command"]["params"]["text"], "one");
    assert_eq!(lines[0]["recorded"][0]["data"]["text"], "one");
    assert_eq!(
        lines[0]["replayed"]["events"][0]["data"]["text"],
        "upgraded"
    );
    assert_eq!(lines[0]["diff"][0]["path"], "events[0].data.text");
    assert_eq!(lines[2]["type"], "summary");
    assert_eq!(lines[2]["divergences"], 2);
}

#[test]
fn the_shipped_exec_domain_verifies_and_a_domain_without_the_command_diverges() {
    let depot = TestDepot::new();
    let m = manifest();
    let m = m.to_str().unwrap();
    depot.ok(&["apply", "--manifest", m, OPEN_A]);
    depot.ok(&["apply", "--manifest", m, DEPOSIT_A]);
    depot.ok(&[
        "apply",
        "--manifest",
        m,
        r#"{"path":"notes/n1","name":"add","params":{"text":"hello"}}"#,
    ]);
    let out = depot.ok(&["verify", "--manifest", m]);
    assert!(out.contains("3 command(s) replayed, 4 event(s)"), "{out}");
    // The built-in bank has no notes: that command cannot be replayed.
    let run = depot.fails(&["verify"], 7);
    assert!(
        run.stdout
            .contains("replayed: failed: no aggregate kind matches path 'notes/n1'"),
        "{}",
        run.stdout
    );
    assert_no_panic(&run.stderr);
    let run = depot.fails(&["verify", "--manifest", "/nonexistent/manifest.json"], 1);
    assert_no_panic(&run.stderr);
}

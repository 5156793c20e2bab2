//! `retro redact` end to end: tombstones in `events`, `cat-object -p` and `show`, fsck clean,
//! an unknown id refused (exit 3, nothing written), and a redaction killed (SIGKILL, at a
//! failpoint) at each step finished by a re-run, with nothing half-erased.

use serde_json::Value;

use crate::common::TestDepot;

const SECRET: &str = "Yorick-Personal-5521";

/// A depot whose first event carries `SECRET` (a note, added by the built-in bank's `open`).
fn depot_with_secret() -> (TestDepot, String) {
    let depot = TestDepot::new();
    depot.ok(&[
        "apply",
        &format!(r#"{{"path":"accounts/y","name":"open","params":{{"owner":"{SECRET}"}}}}"#),
    ]);
    let line = depot.ok(&["events", "--json", "accounts/y"]);
    let first: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    (depot, first["event"].as_str().unwrap().to_owned())
}

#[test]
fn a_redacted_event_reads_as_a_tombstone_everywhere_and_fsck_stays_clean() {
    let (depot, event) = depot_with_secret();
    let out = depot.ok(&["redact", &event, "--reason", "erasure 12", "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["redacted"][0], event.as_str());
    assert_eq!(report["checkpoints"].as_array().unwrap().len(), 1);
    let line = depot.ok(&["events", "--json", "accounts/y"]);
    let first: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(first["data"]["redacted"], true);
    assert_eq!(first["data"]["reason"], "erasure 12");
    assert!(first["data"]["at"].is_string());
    let pretty = depot.ok(&["cat-object", "-p", &event]);
    assert!(pretty.contains("\"redacted\": true"), "{pretty}");
    assert!(!pretty.contains(SECRET));
    let fsck = depot.ok(&["fsck", "--json"]);
    let fsck: Value = serde_json::from_str(&fsck).unwrap();
    assert_eq!(fsck["clean"], true, "{fsck}");
    assert_eq!(fsck["redacted"], 1);
    let log = depot.ok(&["log", "-n", "1"]);
    assert!(log.contains("Redaction: erasure 12"), "{log}");
    let again = depot.ok(&["redact", &event, "--reason", "x"]);
    assert!(again.starts_with("already redacted"), "{again}");
}

#[test]
fn an_unknown_id_is_refused_and_nothing_is_written() {
    let (depot, event) = depot_with_secret();
    let head = depot.ok(&["log", "--oneline"]);
    let unknown = format!("sha256:{}", "ab".repeat(32));
    let run = depot.run(&["redact", &event, &unknown, "--reason", "r"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("retro: error:"), "{}", run.stderr);
    assert_eq!(depot.ok(&["log", "--oneline"]), head);
    assert!(!depot.dir.join("redactions").exists());
}

#[test]
fn a_redaction_killed_at_any_step_is_finished_by_a_re_run() {
    for failpoint in [
        "redact-after-intent",
        "redact-before-erase",
        "redact-after-erase-one",
        "redact-after-erase",
        "redact-before-checkpoint",
        "redact-after-checkpoint",
    ] {
        let (depot, event) = depot_with_secret();
        let killed = crate::common::run(
            depot
                .cmd()
                .env("RETRO_FAILPOINT", failpoint)
                .args(["redact", &event, "--reason", "killed"]),
        );
        assert_ne!(killed.code, 0, "{failpoint}: not killed");
        // From the intent on, the data reads as gone even before the re-run.
        let line = depot.ok(&["events", "--json", "accounts/y"]);
        assert!(line.contains(r#""redacted":true"#), "{failpoint}: {line}");
        let out = depot.ok(&["redact", &event, "--reason", "killed"]);
        assert!(out.contains("already redacted"), "{failpoint}: {out}");
        let fsck: Value = serde_json::from_str(&depot.ok(&["fsck", "--json"])).unwrap();
        assert_eq!(fsck["clean"], true, "{failpoint}: {fsck}");
        // Exactly one redaction checkpoint, whichever step the kill hit.
        let log = depot.ok(&["log"]);
        assert_eq!(
            log.matches("Redaction: killed").count(),
            1,
            "{failpoint}: {log}"
        );
    }
}

#[test]
fn a_sealed_depots_export_imports_into_another_sealed_depot() {
    // The line carries the command and the events' data, not the `message-data` field: the
    // importing depot seals them anew (new salts, so new ids), and every event reads the same.
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    depot.apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":5}}"#);
    let export = depot.ok(&["export"]);
    assert!(!export.contains("message-data"), "{export}");
    let copy = TestDepot::new();
    let file = copy.tmp.path().join("export.jsonl");
    std::fs::write(&file, &export).unwrap();
    copy.ok(&["import", file.to_str().unwrap()]);
    let events = |d: &TestDepot| {
        crate::common::json_lines(&d.ok(&["events", "--json", "accounts/a"]))
            .into_iter()
            .map(|e| (e["name"].clone(), e["data"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&copy), events(&depot));
    assert_eq!(events(&copy).len(), 2);
    assert!(copy.ok(&["fsck"]).contains("no problems"));
}

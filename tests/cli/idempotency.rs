//! `retro apply --id/--correlation-id/--causation-id` (and the JSON keys), `retro show` and
//! `retro log --correlation/--command-id`, export/import carrying the ids, and two `retro apply`
//! processes racing with one command id.

use crate::common::{json, json_lines, TestDepot};

const OPEN: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const DEPOSIT: &str = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5}}"#;

#[test]
fn apply_with_an_id_twice_writes_once_and_prints_the_original() {
    let depot = TestDepot::new();
    let first = depot.ok(&[
        "apply",
        "--id",
        "open-1",
        "--correlation-id",
        "signup-9",
        OPEN,
    ]);
    let before = depot.snapshot();
    let again = depot.run(&["apply", "--id", "open-1", OPEN]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, first, "the original checkpoint");
    assert!(
        again.stderr.contains("command id already applied"),
        "{}",
        again.stderr
    );
    assert_eq!(depot.snapshot(), before, "nothing written");
    // The key in the JSON is the same id; --json says it was a replay.
    let body = json(&depot.ok(&[
        "apply",
        "--json",
        r#"{"id":"open-1","path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
    ]));
    assert_eq!(body["checkpoint"], first.trim());
    assert_eq!(body["replayed"], true);
    assert_eq!(body["attempts"], 0);
    // Another command under that id: a conflict (exit 3), nothing written.
    let reused = depot.fails_unchanged(&["apply", "--id", "open-1", DEPOSIT], 3);
    assert!(
        reused
            .stderr
            .contains("command id 'open-1' was already applied by another command"),
        "{}",
        reused.stderr
    );
    // Two different ids for one command, a bad one: invalid (exit 1), nothing written.
    let twice = depot.fails_unchanged(
        &[
            "apply",
            "--id",
            "b",
            r#"{"id":"a","path":"accounts/alice","name":"deposit","params":{"amount":5}}"#,
        ],
        1,
    );
    assert!(
        twice.stderr.contains("command id is given twice"),
        "{}",
        twice.stderr
    );
    let bad = depot.fails_unchanged(&["apply", "--correlation-id", "no spaces", DEPOSIT], 1);
    assert!(
        bad.stderr.contains("correlation id 'no spaces' is invalid"),
        "{}",
        bad.stderr
    );
    // --id makes no sense for a stream of commands.
    depot.usage_unchanged(&["apply", "--batch", "--id", "x"]);
}

#[test]
fn show_prints_the_ids_and_log_filters_by_them() {
    let depot = TestDepot::new();
    let open = depot.apply(OPEN);
    let first = depot
        .ok(&[
            "apply",
            "--id",
            "dep-1",
            "--correlation-id",
            "order-7",
            "--causation-id",
            "sha256:abc",
            DEPOSIT,
        ])
        .trim()
        .to_owned();
    let second = depot
        .ok(&["apply", "--correlation-id", "order-7", DEPOSIT])
        .trim()
        .to_owned();
    depot.apply(r#"{"correlation_id":"order-8","path":"accounts/alice","name":"deposit","params":{"amount":1}}"#);

    let shown = depot.ok(&["show", &first]);
    for line in [
        "Causation-id: sha256:abc",
        "Command-id: dep-1",
        "Correlation-id: order-7",
    ] {
        assert!(shown.contains(line), "{line}:\n{shown}");
    }
    let view = json(&depot.ok(&["show", "--json", &first]));
    assert_eq!(view["command-id"], "dep-1");
    assert_eq!(view["correlation-id"], "order-7");
    assert_eq!(view["causation-id"], "sha256:abc");
    // A command without ids shows none.
    assert!(!depot.ok(&["show", &open]).contains("-id:"));

    let correlated: Vec<String> =
        json_lines(&depot.ok(&["log", "--json", "--correlation", "order-7"]))
            .iter()
            .map(|v| v["checkpoint"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(correlated, [second.clone(), first.clone()]);
    let by_id = depot.ok(&["log", "--oneline", "--command-id", "dep-1"]);
    assert_eq!(by_id.lines().count(), 1);
    assert!(first.contains(by_id.split(' ').next().unwrap()));
    assert_eq!(depot.ok(&["log", "--correlation", "nobody"]), "");
    // -n counts the checkpoints that pass the filter.
    assert_eq!(
        depot
            .ok(&["log", "--oneline", "-n", "1", "--correlation", "order-7"])
            .lines()
            .count(),
        1
    );
    // blame names the checkpoint's correlation id.
    let blame = depot.ok(&["blame", "--json", "accounts/alice"]);
    assert!(
        blame.contains("order-7") && blame.contains("order-8"),
        "{blame}"
    );
}

#[test]
fn export_and_import_carry_the_ids_and_the_same_checkpoint_ids() {
    // Plain depots: sealed ones seal each import anew (new salts, new ids).
    let depot = TestDepot::plain();
    depot.apply(OPEN);
    let id = depot
        .ok(&[
            "apply",
            "--id",
            "dep-1",
            "--correlation-id",
            "order-7",
            DEPOSIT,
        ])
        .trim()
        .to_owned();
    let export = depot.tmp.path().join("out.jsonl");
    depot.ok(&["export", "-o", export.to_str().unwrap()]);
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        // (and the checkpoint's `log` field, which the import computes again)
        text.contains(r#""fields":{"command-id":"dep-1","correlation-id":"order-7","log":"1 "#),
        "{text}"
    );

    let copy = TestDepot::plain();
    copy.ok(&["import", export.to_str().unwrap()]);
    assert_eq!(
        copy.head().as_deref(),
        Some(id.as_str()),
        "the very same ids"
    );
    // The id is applied in the copy too; importing again writes nothing.
    let again = copy.ok(&["apply", "--id", "dep-1", DEPOSIT]);
    assert_eq!(again.trim(), id);
    let before = copy.snapshot();
    copy.ok(&["import", export.to_str().unwrap()]);
    assert_eq!(copy.snapshot(), before);
}

#[test]
fn reindex_rebuilds_the_command_id_index() {
    let depot = TestDepot::new();
    let id = depot
        .ok(&["apply", "--id", "open-1", OPEN])
        .trim()
        .to_owned();
    depot.ok(&["reindex"]);
    let again = depot.run(&["apply", "--id", "open-1", OPEN]);
    assert_eq!(again.stdout.trim(), id);
    std::fs::remove_file(depot.dir.join("index.sqlite")).unwrap();
    let again = depot.run(&["apply", "--id", "open-1", OPEN]);
    assert_eq!(again.stdout.trim(), id, "{}", again.stderr);
    assert_eq!(depot.ok(&["log", "--oneline"]).lines().count(), 1);
}

#[test]
fn two_processes_racing_with_one_command_id_write_one_checkpoint() {
    let depot = TestDepot::new();
    depot.apply(OPEN);
    for round in 0..6 {
        let payload = format!(
            r#"{{"id":"race-{round}","path":"accounts/alice","name":"deposit","params":{{"amount":1}}}}"#
        );
        // Both processes start before either is waited for; the depot lock decides.
        let children: Vec<std::process::Child> = (0..2)
            .map(|_| {
                std::process::Command::new(crate::common::bin())
                    .arg("--depot")
                    .arg(&depot.dir)
                    .args(["apply", "--json", &payload])
                    .env("NO_COLOR", "1")
                    .env_remove("RETRO_DEPOT")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let bodies: Vec<serde_json::Value> = children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                json(&String::from_utf8(out.stdout).unwrap())
            })
            .collect();
        assert_eq!(
            bodies[0]["checkpoint"], bodies[1]["checkpoint"],
            "round {round}"
        );
        let replays = bodies.iter().filter(|b| b["replayed"] == true).count();
        assert_eq!(replays, 1, "round {round}: {bodies:?}");
    }
    // One open and one deposit per round: 1 + 6 checkpoints.
    assert_eq!(depot.ok(&["log", "--oneline"]).lines().count(), 7);
}

#[test]
fn a_batch_line_whose_id_was_applied_answers_the_original() {
    let depot = TestDepot::new();
    let open =
        r#"{"id":"open-1","path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
    let other = r#"{"id":"open-1","path":"accounts/alice","name":"deposit","params":{"amount":5}}"#;
    let run = depot.run_stdin(
        &["apply", "--batch", "--json"],
        &format!("{open}\n{open}\n{other}\n"),
    );
    // The reused id fails its line: the stream exits with its class's code (conflict, 3).
    assert_eq!(run.code, 3, "{}", run.stderr);
    let out = run.stdout;
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["checkpoint"], lines[1]["checkpoint"]);
    assert!(lines[0].get("replayed").is_none());
    assert_eq!(lines[1]["replayed"], true);
    assert_eq!(lines[2]["error"]["code"], "command_id_reused");
    assert_eq!(lines[2]["line"], 3);
    assert_eq!(depot.ok(&["log", "--oneline"]).lines().count(), 1);
}

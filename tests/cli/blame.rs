//! `retro blame PARTITION`: each event with the checkpoint, command, session and date that added
//! it, oldest first; `--json`; unknown and malformed partitions are errors.

use crate::common::TestDepot;

#[test]
fn blame_names_each_events_checkpoint_command_session_and_date() {
    let depot = TestDepot::new();
    let open = depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    depot.apply(r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#);
    depot.apply(r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5}}"#);
    let transfer = depot.apply(
        r#"{"path":"accounts/alice","name":"transfer","params":{"to":"accounts/bob","amount":1}}"#,
    );
    let out = depot.ok(&["blame", "accounts/bob"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields[0], "#2");
    assert_eq!(fields[1], &transfer[7..19]);
    assert_eq!(fields[3], "cli");
    assert_eq!(&fields[4..6], &["accounts/alice", "transfer"]);
    assert_eq!(fields[6].len(), 12);
    assert_eq!(fields[7], "-");
    assert_eq!(fields[8], "TransferReceived");
    let out = depot.ok(&["blame", "--json", "accounts/alice"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["checkpoint"], open.as_str());
    assert_eq!(rows[0]["version"], 1);
    assert_eq!(rows[0]["name"], "AccountOpened");
    assert_eq!(rows[0]["command"]["name"], "open");
    assert_eq!(rows[0]["session"], "cli");
    assert!(rows[0]["payload"].as_str().unwrap().starts_with("sha256:"));
    assert!(rows[0]["correlation"].is_null());
    assert!(rows[0]["date"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn blame_of_an_unknown_or_malformed_partition_is_an_error() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    let run = depot.fails(&["blame", "accounts/nobody"], 1);
    assert!(
        run.stderr.contains("has no events on HEAD"),
        "{}",
        run.stderr
    );
    let run = depot.fails(&["blame", "bad name"], 1);
    assert!(
        run.stderr.contains("is not a partition name"),
        "{}",
        run.stderr
    );
    depot.usage(&["blame"]);
}

//! `retro snapshot`, `retro partitions --json` with snapshots, `retro gc` dropping superseded
//! ones, and an exec handler that returns its state, end to end through the binary.

use crate::common::*;

fn open_alice(depot: &TestDepot) {
    depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
}

fn deposit(depot: &TestDepot, amount: u64) {
    depot.apply(&format!(
        r#"{{"path":"accounts/alice","name":"deposit","params":{{"amount":{amount}}}}}"#
    ));
}

#[test]
fn retro_snapshot_makes_one_and_partitions_shows_it() {
    let depot = TestDepot::new();
    open_alice(&depot);
    deposit(&depot, 5);
    let listed = json_lines(&depot.ok(&["partitions", "--json", "accounts/*"]));
    assert_eq!(
        listed,
        [serde_json::json!({"partition": "accounts/alice", "events": 2})],
        "no snapshot yet: no key"
    );
    let out = depot.ok(&["snapshot", "accounts/*"]);
    assert!(
        out.starts_with("accounts/alice: snapshot at version 2 ("),
        "{out}"
    );
    let made = json_lines(&depot.ok(&["snapshot", "**", "--json"]));
    let alice = made
        .iter()
        .find(|m| m["partition"] == "accounts/alice")
        .unwrap();
    assert_eq!(alice["taken"], false);
    assert_eq!(alice["reason"], "current");
    let registry = made
        .iter()
        .find(|m| m["partition"] == "registry/accounts")
        .unwrap();
    assert_eq!(registry["taken"], false, "{registry}");
    let listed = json_lines(&depot.ok(&["partitions", "--json", "accounts/*"]));
    let snapshot = &listed[0]["snapshot"];
    assert_eq!(snapshot["version"], 2, "{listed:?}");
    assert!(
        snapshot["domain"].as_str().unwrap().starts_with("rust:")
            && snapshot["bytes"].as_u64().unwrap() > 0,
        "{snapshot}"
    );
    // The state the snapshot holds is the real one: the next command folds it.
    deposit(&depot, 7);
    let run = depot.run(&[
        "apply",
        r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":13}}"#,
    ]);
    assert_eq!(run.code, 4, "12 in the account: {}", run.stderr);
    assert!(run.stderr.contains("balance is 12"), "{}", run.stderr);
    // A newer one, then gc keeps only it.
    depot.ok(&["snapshot", "accounts/alice"]);
    let gc = json(depot.ok(&["gc", "--json"]).trim());
    assert_eq!(gc["snapshots_pruned"], 1, "{gc}");
    let listed = json_lines(&depot.ok(&["partitions", "--json", "accounts/alice"]));
    assert_eq!(listed[0]["snapshot"]["version"], 3);
}

#[test]
fn an_exec_handler_returning_state_is_handed_its_snapshot() {
    let depot = TestDepot::new();
    let manifest = fixtures().join("domain/counter.json");
    let manifest = manifest.to_str().unwrap();
    let apply = || {
        depot.ok(&[
            "apply",
            "--manifest",
            manifest,
            r#"{"path":"counters/x","name":"increment"}"#,
        ])
    };
    for _ in 0..5 {
        apply();
    }
    let events = json_lines(&depot.ok(&["events", "counters/x", "--json"]));
    let seen: Vec<_> = events.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(
        seen,
        [
            serde_json::json!({"count": 1, "events": 0, "snapshot": null}),
            serde_json::json!({"count": 2, "events": 1, "snapshot": null}),
            serde_json::json!({"count": 3, "events": 2, "snapshot": null}),
            serde_json::json!({"count": 4, "events": 0, "snapshot": 3}),
            serde_json::json!({"count": 5, "events": 1, "snapshot": 3}),
        ]
    );
    let listed = json_lines(&depot.ok(&["partitions", "--json", "counters/*"]));
    assert_eq!(listed[0]["snapshot"]["version"], 3, "{listed:?}");
    assert!(listed[0]["snapshot"]["domain"]
        .as_str()
        .unwrap()
        .starts_with("exec:"));
    let out = depot.ok(&["snapshot", "--manifest", manifest, "counters/x"]);
    assert!(out.contains("skipped") && out.contains("exec"), "{out}");
}

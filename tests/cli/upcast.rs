//! Upcasting end to end: `fixtures/depots/upcast-v1/` (v1 events only, see its README) read and
//! written by the v2 domain of `fixtures/upcast/manifest.json` (declarative, split and exec
//! upcasters, a rename), through the CLI. Stored bytes and ids never change; an event newer than
//! the domain knows, or a failing upcaster, is exit 8 and a message naming it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A copy of the v1 fixture depot.
fn v1_depot() -> TestDepot {
    let depot = TestDepot::uninitialized();
    copy_dir(&fixtures().join("depots/upcast-v1/.retro"), &depot.dir);
    depot
}

fn v2_manifest() -> PathBuf {
    fixtures().join("upcast/manifest.json")
}

/// `retro events --upcast --json` of a partition under `manifest`.
fn upcast_events(depot: &TestDepot, manifest: &Path, glob: &str) -> Vec<serde_json::Value> {
    json_lines(&depot.ok(&[
        "events",
        glob,
        "--upcast",
        "--manifest",
        manifest.to_str().unwrap(),
        "--json",
    ]))
}

#[test]
fn a_v2_domain_reads_the_v1_fixture_depot_upcast_and_the_stored_events_stay_as_they_were() {
    let depot = v1_depot();
    let stored_before = json_lines(&depot.ok(&["events", "--json", "accounts/alice"]));
    assert_eq!(stored_before.len(), 4);
    assert!(stored_before
        .iter()
        .all(|e| e.get("schema_version").is_none()));
    let before = depot.snapshot();

    let alice = upcast_events(&depot, &v2_manifest(), "accounts/alice");
    let shown: Vec<(String, u64, u64)> = alice
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
                e["schema_version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("AccountCreated".to_owned(), 1, 2),
            ("Deposited".to_owned(), 2, 3),
            ("Withdrawn".to_owned(), 3, 2),
            ("Audited".to_owned(), 3, 2),
            ("TransferSent".to_owned(), 4, 1),
        ]
    );
    // Declarative rename + default, then the exec step's "channel".
    assert_eq!(
        alice[1]["data"],
        serde_json::json!({"cents": 5000, "currency": "EUR", "channel": "branch"})
    );
    // Provenance: the stored id, name and version.
    assert_eq!(alice[0]["event"], stored_before[0]["event"]);
    assert_eq!(
        alice[0]["upcast"],
        serde_json::json!({"name": "AccountOpened", "version": 1})
    );
    // The split: both parts name the stored Withdrawn.
    assert_eq!(alice[2]["event"], stored_before[2]["event"]);
    assert_eq!(alice[3]["event"], stored_before[2]["event"]);
    assert_eq!(alice[3]["data"], serde_json::json!({"what": "withdrawal"}));
    // An event at its newest version is not marked.
    assert!(alice[4].get("upcast").is_none(), "{}", alice[4]);
    // Reading wrote nothing.
    assert_same_snapshot(&before, &depot.snapshot(), &["events", "--upcast"]);

    // The text form says so too.
    let text = depot.ok(&[
        "events",
        "accounts/alice",
        "--upcast",
        "--manifest",
        v2_manifest().to_str().unwrap(),
    ]);
    assert!(
        text.contains("Deposited v3 {\"cents\":5000,\"currency\":\"EUR\",\"channel\":\"branch\"} (upcast from Deposited v1)"),
        "{text}"
    );
    // `show --upcast` of the checkpoint of the withdrawal: the split.
    let show = json(
        depot
            .ok(&[
                "show",
                "--json",
                "--upcast",
                "--manifest",
                v2_manifest().to_str().unwrap(),
                stored_before[2]["checkpoint"].as_str().unwrap(),
            ])
            .trim(),
    );
    let names: Vec<&str> = show["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Withdrawn", "Audited"]);
}

#[test]
fn the_v2_handler_folds_upcast_history_and_writes_its_newest_versions() {
    let depot = v1_depot();
    let manifest = v2_manifest();
    let m = manifest.to_str().unwrap();
    // Alice: 5000 - 700 - 1200 = 3100, in cents under the v2 schema. The handler exits 3 on
    // any event that is not at its newest version, so this also proves it saw only those.
    let rejected = depot.run(&[
        "apply",
        "--manifest",
        m,
        r#"{"path":"accounts/alice","name":"withdraw","params":{"cents":3101}}"#,
    ]);
    assert_eq!(rejected.code, 4, "{}", rejected.stderr);
    assert!(
        rejected
            .stderr
            .contains("balance is 3100, 3101 asked (1 audited withdrawals)"),
        "{}",
        rejected.stderr
    );
    depot.ok(&[
        "apply",
        "--manifest",
        m,
        r#"{"path":"accounts/alice","name":"deposit","params":{"cents":5}}"#,
    ]);
    // Written at the manifest's newest version: `json;v=3` in the header.
    let stored = json_lines(&depot.ok(&["events", "--json", "accounts/alice"]));
    let last = stored.last().unwrap();
    assert_eq!(last["schema_version"], 3);
    let id = last["event"].as_str().unwrap();
    let raw = depot.ok(&["cat-object", "-t", id]);
    assert_eq!(raw.trim(), "event");
    let pretty = depot.ok(&["cat-object", "-p", id]);
    assert!(pretty.starts_with("event Deposited v3\n"), "{pretty}");
    assert!(pretty.contains("\"channel\": \"app\""), "{pretty}");
    // The v1 events are untouched; the v3 one is read as it is.
    let upcast = upcast_events(&depot, &manifest, "accounts/alice");
    assert_eq!(upcast.last().unwrap()["schema_version"], 3);
    assert!(upcast.last().unwrap().get("upcast").is_none());
    // An export keeps the version, so an import gives the very same ids.
    let export = depot.ok(&["export"]);
    assert!(export.contains(r#""version":3"#), "{export}");
    // (A plain depot: a sealed one would seal the events anew, with new salts and new ids.)
    let copy = TestDepot::plain();
    let file = copy.tmp.path().join("export.jsonl");
    fs::write(&file, &export).unwrap();
    copy.ok(&["import", file.to_str().unwrap()]);
    assert_eq!(copy.head(), depot.head());
    let fsck = depot.ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}

#[test]
fn an_event_newer_than_the_domain_knows_is_exit_8_naming_it() {
    let depot = v1_depot();
    let m = v2_manifest();
    depot.ok(&[
        "apply",
        "--manifest",
        m.to_str().unwrap(),
        r#"{"path":"accounts/alice","name":"deposit","params":{"cents":5}}"#,
    ]);
    let id = json_lines(&depot.ok(&["events", "--json", "accounts/alice"]))
        .last()
        .unwrap()["event"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = depot.snapshot();
    // The built-in bank knows only v1 of Deposited: reading it upcast, or applying a command
    // to alice, is an error naming the event, never a silent pass-through.
    let read = depot.fails(&["events", "accounts/alice", "--upcast"], 8);
    assert!(
        read.stderr.contains(&format!(
            "event {id} (Deposited v3, event 5 of 'accounts/alice') is newer than this domain knows: its newest Deposited is v1"
        )),
        "{}",
        read.stderr
    );
    let apply = depot.fails(
        &[
            "apply",
            r#"{"path":"accounts/alice","name":"deposit","params":{"amount":1}}"#,
        ],
        8,
    );
    assert!(
        apply.stderr.contains("is newer than this domain knows"),
        "{}",
        apply.stderr
    );
    assert_same_snapshot(&before, &depot.snapshot(), &["unknown", "version"]);
    // Without --upcast the stored event is shown as it is.
    let plain = depot.ok(&["events", "accounts/alice"]);
    assert!(plain.contains("Deposited v3"), "{plain}");
}

#[test]
fn manifest_without_upcast_is_a_usage_error() {
    let depot = v1_depot();
    depot.usage(&["events", "--manifest", v2_manifest().to_str().unwrap()]);
}

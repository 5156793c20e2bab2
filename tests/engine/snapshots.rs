//! Aggregate snapshots: a rehydration folds the newest valid snapshot and only the events after
//! it; a changed domain version, a corrupted row, or a snapshot left behind by a non-fast-forward
//! move is never used (and the state is still right); gc drops superseded ones; exec handlers
//! that return `"state"` get `{"snapshot", "events since"}`.

use std::sync::{Arc, Mutex};

use depot::{Depot, Expected, LogInfo, PartitionName, RefEdit, RefName, RefValue};
use engine::{exec, Aggregate, Applied, Engine, Manifest, RecordedEvent, SnapshotOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::*;

/// A counter that also says, in each event it emits, the count it saw.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

impl Aggregate for Counter {
    fn apply(&mut self, event: &RecordedEvent) {
        if event.name == "Incremented" {
            self.count += 1;
        }
    }
}

fn counter_manifest(version: &str) -> Manifest {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Counter>("counters")
        .unwrap()
        .snapshot_every(5, version)
        .command("increment", |counter, ctx| {
            let path = ctx.path().to_string();
            ctx.emit_json(&path, "Incremented", &json!({"saw": counter.count}))
        })
        .unwrap();
    manifest
}

fn increment(engine: &Engine) -> Applied {
    engine
        .apply("s", br#"{"path":"counters/c","name":"increment"}"#)
        .unwrap()
}

/// The count the handler saw in the newest event of `counters/c`.
fn last_saw(engine: &Engine) -> u64 {
    let events = engine
        .depot()
        .partition_events(&PartitionName::new("counters/c").unwrap())
        .unwrap();
    let data: serde_json::Value =
        serde_json::from_slice(events.last().unwrap().event.data()).unwrap();
    data["saw"].as_u64().unwrap()
}

fn warnings(depot: &Depot) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    depot.on_warning(move |w| sink.lock().unwrap().push(w.to_owned()));
    seen
}

#[test]
fn a_snapshot_is_used_and_only_later_events_are_folded() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    for n in 0..5 {
        let applied = increment(&engine);
        assert_eq!((applied.resumed_from, applied.events_folded), (None, n));
    }
    // The sixth rehydrates 5 events: time for a snapshot (taken at version 5).
    let sixth = increment(&engine);
    assert_eq!((sixth.resumed_from, sixth.events_folded), (None, 5));
    let seventh = increment(&engine);
    assert_eq!(seventh.resumed_from, Some(5));
    assert_eq!(
        seventh.events_folded, 1,
        "only the event after the snapshot"
    );
    assert_eq!(
        last_saw(&engine),
        6,
        "the handler saw the snapshot's state plus one event"
    );
    // A fresh engine over a reopened depot finds it in snapshots.sqlite.
    let dir = engine.depot().root().unwrap().to_path_buf();
    drop(engine);
    let engine = Engine::new(Arc::new(Depot::open(&dir).unwrap()), counter_manifest("1"));
    assert!(dir.join("snapshots.sqlite").is_file());
    let eighth = increment(&engine);
    assert_eq!((eighth.resumed_from, eighth.events_folded), (Some(5), 2));
    assert_eq!(last_saw(&engine), 7);
}

#[test]
fn a_changed_domain_version_ignores_the_snapshot() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    for _ in 0..7 {
        increment(&engine);
    }
    let depot = engine.depot().clone();
    let other = Engine::new(depot.clone(), counter_manifest("2"));
    let applied = increment(&other);
    assert_eq!((applied.resumed_from, applied.events_folded), (None, 7));
    assert_eq!(last_saw(&other), 7);
    // Both versions' snapshots are listed, each newest one.
    let infos = depot.snapshot_infos(&PartitionName::new("counters/c").unwrap());
    let domains: Vec<&str> = infos.iter().map(|i| i.domain.as_str()).collect();
    assert_eq!(domains.len(), 2, "{domains:?}");
    assert!(domains.iter().all(|d| d.contains("Counter")), "{domains:?}");
}

#[test]
fn a_corrupted_snapshot_is_ignored_with_a_warning() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    let seen = warnings(engine.depot());
    for _ in 0..6 {
        increment(&engine);
    }
    let domain = engine
        .depot()
        .snapshot_infos(&PartitionName::new("counters/c").unwrap())[0]
        .domain
        .clone();
    // A state that would decode (and lie): only the checksum tells.
    let tampered = engine
        .depot()
        .snapshots()
        .unwrap()
        .tamper("counters/c", &domain, br#"{"count":1000}"#)
        .unwrap();
    assert_eq!(tampered, 1);
    let applied = increment(&engine);
    assert_eq!((applied.resumed_from, applied.events_folded), (None, 6));
    assert_eq!(last_saw(&engine), 6, "never the tampered state");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|w| w.contains("does not match its checksum")),
        "{seen:?}"
    );
}

#[test]
fn a_snapshot_that_does_not_decode_is_dropped_and_rebuilt() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    let seen = warnings(engine.depot());
    for _ in 0..6 {
        increment(&engine);
    }
    let partition = PartitionName::new("counters/c").unwrap();
    let info = engine.depot().snapshot_infos(&partition).remove(0);
    // A row with a valid checksum whose state the type cannot read (another encoding, say).
    engine
        .depot()
        .snapshots()
        .unwrap()
        .put(&depot::snapshot::Snapshot {
            partition: "counters/c".to_owned(),
            domain: info.domain.clone(),
            version: info.version,
            checkpoint: info.checkpoint,
            state: b"[1,2,3]".to_vec(),
        })
        .unwrap();
    let applied = increment(&engine);
    assert_eq!((applied.resumed_from, applied.events_folded), (None, 6));
    assert_eq!(last_saw(&engine), 6);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|w| w.contains("cannot be used")),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn after_a_non_fast_forward_move_the_stale_snapshot_is_not_used() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    let mut checkpoints = Vec::new();
    for _ in 0..8 {
        checkpoints.push(increment(&engine).checkpoint);
    }
    // Snapshot at version 5 exists (taken by the sixth); move master back to version 3.
    let depot = engine.depot().clone();
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: Expected::MustBe(checkpoints[7]),
            new: Some(RefValue::Direct(checkpoints[2])),
            log: LogInfo::default(),
        }])
        .unwrap();
    // Versions 4 and 5 again, on a new history (another session, so other checkpoint ids even
    // within the same second): the old snapshot's checkpoint is not on it.
    for expected_saw in 3..8 {
        let applied = engine
            .apply("other", br#"{"path":"counters/c","name":"increment"}"#)
            .unwrap();
        assert_eq!(
            last_saw(&engine),
            expected_saw,
            "resumed from {:?}",
            applied.resumed_from
        );
        if expected_saw <= 5 {
            assert_eq!(applied.resumed_from, None, "at {expected_saw}");
        }
    }
    // Version 5 on the new history was snapshotted in its own right: that one is used.
    let applied = increment(&engine);
    assert_eq!(applied.resumed_from, Some(5));
    assert_eq!(last_saw(&engine), 8);
    // And moving back to the old tip makes the old snapshot usable again, never the new one.
    let tip = depot.head().unwrap().unwrap();
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: Expected::MustBe(tip),
            new: Some(RefValue::Direct(checkpoints[7])),
            log: LogInfo::default(),
        }])
        .unwrap();
    let applied = increment(&engine);
    assert_eq!(applied.resumed_from, Some(5));
    assert_eq!(last_saw(&engine), 8);
}

#[test]
fn gc_drops_superseded_snapshots() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    for _ in 0..12 {
        increment(&engine);
    }
    let depot = engine.depot();
    let store = depot.snapshots().unwrap();
    assert_eq!(store.count().unwrap(), 2, "at versions 5 and 10");
    let report = depot.gc(&Default::default(), |_| {}).unwrap();
    assert_eq!(report.snapshots_pruned, 1);
    assert_eq!(store.count().unwrap(), 1);
    let infos = depot.snapshot_infos(&PartitionName::new("counters/c").unwrap());
    assert_eq!(infos[0].version, 10, "the newest is kept");
    let applied = increment(&engine);
    assert_eq!((applied.resumed_from, applied.events_folded), (Some(10), 2));
}

#[test]
fn snapshot_now_makes_one_at_the_current_version() {
    let (_dir, engine) = native_engine(counter_manifest("1"));
    for _ in 0..3 {
        increment(&engine);
    }
    let made = engine.snapshot_now("counters/*").unwrap();
    assert_eq!(made.len(), 1);
    assert!(
        matches!(made[0].outcome, SnapshotOutcome::Taken { version: 3, .. }),
        "{made:?}"
    );
    let again = engine.snapshot_now("**").unwrap();
    assert_eq!(again[0].outcome, SnapshotOutcome::Current { version: 3 });
    let applied = increment(&engine);
    assert_eq!((applied.resumed_from, applied.events_folded), (Some(3), 0));
    assert_eq!(last_saw(&engine), 3);
}

#[test]
fn memory_depots_keep_snapshots_in_memory() {
    let engine = Engine::new(Arc::new(Depot::in_memory().unwrap()), counter_manifest("1"));
    for _ in 0..7 {
        increment(&engine);
    }
    let applied = increment(&engine);
    assert_eq!((applied.resumed_from, applied.events_folded), (Some(5), 2));
    assert_eq!(last_saw(&engine), 7);
}

fn counter_exec_engine() -> (tempfile::TempDir, Engine) {
    let mut manifest = Manifest::new();
    exec::load_manifest(&fixtures().join("counter.json"), &mut manifest).unwrap();
    native_engine(manifest)
}

/// What the exec counter said it was given for its newest event.
fn exec_seen(engine: &Engine) -> serde_json::Value {
    let events = engine
        .depot()
        .partition_events(&PartitionName::new("counters/x").unwrap())
        .unwrap();
    serde_json::from_slice(events.last().unwrap().event.data()).unwrap()
}

#[test]
fn an_exec_handler_that_returns_state_gets_a_snapshot_and_the_events_since() {
    let (_dir, engine) = counter_exec_engine();
    let cmd = br#"{"path":"counters/x","name":"increment"}"#;
    for n in 0..3u64 {
        let applied = engine.apply("s", cmd).unwrap();
        assert_eq!(applied.resumed_from, None);
        assert_eq!(
            exec_seen(&engine),
            json!({"count": n + 1, "events": n, "snapshot": null})
        );
    }
    // After the third (every 3): a snapshot at version 3, handed over with no events since.
    let applied = engine.apply("s", cmd).unwrap();
    assert_eq!((applied.resumed_from, applied.events_folded), (Some(3), 0));
    assert_eq!(
        exec_seen(&engine),
        json!({"count": 4, "events": 0, "snapshot": 3})
    );
    let applied = engine.apply("s", cmd).unwrap();
    assert_eq!((applied.resumed_from, applied.events_folded), (Some(3), 1));
    assert_eq!(
        exec_seen(&engine),
        json!({"count": 5, "events": 1, "snapshot": 3})
    );
}

#[test]
fn an_exec_handler_that_returns_no_state_never_gets_a_snapshot() {
    // The notes handler of the fixture domain knows nothing of snapshots; its kind has a policy.
    let (_dir, engine) = counter_exec_engine();
    for n in 0..5u64 {
        let applied = engine
            .apply(
                "s",
                br#"{"path":"notes/n","name":"add","params":{"text":"x"}}"#,
            )
            .unwrap();
        assert_eq!((applied.resumed_from, applied.events_folded), (None, n));
    }
    assert_eq!(engine.depot().snapshots().unwrap().count().unwrap(), 0);
}

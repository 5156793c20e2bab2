//! Idempotent commands and correlation ids through the engine: a command id is applied once (a
//! repeat runs no handler and answers the original checkpoint), a reused id for another command
//! is a conflict, a rejection does not count as applied, and the ids land in the checkpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use depot::Depot;
use engine::{Aggregate, ApplyError, Command, CommandIds, DomainError, Engine, Manifest};

use crate::common::*;

#[derive(Default)]
struct Counter {
    n: u64,
}

impl Aggregate for Counter {
    fn apply(&mut self, _: &engine::RecordedEvent) {
        self.n += 1;
    }
}

/// `counters/…`: `bump` counts its runs in `runs`; `limited` is rejected while `open` is false.
fn counters(runs: Arc<AtomicU64>, open: Arc<std::sync::atomic::AtomicBool>) -> Manifest {
    let mut manifest = Manifest::new();
    let counted = runs.clone();
    manifest
        .aggregate::<Counter>("counters")
        .unwrap()
        .command("bump", move |counter, ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            let path = ctx.path().as_str().to_owned();
            ctx.emit_json(&path, "Bumped", &serde_json::json!({"n": counter.n + 1}))
        })
        .unwrap()
        .command("limited", move |_, ctx| {
            runs.fetch_add(1, Ordering::SeqCst);
            if !open.load(Ordering::SeqCst) {
                return Err(DomainError::new("closed", "not yet"));
            }
            let path = ctx.path().as_str().to_owned();
            ctx.emit_json(&path, "Limited", &serde_json::json!({}))
        })
        .unwrap();
    manifest
}

fn setup() -> (
    tempfile::TempDir,
    Engine,
    Arc<AtomicU64>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let runs = Arc::new(AtomicU64::new(0));
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, engine) = native_engine(counters(runs.clone(), open.clone()));
    (dir, engine, runs, open)
}

const BUMP: &str = r#"{"id":"bump-1","path":"counters/a","name":"bump"}"#;

#[test]
fn a_repeated_command_id_runs_nothing_and_answers_the_original() {
    let (dir, engine, runs, _) = setup();
    let first = engine.apply("s1", BUMP.as_bytes()).unwrap();
    assert!(!first.replayed);
    let before = snapshot(&depot_dir(&dir));
    let again = engine.apply("s1", BUMP.as_bytes()).unwrap();
    assert!(again.replayed);
    assert_eq!(again.checkpoint, first.checkpoint);
    assert_eq!(again.parent, first.parent);
    assert_eq!(again.path, first.path);
    assert_eq!(again.events, first.events);
    assert_eq!(again.partitions, first.partitions);
    assert_eq!(again.attempts, 0);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(snapshot(&depot_dir(&dir)), before, "nothing was written");
    // The id is in the checkpoint's fields, not in its message.
    let checkpoint = engine.depot().read_checkpoint(&first.checkpoint).unwrap();
    assert_eq!(checkpoint.field("command-id"), Some("bump-1"));
    assert_eq!(
        checkpoint.message(),
        br#"{"path":"counters/a","name":"bump","params":{}}"#
    );
}

#[test]
fn a_command_without_ids_writes_the_same_checkpoint_bytes_as_before() {
    let (_dir, engine, _, _) = setup();
    // A depot writing plain events, as before sealing existed (a sealed one adds `message-data`);
    // every new checkpoint carries its `log` field (docs/format.md), ids or not.
    engine.depot().configure_events(false).unwrap();
    let applied = engine
        .apply("s1", br#"{"path":"counters/a","name":"bump"}"#)
        .unwrap();
    let checkpoint = engine.depot().read_checkpoint(&applied.checkpoint).unwrap();
    let keys: Vec<&str> = checkpoint.fields().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["date", "log", "session"]);
}

#[test]
fn a_command_id_reused_by_another_command_is_a_conflict_that_writes_nothing() {
    let (dir, engine, runs, _) = setup();
    engine.apply("s1", BUMP.as_bytes()).unwrap();
    let before = snapshot(&depot_dir(&dir));
    for other in [
        r#"{"id":"bump-1","path":"counters/b","name":"bump"}"#,
        r#"{"id":"bump-1","path":"counters/a","name":"limited"}"#,
        r#"{"id":"bump-1","path":"counters/a","name":"bump","params":{"x":1}}"#,
    ] {
        let err = engine.apply("s1", other.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ApplyError::CommandIdReused { ref command_id, .. } if command_id == "bump-1"),
            "{other}: {err}"
        );
        assert_eq!(err.class(), depot::ErrorClass::Conflict);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(snapshot(&depot_dir(&dir)), before);
}

#[test]
fn a_rejected_command_with_an_id_is_not_applied_so_a_retry_runs_again() {
    let (_dir, engine, runs, open) = setup();
    let limited = br#"{"id":"lim-1","path":"counters/a","name":"limited"}"#;
    let err = engine.apply("s1", limited).unwrap_err();
    let recorded = match err {
        ApplyError::Rejected { recorded, .. } => recorded.unwrap(),
        other => panic!("{other}"),
    };
    // The orphaned checkpoint keeps the id, for tracing; it is on no history.
    let orphan = engine.depot().read_checkpoint(&recorded).unwrap();
    assert_eq!(orphan.field("command-id"), Some("lim-1"));
    assert_eq!(engine.depot().applied_command("lim-1").unwrap(), None);
    open.store(true, Ordering::SeqCst);
    let applied = engine.apply("s1", limited).unwrap();
    assert!(!applied.replayed);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(engine.apply("s1", limited).unwrap().replayed);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn an_anonymous_aggregate_is_created_once_per_command_id() {
    let (_dir, engine, runs, _) = setup();
    let create = br#"{"id":"new-counter","path":"counters","name":"bump"}"#;
    let first = engine.apply("s1", create).unwrap();
    assert!(first.path.starts_with("counters/"));
    let again = engine.apply("s1", create).unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.path, first.path,
        "the same new aggregate, not another"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn two_handles_racing_through_the_engine_apply_each_command_id_once() {
    let runs = Arc::new(AtomicU64::new(0));
    let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let dir = tempfile::tempdir().unwrap();
    let a = Engine::new(
        Arc::new(Depot::init(dir.path().join("d")).unwrap()),
        counters(runs.clone(), open.clone()),
    );
    let b = Engine::new(
        Arc::new(Depot::open(dir.path().join("d")).unwrap()),
        counters(runs.clone(), open),
    );
    let barrier = std::sync::Barrier::new(2);
    let rounds = 30;
    for round in 0..rounds {
        let payload = format!(r#"{{"id":"r-{round}","path":"counters/x","name":"bump"}}"#);
        let go = |engine: &Engine| {
            barrier.wait();
            engine.apply("s1", payload.as_bytes()).unwrap()
        };
        let go = &go;
        let (x, y) = std::thread::scope(|s| {
            let x = s.spawn(|| go(&a));
            let y = s.spawn(|| go(&b));
            (x.join().unwrap(), y.join().unwrap())
        });
        assert_eq!(x.checkpoint, y.checkpoint, "round {round}");
        assert_eq!(
            u8::from(x.replayed) + u8::from(y.replayed),
            1,
            "round {round}"
        );
    }
    // One event per round on the one counter: no command was applied twice.
    let events = a
        .depot()
        .partition_events(&depot::PartitionName::new("counters/x").unwrap())
        .unwrap();
    assert_eq!(events.len(), rounds);
}

#[test]
fn ids_from_the_api_and_from_a_causing_event_land_in_the_checkpoint() {
    let (_dir, engine, _, _) = setup();
    let command = Command::parse(br#"{"path":"counters/a","name":"bump"}"#)
        .unwrap()
        .with_ids(CommandIds {
            id: Some("c-1".into()),
            correlation_id: Some("order-7".into()),
            causation_id: None,
        })
        .unwrap();
    let first = engine.apply_command("s1", command).unwrap();
    // A process manager reacting to that event: caused by it, correlated with its command.
    let record = engine
        .depot()
        .partition_events(&depot::PartitionName::new("counters/a").unwrap())
        .unwrap()
        .pop()
        .unwrap();
    let origin = engine.depot().read_checkpoint(&record.checkpoint).unwrap();
    let reaction = Command::parse(br#"{"path":"counters/b","name":"bump"}"#)
        .unwrap()
        .caused_by(&record, origin.field("correlation-id"));
    let second = engine.apply_command("s1", reaction).unwrap();
    let checkpoint = engine.depot().read_checkpoint(&second.checkpoint).unwrap();
    assert_eq!(checkpoint.field("correlation-id"), Some("order-7"));
    assert_eq!(
        checkpoint.field("causation-id"),
        Some(record.id.to_string().as_str())
    );
    assert_eq!(first.checkpoint, record.checkpoint);
    assert_eq!(
        CommandIds::of_checkpoint(&origin),
        CommandIds {
            id: Some("c-1".into()),
            correlation_id: Some("order-7".into()),
            causation_id: None,
        }
    );
}

#[test]
fn bad_ids_are_refused_with_a_clear_error_before_anything_runs() {
    let (_dir, engine, runs, _) = setup();
    let long = "x".repeat(engine::MAX_ID_BYTES + 1);
    for (payload, expected) in [
        (
            r#"{"id":"has space","path":"counters/a","name":"bump"}"#.to_owned(),
            "command id 'has space' is invalid: ' ' is not allowed",
        ),
        (
            r#"{"id":"","path":"counters/a","name":"bump"}"#.to_owned(),
            "command id '' is invalid: it is empty",
        ),
        (
            format!(r#"{{"correlation_id":"{long}","path":"counters/a","name":"bump"}}"#),
            "is invalid: it is 201 bytes, the limit is 200",
        ),
        (
            r#"{"causation_id":7,"path":"counters/a","name":"bump"}"#.to_owned(),
            "causation id '7' is invalid: it must be a string, found a number",
        ),
        (
            r#"{"id":"caf\u00e9","path":"counters/a","name":"bump"}"#.to_owned(),
            "is not allowed",
        ),
    ] {
        let err = engine.apply("s1", payload.as_bytes()).unwrap_err();
        assert!(err.to_string().contains(expected), "{payload}: {err}");
        assert_eq!(err.class(), depot::ErrorClass::Invalid);
    }
    let twice = Command::parse(BUMP.as_bytes())
        .unwrap()
        .with_ids(CommandIds {
            id: Some("other".into()),
            ..CommandIds::default()
        });
    assert!(matches!(
        twice,
        Err(engine::CommandError::IdGivenTwice { .. })
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(engine.depot().head().unwrap(), None);
}

//! Projections through the Rust API: a `Projection` impl declared in the manifest, fed by a
//! `ProjectionRunner`: batches per checkpoint with their generation, retry then park, retry
//! clears it, a rebuild switches when caught up, a killed runner (dropped mid-run) resumes
//! exactly, and issued commands are caused by their event.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::projection::{
    self, Ack, Batch, HandlerFailure, Issued, Projection, ProjectionDef, ProjectionRunner,
    RetryPolicy, Until,
};
use engine::{example, Command, Engine, ObjectId};

/// What the handler saw: (generation, live, checkpoint, events, switched_from).
type Seen = Vec<(u64, bool, Option<ObjectId>, usize, Option<u64>)>;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Seen>,
    /// Fail every batch of this checkpoint while set.
    fail_at: Mutex<Option<ObjectId>>,
    /// Issue a deposit to accounts/bob for each `AccountOpened` event of accounts/alice.
    react: bool,
    retired: Mutex<Vec<u64>>,
}

impl Projection for Recorder {
    fn handle(&self, batch: &Batch<'_>) -> Result<Ack, HandlerFailure> {
        self.seen.lock().unwrap().push((
            batch.generation,
            batch.live,
            batch.checkpoint,
            batch.events.len(),
            batch.switched_from,
        ));
        if batch.checkpoint.is_some() && *self.fail_at.lock().unwrap() == batch.checkpoint {
            return Err(HandlerFailure {
                message: "not today".to_owned(),
                event: batch.events.first().map(|e| e.record.id),
            });
        }
        let mut ack = Ack::default();
        if self.react {
            for event in batch.events {
                if event.name == "AccountOpened"
                    && event.record.partition.as_str() == "accounts/alice"
                {
                    ack.commands.push(Issued {
                        event: event.record.id,
                        command: Command::parse(
                            br#"{"path":"accounts/bob","name":"deposit","params":{"amount":1}}"#,
                        )
                        .unwrap(),
                    });
                }
            }
        }
        Ok(ack)
    }

    fn retire(&self, generation: u64) {
        self.retired.lock().unwrap().push(generation);
    }
}

fn engine_with(recorder: Arc<Recorder>, globs: &[&str]) -> Engine {
    let mut manifest = example::bank_manifest().unwrap();
    manifest
        .projection(
            ProjectionDef::new("balances", globs, recorder)
                .unwrap()
                .with_retry(RetryPolicy {
                    attempts: 2,
                    backoff: Duration::from_millis(1),
                    max_backoff: Duration::from_millis(1),
                }),
        )
        .unwrap();
    Engine::new(Arc::new(engine::Depot::in_memory().unwrap()), manifest)
}

fn apply(engine: &Engine, command: &str) -> ObjectId {
    engine.apply("cli", command.as_bytes()).unwrap().checkpoint
}

fn run_once(engine: &Engine) -> projection::RunOutcome {
    ProjectionRunner::new(engine.clone(), "balances")
        .unwrap()
        .on_log(|_| {})
        .run(Until::CaughtUp, &AtomicBool::new(false))
        .unwrap()
}

#[test]
fn batches_come_per_checkpoint_in_order_then_a_failure_parks_until_retry() {
    let recorder = Arc::new(Recorder::default());
    let engine = engine_with(recorder.clone(), &["accounts/alice"]);
    let open = apply(
        &engine,
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"A"}}"#,
    );
    apply(
        &engine,
        r#"{"path":"accounts/bob","name":"open","params":{"owner":"B"}}"#,
    );
    let deposit = apply(
        &engine,
        r#"{"path":"accounts/alice","name":"deposit","params":{"amount":5}}"#,
    );
    *recorder.fail_at.lock().unwrap() = Some(deposit);

    let outcome = run_once(&engine);
    assert_eq!(outcome.parked, [1]);
    assert_eq!(outcome.acknowledged, 1);
    // Bob's checkpoint matches nothing: it is skipped, never delivered.
    assert_eq!(
        *recorder.seen.lock().unwrap(),
        [
            (1, true, Some(open), 1, None),
            (1, true, Some(deposit), 1, None),
            (1, true, Some(deposit), 1, None)
        ]
    );
    let status = projection::status(engine.depot(), engine.manifest()).unwrap();
    assert_eq!(status[0].live.as_ref().unwrap().position, Some(open));
    let parked = &status[0].parked[0];
    assert_eq!(parked.checkpoint, Some(deposit.to_string()));
    assert_eq!(parked.events.len(), 1);
    assert_eq!(parked.events[0].partition, "accounts/alice");
    assert_eq!(parked.events[0].version, 2);
    assert_eq!(parked.error, "not today");

    *recorder.fail_at.lock().unwrap() = None;
    assert_eq!(
        projection::retry(engine.depot(), "balances", None).unwrap(),
        [1]
    );
    let outcome = run_once(&engine);
    assert!(outcome.parked.is_empty());
    let status = projection::status(engine.depot(), engine.manifest()).unwrap();
    assert_eq!(status[0].live.as_ref().unwrap().behind, Some(0));
    assert!(status[0].parked.is_empty());
}

#[test]
fn a_runner_dropped_mid_batch_resumes_with_only_that_batch_again() {
    let recorder = Arc::new(Recorder::default());
    let engine = engine_with(recorder.clone(), &["accounts/*"]);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(apply(
            &engine,
            &format!(r#"{{"path":"accounts/a{i}","name":"open","params":{{"owner":"x"}}}}"#),
        ));
    }
    // The third batch fails every attempt but the run is stopped during its backoff: as if the
    // runner were killed before acknowledging it.
    *recorder.fail_at.lock().unwrap() = Some(ids[2]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut runner = ProjectionRunner::new(engine.clone(), "balances")
        .unwrap()
        .on_log({
            let stop = stop.clone();
            move |line| {
                if line.contains("attempt 1 of") {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    let outcome = runner.run(Until::Stopped, &stop).unwrap();
    assert!(outcome.parked.is_empty());
    drop(runner);
    *recorder.fail_at.lock().unwrap() = None;
    run_once(&engine);
    let seen: Vec<ObjectId> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.2)
        .collect();
    assert_eq!(seen, [ids[0], ids[1], ids[2], ids[2], ids[3]]);
}

#[test]
fn a_rebuild_feeds_a_second_generation_beside_the_live_one_and_switches() {
    let recorder = Arc::new(Recorder::default());
    let engine = engine_with(recorder.clone(), &["accounts/alice", "accounts/bob"]);
    let a = apply(
        &engine,
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"A"}}"#,
    );
    let b = apply(
        &engine,
        r#"{"path":"accounts/bob","name":"open","params":{"owner":"B"}}"#,
    );
    run_once(&engine);
    assert_eq!(projection::rebuild(engine.depot(), "balances").unwrap(), 2);
    assert!(matches!(
        projection::rebuild(engine.depot(), "balances"),
        Err(projection::ProjectionError::AlreadyRebuilding { generation: 2, .. })
    ));
    run_once(&engine);
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (1, true, Some(a), 1, None),
            (1, true, Some(b), 1, None),
            (2, false, Some(a), 1, None),
            (2, false, Some(b), 1, None),
            (2, true, Some(b), 0, Some(1)),
        ]
    );
    assert_eq!(*recorder.retired.lock().unwrap(), [1]);
    let status = projection::status(engine.depot(), engine.manifest()).unwrap();
    assert_eq!(status[0].live.as_ref().unwrap().generation, 2);
    assert!(status[0].rebuilding.is_none());
}

#[test]
fn an_issued_command_carries_its_event_as_causation_and_is_not_issued_twice() {
    let recorder = Arc::new(Recorder {
        react: true,
        ..Recorder::default()
    });
    let engine = engine_with(recorder.clone(), &["accounts/alice"]);
    apply(
        &engine,
        r#"{"path":"accounts/bob","name":"open","params":{"owner":"B"}}"#,
    );
    let opened = apply(
        &engine,
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"A"}}"#,
    );
    run_once(&engine);
    let depot = engine.depot();
    let head = depot.head().unwrap().unwrap();
    assert_ne!(head, opened);
    let checkpoint = depot.read_checkpoint(&head).unwrap();
    let event = depot
        .read_affix(&depot.read_checkpoint(&opened).unwrap().affix())
        .unwrap();
    let (_, ids) = event.partitions().next().unwrap();
    assert_eq!(
        checkpoint.field(depot::CAUSATION_ID_FIELD),
        Some(ids[0].to_string().as_str())
    );
    assert_eq!(
        checkpoint.field(depot::CORRELATION_ID_FIELD),
        Some(opened.to_string().as_str())
    );
    assert_eq!(
        checkpoint.field(depot::COMMAND_ID_FIELD),
        Some(projection::issued_command_id("balances", &ids[0], 0).as_str())
    );
    // Delivered again from the start: the command id answers from history, nothing new.
    depot
        .update_refs(&[depot::RefEdit {
            name: projection::state::generation_ref("balances", 1).unwrap(),
            expected: depot::Expected::MustExist,
            new: None,
            log: Default::default(),
        }])
        .unwrap();
    run_once(&engine);
    assert_eq!(depot.head().unwrap(), Some(head));
}

#[test]
fn declarations_refuse_bad_names_globs_and_duplicates() {
    let handler = Arc::new(Recorder::default());
    assert!(matches!(
        ProjectionDef::new("no/slash", &["a"], handler.clone()),
        Err(projection::ProjectionError::BadName(_))
    ));
    assert!(ProjectionDef::new("p", &[], handler.clone()).is_err());
    assert!(ProjectionDef::new("p", &["a/[", "b"], handler.clone()).is_err());
    assert!(ProjectionDef::new("p", &["{a,b}", "c"], handler.clone()).is_err());
    let mut manifest = engine::Manifest::new();
    manifest
        .projection(ProjectionDef::new("p", &["a/*"], handler.clone()).unwrap())
        .unwrap();
    assert!(manifest
        .projection(ProjectionDef::new("p", &["b/*"], handler).unwrap())
        .is_err());
    assert!(matches!(
        manifest.projection_def("q"),
        Err(projection::ProjectionError::Unknown { .. })
    ));
}

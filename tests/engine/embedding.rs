//! The embedding path (issue 16): one crate to depend on, `Depot::open_or_init`, `Engine::load`,
//! the typed domain API (events, commands, rejections) and subscriptions that move into a thread.
//! Everything here is reached through `engine::…` only, as an embedder depending on
//! `retro-engine` alone would.

use std::sync::Arc;
use std::time::Duration;

use engine::depot::{Base, CommitRequest, Event, EventName};
use engine::{
    example, Aggregate, ApplyError, Delivery, Depot, DomainCommand, Engine, ErrorClass, Events,
    LoadError, Manifest, PartitionName, RecordedEvent, RefName, Rejection, TypedAggregate,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added {
        n: u64,
    },
    #[serde(rename = "CounterReset")]
    Reset,
}
impl Events for CounterEvent {}

#[derive(Debug, Default, PartialEq)]
struct Counter {
    total: u64,
    seen: Vec<CounterEvent>,
}
impl TypedAggregate for Counter {
    type Event = CounterEvent;
    fn apply(&mut self, event: CounterEvent) {
        match &event {
            CounterEvent::Added { n } => self.total += n,
            CounterEvent::Reset => self.total = 0,
        }
        self.seen.push(event);
    }
}

#[derive(Serialize, Deserialize)]
struct Add {
    n: u64,
}
impl DomainCommand for Add {
    const NAME: &'static str = "add";
}

#[derive(Serialize, Deserialize)]
struct Reset;
impl DomainCommand for Reset {
    const NAME: &'static str = "reset";
}

/// Copies another counter's total into this one (reads it with `ctx.load`).
#[derive(Serialize, Deserialize)]
struct CopyFrom {
    from: String,
}
impl DomainCommand for CopyFrom {
    const NAME: &'static str = "copyFrom";
}

#[derive(Debug, thiserror::Error)]
enum CounterRejection {
    #[error("a counter stops at 10 (it is at {0})")]
    TooMany(u64),
}
impl Rejection for CounterRejection {
    fn code(&self) -> &str {
        match self {
            CounterRejection::TooMany(_) => "too_many",
        }
    }
}

fn counter_manifest() -> Manifest {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Counter>("counters")
        .unwrap()
        .handle(|counter, add: Add, ctx| {
            if counter.total.checked_add(add.n).is_none_or(|t| t > 10) {
                return Err(CounterRejection::TooMany(counter.total).into());
            }
            ctx.emit_event(&CounterEvent::Added { n: add.n })
        })
        .unwrap()
        .handle(|_, _: Reset, ctx| ctx.emit_event(&CounterEvent::Reset))
        .unwrap()
        .handle(|_, copy: CopyFrom, ctx| {
            let other = ctx.load::<Counter>(&copy.from)?;
            ctx.emit_event(&CounterEvent::Added {
                n: other.state.total,
            })
        })
        .unwrap();
    manifest
}

fn counters() -> (Arc<Depot>, Engine) {
    let depot = Arc::new(Depot::in_memory().unwrap());
    let engine = Engine::new(depot.clone(), counter_manifest());
    (depot, engine)
}

/// Commits one raw event, as another writer (or an old version of the domain) might have.
fn write_raw(depot: &Depot, partition: &str, name: &str, data: &str) {
    let mut request = CommitRequest::new(
        None,
        vec![(
            PartitionName::new(partition).unwrap(),
            Event::new(EventName::new(name).unwrap(), data),
        )],
        "raw",
        r#"{"name":"raw"}"#,
    );
    request.base = Base::Tip;
    depot.commit(request).unwrap();
}

#[test]
fn i16_14a_retro_engine_alone_gives_an_embedder_the_depot_types() {
    // The re-exported module and the top-level names are the depot crate's own types.
    let depot: Arc<engine::depot::Depot> = Arc::new(engine::Depot::in_memory().unwrap());
    let head: Option<engine::ObjectId> = depot.head().unwrap();
    assert_eq!(head, None);
    let _: engine::RefName = engine::depot::RefName::head();
    let _: engine::HistoryOrder = engine::depot::HistoryOrder::FirstParent;
    let error: engine::DepotError = engine::PartitionName::new("")
        .map_err(Into::into)
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Invalid);
}

#[test]
fn i16_14b_open_or_init_creates_a_depot_once_then_opens_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/.retro");
    let engine = Engine::new(
        Arc::new(Depot::open_or_init(&dir).unwrap()),
        example::bank_manifest().unwrap(),
    );
    engine
        .apply(
            "cli",
            br#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
        )
        .unwrap();
    let head = engine.depot().head().unwrap();
    drop(engine);
    // The second time it opens what is there.
    let reopened = Depot::open_or_init(&dir).unwrap();
    assert_eq!(reopened.head().unwrap(), head);
    drop(reopened);
    // A damaged depot is an error, never replaced by a new one.
    std::fs::write(dir.join("config"), "not a retro depot\n").unwrap();
    assert!(Depot::open_or_init(&dir).is_err());
    assert_eq!(
        std::fs::read_to_string(dir.join("config")).unwrap(),
        "not a retro depot\n"
    );
}

#[test]
fn i16_14c_engine_load_gives_an_aggregates_state_outside_a_command() {
    let (_dir, engine) = crate::common::bank();
    for command in [
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
        r#"{"path":"accounts/alice","name":"deposit","params":{"amount":70}}"#,
        r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":20}}"#,
    ] {
        engine.apply("cli", command.as_bytes()).unwrap();
    }
    let alice = engine.load::<example::Account>("accounts/alice").unwrap();
    assert_eq!(alice.version, 3);
    assert_eq!(alice.state.balance, 50);
    assert_eq!(alice.state.owner, "Alice");
    // No events: the default state at version 0.
    let nobody = engine.load::<example::Account>("accounts/nobody").unwrap();
    assert_eq!(
        (nobody.version, nobody.state),
        (0, example::Account::default())
    );
    // A bad path is invalid, with its cause kept.
    let err = engine
        .load::<example::Account>("accounts/../x")
        .unwrap_err();
    assert!(matches!(err, LoadError::BadPath { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Invalid);
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn i16_14d_typed_events_commands_and_rejections() {
    let (depot, engine) = counters();
    engine.execute("cli", "counters/c", &Add { n: 4 }).unwrap();
    // JSON commands reach the typed handler too, in either name style.
    engine
        .apply(
            "cli",
            br#"{"path":"counters/c","name":"Add","params":{"n":5}}"#,
        )
        .unwrap();
    // The domain's rejection enum gives the code and message.
    match engine.execute("cli", "counters/c", &Add { n: 2 }) {
        Err(ApplyError::Rejected { error, recorded }) => {
            assert_eq!(error.code, "too_many");
            assert_eq!(error.message, "a counter stops at 10 (it is at 9)");
            assert!(recorded.is_some());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Parameters that do not fit the command's struct are invalid_params.
    match engine.apply(
        "cli",
        br#"{"path":"counters/c","name":"add","params":{"n":"four"}}"#,
    ) {
        Err(ApplyError::Rejected { error, .. }) => assert_eq!(error.code, "invalid_params"),
        other => panic!("expected invalid_params, got {other:?}"),
    }
    // A unit struct is a command without parameters; a renamed variant keeps its stored name.
    engine.execute("cli", "counters/c", &Reset).unwrap();
    let events = depot
        .partition_events(&PartitionName::new("counters/c").unwrap())
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.name().as_str()).collect();
    assert_eq!(names, ["Added", "Added", "CounterReset"]);
    assert_eq!(events[0].event.data(), br#"{"n":4}"#);
    // An event of another name is of no interest to the aggregate: ignored.
    write_raw(&depot, "counters/c", "Annotated", r#"{"note":"hi"}"#);
    let loaded = engine.load::<Counter>("counters/c").unwrap();
    assert_eq!(loaded.version, 4);
    assert_eq!(
        loaded.state.seen,
        [
            CounterEvent::Added { n: 4 },
            CounterEvent::Added { n: 5 },
            CounterEvent::Reset
        ]
    );
}

#[test]
fn i16_14d_a_malformed_stored_event_is_an_error_never_skipped() {
    let (depot, engine) = counters();
    engine
        .execute("cli", "counters/bad", &Add { n: 1 })
        .unwrap();
    write_raw(&depot, "counters/bad", "Added", r#"{"n":"not a number"}"#);
    let failures_before = depot.failures().unwrap().len();

    // Outside a command.
    let err = engine.load::<Counter>("counters/bad").unwrap_err();
    match &err {
        LoadError::Event(e) => {
            assert_eq!(
                (e.partition.as_str(), e.version, e.name.as_str()),
                ("counters/bad", 2, "Added")
            );
        }
        other => panic!("expected an event error, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Internal);
    assert!(
        std::error::Error::source(&err).is_some(),
        "the serde cause is kept"
    );

    // In a command on the aggregate: an error, nothing written, nothing recorded as failed.
    let head = depot.head().unwrap();
    let err = engine
        .execute("cli", "counters/bad", &Add { n: 1 })
        .unwrap_err();
    assert!(matches!(err, ApplyError::Event(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Internal);
    // In a command that loads it: the same.
    let err = engine
        .execute(
            "cli",
            "counters/other",
            &CopyFrom {
                from: "counters/bad".to_owned(),
            },
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::Event(_)), "{err:?}");
    assert_eq!(depot.head().unwrap(), head);
    assert_eq!(depot.failures().unwrap().len(), failures_before);

    // The untyped fold keeps its rule (it sees every event and picks what it needs).
    #[derive(Default)]
    struct Names(Vec<String>);
    impl Aggregate for Names {
        fn apply(&mut self, event: &RecordedEvent) {
            self.0.push(event.name.clone());
        }
    }
    assert_eq!(
        engine.load::<Names>("counters/bad").unwrap().state.0,
        ["Added", "Added"]
    );
}

fn assert_send<T: Send + 'static>(_: &T) {}

#[test]
fn i16_14e_a_subscription_owns_its_depot_and_moves_into_a_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::open_or_init(tmp.path().join(".retro")).unwrap());
    let engine = Engine::new(depot.clone(), counter_manifest());
    let start = engine.execute("cli", "counters/c", &Add { n: 1 }).unwrap();
    let subscription = engine
        .subscribe("counters/**", Some(start.checkpoint))
        .unwrap();
    assert_send(&subscription);
    let mut consumer = engine
        .consumer("projector", "counters/**", Some(start.checkpoint))
        .unwrap();
    let other = depot
        .consumer_shared("other", &RefName::head(), "counters/**", None)
        .unwrap();
    assert_send(&other);
    assert_send(&consumer);
    let follower = std::thread::spawn(move || {
        let mut subscription = subscription;
        // Waits for the commit below (woken by the ref's change notification).
        subscription.next_timeout(Duration::from_secs(60))
    });
    let applied = engine.execute("cli", "counters/c", &Add { n: 2 }).unwrap();
    match follower.join().unwrap().unwrap() {
        Some(Delivery::Checkpoint { id, events, .. }) => {
            assert_eq!(id, applied.checkpoint);
            assert_eq!(events.len(), 1);
        }
        other => panic!("expected the checkpoint, got {other:?}"),
    }
    // The durable consumer, in a thread too: it acks, and its ref moves.
    let acked = std::thread::spawn(move || {
        let delivery = consumer
            .subscription()
            .next_timeout(Duration::from_secs(60))?;
        consumer.ack()?;
        Ok::<_, engine::DepotError>(delivery)
    })
    .join()
    .unwrap()
    .unwrap();
    assert!(matches!(acked, Some(Delivery::Checkpoint { .. })));
    let position = depot
        .read_ref(&RefName::new("refs/consumers/projector").unwrap())
        .unwrap()
        .and_then(|v| v.id());
    assert_eq!(position, Some(applied.checkpoint));
}

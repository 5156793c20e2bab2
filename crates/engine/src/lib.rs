//! retro's engine: turns commands into checkpoints.
//!
//! Register aggregates and their command handlers in a [`Manifest`] (Rust closures, or external
//! programs through a JSON domain manifest, see [`exec`]), then [`Engine::apply`] commands such as
//! `{"path":"accounts/alice","name":"deposit","params":{"amount":50}}`.
//!
//! Embedding, end to end, with `retro-engine` as the only retro dependency (it re-exports the
//! store: [`Depot`], [`PartitionName`], [`RefName`], [`Delivery`], [`HistoryOrder`],
//! [`ObjectId`] at the top level, the whole crate as [`depot`]): open a depot, declare a domain
//! with typed events, commands and rejections, apply commands (typed or JSON), read an
//! aggregate's state, read the partition back, walk the log, and follow new checkpoints from
//! another thread.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use engine::{
//!     ApplyError, Delivery, Depot, DomainCommand, Engine, Events, HistoryOrder, Manifest,
//!     PartitionName, Rejection, TypedAggregate,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! /// The events: one serde enum; a variant's name is the event's name in the depot.
//! #[derive(Serialize, Deserialize)]
//! enum CounterEvent {
//!     Added { n: u64 },
//! }
//! impl Events for CounterEvent {}
//!
//! /// The aggregate: folded from its partition's events before every command. A stored event
//! /// that does not decode into `CounterEvent` is an error, never skipped.
//! #[derive(Default)]
//! struct Counter {
//!     total: u64,
//! }
//! impl TypedAggregate for Counter {
//!     type Event = CounterEvent;
//!     fn apply(&mut self, event: CounterEvent) {
//!         match event {
//!             CounterEvent::Added { n } => self.total += n,
//!         }
//!     }
//! }
//!
//! /// A command: a serde struct, its fields the command's `params`.
//! #[derive(Serialize, Deserialize)]
//! struct Add {
//!     n: u64,
//! }
//! impl DomainCommand for Add {
//!     const NAME: &'static str = "add";
//! }
//!
//! /// The domain's rejections, each with its machine-readable code.
//! #[derive(Debug)]
//! enum CounterRejection {
//!     TooMany { total: u64, n: u64 },
//! }
//! impl std::fmt::Display for CounterRejection {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         match self {
//!             CounterRejection::TooMany { total, n } => {
//!                 write!(f, "a counter stops at 10: {total} + {n} is more")
//!             }
//!         }
//!     }
//! }
//! impl Rejection for CounterRejection {
//!     fn code(&self) -> &str {
//!         match self {
//!             CounterRejection::TooMany { .. } => "too_many",
//!         }
//!     }
//! }
//!
//! let mut manifest = Manifest::new();
//! manifest.aggregate::<Counter>("counters")?.handle(|counter, add: Add, ctx| {
//!     match counter.total.checked_add(add.n) {
//!         Some(total) if total <= 10 => ctx.emit_event(&CounterEvent::Added { n: add.n }),
//!         _ => Err(CounterRejection::TooMany { total: counter.total, n: add.n }.into()),
//!     }
//! })?;
//!
//! // A files depot, made on first use (`Depot::in_memory()` keeps one in memory).
//! let dir = tempfile::tempdir()?;
//! let depot = Arc::new(Depot::open_or_init(dir.path().join(".retro"))?);
//! let engine = Engine::new(depot.clone(), manifest);
//! let session = engine.start_session()?;
//! let first = engine.execute(&session, "counters/c1", &Add { n: 4 })?;
//! // The same command as JSON, as `retro apply` and `POST /apply` send it.
//! engine.apply(&session, br#"{"path":"counters/c1","name":"add","params":{"n":5}}"#)?;
//! match engine.execute(&session, "counters/c1", &Add { n: 2 }) {
//!     Err(ApplyError::Rejected { error, .. }) => assert_eq!(error.code, "too_many"),
//!     other => panic!("expected a rejection, got {other:?}"),
//! }
//!
//! // The aggregate's state outside a command: two events folded.
//! let counter = engine.load::<Counter>("counters/c1")?;
//! assert_eq!((counter.state.total, counter.version), (9, 2));
//!
//! // Read the partition back: two events, in order.
//! let events = depot.partition_events(&PartitionName::new("counters/c1")?)?;
//! assert_eq!(events.len(), 2);
//!
//! // Walk the log, newest first (session start, then two commands).
//! let mut checkpoints = 0;
//! depot.walk(depot.head()?.expect("a head"), HistoryOrder::FirstParent, |_, _| {
//!     checkpoints += 1;
//!     Ok(true)
//! })?;
//! assert_eq!(checkpoints, 3);
//!
//! // Subscribe from the first command's checkpoint, in another thread: the subscription shares
//! // the depot, so it moves there. The next checkpoint is delivered, whole.
//! let mut subscription = engine.subscribe("counters/**", Some(first.checkpoint))?;
//! let follower = std::thread::spawn(move || subscription.next_timeout(Duration::from_secs(30)));
//! match follower.join().expect("the follower thread")? {
//!     Some(Delivery::Checkpoint { events, .. }) => assert_eq!(events.len(), 1),
//!     other => panic!("expected a checkpoint, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Untyped, the same domain is an [`Aggregate`] folding [`RecordedEvent`]s (decoding them with
//! [`RecordedEvent::decode`]), handlers registered with [`KindBuilder::command`] reading
//! parameters with [`Context::param`], events that implement [`DomainEvent`] emitted with
//! [`Context::emit`], and rejections made with [`DomainError::new`]: the built-in example
//! domain (a bank, [`example::bank_manifest`]) is written so. Handlers in any language run
//! through a JSON manifest ([`exec`]).
//!
//! With the cargo feature `tokio`, `stream::DeliveryStream` turns a subscription into an async
//! stream (the depot itself stays synchronous).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod aggregate;
mod command;
mod context;
mod domain;
mod engine;
pub mod example;
pub mod exec;
pub mod merge;
pub mod projection;
pub mod replay;
#[cfg(feature = "tokio")]
pub mod stream;
pub mod testing;
pub mod upcast;

pub use aggregate::{
    to_event, Aggregate, DomainCommand, DomainError, DomainEvent, EventError, Events,
    RecordedEvent, Rejection, TypedAggregate,
};
pub use command::{
    check_id, normalize_command_name, Command, CommandError, CommandIds, MAX_COMMAND_BYTES,
    MAX_ID_BYTES,
};
pub use context::{Context, IdFn, Loaded};
pub use domain::SnapshotPolicy;
pub use domain::{Failure, KindBuilder, Manifest, RegistrationError, ResolveError, Runner};
pub use engine::{
    Applied, ApplyError, Engine, LoadError, SessionEnd, DEFAULT_MAX_ATTEMPTS, SESSION_ENDED,
    SESSION_STARTED,
};
pub use engine::{SnapshotMade, SnapshotOutcome};
pub use upcast::{Transform, UpcastError, UpcastEvent, Upcaster, Upcasters};

/// The depot crate (`retro-depot`, lib `depot`), whole: an embedder depends on `retro-engine`
/// alone and reaches everything of the store here (`engine::depot::Depot::open_or_init`, …).
pub use ::depot;

/// What an embedder needs of the depot, at the top level too.
pub use ::depot::{
    Consumer, Delivery, Depot, Error as DepotError, ErrorClass, EventRecord, HistoryOrder,
    ObjectId, PartitionName, RefName, Subscription,
};

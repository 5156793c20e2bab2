//! retro's engine: turns commands into checkpoints.
//!
//! Register aggregates and their command handlers in a [`Manifest`] (Rust closures, or external
//! programs through a JSON domain manifest, see [`exec`]), then [`Engine::apply`] commands such as
//! `{"path":"accounts/alice","name":"deposit","params":{"amount":50}}`.
//!
//! Embedding, end to end: open a depot, declare an aggregate in Rust, apply commands, read the
//! partition back, walk the log and subscribe.
//!
//! ```
//! use std::sync::Arc;
//! use depot::{Delivery, Depot, HistoryOrder, PartitionName, RefName};
//! use engine::{Aggregate, DomainError, DomainEvent, Engine, Manifest, RecordedEvent};
//! use serde::{Deserialize, Serialize};
//!
//! /// The event: serde, with a name.
//! #[derive(Serialize, Deserialize)]
//! struct Added { n: u64 }
//! impl DomainEvent for Added { const NAME: &'static str = "Added"; }
//!
//! /// The aggregate: folded from its partition's events before every command.
//! #[derive(Default)]
//! struct Counter { total: u64 }
//! impl Aggregate for Counter {
//!     fn apply(&mut self, event: &RecordedEvent) {
//!         if let Some(Ok(added)) = event.decode::<Added>() {
//!             self.total += added.n;
//!         }
//!     }
//! }
//!
//! let mut manifest = Manifest::new();
//! manifest.aggregate::<Counter>("counters")?.command("add", |counter, ctx| {
//!     let n: u64 = ctx.param("n")?;
//!     if counter.total + n > 10 {
//!         return Err(DomainError::new("too_many", "a counter stops at 10"));
//!     }
//!     ctx.emit(&Added { n })
//! })?;
//!
//! // A files depot is `Depot::init(dir)` / `Depot::open(dir)`; this one lives in memory.
//! let depot = Arc::new(Depot::in_memory()?);
//! let engine = Engine::new(depot.clone(), manifest);
//! let session = engine.start_session()?;
//! let applied = engine.apply(&session, br#"{"path":"counters/c1","name":"add","params":{"n":4}}"#)?;
//! engine.apply(&session, br#"{"path":"counters/c1","name":"add","params":{"n":5}}"#)?;
//! let rejected = engine.apply(&session, br#"{"path":"counters/c1","name":"add","params":{"n":2}}"#);
//! assert!(rejected.is_err(), "the domain said no, and nothing was written");
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
//! // Subscribe from the first command's checkpoint: the next one is delivered.
//! let mut subscription = depot.subscribe(&RefName::head(), "counters/**", Some(applied.checkpoint))?;
//! match subscription.poll()? {
//!     Some(Delivery::Checkpoint { events, .. }) => assert_eq!(events.len(), 1),
//!     other => panic!("expected a checkpoint, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The built-in example domain (a bank) is [`example::bank_manifest`]; handlers in any language
//! run through a JSON manifest ([`exec`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod aggregate;
mod command;
mod context;
mod domain;
mod engine;
pub mod example;
pub mod exec;
pub mod replay;
pub mod testing;

pub use aggregate::{to_event, Aggregate, DomainError, DomainEvent, RecordedEvent};
pub use command::{normalize_command_name, Command, CommandError, MAX_COMMAND_BYTES};
pub use context::{Context, IdFn, Loaded};
pub use domain::{Failure, KindBuilder, Manifest, RegistrationError, ResolveError, Runner};
pub use engine::{
    Applied, ApplyError, Engine, SessionEnd, DEFAULT_MAX_ATTEMPTS, SESSION_ENDED, SESSION_STARTED,
};

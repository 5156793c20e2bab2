//! retro's engine: turns commands into checkpoints.
//!
//! Register aggregates and their command handlers in a [`Manifest`] (Rust closures, or external
//! programs through a JSON domain manifest, see [`exec`]), then [`Engine::apply`] commands such as
//! `{"path":"accounts/alice","name":"deposit","params":{"amount":50}}`.
//!
//! ```
//! use std::sync::Arc;
//! use engine::{example, Engine};
//!
//! let depot = Arc::new(depot::Depot::in_memory()?);
//! let engine = Engine::new(depot, example::bank_manifest()?);
//! let session = engine.start_session()?;
//! engine.apply(&session, br#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#)?;
//! engine.apply(&session, br#"{"path":"accounts/alice","name":"Deposit","params":{"amount":50}}"#)?;
//! let err = engine.apply(&session, br#"{"path":"accounts/alice","name":"withdraw","params":{"amount":80}}"#);
//! assert!(err.is_err(), "no overdraft");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod aggregate;
mod command;
mod context;
mod domain;
mod engine;
pub mod example;
pub mod exec;

pub use aggregate::{to_event, Aggregate, DomainError, DomainEvent, RecordedEvent};
pub use command::{normalize_command_name, Command, CommandError, MAX_COMMAND_BYTES};
pub use context::{Context, IdFn, Loaded};
pub use domain::{Failure, KindBuilder, Manifest, RegistrationError, ResolveError, Runner};
pub use engine::{
    Applied, ApplyError, Engine, DEFAULT_MAX_ATTEMPTS, SESSION_ENDED, SESSION_STARTED,
};

//! The embed path's vocabulary: aggregates, events, command handlers, domain errors, and the
//! [`Manifest`] that registers them by path prefix and command name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use depot::{Event, EventName, ObjectId, PartitionName};

use crate::command::normalize_command_name;
use crate::context::Context;

/// A typed domain event: its name in the depot and its JSON shape (serde).
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The event's name, such as `AccountOpened`.
    const NAME: &'static str;
}

/// An event as read back from a partition, for folding into an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The event's name.
    pub name: String,
    /// Its JSON payload.
    pub data: Value,
    /// The checkpoint that added it.
    pub checkpoint: ObjectId,
    /// Its 1-based position in the partition.
    pub version: u64,
    /// The session that produced it.
    pub session: String,
    /// When.
    pub date: Option<DateTime<Utc>>,
}

impl RecordedEvent {
    /// The payload as `E` when the name is `E::NAME`; `None` for other events.
    pub fn decode<E: DomainEvent>(&self) -> Option<Result<E, serde_json::Error>> {
        (self.name == E::NAME).then(|| serde_json::from_value(self.data.clone()))
    }

    pub(crate) fn from_record(record: &depot::EventRecord) -> RecordedEvent {
        RecordedEvent {
            name: record.event.name().to_string(),
            data: serde_json::from_slice(record.event.data()).unwrap_or(Value::Null),
            checkpoint: record.checkpoint,
            version: record.version,
            session: record.session.clone(),
            date: record.date,
        }
    }
}

/// State folded from a partition's events. Events with no business value for the write side are
/// simply ignored (go-retro's rule): `apply` sees every event and picks what it needs.
pub trait Aggregate: Default + Send + 'static {
    /// Folds one event into the state.
    fn apply(&mut self, event: &RecordedEvent);
}

/// A command rejected by the domain: a machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    /// Machine-readable, such as `insufficient_funds`.
    pub code: String,
    /// For people.
    pub message: String,
}

impl DomainError {
    /// A rejection.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> DomainError {
        DomainError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The rejection for bad parameters.
    pub fn invalid_params(message: impl Into<String>) -> DomainError {
        DomainError::new("invalid_params", message)
    }
}

/// Why a handler produced no events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The domain said no.
    Rejected(DomainError),
    /// The handler itself failed (crashed, timed out, spoke nonsense).
    Broken {
        /// Which handler.
        handler: String,
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Rejected(e) => write!(f, "rejected: {e}"),
            Failure::Broken { handler, reason } => write!(f, "handler {handler} failed: {reason}"),
        }
    }
}

/// Runs one command against a rehydrated partition. Typed Rust handlers and external programs
/// both implement it.
pub trait Runner: Send + Sync {
    /// Runs the command; emitted events go into `ctx`.
    fn run(&self, ctx: &mut Context<'_>, events: &[RecordedEvent]) -> Result<(), Failure>;
    /// Names the handler in error messages.
    fn describe(&self) -> String;
}

type HandlerFn<A> = dyn Fn(&A, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync;

struct TypedRunner<A> {
    name: String,
    handler: Box<HandlerFn<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Runner for TypedRunner<A> {
    fn run(&self, ctx: &mut Context<'_>, events: &[RecordedEvent]) -> Result<(), Failure> {
        let mut aggregate = A::default();
        for event in events {
            aggregate.apply(event);
        }
        (self.handler)(&aggregate, ctx).map_err(Failure::Rejected)
    }

    fn describe(&self) -> String {
        format!("'{}' (Rust)", self.name)
    }
}

/// A registered command.
#[derive(Clone)]
pub(crate) struct CommandEntry {
    pub name: String,
    pub runner: Arc<dyn Runner>,
    pub requires_session: bool,
}

/// A registered aggregate kind.
#[derive(Clone, Default)]
pub(crate) struct KindEntry {
    pub commands: HashMap<String, CommandEntry>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot register {what} '{name}': {reason}")]
pub struct RegistrationError {
    what: &'static str,
    name: String,
    reason: String,
}

/// The registry of aggregate kinds (by path prefix) and their commands (by name, in either
/// `createProfile` or `CreateProfile` style).
#[derive(Clone, Default)]
pub struct Manifest {
    kinds: BTreeMap<String, KindEntry>,
}

/// How a command path resolved.
pub(crate) struct Resolved<'a> {
    pub kind: &'a str,
    pub command: &'a CommandEntry,
    /// True when the path named only the kind: a new aggregate needs an id.
    pub anonymous: bool,
}

impl Manifest {
    /// An empty manifest.
    pub fn new() -> Manifest {
        Manifest::default()
    }

    /// Registers (or extends) aggregate kind `kind` with state `A`; add commands on the result.
    pub fn aggregate<A: Aggregate>(
        &mut self,
        kind: &str,
    ) -> Result<KindBuilder<'_, A>, RegistrationError> {
        PartitionName::new(kind).map_err(|e| RegistrationError {
            what: "aggregate kind",
            name: kind.to_owned(),
            reason: e.to_string(),
        })?;
        self.kinds.entry(kind.to_owned()).or_default();
        Ok(KindBuilder {
            manifest: self,
            kind: kind.to_owned(),
            _aggregate: PhantomData,
        })
    }

    /// Registers a command run by any [`Runner`] (external programs use this).
    pub fn register(
        &mut self,
        kind: &str,
        command: &str,
        runner: Arc<dyn Runner>,
        requires_session: bool,
    ) -> Result<(), RegistrationError> {
        PartitionName::new(kind).map_err(|e| RegistrationError {
            what: "aggregate kind",
            name: kind.to_owned(),
            reason: e.to_string(),
        })?;
        crate::command::Command::new("_", command, Map::new()).map_err(|e| RegistrationError {
            what: "command",
            name: command.to_owned(),
            reason: e.to_string(),
        })?;
        let entry = self.kinds.entry(kind.to_owned()).or_default();
        let key = normalize_command_name(command);
        if entry.commands.contains_key(&key) {
            return Err(RegistrationError {
                what: "command",
                name: format!("{kind}/{command}"),
                reason: "it is registered twice".to_owned(),
            });
        }
        entry.commands.insert(
            key,
            CommandEntry {
                name: command.to_owned(),
                runner,
                requires_session,
            },
        );
        Ok(())
    }

    /// Every kind with its command names, sorted.
    pub fn kinds(&self) -> Vec<(String, Vec<String>)> {
        self.kinds
            .iter()
            .map(|(kind, entry)| {
                let mut names: Vec<String> =
                    entry.commands.values().map(|c| c.name.clone()).collect();
                names.sort();
                (kind.clone(), names)
            })
            .collect()
    }

    /// The kind a path belongs to: the longest registered kind that is the path or a prefix of
    /// it at a segment boundary.
    pub(crate) fn kind_of(&self, path: &str) -> Option<(&str, &KindEntry, bool)> {
        self.kinds
            .iter()
            .filter(|(kind, _)| {
                path == kind.as_str()
                    || (path.len() > kind.len()
                        && path.starts_with(kind.as_str())
                        && path.as_bytes()[kind.len()] == b'/')
            })
            .max_by_key(|(kind, _)| kind.len())
            .map(|(kind, entry)| (kind.as_str(), entry, path == kind.as_str() && kind != "_"))
    }

    pub(crate) fn resolve(&self, path: &str, command: &str) -> Result<Resolved<'_>, ResolveError> {
        let (kind, entry, anonymous) =
            self.kind_of(path)
                .ok_or_else(|| ResolveError::UnknownAggregate {
                    path: path.to_owned(),
                    known: self.kinds.keys().cloned().collect(),
                })?;
        let command_entry = entry
            .commands
            .get(&normalize_command_name(command))
            .ok_or_else(|| ResolveError::UnknownCommand {
                kind: kind.to_owned(),
                command: command.to_owned(),
                known: {
                    let mut names: Vec<String> =
                        entry.commands.values().map(|c| c.name.clone()).collect();
                    names.sort();
                    names
                },
            })?;
        Ok(Resolved {
            kind,
            command: command_entry,
            anonymous,
        })
    }
}

/// Why a command does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No kind matches the path.
    #[error("no aggregate kind matches path '{}' (known kinds: {})", depot::shown(.path), known.join(", "))]
    UnknownAggregate {
        /// The path.
        path: String,
        /// Registered kinds.
        known: Vec<String>,
    },
    /// The kind has no such command.
    #[error("aggregate kind '{}' has no command '{}' (known: {})", depot::shown(.kind), depot::shown(.command), known.join(", "))]
    UnknownCommand {
        /// The kind.
        kind: String,
        /// The command.
        command: String,
        /// Its commands.
        known: Vec<String>,
    },
}

/// Adds commands to one aggregate kind.
pub struct KindBuilder<'m, A> {
    manifest: &'m mut Manifest,
    kind: String,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> KindBuilder<'_, A> {
    /// Registers command `name`, handled by `handler` on the rehydrated aggregate.
    pub fn command(
        self,
        name: &str,
        handler: impl Fn(&A, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static,
    ) -> Result<Self, RegistrationError> {
        self.add(name, handler, false)
    }

    /// Registers a command that needs a live session (started and not ended).
    pub fn command_in_session(
        self,
        name: &str,
        handler: impl Fn(&A, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static,
    ) -> Result<Self, RegistrationError> {
        self.add(name, handler, true)
    }

    fn add(
        self,
        name: &str,
        handler: impl Fn(&A, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static,
        requires_session: bool,
    ) -> Result<Self, RegistrationError> {
        let runner = Arc::new(TypedRunner::<A> {
            name: format!("{}/{name}", self.kind),
            handler: Box::new(handler),
            _aggregate: PhantomData,
        });
        self.manifest
            .register(&self.kind, name, runner, requires_session)?;
        Ok(self)
    }
}

/// Builds a depot event from a typed one.
pub fn to_event<E: DomainEvent>(event: &E) -> Result<Event, DomainError> {
    let name = EventName::new(E::NAME)
        .map_err(|e| DomainError::new("bad_event", format!("event name: {e}")))?;
    let data = serde_json::to_vec(event).map_err(|e| {
        DomainError::new(
            "bad_event",
            format!("event {} does not serialize: {e}", E::NAME),
        )
    })?;
    Ok(Event::new(name, data))
}

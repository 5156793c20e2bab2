//! The domain's vocabulary, shared by the handlers' [`Context`](crate::Context) and the
//! [`Manifest`](crate::Manifest): typed events ([`DomainEvent`], and [`to_event`] to turn one into
//! a depot event), events read back ([`RecordedEvent`]), the state they fold into ([`Aggregate`]),
//! and the domain's rejections ([`DomainError`]).
//!
//! It depends on no other engine module, so that `context` (what a handler sees) and `domain`
//! (runners and the manifest, which hand a handler its context) both build on it and not on each
//! other: `aggregate` ← `context` ← `domain`.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use depot::{Event, EventName, ObjectId};

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

//! The domain's vocabulary, shared by the handlers' [`Context`](crate::Context) and the
//! [`Manifest`](crate::Manifest): typed events ([`DomainEvent`], and [`to_event`] to turn one into
//! a depot event), events read back ([`RecordedEvent`]), the state they fold into ([`Aggregate`]),
//! and the domain's rejections ([`DomainError`]).
//!
//! The typed layer on top: a domain's events as one serde enum ([`Events`]), an aggregate that
//! folds them ([`TypedAggregate`]: `apply` gets the enum, and a stored event that does not decode
//! is an [`EventError`], never skipped), commands as serde structs ([`DomainCommand`]), and
//! rejection codes as the domain's own enum ([`Rejection`], which converts into a
//! [`DomainError`]).
//!
//! It depends on no other engine module, so that `context` (what a handler sees) and `domain`
//! (runners and the manifest, which hand a handler its context) both build on it and not on each
//! other: `aggregate` ← `context` ← `domain`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

use depot::{Event, EventName, ObjectId, PartitionName};

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
    /// Its 1-based position in the partition (the stored event's: the events an upcaster split
    /// one into share it).
    pub version: u64,
    /// The schema version of its payload, after upcasting: the domain's newest for its name.
    pub schema_version: u32,
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
            schema_version: record.event.version(),
            session: record.session.clone(),
            date: record.date,
        }
    }
}

/// State folded from a partition's events. Events with no business value for the write side are
/// simply ignored (go-retro's rule): `apply` sees every event and picks what it needs.
///
/// The engine folds through [`Aggregate::try_apply`], which a [`TypedAggregate`] implements by
/// decoding each event: one that does not decode stops the fold with an [`EventError`].
pub trait Aggregate: Default + Send + 'static {
    /// Folds one event into the state.
    fn apply(&mut self, event: &RecordedEvent);

    /// Folds one event, or says why its payload does not fit the domain's types. The default
    /// calls [`Aggregate::apply`] and never fails.
    fn try_apply(&mut self, event: &RecordedEvent) -> Result<(), serde_json::Error> {
        self.apply(event);
        Ok(())
    }
}

/// Folds `events` (of `partition`) into a fresh `A`, stopping at the first that does not decode.
pub(crate) fn fold<A: Aggregate>(
    partition: &PartitionName,
    events: &[RecordedEvent],
) -> Result<A, EventError> {
    let mut state = A::default();
    fold_into(&mut state, partition, events)?;
    Ok(state)
}

/// Folds `events` (of `partition`) into `state` (a snapshot's, say), stopping at the first that
/// does not decode.
pub(crate) fn fold_into<A: Aggregate>(
    state: &mut A,
    partition: &PartitionName,
    events: &[RecordedEvent],
) -> Result<(), EventError> {
    for event in events {
        state
            .try_apply(event)
            .map_err(|source| EventError::new(partition, event, source))?;
    }
    Ok(())
}

/// A stored event whose payload does not decode into the domain's type for its name: the
/// aggregate cannot be rehydrated (never silently skipped). Class `internal`: the domain's types
/// and its history disagree.
#[derive(Debug, thiserror::Error)]
#[error("event {version} of '{}' ({name}, in checkpoint {checkpoint}) does not decode: {source}", depot::shown(.partition))]
pub struct EventError {
    /// The partition.
    pub partition: String,
    /// The event's 1-based position in it.
    pub version: u64,
    /// The event's name.
    pub name: String,
    /// The checkpoint that added it.
    pub checkpoint: ObjectId,
    /// Why it does not decode.
    #[source]
    pub source: serde_json::Error,
}

impl EventError {
    fn new(partition: &PartitionName, event: &RecordedEvent, source: serde_json::Error) -> Self {
        EventError {
            partition: partition.to_string(),
            version: event.version,
            name: event.name.clone(),
            checkpoint: event.checkpoint,
            source,
        }
    }
}

/// A domain's events as one serde enum, one variant per event, in serde's default (externally
/// tagged) representation: the variant's name (after any `#[serde(rename)]`) is the event's name
/// in the depot, its content the event's JSON.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum StockEvent {
///     Received { quantity: u64 },
///     Shipped { quantity: u64 },
/// }
/// impl engine::Events for StockEvent {}
///
/// use engine::Events;
/// let data = serde_json::json!({"quantity": 3});
/// assert_eq!(StockEvent::decode("Shipped", &data)?, Some(StockEvent::Shipped { quantity: 3 }));
/// assert_eq!(StockEvent::decode("Renamed", &data)?, None, "not one of ours: ignored");
/// assert!(StockEvent::decode("Shipped", &serde_json::json!({"quantity": -1})).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub trait Events: Serialize + DeserializeOwned {
    /// The stored event `name` with payload `data` as one of these: `Ok(None)` when `name` is not
    /// a variant (an event of no interest here, ignored), an error when it is one and `data`
    /// does not fit it. The default works for an externally tagged enum (serde's default).
    fn decode(name: &str, data: &Value) -> Result<Option<Self>, serde_json::Error> {
        let Some(variants) = variant_names::<Self>() else {
            return Err(serde::de::Error::custom(
                "Events::decode needs an externally tagged enum (serde's default representation); implement decode for other shapes",
            ));
        };
        if !variants.contains(&name) {
            return Ok(None);
        }
        let mut tagged = Map::with_capacity(1);
        tagged.insert(name.to_owned(), data.clone());
        serde_json::from_value(Value::Object(tagged)).map(Some)
    }

    /// This event as a depot event: its variant's name and its content as JSON (`null` for a
    /// unit variant).
    fn to_event(&self) -> Result<Event, DomainError> {
        let bad = |why: String| DomainError::new("bad_event", why);
        let (name, data) = match serde_json::to_value(self)
            .map_err(|e| bad(format!("event does not serialize: {e}")))?
        {
            Value::String(name) => (name, Value::Null),
            Value::Object(map) if map.len() == 1 => map.into_iter().next().expect("one entry"),
            other => {
                return Err(bad(format!(
                    "an Events enum serializes as {{\"Variant\": {{…}}}}, not as {other}"
                )))
            }
        };
        let name = EventName::new(&name).map_err(|e| bad(format!("event name: {e}")))?;
        Ok(Event::new(name, data.to_string()))
    }
}

/// The variant names of an enum's `Deserialize` (serde's `VARIANTS`), or `None` for a type that
/// does not deserialize as an externally tagged enum.
fn variant_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut found = None;
    let _ = T::deserialize(VariantProbe(&mut found));
    found
}

/// A deserializer that only records the variant names it is asked for.
struct VariantProbe<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct ProbeDone;

impl fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant probe")
    }
}

impl std::error::Error for ProbeDone {}

impl serde::de::Error for ProbeDone {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ProbeDone
    }
}

impl<'de> serde::Deserializer<'de> for VariantProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.0 = Some(variants);
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

/// State folded from typed events: `apply` receives the domain's [`Events`] enum. Every such
/// type is an [`Aggregate`]: events whose name is not a variant are ignored, and one whose name
/// is a variant but whose payload does not decode is an [`EventError`] when the engine folds.
/// (Calling [`Aggregate::apply`] yourself on such a type skips that event; the engine never
/// does: it calls [`Aggregate::try_apply`].)
pub trait TypedAggregate: Default + Send + 'static {
    /// The domain's events.
    type Event: Events;

    /// Folds one event into the state.
    fn apply(&mut self, event: Self::Event);
}

impl<T: TypedAggregate> Aggregate for T {
    fn apply(&mut self, event: &RecordedEvent) {
        let _ = Aggregate::try_apply(self, event);
    }

    fn try_apply(&mut self, event: &RecordedEvent) -> Result<(), serde_json::Error> {
        if let Some(typed) = T::Event::decode(&event.name, &event.data)? {
            TypedAggregate::apply(self, typed);
        }
        Ok(())
    }
}

/// A typed command: its name in the manifest and its parameters' shape (serde). A struct
/// serializes to the command's `params` object; register its handler with
/// [`KindBuilder::handle`](crate::KindBuilder::handle) and apply one with
/// [`Engine::execute`](crate::Engine::execute).
pub trait DomainCommand: Serialize + DeserializeOwned {
    /// The command's name, such as `receive`.
    const NAME: &'static str;
}

/// A domain's own rejection type (an enum, typically with `thiserror`): a machine-readable code
/// per case and a message for people (its `Display`). It converts into a [`DomainError`], so a
/// handler can `return Err(MyRejection::OutOfStock { .. }.into())` or use `?`.
pub trait Rejection: fmt::Display {
    /// The machine-readable code, such as `insufficient_stock`.
    fn code(&self) -> &str;
}

impl<R: Rejection> From<R> for DomainError {
    fn from(rejection: R) -> DomainError {
        DomainError::new(rejection.code(), rejection.to_string())
    }
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

//! retro's objects: their ids ([`hash`]), the validated names inside them ([`name`]), the four
//! kinds of objects (events, affixes, checkpoints, and the `data` objects that hold a sealed
//! event's payload or a checkpoint's command) and their one canonical encoding. No I/O:
//! stores live in `retro-depot`.
//!
//! Every object is stored as `<header>\0<body>` and named by the SHA-256 of exactly those bytes
//! (byte-compatible with go-retro; see `docs/format.md`). [`Object::encode`] is the only way bytes are
//! produced and [`Object::decode`] the only way they are read back: decoding is strict and total, so
//! arbitrary bytes give a typed [`DecodeError`], never a panic, and a decoded object re-encodes to the
//! very same bytes.

pub mod checkpoint_log;
mod decode;
mod encode;
pub mod hash;
pub mod name;

pub use hash::{HashKind, ObjectId, ParseIdError, Prefix};
pub use name::{
    escape_invisible, is_invisible, shown, EventName, FieldKey, FieldValue, NameError,
    PartitionName,
};

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

pub use decode::{parse_event_format, DecodeError};

/// Which of the four kinds an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A domain event.
    Event,
    /// The events one command produced, per partition.
    Affix,
    /// A commit-like record: affix, parents, fields and message.
    Checkpoint,
    /// A salt and JSON bytes: the erasable payload of a sealed event or a checkpoint's command.
    Data,
}

impl Kind {
    /// The kind's name as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Affix => "affix",
            Kind::Checkpoint => "checkpoint",
            Kind::Data => "data",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain event: a name, its JSON payload, kept byte for byte as given, and the schema version
/// of that payload (1 unless the header says `json;v=<N>` or `sealed;v=<N>`; see `docs/format.md`).
///
/// A *sealed* event (format `sealed`, see `docs/format.md`) hashes only the id of a [`Data`]
/// object that holds its payload, so the payload can be erased while the event's id still
/// verifies. Decoded from its bytes, a sealed event knows only that id ([`Event::sealed_data`])
/// and its [`Event::data`] is empty until a store resolves it ([`Event::with_resolved_data`]).
/// The encoding of a sealed event never depends on its resolved data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    name: EventName,
    data: Vec<u8>,
    version: u32,
    sealed: Option<ObjectId>,
}

/// The schema version of an event whose header carries none (`json`).
pub const DEFAULT_EVENT_VERSION: u32 = 1;

impl Event {
    /// An event named `name` whose payload is the JSON text `data`, at schema version 1.
    pub fn new(name: EventName, data: impl Into<Vec<u8>>) -> Event {
        Event {
            name,
            data: data.into(),
            version: DEFAULT_EVENT_VERSION,
            sealed: None,
        }
    }

    /// The same event at schema version `version`; 0 is taken as 1 (an event has no version
    /// below 1). Version 1 encodes as `json`, any other as `json;v=<N>`.
    pub fn with_version(mut self, version: u32) -> Event {
        self.version = version.max(DEFAULT_EVENT_VERSION);
        self
    }

    /// The schema version of its payload (1 when the header carries none).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A sealed event whose payload is in the data object `data_id`, not yet resolved.
    pub fn new_sealed(name: EventName, data_id: ObjectId) -> Event {
        Event {
            name,
            data: Vec::new(),
            version: DEFAULT_EVENT_VERSION,
            sealed: Some(data_id),
        }
    }

    /// The id of the data object holding a sealed event's payload; `None` for a plain event.
    pub fn sealed_data(&self) -> Option<ObjectId> {
        self.sealed
    }

    /// The same event with `data` as its payload, as read from its data object (or a tombstone
    /// once erased). The encoding, and so the id, of a sealed event does not change.
    pub fn with_resolved_data(mut self, data: impl Into<Vec<u8>>) -> Event {
        self.data = data.into();
        self
    }

    /// The event's name.
    pub fn name(&self) -> &EventName {
        &self.name
    }

    /// The event's JSON payload (empty for a sealed event not yet resolved).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// The length of a data object's salt, in bytes (written as 32 lowercase hex digits).
pub const SALT_LEN: usize = 16;

/// A data object: a random salt and JSON bytes, kept byte for byte. The salt makes the id of a
/// small payload (`{"owner":"Alice"}`) impossible to confirm by guessing once the data is erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    salt: [u8; SALT_LEN],
    json: Vec<u8>,
}

impl Data {
    /// A data object holding `json`, salted with `salt` (16 random bytes from the OS in every
    /// object retro writes).
    pub fn new(salt: [u8; SALT_LEN], json: impl Into<Vec<u8>>) -> Data {
        Data {
            salt,
            json: json.into(),
        }
    }

    /// The salt.
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// The JSON bytes.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// Which events one command produced, per partition. Partitions are kept sorted (the encoding's
/// order); events of a partition keep their emission order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Affix {
    partitions: BTreeMap<PartitionName, Vec<ObjectId>>,
}

impl Affix {
    /// An empty affix.
    pub fn new() -> Affix {
        Affix::default()
    }

    /// Appends `event` to `partition`'s list.
    pub fn push(&mut self, partition: PartitionName, event: ObjectId) {
        self.partitions.entry(partition).or_default().push(event);
    }

    /// The partitions and their events, partitions in lexicographic order.
    pub fn partitions(&self) -> impl Iterator<Item = (&PartitionName, &[ObjectId])> {
        self.partitions.iter().map(|(p, ids)| (p, ids.as_slice()))
    }

    /// The events of one partition, if it is in the affix.
    pub fn events_of(&self, partition: &PartitionName) -> Option<&[ObjectId]> {
        self.partitions.get(partition).map(Vec::as_slice)
    }

    /// How many events the affix lists, over all partitions.
    pub fn event_count(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }

    /// True when no partition is listed.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }
}

impl FromIterator<(PartitionName, ObjectId)> for Affix {
    fn from_iter<T: IntoIterator<Item = (PartitionName, ObjectId)>>(iter: T) -> Self {
        let mut affix = Affix::new();
        for (partition, id) in iter {
            affix.push(partition, id);
        }
        affix
    }
}

/// The header key of a checkpoint's session.
pub const SESSION_KEY: &str = "session";
/// The header key of a checkpoint's date.
pub const DATE_KEY: &str = "date";
/// The header key naming the data object that holds a checkpoint's command (its message is
/// then empty), so the command can be erased while the checkpoint's id still verifies.
pub const MESSAGE_DATA_KEY: &str = "message-data";

/// A commit-like record: the affix it adds, its parents, sorted header fields (`date` and `session`
/// among them) and a message (retro keeps the original command payload there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    affix: ObjectId,
    parents: Vec<ObjectId>,
    fields: BTreeMap<FieldKey, FieldValue>,
    message: Vec<u8>,
    /// The command read from the `message-data` object (or its tombstone), when resolved by a
    /// store; never encoded.
    resolved: Option<Vec<u8>>,
}

/// Why a checkpoint could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A field key or value is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
}

impl Checkpoint {
    /// A checkpoint with the two required fields, `session` and `date` (UTC, whole seconds).
    pub fn new(
        affix: ObjectId,
        parents: Vec<ObjectId>,
        session: &str,
        date: DateTime<Utc>,
        message: impl Into<Vec<u8>>,
    ) -> Result<Checkpoint, CheckpointError> {
        let mut fields = BTreeMap::new();
        fields.insert(FieldKey::new(SESSION_KEY)?, FieldValue::new(session)?);
        fields.insert(
            FieldKey::new(DATE_KEY)?,
            FieldValue::new(&format_date(date))?,
        );
        Ok(Checkpoint {
            affix,
            parents,
            fields,
            message: message.into(),
            resolved: None,
        })
    }

    /// A checkpoint with arbitrary fields, as read from another system (go-retro's vectors carry
    /// only `session`). Prefer [`Checkpoint::new`].
    pub fn with_fields(
        affix: ObjectId,
        parents: Vec<ObjectId>,
        fields: BTreeMap<FieldKey, FieldValue>,
        message: impl Into<Vec<u8>>,
    ) -> Checkpoint {
        Checkpoint {
            affix,
            parents,
            fields,
            message: message.into(),
            resolved: None,
        }
    }

    /// Sets an extra header field (replacing one with the same key).
    pub fn set_field(&mut self, key: FieldKey, value: FieldValue) {
        self.fields.insert(key, value);
    }

    /// The affix this checkpoint adds.
    pub fn affix(&self) -> ObjectId {
        self.affix
    }

    /// Its parents: none for a root, one usually, two or more for a merge.
    pub fn parents(&self) -> &[ObjectId] {
        &self.parents
    }

    /// The first parent, the mainline predecessor.
    pub fn first_parent(&self) -> Option<ObjectId> {
        self.parents.first().copied()
    }

    /// Replaces the parents (used to re-parent a checkpoint onto a moved head).
    pub fn set_parents(&mut self, parents: Vec<ObjectId>) {
        self.parents = parents;
    }

    /// All header fields other than `affix` and `parent`, sorted by key.
    pub fn fields(&self) -> impl Iterator<Item = (&FieldKey, &FieldValue)> {
        self.fields.iter()
    }

    /// One header field by key.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }

    /// The head of the checkpoint log this checkpoint commits to (its `log` field; see
    /// [`checkpoint_log`]), if it has one: retro writes it on every checkpoint it commits on a
    /// branch; checkpoints from before the field, and go-retro's, have none.
    pub fn log_head(&self) -> Option<checkpoint_log::LogHead> {
        self.field(checkpoint_log::LOG_KEY)
            .and_then(|v| checkpoint_log::LogHead::parse(v).ok())
    }

    /// Sets the `log` field to `head`.
    pub fn set_log_head(&mut self, head: checkpoint_log::LogHead) {
        self.fields.insert(
            FieldKey::new(checkpoint_log::LOG_KEY).expect("a valid constant key"),
            FieldValue::new(&head.to_string()).expect("a log head is a valid value"),
        );
    }

    /// The session that made this checkpoint.
    pub fn session(&self) -> &str {
        self.field(SESSION_KEY).unwrap_or_default()
    }

    /// The date it was made, if it has one (every checkpoint retro writes has; go-retro's test
    /// vectors do not).
    pub fn date(&self) -> Option<DateTime<Utc>> {
        self.field(DATE_KEY).and_then(|d| parse_date(d).ok())
    }

    /// The message: the original command payload. For a checkpoint with a `message-data`
    /// field this is the command a store resolved from that data object (or its tombstone once
    /// redacted), and empty until then; [`Checkpoint::stored_message`] is what is encoded.
    pub fn message(&self) -> &[u8] {
        self.resolved.as_deref().unwrap_or(&self.message)
    }

    /// The message as encoded (empty when a `message-data` field names the command's object).
    pub fn stored_message(&self) -> &[u8] {
        &self.message
    }

    /// The data object holding the command, if the `message-data` field names one.
    pub fn message_data(&self) -> Option<ObjectId> {
        self.field(MESSAGE_DATA_KEY).and_then(|v| v.parse().ok())
    }

    /// The same checkpoint with `message` as its resolved command (its encoding, and so its id,
    /// does not change).
    pub fn with_resolved_message(mut self, message: impl Into<Vec<u8>>) -> Checkpoint {
        self.resolved = Some(message.into());
        self
    }
}

/// Formats a date as go-retro does: RFC 3339, UTC, whole seconds, `Z`.
pub fn format_date(date: DateTime<Utc>) -> String {
    date.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a `date` field (RFC 3339; it must be in UTC).
pub fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    if !text.ends_with('Z') {
        return Err(format!(
            "date '{text}' is not in UTC (expected a trailing 'Z')"
        ));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("date '{text}' is not RFC 3339: {e}"))
}

/// Any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// An event.
    Event(Event),
    /// An affix.
    Affix(Affix),
    /// A checkpoint.
    Checkpoint(Checkpoint),
    /// A data object.
    Data(Data),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Event(_) => Kind::Event,
            Object::Affix(_) => Kind::Affix,
            Object::Checkpoint(_) => Kind::Checkpoint,
            Object::Data(_) => Kind::Data,
        }
    }

    /// The canonical encoding, `<header>\0<body>`.
    pub fn encode(&self) -> Vec<u8> {
        encode::encode(self)
    }

    /// Encodes and names the object.
    pub fn to_encoded(&self) -> EncodedObject {
        EncodedObject::from_bytes(self.encode())
    }

    /// Decodes bytes strictly; see [`DecodeError`] for what is refused.
    pub fn decode(bytes: &[u8]) -> Result<Object, DecodeError> {
        decode::decode(bytes)
    }
}

impl From<Event> for Object {
    fn from(value: Event) -> Self {
        Object::Event(value)
    }
}

impl From<Affix> for Object {
    fn from(value: Affix) -> Self {
        Object::Affix(value)
    }
}

impl From<Checkpoint> for Object {
    fn from(value: Checkpoint) -> Self {
        Object::Checkpoint(value)
    }
}

impl From<Data> for Object {
    fn from(value: Data) -> Self {
        Object::Data(value)
    }
}

/// An object's encoded bytes together with its id, as stores keep them.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedObject {
    id: ObjectId,
    bytes: Vec<u8>,
}

impl EncodedObject {
    /// Names encoded bytes by hashing them.
    pub fn from_bytes(bytes: Vec<u8>) -> EncodedObject {
        EncodedObject {
            id: ObjectId::of(&bytes),
            bytes,
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The kind named in the header, without decoding the body.
    pub fn kind(&self) -> Result<Kind, DecodeError> {
        decode::kind_of(&self.bytes)
    }

    /// The body's length (the encoded size less the header).
    pub fn body_len(&self) -> usize {
        match self.bytes.iter().position(|&b| b == 0) {
            Some(nul) => self.bytes.len() - nul - 1,
            None => self.bytes.len(),
        }
    }

    /// Decodes the bytes.
    pub fn decode(&self) -> Result<Object, DecodeError> {
        decode::decode(&self.bytes)
    }
}

impl fmt::Debug for EncodedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedObject")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;

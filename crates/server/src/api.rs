//! The bodies of the HTTP API, one definition each: the server answers with these, the CLI's
//! `--json` output prints the same structs (`retro apply --json` prints [`Applied`], `retro apply
//! --batch --json` one [`Applied`] or [`LineError`] a line, `retro log
//! --json` one [`CheckpointSummary`] a line, `retro show --json` a [`CheckpointView`], `retro
//! events --json` [`EventEntry`] lines, `retro partitions --json` [`PartitionEntry`] lines, `retro
//! refs --json` [`RefEntry`] lines, `retro watch --json` [`Delivered`] lines), and the OpenAPI
//! document (`GET /openapi.json`) describes them.
//!
//! The constructors take the depot's own types, so the one place that turns a checkpoint into its
//! JSON form is here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::group_api::{
    GroupCheckpoint, GroupDelivered, GroupEventEntry, GroupMemberEntry, GroupNonFastForward,
    GroupSlotEntry, GroupSlots, GroupStatusBody,
};

use depot::{Affix, Checkpoint, Delivery, Depot, EventRecord, Object, ObjectId, RefName, RefValue};

/// A message as JSON when it is JSON (retro keeps the command payload there), else a string.
pub fn message_value(message: &[u8]) -> Value {
    serde_json::from_slice(message)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(message).into_owned()))
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
    /// `HEAD`'s checkpoint, `null` while the depot is empty.
    pub head: Option<String>,
}

/// The body of `POST /apply`: a command. The engine parses and validates it (a malformed one
/// is a 400 `bad_command`); this struct only documents its shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Command {
    /// The aggregate: `kind/id` (e.g. `accounts/alice`).
    #[schema(example = "accounts/alice")]
    pub path: String,
    /// The command's name (camelCase or snake_case).
    #[schema(example = "deposit")]
    pub name: String,
    /// The command's parameters.
    #[serde(default)]
    pub params: Value,
}

/// A command applied: `201` of `POST /apply`, and what `retro apply --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    /// The new checkpoint.
    pub checkpoint: String,
    /// Its parent (`null` for the first checkpoint).
    pub parent: Option<String>,
    /// The aggregate's path (with its new id, for an anonymous aggregate).
    pub path: String,
    /// Events written.
    pub events: usize,
    /// Partitions written, sorted.
    pub partitions: Vec<String>,
    /// Times the handler ran (1 unless the aggregate changed under it; 0 on a replay).
    pub attempts: u32,
    /// Present (and `true`) only when the command's id was already applied: nothing was
    /// written, and this is the original checkpoint (the response also has the header
    /// `Idempotent-Replayed: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// A command that emitted no events: nothing was written, no ref moved. `200` of `POST /apply`,
/// and what `retro apply --json` prints for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NothingWritten {
    /// Always `false`.
    pub written: bool,
    /// Always `null`: no checkpoint was made.
    pub checkpoint: Option<String>,
    /// The ref's checkpoint the command ran on, unchanged (`null` on an unborn branch).
    pub head: Option<String>,
    /// The aggregate's path.
    pub path: String,
    /// The command, in the manifest's spelling.
    pub command: String,
    /// Always 0.
    pub events: usize,
    /// Always empty.
    pub partitions: Vec<String>,
}

impl NothingWritten {
    /// The body for an [`engine::ApplyError::NothingToWrite`]; `None` for any other outcome.
    pub fn from_error(err: &engine::ApplyError) -> Option<NothingWritten> {
        match err {
            engine::ApplyError::NothingToWrite {
                path,
                command,
                head,
            } => Some(NothingWritten {
                written: false,
                checkpoint: None,
                head: head.map(|h| h.to_string()),
                path: path.clone(),
                command: command.clone(),
                events: 0,
                partitions: Vec::new(),
            }),
            _ => None,
        }
    }
}

impl From<&engine::Applied> for Applied {
    fn from(applied: &engine::Applied) -> Applied {
        Applied {
            checkpoint: applied.checkpoint.to_string(),
            parent: applied.parent.map(|p| p.to_string()),
            path: applied.path.clone(),
            events: applied.events,
            partitions: applied.partitions.clone(),
            attempts: applied.attempts,
            replayed: applied.replayed,
        }
    }
}

/// Every error, whatever its status: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `not_found`, `unauthorized`, `insufficient_funds`, …
    #[schema(example = "not_found")]
    pub code: String,
    /// A sentence for people. A 500 or 503 says only its class (details go to the server's log).
    pub message: String,
    /// The request's id, as in the `X-Request-Id` header and the server's log.
    #[schema(example = "r42")]
    pub request_id: String,
}

/// One failed line of `retro apply --batch --json`: an [`ErrorBody`] without a request id (there
/// is no request), and the line's number in the input (1-based, blank lines counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineError {
    /// What went wrong: the code `POST /apply` would answer with, and the CLI's message.
    pub error: LineErrorDetail,
    /// The line's number in the input, from 1; blank lines count.
    pub line: u64,
}

/// The inside of a [`LineError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineErrorDetail {
    /// The same code as [`ErrorDetail::code`] for this failure over HTTP.
    #[schema(example = "insufficient_funds")]
    pub code: String,
    /// The error with its causes, as `retro apply` prints it.
    pub message: String,
}

/// One recorded failed command: `GET /failed`, `retro failed --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailedEntry {
    /// The orphaned checkpoint that records the attempt.
    pub checkpoint: String,
    /// When it was tried (the checkpoint's `date` field), if recorded.
    pub date: Option<String>,
    /// The session it was tried in.
    pub session: String,
    /// Why it failed: the same `{code, message}` shape as an error answered over HTTP.
    pub error: LineErrorDetail,
    /// The command payload as given (JSON, or a string when it is not JSON).
    #[schema(value_type = Object)]
    pub command: Value,
}

impl FailedEntry {
    /// The entry of failed command `id`, read from its checkpoint.
    pub fn read(depot: &Depot, id: &depot::ObjectId) -> Result<FailedEntry, depot::Error> {
        let checkpoint = depot.read_checkpoint(id)?;
        let error = checkpoint.field("error").unwrap_or("-");
        Ok(FailedEntry {
            checkpoint: id.to_string(),
            date: checkpoint.field("date").map(str::to_owned),
            session: checkpoint.session().to_owned(),
            error: failure_error(error),
            command: message_value(checkpoint.message()),
        })
    }
}

/// A failed command's recorded error text as `{code, message}`: `code: message` when it starts
/// with a code, `handler_failed` for a broken handler, else `rejected`.
pub fn failure_error(text: &str) -> LineErrorDetail {
    let (code, message) = if text.starts_with("handler ") && text.contains(" failed: ") {
        ("handler_failed", text)
    } else {
        match text.split_once(": ") {
            Some((code, message))
                if !code.is_empty()
                    && code
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
            {
                (code, message)
            }
            _ => ("rejected", text),
        }
    };
    LineErrorDetail {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// Whether a ref holds a checkpoint or names another ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    /// It holds a checkpoint id.
    Direct,
    /// It names another ref (`HEAD` → `refs/heads/master`).
    Symbolic,
}

/// One ref: `GET /refs`, `retro refs --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefEntry {
    /// Its full name (`HEAD`, `refs/heads/master`).
    #[serde(rename = "ref")]
    pub name: String,
    /// Direct or symbolic.
    pub kind: RefKind,
    /// A checkpoint id (direct) or a ref name (symbolic).
    pub target: String,
}

impl RefEntry {
    /// A ref and its value.
    pub fn new(name: &RefName, value: &RefValue) -> RefEntry {
        let (kind, target) = match value {
            RefValue::Direct(id) => (RefKind::Direct, id.to_string()),
            RefValue::Symbolic(target) => (RefKind::Symbolic, target.as_str().to_owned()),
        };
        RefEntry {
            name: name.as_str().to_owned(),
            kind,
            target,
        }
    }
}

/// The names a checkpoint's own keys take: header fields of the same name are not repeated.
const SUMMARY_KEYS: [&str; 8] = [
    "checkpoint",
    "parents",
    "affix",
    "session",
    "date",
    "message",
    "partitions",
    "events",
];

/// A checkpoint: each entry of `GET /log`, a line of `retro log --json`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CheckpointSummary {
    /// Its id.
    pub checkpoint: String,
    /// Its parents: none for a root, one usually, more for a merge.
    pub parents: Vec<String>,
    /// The affix (the events it adds, by partition).
    pub affix: String,
    /// The session that made it.
    pub session: String,
    /// When it was made (RFC 3339), if it says.
    pub date: Option<String>,
    /// The command payload (JSON when it is JSON, else a string).
    pub message: Value,
    /// Other header fields, by key (as strings); one named like a key above is left out.
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
    /// Events added, by partition (absent in a decoded object, `GET /objects/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<BTreeMap<String, usize>>,
}

impl CheckpointSummary {
    /// A checkpoint, with its affix's counts when given.
    pub fn new(id: &ObjectId, checkpoint: &Checkpoint, affix: Option<&Affix>) -> Self {
        CheckpointSummary {
            checkpoint: id.to_string(),
            parents: checkpoint
                .parents()
                .iter()
                .map(ToString::to_string)
                .collect(),
            affix: checkpoint.affix().to_string(),
            session: checkpoint.session().to_owned(),
            date: checkpoint.field("date").map(str::to_owned),
            message: message_value(checkpoint.message()),
            fields: checkpoint
                .fields()
                .filter(|(key, _)| !SUMMARY_KEYS.contains(&key.as_str()))
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            partitions: affix.map(|affix| {
                affix
                    .partitions()
                    .map(|(p, ids)| (p.to_string(), ids.len()))
                    .collect()
            }),
        }
    }
}

/// A checkpoint with its events: `GET /checkpoints/{rev}`, `retro show --json`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CheckpointView {
    /// The checkpoint.
    #[serde(flatten)]
    pub checkpoint: CheckpointSummary,
    /// Its events, in affix order.
    pub events: Vec<AffixEvent>,
}

impl CheckpointView {
    /// Reads a checkpoint, its affix and its events.
    pub fn read(depot: &Depot, id: &ObjectId) -> Result<CheckpointView, depot::Error> {
        CheckpointView::read_with(depot, id, |partition, event_id, event| {
            Ok(vec![AffixEvent {
                partition: partition.to_string(),
                event: event_id.to_string(),
                name: event.name().to_string(),
                data: message_value(event.data()),
                schema_version: shown_version(event.version()),
                upcast: None,
            }])
        })
    }

    /// [`CheckpointView::read`] with its events upcast by `upcasters` (`retro show --upcast`,
    /// `GET /checkpoints/{rev}?upcast=true`).
    pub fn read_upcast(
        depot: &Depot,
        id: &ObjectId,
        upcasters: &engine::Upcasters,
    ) -> Result<CheckpointView, UpcastReadError> {
        CheckpointView::read_with(depot, id, |partition, event_id, event| {
            // The event's position in its partition is not at hand here: 0.
            Ok(upcast_parts(upcasters, event_id, partition, 0, event)?
                .into_iter()
                .map(|(name, version, data, upcast)| AffixEvent {
                    partition: partition.to_string(),
                    event: event_id.to_string(),
                    name,
                    data,
                    schema_version: Some(version),
                    upcast,
                })
                .collect())
        })
    }

    fn read_with<E: From<depot::Error>>(
        depot: &Depot,
        id: &ObjectId,
        mut shown: impl FnMut(
            &depot::PartitionName,
            ObjectId,
            &depot::Event,
        ) -> Result<Vec<AffixEvent>, E>,
    ) -> Result<CheckpointView, E> {
        let checkpoint = depot.read_checkpoint(id)?;
        let affix = depot.read_affix(&checkpoint.affix())?;
        let mut events = Vec::new();
        for (partition, ids) in affix.partitions() {
            for event_id in ids {
                let event = depot.read_event(event_id)?;
                events.extend(shown(partition, *event_id, &event)?);
            }
        }
        Ok(CheckpointView {
            checkpoint: CheckpointSummary::new(id, &checkpoint, Some(&affix)),
            events,
        })
    }
}

/// An event of a [`CheckpointView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AffixEvent {
    /// Its partition.
    pub partition: String,
    /// The event object's id.
    pub event: String,
    /// Its name (`Deposited`).
    pub name: String,
    /// Its data (JSON when it is JSON, else a string).
    pub data: Value,
    /// Its schema version, when not 1 (stored), or always when upcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Where an upcast event came from (`?upcast=true`, `--upcast`): absent when it is the
    /// stored event as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcast: Option<UpcastOrigin>,
}

/// The stored event an upcast one was made from: its name and schema version (its id is the
/// entry's `event`, unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpcastOrigin {
    /// The stored event's name.
    pub name: String,
    /// The stored event's schema version.
    pub version: u32,
}

/// One event an upcast read shows: name, schema version, data, and where it came from when the
/// upcasters changed it.
type UpcastPart = (String, u32, Value, Option<UpcastOrigin>);

/// The schema version as listings show it: absent for 1.
fn shown_version(version: u32) -> Option<u32> {
    (version != 1).then_some(version)
}

/// The events `name`/`version`/`data` (stored event `id`, event `position` of `partition`) is
/// read as under `upcasters`: `(name, schema version, data, origin)`, the origin set when the
/// upcasters changed it.
fn upcast_parts(
    upcasters: &engine::Upcasters,
    id: ObjectId,
    partition: &depot::PartitionName,
    position: u64,
    event: &depot::Event,
) -> Result<Vec<UpcastPart>, engine::UpcastError> {
    let data = message_value(event.data());
    let stored = engine::UpcastEvent {
        name: event.name().to_string(),
        version: event.version(),
        data,
    };
    let results = upcasters.upcast(id, partition, position, stored.clone())?;
    let unchanged = results.len() == 1 && results[0] == stored;
    Ok(results
        .into_iter()
        .map(|e| {
            let origin = (!unchanged).then(|| UpcastOrigin {
                name: stored.name.clone(),
                version: stored.version,
            });
            (e.name, e.version, e.data, origin)
        })
        .collect())
}

/// An event with its place in history: `GET /events`, `retro events --json`, and in event
/// streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventEntry {
    /// Its partition.
    pub partition: String,
    /// Its 1-based position in the partition.
    pub version: u64,
    /// The event object's id.
    pub event: String,
    /// Its name.
    pub name: String,
    /// Its data (JSON when it is JSON, else a string).
    pub data: Value,
    /// The checkpoint that added it.
    pub checkpoint: String,
    /// The checkpoint's date.
    pub date: Option<String>,
    /// The checkpoint's session.
    pub session: String,
    /// Its schema version, when not 1 (stored), or always when upcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// Where an upcast event came from (`?upcast=true`, `--upcast`): absent when it is the
    /// stored event as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcast: Option<UpcastOrigin>,
}

/// Why events could not be read upcast: the depot failed, or an event cannot be upcast.
#[derive(Debug, thiserror::Error)]
pub enum UpcastReadError {
    /// The depot failed.
    #[error(transparent)]
    Depot(#[from] depot::Error),
    /// A stored event cannot be upcast.
    #[error(transparent)]
    Upcast(#[from] engine::UpcastError),
}

impl EventEntry {
    /// The entries `record` is read as under `upcasters` (`--upcast`, `?upcast=true`): one for
    /// an event at its newest version (with `schema_version`), one or more with `upcast` (the
    /// stored name and version) otherwise. `event` stays the stored event's id.
    pub fn upcast(
        record: &EventRecord,
        upcasters: &engine::Upcasters,
    ) -> Result<Vec<EventEntry>, engine::UpcastError> {
        let plain = EventEntry::from(record);
        Ok(upcast_parts(
            upcasters,
            record.id,
            &record.partition,
            record.version,
            &record.event,
        )?
        .into_iter()
        .map(|(name, version, data, upcast)| EventEntry {
            name,
            data,
            schema_version: Some(version),
            upcast,
            ..plain.clone()
        })
        .collect())
    }
}

impl From<&EventRecord> for EventEntry {
    fn from(record: &EventRecord) -> EventEntry {
        EventEntry {
            partition: record.partition.to_string(),
            version: record.version,
            event: record.id.to_string(),
            name: record.event.name().to_string(),
            data: message_value(record.event.data()),
            checkpoint: record.checkpoint.to_string(),
            date: record.date.map(depot::format_date),
            session: record.session.clone(),
            schema_version: shown_version(record.event.version()),
            upcast: None,
        }
    }
}

/// A partition and its event count: `GET /partitions`, `retro partitions --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionEntry {
    /// Its name.
    pub partition: String,
    /// Events in it.
    pub events: u64,
    /// Its newest aggregate snapshot (derived data), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotEntry>,
}

/// A partition's newest aggregate snapshot: `retro partitions --json`, `GET /partitions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotEntry {
    /// The partition version it folds.
    pub version: u64,
    /// The domain version that produced it.
    pub domain: String,
    /// Bytes of state.
    pub bytes: u64,
    /// The checkpoint it was taken at.
    pub checkpoint: String,
}

impl SnapshotEntry {
    /// The newest snapshot of `partition` (of any domain version), if any.
    pub fn newest(depot: &depot::Depot, partition: &depot::PartitionName) -> Option<SnapshotEntry> {
        depot
            .snapshot_infos(partition)
            .into_iter()
            .max_by_key(|info| info.version)
            .map(|info| SnapshotEntry {
                version: info.version,
                domain: info.domain,
                bytes: info.bytes,
                checkpoint: info.checkpoint.to_string(),
            })
    }
}

/// A decoded object: `GET /objects/{id}` with `Accept: application/json`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectView {
    /// An event.
    Event(EventObject),
    /// An affix: the events a checkpoint adds, by partition.
    Affix(AffixObject),
    /// A checkpoint (without its affix's counts).
    Checkpoint(CheckpointObject),
    /// A data object: a sealed event's payload.
    Data(DataObject),
}

/// A data object (the payload of a sealed event).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DataObject {
    /// Its id.
    pub id: String,
    /// Its JSON (a string when it is not JSON).
    pub data: Value,
}

/// An event object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventObject {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its data (JSON when it is JSON, else a string).
    pub data: Value,
    /// Its schema version, when not 1 (`json;v=<N>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}

/// An affix object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AffixObject {
    /// Its id.
    pub id: String,
    /// Its partitions, in order, with their event ids.
    pub partitions: Vec<AffixPartition>,
}

/// One partition of an affix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AffixPartition {
    /// The partition.
    pub partition: String,
    /// Its events' ids, in order.
    pub events: Vec<String>,
}

/// A checkpoint object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CheckpointObject {
    /// Its id.
    pub id: String,
    /// The checkpoint.
    #[serde(flatten)]
    pub checkpoint: CheckpointSummary,
}

impl ObjectView {
    /// A decoded object and its id.
    pub fn new(id: &ObjectId, object: &Object) -> ObjectView {
        match object {
            Object::Event(event) => ObjectView::Event(EventObject {
                id: id.to_string(),
                name: event.name().to_string(),
                data: message_value(event.data()),
                schema_version: shown_version(event.version()),
            }),
            Object::Affix(affix) => ObjectView::Affix(AffixObject {
                id: id.to_string(),
                partitions: affix
                    .partitions()
                    .map(|(p, ids)| AffixPartition {
                        partition: p.to_string(),
                        events: ids.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            }),
            Object::Checkpoint(checkpoint) => ObjectView::Checkpoint(CheckpointObject {
                id: id.to_string(),
                checkpoint: CheckpointSummary::new(id, checkpoint, None),
            }),
            Object::Data(data) => ObjectView::Data(DataObject {
                id: id.to_string(),
                data: message_value(data.json()),
            }),
        }
    }
}

/// What an event stream delivers (the `data` of `GET /watch`'s events), and a line of `retro
/// watch --json`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delivered {
    /// A checkpoint and its matching events (`event: checkpoint`).
    Checkpoint(DeliveredCheckpoint),
    /// `HEAD` moved to a head that does not descend from the stream's position
    /// (`event: non_fast_forward`); delivery resumes after `base`.
    NonFastForward(NonFastForward),
}

/// A checkpoint delivered by an event stream.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveredCheckpoint {
    /// Its id.
    pub checkpoint: String,
    /// Its first parent.
    pub parent: Option<String>,
    /// Its date.
    pub date: Option<String>,
    /// Its session.
    pub session: String,
    /// The events matching the stream's glob (never empty).
    pub events: Vec<EventEntry>,
}

/// A non-fast-forward move seen by an event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NonFastForward {
    /// The position the stream had reached.
    pub from: String,
    /// The new head.
    pub head: Option<String>,
    /// The newest checkpoint both histories share (`null`: none; delivery restarts from the
    /// first checkpoint).
    pub base: Option<String>,
}

impl From<&Delivery> for Delivered {
    fn from(delivery: &Delivery) -> Delivered {
        match delivery {
            Delivery::Checkpoint {
                id,
                parent,
                date,
                session,
                events,
            } => Delivered::Checkpoint(DeliveredCheckpoint {
                checkpoint: id.to_string(),
                parent: parent.map(|p| p.to_string()),
                date: date.map(depot::format_date),
                session: session.clone(),
                events: events.iter().map(EventEntry::from).collect(),
            }),
            Delivery::NonFastForward { from, head, base } => {
                Delivered::NonFastForward(NonFastForward {
                    from: from.to_string(),
                    head: head.map(|h| h.to_string()),
                    base: base.map(|b| b.to_string()),
                })
            }
        }
    }
}

/// The depot's counts: `GET /admin/stats` (admin class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// `HEAD`'s checkpoint, `null` while the depot is empty.
    pub head: Option<String>,
    /// Refs, `HEAD` included.
    pub refs: usize,
    /// Objects in the object store (reachable or not).
    pub objects: u64,
    /// Partitions on `HEAD`'s branch.
    pub partitions: usize,
    /// Events on `HEAD`'s branch, over all partitions.
    pub events: u64,
}

impl Stats {
    /// Counts them (reads every object id: proportional to the store's size).
    pub fn read(depot: &Depot) -> Result<Stats, depot::Error> {
        let mut objects = 0u64;
        depot.objects().for_each_id(&mut |_| {
            objects += 1;
            Ok(())
        })?;
        let partitions = depot.partitions("**")?;
        Ok(Stats {
            head: depot.head()?.map(|h| h.to_string()),
            refs: depot.list_refs("")?.len(),
            objects,
            partitions: partitions.len(),
            events: partitions.iter().map(|(_, n)| n).sum(),
        })
    }
}

/// One durable consumer (`refs/consumers/NAME`) and how far it is behind `HEAD`: what `retro
/// status --json` lists under `consumers`, and what `GET /metrics` reports as
/// `retro_consumer_lag_checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerStatus {
    /// Its name: the ref without `refs/consumers/`.
    pub name: String,
    /// The checkpoint it has read up to (`null`: none yet, it starts at the beginning).
    pub position: Option<String>,
    /// Checkpoints of `HEAD`'s first-parent history after its position (`null`: its position is
    /// not on that history, e.g. after a non-fast-forward move).
    pub behind: Option<u64>,
}

impl ConsumerStatus {
    /// Every durable consumer of `depot`, by name. Walks `HEAD`'s first parents back to each
    /// consumer's position: proportional to the lag (to the whole history for a consumer that
    /// has read nothing).
    pub fn read_all(depot: &Depot) -> Result<Vec<ConsumerStatus>, depot::Error> {
        const PREFIX: &str = "refs/consumers/";
        let head = depot.head()?;
        let mut consumers = Vec::new();
        for (name, value) in depot.list_refs(PREFIX)? {
            let position = value.id();
            let behind = match (head, position) {
                (Some(head), Some(position)) if depot.on_head_history(&position)? => {
                    Some(depot.first_parents_since(head, Some(position))?.len() as u64)
                }
                (Some(_), Some(_)) => None,
                (Some(head), None) => Some(depot.first_parents_since(head, None)?.len() as u64),
                (None, _) => Some(0),
            };
            consumers.push(ConsumerStatus {
                name: name
                    .as_str()
                    .strip_prefix(PREFIX)
                    .unwrap_or(name.as_str())
                    .to_owned(),
                position: position.map(|p| p.to_string()),
                behind,
            });
        }
        Ok(consumers)
    }
}

/// The body of `POST /redact` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactRequest {
    /// The events (or checkpoints, for their commands) to redact: ids or unique prefixes.
    pub events: Vec<String>,
    /// Why: one line, recorded in the redaction checkpoint and every tombstone.
    pub reason: String,
}

/// What a redaction did: `POST /redact`'s answer and `retro redact --json`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Redacted {
    /// The ids redacted by this call.
    pub redacted: Vec<String>,
    /// Of those, plain (go-retro format) events: their ids can no longer be verified.
    pub unverifiable: Vec<String>,
    /// Ids that were redacted already (left as they were).
    pub already: Vec<String>,
    /// Pack records overwritten and loose files deleted.
    pub records_erased: usize,
    /// The redaction checkpoints committed (this call's, and any an interrupted one left).
    pub checkpoints: Vec<String>,
}

impl Redacted {
    /// The answer for a depot's report.
    pub fn new(report: &depot::RedactReport) -> Redacted {
        let strings = |ids: &[ObjectId]| ids.iter().map(ToString::to_string).collect();
        Redacted {
            redacted: strings(&report.redacted),
            unverifiable: strings(&report.unverifiable),
            already: strings(&report.already),
            records_erased: report.records_erased,
            checkpoints: strings(&report.checkpoints),
        }
    }
}

/// One projection: its live generation, the one rebuilding beside it, and what is parked. `GET
/// /projections` answers a list of them, `retro project status --json` prints one a line, and
/// `GET /metrics` reports the live generation's `behind` as `retro_projection_lag_checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectionView {
    /// Its name (its refs are `refs/projections/NAME/…`).
    pub name: String,
    /// Its partition globs (empty when the domain manifest does not declare it).
    pub partitions: Vec<String>,
    /// Whether the domain manifest declares it.
    pub declared: bool,
    /// The live generation (`null`: it never ran).
    pub live: Option<GenerationView>,
    /// The generation rebuilding beside the live one (`null`: none).
    pub rebuilding: Option<GenerationView>,
    /// Generations stopped on a batch that kept failing, with that batch.
    pub parked: Vec<ParkedView>,
}

/// One generation of a projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GenerationView {
    /// Its number.
    pub generation: u64,
    /// The last checkpoint it acknowledged (`null`: none yet).
    pub position: Option<String>,
    /// Checkpoints of `HEAD`'s first-parent history after its position (`null`: its position is
    /// not on that history).
    pub behind: Option<u64>,
}

/// A parked generation and the batch it failed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParkedView {
    /// The generation.
    pub generation: u64,
    /// The failing batch's checkpoint (`null`: the switch notice of a rebuild).
    pub checkpoint: Option<String>,
    /// The failing events: the one the handler named, else the whole batch.
    pub events: Vec<ParkedEventView>,
    /// The last attempt's error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was parked (RFC 3339, UTC).
    pub at: String,
}

/// An event of a parked batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParkedEventView {
    /// The event's id.
    pub id: String,
    /// Its partition.
    pub partition: String,
    /// Its position in the partition.
    pub version: u64,
    /// Its name.
    pub name: String,
}

impl ProjectionView {
    /// Every projection the engine's manifest declares or its depot has state for, by name.
    pub fn read_all(
        engine: &engine::Engine,
    ) -> Result<Vec<ProjectionView>, engine::projection::ProjectionError> {
        Ok(
            engine::projection::status(engine.depot(), engine.manifest())?
                .iter()
                .map(ProjectionView::from)
                .collect(),
        )
    }
}

impl From<&engine::projection::GenerationStatus> for GenerationView {
    fn from(status: &engine::projection::GenerationStatus) -> GenerationView {
        GenerationView {
            generation: status.generation,
            position: status.position.map(|p| p.to_string()),
            behind: status.behind,
        }
    }
}

impl From<&engine::projection::ProjectionStatus> for ProjectionView {
    fn from(status: &engine::projection::ProjectionStatus) -> ProjectionView {
        ProjectionView {
            name: status.name.clone(),
            partitions: status.partitions.clone(),
            declared: status.declared,
            live: status.live.as_ref().map(GenerationView::from),
            rebuilding: status.rebuilding.as_ref().map(GenerationView::from),
            parked: status
                .parked
                .iter()
                .map(|p| ParkedView {
                    generation: p.generation,
                    checkpoint: p.checkpoint.clone(),
                    events: p
                        .events
                        .iter()
                        .map(|e| ParkedEventView {
                            id: e.id.clone(),
                            partition: e.partition.clone(),
                            version: e.version,
                            name: e.name.clone(),
                        })
                        .collect(),
                    error: p.error.clone(),
                    attempts: p.attempts,
                    at: p.at.clone(),
                })
                .collect(),
        }
    }
}

/// One branch: `GET /branches` (an array of them), `POST /branches` (the one created); the
/// shape of `retro branch --list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BranchEntry {
    /// Its short name (`feature`).
    #[schema(example = "feature")]
    pub name: String,
    /// Its ref (`refs/heads/feature`).
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The checkpoint it points at.
    pub checkpoint: String,
    /// Whether `HEAD` points at it.
    pub current: bool,
}

impl BranchEntry {
    /// Branch `name` (a ref under `refs/heads/`) at `checkpoint`.
    pub fn new(name: &RefName, checkpoint: &ObjectId, current: bool) -> BranchEntry {
        BranchEntry {
            name: name
                .as_str()
                .strip_prefix("refs/heads/")
                .unwrap_or(name.as_str())
                .to_owned(),
            ref_name: name.to_string(),
            checkpoint: checkpoint.to_string(),
            current,
        }
    }
}

/// `POST /branches`: a new branch, as `retro branch NAME [REV]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchRequest {
    /// `NAME` or `refs/heads/NAME`.
    #[schema(example = "feature")]
    pub name: String,
    /// Where it starts: any revision (default `HEAD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "HEAD~1")]
    pub at: Option<String>,
}

/// `POST /merge`: merge a revision into a branch, as `retro merge REV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// What to merge: a branch, a ref or any revision.
    #[schema(example = "feature")]
    pub rev: String,
    /// The branch to merge into, `NAME` or `refs/heads/NAME` (default: the one `HEAD` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "master")]
    pub into: Option<String>,
}

/// One replayed checkpoint of a merge by replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplayedEntry {
    /// The other side's checkpoint whose command was re-run.
    pub from: String,
    /// The checkpoint the re-run wrote on the branch.
    pub checkpoint: String,
}

/// What `POST /merge` did; the shape of `retro merge --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MergeResult {
    /// `up-to-date`, `fast-forward`, `merged` (a two-parent merge checkpoint) or `replayed`.
    #[schema(example = "merged")]
    pub outcome: String,
    /// The branch merged into.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// Its head before (`null`: it was unborn).
    pub from: Option<String>,
    /// Its head after.
    pub to: String,
    /// `merged`: how many events the merge checkpoint's affix brings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<usize>,
    /// `merged`: the partitions they are in, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<String>>,
    /// `replayed`: each re-run checkpoint, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Vec<ReplayedEntry>>,
}

impl MergeResult {
    /// The body of `outcome`, a merge into `branch`.
    pub fn new(branch: &RefName, outcome: &engine::merge::MergeOutcome) -> MergeResult {
        use engine::merge::MergeOutcome;
        let mut body = MergeResult {
            outcome: String::new(),
            ref_name: branch.to_string(),
            from: None,
            to: String::new(),
            events: None,
            partitions: None,
            replayed: None,
        };
        match outcome {
            MergeOutcome::UpToDate { head } => {
                body.outcome = "up-to-date".to_owned();
                body.from = Some(head.to_string());
                body.to = head.to_string();
            }
            MergeOutcome::FastForward { from, to } => {
                body.outcome = "fast-forward".to_owned();
                body.from = from.map(|f| f.to_string());
                body.to = to.to_string();
            }
            MergeOutcome::Merged {
                checkpoint,
                from,
                events,
                partitions,
                ..
            } => {
                body.outcome = "merged".to_owned();
                body.from = Some(from.to_string());
                body.to = checkpoint.to_string();
                body.events = Some(*events);
                body.partitions = Some(partitions.clone());
            }
            MergeOutcome::Replayed { from, to, replayed } => {
                body.outcome = "replayed".to_owned();
                body.from = Some(from.to_string());
                body.to = to.to_string();
                body.replayed = Some(
                    replayed
                        .iter()
                        .map(|(from, new)| ReplayedEntry {
                            from: from.to_string(),
                            checkpoint: new.to_string(),
                        })
                        .collect(),
                );
            }
        }
        body
    }
}

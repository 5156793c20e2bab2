//! Redaction (verifiable erasure): sealing new events, reading an event through the one
//! resolver that returns its data or a tombstone, and erasing the data of redacted events.
//!
//! A sealed event hashes only the id of a salted `data` object (`docs/format.md`), so erasing
//! that object leaves every id valid. A redaction goes in three steps, each safe to re-run:
//! 1. its *intent* is appended to the depot's `redactions` file and `fdatasync`ed (from then on
//!    every read treats the data as gone);
//! 2. under the depot lock (so gc cannot copy a record that is being erased), every pack record of
//!    the data (or of a plain event itself) is overwritten in place with zeros, a loose copy is
//!    deleted, and the aggregate snapshots are erased;
//! 3. a redaction checkpoint naming the events, the reason, the session and the date is committed
//!    on `HEAD`'s branch, and a `done` line closes the intent.
//!
//! A crash anywhere leaves an intent without `done`: the next [`Depot::redact`] or
//! [`Depot::finish_redactions`] finishes it (see `docs/crash-safety.md`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Depot, Error, Layout};
use crate::hash::ObjectId;
use crate::name::{FieldKey, FieldValue};
use crate::object::{format_date, parse_date, Data, EncodedObject, Event, EventName, Object};
use crate::storage::OpenOptions;

/// The checkpoint field that marks a redaction checkpoint; its value is the reason.
pub const REDACTION_FIELD: &str = "redaction";
/// The checkpoint field naming the redaction's batch (ties the checkpoint to its intent).
pub const REDACTION_BATCH_FIELD: &str = "redaction-batch";
/// The event name a redacted plain (go-retro format) event reads with: its own name was in
/// the erased bytes.
pub const REDACTED_EVENT_NAME: &str = "redacted";

/// One redacted event, as the `redactions` file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// The event.
    pub event: ObjectId,
    /// What was erased: the sealed event's data object, or the plain event itself.
    pub erased: ObjectId,
    /// True for a sealed event (its id still verifies); false for a plain one (its bytes are
    /// gone: "redacted, unverifiable").
    pub sealed: bool,
    /// Why.
    pub reason: String,
    /// When it was redacted.
    pub at: DateTime<Utc>,
    /// The session that redacted it.
    pub session: String,
    /// The batch (one `redact` call) it belongs to.
    pub batch: String,
    /// The redaction checkpoint, once committed and recorded.
    pub checkpoint: Option<ObjectId>,
}

impl Redaction {
    /// The tombstone a redacted event reads as: `{"redacted":true,"reason":…,"at":…}`.
    pub fn tombstone(&self) -> Vec<u8> {
        format!(
            "{{\"redacted\":true,\"reason\":{},\"at\":\"{}\"}}",
            json_string(&self.reason),
            format_date(self.at)
        )
        .into_bytes()
    }
}

/// What [`Depot::redact`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactReport {
    /// Events redacted by this call (sealed and plain).
    pub redacted: Vec<ObjectId>,
    /// Of those, plain events (go-retro format): their ids can no longer be verified.
    pub unverifiable: Vec<ObjectId>,
    /// Events that were redacted already (left as they were).
    pub already: Vec<ObjectId>,
    /// Pack records overwritten and loose files deleted, over every batch finished.
    pub records_erased: usize,
    /// The redaction checkpoints committed (this call's, and any an interrupted one left).
    pub checkpoints: Vec<ObjectId>,
}

/// The redactions a depot knows, by event and by erased object.
#[derive(Debug, Default)]
pub(crate) struct Redactions {
    by_event: HashMap<ObjectId, Redaction>,
    erased: HashSet<ObjectId>,
}

impl Redactions {
    fn insert(&mut self, redaction: Redaction) {
        self.erased.insert(redaction.erased);
        self.by_event.insert(redaction.event, redaction);
    }

    fn is_empty(&self) -> bool {
        self.by_event.is_empty()
    }
}

/// Escapes `text` as a JSON string (the depot has no JSON library).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// 16 random bytes from the OS.
pub(crate) fn os_random() -> Result<[u8; 16], Error> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("read", "/dev/urandom"))?;
    Ok(bytes)
}

/// Seals `event`: its data goes into a new salted data object; the sealed event (resolved, so
/// callers still see the data) and the data object's encoding come back.
pub(crate) fn seal(event: &Event) -> Result<(Event, EncodedObject), Error> {
    if event.sealed_data().is_some() {
        return Err(Error::Invalid(
            "an event to commit must carry its data, not a sealed reference".to_owned(),
        ));
    }
    let data = Object::Data(Data::new(os_random()?, event.data())).to_encoded();
    let sealed = Event::new_sealed(event.name().clone(), data.id())
        .with_version(event.version())
        .with_resolved_data(event.data());
    Ok((sealed, data))
}

/// Seals a checkpoint's inline command: the command goes into a new salted data object, the
/// checkpoint gets `message-data <id>` and an empty message (resolved, so callers still see it).
pub(crate) fn seal_message(
    checkpoint: &crate::object::Checkpoint,
) -> Result<(crate::object::Checkpoint, EncodedObject), Error> {
    let command = checkpoint.stored_message().to_vec();
    let data = Object::Data(Data::new(os_random()?, command.clone())).to_encoded();
    let mut fields: BTreeMap<FieldKey, FieldValue> = checkpoint
        .fields()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    fields.insert(
        FieldKey::new(crate::object::MESSAGE_DATA_KEY)?,
        FieldValue::new(&data.id().to_string())?,
    );
    let sealed = crate::object::Checkpoint::with_fields(
        checkpoint.affix(),
        checkpoint.parents().to_vec(),
        fields,
        Vec::new(),
    )
    .with_resolved_message(command);
    Ok((sealed, data))
}

/// Parses the `redactions` file: intent lines and done lines; a torn last line (no newline) is
/// ignored, a line that does not parse is skipped and named in the returned warnings.
fn parse_log(text: &str) -> (Vec<Redaction>, Vec<String>) {
    let mut intents = Vec::new();
    let mut done: HashMap<String, ObjectId> = HashMap::new();
    let mut warnings = Vec::new();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for line in complete.lines() {
        let parsed = (|| -> Option<()> {
            let mut parts = line.splitn(8, ' ');
            match parts.next()? {
                "intent" => {
                    let batch = parts.next()?.to_owned();
                    let event: ObjectId = parts.next()?.parse().ok()?;
                    let erased: ObjectId = parts.next()?.parse().ok()?;
                    let sealed = match parts.next()? {
                        "sealed" => true,
                        "plain" => false,
                        _ => return None,
                    };
                    let at = parse_date(parts.next()?).ok()?;
                    let session = parts.next()?.to_owned();
                    let reason = parts.next()?.to_owned();
                    intents.push(Redaction {
                        event,
                        erased,
                        sealed,
                        reason,
                        at,
                        session,
                        batch,
                        checkpoint: None,
                    });
                }
                "done" => {
                    let batch = parts.next()?.to_owned();
                    let checkpoint: ObjectId = parts.next()?.parse().ok()?;
                    done.insert(batch, checkpoint);
                }
                _ => return None,
            }
            Some(())
        })();
        if parsed.is_none() {
            warnings.push(format!(
                "the redactions file has a line that does not parse, skipped: {line}"
            ));
        }
    }
    for intent in &mut intents {
        intent.checkpoint = done.get(&intent.batch).copied();
    }
    (intents, warnings)
}

impl Depot {
    /// Where this depot's redaction log lives (none in memory or a backend: kept per process).
    pub(super) fn redactions_file(&self) -> Option<PathBuf> {
        match self.layout {
            Layout::Native => self.root.as_ref().map(|r| r.join("redactions")),
            Layout::GoRetro => self.root.as_ref().map(|r| r.join(".retro-redactions")),
            _ => None,
        }
    }

    /// Re-reads the redaction log (another process may have redacted since this one opened).
    pub(super) fn reload_redactions(&self) -> Result<(), Error> {
        let Some(path) = self.redactions_file() else {
            return Ok(());
        };
        if !self.storage.is_file(&path) {
            return Ok(());
        }
        let bytes = self.storage.read(&path).map_err(Error::io("read", &path))?;
        let (intents, warnings) = parse_log(&String::from_utf8_lossy(&bytes));
        for warning in warnings {
            self.warn(warning);
        }
        let mut set = self.redactions.write().expect("redactions lock poisoned");
        for intent in intents {
            set.insert(intent);
        }
        Ok(())
    }

    /// Whether events committed to this depot are sealed (redactable).
    pub fn seals_events(&self) -> bool {
        self.seal_events.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chooses whether later commits write sealed events (a native depot reads it from its
    /// `config`: `events sealed`; go-retro depots always write plain events).
    pub fn set_seal_events(&self, seal: bool) -> Result<(), Error> {
        if seal && self.layout == Layout::GoRetro {
            return Err(Error::Invalid(
                "a go-retro depot keeps go-retro's plain event format".to_owned(),
            ));
        }
        self.seal_events
            .store(seal, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Takes `other`'s redactions as this depot's own (a mirror that reads `other`'s objects
    /// through: the engine's replay), so that what `other` erased reads as tombstones here too.
    pub fn adopt_redactions(&self, other: &Depot) {
        let theirs: Vec<Redaction> = other.redactions();
        let mut set = self.redactions.write().expect("redactions lock poisoned");
        for redaction in theirs {
            set.insert(redaction);
        }
    }

    /// Chooses the event format of later commits and, in a native depot, records it in its
    /// `config` (`events sealed` or `events plain`, replaced atomically). Objects already
    /// written stay as they are. A backend or memory depot keeps the choice for this process.
    pub fn configure_events(&self, sealed: bool) -> Result<(), Error> {
        self.set_seal_events(sealed)?;
        if let (Layout::Native, Some(root)) = (self.layout, &self.root) {
            let line = if sealed {
                super::SEALED_LINE
            } else {
                super::PLAIN_LINE
            };
            let config = root.join("config");
            crate::fsutil::write_atomic(
                &*self.storage,
                &config,
                format!("{}\n{line}\n", super::FORMAT_LINE).as_bytes(),
            )
            .map_err(Error::io("write", &config))?;
        }
        Ok(())
    }

    /// The redaction of `event`, if it was redacted.
    pub fn redaction_of(&self, event: &ObjectId) -> Option<Redaction> {
        let set = self.redactions.read().expect("redactions lock poisoned");
        set.by_event.get(event).cloned()
    }

    /// Every redaction this depot knows, oldest batch first.
    pub fn redactions(&self) -> Vec<Redaction> {
        let set = self.redactions.read().expect("redactions lock poisoned");
        let mut all: Vec<Redaction> = set.by_event.values().cloned().collect();
        all.sort_by(|a, b| (a.at, &a.batch, a.event).cmp(&(b.at, &b.batch, b.event)));
        all
    }

    /// Whether `id` is an object whose bytes were erased (a data object, or a plain event).
    pub fn is_erased(&self, id: &ObjectId) -> bool {
        let set = self.redactions.read().expect("redactions lock poisoned");
        set.erased.contains(id)
    }

    /// The tombstone event a plain event `id` reads as once erased, if it was.
    pub(super) fn erased_plain_event(&self, id: &ObjectId) -> Option<Event> {
        let set = self.redactions.read().expect("redactions lock poisoned");
        if set.is_empty() {
            return None;
        }
        let redaction = set.by_event.get(id).filter(|r| !r.sealed)?;
        let name = EventName::new(REDACTED_EVENT_NAME).expect("a valid event name");
        Some(Event::new(name, redaction.tombstone()))
    }

    /// The one resolver every read of an event goes through: a plain event as it is; a sealed
    /// event with its data read (verified by id) from its data object, or with its tombstone
    /// once redacted.
    pub fn resolve_event(&self, id: &ObjectId, event: Event) -> Result<Event, Error> {
        let Some(data_id) = event.sealed_data() else {
            return Ok(event);
        };
        if let Some(redaction) = self.redaction_of(id) {
            return Ok(event.with_resolved_data(redaction.tombstone()));
        }
        let json = self.read_data(&data_id, || {
            format!("the data of sealed event {id}, which no redaction covers")
        })?;
        Ok(event.with_resolved_data(json))
    }

    /// The JSON a data object holds (verified by id); `missing` says whose data it is when the
    /// object is not there.
    fn read_data(
        &self,
        data_id: &ObjectId,
        missing: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, Error> {
        match self.read_decoded(data_id) {
            Ok(Object::Data(data)) => Ok(data.json().to_vec()),
            Ok(other) => Err(Error::WrongKind {
                id: *data_id,
                expected: crate::object::Kind::Data,
                found: other.kind(),
            }),
            Err(Error::MissingObject { .. }) => Err(Error::MissingObject {
                id: *data_id,
                context: missing(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The one resolver of a checkpoint's command: a checkpoint with a `message-data` field
    /// gets the command read (verified by id) from that data object, or its tombstone once
    /// redacted; any other checkpoint is returned as it is.
    pub fn resolve_checkpoint(
        &self,
        id: &ObjectId,
        checkpoint: crate::object::Checkpoint,
    ) -> Result<crate::object::Checkpoint, Error> {
        let Some(data_id) = checkpoint.message_data() else {
            return Ok(checkpoint);
        };
        if let Some(redaction) = self.redaction_of(id) {
            return Ok(checkpoint.with_resolved_message(redaction.tombstone()));
        }
        let json = self.read_data(&data_id, || {
            format!("the command of checkpoint {id}, which no redaction covers")
        })?;
        Ok(checkpoint.with_resolved_message(json))
    }

    /// Reads and decodes any object, events resolved as [`Depot::read_event`] does (a plain
    /// event that was erased reads as its tombstone). An erased data object is missing, with a
    /// context that says it was redacted.
    pub fn read_resolved(&self, id: &ObjectId) -> Result<Object, Error> {
        if let Some(tombstone) = self.erased_plain_event(id) {
            return Ok(Object::Event(tombstone));
        }
        match self.read_decoded(id)? {
            Object::Event(event) => Ok(Object::Event(self.resolve_event(id, event)?)),
            Object::Checkpoint(c) => Ok(Object::Checkpoint(self.resolve_checkpoint(id, c)?)),
            other => Ok(other),
        }
    }

    /// Redacts `events`: makes their data unrecoverable from every file of the depot by the time
    /// it returns, and records a redaction checkpoint (fields `redaction <reason>` and
    /// `redaction-batch <batch>`, the event ids as its message, one a line) on `HEAD`'s branch.
    /// Every id, unknown or not an event, is checked before anything is written. An event
    /// redacted already is left as it was. Finishes any redaction a crash interrupted.
    pub fn redact(
        &self,
        events: &[ObjectId],
        reason: &str,
        session: &str,
    ) -> Result<RedactReport, Error> {
        let reason_value = FieldValue::new(reason).map_err(|e| {
            Error::Invalid(format!("the redaction reason is not one line of text: {e}"))
        })?;
        if reason.trim().is_empty() {
            return Err(Error::Invalid("the redaction reason is empty".to_owned()));
        }
        if session.is_empty()
            || session.len() > 128
            || session.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Invalid(format!(
                "session id '{}' must be 1 to 128 characters with no whitespace",
                session.escape_debug()
            )));
        }
        if events.is_empty() {
            return Err(Error::Invalid(
                "name at least one event to redact".to_owned(),
            ));
        }
        if let Layout::Backend(name) = self.layout {
            // Its rows are not erased yet (docs/redaction.md): refuse rather than pretend.
            return Err(Error::Invalid(format!(
                "redaction is not supported in a {name} depot yet: its rows would not be erased"
            )));
        }
        self.reload_redactions()?;
        let batch = hex::encode(&os_random()?[..8]);
        let at = Utc::now();
        let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
        let mut report = RedactReport::default();
        let mut intents = Vec::new();
        let mut seen = HashSet::new();
        for id in events {
            if !seen.insert(*id) {
                continue;
            }
            if self.redaction_of(id).is_some() {
                report.already.push(*id);
                continue;
            }
            let object = match self.objects.read(id)? {
                Some(encoded) => encoded
                    .decode()
                    .map_err(|source| Error::Decode { id: *id, source })?,
                None => return Err(Error::NoSuchObject(*id)),
            };
            let (erased, sealed) = match &object {
                Object::Event(event) => match event.sealed_data() {
                    Some(data) => (data, true),
                    None => (*id, false),
                },
                // A checkpoint: its command, when it is in a data object of its own.
                Object::Checkpoint(checkpoint) => match checkpoint.message_data() {
                    Some(data) => (data, true),
                    None => {
                        return Err(Error::Invalid(format!(
                            "checkpoint {id} keeps its command in itself (written without \
                             'events sealed'): erasing it would break the history that names it"
                        )))
                    }
                },
                other => {
                    return Err(Error::Invalid(format!(
                        "{id} is {} {}: only events and checkpoints' commands are redacted",
                        if other.kind() == crate::object::Kind::Affix {
                            "an"
                        } else {
                            "a"
                        },
                        other.kind()
                    )))
                }
            };
            report.redacted.push(*id);
            if !sealed {
                report.unverifiable.push(*id);
            }
            intents.push(Redaction {
                event: *id,
                erased,
                sealed,
                reason: reason_value.as_str().to_owned(),
                at,
                session: session.to_owned(),
                batch: batch.clone(),
                checkpoint: None,
            });
        }
        if !intents.is_empty() {
            self.append_intents(&intents)?;
            let mut set = self.redactions.write().expect("redactions lock poisoned");
            for intent in intents {
                set.insert(intent);
            }
        }
        let finished = self.finish_redactions()?;
        report.records_erased = finished.records_erased;
        report.checkpoints = finished.checkpoints;
        Ok(report)
    }

    /// Finishes every redaction whose intent has no `done` line (a crash interrupted it): erases
    /// again (idempotent), commits its checkpoint unless `HEAD`'s branch has it, records `done`.
    pub fn finish_redactions(&self) -> Result<RedactReport, Error> {
        self.reload_redactions()?;
        let pending: Vec<Redaction> = {
            let set = self.redactions.read().expect("redactions lock poisoned");
            set.by_event
                .values()
                .filter(|r| r.checkpoint.is_none())
                .cloned()
                .collect()
        };
        let mut report = RedactReport::default();
        if pending.is_empty() {
            return Ok(report);
        }
        report.records_erased = self.erase_objects(pending.iter().map(|r| r.erased))?;
        let mut batches: BTreeMap<(DateTime<Utc>, String), Vec<Redaction>> = BTreeMap::new();
        for redaction in pending {
            batches
                .entry((redaction.at, redaction.batch.clone()))
                .or_default()
                .push(redaction);
        }
        for ((at, batch), mut redactions) in batches {
            redactions.sort_by_key(|r| r.event);
            let checkpoint = match self.find_redaction_checkpoint(&batch, at)? {
                Some(id) => id,
                None => self.commit_redaction(&batch, &redactions)?,
            };
            self.append_line(&format!("done {batch} {checkpoint}\n"))?;
            let mut set = self.redactions.write().expect("redactions lock poisoned");
            for redaction in &redactions {
                if let Some(r) = set.by_event.get_mut(&redaction.event) {
                    r.checkpoint = Some(checkpoint);
                }
            }
            report.checkpoints.push(checkpoint);
        }
        Ok(report)
    }

    /// The data object of event `id` if it is a sealed event (`None` for a plain one, or one
    /// whose bytes were erased).
    pub(super) fn sealed_data_of(&self, id: &ObjectId) -> Result<Option<ObjectId>, Error> {
        if self.is_erased(id) {
            return Ok(None);
        }
        match self.read_decoded(id)? {
            Object::Event(event) => Ok(event.sealed_data()),
            _ => Ok(None),
        }
    }

    /// Sync's first step: for every redaction checkpoint among `incoming` (the source's
    /// checkpoints this depot lacks), records its redactions here as intents and erases what
    /// this depot holds of them. Returns the batches to close once the checkpoints are in.
    pub(super) fn receive_redactions(
        &self,
        source: &Depot,
        incoming: &[ObjectId],
    ) -> Result<Vec<(String, ObjectId)>, Error> {
        self.reload_redactions()?;
        let mut intents = Vec::new();
        let mut batches = Vec::new();
        for id in incoming {
            let checkpoint = source.read_checkpoint(id)?;
            let (Some(reason), Some(batch)) = (
                checkpoint.field(REDACTION_FIELD),
                checkpoint.field(REDACTION_BATCH_FIELD),
            ) else {
                continue;
            };
            let at = checkpoint.date().unwrap_or_else(Utc::now);
            for line in String::from_utf8_lossy(checkpoint.message()).lines() {
                let Ok(target) = line.trim().parse::<ObjectId>() else {
                    continue;
                };
                if self.redaction_of(&target).is_some() {
                    continue;
                }
                let (erased, sealed) = match source.redaction_of(&target) {
                    Some(r) => (r.erased, r.sealed),
                    None => match source.read_decoded(&target) {
                        Ok(Object::Event(e)) => match e.sealed_data() {
                            Some(d) => (d, true),
                            None => (target, false),
                        },
                        Ok(Object::Checkpoint(c)) => match c.message_data() {
                            Some(d) => (d, true),
                            None => continue,
                        },
                        _ => continue,
                    },
                };
                intents.push(Redaction {
                    event: target,
                    erased,
                    sealed,
                    reason: reason.to_owned(),
                    at,
                    session: checkpoint.session().to_owned(),
                    batch: batch.to_owned(),
                    checkpoint: None,
                });
            }
            batches.push((batch.to_owned(), *id));
        }
        if intents.is_empty() {
            return Ok(batches);
        }
        self.append_intents(&intents)?;
        let targets: Vec<ObjectId> = intents.iter().map(|r| r.erased).collect();
        {
            let mut set = self.redactions.write().expect("redactions lock poisoned");
            for intent in intents {
                set.insert(intent);
            }
        }
        self.erase_objects(targets.into_iter())?;
        Ok(batches)
    }

    /// Sync's last step: the redaction checkpoints are in, so their batches are done here.
    pub(super) fn close_redactions(&self, batches: &[(String, ObjectId)]) -> Result<(), Error> {
        for (batch, checkpoint) in batches {
            self.append_line(&format!("done {batch} {checkpoint}\n"))?;
            let mut set = self.redactions.write().expect("redactions lock poisoned");
            for r in set.by_event.values_mut() {
                if &r.batch == batch {
                    r.checkpoint = Some(*checkpoint);
                }
            }
        }
        Ok(())
    }

    /// Erases the bytes of `ids` from every file of the depot: pack records overwritten in place,
    /// loose files deleted, aggregate snapshots erased. Under the depot lock in a native depot.
    fn erase_objects(&self, ids: impl Iterator<Item = ObjectId>) -> Result<usize, Error> {
        let ids: Vec<ObjectId> = ids.collect();
        let _lock = match &self.journal {
            Some(journal) => Some(journal.lock()?),
            None => None,
        };
        failpoint("redact-before-erase");
        let mut erased = 0;
        for id in &ids {
            if let Some(packs) = &self.packs {
                erased += packs.erase_object_records(id)?;
                if let Some(loose) = packs.loose() {
                    erased += remove_loose(loose, id)?;
                }
            } else if self.layout == Layout::GoRetro {
                if let Some(root) = &self.root {
                    erased += remove_loose(&crate::odb::LooseStore::new(root), id)?;
                }
            }
            failpoint("redact-after-erase-one");
        }
        // Snapshots fold events' data into aggregate states: erase them all (derived data,
        // rebuilt on use), with SQLite's secure delete and a vacuum so no old page keeps them.
        if let Some(store) = self.existing_snapshots() {
            store.erase_all().map_err(|e| {
                Error::Invalid(format!("could not erase the aggregate snapshots: {e}"))
            })?;
        }
        failpoint("redact-after-erase");
        Ok(erased)
    }

    /// The redaction checkpoint of `batch` on `HEAD`'s first-parent chain, looking back only
    /// over checkpoints made since the intent (`at`).
    fn find_redaction_checkpoint(
        &self,
        batch: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<ObjectId>, Error> {
        let Ok((_, head)) = self.resolve_ref(&crate::refdb::RefName::head()) else {
            return Ok(None);
        };
        let mut cursor = head;
        while let Some(id) = cursor {
            let checkpoint = self.read_checkpoint_unresolved(&id)?;
            if checkpoint.field(REDACTION_BATCH_FIELD) == Some(batch) {
                return Ok(Some(id));
            }
            if checkpoint.date().is_some_and(|d| d < at) {
                break;
            }
            cursor = checkpoint.first_parent();
        }
        Ok(None)
    }

    fn commit_redaction(&self, batch: &str, redactions: &[Redaction]) -> Result<ObjectId, Error> {
        let first = &redactions[0];
        let mut message = String::new();
        for (i, r) in redactions.iter().enumerate() {
            if i > 0 {
                message.push('\n');
            }
            message.push_str(&r.event.to_string());
        }
        let mut request = super::CommitRequest::new(None, Vec::new(), &first.session, message);
        request.base = super::Base::Tip;
        request.date = first.at;
        request.reflog_message = format!("redact {} event(s)", redactions.len());
        request.fields = vec![
            (
                FieldKey::new(REDACTION_FIELD)?,
                FieldValue::new(&first.reason)?,
            ),
            (
                FieldKey::new(REDACTION_BATCH_FIELD)?,
                FieldValue::new(batch)?,
            ),
        ];
        failpoint("redact-before-checkpoint");
        let committed = self.commit(request)?;
        failpoint("redact-after-checkpoint");
        Ok(committed.checkpoint)
    }

    fn append_intents(&self, intents: &[Redaction]) -> Result<(), Error> {
        let mut text = String::new();
        for r in intents {
            text.push_str(&format!(
                "intent {} {} {} {} {} {} {}\n",
                r.batch,
                r.event,
                r.erased,
                if r.sealed { "sealed" } else { "plain" },
                format_date(r.at),
                r.session,
                r.reason
            ));
        }
        self.append_line(&text)?;
        failpoint("redact-after-intent");
        Ok(())
    }

    /// Appends `text` to the redaction log and makes it durable (a new file's directory entry
    /// too). Memory and backend depots keep the log in this process only.
    fn append_line(&self, text: &str) -> Result<(), Error> {
        let Some(path) = self.redactions_file() else {
            return Ok(());
        };
        let created = !self.storage.is_file(&path);
        let file = self
            .storage
            .open(
                &path,
                OpenOptions {
                    create: true,
                    ..OpenOptions::APPEND
                },
            )
            .map_err(Error::io("open", &path))?;
        file.write_all(text.as_bytes())
            .map_err(Error::io("append to", &path))?;
        file.sync_data().map_err(Error::io("fdatasync", &path))?;
        if created {
            if let Some(dir) = path.parent() {
                self.storage
                    .fsync_dir(dir)
                    .map_err(Error::io("fsync", dir))?;
            }
        }
        Ok(())
    }
}

fn remove_loose(loose: &crate::odb::LooseStore, id: &ObjectId) -> Result<usize, Error> {
    let path = loose.path_of(id);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = crate::fsutil::fsync_dir(&crate::storage::FsStorage, dir);
            }
            Ok(1)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("remove", &path)(e)),
    }
}

/// A test hook: with `RETRO_FAILPOINT=<name>` in the environment, the process kills itself
/// (SIGKILL, no unwinding, no destructors) when it reaches `name`, as a power cut would stop it.
fn failpoint(name: &str) {
    if std::env::var_os("RETRO_FAILPOINT").is_some_and(|v| v == name) {
        // SIGKILL through kill(1) (the depot links no libc binding); abort if that fails.
        let pid = std::process::id();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn intent(batch: &str, reason: &str) -> Redaction {
        Redaction {
            event: ObjectId::of(b"event"),
            erased: ObjectId::of(b"data"),
            sealed: true,
            reason: reason.to_owned(),
            at: parse_date("2026-12-03T12:00:00Z").unwrap(),
            session: "admin".to_owned(),
            batch: batch.to_owned(),
            checkpoint: None,
        }
    }

    fn line(r: &Redaction) -> String {
        format!(
            "intent {} {} {} sealed {} {} {}\n",
            r.batch,
            r.event,
            r.erased,
            format_date(r.at),
            r.session,
            r.reason
        )
    }

    #[test]
    fn the_log_reads_intents_and_done_lines_and_ignores_a_torn_tail() {
        let a = intent("00aa", "erasure request 1");
        let checkpoint = ObjectId::of(b"checkpoint");
        let text = format!(
            "{}done 00aa {checkpoint}\n{}",
            line(&a),
            line(&intent("00bb", "x"))
        );
        let torn = &text[..text.len() - 1];
        let (intents, warnings) = parse_log(torn);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(intents.len(), 1, "the torn last line is not an intent");
        assert_eq!(intents[0].checkpoint, Some(checkpoint));
        assert_eq!(intents[0].reason, "erasure request 1");
        let (intents, _) = parse_log(&text);
        assert_eq!(intents.len(), 2);
        assert_eq!(intents[1].checkpoint, None);
        let (_, warnings) = parse_log("intent nonsense\n");
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn tombstones_are_json() {
        let t = intent("00aa", r#"a "quoted" \ reason"#).tombstone();
        assert_eq!(
            String::from_utf8(t).unwrap(),
            r#"{"redacted":true,"reason":"a \"quoted\" \\ reason","at":"2026-12-03T12:00:00Z"}"#
        );
    }

    proptest! {
        #[test]
        fn any_log_text_parses_without_panicking(text in ".{0,300}") {
            let _ = parse_log(&text);
        }

        #[test]
        fn written_intents_read_back(batch in "[0-9a-f]{16}", reason in "[ -~]{1,80}") {
            let r = intent(&batch, reason.trim());
            prop_assume!(!r.reason.is_empty());
            let (intents, warnings) = parse_log(&line(&r));
            prop_assert!(warnings.is_empty());
            prop_assert_eq!(intents, vec![r]);
        }
    }
}

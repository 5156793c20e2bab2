//! Replaying recorded history against a domain: what `retro verify` runs.
//!
//! A [`Replay`] walks a depot's first-parent history oldest first. For each checkpoint it
//! re-runs the recorded command (the checkpoint's message, in the checkpoint's session) with the
//! current [`Manifest`] on the state *as of the checkpoint's parent*, and compares the event ids
//! the handler emits now with the ones the checkpoint recorded ([`Verdict`]).
//!
//! The state as of a checkpoint comes from a *mirror*: a depot whose objects are the source's
//! own (read through, never copied) and whose refs and partition index live in memory. Its
//! `HEAD` is moved along the recorded history one checkpoint at a time, so a command rehydrates
//! its aggregate (and whatever it `load`s) from the mirror's index in O(that partition's events),
//! whatever the history's length, and sees exactly what the recording command saw: the same
//! events, checkpoint ids, dates and sessions. Memory holds the mirror's index rows (ids and
//! positions, not event bodies), not the history's objects; its refs keep no reflog.
//!
//! On top of the mirror, the aggregates commands ran on are kept rehydrated (their events so
//! far, bounded by [`Replay::with_cache_limit`]) and extended as the replay moves, so a command
//! on a known aggregate costs the events added since it last ran, not its whole partition.
//!
//! Nothing is ever written: handlers run against a [`Context`] whose emitted events are compared
//! and dropped. Bookkeeping checkpoints (sessions started or ended, merges, messages that are not
//! commands) are stepped over as [`Verdict::Skipped`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use depot::odb::{Error as OdbError, ObjectStore};
use depot::refdb::{Error as RefError, RefStore, RefValue, ReflogEntry};
use depot::{
    Affix, Checkpoint, Depot, EncodedObject, LogInfo, Object, ObjectId, PartitionName, Prefix,
    RefEdit, RefName,
};

use crate::aggregate::RecordedEvent;
use crate::command::Command;
use crate::context::{Context, IdFn};
use crate::domain::{Failure, Manifest};
use crate::engine::{SESSION_ENDED, SESSION_STARTED};
use crate::testing::{diff_events, event, EventsDiff, TestEvent};

/// Why a replay could not go on (a divergence is not an error: it is a [`Verdict`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The depot (source or mirror) could not be read.
    #[error(transparent)]
    Depot(#[from] depot::Error),
    /// A stored event does not decode as the domain's typed events.
    #[error(transparent)]
    Event(#[from] crate::EventError),
    /// A stored event cannot be upcast to the domain's newest version.
    #[error(transparent)]
    Upcast(Box<crate::UpcastError>),
    /// The checkpoint handed to [`Replay::check`] is not the child of the replay's position.
    #[error("checkpoint {checkpoint} does not follow the replay's position {}: its first parent is {}", shown_id(.position), shown_id(.parent))]
    OutOfOrder {
        /// The checkpoint.
        checkpoint: ObjectId,
        /// Its first parent.
        parent: Option<ObjectId>,
        /// Where the replay stands.
        position: Option<ObjectId>,
    },
}

impl ReplayError {
    /// The class of this failure (docs/errors.md).
    pub fn class(&self) -> depot::ErrorClass {
        match self {
            ReplayError::Depot(e) => e.class(),
            // As when the engine meets it: the stored data, not the request, is wrong.
            ReplayError::Event(_) | ReplayError::Upcast(_) => depot::ErrorClass::Internal,
            ReplayError::OutOfOrder { .. } => depot::ErrorClass::Invalid,
        }
    }
}

impl From<crate::UpcastError> for ReplayError {
    fn from(error: crate::UpcastError) -> Self {
        ReplayError::Upcast(Box::new(error))
    }
}

fn shown_id(id: &Option<ObjectId>) -> String {
    id.map_or_else(|| "(the root)".to_owned(), |id| id.to_string())
}

/// Why a checkpoint was not re-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A session's start or end (written by the engine itself, not by a handler).
    Session,
    /// A merge: its events came from another line of history.
    Merge,
    /// Its message is not a command (an import, say).
    NotACommand,
    /// Its command or one of its events was redacted (`retro redact`): what was recorded is a
    /// tombstone, so there is nothing to compare a replay with.
    Redacted,
}

impl SkipReason {
    /// A short name: `session`, `merge`, `not-a-command`, `redacted`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Session => "session",
            SkipReason::Merge => "merge",
            SkipReason::NotACommand => "not-a-command",
            SkipReason::Redacted => "redacted",
        }
    }
}

/// One event, recorded or replayed, with its object id.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayedEvent {
    /// Its partition.
    pub partition: String,
    /// Its name.
    pub name: String,
    /// Its data (a JSON string when the bytes are not JSON).
    pub data: Value,
    /// The event object's id.
    pub id: ObjectId,
}

impl ReplayedEvent {
    fn test_event(&self) -> TestEvent {
        event(&self.partition, &self.name, self.data.clone())
    }
}

/// What the current domain did with a recorded command.
#[derive(Debug, Clone, PartialEq)]
pub enum Replayed {
    /// It emitted these events (in the checkpoint's order: partitions sorted).
    Events(Vec<ReplayedEvent>),
    /// The domain rejected it.
    Rejected {
        /// The rejection's code.
        code: String,
        /// Its message.
        message: String,
    },
    /// It could not run: the command is unknown now, a session is missing, the handler broke.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A recorded command whose replay does not emit the recorded events.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// The checkpoint.
    pub checkpoint: ObjectId,
    /// Its session.
    pub session: String,
    /// Its date, as recorded.
    pub date: Option<String>,
    /// The command (the checkpoint's message).
    pub command: String,
    /// The recorded events.
    pub recorded: Vec<ReplayedEvent>,
    /// What the replay did.
    pub replayed: Replayed,
    /// Where the events' data differ (none when only their bytes do, or the replay emitted none).
    pub diff: Option<EventsDiff>,
}

/// The outcome of one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The replay emitted exactly the recorded events.
    Same {
        /// How many.
        events: usize,
    },
    /// Not re-run.
    Skipped(SkipReason),
    /// The replay emitted something else.
    Diverged(Box<Divergence>),
}

/// The source's objects, read through: the mirror never holds a copy.
struct ReadThrough(Arc<Depot>);

impl ObjectStore for ReadThrough {
    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, OdbError> {
        self.0.objects().read(id)
    }
    fn read_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<EncodedObject>>, OdbError> {
        self.0.objects().read_many(ids)
    }
    fn locate(&self, id: &ObjectId) -> Option<u64> {
        self.0.objects().locate(id)
    }
    fn read_many_hinted(
        &self,
        ids: &[(ObjectId, Option<u64>)],
    ) -> Result<Vec<Option<EncodedObject>>, OdbError> {
        self.0.objects().read_many_hinted(ids)
    }
    fn contains(&self, id: &ObjectId) -> Result<bool, OdbError> {
        self.0.objects().contains(id)
    }
    fn write(&self, objects: &[EncodedObject]) -> Result<(), OdbError> {
        // A replay writes nothing; anything new here would be a bug, and is refused.
        for object in objects {
            if !self.0.objects().contains(&object.id())? {
                return Err(OdbError::Backend(depot::BackendError::new(
                    depot::ErrorClass::Internal,
                    format!(
                        "a replay does not write objects (asked to write {})",
                        object.id()
                    ),
                )));
            }
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), OdbError> {
        Ok(())
    }
    fn for_each_id(
        &self,
        f: &mut dyn FnMut(ObjectId) -> Result<(), OdbError>,
    ) -> Result<(), OdbError> {
        self.0.objects().for_each_id(f)
    }
    fn find_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<ObjectId>, OdbError> {
        self.0.objects().find_prefix(prefix, limit)
    }
    fn describe(&self) -> String {
        format!("{} (read by a replay)", self.0.objects().describe())
    }
}

/// The mirror's refs: a map, moved by compare-and-swap, with no reflog (a replay moves `HEAD`
/// once per checkpoint; a log of that would grow with the history).
#[derive(Default)]
struct MirrorRefs {
    refs: Mutex<BTreeMap<RefName, RefValue>>,
}

impl MirrorRefs {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<RefName, RefValue>> {
        // The map is only ever replaced whole under the lock: a poisoned lock still holds a
        // consistent map.
        self.refs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RefStore for MirrorRefs {
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, RefError> {
        Ok(self.map().get(name).cloned())
    }

    fn transaction(&self, edits: &[RefEdit]) -> Result<(), RefError> {
        let mut refs = self.map();
        let prepared = depot::refdb::prepare_edits(edits, |n| Ok(refs.get(n).cloned()))?;
        let under = |refs: &BTreeMap<RefName, RefValue>, name: &RefName| {
            let prefix = format!("{name}/");
            refs.keys()
                .filter(|n| n.as_str().starts_with(&prefix))
                .cloned()
                .collect::<Vec<_>>()
        };
        depot::refdb::check_clashes(
            &prepared,
            |n| Ok(refs.get(n).cloned()),
            |n| Ok(under(&refs, n)),
        )?;
        for (edit, _) in prepared {
            match &edit.new {
                Some(value) => refs.insert(edit.name.clone(), value.clone()),
                None => refs.remove(&edit.name),
            };
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, RefError> {
        Ok(self
            .map()
            .iter()
            .filter(|(n, _)| n.as_str().starts_with(prefix))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect())
    }

    fn reflog(&self, _name: &RefName) -> Result<Vec<ReflogEntry>, RefError> {
        Ok(Vec::new())
    }
}

/// Re-runs recorded commands, oldest first, against a domain.
pub struct Replay {
    source: Arc<Depot>,
    mirror: Depot,
    manifest: Manifest,
    id_fn: Arc<IdFn>,
    position: Option<ObjectId>,
    /// Partitions rehydrated so far, kept up to date as the replay moves: a command on a cached
    /// aggregate reads only the events added since, not its whole partition again.
    cache: HashMap<PartitionName, Vec<RecordedEvent>>,
    cached_events: usize,
    cache_limit: usize,
}

/// How many events the rehydration cache holds before it is emptied (see
/// [`Replay::with_cache_limit`]).
pub const DEFAULT_CACHE_EVENTS: usize = 1_000_000;

impl Replay {
    /// A replay of `source`'s history with the commands of `manifest`, standing before the root.
    pub fn new(source: Arc<Depot>, manifest: Manifest) -> Result<Replay, ReplayError> {
        let mirror = Depot::with_stores(
            Arc::new(ReadThrough(source.clone())),
            Arc::new(MirrorRefs::default()),
        )?;
        // Redacted events read as their tombstones in the mirror too.
        mirror.adopt_redactions(&source);
        Ok(Replay {
            source,
            mirror,
            manifest,
            id_fn: Arc::new(|| uuid::Uuid::new_v4().to_string()),
            position: None,
            cache: HashMap::new(),
            cached_events: 0,
            cache_limit: DEFAULT_CACHE_EVENTS,
        })
    }

    /// Replaces the id function handlers get for new ids (random UUIDs by default, as in
    /// [`crate::Engine`]: a handler that makes ids diverges on replay unless this matches).
    pub fn with_id_fn(mut self, id_fn: impl Fn() -> String + Send + Sync + 'static) -> Replay {
        self.id_fn = Arc::new(id_fn);
        self
    }

    /// Bounds the rehydration cache to about `events` events (0: one partition at a time). When it is full it
    /// is emptied, and aggregates are read again from the mirror's index as they come: memory
    /// stays bounded whatever the history, at the price of re-reading partitions.
    pub fn with_cache_limit(mut self, events: usize) -> Replay {
        self.cache_limit = events;
        self
    }

    /// Where the replay stands: the last checkpoint checked or stepped over (`None`: the root's
    /// parent).
    pub fn position(&self) -> Option<ObjectId> {
        self.position
    }

    /// Jumps to `checkpoint` without re-running anything (the state before a range's first
    /// checkpoint). The mirror's index is built from that checkpoint's first-parent history on
    /// the next read: O(history up to it), once.
    pub fn start_at(&mut self, checkpoint: ObjectId) -> Result<(), ReplayError> {
        self.move_to(checkpoint)
    }

    fn move_to(&mut self, checkpoint: ObjectId) -> Result<(), ReplayError> {
        let edit = RefEdit::cas(
            RefName::head(),
            self.position,
            checkpoint,
            LogInfo {
                session: "replay".to_owned(),
                message: "replay".to_owned(),
            },
        );
        self.mirror.update_refs(&[edit])?;
        self.position = Some(checkpoint);
        Ok(())
    }

    /// Re-runs checkpoint `id` (whose first parent must be [`Replay::position`]) and moves the
    /// replay onto it.
    pub fn check(&mut self, id: ObjectId) -> Result<Verdict, ReplayError> {
        let checkpoint = self.source.read_checkpoint(&id)?;
        if checkpoint.first_parent() != self.position {
            return Err(ReplayError::OutOfOrder {
                checkpoint: id,
                parent: checkpoint.first_parent(),
                position: self.position,
            });
        }
        let affix = self.source.read_affix(&checkpoint.affix())?;
        let verdict = self.verdict(id, &checkpoint, &affix)?;
        self.feed_cache(id, &checkpoint, &affix)?;
        self.move_to(id)?;
        Ok(verdict)
    }

    /// Appends checkpoint `id`'s events to the cached partitions it touches.
    fn feed_cache(
        &mut self,
        id: ObjectId,
        checkpoint: &Checkpoint,
        affix: &Affix,
    ) -> Result<(), ReplayError> {
        for (partition, ids) in affix.partitions() {
            let Some(list) = self.cache.get_mut(partition) else {
                continue;
            };
            for event_id in ids {
                let event = self.source.read_event(event_id)?;
                // The position of the stored event (upcasting may split one into several).
                let position = list.last().map_or(0, |e| e.version) + 1;
                let record = depot::EventRecord {
                    partition: partition.clone(),
                    version: position,
                    id: *event_id,
                    event,
                    checkpoint: id,
                    date: checkpoint.date(),
                    session: checkpoint.session().to_owned(),
                };
                let upcast = self
                    .manifest
                    .upcasters()
                    .recorded(std::slice::from_ref(&record))?;
                self.cached_events += upcast.len();
                list.extend(upcast);
            }
        }
        Ok(())
    }

    /// The partition's events as of the replay's position: cached, or read from the mirror's
    /// index (and cached).
    fn rehydrate(&mut self, partition: &PartitionName) -> Result<(), ReplayError> {
        if self.cache.contains_key(partition) {
            return Ok(());
        }
        let records = self.mirror.partition_events(partition)?;
        if self.cached_events + records.len() > self.cache_limit {
            self.cache.clear();
            self.cached_events = 0;
        }
        self.cached_events += records.len();
        self.cache.insert(
            partition.clone(),
            self.manifest.upcasters().recorded(&records)?,
        );
        Ok(())
    }

    fn verdict(
        &mut self,
        id: ObjectId,
        checkpoint: &Checkpoint,
        recorded_affix: &Affix,
    ) -> Result<Verdict, ReplayError> {
        if checkpoint.parents().len() > 1 {
            return Ok(Verdict::Skipped(SkipReason::Merge));
        }
        let redacted = self.source.redaction_of(&id).is_some()
            || recorded_affix
                .partitions()
                .any(|(_, ids)| ids.iter().any(|e| self.source.redaction_of(e).is_some()));
        if redacted {
            return Ok(Verdict::Skipped(SkipReason::Redacted));
        }
        let Ok(command) = Command::parse(checkpoint.message()) else {
            return Ok(Verdict::Skipped(SkipReason::NotACommand));
        };
        if command.path().starts_with("session/")
            && matches!(command.name(), "startSession" | "endSession")
        {
            return Ok(Verdict::Skipped(SkipReason::Session));
        }
        let session = checkpoint.session();
        let replayed = self.run(&command, session)?;
        let diverged = match &replayed {
            Replayed::Events(events) => {
                let affix: Affix = events
                    .iter()
                    .filter_map(|e| Some((PartitionName::new(&e.partition).ok()?, e.id)))
                    .collect();
                // Sealed events carry a fresh salt each time: compare what they say (the id of
                // their plain encoding) rather than their ids.
                affix != *recorded_affix && affix != self.content_affix(recorded_affix)?
            }
            _ => true,
        };
        if !diverged {
            return Ok(Verdict::Same {
                events: recorded_affix.event_count(),
            });
        }
        let mut recorded = Vec::with_capacity(recorded_affix.event_count());
        for (partition, ids) in recorded_affix.partitions() {
            for event_id in ids {
                let e = self.source.read_event(event_id)?;
                recorded.push(ReplayedEvent {
                    partition: partition.to_string(),
                    name: e.name().to_string(),
                    data: data_value(e.data()),
                    id: *event_id,
                });
            }
        }
        let diff = match &replayed {
            Replayed::Events(events) => {
                let expected: Vec<TestEvent> =
                    recorded.iter().map(ReplayedEvent::test_event).collect();
                let actual: Vec<TestEvent> = events.iter().map(ReplayedEvent::test_event).collect();
                diff_events(&expected, &actual)
            }
            _ => None,
        };
        Ok(Verdict::Diverged(Box::new(Divergence {
            checkpoint: id,
            session: session.to_owned(),
            date: checkpoint.field("date").map(str::to_owned),
            command: String::from_utf8_lossy(checkpoint.message()).into_owned(),
            recorded,
            replayed,
            diff,
        })))
    }

    /// `affix` with each sealed event's id replaced by the id its resolved name and data have in
    /// the plain encoding, the id a replayed event is given (see `run`).
    fn content_affix(&self, affix: &Affix) -> Result<Affix, ReplayError> {
        let mut content = Affix::new();
        for (partition, ids) in affix.partitions() {
            for id in ids {
                let event = self.source.read_event(id)?;
                let plain = depot::Event::new(event.name().clone(), event.data());
                content.push(partition.clone(), Object::Event(plain).to_encoded().id());
            }
        }
        Ok(content)
    }

    /// Runs `command` on the mirror's state (the parent's) and says what it emitted.
    fn run(&mut self, command: &Command, session: &str) -> Result<Replayed, ReplayError> {
        let resolved = match self.manifest.resolve(command.path(), command.name()) {
            Ok(resolved) => resolved,
            Err(e) => {
                return Ok(Replayed::Failed {
                    reason: e.to_string(),
                })
            }
        };
        let runner = resolved.command.runner.clone();
        let command = command.clone().with_name(&resolved.command.name);
        let partition = match PartitionName::new(command.path()) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Replayed::Failed {
                    reason: format!("bad path '{}': {e}", depot::shown(command.path())),
                })
            }
        };
        if resolved.command.requires_session && !self.session_is_live(session)? {
            return Ok(Replayed::Failed {
                reason: format!(
                    "command '{}' needs a live session, and session '{}' was not live",
                    depot::shown(command.name()),
                    depot::shown(session)
                ),
            });
        }
        self.rehydrate(&partition)?;
        let uncached;
        let recorded: &[RecordedEvent] = match self.cache.get(&partition) {
            Some(list) => list,
            None => {
                // A cache limit of 0 (or one partition larger than the limit): read it each time.
                uncached = self
                    .manifest
                    .upcasters()
                    .recorded(&self.mirror.partition_events(&partition)?)?;
                &uncached
            }
        };
        let mut ctx = Context {
            depot: &self.mirror,
            command: &command,
            path: partition.clone(),
            session,
            version: recorded.last().map_or(0, |e| e.version),
            emitted: Vec::new(),
            reads: vec![partition],
            upcasters: self.manifest.upcasters(),
            id_fn: &*self.id_fn,
            read_failure: None,
            event_failure: None,
            // A replay folds the whole recorded history: no snapshot is used or taken.
            snapshot_policy: None,
            snapshot_wanted: false,
            snapshot_state: None,
            snapshot_unusable: None,
            upcast_failure: None,
        };
        if let Err(failure) = runner.run(&mut ctx, recorded) {
            if let Some(read_failure) = ctx.read_failure.take() {
                return Err(ReplayError::Depot(read_failure));
            }
            if let Some(event_failure) = ctx.event_failure.take() {
                return Err(ReplayError::Event(event_failure));
            }
            if let Some(upcast_failure) = ctx.upcast_failure.take() {
                return Err(ReplayError::Upcast(Box::new(upcast_failure)));
            }
            return Ok(match failure {
                Failure::Rejected(error) => Replayed::Rejected {
                    code: error.code,
                    message: error.message,
                },
                Failure::Broken { handler, reason } => Replayed::Failed {
                    reason: format!("handler {handler} failed: {reason}"),
                },
            });
        }
        let mut emitted: Vec<(PartitionName, depot::Event)> = std::mem::take(&mut ctx.emitted);
        // The checkpoint's order: partitions sorted (stable), each in emitted order.
        emitted.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Replayed::Events(
            emitted
                .into_iter()
                .map(|(partition, e)| ReplayedEvent {
                    id: Object::Event(e.clone()).to_encoded().id(),
                    partition: partition.to_string(),
                    name: e.name().to_string(),
                    data: data_value(e.data()),
                })
                .collect(),
        ))
    }

    fn session_is_live(&self, session: &str) -> Result<bool, ReplayError> {
        let Ok(partition) = PartitionName::new(&format!("session/{session}")) else {
            return Ok(false);
        };
        let events = self.mirror.partition_events(&partition)?;
        let started = events
            .iter()
            .any(|e| e.event.name().as_str() == SESSION_STARTED);
        let ended = events
            .iter()
            .any(|e| e.event.name().as_str() == SESSION_ENDED);
        Ok(started && !ended)
    }
}

fn data_value(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{example, Engine};

    fn bank() -> Manifest {
        let mut manifest = Manifest::new();
        example::register_bank(&mut manifest).unwrap();
        manifest
    }

    fn history(depot: &Depot) -> Vec<ObjectId> {
        depot
            .first_parents_since(depot.head().unwrap().unwrap(), None)
            .unwrap()
    }

    #[test]
    fn the_same_domain_replays_every_command_to_the_same_events() {
        let depot = Arc::new(Depot::in_memory().unwrap());
        let engine = Engine::new(depot.clone(), bank());
        let session = engine.start_session().unwrap();
        for command in [
            r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
            r#"{"path":"accounts/a","name":"deposit","params":{"amount":50}}"#,
            r#"{"path":"accounts/b","name":"open","params":{"owner":"B"}}"#,
            r#"{"path":"accounts/a","name":"transfer","params":{"to":"accounts/b","amount":20}}"#,
            // b's cached state must have grown by the transfer, or this is rejected on replay.
            r#"{"path":"accounts/b","name":"withdraw","params":{"amount":15}}"#,
        ] {
            engine.apply(&session, command.as_bytes()).unwrap();
        }
        for limit in [DEFAULT_CACHE_EVENTS, 1, 0] {
            let mut replay = Replay::new(depot.clone(), bank())
                .unwrap()
                .with_cache_limit(limit);
            let verdicts: Vec<Verdict> = history(&depot)
                .into_iter()
                .map(|id| replay.check(id).unwrap())
                .collect();
            assert_eq!(verdicts[0], Verdict::Skipped(SkipReason::Session));
            assert!(
                verdicts[1..]
                    .iter()
                    .all(|v| matches!(v, Verdict::Same { .. })),
                "cache limit {limit}: {verdicts:?}"
            );
        }
    }

    #[test]
    fn a_changed_handler_is_a_divergence_with_the_diff_and_out_of_order_is_refused() {
        let depot = Arc::new(Depot::in_memory().unwrap());
        let engine = Engine::new(depot.clone(), bank());
        engine
            .apply(
                "cli",
                br#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
            )
            .unwrap();
        #[derive(Default)]
        struct Nothing;
        impl crate::Aggregate for Nothing {
            fn apply(&mut self, _: &RecordedEvent) {}
        }
        let mut changed = Manifest::new();
        changed
            .aggregate::<Nothing>("accounts")
            .unwrap()
            .command("open", |_, ctx| {
                ctx.emit_json(
                    "accounts/a",
                    "AccountOpened",
                    &serde_json::json!({"owner": "Z"}),
                )
            })
            .unwrap();
        let ids = history(&depot);
        let mut replay = Replay::new(depot.clone(), changed).unwrap();
        match replay.check(ids[0]).unwrap() {
            Verdict::Diverged(d) => {
                let diff = d.diff.expect("a diff");
                assert!(diff.to_string().contains("\"A\""), "{diff}");
                assert!(diff.to_string().contains("\"Z\""), "{diff}");
            }
            other => panic!("expected a divergence, got {other:?}"),
        }
        assert!(matches!(
            replay.check(ids[0]),
            Err(ReplayError::OutOfOrder { .. })
        ));
    }
}

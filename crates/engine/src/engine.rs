//! The engine: applies commands as checkpoints.
//!
//! Pipeline: parse and validate the command JSON → resolve the aggregate kind and command in the
//! [`Manifest`] → rehydrate the aggregate from its partition through the partition index (a
//! consistent snapshot: the events as of checkpoint `base`) → run the handler → commit its events,
//! an affix and a checkpoint (headers `affix`, `parent`, `session`, `date`; message: the command as
//! compact JSON) by compare-and-swap from `base`.
//!
//! When the ref moved after `base`: if no checkpoint since `base` touched a partition this command
//! read or wrote, the depot re-parents the checkpoint onto the new head without re-running the
//! handler; otherwise the command is re-run on fresh state, up to a bounded number of attempts.
//!
//! A handler that rejects or fails moves no ref: its payload, session, date and error are kept as
//! an orphaned checkpoint listed in the depot's failure log.
//!
//! A command with an id ([`CommandIds`]) is idempotent: when a checkpoint with that
//! `command-id` is already on the target's first-parent history, nothing runs and nothing is
//! written, and the result is the original checkpoint's ([`Applied::replayed`]). The engine looks
//! first (no handler run for a plain retry); the depot looks again under its commit lock (two
//! writers racing with one id get one checkpoint). The original must be the same command (path,
//! name and params; an anonymous aggregate's path matches any id of its kind), else
//! [`ApplyError::CommandIdReused`]. A rejection is not an application: a retry runs again.
//!
//! Each attempt runs its handler in a `tracing` span `handler` (path, command, attempt) and its
//! commit in a span `commit` (path, attempt, and once known checkpoint and outcome: `committed`,
//! `conflict`, `failed`), the group commit's fsync included. Without a subscriber they cost next
//! to nothing.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Map;

use depot::{
    Affix, Base, Checkpoint, CommitRequest, Depot, FieldKey, FieldValue, Object, ObjectId,
    PartitionName, RefName,
};

use crate::aggregate::{fold, Aggregate, DomainCommand, DomainError, EventError, RecordedEvent};
use crate::command::{Command, CommandError, CommandIds};
use crate::context::{Context, IdFn, Loaded};
use crate::domain::{Failure, Manifest, ResolveError};
use crate::upcast::UpcastError;

/// How many times a command is re-run on fresh state before giving up with a conflict.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;

/// The event that starts a session in `session/<id>`.
pub const SESSION_STARTED: &str = "SessionStarted";
/// The event that ends one.
pub const SESSION_ENDED: &str = "SessionEnded";

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The command JSON is malformed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No aggregate kind or command matches.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The session id is malformed.
    #[error("session id '{}' must be 1 to 128 characters: letters, digits, '-', '_' or '.'", depot::shown(.0))]
    BadSession(String),
    /// No session with this id was ever started (ending it: not found).
    #[error("no session '{}' was ever started", depot::shown(.0))]
    UnknownSession(String),
    /// The command needs a live session and this one is not.
    #[error("command '{}' needs a live session, and session '{}' was not started (or has ended); start one with 'retro session start'", depot::shown(.command), depot::shown(.session))]
    SessionRequired {
        /// The session given.
        session: String,
        /// The command.
        command: String,
    },
    /// The domain rejected the command.
    #[error("command rejected: {error}")]
    Rejected {
        /// The rejection.
        error: DomainError,
        /// The orphaned checkpoint recording it, if recording worked.
        recorded: Option<ObjectId>,
    },
    /// The handler failed.
    #[error("handler {handler} failed: {reason}")]
    Handler {
        /// The handler.
        handler: String,
        /// What went wrong.
        reason: String,
        /// The orphaned checkpoint recording it, if recording worked.
        recorded: Option<ObjectId>,
    },
    /// The handler accepted the command and emitted no events: nothing was written (no object,
    /// no checkpoint, no ref moved, nothing recorded as failed). Not a failure: the command had
    /// nothing to do. It is an error variant so that no caller can take it for a checkpoint;
    /// the CLI prints `nothing written` and exits 0.
    #[error("nothing written: command '{}' on '{}' emitted no events", depot::shown(.command), depot::shown(.path))]
    NothingToWrite {
        /// The aggregate's path.
        path: String,
        /// The command (the manifest's spelling).
        command: String,
        /// The ref's checkpoint the command ran on (unchanged); `None` on an unborn branch.
        head: Option<ObjectId>,
    },
    /// The command id was already applied, by a different command: nothing was written. A
    /// retry cannot help; a new command needs a new id.
    #[error("command id '{}' was already applied by another command ({checkpoint}: {}); a different command needs a new id", depot::shown(.command_id), depot::shown(.original))]
    CommandIdReused {
        /// The command id.
        command_id: String,
        /// The checkpoint that applied it.
        checkpoint: ObjectId,
        /// That checkpoint's command (its message).
        original: String,
    },
    /// The aggregate kept changing under the command.
    #[error("conflict: the aggregate kept changing; gave up after {attempts} attempts")]
    Conflict {
        /// Attempts made.
        attempts: u32,
    },
    /// The depot failed.
    #[error(transparent)]
    Depot(#[from] depot::Error),
    /// A stored event of an aggregate the command rehydrated does not decode into the domain's
    /// type: nothing was written or recorded.
    #[error("cannot rehydrate: {0}")]
    Event(#[from] EventError),
    /// A stored event of an aggregate the command rehydrated cannot be upcast to the domain's
    /// newest version (too new, or a failing upcaster): nothing was written or recorded.
    #[error("cannot rehydrate: {0}")]
    Upcast(Box<UpcastError>),
    /// A typed command does not serialize to a parameters object.
    #[error("command '{name}' does not serialize to a JSON object of parameters: {reason}")]
    Params {
        /// The command's name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// Why [`Engine::load`] could not tell an aggregate's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The path is not a valid partition name.
    #[error("aggregate path '{}' is invalid", depot::shown(.path))]
    BadPath {
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: depot::NameError,
    },
    /// A stored event does not decode into the domain's type.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A stored event cannot be upcast to the domain's newest version.
    #[error(transparent)]
    Upcast(Box<UpcastError>),
    /// The depot failed.
    #[error(transparent)]
    Depot(#[from] depot::Error),
}

impl LoadError {
    /// The class of this failure (docs/errors.md).
    pub fn class(&self) -> depot::ErrorClass {
        match self {
            LoadError::BadPath { .. } => depot::ErrorClass::Invalid,
            LoadError::Event(_) | LoadError::Upcast(_) => depot::ErrorClass::Internal,
            LoadError::Depot(e) => e.class(),
        }
    }
}

impl ApplyError {
    /// The class of this failure (docs/errors.md): what the caller should do about it.
    pub fn class(&self) -> depot::ErrorClass {
        use depot::ErrorClass;
        match self {
            // No such aggregate or command: the request names something that is not there.
            ApplyError::Command(_) | ApplyError::BadSession(_) | ApplyError::Resolve(_) => {
                ErrorClass::Invalid
            }
            ApplyError::SessionRequired { .. }
            | ApplyError::Rejected { .. }
            | ApplyError::Handler { .. }
            // The domain declined to change anything: not the caller's mistake, not a conflict.
            | ApplyError::NothingToWrite { .. } => ErrorClass::Rejected,
            ApplyError::UnknownSession(_) => ErrorClass::NotFound,
            ApplyError::Conflict { .. } | ApplyError::CommandIdReused { .. } => {
                ErrorClass::Conflict
            }
            ApplyError::Depot(e) => e.class(),
            // The domain's types and its history disagree: a bug to fix, not a request to retry.
            ApplyError::Event(_) | ApplyError::Upcast(_) => ErrorClass::Internal,
            ApplyError::Params { .. } => ErrorClass::Invalid,
        }
    }

    /// True for a lost race (the caller may retry later).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApplyError::Conflict { .. })
            || matches!(self, ApplyError::Depot(e) if e.is_conflict())
    }
}

impl From<UpcastError> for ApplyError {
    fn from(error: UpcastError) -> Self {
        ApplyError::Upcast(Box::new(error))
    }
}

impl From<UpcastError> for LoadError {
    fn from(error: UpcastError) -> Self {
        LoadError::Upcast(Box::new(error))
    }
}

/// What [`Engine::end_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// `SessionEnded` was written.
    Ended,
    /// The session had already ended: nothing was written.
    AlreadyEnded,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new checkpoint.
    pub checkpoint: ObjectId,
    /// Its parent.
    pub parent: Option<ObjectId>,
    /// The aggregate's path (with its new id, for an anonymous aggregate).
    pub path: String,
    /// Events written.
    pub events: usize,
    /// Partitions written, sorted.
    pub partitions: Vec<String>,
    /// Times the handler ran (1 unless the aggregate changed under it).
    pub attempts: u32,
    /// Whether the checkpoint was re-parented onto a moved head without re-running.
    pub rebased: bool,
    /// The partition version of the snapshot the aggregate was rehydrated from (its last
    /// attempt), if one was used.
    pub resumed_from: Option<u64>,
    /// Events read and folded to rehydrate it (after the snapshot, if one was used).
    pub events_folded: u64,
    /// True when the command's id was already applied: nothing ran or was written, and this is
    /// the original checkpoint's result (`attempts` 0).
    pub replayed: bool,
}

/// What [`Engine::snapshot_now`] did for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMade {
    /// The partition.
    pub partition: String,
    /// What happened.
    pub outcome: SnapshotOutcome,
}

/// See [`SnapshotMade`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// A snapshot was stored.
    Taken {
        /// Its partition version.
        version: u64,
        /// Its domain version.
        domain: String,
        /// Bytes of state.
        bytes: u64,
    },
    /// The newest valid snapshot is already at the partition's version.
    Current {
        /// The version.
        version: u64,
    },
    /// None was made, and why (no policy, an exec handler, no events, a decode failure).
    Skipped(String),
}

/// What one run of a handler left in its context.
struct CtxOut {
    emitted: Vec<(PartitionName, depot::Event)>,
    reads: Vec<PartitionName>,
    read_failure: Option<depot::Error>,
    event_failure: Option<EventError>,
    upcast_failure: Option<UpcastError>,
    state: Option<Vec<u8>>,
    folded: u64,
}

/// A partition rehydrated for a command: the base checkpoint, the snapshot it resumes from (if
/// any) and the events after it (all of them without one).
struct Rehydrated {
    base: Option<ObjectId>,
    from: Option<depot::snapshot::Snapshot>,
    events: Vec<depot::EventRecord>,
}

/// Applies commands to a depot.
#[derive(Clone)]
pub struct Engine {
    depot: Arc<Depot>,
    manifest: Arc<Manifest>,
    id_fn: Arc<IdFn>,
    target: RefName,
    max_attempts: u32,
}

pub(crate) fn check_session(session: &str) -> Result<(), ApplyError> {
    let ok = !session.is_empty()
        && session.len() <= 128
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApplyError::BadSession(session.to_owned()))
    }
}

impl Engine {
    /// An engine over `depot` with the commands of `manifest`; new ids are random UUIDs.
    pub fn new(depot: Arc<Depot>, manifest: Manifest) -> Engine {
        Engine {
            depot,
            manifest: Arc::new(manifest),
            id_fn: Arc::new(|| uuid::Uuid::new_v4().to_string()),
            target: RefName::head(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Replaces the id function used for new aggregates and sessions.
    pub fn with_id_fn(mut self, id_fn: impl Fn() -> String + Send + Sync + 'static) -> Engine {
        self.id_fn = Arc::new(id_fn);
        self
    }

    /// Applies to `target` instead of `HEAD`.
    pub fn with_ref(mut self, target: RefName) -> Engine {
        self.target = target;
        self
    }

    /// Sets how many times a command may be re-run on fresh state.
    pub fn with_max_attempts(mut self, attempts: u32) -> Engine {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The ref it applies commands to (and projections follow).
    pub fn target(&self) -> &RefName {
        &self.target
    }

    /// The depot.
    pub fn depot(&self) -> &Arc<Depot> {
        &self.depot
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Starts a session: writes `SessionStarted` to `session/<id>` and returns the id.
    pub fn start_session(&self) -> Result<String, ApplyError> {
        let id = (self.id_fn)();
        check_session(&id)?;
        self.write_session_event(&id, SESSION_STARTED, "startSession")?;
        Ok(id)
    }

    /// Ends a session: writes `SessionEnded`. Idempotent: ending a session that already ended
    /// writes nothing and returns [`SessionEnd::AlreadyEnded`]. A session that was never started
    /// is [`ApplyError::UnknownSession`] (not found).
    pub fn end_session(&self, id: &str) -> Result<SessionEnd, ApplyError> {
        check_session(id)?;
        let (started, ended) = self.session_state(id)?;
        if !started {
            return Err(ApplyError::UnknownSession(id.to_owned()));
        }
        if ended {
            return Ok(SessionEnd::AlreadyEnded);
        }
        self.write_session_event(id, SESSION_ENDED, "endSession")?;
        Ok(SessionEnd::Ended)
    }

    /// Whether a session was started and not ended.
    pub fn session_is_live(&self, id: &str) -> Result<bool, ApplyError> {
        let (started, ended) = self.session_state(id)?;
        Ok(started && !ended)
    }

    /// Whether a session was started, and whether it ended.
    fn session_state(&self, id: &str) -> Result<(bool, bool), ApplyError> {
        let partition = PartitionName::new(&format!("session/{id}"))
            .map_err(|_| ApplyError::BadSession(id.to_owned()))?;
        let events = self.depot.partition_events(&partition)?;
        let started = events
            .iter()
            .any(|e| e.event.name().as_str() == SESSION_STARTED);
        let ended = events
            .iter()
            .any(|e| e.event.name().as_str() == SESSION_ENDED);
        Ok((started, ended))
    }

    fn write_session_event(&self, id: &str, name: &str, command: &str) -> Result<(), ApplyError> {
        let partition = PartitionName::new(&format!("session/{id}"))
            .map_err(|_| ApplyError::BadSession(id.to_owned()))?;
        let event = depot::Event::new(
            depot::EventName::new(name).expect("a valid constant event name"),
            format!(r#"{{"session":"{id}"}}"#),
        );
        let message = Command::new(partition.as_str(), command, Map::new())?.to_json();
        let mut request = CommitRequest::new(None, vec![(partition, event)], id, message);
        request.target = self.target.clone();
        request.base = Base::Tip;
        request.reflog_message = format!("session {command}");
        self.depot.commit(request)?;
        Ok(())
    }

    /// Applies a command payload (JSON bytes) in `session`.
    pub fn apply(&self, session: &str, payload: &[u8]) -> Result<Applied, ApplyError> {
        let command = Command::parse(payload)?;
        self.apply_command(session, command)
    }

    /// Applies the typed command `command` to the aggregate at `path` in `session`: the same as
    /// [`Engine::apply`] with `{"path":path,"name":C::NAME,"params":command}`.
    pub fn execute<C: DomainCommand>(
        &self,
        session: &str,
        path: &str,
        command: &C,
    ) -> Result<Applied, ApplyError> {
        let params = match serde_json::to_value(command) {
            Ok(serde_json::Value::Object(params)) => params,
            // A unit struct: a command without parameters.
            Ok(serde_json::Value::Null) => Map::new(),
            Ok(other) => {
                return Err(ApplyError::Params {
                    name: C::NAME,
                    reason: format!("it serializes as {other}"),
                })
            }
            Err(e) => {
                return Err(ApplyError::Params {
                    name: C::NAME,
                    reason: e.to_string(),
                })
            }
        };
        self.apply_command(session, Command::new(path, C::NAME, params)?)
    }

    /// The state of the aggregate at `path` as of the engine's ref (`HEAD` unless
    /// [`Engine::with_ref`]), outside any command: its events folded into an `A`. A path with no
    /// events gives `A::default()` at version 0. A stored event that does not decode is an
    /// error, never skipped.
    pub fn load<A: Aggregate>(&self, path: &str) -> Result<Loaded<A>, LoadError> {
        let partition = PartitionName::new(path).map_err(|source| LoadError::BadPath {
            path: path.to_owned(),
            source,
        })?;
        let (_, records) = self.snapshot(&partition)?;
        let recorded = self.manifest.upcasters().recorded(&records)?;
        let state = fold::<A>(&partition, &recorded)?;
        Ok(Loaded {
            state,
            version: records.len() as u64,
        })
    }

    /// Makes a snapshot now of every partition matching `glob` whose kind has a snapshot policy
    /// (`retro snapshot`), from its newest valid snapshot and the events after it. Only Rust
    /// aggregates: an exec handler's state comes only with a command's response. Snapshots
    /// follow `HEAD`'s branch: with another target ref nothing is made.
    pub fn snapshot_now(&self, glob: &str) -> Result<Vec<SnapshotMade>, ApplyError> {
        let mut out = Vec::new();
        let on_head = self.targets_head()?;
        for (partition, _) in self.depot.partitions(glob)? {
            let skipped = |why: &str| SnapshotMade {
                partition: partition.to_string(),
                outcome: SnapshotOutcome::Skipped(why.to_owned()),
            };
            let Some((kind, policy)) = self.manifest.snapshot_policy_of(partition.as_str()) else {
                out.push(skipped("its kind has no snapshot policy"));
                continue;
            };
            if !on_head {
                out.push(skipped("snapshots follow HEAD's branch only"));
                continue;
            }
            if policy.after_command {
                out.push(skipped(&format!(
                    "'{kind}' has exec handlers: they hand over their state with a command's response"
                )));
                continue;
            }
            let rehydrated = self.rehydrate(&partition, Some(&policy))?;
            let Some(last) = rehydrated.events.last() else {
                let made = match &rehydrated.from {
                    Some(s) => SnapshotOutcome::Current { version: s.version },
                    None => SnapshotOutcome::Skipped("it has no events".to_owned()),
                };
                out.push(SnapshotMade {
                    partition: partition.to_string(),
                    outcome: made,
                });
                continue;
            };
            let (version, checkpoint) = (last.version, last.checkpoint);
            let recorded = self.manifest.upcasters().recorded(&rehydrated.events)?;
            let state = policy.rebuild(
                &partition,
                rehydrated.from.as_ref().map(|s| s.state.as_slice()),
                &recorded,
            );
            match state {
                Some(Ok(state)) => {
                    let bytes = state.len() as u64;
                    self.depot.save_snapshot(&depot::snapshot::Snapshot {
                        partition: partition.to_string(),
                        domain: policy.domain.clone(),
                        version,
                        checkpoint,
                        state,
                    });
                    out.push(SnapshotMade {
                        partition: partition.to_string(),
                        outcome: SnapshotOutcome::Taken {
                            version,
                            domain: policy.domain.clone(),
                            bytes,
                        },
                    });
                }
                Some(Err(why)) => out.push(skipped(&format!("its state does not rebuild: {why}"))),
                None => out.push(skipped("no Rust state to encode")),
            }
        }
        Ok(out)
    }

    /// Subscribes to the engine's ref (`HEAD` unless [`Engine::with_ref`]) after `position`
    /// (`None`: from the start) for the partitions matching `glob`. The subscription shares the
    /// depot (`'static`, `Send`): move it into a thread of its own.
    pub fn subscribe(
        &self,
        glob: &str,
        position: Option<ObjectId>,
    ) -> Result<depot::Subscription<'static>, depot::Error> {
        self.depot.subscribe_shared(&self.target, glob, position)
    }

    /// The durable consumer `name` on the engine's ref for `glob` (its position in
    /// `refs/consumers/<name>`; a new one starts after `start`), sharing the depot like
    /// [`Engine::subscribe`].
    pub fn consumer(
        &self,
        name: &str,
        glob: &str,
        start: Option<ObjectId>,
    ) -> Result<depot::Consumer<'static>, depot::Error> {
        self.depot.consumer_shared(name, &self.target, glob, start)
    }

    /// Applies a parsed command in `session`.
    pub fn apply_command(&self, session: &str, command: Command) -> Result<Applied, ApplyError> {
        self.apply_command_with_fields(session, command, Vec::new())
    }

    /// [`Engine::apply_command`], with extra header fields on the checkpoint it writes (a merge's
    /// replay records `replayed-from` so): not `session`, `date` or `signature`.
    pub fn apply_command_with_fields(
        &self,
        session: &str,
        command: Command,
        fields: Vec<(depot::FieldKey, depot::FieldValue)>,
    ) -> Result<Applied, ApplyError> {
        check_session(session)?;
        let resolved = self.manifest.resolve(command.path(), command.name())?;
        let runner = resolved.command.runner.clone();
        let requires_session = resolved.command.requires_session;
        // One rule for Rust and exec handlers alike: `Deposit` and `deposit` are one command,
        // and from here on it carries the manifest's spelling.
        let command = command.with_name(&resolved.command.name);
        let command = if resolved.anonymous {
            let path = format!("{}/{}", resolved.kind, (self.id_fn)());
            command.with_path(path)
        } else {
            command
        };
        let partition = PartitionName::new(command.path()).map_err(|e| CommandError::BadPath {
            path: command.path().to_owned(),
            reason: e.to_string(),
        })?;
        if requires_session && !self.session_is_live(session)? {
            return Err(ApplyError::SessionRequired {
                session: session.to_owned(),
                command: command.name().to_owned(),
            });
        }
        let message = command.to_json();
        let anonymous_kind = resolved.anonymous.then_some(resolved.kind);
        if let Some(command_id) = command.id() {
            // A retry of an applied command: answered from history, no handler run.
            let (target, head) = self.depot.resolve_ref(&self.target)?;
            if let Some(original) = self.depot.applied_command_on(&target, head, command_id)? {
                return self.replayed(original, command_id, &command, anonymous_kind);
            }
        }
        // The command's own ids, then what the caller adds (a merge's `replayed-from`).
        let fields = {
            let mut all = command.ids().fields();
            all.extend(fields);
            all
        };
        // Tell the depot a commit is coming, so that concurrent applies share fsyncs.
        let _intent = self.depot.commit_intent();
        let policy = resolved.snapshot.clone();
        for attempt in 1..=self.max_attempts {
            let mut use_snapshots = policy.is_some();
            let (base, ctx_out, ran, from, version) = loop {
                let rehydrated =
                    self.rehydrate(&partition, policy.as_deref().filter(|_| use_snapshots))?;
                let recorded: Vec<RecordedEvent> =
                    self.manifest.upcasters().recorded(&rehydrated.events)?;
                let from_version = rehydrated.from.as_ref().map_or(0, |s| s.version);
                // Stored events: upcasting may split one into several.
                let stored = rehydrated.events.len() as u64;
                let version = from_version + stored;
                let mut ctx = Context {
                    depot: &self.depot,
                    command: &command,
                    path: partition.clone(),
                    session,
                    version,
                    emitted: Vec::new(),
                    reads: vec![partition.clone()],
                    id_fn: &*self.id_fn,
                    read_failure: None,
                    event_failure: None,
                    snapshot_policy: policy.clone(),
                    snapshot_wanted: policy.as_ref().is_some_and(|p| {
                        !p.after_command
                            && !recorded.is_empty()
                            && version - from_version >= p.every
                    }),
                    snapshot_state: None,
                    snapshot_unusable: None,
                    upcasters: self.manifest.upcasters(),
                    upcast_failure: None,
                };
                let ran = {
                    let _span = tracing::info_span!(
                        "handler",
                        path = command.path(),
                        command = command.name(),
                        attempt,
                    )
                    .entered();
                    runner.run_resumed(
                        &mut ctx,
                        rehydrated.from.as_ref().map(|s| s.state.as_slice()),
                        &recorded,
                    )
                };
                if let (Some(reason), Some(snapshot)) =
                    (ctx.snapshot_unusable.take(), &rehydrated.from)
                {
                    self.depot.warn(format!(
                        "the snapshot of '{}' at version {} cannot be used ({reason}); removed, rehydrating from its events",
                        depot::shown(partition.as_str()),
                        snapshot.version
                    ));
                    self.depot.drop_snapshot(snapshot);
                    use_snapshots = false;
                    continue;
                }
                if let Some(p) = policy.as_ref().filter(|p| !p.after_command) {
                    // A Rust aggregate's state as rehydrated, at the checkpoint of its last event.
                    if let (Some(state), Some(last)) = (ctx.snapshot_state.take(), recorded.last())
                    {
                        self.depot.save_snapshot(&depot::snapshot::Snapshot {
                            partition: partition.to_string(),
                            domain: p.domain.clone(),
                            version,
                            checkpoint: last.checkpoint,
                            state,
                        });
                    }
                }
                let out = CtxOut {
                    emitted: std::mem::take(&mut ctx.emitted),
                    reads: std::mem::take(&mut ctx.reads),
                    read_failure: ctx.read_failure.take(),
                    event_failure: ctx.event_failure.take(),
                    state: ctx.snapshot_state.take(),
                    upcast_failure: ctx.upcast_failure.take(),
                    folded: stored,
                };
                break (
                    rehydrated.base,
                    out,
                    ran,
                    rehydrated.from.map(|s| s.version),
                    version,
                );
            };
            let mut ctx = ctx_out;
            if let Err(failure) = ran {
                if let Some(read_failure) = ctx.read_failure.take() {
                    // Not the domain's decision: the depot could not be read.
                    return Err(ApplyError::Depot(read_failure));
                }
                if let Some(event_failure) = ctx.event_failure.take() {
                    // Nor this: a stored event does not decode.
                    return Err(ApplyError::Event(event_failure));
                }
                if let Some(upcast_failure) = ctx.upcast_failure.take() {
                    // Nor this: a stored event cannot be upcast.
                    return Err(ApplyError::Upcast(Box::new(upcast_failure)));
                }
                let recorded =
                    self.record_failure(base, session, &message, command.ids(), &failure);
                return Err(match failure {
                    Failure::Rejected(error) => ApplyError::Rejected { error, recorded },
                    Failure::Broken { handler, reason } => ApplyError::Handler {
                        handler,
                        reason,
                        recorded,
                    },
                });
            }
            if ctx.emitted.is_empty() {
                return Err(ApplyError::NothingToWrite {
                    path: command.path().to_owned(),
                    command: command.name().to_owned(),
                    head: base,
                });
            }
            let mut partitions: Vec<String> =
                ctx.emitted.iter().map(|(p, _)| p.to_string()).collect();
            partitions.sort();
            partitions.dedup();
            let events = ctx.emitted.len();
            let own = ctx.emitted.iter().filter(|(p, _)| *p == partition).count() as u64;
            let request = CommitRequest {
                target: self.target.clone(),
                base: Base::Expect(base),
                events: std::mem::take(&mut ctx.emitted),
                session: session.to_owned(),
                date: Utc::now(),
                message: message.clone().into_bytes(),
                reads: std::mem::take(&mut ctx.reads),
                rebase: true,
                reflog_message: format!("apply {} {}", command.path(), command.name()),
                fields: fields.clone(),
                log: true,
            };
            // The commit span covers the group commit, its fsync included.
            let span = tracing::info_span!(
                "commit",
                path = command.path(),
                attempt,
                checkpoint = tracing::field::Empty,
                outcome = tracing::field::Empty,
            );
            let result = span.in_scope(|| self.depot.commit(request));
            let outcome = match &result {
                Ok(committed) => {
                    span.record("checkpoint", tracing::field::display(committed.checkpoint));
                    "committed"
                }
                Err(e) if e.is_conflict() => "conflict",
                Err(_) => "failed",
            };
            span.record("outcome", outcome);
            match result {
                Ok(committed) if committed.replayed => {
                    // Another writer applied this command id first (the depot's check under
                    // its lock): its checkpoint is the answer, this run's events are dropped.
                    let command_id = command.id().unwrap_or_default();
                    return self.replayed(
                        committed.checkpoint,
                        command_id,
                        &command,
                        anonymous_kind,
                    );
                }
                Ok(committed) => {
                    if let (Some(state), Some(p)) = (ctx.state.take(), &policy) {
                        let new_version = version + own;
                        if p.after_command && own > 0 && new_version - from.unwrap_or(0) >= p.every
                        {
                            self.depot.save_snapshot(&depot::snapshot::Snapshot {
                                partition: partition.to_string(),
                                domain: p.domain.clone(),
                                version: new_version,
                                checkpoint: committed.checkpoint,
                                state,
                            });
                        }
                    }
                    return Ok(Applied {
                        checkpoint: committed.checkpoint,
                        parent: committed.parent,
                        path: command.path().to_owned(),
                        events,
                        partitions,
                        attempts: attempt,
                        rebased: committed.rebased,
                        resumed_from: from,
                        events_folded: ctx.folded,
                        replayed: false,
                    });
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApplyError::Conflict {
            attempts: self.max_attempts,
        })
    }

    /// The partition's events as of the target ref's head: through the index when the target is
    /// `HEAD`'s branch, by walking history otherwise.
    fn snapshot(
        &self,
        partition: &PartitionName,
    ) -> Result<(Option<ObjectId>, Vec<depot::EventRecord>), depot::Error> {
        if self.target.as_str() == "HEAD" {
            // The common case: the index follows HEAD, no need to compare branches.
            return self.depot.partition_snapshot(partition);
        }
        let (target, head) = self.depot.resolve_ref(&self.target)?;
        let (head_branch, _) = self.depot.resolve_ref(&RefName::head())?;
        if target == head_branch {
            return self.depot.partition_snapshot(partition);
        }
        Ok((head, self.depot.partition_events_at(head, partition)?))
    }

    /// Whether the target ref is `HEAD`'s branch: the index (and snapshots) follow it.
    fn targets_head(&self) -> Result<bool, depot::Error> {
        if self.target.as_str() == "HEAD" {
            return Ok(true);
        }
        let (target, _) = self.depot.resolve_ref(&self.target)?;
        let (head_branch, _) = self.depot.resolve_ref(&RefName::head())?;
        Ok(target == head_branch)
    }

    /// The partition's events as of the target's head, from the newest usable snapshot when
    /// `policy` is given. A snapshot is used only when the event at its version on `HEAD`'s
    /// first-parent history was added by exactly the checkpoint it was taken at: so it folds
    /// exactly the events the index has before the ones returned, and one taken on a history a
    /// non-fast-forward move left behind is never used. Refs other than `HEAD`'s branch read
    /// every event (by walking history) and use no snapshot.
    fn rehydrate(
        &self,
        partition: &PartitionName,
        policy: Option<&crate::domain::SnapshotPolicy>,
    ) -> Result<Rehydrated, depot::Error> {
        if let Some(policy) = policy {
            if self.targets_head()? {
                for snapshot in self.depot.load_snapshots(partition, &policy.domain) {
                    if snapshot.version == 0 {
                        continue;
                    }
                    let (base, mut events) = self
                        .depot
                        .partition_snapshot_after(partition, snapshot.version - 1)?;
                    let matches = events.first().is_some_and(|first| {
                        first.version == snapshot.version && first.checkpoint == snapshot.checkpoint
                    });
                    if matches {
                        events.remove(0);
                        return Ok(Rehydrated {
                            base,
                            from: Some(snapshot),
                            events,
                        });
                    }
                }
            }
        }
        let (base, events) = self.snapshot(partition)?;
        Ok(Rehydrated {
            base,
            from: None,
            events,
        })
    }

    /// The result of `command` (id `command_id`) answered by `original`, the checkpoint that
    /// applied the id: checked to be the same command (an anonymous aggregate's path, resolved
    /// afresh on each attempt, matches any path of its kind `anonymous_kind`).
    fn replayed(
        &self,
        original: ObjectId,
        command_id: &str,
        command: &Command,
        anonymous_kind: Option<&str>,
    ) -> Result<Applied, ApplyError> {
        let checkpoint = self.depot.read_checkpoint(&original)?;
        let message = String::from_utf8_lossy(checkpoint.message()).into_owned();
        let reused = || ApplyError::CommandIdReused {
            command_id: command_id.to_owned(),
            checkpoint: original,
            original: message.chars().take(200).collect(),
        };
        let stored = Command::parse(checkpoint.message()).map_err(|_| reused())?;
        let same_path = match anonymous_kind {
            Some(kind) => stored
                .path()
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|id| !id.is_empty() && !id.contains('/')),
            None => stored.path() == command.path(),
        };
        if !same_path || stored.name() != command.name() || stored.params() != command.params() {
            return Err(reused());
        }
        let affix = self.depot.read_affix(&checkpoint.affix())?;
        let partitions: Vec<String> = affix.partitions().map(|(p, _)| p.to_string()).collect();
        Ok(Applied {
            checkpoint: original,
            parent: checkpoint.first_parent(),
            path: stored.path().to_owned(),
            events: affix.event_count(),
            partitions,
            attempts: 0,
            rebased: false,
            resumed_from: None,
            events_folded: 0,
            replayed: true,
        })
    }

    fn record_failure(
        &self,
        base: Option<ObjectId>,
        session: &str,
        message: &str,
        ids: &CommandIds,
        failure: &Failure,
    ) -> Option<ObjectId> {
        let affix = Affix::new();
        let affix_id = Object::Affix(affix.clone()).to_encoded().id();
        let mut checkpoint = Checkpoint::new(
            affix_id,
            base.into_iter().collect(),
            session,
            Utc::now(),
            message,
        )
        .ok()?;
        let text: String = match failure {
            Failure::Rejected(e) => format!("{}: {}", e.code, e.message),
            Failure::Broken { handler, reason } => format!("handler {handler} failed: {reason}"),
        }
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(FieldValue::MAX_LEN)
        .collect();
        checkpoint.set_field(
            FieldKey::new("error").expect("a valid constant key"),
            FieldValue::new(&text).ok()?,
        );
        // The ids go with it, for tracing; an orphaned checkpoint is on no history, so its
        // command id does not count as applied (a retry runs again).
        for (key, value) in ids.fields() {
            checkpoint.set_field(key, value);
        }
        self.depot.record_failure(&checkpoint, &affix).ok()
    }
}

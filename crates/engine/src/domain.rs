//! Command handlers and their registry: the [`Runner`] trait (typed Rust handlers and external
//! programs), [`Failure`], and the [`Manifest`] that registers runners by path prefix and command
//! name, with each kind's snapshot policy ([`SnapshotPolicy`]).
//!
//! Dependencies point one way: `domain` uses [`Context`] (a runner is handed one) and the
//! vocabulary in [`aggregate`](crate::aggregate); neither of those uses `domain`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Map;

use depot::PartitionName;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate::{fold, fold_into, Aggregate, DomainCommand, DomainError, RecordedEvent};
use crate::command::normalize_command_name;
use crate::context::Context;
use crate::upcast::{Upcaster, Upcasters};

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

    /// Runs the command on the state of a snapshot (`snapshot`: its bytes, as this runner's
    /// domain encoded them) and the events after it. With `None`, the same as [`Runner::run`].
    /// A runner that cannot use the bytes sets nothing and says so through
    /// `Context::snapshot_unusable` (the engine then drops the snapshot and runs again on the
    /// whole history). The default knows no snapshots.
    fn run_resumed(
        &self,
        ctx: &mut Context<'_>,
        snapshot: Option<&[u8]>,
        events: &[RecordedEvent],
    ) -> Result<(), Failure> {
        match snapshot {
            None => self.run(ctx, events),
            Some(_) => {
                ctx.snapshot_unusable = Some(format!("{} takes no snapshots", self.describe()));
                Err(Failure::Broken {
                    handler: self.describe(),
                    reason: "takes no snapshots".to_owned(),
                })
            }
        }
    }
}

/// How a Rust aggregate's state is encoded in a snapshot (serde JSON).
struct StateCodec<A> {
    encode: fn(&A) -> Result<Vec<u8>, serde_json::Error>,
    decode: fn(&[u8]) -> Result<A, serde_json::Error>,
}

/// Folds a partition's events (from a snapshot's state, or from nothing) into a Rust aggregate's
/// state and encodes it: what `retro snapshot` runs, type-erased.
type Rebuild = dyn Fn(&PartitionName, Option<&[u8]>, &[RecordedEvent]) -> Result<Vec<u8>, String>
    + Send
    + Sync;

/// When and under which domain version an aggregate kind (or an exec command) is snapshotted.
#[derive(Clone)]
pub struct SnapshotPolicy {
    pub(crate) every: u64,
    pub(crate) domain: String,
    /// Exec handlers hand back the state *after* their command's events; Rust aggregates are
    /// snapshotted as rehydrated, before the command.
    pub(crate) after_command: bool,
    /// A `StateCodec<A>` for a Rust aggregate `A`.
    codec: Option<Arc<dyn Any + Send + Sync>>,
    rebuild: Option<Arc<Rebuild>>,
}

impl fmt::Debug for SnapshotPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotPolicy")
            .field("every", &self.every)
            .field("domain", &self.domain)
            .field("after_command", &self.after_command)
            .finish_non_exhaustive()
    }
}

impl SnapshotPolicy {
    /// A snapshot every `every` events, of a Rust aggregate `A` at domain version `version`
    /// (the domain's own: bump it whenever `A`'s fold or encoding changes). The stored domain
    /// version is `rust:<type name of A>:<version>`.
    pub fn rust<A>(every: u64, version: &str) -> SnapshotPolicy
    where
        A: Aggregate + Serialize + DeserializeOwned,
    {
        let codec = StateCodec::<A> {
            encode: |state| serde_json::to_vec(state),
            decode: |bytes| serde_json::from_slice(bytes),
        };
        let rebuild = |partition: &PartitionName,
                       snapshot: Option<&[u8]>,
                       events: &[RecordedEvent]|
         -> Result<Vec<u8>, String> {
            let mut state: A = match snapshot {
                Some(bytes) => serde_json::from_slice(bytes).map_err(|e| e.to_string())?,
                None => A::default(),
            };
            fold_into(&mut state, partition, events).map_err(|e| e.to_string())?;
            serde_json::to_vec(&state).map_err(|e| e.to_string())
        };
        SnapshotPolicy {
            every: every.max(1),
            domain: format!("rust:{}:{version}", std::any::type_name::<A>()),
            after_command: false,
            codec: Some(Arc::new(codec)),
            rebuild: Some(Arc::new(rebuild)),
        }
    }

    /// A snapshot every `every` events of the state an exec handler returns, under domain
    /// version `domain` (a hash of its manifest entry and handler files).
    pub(crate) fn exec(every: u64, domain: String) -> SnapshotPolicy {
        SnapshotPolicy {
            every: every.max(1),
            domain,
            after_command: true,
            codec: None,
            rebuild: None,
        }
    }

    /// Events between snapshots.
    pub fn every(&self) -> u64 {
        self.every
    }

    /// The domain version snapshots are stored under.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The state folded from `snapshot` (or nothing) and `events`, encoded; `None` for exec
    /// handlers (only a command's run gives their state).
    pub(crate) fn rebuild(
        &self,
        partition: &PartitionName,
        snapshot: Option<&[u8]>,
        events: &[RecordedEvent],
    ) -> Option<Result<Vec<u8>, String>> {
        self.rebuild
            .as_ref()
            .map(|rebuild| rebuild(partition, snapshot, events))
    }
}

type HandlerFn<A> = dyn Fn(&A, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync;

struct TypedRunner<A> {
    name: String,
    handler: Box<HandlerFn<A>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Runner for TypedRunner<A> {
    fn run(&self, ctx: &mut Context<'_>, events: &[RecordedEvent]) -> Result<(), Failure> {
        let aggregate = match fold::<A>(ctx.path(), events) {
            Ok(aggregate) => aggregate,
            Err(e) => {
                // Not the domain's decision: its history does not decode (the engine reports
                // the event error, and records no rejection).
                let failure = Failure::Broken {
                    handler: self.describe(),
                    reason: e.to_string(),
                };
                ctx.event_failure = Some(e);
                return Err(failure);
            }
        };
        (self.handler)(&aggregate, ctx).map_err(Failure::Rejected)
    }

    fn describe(&self) -> String {
        format!("'{}' (Rust)", self.name)
    }

    fn run_resumed(
        &self,
        ctx: &mut Context<'_>,
        snapshot: Option<&[u8]>,
        events: &[RecordedEvent],
    ) -> Result<(), Failure> {
        let codec = ctx
            .snapshot_policy
            .as_ref()
            .and_then(|p| p.codec.as_ref())
            .and_then(|c| c.downcast_ref::<StateCodec<A>>());
        let Some(codec) = codec else {
            if snapshot.is_some() {
                ctx.snapshot_unusable = Some(format!(
                    "the snapshot policy of '{}' is not for {}",
                    self.name,
                    std::any::type_name::<A>()
                ));
                return Err(self.unusable());
            }
            return self.run(ctx, events);
        };
        let mut aggregate = match snapshot {
            Some(bytes) => match (codec.decode)(bytes) {
                Ok(state) => state,
                Err(e) => {
                    ctx.snapshot_unusable = Some(format!("its state does not decode: {e}"));
                    return Err(self.unusable());
                }
            },
            None => A::default(),
        };
        if let Err(e) = fold_into(&mut aggregate, ctx.path(), events) {
            let failure = Failure::Broken {
                handler: self.describe(),
                reason: e.to_string(),
            };
            ctx.event_failure = Some(e);
            return Err(failure);
        }
        if ctx.snapshot_wanted {
            ctx.snapshot_state = (codec.encode)(&aggregate).ok();
        }
        (self.handler)(&aggregate, ctx).map_err(Failure::Rejected)
    }
}

impl<A> TypedRunner<A> {
    fn unusable(&self) -> Failure {
        Failure::Broken {
            handler: format!("'{}' (Rust)", self.name),
            reason: "unusable snapshot".to_owned(),
        }
    }
}

/// A registered command.
#[derive(Clone)]
pub(crate) struct CommandEntry {
    pub name: String,
    pub runner: Arc<dyn Runner>,
    pub requires_session: bool,
    /// This command's own policy (exec handlers); else the kind's.
    pub snapshot: Option<Arc<SnapshotPolicy>>,
}

/// A registered aggregate kind.
#[derive(Clone, Default)]
pub(crate) struct KindEntry {
    pub commands: HashMap<String, CommandEntry>,
    /// The kind's snapshot policy (Rust aggregates).
    pub snapshot: Option<Arc<SnapshotPolicy>>,
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
    upcasters: Upcasters,
    /// The declared projections (`crate::projection`).
    pub(crate) projections: crate::projection::Declared,
}

/// How a command path resolved.
pub(crate) struct Resolved<'a> {
    pub kind: &'a str,
    pub command: &'a CommandEntry,
    /// True when the path named only the kind: a new aggregate needs an id.
    pub anonymous: bool,
    /// The snapshot policy that applies to this command's aggregate.
    pub snapshot: Option<Arc<SnapshotPolicy>>,
}

impl Manifest {
    /// An empty manifest.
    pub fn new() -> Manifest {
        Manifest::default()
    }

    /// Adds the upcaster step `event` v`from` → v`from + 1` (steps in order, from v1: a gap is
    /// refused). Events are then read at their name's newest version, and emitted at it.
    pub fn upcast(
        &mut self,
        event: &str,
        from: u32,
        upcaster: Upcaster,
    ) -> Result<&mut Self, RegistrationError> {
        self.upcasters
            .add(event, from, upcaster)
            .map_err(|e| RegistrationError {
                what: "upcaster",
                name: event.to_owned(),
                reason: e.reason,
            })?;
        Ok(self)
    }

    /// Declares `version` as the newest of `event` without a chain of its own (a name that
    /// upcasters rename into, say); with a chain it must be the chain's end.
    pub fn event_version(
        &mut self,
        event: &str,
        version: u32,
    ) -> Result<&mut Self, RegistrationError> {
        self.upcasters
            .declare_version(event, version)
            .map_err(|e| RegistrationError {
                what: "event version",
                name: event.to_owned(),
                reason: e.reason,
            })?;
        Ok(self)
    }

    /// The domain's upcasters.
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// Replaces the domain's upcasters (a JSON manifest's, once all of them are valid).
    pub(crate) fn set_upcasters(&mut self, upcasters: Upcasters) {
        self.upcasters = upcasters;
    }

    /// `policy` keyed also by the upcasters: a snapshot folded from upcast events is not used
    /// once they change. Without upcasters, the policy as it is (keys as before upcasting).
    fn keyed(&self, policy: Arc<SnapshotPolicy>) -> Arc<SnapshotPolicy> {
        match self.upcasters.fingerprint() {
            None => policy,
            Some(fingerprint) => {
                let mut keyed = (*policy).clone();
                keyed.domain = format!("{}+upcast:{fingerprint}", keyed.domain);
                Arc::new(keyed)
            }
        }
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
        self.register_with(kind, command, runner, requires_session, None)
    }

    /// [`Manifest::register`] with a snapshot policy of the command's own.
    pub(crate) fn register_with(
        &mut self,
        kind: &str,
        command: &str,
        runner: Arc<dyn Runner>,
        requires_session: bool,
        snapshot: Option<Arc<SnapshotPolicy>>,
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
                snapshot,
            },
        );
        Ok(())
    }

    /// The snapshot policy of the kind `path` belongs to (a Rust aggregate's; exec commands
    /// carry their own), for `retro snapshot`.
    pub(crate) fn snapshot_policy_of(&self, path: &str) -> Option<(String, Arc<SnapshotPolicy>)> {
        let (kind, entry, _) = self.kind_of(path)?;
        let policy = entry
            .snapshot
            .clone()
            .or_else(|| entry.commands.values().find_map(|c| c.snapshot.clone()))?;
        Some((kind.to_owned(), self.keyed(policy)))
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
            snapshot: command_entry
                .snapshot
                .clone()
                .or_else(|| entry.snapshot.clone())
                .map(|p| self.keyed(p)),
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

impl<A: Aggregate + Serialize + DeserializeOwned> KindBuilder<'_, A> {
    /// Snapshots this kind's aggregates every `every` events (at least 1), their state encoded
    /// with serde (JSON), under the domain's version string `version`: change it whenever the
    /// fold or the state's shape changes, and older snapshots are ignored and rebuilt. A
    /// rehydration then folds the newest valid snapshot and the events after it.
    pub fn snapshot_every(self, every: u64, version: &str) -> Self {
        let policy = Arc::new(SnapshotPolicy::rust::<A>(every, version));
        if let Some(entry) = self.manifest.kinds.get_mut(&self.kind) {
            entry.snapshot = Some(policy);
        }
        self
    }
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

    /// Registers the typed command `C` (by `C::NAME`): its handler gets the parameters decoded
    /// as a `C`; parameters that do not decode are an `invalid_params` rejection.
    pub fn handle<C: DomainCommand>(
        self,
        handler: impl Fn(&A, C, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static,
    ) -> Result<Self, RegistrationError> {
        self.add(C::NAME, typed(handler), false)
    }

    /// [`KindBuilder::handle`] for a command that needs a live session.
    pub fn handle_in_session<C: DomainCommand>(
        self,
        handler: impl Fn(&A, C, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static,
    ) -> Result<Self, RegistrationError> {
        self.add(C::NAME, typed(handler), true)
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

/// A handler of raw parameters from a handler of a typed command.
fn typed<A, C: DomainCommand>(
    handler: impl Fn(&A, C, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static,
) -> impl Fn(&A, &mut Context<'_>) -> Result<(), DomainError> + Send + Sync + 'static {
    move |aggregate, ctx| {
        let command: C = match ctx.params_as() {
            Ok(command) => command,
            // No parameters: a unit struct deserializes from `null`, not from `{}`.
            Err(e) if ctx.params().is_empty() => {
                serde_json::from_value(serde_json::Value::Null).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        };
        handler(aggregate, command, ctx)
    }
}

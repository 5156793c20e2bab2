//! Projections: read models fed the events of matching partitions in history order, one batch
//! per checkpoint, each acknowledged before the projection's position moves past it.
//!
//! A projection is declared in the [`Manifest`] ([`Manifest::projection`], or a JSON manifest's
//! `"projections"`: [`exec`](crate::exec)) with a name, partition globs and a handler: a Rust
//! [`Projection`] or an external program ([`ExecProjection`]). A [`ProjectionRunner`] feeds it:
//!
//! - Each [`Batch`] is one checkpoint's matching events (never half a checkpoint), with the
//!   generation it is for and whether that generation is live. When the handler acknowledges it,
//!   the generation's position (`refs/projections/NAME/gen-N`) moves to the checkpoint by
//!   compare-and-swap; a runner killed before that delivers the batch again (at-least-once;
//!   nothing is skipped, nothing reordered). A lost compare-and-swap means another runner runs
//!   the same projection: [`ProjectionError::AnotherRunner`].
//! - A handler that fails is retried with exponential backoff ([`RetryPolicy`]); when the
//!   attempts are spent, the generation is *parked*: the failing batch's checkpoint, events and
//!   error are written to the projection's state record, and nothing more is delivered to that
//!   generation until [`retry`] clears it. Nothing is skipped silently.
//! - [`rebuild`] starts a new generation from the beginning of history beside the live one. The
//!   runner feeds both; when the new one has caught up with the ref, the handler is told (a
//!   switch notice: an empty batch with `switched_from`), and on its acknowledgement one
//!   compare-and-swap of the state record makes it live and retires the old one.
//! - A live generation's handler may issue commands (a process manager): each names the event
//!   that caused it, and is applied with that event as its causation id, the causing
//!   checkpoint's correlation id (else its id) as correlation id, and a command id derived from
//!   the projection, the event and its place, so a batch delivered again issues nothing twice.
//!   A generation that is not live issues nothing (it replays history the live one already
//!   reacted to).
//!
//! The durable state (refs and the state record) is [`state`]'s; the exec protocol is
//! [`exec`](crate::exec)'s; [`status`] reads it all back for `retro project status`, `GET
//! /projections` and the lag metric.

mod exec_projection;
pub mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use depot::{Delivery, Depot, EventRecord, Expected, LogInfo, ObjectId, RefEdit, RefValue};

use crate::command::{check_id, Command, CommandIds};
use crate::domain::Manifest;
use crate::engine::{ApplyError, Engine};
use crate::upcast::{UpcastError, UpcastEvent};

pub use exec_projection::{parse_ack, ExecProjection, ExecProjectionSpec};
pub use state::{Parked, ParkedEvent, State};

use state::Change;

/// The longest projection name.
pub const MAX_NAME_LEN: usize = 64;
/// How long a runner waits for new checkpoints between checks of its state (a rebuild or a
/// retry requested by another process).
const IDLE_STEP: Duration = Duration::from_millis(200);

/// One batch: the matching events of one checkpoint, for one generation.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    /// The projection.
    pub projection: &'a str,
    /// The generation this batch is for.
    pub generation: u64,
    /// Whether that generation is live (its read model is the one being served).
    pub live: bool,
    /// The checkpoint the batch ends at (`None` only for the switch notice of a generation that
    /// caught up with an empty history).
    pub checkpoint: Option<ObjectId>,
    /// The events, in affix order, as the domain reads them (upcast to their newest versions).
    pub events: &'a [BatchEvent],
    /// Set on the switch notice: this generation becomes live, replacing that one, once the
    /// notice is acknowledged. A notice has no events.
    pub switched_from: Option<u64>,
}

/// One event of a batch.
#[derive(Debug, Clone)]
pub struct BatchEvent {
    /// The stored event (its id, partition, position, checkpoint, date, session).
    pub record: EventRecord,
    /// Its name as the domain reads it.
    pub name: String,
    /// Its schema version as the domain reads it.
    pub schema_version: u32,
    /// Its payload as the domain reads it.
    pub data: Value,
}

/// What a handler answers to a batch it handled.
#[derive(Debug, Clone, Default)]
pub struct Ack {
    /// Commands to apply (live generations only), each with the event that caused it.
    pub commands: Vec<Issued>,
}

/// A command a projection issues, and the event of the batch that caused it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The causing event's id (one of the batch's).
    pub event: ObjectId,
    /// The command.
    pub command: Command,
}

/// Why a handler did not handle a batch: retried, then parked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerFailure {
    /// What went wrong.
    pub message: String,
    /// The event that failed, when the handler knows (else the whole batch is shown).
    pub event: Option<ObjectId>,
}

impl HandlerFailure {
    /// A failure of the whole batch.
    pub fn new(message: impl Into<String>) -> HandlerFailure {
        HandlerFailure {
            message: message.into(),
            event: None,
        }
    }
}

/// A projection's handler, in Rust. Handlers are called from one thread per runner, one batch
/// at a time, for every generation (tell them apart by [`Batch::generation`]).
pub trait Projection: Send + Sync {
    /// Handles one batch. `Ok` acknowledges it (the position then moves past it); an error is
    /// retried, then parks the generation.
    fn handle(&self, batch: &Batch<'_>) -> Result<Ack, HandlerFailure>;

    /// Generation `generation` was retired (a rebuild replaced it): drop what it kept.
    fn retire(&self, generation: u64) {
        let _ = generation;
    }

    /// A short description for messages.
    fn describe(&self) -> String {
        "(Rust)".to_owned()
    }
}

/// How a failing batch is retried before its generation is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each one, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1-based).
    pub fn pause(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// A declared projection.
#[derive(Clone)]
pub struct ProjectionDef {
    name: String,
    partitions: Vec<String>,
    handler: Arc<dyn Projection>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for ProjectionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionDef")
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .field("handler", &self.handler.describe())
            .field("retry", &self.retry)
            .finish()
    }
}

impl ProjectionDef {
    /// Projection `name` of the partitions matching any of `partitions`, handled by `handler`.
    /// A name is 1 to 64 ASCII letters, digits, `-` and `_`; at least one glob is needed, and a
    /// glob of several must not use `{…}` itself (they are joined as one `{a,b}`).
    pub fn new(
        name: &str,
        partitions: &[&str],
        handler: Arc<dyn Projection>,
    ) -> Result<ProjectionDef, ProjectionError> {
        check_name(name)?;
        let partitions: Vec<String> = partitions.iter().map(|g| (*g).to_owned()).collect();
        let def = ProjectionDef {
            name: name.to_owned(),
            partitions,
            handler,
            retry: RetryPolicy::default(),
        };
        let glob = def.glob()?;
        // Compiled once here, so a bad glob is a declaration error, not a runner's.
        Depot::in_memory()?.partitions(&glob)?;
        Ok(def)
    }

    /// With this retry policy (attempts at least 1).
    pub fn with_retry(mut self, retry: RetryPolicy) -> ProjectionDef {
        self.retry = RetryPolicy {
            attempts: retry.attempts.max(1),
            ..retry
        };
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its partition globs.
    pub fn partitions(&self) -> &[String] {
        &self.partitions
    }

    /// Its retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Its handler's description.
    pub fn describe(&self) -> String {
        self.handler.describe()
    }

    /// The one glob the subscription follows.
    fn glob(&self) -> Result<String, ProjectionError> {
        let invalid = |reason: &str| ProjectionError::Invalid {
            projection: self.name.clone(),
            reason: reason.to_owned(),
        };
        match self.partitions.as_slice() {
            [] => Err(invalid("it names no partition glob")),
            [one] => Ok(one.clone()),
            many => {
                if many.iter().any(|g| g.contains(['{', '}', ','])) {
                    return Err(invalid(
                        "with several globs, none may use '{', '}' or ',' (write one glob with {a,b} instead)",
                    ));
                }
                Ok(format!("{{{}}}", many.join(",")))
            }
        }
    }
}

/// Refuses a projection name that is not 1 to 64 ASCII letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), ProjectionError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::BadName(name.to_owned()))
    }
}

/// What went wrong with a projection (not its handler: a failing handler parks, it is no error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A projection name is malformed (class invalid).
    #[error("projection name '{}' must be 1 to 64 characters: ASCII letters, digits, '-' or '_'", depot::shown(.0))]
    BadName(String),
    /// A declaration is invalid (class invalid).
    #[error("projection '{projection}' is invalid: {reason}")]
    Invalid {
        /// The projection.
        projection: String,
        /// Why.
        reason: String,
    },
    /// The manifest declares no such projection (class not found).
    #[error("the domain manifest declares no projection '{}' (declared: {})", depot::shown(.name), if .declared.is_empty() { "none".to_owned() } else { .declared.join(", ") })]
    Unknown {
        /// The name asked for.
        name: String,
        /// The declared ones.
        declared: Vec<String>,
    },
    /// The manifest declares no projection at all (class not found).
    #[error("the domain manifest declares no projections")]
    NoneDeclared,
    /// A rebuild is already running (class conflict).
    #[error("projection '{projection}' is already rebuilding generation {generation}; it goes live when it has caught up")]
    AlreadyRebuilding {
        /// The projection.
        projection: String,
        /// The rebuilding generation.
        generation: u64,
    },
    /// A generation's position moved under this runner: another runner runs the same
    /// projection (class conflict).
    #[error("projection '{projection}' generation {generation} was moved by someone else: another runner is running it (run one runner per projection)")]
    AnotherRunner {
        /// The projection.
        projection: String,
        /// The generation.
        generation: u64,
    },
    /// The state record could not be changed: it kept changing (class conflict).
    #[error("the state of projection '{projection}' kept changing while it was being updated")]
    Contended {
        /// The projection.
        projection: String,
    },
    /// The state record is not one (class corrupt).
    #[error("the state of projection '{projection}' cannot be read: {reason}")]
    BadState {
        /// The projection.
        projection: String,
        /// Why.
        reason: String,
    },
    /// The depot failed (its class).
    #[error(transparent)]
    Depot(#[from] depot::Error),
}

impl From<depot::refdb::RefNameError> for ProjectionError {
    fn from(e: depot::refdb::RefNameError) -> ProjectionError {
        ProjectionError::Depot(e.into())
    }
}

impl ProjectionError {
    /// The error's class (exit code and HTTP status: docs/errors.md).
    pub fn class(&self) -> depot::ErrorClass {
        use depot::ErrorClass;
        match self {
            ProjectionError::BadName(_) | ProjectionError::Invalid { .. } => ErrorClass::Invalid,
            ProjectionError::Unknown { .. } | ProjectionError::NoneDeclared => ErrorClass::NotFound,
            ProjectionError::AlreadyRebuilding { .. }
            | ProjectionError::AnotherRunner { .. }
            | ProjectionError::Contended { .. } => ErrorClass::Conflict,
            ProjectionError::BadState { .. } => ErrorClass::Corrupt,
            ProjectionError::Depot(e) => e.class(),
        }
    }
}

impl Manifest {
    /// Declares a projection (a name declared twice is refused).
    pub fn projection(&mut self, def: ProjectionDef) -> Result<&mut Self, ProjectionError> {
        if self.projections.contains_key(&def.name) {
            return Err(ProjectionError::Invalid {
                projection: def.name.clone(),
                reason: "it is declared twice".to_owned(),
            });
        }
        self.projections.insert(def.name.clone(), Arc::new(def));
        Ok(self)
    }

    /// The declared projections, by name.
    pub fn projections(&self) -> impl Iterator<Item = &ProjectionDef> {
        self.projections.values().map(|d| &**d)
    }

    /// The declared projection `name`.
    pub fn projection_def(&self, name: &str) -> Result<Arc<ProjectionDef>, ProjectionError> {
        check_name(name)?;
        self.projections
            .get(name)
            .cloned()
            .ok_or_else(|| ProjectionError::Unknown {
                name: name.to_owned(),
                declared: self.projections.keys().cloned().collect(),
            })
    }
}

/// The projections a manifest holds (a field of [`Manifest`]).
pub(crate) type Declared = BTreeMap<String, Arc<ProjectionDef>>;

/// Asks for a rebuild of projection `name`: a new generation, from the beginning, beside the live
/// one. Returns its number. Refused while another rebuild runs.
pub fn rebuild(depot: &Depot, name: &str) -> Result<u64, ProjectionError> {
    check_name(name)?;
    state::update(depot, name, "rebuild", |current| {
        let mut state = current.cloned().unwrap_or_else(|| State::new(name));
        if let Some(generation) = state.next {
            return Err(ProjectionError::AlreadyRebuilding {
                projection: name.to_owned(),
                generation,
            });
        }
        let generation = state.live + 1;
        state.next = Some(generation);
        // A position left by an older generation of that number (never: numbers only grow)
        // would be resumed from: refuse to start from anything but the beginning.
        let stale = state::delete_generation(depot, name, generation)?;
        Ok(Change::Write(
            state,
            stale.into_iter().collect(),
            generation,
        ))
    })
}

/// Un-parks projection `name`'s generations (`None`: every parked one); returns those
/// un-parked. A running runner then delivers the failing batch again.
pub fn retry(
    depot: &Depot,
    name: &str,
    generation: Option<u64>,
) -> Result<Vec<u64>, ProjectionError> {
    check_name(name)?;
    state::update(depot, name, "retry", |current| {
        let Some(state) = current else {
            return Ok(Change::Keep(Vec::new()));
        };
        let mut state = state.clone();
        let (cleared, kept): (Vec<Parked>, Vec<Parked>) = state
            .parked
            .into_iter()
            .partition(|p| generation.is_none_or(|g| g == p.generation));
        state.parked = kept;
        let cleared: Vec<u64> = cleared.iter().map(|p| p.generation).collect();
        if cleared.is_empty() {
            return Ok(Change::Keep(cleared));
        }
        Ok(Change::Write(state, Vec::new(), cleared))
    })
}

/// One generation's place, as [`status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationStatus {
    /// Its number.
    pub generation: u64,
    /// The last checkpoint it acknowledged (`None`: none yet).
    pub position: Option<ObjectId>,
    /// Checkpoints of `HEAD`'s first-parent history after its position (`None`: the position is
    /// not on that history).
    pub behind: Option<u64>,
}

/// A projection, as `retro project status` and `GET /projections` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// Its partition globs (empty when the manifest does not declare it).
    pub partitions: Vec<String>,
    /// Whether the manifest declares it (a projection with state but no declaration was
    /// removed from the domain, or is another manifest's).
    pub declared: bool,
    /// The live generation (`None`: it never ran).
    pub live: Option<GenerationStatus>,
    /// The generation rebuilding beside it.
    pub rebuilding: Option<GenerationStatus>,
    /// Parked generations, with the failing batch.
    pub parked: Vec<Parked>,
}

fn generation_status(
    depot: &Depot,
    name: &str,
    generation: u64,
    head: Option<ObjectId>,
) -> Result<GenerationStatus, ProjectionError> {
    let position = state::position(depot, name, generation)?;
    let behind = match (head, position) {
        (None, _) => Some(0),
        (Some(head), Some(at)) if depot.on_head_history(&at)? => {
            Some(depot.first_parents_since(head, Some(at))?.len() as u64)
        }
        (Some(_), Some(_)) => None,
        (Some(head), None) => Some(depot.first_parents_since(head, None)?.len() as u64),
    };
    Ok(GenerationStatus {
        generation,
        position,
        behind,
    })
}

/// Every projection the manifest declares or the depot has state for, by name.
pub fn status(
    depot: &Depot,
    manifest: &Manifest,
) -> Result<Vec<ProjectionStatus>, ProjectionError> {
    let mut names: Vec<String> = manifest.projections.keys().cloned().collect();
    names.extend(state::names_in(depot)?);
    names.sort();
    names.dedup();
    let head = depot.head()?;
    let mut out = Vec::new();
    for name in names {
        let def = manifest.projections.get(&name);
        let state = state::read(depot, &name)?.map(|(_, s)| s);
        let (live, rebuilding, parked) = match state {
            None => (None, None, Vec::new()),
            Some(state) => (
                Some(generation_status(depot, &name, state.live, head)?),
                state
                    .next
                    .map(|n| generation_status(depot, &name, n, head))
                    .transpose()?,
                state.parked,
            ),
        };
        out.push(ProjectionStatus {
            partitions: def.map(|d| d.partitions.clone()).unwrap_or_default(),
            declared: def.is_some(),
            name,
            live,
            rebuilding,
            parked,
        });
    }
    Ok(out)
}

/// When [`ProjectionRunner::run`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// When every generation has caught up with the ref (and a rebuild has switched) or is
    /// parked: for scripts, cron jobs and tests.
    CaughtUp,
    /// When `stop` turns true: for `retro project run` and `retro serve --projections`.
    Stopped,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Batches acknowledged during the run (switch notices included).
    pub acknowledged: u64,
    /// Generations parked when it returned.
    pub parked: Vec<u64>,
}

/// One generation being fed.
struct Feed {
    generation: u64,
    live: bool,
    subscription: depot::Subscription<'static>,
    acked: Option<ObjectId>,
    /// A delivery taken while waiting, handled next.
    pending: Option<Delivery>,
}

/// Feeds one projection's live generation, and the rebuilding one beside it, until told to stop
/// (see the module docs).
pub struct ProjectionRunner {
    engine: Engine,
    def: Arc<ProjectionDef>,
    glob: String,
    /// The state record the feeds were built from.
    state_id: Option<ObjectId>,
    state: State,
    feeds: Vec<Feed>,
    acknowledged: u64,
    /// Called with a line for the log (a retry, a park, a switch).
    log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl ProjectionRunner {
    /// A runner of the manifest's projection `name`, over the engine's depot and ref (commands it
    /// issues go through `engine`).
    pub fn new(engine: Engine, name: &str) -> Result<ProjectionRunner, ProjectionError> {
        let def = engine.manifest().projection_def(name)?;
        let glob = def.glob()?;
        Ok(ProjectionRunner {
            engine,
            state: State::new(def.name()),
            def,
            glob,
            state_id: None,
            feeds: Vec::new(),
            acknowledged: 0,
            log: Arc::new(|line| tracing::warn!("{line}")),
        })
    }

    /// Sends the runner's notices (retries, parks, switches) to `log` instead of `tracing`.
    pub fn on_log(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> ProjectionRunner {
        self.log = Arc::new(log);
        self
    }

    fn depot(&self) -> &Arc<Depot> {
        self.engine.depot()
    }

    fn name(&self) -> &str {
        self.def.name()
    }

    /// Reads the state record (creating it on first run) and rebuilds the feeds when it changed.
    fn refresh(&mut self) -> Result<(), ProjectionError> {
        let name = self.def.name().to_owned();
        let depot = self.depot().clone();
        let current = match state::read(&depot, &name)? {
            Some(found) => found,
            None => {
                state::update(&depot, &name, "start", |current| match current {
                    Some(_) => Ok(Change::Keep(())),
                    None => Ok(Change::Write(State::new(&name), Vec::new(), ())),
                })?;
                state::read(&depot, &name)?.ok_or_else(|| ProjectionError::BadState {
                    projection: name.clone(),
                    reason: "its state record vanished right after it was written".to_owned(),
                })?
            }
        };
        if Some(current.0) == self.state_id {
            return Ok(());
        }
        let (id, state) = current;
        let mut generations = vec![(state.live, true)];
        generations.extend(state.next.map(|n| (n, false)));
        let mut feeds = Vec::new();
        for (generation, live) in generations {
            if state.parked(generation).is_some() {
                continue;
            }
            let acked = state::position(&depot, &name, generation)?;
            let subscription = depot.subscribe_shared(self.engine.target(), &self.glob, acked)?;
            feeds.push(Feed {
                generation,
                live,
                subscription,
                acked,
                pending: None,
            });
        }
        self.state_id = Some(id);
        self.state = state;
        self.feeds = feeds;
        Ok(())
    }

    /// Runs until `until` (see [`Until`]); `stop` ends the run between batches (and during a
    /// backoff pause) with nothing lost: an unacknowledged batch is delivered again next run.
    pub fn run(&mut self, until: Until, stop: &AtomicBool) -> Result<RunOutcome, ProjectionError> {
        self.acknowledged = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(self.outcome());
            }
            self.refresh()?;
            let mut worked = false;
            for i in 0..self.feeds.len() {
                if self.step(i, stop)? {
                    worked = true;
                    // The state may have changed (a park, a switch): rebuild the feeds first.
                    break;
                }
            }
            if worked {
                continue;
            }
            // Nothing to do: every feed is at the head (or parked, or none is left).
            if until == Until::CaughtUp {
                return Ok(self.outcome());
            }
            match self.feeds.first_mut() {
                Some(feed) => {
                    feed.pending = feed.subscription.next_timeout(IDLE_STEP)?;
                }
                None => std::thread::sleep(IDLE_STEP),
            }
        }
    }

    fn outcome(&self) -> RunOutcome {
        RunOutcome {
            acknowledged: self.acknowledged,
            parked: self.state.parked.iter().map(|p| p.generation).collect(),
        }
    }

    /// Does one thing for feed `i`: handles its next batch, or acknowledges the checkpoints it
    /// skipped, or switches a caught-up rebuild. False when there was nothing to do.
    fn step(&mut self, i: usize, stop: &AtomicBool) -> Result<bool, ProjectionError> {
        let feed = &mut self.feeds[i];
        let delivery = match feed.pending.take() {
            Some(d) => Some(d),
            None => feed.subscription.poll()?,
        };
        match delivery {
            Some(Delivery::Checkpoint { id, events, .. }) => {
                let generation = feed.generation;
                let live = feed.live;
                let events = match self.upcast(events) {
                    Ok(events) => events,
                    Err((failure, events)) => {
                        self.park(generation, Some(id), &events, &failure, 1)?;
                        return Ok(true);
                    }
                };
                let def = self.def.clone();
                let batch = Batch {
                    projection: def.name(),
                    generation,
                    live,
                    checkpoint: Some(id),
                    events: &events,
                    switched_from: None,
                };
                if self.deliver(&batch, stop)? {
                    self.move_position(i, id)?;
                }
                Ok(true)
            }
            Some(Delivery::NonFastForward { from, head, .. }) => {
                let generation = feed.generation;
                let failure = HandlerFailure::new(format!(
                    "the ref moved from {from} to {} without descending from it (a non-fast-forward move): this generation's read model holds events no longer on the ref; run 'retro project rebuild {}': the new generation replaces this one when it has caught up",
                    head.map_or("nothing".to_owned(), |h| h.to_string()),
                    self.name()
                ));
                self.park(generation, Some(from), &[], &failure, 1)?;
                Ok(true)
            }
            None => {
                let position = feed.subscription.position();
                if let Some(position) = position.filter(|p| Some(*p) != feed.acked) {
                    // Checkpoints without matching events: move past them too (lag stays true).
                    self.move_position(i, position)?;
                    return Ok(true);
                }
                if !self.feeds[i].live {
                    return self.switch(i, stop);
                }
                Ok(false)
            }
        }
    }

    /// The events as the domain reads them; an upcast failure is the batch's failure (parked,
    /// naming the event).
    #[allow(clippy::result_large_err)]
    fn upcast(
        &self,
        records: Vec<EventRecord>,
    ) -> Result<Vec<BatchEvent>, (HandlerFailure, Vec<BatchEvent>)> {
        let upcasters = self.engine.manifest().upcasters();
        let mut out = Vec::with_capacity(records.len());
        let mut raw = Vec::with_capacity(records.len());
        let mut failure = None;
        for record in records {
            let data: Value = serde_json::from_slice(record.event.data()).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(record.event.data()).into_owned())
            });
            let stored = UpcastEvent {
                name: record.event.name().as_str().to_owned(),
                version: record.event.version(),
                data: data.clone(),
            };
            raw.push(BatchEvent {
                record: record.clone(),
                name: stored.name.clone(),
                schema_version: stored.version,
                data,
            });
            if failure.is_some() {
                continue;
            }
            match upcasters.upcast(record.id, &record.partition, record.version, stored) {
                Ok(read) => out.extend(read.into_iter().map(|e| BatchEvent {
                    record: record.clone(),
                    name: e.name,
                    schema_version: e.version,
                    data: e.data,
                })),
                Err(e) => failure = Some(upcast_failure(&record, &e)),
            }
        }
        match failure {
            None => Ok(out),
            Some(failure) => Err((failure, raw)),
        }
    }

    /// Hands `batch` to the handler, retrying with backoff; issues its commands. True when it
    /// was acknowledged; false when the generation was parked or the run was stopped.
    fn deliver(&mut self, batch: &Batch<'_>, stop: &AtomicBool) -> Result<bool, ProjectionError> {
        let policy = self.def.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .def
                .handler
                .handle(batch)
                .and_then(|ack| self.issue(batch, ack));
            match result {
                Ok(()) => {
                    self.acknowledged += 1;
                    return Ok(true);
                }
                Err(failure) if attempt < policy.attempts => {
                    let pause = policy.pause(attempt);
                    (self.log)(&format!(
                        "projection {} generation {}: attempt {attempt} of {} failed at {}: {}; retrying in {} ms",
                        self.name(),
                        batch.generation,
                        policy.attempts,
                        batch.checkpoint.map_or("the switch".to_owned(), |c| c.to_short_hex(12)),
                        failure.message,
                        pause.as_millis()
                    ));
                    if !pause_unless_stopped(pause, stop) {
                        return Ok(false);
                    }
                }
                Err(failure) => {
                    self.park(
                        batch.generation,
                        batch.checkpoint,
                        batch.events,
                        &failure,
                        attempt,
                    )?;
                    return Ok(false);
                }
            }
        }
    }

    /// Applies the commands a live generation's handler issued, each caused by its event.
    fn issue(&self, batch: &Batch<'_>, ack: Ack) -> Result<(), HandlerFailure> {
        if ack.commands.is_empty() {
            return Ok(());
        }
        if !batch.live {
            // Replaying history the live generation reacted to already: nothing to issue.
            return Ok(());
        }
        let session = format!("{}-{}", state::STATE_SESSION, self.name());
        let mut correlation: Option<Option<String>> = None;
        for (place, issued) in ack.commands.into_iter().enumerate() {
            let Some(cause) = batch.events.iter().find(|e| e.record.id == issued.event) else {
                return Err(HandlerFailure::new(format!(
                    "command {} names event {}, which is not in the batch",
                    issued.command.to_json(),
                    issued.event
                )));
            };
            let correlation = match &correlation {
                Some(c) => c.clone(),
                None => {
                    let found = self
                        .depot()
                        .read_checkpoint(&cause.record.checkpoint)
                        .map_err(|e| HandlerFailure::new(e.to_string()))?
                        .field(depot::CORRELATION_ID_FIELD)
                        .map(str::to_owned);
                    correlation = Some(found.clone());
                    found
                }
            };
            let id = issued_command_id(self.name(), &issued.event, place);
            let command = issued
                .command
                .caused_by(&cause.record, correlation.as_deref())
                .or_ids(CommandIds {
                    id: Some(id),
                    ..CommandIds::default()
                });
            match self.engine.apply_command(&session, command) {
                Ok(_)
                | Err(ApplyError::Rejected { .. })
                | Err(ApplyError::NothingToWrite { .. }) => {}
                Err(e) => {
                    return Err(HandlerFailure {
                        message: format!("an issued command failed: {e}"),
                        event: Some(issued.event),
                    })
                }
            }
        }
        Ok(())
    }

    /// Moves feed `i`'s position to `to` by compare-and-swap.
    fn move_position(&mut self, i: usize, to: ObjectId) -> Result<(), ProjectionError> {
        let feed = &self.feeds[i];
        let generation = feed.generation;
        let edit = RefEdit {
            name: state::generation_ref(self.name(), generation)?,
            expected: Expected::MustBeOrAbsent(feed.acked),
            new: Some(RefValue::Direct(to)),
            log: LogInfo {
                session: state::STATE_SESSION.to_owned(),
                message: "ack".to_owned(),
            },
        };
        match self.depot().update_refs(&[edit]) {
            Ok(()) => {
                self.feeds[i].acked = Some(to);
                Ok(())
            }
            Err(e) if e.class() == depot::ErrorClass::Conflict => {
                Err(ProjectionError::AnotherRunner {
                    projection: self.name().to_owned(),
                    generation,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Parks `generation` on the failing batch, in the state record.
    fn park(
        &mut self,
        generation: u64,
        checkpoint: Option<ObjectId>,
        events: &[BatchEvent],
        failure: &HandlerFailure,
        attempts: u32,
    ) -> Result<(), ProjectionError> {
        let mut shown: Vec<ParkedEvent> = Vec::new();
        for event in events {
            if failure.event.is_some_and(|f| f != event.record.id)
                || shown.iter().any(|s| s.id == event.record.id.to_string())
            {
                continue;
            }
            shown.push(ParkedEvent {
                id: event.record.id.to_string(),
                partition: event.record.partition.to_string(),
                version: event.record.version,
                name: event.record.event.name().to_string(),
            });
        }
        if shown.is_empty() {
            // The handler named an event that is not in the batch: show them all.
            shown = events
                .iter()
                .map(|event| ParkedEvent {
                    id: event.record.id.to_string(),
                    partition: event.record.partition.to_string(),
                    version: event.record.version,
                    name: event.record.event.name().to_string(),
                })
                .collect();
            shown.dedup();
        }
        let parked = Parked {
            generation,
            checkpoint: checkpoint.map(|c| c.to_string()),
            events: shown,
            error: failure.message.clone(),
            attempts,
            at: state::now(),
        };
        let name = self.name().to_owned();
        (self.log)(&format!(
            "projection {name} generation {generation}: parked after {attempts} attempt(s) at {}: {}; 'retro project retry {name}' delivers it again",
            checkpoint.map_or("the switch".to_owned(), |c| c.to_short_hex(12)),
            failure.message
        ));
        state::update(self.depot(), &name, "park", |current| {
            let mut state = current.cloned().unwrap_or_else(|| State::new(&name));
            if state.live != generation && state.next != Some(generation) {
                // Retired meanwhile: nothing to park.
                return Ok(Change::Keep(()));
            }
            state.parked.retain(|p| p.generation != generation);
            state.parked.push(parked.clone());
            Ok(Change::Write(state, Vec::new(), ()))
        })?;
        // The feed's subscription went past the failing batch: drop it (rebuilt from the
        // acknowledged position when un-parked).
        self.state_id = None;
        Ok(())
    }

    /// Feed `i` (the rebuilding generation) is at the head: tells the handler, then makes it
    /// live in one compare-and-swap of the state record, retiring the old generation.
    fn switch(&mut self, i: usize, stop: &AtomicBool) -> Result<bool, ProjectionError> {
        let generation = self.feeds[i].generation;
        let position = self.feeds[i].acked;
        let from = self.state.live;
        let def = self.def.clone();
        let batch = Batch {
            projection: def.name(),
            generation,
            live: true,
            checkpoint: position,
            events: &[],
            switched_from: Some(from),
        };
        if !self.deliver(&batch, stop)? {
            return Ok(true);
        }
        let name = self.name().to_owned();
        let depot = self.depot().clone();
        let switched = state::update(&depot, &name, "switch", |current| {
            let Some(state) = current else {
                return Ok(Change::Keep(false));
            };
            if state.next != Some(generation) || state.parked(generation).is_some() {
                return Ok(Change::Keep(false));
            }
            // The rebuild must still be where the handler was told it is.
            if state::position(&depot, &name, generation)? != position {
                return Ok(Change::Keep(false));
            }
            let mut state = state.clone();
            let retired = state.live;
            state.live = generation;
            state.next = None;
            state.parked.retain(|p| p.generation != retired);
            let extra = state::delete_generation(&depot, &name, retired)?;
            Ok(Change::Write(state, extra.into_iter().collect(), true))
        })?;
        if switched {
            (self.log)(&format!(
                "projection {name}: generation {generation} caught up and is live (generation {from} retired)"
            ));
            self.def.handler.retire(from);
        }
        self.state_id = None;
        Ok(true)
    }
}

/// The failure of a batch whose event cannot be read as the domain's newest version.
fn upcast_failure(record: &EventRecord, e: &UpcastError) -> HandlerFailure {
    HandlerFailure {
        message: format!("event cannot be read as the domain's newest version: {e}"),
        event: Some(record.id),
    }
}

/// The command id of the `place`-th command a projection issued for `event`: the same on every
/// delivery of the batch, so a batch delivered again issues nothing twice.
pub fn issued_command_id(projection: &str, event: &ObjectId, place: usize) -> String {
    let id = format!("projection:{projection}:{}:{place}", event.to_hex());
    debug_assert!(check_id("command id", &id).is_ok());
    id
}

/// Sleeps `pause` in slices, returning false as soon as `stop` turns true.
fn pause_unless_stopped(pause: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + pause;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

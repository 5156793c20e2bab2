//! The commit pipeline: turn events into an affix and a checkpoint, and move a ref by CAS.
//!
//! Callers prepare their objects (encode and hash events and the affix) on their own thread, then
//! queue. The first caller to find no leader becomes the leader: it takes the whole queue as one
//! batch, takes the depot lock, decides each checkpoint's parent against the ref's current value,
//! appends every object and one journal record in one write, fsyncs once, materializes the refs and
//! hands each caller its own result (group commit). Each request keeps its own checkpoint and its
//! own compare-and-swap: a request whose base is stale fails with a conflict, unless it allows a
//! rebase and no checkpoint that landed since its base touched a partition it read or wrote, in
//! which case its checkpoint is re-parented onto the new head without re-running anything.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};

use super::{Depot, Error};
use crate::hash::ObjectId;
use crate::index::IndexedCheckpoint;
use crate::journal::{JournalRecord, JournalUpdate};
use crate::name::{FieldKey, FieldValue, PartitionName};
use crate::object::checkpoint_log::Frontier;
use crate::object::{Affix, Checkpoint, EncodedObject, Event, Object};
use crate::odb::{pack_object_payload, RecordKind};
use crate::refdb::{Expected, LogInfo, RefEdit, RefName, RefValue};

/// How far back a rebase may look for the request's base.
const REBASE_WALK_LIMIT: usize = 10_000;
/// The most requests one leader takes in one batch.
const MAX_BATCH: usize = 512;
/// How many recent checkpoints are kept decoded for rebase checks and index catch-up.
const RECENT_CAPACITY: usize = 8192;

/// What the new checkpoint's parent must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The ref must hold this value (`None`: must be unborn), or the request may be rebased.
    Expect(Option<ObjectId>),
    /// On top of whatever the ref holds when the commit is made (imports, demos).
    Tip,
}

/// A request to add one checkpoint.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The ref to move (`HEAD` is followed to its target).
    pub target: RefName,
    /// What the parent must be.
    pub base: Base,
    /// The events, in emission order, with their partitions.
    pub events: Vec<(PartitionName, Event)>,
    /// The session; required, one token.
    pub session: String,
    /// The checkpoint date (whole seconds are kept).
    pub date: DateTime<Utc>,
    /// The message: the original command payload.
    pub message: Vec<u8>,
    /// Partitions the request read, for the rebase check (the ones it writes are added).
    pub reads: Vec<PartitionName>,
    /// Whether a stale base may be rebased onto a moved head when nothing it touched changed.
    pub rebase: bool,
    /// The reflog line (default: `commit`).
    pub reflog_message: String,
    /// Further checkpoint fields (not `date`, `session` or `signature`, which the pipeline
    /// writes itself), such as `correlation-id`, `replayed-from` or a redaction checkpoint's `redaction` and
    /// `redaction-batch`. A [`COMMAND_ID_FIELD`] among
    /// them makes the commit idempotent: when a checkpoint with that command id is already on the
    /// target's first-parent history (or earlier in the same batch), nothing is written and the
    /// result is that checkpoint's, with [`Committed::replayed`] set (see `command_ids.rs`).
    pub fields: Vec<(FieldKey, FieldValue)>,
    /// Whether the checkpoint carries the `log` field (docs/format.md, the checkpoint log): true
    /// unless an import reproduces a checkpoint written before the field, byte for byte.
    pub log: bool,
}

/// The checkpoint field naming the command a checkpoint applied: the key of idempotency.
pub const COMMAND_ID_FIELD: &str = "command-id";
/// The checkpoint field naming the request, trace or workflow a command belongs to.
pub const CORRELATION_ID_FIELD: &str = "correlation-id";
/// The checkpoint field naming what caused the command (an event, a message, a parent span).
pub const CAUSATION_ID_FIELD: &str = "causation-id";

impl CommitRequest {
    /// The command id among [`CommitRequest::fields`], if any.
    pub fn command_id(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_str() == COMMAND_ID_FIELD)
            .map(|(_, v)| v.as_str())
    }
}

impl CommitRequest {
    /// A request to commit `events` on `HEAD` on top of `base`.
    pub fn new(
        base: Option<ObjectId>,
        events: Vec<(PartitionName, Event)>,
        session: impl Into<String>,
        message: impl Into<Vec<u8>>,
    ) -> CommitRequest {
        CommitRequest {
            target: RefName::head(),
            base: Base::Expect(base),
            events,
            session: session.into(),
            date: Utc::now(),
            message: message.into(),
            reads: Vec::new(),
            rebase: false,
            reflog_message: "commit".to_owned(),
            fields: Vec::new(),
            log: true,
        }
    }
}

/// What a commit produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The new checkpoint.
    pub checkpoint: ObjectId,
    /// Its parent.
    pub parent: Option<ObjectId>,
    /// Its affix.
    pub affix: ObjectId,
    /// The events, in emission order.
    pub events: Vec<ObjectId>,
    /// The ref that moved.
    pub ref_name: RefName,
    /// True when the checkpoint was re-parented onto a head that moved after its base.
    pub rebased: bool,
    /// True when nothing was written because a checkpoint with the request's command id was
    /// already applied: `checkpoint` (and the rest) are that original checkpoint's.
    pub replayed: bool,
}

/// A request with its objects encoded.
struct Prepared {
    request: CommitRequest,
    events: Vec<EncodedObject>,
    /// The data objects of sealed events, written with them.
    data: Vec<EncodedObject>,
    affix: Affix,
    affix_encoded: EncodedObject,
    touched: HashSet<PartitionName>,
}

fn prepare(mut request: CommitRequest, seal: bool) -> Result<Prepared, Error> {
    if request.session.is_empty()
        || request.session.len() > 128
        || request
            .session
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid(format!(
            "session id '{}' must be 1 to 128 characters with no whitespace",
            request.session.escape_debug()
        )));
    }
    let mut keys = HashSet::new();
    for (key, _) in &request.fields {
        let written_here = matches!(
            key.as_str(),
            crate::object::SESSION_KEY
                | crate::object::DATE_KEY
                | crate::signing::SIGNATURE_KEY
                | crate::object::checkpoint_log::LOG_KEY
        );
        if written_here || !keys.insert(key.as_str()) {
            return Err(Error::Invalid(format!(
                "checkpoint field '{}' is written by the commit itself or given twice",
                key.as_str()
            )));
        }
    }
    let mut events = Vec::with_capacity(request.events.len());
    let mut data = Vec::new();
    if seal {
        for (_, event) in &mut request.events {
            let (sealed, data_object) = super::redact::seal(event)?;
            *event = sealed;
            data.push(data_object);
        }
    }
    if seal && !request.message.is_empty() {
        // The command goes into a data object of its own: erasable like an event's data.
        let message = Object::Data(crate::object::Data::new(
            super::redact::os_random()?,
            std::mem::take(&mut request.message),
        ))
        .to_encoded();
        request.fields.push((
            FieldKey::new(crate::object::MESSAGE_DATA_KEY)
                .map_err(|e| Error::Invalid(e.to_string()))?,
            FieldValue::new(&message.id().to_string())
                .map_err(|e| Error::Invalid(e.to_string()))?,
        ));
        data.push(message);
    }
    let mut affix = Affix::new();
    for (partition, event) in &request.events {
        let encoded = Object::Event(event.clone()).to_encoded();
        affix.push(partition.clone(), encoded.id());
        events.push(encoded);
    }
    let affix_encoded = Object::Affix(affix.clone()).to_encoded();
    let touched = affix
        .partitions()
        .map(|(p, _)| p.clone())
        .chain(request.reads.iter().cloned())
        .collect();
    Ok(Prepared {
        request,
        events,
        data,
        affix,
        affix_encoded,
        touched,
    })
}

struct Job {
    prepared: Prepared,
    slot: Arc<Slot>,
}

/// Where a leader puts one caller's result.
#[derive(Default)]
struct Slot {
    result: Mutex<Option<Result<Committed, Error>>>,
}

impl Slot {
    fn put(&self, result: Result<Committed, Error>) {
        *self.result.lock().expect("commit slot poisoned") = Some(result);
    }

    fn take(&self) -> Option<Result<Committed, Error>> {
        self.result.lock().expect("commit slot poisoned").take()
    }
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    leading: bool,
}

/// Checkpoints committed recently, decoded, so that rebase checks and index catch-up need not
/// read them back.
#[derive(Default)]
pub(crate) struct Recent {
    order: VecDeque<ObjectId>,
    map: HashMap<ObjectId, Arc<IndexedCheckpoint>>,
}

impl Recent {
    fn insert(&mut self, checkpoint: IndexedCheckpoint) {
        if self.map.len() >= RECENT_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(checkpoint.id);
        self.map.insert(checkpoint.id, Arc::new(checkpoint));
    }

    pub(crate) fn get(&self, id: &ObjectId) -> Option<Arc<IndexedCheckpoint>> {
        self.map.get(id).cloned()
    }
}

/// The group-commit queue and its caches.
#[derive(Default)]
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    /// Threads inside `commit` (encoding, queued or leading).
    active: AtomicUsize,
    /// Signalled when a job is queued.
    arrived: Condvar,
    /// Signalled when a batch is done (results are in their slots, leadership is free).
    done: Condvar,
    pub(crate) recent: Mutex<Recent>,
    failures: Mutex<Vec<ObjectId>>,
    /// Frontiers of the checkpoint log (see `checkpoint_log.rs`).
    pub(crate) log: Mutex<super::checkpoint_log::LogCache>,
}

impl Committer {
    pub(crate) fn remember_failure(&self, id: ObjectId) {
        self.failures.lock().expect("failures poisoned").push(id);
    }

    pub(crate) fn failures(&self) -> Vec<ObjectId> {
        self.failures.lock().expect("failures poisoned").clone()
    }
}

/// How long a leader waits for committers that are about to queue.
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_micros(150);

thread_local! {
    static HAS_INTENT: Cell<bool> = const { Cell::new(false) };
}

/// Announces that this thread is about to commit (it is rehydrating or running a handler), so
/// that group-commit leaders wait a moment for it; dropping it withdraws the announcement.
#[must_use = "the announcement lasts as long as this value"]
pub struct CommitIntent<'a> {
    _active: Active<'a>,
}

impl Drop for CommitIntent<'_> {
    fn drop(&mut self) {
        HAS_INTENT.with(|f| f.set(false));
    }
}

impl Depot {
    /// Announces an upcoming [`Depot::commit`] from this thread (the engine holds one while it
    /// prepares a command), so that concurrent commits are more likely to share an fsync.
    pub fn commit_intent(&self) -> Option<CommitIntent<'_>> {
        if HAS_INTENT.with(Cell::get) {
            return None;
        }
        HAS_INTENT.with(|f| f.set(true));
        Some(CommitIntent {
            _active: Active::enter(&self.committer.active),
        })
    }
}

/// Counts a thread inside `commit` for as long as it lives.
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn enter(counter: &'a AtomicUsize) -> Active<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Active(counter)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A batch-wide failure, shared by every request of the batch (each keeps the one cause).
fn shared(err: &Arc<Error>) -> Error {
    Error::Batch(err.clone())
}

impl Depot {
    /// Commits one checkpoint; see the module documentation for the pipeline and [`Base`] for
    /// what is checked. Once this returns `Ok`, the checkpoint is durable.
    pub fn commit(&self, request: CommitRequest) -> Result<Committed, Error> {
        // A thread that announced its commit (see `commit_intent`) is already counted.
        let active = (!HAS_INTENT.with(Cell::get)).then(|| Active::enter(&self.committer.active));
        self.check_partitions_held(request.events.iter().map(|(p, _)| p))?;
        let prepared = prepare(request, self.seals_events())?;
        let slot = Arc::new(Slot::default());
        let mut queue = self.committer.queue.lock().expect("commit queue poisoned");
        queue.jobs.push(Job {
            prepared,
            slot: slot.clone(),
        });
        self.committer.arrived.notify_one();
        loop {
            if let Some(result) = slot.take() {
                return result;
            }
            if queue.leading {
                queue = self
                    .committer
                    .done
                    .wait(queue)
                    .expect("commit queue poisoned");
                continue;
            }
            // Lead one batch: everything queued now, ours included. Whoever queued while we
            // write leads the next batch, so every thread returns as soon as its own job is done.
            queue.leading = true;
            // Committers that are still encoding their objects will queue in microseconds: wait
            // a moment for them, so that they share this batch's fsync instead of paying their own.
            let deadline = std::time::Instant::now() + GATHER_WAIT;
            while queue.jobs.len() < self.committer.active.load(Ordering::SeqCst) {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                queue = self
                    .committer
                    .arrived
                    .wait_timeout(queue, deadline - now)
                    .expect("commit queue poisoned")
                    .0;
            }
            let take = queue.jobs.len().min(MAX_BATCH);
            let jobs: Vec<Job> = queue.jobs.drain(..take).collect();
            drop(queue);
            let (prepared, slots): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.prepared, j.slot)).unzip();
            let results = self.commit_batch(prepared);
            for (slot, result) in slots.iter().zip(results) {
                slot.put(result);
            }
            queue = self.committer.queue.lock().expect("commit queue poisoned");
            queue.leading = false;
            self.committer.done.notify_all();
            if let Some(result) = slot.take() {
                drop(queue);
                drop(active);
                // Keep the index following HEAD; a failure is recovered by the next catch-up.
                // (A backend's own index may be appended by the commit itself.)
                if !matches!(self.layout, super::Layout::Backend(_)) {
                    let _ = self.catch_up_index();
                }
                return result;
            }
        }
    }

    /// Commits many checkpoints as one batch (one write, one fsync): the bulk import path.
    /// Each request is committed in order; results come back in the same order.
    pub fn commit_many(&self, requests: Vec<CommitRequest>) -> Vec<Result<Committed, Error>> {
        let mut prepared = Vec::with_capacity(requests.len());
        let mut early: Vec<Option<Error>> = Vec::with_capacity(requests.len());
        for request in requests {
            let held = self.check_partitions_held(request.events.iter().map(|(p, _)| p));
            match held.and_then(|()| prepare(request, self.seals_events())) {
                Ok(p) => {
                    prepared.push(p);
                    early.push(None);
                }
                Err(e) => early.push(Some(e)),
            }
        }
        let mut results = self.commit_batch(prepared).into_iter();
        let out = early
            .into_iter()
            .map(|e| match e {
                Some(err) => Err(err),
                None => results.next().expect("one result per prepared request"),
            })
            .collect();
        if !matches!(self.layout, super::Layout::Backend(_)) {
            let _ = self.catch_up_index();
        }
        out
    }

    fn commit_batch(&self, jobs: Vec<Prepared>) -> Vec<Result<Committed, Error>> {
        if jobs.is_empty() {
            return Vec::new();
        }
        match &self.journal {
            Some(journal) => {
                let attempt = (|| {
                    let _lock = journal.lock()?;
                    journal.recover_locked()?;
                    // Each ref is read once per batch: nothing else moves it under the lock.
                    let mut read_once: HashMap<RefName, Option<RefValue>> = HashMap::new();
                    let mut plan = self.plan(&jobs, &mut |name| {
                        if let Some(value) = read_once.get(name) {
                            return Ok(value.clone());
                        }
                        let value = self.refs.read(name)?;
                        read_once.insert(name.clone(), value.clone());
                        Ok(value)
                    })?;
                    let mut records = Vec::new();
                    let packs = self.packs.as_ref().expect("native depots have packs");
                    let mut seen = HashSet::new();
                    for object in plan.objects.iter() {
                        if seen.insert(object.id()) && !packs.has_in_packs(&object.id()) {
                            records.push((RecordKind::Object, pack_object_payload(object)));
                        }
                    }
                    if !plan.updates.is_empty() {
                        let record = JournalRecord {
                            date: Utc::now(),
                            updates: std::mem::take(&mut plan.updates),
                        };
                        journal.commit_locked(records, &record)?;
                        self.graph_committed(&plan.indexed);
                        // Under the depot lock, so writers of this depot take turns on the file.
                        self.log_committed(&std::mem::take(&mut plan.log_frontiers));
                    }
                    Ok::<_, Error>(plan)
                })();
                match attempt {
                    Ok(plan) => self.finish(plan),
                    Err(err) => {
                        let err = Arc::new(err);
                        jobs.iter().map(|_| Err(shared(&err))).collect()
                    }
                }
            }
            None => {
                for _ in 0..64 {
                    let attempt = (|| {
                        // HEAD and its branch in one read (one round trip on PostgreSQL).
                        let (branch, tip) = self.refs.resolve(&RefName::head())?;
                        let plan = self.plan(&jobs, &mut |name| {
                            if name.as_str() == "HEAD" && branch.as_str() != "HEAD" {
                                return Ok(Some(RefValue::Symbolic(branch.clone())));
                            }
                            if *name == branch {
                                return Ok(tip.map(RefValue::Direct));
                            }
                            Ok(self.refs.read(name)?)
                        })?;
                        let edits: Vec<RefEdit> = plan
                            .ref_moves
                            .iter()
                            .map(|(name, (old, new, log))| RefEdit {
                                name: name.clone(),
                                expected: Expected::MustBeOrAbsent(*old),
                                new: Some(RefValue::Direct(*new)),
                                log: log.clone(),
                            })
                            .collect();
                        // Objects before refs: in one transaction where the store can, else
                        // written and synced first.
                        let committed: Vec<(RefName, &IndexedCheckpoint)> = plan
                            .results
                            .iter()
                            .filter_map(|r| r.as_ref().ok())
                            .map(|c| c.ref_name.clone())
                            .zip(plan.indexed.iter())
                            .collect();
                        match self
                            .refs
                            .transaction_with_objects(&plan.objects, &edits, &committed)
                        {
                            Some(result) => result?,
                            None => {
                                self.objects.write(&plan.objects)?;
                                self.objects.sync()?;
                                if !edits.is_empty() {
                                    self.refs.transaction(&edits)?;
                                }
                            }
                        }
                        Ok::<_, Error>(plan)
                    })();
                    match attempt {
                        Ok(plan) => return self.finish(plan),
                        // Another process moved a ref between planning and the CAS: plan again.
                        Err(err) if err.is_conflict() => continue,
                        Err(err) => {
                            let err = Arc::new(err);
                            return jobs.iter().map(|_| Err(shared(&err))).collect();
                        }
                    }
                }
                jobs.iter()
                    .map(|_| Err(Error::Contended { attempts: 64 }))
                    .collect()
            }
        }
    }

    fn finish(&self, plan: Plan) -> Vec<Result<Committed, Error>> {
        self.log_committed(&plan.log_frontiers);
        let mut recent = self.committer.recent.lock().expect("recent poisoned");
        for checkpoint in plan.indexed {
            recent.insert(checkpoint);
        }
        plan.results
    }

    /// Decides parents and builds every checkpoint of a batch, without writing anything.
    fn plan(
        &self,
        jobs: &[Prepared],
        read_ref: &mut dyn FnMut(&RefName) -> Result<Option<RefValue>, Error>,
    ) -> Result<Plan, Error> {
        let mut plan = Plan::default();
        let signer = self.signer();
        let mut targets: HashMap<RefName, RefName> = HashMap::new();
        let mut heads: HashMap<RefName, Option<ObjectId>> = HashMap::new();
        let mut in_batch: HashMap<ObjectId, Arc<IndexedCheckpoint>> = HashMap::new();
        let mut created: Vec<RefName> = Vec::new();
        // Command ids committed earlier in this batch, per target: a repeat replays them.
        let mut batch_commands: HashMap<(RefName, String), Committed> = HashMap::new();
        // The log frontier after each checkpoint planned here (for one planned on top of it).
        let mut batch_logs: HashMap<ObjectId, Frontier> = HashMap::new();
        for job in jobs {
            let request = &job.request;
            let target = match targets.get(&request.target) {
                Some(target) => target.clone(),
                None => {
                    let resolved =
                        crate::refdb::resolve_with(&request.target, |n| match read_ref(n) {
                            Ok(None) if n.as_str() == "HEAD" => {
                                Ok(Some(RefValue::Symbolic(RefName::master())))
                            }
                            Ok(v) => Ok(v),
                            Err(e) => Err(crate::refdb::Error::Backend(
                                crate::class::BackendError::new(e.class(), e),
                            )),
                        });
                    match resolved {
                        Ok((name, _)) => {
                            targets.insert(request.target.clone(), name.clone());
                            name
                        }
                        Err(e) => {
                            plan.results.push(Err(e.into()));
                            continue;
                        }
                    }
                }
            };
            let start = match heads.get(&target) {
                Some(head) => *head,
                None => {
                    let head = read_ref(&target)?.and_then(|v| v.id());
                    if head.is_none() {
                        // A new ref: refused here, before the journal, if it cannot exist.
                        if let Err(e) = self.check_new_ref(&target, &created) {
                            plan.results.push(Err(e));
                            continue;
                        }
                        created.push(target.clone());
                    }
                    heads.insert(target.clone(), head);
                    head
                }
            };
            let current = start;
            if let Some(command_id) = request.command_id() {
                let key = (target.clone(), command_id.to_owned());
                if let Some(earlier) = batch_commands.get(&key) {
                    plan.results.push(Ok(Committed {
                        replayed: true,
                        rebased: false,
                        ..earlier.clone()
                    }));
                    continue;
                }
                // The ref as stored (the batch's own checkpoints are not written yet; the
                // ones carrying ids are in `batch_commands`).
                let stored = read_ref(&target)?.and_then(|v| v.id());
                if let Some(original) = self.applied_command_on(&target, stored, command_id)? {
                    plan.results.push(Ok(self.replayed(original, &target)?));
                    continue;
                }
            }
            let (parent, rebased) = match &request.base {
                Base::Tip => (current, false),
                Base::Expect(base) if *base == current => (current, false),
                Base::Expect(base) if request.rebase => {
                    match self.touched_since(current, *base, &in_batch)? {
                        Some(changed) if changed.is_disjoint(&job.touched) => (current, true),
                        _ => {
                            plan.results.push(Err(Error::Conflict {
                                name: target,
                                expected: *base,
                                actual: current,
                            }));
                            continue;
                        }
                    }
                }
                Base::Expect(base) => {
                    plan.results.push(Err(Error::Conflict {
                        name: target,
                        expected: *base,
                        actual: current,
                    }));
                    continue;
                }
            };
            let mut checkpoint = Checkpoint::new(
                job.affix_encoded.id(),
                parent.into_iter().collect(),
                &request.session,
                request.date,
                request.message.clone(),
            )
            .map_err(|e| Error::Invalid(e.to_string()))?;
            for (key, value) in &request.fields {
                checkpoint.set_field(key.clone(), value.clone());
            }
            // Computed here, where the parent is final (a rebase re-parents before this), and
            // before signing, so the signature covers it.
            // (Also for a checkpoint without the field, so that a later one in the batch, or in
            // this process, extends its chain in O(log n).)
            let log_before = self.log_frontier_for_child(parent, &batch_logs)?;
            if request.log {
                checkpoint.set_log_head(log_before.head());
            }
            if let Some(signer) = &signer {
                signer.sign(&mut checkpoint);
            }
            let date = checkpoint.date();
            let encoded = Object::Checkpoint(checkpoint).to_encoded();
            let id = encoded.id();
            let mut log_after = log_before.clone();
            log_after.push_id(&id);
            batch_logs.insert(id, log_after);
            plan.log_frontiers.push((id, log_before));
            plan.objects.extend(job.data.iter().cloned());
            plan.objects.extend(job.events.iter().cloned());
            plan.objects.push(job.affix_encoded.clone());
            plan.objects.push(encoded);
            heads.insert(target.clone(), Some(id));
            plan.updates.push(JournalUpdate {
                name: target.clone(),
                old: current,
                new: Some(id),
                session: request.session.clone(),
                message: request.reflog_message.clone(),
            });
            let log = LogInfo {
                session: request.session.clone(),
                message: request.reflog_message.clone(),
            };
            plan.ref_moves
                .entry(target.clone())
                .and_modify(|m| {
                    m.1 = id;
                    m.2 = log.clone();
                })
                .or_insert((start, id, log));
            let indexed = IndexedCheckpoint {
                id,
                parent,
                date,
                session: request.session.clone(),
                partitions: job
                    .affix
                    .partitions()
                    .map(|(p, ids)| (p.clone(), ids.to_vec()))
                    .collect(),
                at: Vec::new(),
                command_id: request.command_id().map(str::to_owned),
            };
            in_batch.insert(id, Arc::new(indexed.clone()));
            plan.indexed.push(indexed);
            let committed = Committed {
                checkpoint: id,
                parent,
                affix: job.affix_encoded.id(),
                events: job.events.iter().map(EncodedObject::id).collect(),
                ref_name: target.clone(),
                rebased,
                replayed: false,
            };
            if let Some(command_id) = request.command_id() {
                batch_commands.insert((target, command_id.to_owned()), committed.clone());
            }
            plan.results.push(Ok(committed));
        }
        Ok(plan)
    }

    /// The partitions touched by checkpoints after `base` up to `head` (first parents), or `None`
    /// when `base` is not found within the walk limit (not an ancestor: a non-fast-forward).
    fn touched_since(
        &self,
        head: Option<ObjectId>,
        base: Option<ObjectId>,
        in_batch: &HashMap<ObjectId, Arc<IndexedCheckpoint>>,
    ) -> Result<Option<HashSet<PartitionName>>, Error> {
        let mut changed = HashSet::new();
        let mut cursor = head;
        for _ in 0..REBASE_WALK_LIMIT {
            if cursor == base {
                return Ok(Some(changed));
            }
            let Some(id) = cursor else {
                return Ok(None);
            };
            let checkpoint = self.indexed_checkpoint(&id, in_batch)?;
            changed.extend(checkpoint.partitions.iter().map(|(p, _)| p.clone()));
            cursor = checkpoint.parent;
        }
        Ok(None)
    }

    /// A checkpoint's index data, from the batch, the recent cache, or the object store.
    pub(crate) fn indexed_checkpoint(
        &self,
        id: &ObjectId,
        in_batch: &HashMap<ObjectId, Arc<IndexedCheckpoint>>,
    ) -> Result<Arc<IndexedCheckpoint>, Error> {
        if let Some(found) = in_batch.get(id) {
            return Ok(found.clone());
        }
        if let Some(found) = self
            .committer
            .recent
            .lock()
            .expect("recent poisoned")
            .get(id)
        {
            return Ok(found);
        }
        let checkpoint = self.read_checkpoint_unresolved(id)?;
        let affix = self.read_affix(&checkpoint.affix())?;
        Ok(Arc::new(IndexedCheckpoint {
            id: *id,
            parent: checkpoint.first_parent(),
            date: checkpoint.date(),
            session: checkpoint.session().to_owned(),
            partitions: affix
                .partitions()
                .map(|(p, ids)| (p.clone(), ids.to_vec()))
                .collect(),
            at: Vec::new(),
            command_id: checkpoint.field(COMMAND_ID_FIELD).map(str::to_owned),
        }))
    }
}

#[derive(Default)]
struct Plan {
    objects: Vec<EncodedObject>,
    updates: Vec<JournalUpdate>,
    ref_moves: HashMap<RefName, (Option<ObjectId>, ObjectId, LogInfo)>,
    indexed: Vec<IndexedCheckpoint>,
    results: Vec<Result<Committed, Error>>,
    /// Each planned checkpoint with the frontier of the log it commits to, oldest first.
    log_frontiers: Vec<(ObjectId, Frontier)>,
}

//! Merging another line of history into a branch (`retro merge`), in one compare-and-swap of the
//! branch: a fast-forward when the branch is an ancestor of the other side; else, when every
//! partition the other side added events to has, on this side, a prefix of the other side's
//! events (the two sides wrote disjoint partitions), one merge checkpoint with two parents whose
//! affix holds the events it brings; else the other side's commands re-run on top of this side
//! (a rebase by commands), each as a new checkpoint with a `replayed-from` field, stopping at the
//! first one the domain rejects with nothing written. See docs/branches.md.
//!
//! Nothing is half-merged: new objects are written first (unreferenced until the ref moves, so a
//! crash leaves only garbage for gc), then the branch moves once, by compare-and-swap against the
//! head the merge was computed from. A writer that moved the branch meanwhile makes the merge
//! start over (up to [`MAX_ATTEMPTS`] times), never lose its update.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use depot::odb::ObjectStore;
use depot::refdb::MemoryRefStore;
use depot::{
    Affix, Checkpoint, Depot, EncodedObject, Expected, FieldKey, FieldValue, HistoryOrder, LogInfo,
    Object, ObjectId, PartitionName, Prefix, RefEdit, RefName, RefValue,
};

use crate::{ApplyError, Command, DomainError, Engine, Manifest};

/// How many times a merge starts over when the branch moved under it.
pub const MAX_ATTEMPTS: u32 = 5;
/// The header key naming the checkpoint a replayed command was first recorded in.
pub const REPLAYED_FROM_KEY: &str = "replayed-from";
/// The header key of a merge checkpoint: `disjoint`.
pub const MERGE_KEY: &str = "merge";
/// The header key a failed command's orphaned checkpoint carries.
const FAILED_KEY: &str = "error";

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The other side is already in the branch's history: nothing moved.
    UpToDate {
        /// The branch's head.
        head: ObjectId,
    },
    /// The branch moved forward to the other side's head.
    FastForward {
        /// The old head (`None`: the branch was unborn).
        from: Option<ObjectId>,
        /// The new head.
        to: ObjectId,
    },
    /// One merge checkpoint with two parents (this side's head, then the other side's).
    Merged {
        /// The merge checkpoint.
        checkpoint: ObjectId,
        /// The old head (its first parent).
        from: ObjectId,
        /// The other side's head (its second parent).
        other: ObjectId,
        /// How many events its affix brings.
        events: usize,
        /// The partitions they are in, sorted.
        partitions: Vec<String>,
    },
    /// The other side's commands were re-run on top, oldest first.
    Replayed {
        /// The old head.
        from: ObjectId,
        /// The new head.
        to: ObjectId,
        /// Each replayed checkpoint: (the original, the new one).
        replayed: Vec<(ObjectId, ObjectId)>,
    },
}

/// Why a merge did not happen. In every case the branch is as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// The two heads share no checkpoint.
    #[error("refusing to merge unrelated histories: {theirs} shares no checkpoint with {ours}")]
    Unrelated {
        /// This side's head.
        ours: ObjectId,
        /// The other side's head.
        theirs: ObjectId,
    },
    /// The domain rejected a replayed command: the merge stopped there, nothing was written.
    #[error("the replay of {from} was rejected ({}: {}); nothing was merged", .error.code, .error.message)]
    Rejected {
        /// The checkpoint whose command was rejected.
        from: ObjectId,
        /// The command (its message).
        command: String,
        /// The domain's rejection.
        error: DomainError,
        /// How many of the other side's checkpoints replayed before it.
        replayed: usize,
    },
    /// A replayed command failed for another reason (a broken handler, an unknown command, a
    /// handler that now emits nothing): nothing was written.
    #[error("the replay of {from} failed; nothing was merged")]
    ReplayFailed {
        /// The checkpoint whose command failed.
        from: ObjectId,
        /// Why.
        #[source]
        source: Box<ApplyError>,
    },
    /// The other side holds a merge checkpoint over partitions this side also wrote: a merge
    /// cannot be replayed by commands.
    #[error("cannot replay merge checkpoint {checkpoint}: merge its second parent first, or merge the other way")]
    MergeInReplay {
        /// The merge checkpoint.
        checkpoint: ObjectId,
    },
    /// What would be merged is a failed command's orphaned checkpoint (it has an `error` field).
    #[error("{checkpoint} is a failed command's checkpoint (see 'retro failed'): it is on no branch and cannot be merged")]
    FailedCommand {
        /// The checkpoint.
        checkpoint: ObjectId,
    },
    /// The session the merge would be written in is not a valid session id.
    #[error("session id '{}' must be 1 to 128 ASCII letters, digits, '-', '_' or '.'", depot::shown(.0))]
    BadSession(String),
    /// The branch kept moving under the merge.
    #[error("the branch moved during the merge {attempts} times; try again")]
    Conflict {
        /// How many times the merge started over.
        attempts: u32,
    },
    /// The depot could not be read or written.
    #[error(transparent)]
    Depot(#[from] depot::Error),
}

impl MergeError {
    /// The error's class (exit code and HTTP status).
    pub fn class(&self) -> depot::ErrorClass {
        match self {
            MergeError::Unrelated { .. }
            | MergeError::MergeInReplay { .. }
            | MergeError::FailedCommand { .. }
            | MergeError::BadSession(_) => depot::ErrorClass::Invalid,
            MergeError::Rejected { .. } => depot::ErrorClass::Rejected,
            MergeError::ReplayFailed { source, .. } => source.class(),
            MergeError::Conflict { .. } => depot::ErrorClass::Conflict,
            MergeError::Depot(e) => e.class(),
        }
    }
}

/// Merges `theirs` into `branch` (a ref name; `HEAD` is followed to its branch) of `depot`,
/// replaying with the commands of `manifest` when it must; the merge checkpoint (or the replayed
/// ones) is written in `session`. `theirs_name` is how the other side is named in the merge's
/// message and reflog line.
pub fn merge(
    depot: &Arc<Depot>,
    manifest: &Manifest,
    branch: &RefName,
    theirs: ObjectId,
    theirs_name: &str,
    session: &str,
) -> Result<MergeOutcome, MergeError> {
    if crate::engine::check_session(session).is_err() {
        return Err(MergeError::BadSession(session.to_owned()));
    }
    if depot.read_checkpoint(&theirs)?.field(FAILED_KEY).is_some() {
        return Err(MergeError::FailedCommand { checkpoint: theirs });
    }
    for _ in 0..MAX_ATTEMPTS {
        let (branch, ours) = depot.resolve_ref(branch)?;
        let planned = plan(depot, manifest, ours, theirs, theirs_name, session)?;
        let (outcome, objects, new_head, message) = match planned {
            Planned::Done(outcome) => return Ok(outcome),
            Planned::Move {
                outcome,
                objects,
                head,
                message,
            } => (outcome, objects, head, message),
        };
        depot.write_objects(&objects)?;
        let edit = RefEdit {
            name: branch.clone(),
            expected: match ours {
                Some(id) => Expected::MustBe(id),
                None => Expected::MustNotExist,
            },
            new: Some(RefValue::Direct(new_head)),
            log: LogInfo {
                session: session.to_owned(),
                message,
            },
        };
        match depot.update_refs(&[edit]) {
            Ok(()) => {
                if let MergeOutcome::Merged {
                    checkpoint, from, ..
                } = &outcome
                {
                    // Derived data (the log frontier for the next commit on top): best effort.
                    let _ = depot.remember_log(*checkpoint, Some(*from));
                }
                return Ok(outcome);
            }
            // Someone moved the branch since it was read: merge again from its new head.
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MergeError::Conflict {
        attempts: MAX_ATTEMPTS,
    })
}

enum Planned {
    Done(MergeOutcome),
    Move {
        outcome: MergeOutcome,
        objects: Vec<EncodedObject>,
        head: ObjectId,
        message: String,
    },
}

fn plan(
    depot: &Arc<Depot>,
    manifest: &Manifest,
    ours: Option<ObjectId>,
    theirs: ObjectId,
    theirs_name: &str,
    session: &str,
) -> Result<Planned, MergeError> {
    let Some(ours) = ours else {
        return Ok(Planned::Move {
            outcome: MergeOutcome::FastForward {
                from: None,
                to: theirs,
            },
            objects: Vec::new(),
            head: theirs,
            message: format!("merge {theirs_name}: fast-forward"),
        });
    };
    if depot.is_ancestor(theirs, ours)? {
        return Ok(Planned::Done(MergeOutcome::UpToDate { head: ours }));
    }
    if depot.is_ancestor(ours, theirs)? {
        return Ok(Planned::Move {
            outcome: MergeOutcome::FastForward {
                from: Some(ours),
                to: theirs,
            },
            objects: Vec::new(),
            head: theirs,
            message: format!("merge {theirs_name}: fast-forward"),
        });
    }
    if depot.merge_base(ours, theirs)?.is_none() {
        return Err(MergeError::Unrelated { ours, theirs });
    }
    // The other side's own checkpoints: its first parents down to the first one this side has.
    let mut other_side = Vec::new();
    let mut written = BTreeSet::new();
    let mut cursor = Some(theirs);
    while let Some(id) = cursor {
        if depot.is_ancestor(id, ours)? {
            break;
        }
        let checkpoint = depot.read_checkpoint(&id)?;
        if checkpoint.field(FAILED_KEY).is_some() {
            return Err(MergeError::FailedCommand { checkpoint: id });
        }
        let affix = depot.read_affix(&checkpoint.affix())?;
        written.extend(affix.partitions().map(|(p, _)| p.clone()));
        cursor = checkpoint.first_parent();
        other_side.push((id, checkpoint));
    }
    other_side.reverse();
    if let Some(brought) = disjoint_events(depot, ours, theirs, &written)? {
        return merge_checkpoint(depot, ours, theirs, theirs_name, session, brought);
    }
    replay(depot, manifest, ours, theirs_name, other_side)
}

/// For each partition the other side wrote, the events it has beyond this side's, when this
/// side's list is a prefix of the other's (or the other's of this side's: nothing to bring);
/// `None` as soon as one partition has diverged. An event is compared as an occurrence: its id
/// with the checkpoint that added it, since two sides that each made the same command have the
/// same event ids, and both must count.
fn disjoint_events(
    depot: &Depot,
    ours: ObjectId,
    theirs: ObjectId,
    partitions: &BTreeSet<PartitionName>,
) -> Result<Option<Affix>, MergeError> {
    let ours_lists = occurrences(depot, ours, partitions)?;
    let theirs_lists = occurrences(depot, theirs, partitions)?;
    let mut brought = Affix::new();
    for partition in partitions {
        let mine = ours_lists.get(partition).map_or(&[][..], Vec::as_slice);
        let other = theirs_lists.get(partition).map_or(&[][..], Vec::as_slice);
        if other.starts_with(mine) {
            for (_, event) in &other[mine.len()..] {
                brought.push(partition.clone(), *event);
            }
        } else if !mine.starts_with(other) {
            return Ok(None);
        }
    }
    Ok(Some(brought))
}

/// The events of `partitions` as of `head` (its first-parent history), oldest first, each as
/// (the checkpoint that added it, its id): one walk, reading affixes only.
fn occurrences(
    depot: &Depot,
    head: ObjectId,
    partitions: &BTreeSet<PartitionName>,
) -> Result<BTreeMap<PartitionName, Vec<(ObjectId, ObjectId)>>, MergeError> {
    let mut found: Vec<(ObjectId, Affix)> = Vec::new();
    depot.walk(head, HistoryOrder::FirstParent, |id, checkpoint| {
        let affix = depot.read_affix(&checkpoint.affix())?;
        if affix.partitions().any(|(p, _)| partitions.contains(p)) {
            found.push((id, affix));
        }
        Ok(true)
    })?;
    let mut lists: BTreeMap<PartitionName, Vec<(ObjectId, ObjectId)>> = BTreeMap::new();
    for (checkpoint, affix) in found.iter().rev() {
        for (partition, ids) in affix.partitions() {
            if partitions.contains(partition) {
                lists
                    .entry(partition.clone())
                    .or_default()
                    .extend(ids.iter().map(|event| (*checkpoint, *event)));
            }
        }
    }
    Ok(lists)
}

fn merge_checkpoint(
    depot: &Depot,
    ours: ObjectId,
    theirs: ObjectId,
    theirs_name: &str,
    session: &str,
    brought: Affix,
) -> Result<Planned, MergeError> {
    let affix = Object::Affix(brought.clone()).to_encoded();
    let mut checkpoint = Checkpoint::new(
        affix.id(),
        vec![ours, theirs],
        session,
        chrono::Utc::now(),
        format!("merge {}", depot::escape_invisible(theirs_name)),
    )
    .map_err(|e| depot::Error::Invalid(e.to_string()))?;
    checkpoint.set_field(
        FieldKey::new(MERGE_KEY).expect("a valid key"),
        FieldValue::new("disjoint").expect("a valid value"),
    );
    // Its log is its first parent's (the branch's head): the merged side's checkpoints are not
    // leaves; the events it brings are in its own affix.
    checkpoint.set_log_head(depot.log_head_for_child(Some(ours))?);
    depot.sign_checkpoint(&mut checkpoint);
    let encoded = Object::Checkpoint(checkpoint).to_encoded();
    let id = encoded.id();
    Ok(Planned::Move {
        outcome: MergeOutcome::Merged {
            checkpoint: id,
            from: ours,
            other: theirs,
            events: brought.event_count(),
            partitions: brought.partitions().map(|(p, _)| p.to_string()).collect(),
        },
        objects: vec![affix, encoded],
        head: id,
        message: format!("merge {theirs_name}: disjoint partitions"),
    })
}

/// Re-runs the other side's checkpoints, oldest first, on a mirror of this depot whose branch
/// starts at `ours`: commands through the engine (so the domain decides again), a session's
/// start or end and any checkpoint whose message is not a command carried over with its events.
fn replay(
    depot: &Arc<Depot>,
    manifest: &Manifest,
    ours: ObjectId,
    theirs_name: &str,
    other_side: Vec<(ObjectId, Checkpoint)>,
) -> Result<Planned, MergeError> {
    let overlay = Arc::new(Overlay {
        source: depot.clone(),
        written: Mutex::new(BTreeMap::new()),
    });
    let mirror = Arc::new(Depot::with_stores(
        overlay.clone(),
        Arc::new(MemoryRefStore::new()),
    )?);
    mirror.set_signer(depot.signer());
    mirror.update_refs(&[RefEdit {
        name: RefName::master(),
        expected: Expected::MustNotExist,
        new: Some(RefValue::Direct(ours)),
        log: LogInfo::default(),
    }])?;
    let engine = Engine::new(mirror.clone(), manifest.clone()).with_max_attempts(1);
    let mut replayed = Vec::with_capacity(other_side.len());
    for (id, checkpoint) in other_side {
        if checkpoint.parents().len() > 1 {
            return Err(MergeError::MergeInReplay { checkpoint: id });
        }
        let fields = vec![(
            FieldKey::new(REPLAYED_FROM_KEY).expect("a valid key"),
            FieldValue::new(&id.to_string()).expect("an id is a valid value"),
        )];
        let session = checkpoint.session();
        let new = match Command::parse(checkpoint.message()) {
            Ok(command) if !is_session_command(&command) => {
                let text = command.to_json();
                match engine.apply_command_with_fields(session, command, fields) {
                    Ok(applied) => applied.checkpoint,
                    Err(ApplyError::Rejected { error, .. }) => {
                        return Err(MergeError::Rejected {
                            from: id,
                            command: text,
                            error,
                            replayed: replayed.len(),
                        })
                    }
                    Err(e) => {
                        return Err(MergeError::ReplayFailed {
                            from: id,
                            source: Box::new(e),
                        })
                    }
                }
            }
            _ => carry_over(&mirror, &checkpoint, fields)?,
        };
        replayed.push((id, new));
    }
    let head = mirror.head()?.expect("the mirror's branch starts at ours");
    let objects = overlay
        .written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    Ok(Planned::Move {
        outcome: MergeOutcome::Replayed {
            from: ours,
            to: head,
            replayed,
        },
        objects,
        head,
        message: format!("merge {theirs_name}: replayed commands"),
    })
}

fn is_session_command(command: &Command) -> bool {
    command.path().starts_with("session/")
        && matches!(command.name(), "startSession" | "endSession")
}

/// Commits a checkpoint's recorded events again on the mirror's branch, as they are.
fn carry_over(
    mirror: &Depot,
    checkpoint: &Checkpoint,
    fields: Vec<(FieldKey, FieldValue)>,
) -> Result<ObjectId, MergeError> {
    let affix = mirror.read_affix(&checkpoint.affix())?;
    let mut events = Vec::with_capacity(affix.event_count());
    for (partition, ids) in affix.partitions() {
        for id in ids {
            events.push((partition.clone(), mirror.read_event(id)?));
        }
    }
    let mut request = depot::CommitRequest::new(
        mirror.head()?,
        events,
        checkpoint.session(),
        checkpoint.message().to_vec(),
    );
    if let Some(date) = checkpoint.date() {
        request.date = date;
    }
    request.fields = fields;
    Ok(mirror.commit(request)?.checkpoint)
}

/// The source depot's objects read through, with what the replay writes kept in memory until
/// the merge writes it into the source.
struct Overlay {
    source: Arc<Depot>,
    written: Mutex<BTreeMap<ObjectId, EncodedObject>>,
}

impl Overlay {
    fn written(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectId, EncodedObject>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ObjectStore for Overlay {
    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, depot::odb::Error> {
        if let Some(found) = self.written().get(id) {
            return Ok(Some(found.clone()));
        }
        self.source.objects().read(id)
    }
    fn contains(&self, id: &ObjectId) -> Result<bool, depot::odb::Error> {
        Ok(self.written().contains_key(id) || self.source.objects().contains(id)?)
    }
    fn write(&self, objects: &[EncodedObject]) -> Result<(), depot::odb::Error> {
        let mut written = self.written();
        for object in objects {
            written.entry(object.id()).or_insert_with(|| object.clone());
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), depot::odb::Error> {
        Ok(())
    }
    fn for_each_id(
        &self,
        f: &mut dyn FnMut(ObjectId) -> Result<(), depot::odb::Error>,
    ) -> Result<(), depot::odb::Error> {
        let ids: Vec<ObjectId> = self.written().keys().copied().collect();
        for id in ids {
            f(id)?;
        }
        self.source.objects().for_each_id(f)
    }
    fn find_prefix(
        &self,
        prefix: &Prefix,
        limit: usize,
    ) -> Result<Vec<ObjectId>, depot::odb::Error> {
        let mut found = self.source.objects().find_prefix(prefix, limit)?;
        found.extend(
            self.written()
                .keys()
                .filter(|id| prefix.matches(id))
                .copied(),
        );
        found.sort();
        found.dedup();
        found.truncate(limit);
        Ok(found)
    }
    fn describe(&self) -> String {
        format!(
            "{} (with a merge's new objects)",
            self.source.objects().describe()
        )
    }
}

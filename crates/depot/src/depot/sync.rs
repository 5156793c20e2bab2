//! Sync: copy what one depot lacks from another, whatever their layouts (files, go-retro,
//! memory, PostgreSQL), then move its refs — fast-forward only unless forced.
//!
//! Objects travel byte for byte, so ids are identical on both sides. The missing checkpoints are
//! found by walking every ref of the source back to checkpoints the destination already has, then
//! copied oldest first (each checkpoint after its parents, after its affix and events) in batches
//! that are each durable before the next starts; refs move only after all of their objects are
//! durable. So an interrupted sync leaves no ref pointing at a missing object, and "the
//! destination has this checkpoint" implies it has the checkpoint's whole history: a second run
//! resumes where the first stopped. Failed-command records travel too (after their objects).
//!
//! Into a partial clone (see `partial`), only the events of the partitions its filter holds are
//! copied (checkpoints and affixes all are). [`SyncOptions::partitions`] widens the filter: the
//! events of the newly covered partitions are fetched for the checkpoints already here too, and
//! the filter is recorded wider only once they are durable, before any ref moves; an interrupted
//! widening leaves the old filter (and some extra events, which fsck verifies) and is resumed by
//! running it again. A source that is itself a partial clone can give only what it holds: a
//! partition the destination needs and the source lacks is refused, naming the source's filter.

use std::collections::HashSet;

use super::{Depot, Error, PartialFilter};
use crate::hash::ObjectId;
use crate::name::PartitionName;
use crate::object::EncodedObject;
use crate::refdb::{Expected, LogInfo, RefEdit, RefName, RefValue};

/// How a sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Move refs that are not fast-forwards too (the destination's history is replaced).
    pub force: bool,
    /// Checkpoints per durable batch.
    pub batch: usize,
    /// Only refs whose names start with this (default `refs/`: every ref but `HEAD`).
    pub prefix: String,
    /// Widen the destination's partial-clone filter by these globs and fetch their events
    /// (`retro sync --partitions`); the destination must be a partial clone.
    pub partitions: Option<PartialFilter>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            force: false,
            batch: 1000,
            prefix: "refs/".to_owned(),
            partitions: None,
        }
    }
}

/// What happened to one ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefOutcome {
    /// It already held the source's value.
    UpToDate,
    /// It did not exist and was created.
    Created,
    /// It moved forward to a descendant.
    FastForward,
    /// It moved to a checkpoint that does not descend from its value (`--force`).
    Forced,
    /// It was left alone: the move is not a fast-forward and the sync was not forced.
    Rejected,
}

/// One ref's sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSync {
    /// The ref.
    pub name: RefName,
    /// The destination's value before.
    pub old: Option<ObjectId>,
    /// The source's value.
    pub new: ObjectId,
    /// What was done.
    pub outcome: RefOutcome,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Checkpoints copied.
    pub checkpoints: u64,
    /// Objects copied (checkpoints, affixes and events).
    pub objects: u64,
    /// Failed-command records copied (their checkpoints and affixes).
    pub failures: u64,
    /// Every source ref, in name order.
    pub refs: Vec<RefSync>,
    /// The destination's partial-clone filter after the sync (`None`: it holds every partition).
    pub partial: Option<Vec<String>>,
    /// Events fetched for checkpoints the destination already had (a widening).
    pub events_fetched: u64,
}

impl SyncReport {
    /// Whether some ref was rejected as not a fast-forward.
    pub fn has_rejections(&self) -> bool {
        self.refs.iter().any(|r| r.outcome == RefOutcome::Rejected)
    }
}

impl Depot {
    /// Copies into this depot what it lacks from `source`, then moves its refs (see the module
    /// docs). `progress` is called with the number of checkpoints copied so far.
    pub fn sync_from(
        &self,
        source: &Depot,
        options: &SyncOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<SyncReport, Error> {
        let mut tips: Vec<(RefName, ObjectId)> = Vec::new();
        for (name, value) in source.list_refs(&options.prefix)? {
            if let RefValue::Direct(id) = value {
                tips.push((name, id));
            }
        }
        // The filter the copy works to: the current one, widened as asked.
        let before = self.partial_filter();
        let filter = match (&before, &options.partitions) {
            (_, None) => before.clone(),
            (None, Some(_)) => return Err(super::partial::not_partial(self)),
            (Some(current), Some(more)) => Some(current.widened(more)),
        };
        let wanted = |partition: &PartitionName| -> Result<bool, Error> {
            if filter
                .as_ref()
                .is_some_and(|f| !f.holds(partition.as_str()))
            {
                return Ok(false);
            }
            source.check_partition_held(partition)?;
            Ok(true)
        };
        let order = self.missing_checkpoints(source, tips.iter().map(|(_, id)| *id))?;
        // Redactions first: the redaction checkpoints about to arrive erase what this depot
        // holds of their events before anything is copied (see `redact`).
        let redactions = self.receive_redactions(source, &order)?;
        let mut report = SyncReport::default();
        for chunk in order.chunks(options.batch.max(1)) {
            let mut objects: Vec<EncodedObject> = Vec::with_capacity(chunk.len() * 5);
            // What the source erased is not there to copy (and must not be).
            let mut copy = |id: &ObjectId| -> Result<(), Error> {
                if !source.is_erased(id) && !self.is_erased(id) {
                    objects.push(source.read_object(id)?);
                }
                Ok(())
            };
            for id in chunk {
                let checkpoint = source.read_checkpoint_unresolved(id)?;
                let affix = source.read_affix(&checkpoint.affix())?;
                for (partition, events) in affix.partitions() {
                    if !wanted(partition)? {
                        continue;
                    }
                    for event in events {
                        if let Some(data) = source.sealed_data_of(event)? {
                            copy(&data)?;
                        }
                        copy(event)?;
                    }
                }
                if let Some(data) = checkpoint.message_data() {
                    copy(&data)?;
                }
                copy(&checkpoint.affix())?;
                copy(id)?;
            }
            self.write_objects(&objects)?;
            report.checkpoints += chunk.len() as u64;
            report.objects += objects.len() as u64;
            progress(report.checkpoints);
        }
        if let (Some(before), Some(after)) = (&before, &filter) {
            if !before.contains_all(after) {
                report.events_fetched = self.fetch_widened(source, before, after, options)?;
                report.objects += report.events_fetched;
                // Only now, every newly covered event durable: the filter says they are here.
                self.widen_partial_filter(after)?;
            }
        }
        report.partial = self.partial_filter().map(|f| f.globs().to_vec());
        report.failures = self.copy_failures(source)?;
        self.close_redactions(&redactions)?;
        for (name, new) in tips {
            let old = match self.refs.read(&name)? {
                Some(RefValue::Direct(id)) => Some(id),
                Some(RefValue::Symbolic(_)) => {
                    return Err(Error::Invalid(format!(
                        "ref '{name}' is symbolic in the destination; refusing to overwrite it"
                    )))
                }
                None => None,
            };
            let outcome = match old {
                Some(old) if old == new => RefOutcome::UpToDate,
                None => RefOutcome::Created,
                Some(old) if self.is_ancestor(old, new)? => RefOutcome::FastForward,
                Some(_) if options.force => RefOutcome::Forced,
                Some(_) => RefOutcome::Rejected,
            };
            if matches!(
                outcome,
                RefOutcome::Created | RefOutcome::FastForward | RefOutcome::Forced
            ) {
                self.update_refs(&[RefEdit {
                    name: name.clone(),
                    expected: match old {
                        Some(id) => Expected::MustBe(id),
                        None => Expected::MustNotExist,
                    },
                    new: Some(RefValue::Direct(new)),
                    log: LogInfo {
                        session: "sync".to_owned(),
                        message: format!("sync: {}", outcome_word(outcome)),
                    },
                }])?;
            }
            report.refs.push(RefSync {
                name,
                old,
                new,
                outcome,
            });
        }
        Ok(report)
    }

    /// A widening's backfill: for every checkpoint this depot's refs reach, the events (and
    /// sealed data) of the partitions `after` holds and `before` does not, copied from `source`
    /// in durable batches. Returns the number of objects copied.
    fn fetch_widened(
        &self,
        source: &Depot,
        before: &PartialFilter,
        after: &PartialFilter,
        options: &SyncOptions,
    ) -> Result<u64, Error> {
        let mut stack: Vec<ObjectId> = Vec::new();
        for (_, value) in self.list_refs("")? {
            stack.extend(value.id());
        }
        let mut seen: HashSet<ObjectId> = HashSet::new();
        let mut objects: Vec<EncodedObject> = Vec::new();
        let mut copied = 0u64;
        let batch = options.batch.max(1);
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let checkpoint = self.read_checkpoint_unresolved(&id)?;
            stack.extend(checkpoint.parents().iter().copied());
            let affix = self.read_affix(&checkpoint.affix())?;
            for (partition, events) in affix.partitions() {
                let name = partition.as_str();
                if before.holds(name) || !after.holds(name) {
                    continue;
                }
                source.check_partition_held(partition)?;
                for event in events {
                    if self.objects.contains(event)? || self.is_erased(event) {
                        continue;
                    }
                    if source.is_erased(event) {
                        continue;
                    }
                    if let Some(data) = source.sealed_data_of(event)? {
                        if !source.is_erased(&data) && !self.objects.contains(&data)? {
                            objects.push(source.read_object(&data)?);
                        }
                    }
                    objects.push(source.read_object(event)?);
                }
            }
            if objects.len() >= batch {
                copied += objects.len() as u64;
                self.write_objects(&std::mem::take(&mut objects))?;
            }
        }
        copied += objects.len() as u64;
        if !objects.is_empty() {
            self.write_objects(&objects)?;
        }
        Ok(copied)
    }

    /// Copies the source's failed-command records this depot lacks (checkpoint, affix, then the
    /// record, so a record never names a missing object).
    fn copy_failures(&self, source: &Depot) -> Result<u64, Error> {
        let known: HashSet<ObjectId> = self.failures()?.into_iter().collect();
        let mut copied = 0;
        for id in source.failures()? {
            if known.contains(&id) {
                continue;
            }
            let checkpoint = source.read_checkpoint_unresolved(&id)?;
            let mut objects = Vec::with_capacity(3);
            if let Some(data) = checkpoint.message_data().filter(|d| !source.is_erased(d)) {
                objects.push(source.read_object(&data)?);
            }
            objects.push(source.read_object(&checkpoint.affix())?);
            objects.push(source.read_object(&id)?);
            self.write_objects_then(&objects, || self.append_failure_line(&id))?;
            copied += 1;
        }
        Ok(copied)
    }

    /// The source's checkpoints reachable from `tips` that this depot lacks, parents first.
    fn missing_checkpoints(
        &self,
        source: &Depot,
        tips: impl Iterator<Item = ObjectId>,
    ) -> Result<Vec<ObjectId>, Error> {
        let mut order = Vec::new();
        let mut seen: HashSet<ObjectId> = HashSet::new();
        // Iterative post-order: a checkpoint is emitted once all its parents are.
        let mut stack: Vec<(ObjectId, bool)> = Vec::new();
        for tip in tips {
            stack.push((tip, false));
            while let Some((id, expanded)) = stack.pop() {
                if expanded {
                    order.push(id);
                    continue;
                }
                if !seen.insert(id) || self.objects.contains(&id)? {
                    continue;
                }
                let checkpoint = source.read_checkpoint_unresolved(&id)?;
                stack.push((id, true));
                for parent in checkpoint.parents().iter().rev() {
                    if !seen.contains(parent) {
                        stack.push((*parent, false));
                    }
                }
            }
        }
        Ok(order)
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors (a walk of this depot).
    pub fn is_ancestor(&self, ancestor: ObjectId, descendant: ObjectId) -> Result<bool, Error> {
        self.graph_is_ancestor(ancestor, descendant)
    }
}

fn outcome_word(outcome: RefOutcome) -> &'static str {
    match outcome {
        RefOutcome::UpToDate => "up to date",
        RefOutcome::Created => "created",
        RefOutcome::FastForward => "fast-forward",
        RefOutcome::Forced => "forced update",
        RefOutcome::Rejected => "rejected (not a fast-forward)",
    }
}

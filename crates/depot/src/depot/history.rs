//! Reading history: walking checkpoints, keeping the partition index caught up, and reading
//! events by partition or glob.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use globset::{GlobBuilder, GlobMatcher};

use super::{Depot, Error, IndexState, PENDING_FLUSH_AT, PENDING_WALK_LIMIT};
use crate::hash::ObjectId;
use crate::index::{EventRow, PartitionIndex};
use crate::name::PartitionName;
use crate::object::{Checkpoint, Event};
use crate::refdb::RefName;

/// One event as read back, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Its partition.
    pub partition: PartitionName,
    /// Its 1-based position in the partition.
    pub version: u64,
    /// The event object's id.
    pub id: ObjectId,
    /// The event.
    pub event: Event,
    /// The checkpoint that added it.
    pub checkpoint: ObjectId,
    /// The checkpoint's date.
    pub date: Option<DateTime<Utc>>,
    /// The checkpoint's session.
    pub session: String,
}

/// Which checkpoints a walk visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOrder {
    /// First parents only: the mainline.
    FirstParent,
    /// Every ancestor (breadth first, each once), for merges.
    Full,
}

/// Compiles a partition glob: `*` stays within a segment, `**` crosses segments.
pub(crate) fn compile_glob(pattern: &str) -> Result<GlobMatcher, Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::Glob {
            pattern: pattern.to_owned(),
            reason: e.kind().to_string(),
        })
}

impl Depot {
    /// The first-parent chain from `head` back to (not including) `stop`, oldest first: what a
    /// ref gained since `stop`. `None` walks to the root. `stop` not on the chain: the whole chain.
    pub fn first_parents_since(
        &self,
        head: ObjectId,
        stop: Option<ObjectId>,
    ) -> Result<Vec<ObjectId>, Error> {
        let mut chain = Vec::new();
        self.walk(head, HistoryOrder::FirstParent, |id, _| {
            if Some(id) == stop {
                return Ok(false);
            }
            chain.push(id);
            Ok(true)
        })?;
        chain.reverse();
        Ok(chain)
    }

    /// Walks checkpoints from `start`, newest first, calling `f` until it returns `false`.
    pub fn walk(
        &self,
        start: ObjectId,
        order: HistoryOrder,
        mut f: impl FnMut(ObjectId, &Checkpoint) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        match order {
            HistoryOrder::FirstParent => {
                let mut cursor = Some(start);
                while let Some(id) = cursor {
                    let checkpoint = self.read_checkpoint(&id)?;
                    if !f(id, &checkpoint)? {
                        break;
                    }
                    cursor = checkpoint.first_parent();
                }
            }
            HistoryOrder::Full => {
                let mut seen = HashSet::new();
                let mut queue = VecDeque::from([start]);
                seen.insert(start);
                while let Some(id) = queue.pop_front() {
                    let checkpoint = self.read_checkpoint(&id)?;
                    if !f(id, &checkpoint)? {
                        break;
                    }
                    for parent in checkpoint.parents() {
                        if seen.insert(*parent) {
                            queue.push_back(*parent);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Brings the partition index up to `HEAD`: appends what is new, or rebuilds after a
    /// non-fast-forward move. Cheap when already current (one ref read). New checkpoints first
    /// join an in-memory tail (`IndexState`) and reach SQLite in batches, so a commit does not
    /// pay for an SQLite transaction. (PostgreSQL's index is appended by the commit itself: no
    /// tail, only catch-ups after moves that carried no index rows.)
    ///
    /// A SQLite index that fails is replaced or stood in for by one in memory (see
    /// `index_state`), so this fails only when history itself cannot be read.
    pub fn catch_up_index(&self) -> Result<(), Error> {
        self.with_index(false, |_| Ok(()))
    }

    /// Catches the index up (and writes its tail to SQLite when `flush`), then runs `f` on it.
    /// When the stored index itself fails, it is recovered (`IndexState::recover`) and all of it
    /// runs again on the new index, which is rebuilt from history: a derived index never stands
    /// between a reader and the history.
    pub(crate) fn with_index<T>(
        &self,
        flush: bool,
        mut f: impl FnMut(&IndexState) -> Result<T, Error>,
    ) -> Result<T, Error> {
        loop {
            let attempt = (|| {
                self.catch_up_once()?;
                let mut state = self.index.lock().expect("index lock poisoned");
                if flush {
                    self.flush_locked(&mut state)?;
                }
                f(&state)
            })();
            match attempt {
                Err(Error::Index(err)) => {
                    let mut state = self.index.lock().expect("index lock poisoned");
                    if !state.recover(&err) {
                        return Err(Error::Index(err));
                    }
                }
                other => return other,
            }
        }
    }

    fn catch_up_once(&self) -> Result<(), Error> {
        let (_, head) = self.resolve_ref(&RefName::head())?;
        let mut state = self.index.lock().expect("index lock poisoned");
        // Already at HEAD: whatever other handles wrote to SQLite since, this view (SQLite up to
        // `base`, then the tail) is a consistent snapshot of HEAD. One comparison, no query.
        if state.tip() == head && (head.is_some() || state.base.is_none()) {
            return Ok(());
        }
        if state.pending.is_empty() {
            state.base = state.stored.head()?;
        }
        let tip = state.tip();
        if tip == head {
            return Ok(());
        }
        if !state.stored.keeps_tail() {
            self.stored_catch_up(&mut state.stored)?;
            state.base = state.stored.head()?;
            return Ok(());
        }
        // A fast-forward of the tip, not too far: extend the in-memory tail.
        let mut chain = Vec::new();
        let mut cursor = head;
        while let Some(id) = cursor {
            if Some(id) == tip || chain.len() >= PENDING_WALK_LIMIT {
                break;
            }
            let checkpoint = self.indexed_checkpoint(&id, &HashMap::new())?;
            cursor = checkpoint.parent;
            chain.push(checkpoint);
        }
        if cursor == tip && (tip.is_some() || state.base.is_none()) {
            chain.reverse();
            state.pending.extend(chain);
            if state.pending.len() >= PENDING_FLUSH_AT {
                self.flush_locked(&mut state)?;
            }
            return Ok(());
        }
        self.flush_locked(&mut state)?;
        self.stored_catch_up(&mut state.stored)?;
        state.base = state.stored.head()?;
        Ok(())
    }

    /// Writes the in-memory tail of the index to SQLite (catching up first; a failing index is
    /// recovered as in [`Depot::catch_up_index`]).
    pub fn flush_index(&self) -> Result<(), Error> {
        self.with_index(true, |_| Ok(()))
    }

    fn flush_locked(&self, state: &mut IndexState) -> Result<(), Error> {
        if state.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut state.pending);
        let tip = pending.last().map(|c| c.id);
        let base = state.base.map(|(id, _)| id);
        let appended = state.stored.write(|writer| {
            if writer.head()?.map(|(id, _)| id) != base {
                return Ok(false);
            }
            for checkpoint in &pending {
                writer.append(&self.located(checkpoint))?;
            }
            Ok(true)
        })?;
        // If another handle moved SQLite meanwhile, the tail is simply dropped: SQLite is caught
        // up to the current HEAD by whoever reads next, never rewound to this handle's tip.
        let _ = (appended, tip);
        state.base = state.stored.head()?;
        Ok(())
    }

    /// Brings the stored index (SQLite or PostgreSQL) itself to `HEAD`, rebuilding after a
    /// non-fast-forward move.
    /// `HEAD` is read inside the index's write transaction, which serializes every index writer
    /// (in every process): a writer can never rewind the index to a head it read earlier that
    /// another writer has since passed.
    fn stored_catch_up(&self, index: &mut PartitionIndex) -> Result<(), Error> {
        index.write(|writer| {
            let head = match writer.resolve_head() {
                Some(head) => head?,
                None => match self.resolve_ref(&RefName::head()) {
                    Ok((_, head)) => head,
                    Err(e) => return Ok(Err(e)),
                },
            };
            let indexed = writer.head()?.map(|(id, _)| id);
            if indexed == head {
                return Ok(Ok(()));
            }
            // Walk back from the head to what is indexed, keeping only ids (bounded memory).
            let mut chain = Vec::new();
            let mut cursor = head;
            let mut found = false;
            while let Some(id) = cursor {
                if Some(id) == indexed {
                    found = true;
                    break;
                }
                let checkpoint = match self.indexed_checkpoint(&id, &HashMap::new()) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                chain.push(id);
                cursor = checkpoint.parent;
            }
            if !found && indexed.is_some() {
                // Not a fast-forward of what was indexed: rebuild from the root.
                writer.clear()?;
            }
            for id in chain.iter().rev() {
                let checkpoint = match self.indexed_checkpoint(id, &HashMap::new()) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                writer.append(&self.located(&checkpoint))?;
            }
            Ok(Ok(()))
        })?
    }

    /// Drops the partition index and rebuilds it from history. A SQLite index is recreated from
    /// nothing: its file, `-wal` and `-shm` are removed first (whatever they held), so this
    /// repairs any damage; it fails (with the cause) only when the file cannot be written.
    /// Returns the new index's counts: checkpoints, partitions, events.
    pub fn reindex(&self) -> Result<(u64, u64, u64), Error> {
        self.index.lock().expect("index lock poisoned").recreate()?;
        self.rebuild_graph()?;
        // No fallback here: a rebuild that cannot be written must say so.
        self.catch_up_once()?;
        let mut state = self.index.lock().expect("index lock poisoned");
        self.flush_locked(&mut state)?;
        Ok(state.stored.counts()?)
    }

    /// Counts of what `HEAD`'s branch holds, from the partition index (caught up first):
    /// checkpoints, partitions, events.
    pub fn counts(&self) -> Result<(u64, u64, u64), Error> {
        self.with_index(true, |state| Ok(state.stored.counts()?))
    }

    /// `checkpoint` with the location hint of each of its events filled in (for the index to
    /// store; see [`EventRow::at`]).
    fn located(
        &self,
        checkpoint: &crate::index::IndexedCheckpoint,
    ) -> crate::index::IndexedCheckpoint {
        let mut located = checkpoint.clone();
        located.at = checkpoint
            .partitions
            .iter()
            .flat_map(|(_, ids)| ids)
            .map(|id| self.objects.locate(id))
            .collect();
        located
    }

    pub(super) fn load_rows(&self, rows: Vec<EventRow>) -> Result<Vec<EventRecord>, Error> {
        // A plain event whose bytes were erased is not read: it reads as its tombstone.
        let tombstones: Vec<Option<crate::object::Event>> = rows
            .iter()
            .map(|r| self.erased_plain_event(&r.event))
            .collect();
        let ids: Vec<(ObjectId, Option<u64>)> = rows
            .iter()
            .zip(&tombstones)
            .filter(|(_, t)| t.is_none())
            .map(|(r, _)| (r.event, r.at))
            .collect();
        let mut objects = self.objects.read_many_hinted(&ids)?.into_iter();
        rows.into_iter()
            .zip(tombstones)
            .map(|(row, tombstone)| {
                let event = match tombstone {
                    Some(event) => event,
                    None => self.next_row_event(&row.event, objects.next().flatten())?,
                };
                Ok(EventRecord {
                    partition: row.partition,
                    version: row.version,
                    id: row.event,
                    event,
                    checkpoint: row.checkpoint,
                    date: row.date,
                    session: row.session,
                })
            })
            .collect()
    }

    /// The event of index row `id` from the object read for it (resolved, as every read is).
    fn next_row_event(
        &self,
        id: &ObjectId,
        object: Option<crate::object::EncodedObject>,
    ) -> Result<Event, Error> {
        let object = object.ok_or_else(|| {
            self.absent_or(
                id,
                Error::MissingObject {
                    id: *id,
                    context: "not in the object store".to_owned(),
                },
            )
        })?;
        match object
            .decode()
            .map_err(|source| Error::Decode { id: *id, source })?
        {
            crate::object::Object::Event(e) => self.resolve_event(id, e),
            other => Err(Error::WrongKind {
                id: *id,
                expected: crate::object::Kind::Event,
                found: other.kind(),
            }),
        }
    }

    /// One partition's events on `HEAD`, oldest first, with checkpoint, date and session.
    /// Costs O(events of the partition), whatever the depot's size.
    pub fn partition_events(&self, partition: &PartitionName) -> Result<Vec<EventRecord>, Error> {
        self.partition_events_after(partition, 0)
    }

    /// The checkpoint the index stands at (HEAD after catching up) together with a partition's
    /// events as of that checkpoint: the consistent snapshot a command handler works on.
    pub fn partition_snapshot(
        &self,
        partition: &PartitionName,
    ) -> Result<(Option<ObjectId>, Vec<EventRecord>), Error> {
        self.check_partition_held(partition)?;
        let (head, rows) =
            self.with_index(false, |state| Ok((state.tip(), state.rows(partition, 0)?)))?;
        Ok((head, self.load_rows(rows)?))
    }

    /// A partition's events as of checkpoint `head` by walking its first-parent history: the slow
    /// path for refs other than `HEAD`'s branch (the index follows `HEAD` only). O(history).
    pub fn partition_events_at(
        &self,
        head: Option<ObjectId>,
        partition: &PartitionName,
    ) -> Result<Vec<EventRecord>, Error> {
        self.check_partition_held(partition)?;
        type Found = (ObjectId, Option<DateTime<Utc>>, String, Vec<ObjectId>);
        let mut found: Vec<Found> = Vec::new();
        if let Some(head) = head {
            self.walk(head, HistoryOrder::FirstParent, |id, checkpoint| {
                let affix = self.read_affix(&checkpoint.affix())?;
                if let Some(ids) = affix.events_of(partition) {
                    found.push((
                        id,
                        checkpoint.date(),
                        checkpoint.session().to_owned(),
                        ids.to_vec(),
                    ));
                }
                Ok(true)
            })?;
        }
        let mut out = Vec::new();
        let mut version = 0;
        for (checkpoint, date, session, ids) in found.into_iter().rev() {
            for id in ids {
                version += 1;
                out.push(EventRecord {
                    partition: partition.clone(),
                    version,
                    id,
                    event: self.read_event(&id)?,
                    checkpoint,
                    date,
                    session: session.clone(),
                });
            }
        }
        Ok(out)
    }

    /// A partition's events after version `after` (0: all).
    pub fn partition_events_after(
        &self,
        partition: &PartitionName,
        after: u64,
    ) -> Result<Vec<EventRecord>, Error> {
        self.check_partition_held(partition)?;
        let rows = self.with_index(false, |state| Ok(state.rows(partition, after)?))?;
        self.load_rows(rows)
    }

    /// How many events `partition` had just before checkpoint `checkpoint` on `HEAD`'s branch
    /// (through the index), or on `checkpoint`'s own history (by walking it, the slow path).
    pub fn partition_version_before(
        &self,
        partition: &PartitionName,
        checkpoint: &ObjectId,
    ) -> Result<u64, Error> {
        let indexed = self.with_index(true, |state| {
            Ok(match state.stored.checkpoint_seq(checkpoint)? {
                Some(seq) => Some(state.stored.partition_version_upto(partition, seq - 1)?),
                None => None,
            })
        })?;
        match indexed {
            Some(version) => Ok(version),
            None => {
                let parent = self.read_checkpoint_unresolved(checkpoint)?.first_parent();
                Ok(self.partition_events_at(parent, partition)?.len() as u64)
            }
        }
    }

    /// Whether checkpoint `id` is on `HEAD`'s first-parent history (one index lookup).
    pub fn on_head_history(&self, id: &ObjectId) -> Result<bool, Error> {
        self.with_index(true, |state| Ok(state.stored.checkpoint_seq(id)?.is_some()))
    }

    /// How many events a partition has on `HEAD`.
    pub fn partition_version(&self, partition: &PartitionName) -> Result<u64, Error> {
        self.with_index(false, |state| Ok(state.version(partition)?))
    }

    /// Partitions matching `glob` with their event counts, sorted by name.
    pub fn partitions(&self, glob: &str) -> Result<Vec<(PartitionName, u64)>, Error> {
        let matcher = compile_glob(glob)?;
        // Only names that start with the glob's literal prefix can match: a range scan.
        let literal = glob
            .find(['*', '?', '[', '{', '\\'])
            .map_or(glob, |end| &glob[..end]);
        self.with_index(true, |state| {
            let mut out = Vec::new();
            state
                .stored
                .for_each_partition_with_prefix(literal, |name, count| {
                    if matcher.is_match(name) {
                        if let Ok(p) = PartitionName::stored(name) {
                            out.push((p, count));
                        }
                    }
                    Ok(())
                })?;
            Ok(out)
        })
    }

    /// Events of every partition matching `glob`, oldest first (history order, then affix order),
    /// optionally only those after checkpoint `since`; streamed to `f` until it returns `false`.
    pub fn events_matching(
        &self,
        glob: &str,
        since: Option<ObjectId>,
        f: impl FnMut(EventRecord) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.events_matching_upto(glob, since, None, f)
    }

    /// [`Depot::events_matching`] as of checkpoint `upto` on `HEAD`'s first-parent history (the
    /// events of the checkpoints up to and including it; `None`: all), through the index: what
    /// `retro events --at` reads when the checkpoint is on `HEAD`'s history (see
    /// [`Depot::on_head_history`]). A checkpoint not on it is [`Error::Invalid`].
    pub fn events_matching_upto(
        &self,
        glob: &str,
        since: Option<ObjectId>,
        upto: Option<ObjectId>,
        mut f: impl FnMut(EventRecord) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let upto_seq = match upto {
            None => u64::MAX,
            Some(id) => self
                .with_index(true, |state| Ok(state.stored.checkpoint_seq(&id)?))?
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "checkpoint {id} is not on HEAD's first-parent history"
                    ))
                })?,
        };
        let matcher = compile_glob(glob)?;
        let after_seq = match since {
            None => 0,
            Some(id) => self
                .with_index(true, |state| Ok(state.stored.checkpoint_seq(&id)?))?
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "checkpoint {id} is not on HEAD's first-parent history"
                    ))
                })?,
        };
        // Few matching partitions: merge their indexed lists. Many: walk checkpoints in order.
        let matched = self.partitions(glob)?;
        // A partial clone: every matching partition must be held (its events are read).
        self.check_partitions_held(matched.iter().map(|(p, _)| p))?;
        if matched.len() <= 64 {
            let mut rows = self.with_index(true, |state| {
                let mut rows = Vec::new();
                for (partition, _) in &matched {
                    rows.extend(
                        state
                            .stored
                            .partition_events(partition, 0)?
                            .into_iter()
                            .filter(|r| {
                                r.checkpoint_seq > after_seq && r.checkpoint_seq <= upto_seq
                            }),
                    );
                }
                Ok(rows)
            })?;
            rows.sort_by(|a, b| {
                (a.checkpoint_seq, &a.partition, a.version).cmp(&(
                    b.checkpoint_seq,
                    &b.partition,
                    b.version,
                ))
            });
            for row in rows {
                let event = self.read_event(&row.event)?;
                let record = EventRecord {
                    partition: row.partition,
                    version: row.version,
                    id: row.event,
                    event,
                    checkpoint: row.checkpoint,
                    date: row.date,
                    session: row.session,
                };
                if !f(record)? {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let mut versions: HashMap<PartitionName, u64> = HashMap::new();
        let mut stop = false;
        let checkpoints = self.with_index(true, |state| {
            let mut checkpoints = Vec::new();
            state.stored.for_each_checkpoint(0, |seq, id| {
                checkpoints.push((seq, id));
                Ok(true)
            })?;
            Ok(checkpoints)
        })?;
        for (seq, id) in checkpoints {
            if stop || seq > upto_seq {
                break;
            }
            let checkpoint = self.indexed_checkpoint(&id, &HashMap::new())?;
            for (partition, ids) in &checkpoint.partitions {
                let version = versions.entry(partition.clone()).or_insert(0);
                for event_id in ids {
                    *version += 1;
                    if seq <= after_seq || !matcher.is_match(partition.as_str()) {
                        continue;
                    }
                    let record = EventRecord {
                        partition: partition.clone(),
                        version: *version,
                        id: *event_id,
                        event: self.read_event(event_id)?,
                        checkpoint: id,
                        date: checkpoint.date,
                        session: checkpoint.session.clone(),
                    };
                    if !f(record)? {
                        stop = true;
                        break;
                    }
                }
                if stop {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whether a checkpoint touches a partition matching `matcher`.
    pub fn checkpoint_touches(&self, checkpoint: &Checkpoint, glob: &str) -> Result<bool, Error> {
        let matcher = compile_glob(glob)?;
        let affix = self.read_affix(&checkpoint.affix())?;
        let touches = affix
            .partitions()
            .any(|(p, _)| matcher.is_match(p.as_str()));
        Ok(touches)
    }
}

#[cfg(test)]
mod glob_tests {
    use super::compile_glob;

    /// The rule documented on `compile_glob` and in docs/cli.md: `*` stays within a segment,
    /// `**` crosses segments.
    #[test]
    fn a_star_stays_in_its_segment_and_two_stars_cross_them() {
        let one = compile_glob("accounts/*").unwrap();
        assert!(one.is_match("accounts/alice"));
        assert!(!one.is_match("accounts/alice/cards"));
        let two = compile_glob("accounts/**").unwrap();
        assert!(two.is_match("accounts/alice"));
        assert!(two.is_match("accounts/alice/cards"));
        assert!(!two.is_match("registry/accounts"));
        assert!(compile_glob("accounts/[").is_err());
    }
}

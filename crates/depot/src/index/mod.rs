//! The partition index: a derived, rebuildable table of which events each partition holds, in
//! order, with each event's checkpoint, date and session.
//!
//! It follows one ref (the one `HEAD` names) along first parents. Reading a partition costs one
//! indexed range query, O(events of the partition), whatever the depot's size. It catches up from
//! the last indexed checkpoint; when the ref moved in a way that is not a fast-forward of what was
//! indexed, it is rebuilt from the root. It is never trusted over the objects: event ids read from
//! it are loaded (and hash-verified) from the object store, and fsck replays history to compare.
//!
//! Any [`IndexStore`] behind [`PartitionIndex`]: SQLite here ([`SqliteIndex`], a file beside a
//! files depot, or in memory); the PostgreSQL backend (crate `retro-depot-postgres`) keeps it in
//! tables of the depot's database, appended by the same transaction that moves the ref.

mod sqlite;

use chrono::{DateTime, Utc};

pub use sqlite::{SqliteIndex, SqliteWriter};

use crate::hash::ObjectId;
use crate::name::PartitionName;

/// What went wrong with the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// SQLite failed.
    #[error("partition index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another backend's index failed (the PostgreSQL one, say), with its class.
    #[error("partition index: {0}")]
    Backend(#[from] crate::class::BackendError),
    /// The index holds something that cannot be right.
    #[error("partition index is corrupt: {0}")]
    Corrupt(String),
}

/// One checkpoint to add to the index: its events per partition in affix order.
#[derive(Debug, Clone)]
pub struct IndexedCheckpoint {
    /// The checkpoint.
    pub id: ObjectId,
    /// Its first parent.
    pub parent: Option<ObjectId>,
    /// Its date (seconds since the epoch), if it has one.
    pub date: Option<DateTime<Utc>>,
    /// Its session.
    pub session: String,
    /// Partitions (sorted) and their events in order.
    pub partitions: Vec<(PartitionName, Vec<ObjectId>)>,
    /// Where each event's record is in the object store ([`EventRow::at`]), in the order of
    /// `partitions` flattened; empty when not known (the index then stores none).
    pub at: Vec<Option<u64>>,
    /// Its `command-id` field, if it has one: indexed for idempotent commits.
    pub command_id: Option<String>,
}

/// An event's place in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The partition.
    pub partition: PartitionName,
    /// 1-based position in the partition (its version after this event).
    pub version: u64,
    /// The event object.
    pub event: ObjectId,
    /// The checkpoint that added it.
    pub checkpoint: ObjectId,
    /// The order of that checkpoint in history (1 = the root).
    pub checkpoint_seq: u64,
    /// The checkpoint's date.
    pub date: Option<DateTime<Utc>>,
    /// The checkpoint's session.
    pub session: String,
    /// Where the event's record was in the object store when it was indexed
    /// ([`crate::odb::ObjectStore::locate`]): a hint that lets a read skip the id lookup. Never
    /// trusted: the record read there must carry this event's id and hash to it, else the event
    /// is looked up by id (a stale hint, after a gc, costs that lookup and nothing else).
    pub at: Option<u64>,
}

/// A place that stores the partition index: SQLite here ([`SqliteIndex`]); other crates add
/// others (the PostgreSQL backend keeps it in the depot's database). Object-safe, so a depot
/// holds any of them as a [`PartitionIndex`].
pub trait IndexStore: Send {
    /// Whether readers may keep an in-memory tail of recent checkpoints in front of this index
    /// (false when each commit appends to the index itself, in its own transaction).
    fn keeps_tail(&self) -> bool {
        true
    }

    /// The checkpoint the index is complete up to, and its sequence number.
    fn head(&self) -> Result<Option<(ObjectId, u64)>, IndexError>;

    /// Runs `f` inside one write transaction that holds the index's write lock from the start
    /// (so concurrent catch-ups, in other processes and hosts too, serialize); commits when `f`
    /// returns Ok, rolls back otherwise.
    fn write_with(
        &mut self,
        f: &mut dyn FnMut(&mut dyn IndexWrite) -> Result<(), IndexError>,
    ) -> Result<(), IndexError>;

    /// A partition's events after version `after_version` (0: all), in checkpoints up to
    /// sequence `max_seq`, oldest first.
    fn partition_events_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
    ) -> Result<Vec<EventRow>, IndexError>;

    /// The same events as [`IndexStore::partition_events_upto`], streamed to `f` one at a time
    /// (memory independent of the partition's length) until `f` returns false. The default
    /// collects them first; a backend that can stream overrides it.
    fn for_each_partition_event_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
        f: &mut dyn FnMut(EventRow) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        for row in self.partition_events_upto(partition, after_version, max_seq)? {
            if !f(row)? {
                break;
            }
        }
        Ok(())
    }

    /// How many events a partition has in checkpoints up to sequence `max_seq`.
    fn partition_version_upto(
        &self,
        partition: &PartitionName,
        max_seq: u64,
    ) -> Result<u64, IndexError>;

    /// The partitions whose names start with `prefix`, sorted by name, with their event counts.
    fn for_each_partition_with_prefix(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError>;

    /// The sequence number of an indexed checkpoint.
    fn checkpoint_seq(&self, id: &ObjectId) -> Result<Option<u64>, IndexError>;

    /// The oldest indexed checkpoint with sequence number up to `max_seq` whose `command-id`
    /// field is `command_id` (an indexed lookup, O(log n)).
    fn checkpoint_by_command_id(
        &self,
        command_id: &str,
        max_seq: u64,
    ) -> Result<Option<ObjectId>, IndexError>;

    /// Indexed checkpoints with `seq > after`, oldest first, streamed to `f(seq, id)` until it
    /// returns false.
    fn for_each_checkpoint(
        &self,
        after: u64,
        f: &mut dyn FnMut(u64, ObjectId) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError>;

    /// Counts for reports: checkpoints, partitions, events.
    fn counts(&self) -> Result<(u64, u64, u64), IndexError>;

    /// Replaces every event's location hint ([`EventRow::at`]) with `locate(event)`, after the
    /// objects moved (gc); returns how many rows it rewrote. Stores that keep no hints do nothing.
    fn relocate(
        &mut self,
        locate: &mut dyn FnMut(&ObjectId) -> Option<u64>,
    ) -> Result<u64, IndexError> {
        let _ = locate;
        Ok(0)
    }
}

/// Writes inside one index transaction (see [`IndexStore::write_with`]).
pub trait IndexWrite {
    /// The head inside this transaction.
    fn head(&mut self) -> Result<Option<(ObjectId, u64)>, IndexError>;

    /// Where `HEAD` points, read inside this transaction, when the backend keeps refs in the
    /// same database; `None` (the default): ask the ref store.
    fn resolve_head(&mut self) -> Option<Result<Option<ObjectId>, IndexError>> {
        None
    }

    /// Empties the index (before a rebuild).
    fn clear(&mut self) -> Result<(), IndexError>;

    /// Appends one checkpoint (which must be a child of the head); returns its sequence number.
    fn append(&mut self, checkpoint: &IndexedCheckpoint) -> Result<u64, IndexError>;
}

/// A writer inside an index transaction, as closures passed to [`PartitionIndex::write`] see it.
pub type IndexWriter<'a> = dyn IndexWrite + 'a;

/// The partition index a depot reads: any [`IndexStore`].
pub struct PartitionIndex(Box<dyn IndexStore>);

impl PartitionIndex {
    /// Opens (creating) the SQLite index file at `path`.
    pub fn open(path: &std::path::Path) -> Result<PartitionIndex, IndexError> {
        SqliteIndex::open(path).map(PartitionIndex::new)
    }

    /// An SQLite index in memory.
    pub fn in_memory() -> Result<PartitionIndex, IndexError> {
        SqliteIndex::in_memory().map(PartitionIndex::new)
    }

    /// Any index store.
    pub fn new(store: impl IndexStore + 'static) -> PartitionIndex {
        PartitionIndex(Box::new(store))
    }

    /// See [`IndexStore::keeps_tail`].
    pub fn keeps_tail(&self) -> bool {
        self.0.keeps_tail()
    }

    /// The checkpoint the index is complete up to, and its sequence number.
    pub fn head(&self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        self.0.head()
    }

    /// Runs `f` inside one write transaction (see [`IndexStore::write_with`]).
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&mut IndexWriter<'_>) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let mut f = Some(f);
        let mut out = None;
        self.0.write_with(&mut |writer| {
            let f = f.take().expect("an index transaction runs its body once");
            out = Some(f(writer)?);
            Ok(())
        })?;
        Ok(out.expect("the transaction ran its body"))
    }

    /// The events of one partition after version `after_version` (0: all), oldest first.
    pub fn partition_events(
        &self,
        partition: &PartitionName,
        after_version: u64,
    ) -> Result<Vec<EventRow>, IndexError> {
        self.0.partition_events_upto(partition, after_version, None)
    }

    /// See [`IndexStore::partition_events_upto`].
    pub fn partition_events_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
    ) -> Result<Vec<EventRow>, IndexError> {
        self.0
            .partition_events_upto(partition, after_version, max_seq)
    }

    /// Every event of one partition, oldest first, streamed to `f` until it returns false
    /// (see [`IndexStore::for_each_partition_event_upto`]).
    pub fn for_each_partition_event(
        &self,
        partition: &PartitionName,
        mut f: impl FnMut(EventRow) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        self.0
            .for_each_partition_event_upto(partition, 0, None, &mut f)
    }

    /// See [`IndexStore::partition_version_upto`].
    pub fn partition_version_upto(
        &self,
        partition: &PartitionName,
        max_seq: u64,
    ) -> Result<u64, IndexError> {
        self.0.partition_version_upto(partition, max_seq)
    }

    /// Every partition with its event count, sorted by name, streamed to `f`.
    pub fn for_each_partition(
        &self,
        mut f: impl FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        self.0.for_each_partition_with_prefix("", &mut f)
    }

    /// See [`IndexStore::for_each_partition_with_prefix`].
    pub fn for_each_partition_with_prefix(
        &self,
        prefix: &str,
        mut f: impl FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        self.0.for_each_partition_with_prefix(prefix, &mut f)
    }

    /// See [`IndexStore::checkpoint_seq`].
    pub fn checkpoint_seq(&self, id: &ObjectId) -> Result<Option<u64>, IndexError> {
        self.0.checkpoint_seq(id)
    }

    /// See [`IndexStore::checkpoint_by_command_id`].
    pub fn checkpoint_by_command_id(
        &self,
        command_id: &str,
        max_seq: u64,
    ) -> Result<Option<ObjectId>, IndexError> {
        self.0.checkpoint_by_command_id(command_id, max_seq)
    }

    /// See [`IndexStore::for_each_checkpoint`].
    pub fn for_each_checkpoint(
        &self,
        after: u64,
        mut f: impl FnMut(u64, ObjectId) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        self.0.for_each_checkpoint(after, &mut f)
    }

    /// Counts for reports: checkpoints, partitions, events.
    pub fn counts(&self) -> Result<(u64, u64, u64), IndexError> {
        self.0.counts()
    }

    /// Replaces every event's location hint (see [`IndexStore::relocate`]).
    pub fn relocate(
        &mut self,
        mut locate: impl FnMut(&ObjectId) -> Option<u64>,
    ) -> Result<u64, IndexError> {
        self.0.relocate(&mut locate)
    }
}

//! The partition index: a derived, rebuildable table of which events each partition holds, in
//! order, with each event's checkpoint, date and session.
//!
//! It follows one ref (the one `HEAD` names) along first parents. Reading a partition costs one
//! indexed range query, O(events of the partition), whatever the depot's size. It catches up from
//! the last indexed checkpoint; when the ref moved in a way that is not a fast-forward of what was
//! indexed, it is rebuilt from the root. It is never trusted over the objects: event ids read from
//! it are loaded (and hash-verified) from the object store, and fsck replays history to compare.
//!
//! Two backends behind [`PartitionIndex`]: SQLite ([`sqlite`], a file beside a files depot, or in
//! memory) and PostgreSQL (`crate::postgres::PgIndex`, tables in the depot's database, appended by
//! the same transaction that moves the ref).

mod sqlite;

use chrono::{DateTime, Utc};

pub use sqlite::{SqliteIndex, SqliteWriter};

use crate::hash::ObjectId;
use crate::name::PartitionName;
use crate::postgres::{PgIndex, PgIndexWriter};

/// What went wrong with the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// SQLite failed.
    #[error("partition index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("partition index: {0}")]
    Postgres(String),
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
}

/// The partition index, in SQLite or in PostgreSQL.
pub enum PartitionIndex {
    /// A SQLite file (or memory).
    Sqlite(SqliteIndex),
    /// Tables in a PostgreSQL depot.
    Postgres(Box<PgIndex>),
}

/// Writes inside one index transaction, which serializes every index writer.
pub enum IndexWriter<'a> {
    /// In SQLite.
    Sqlite(SqliteWriter<'a>),
    /// In PostgreSQL.
    Postgres(PgIndexWriter<'a>),
}

impl PartitionIndex {
    /// Opens (creating) the SQLite index file at `path`.
    pub fn open(path: &std::path::Path) -> Result<PartitionIndex, IndexError> {
        SqliteIndex::open(path).map(PartitionIndex::Sqlite)
    }

    /// An SQLite index in memory.
    pub fn in_memory() -> Result<PartitionIndex, IndexError> {
        SqliteIndex::in_memory().map(PartitionIndex::Sqlite)
    }

    /// Whether readers may keep an in-memory tail of recent checkpoints in front of this index.
    /// The PostgreSQL index is appended by the commit itself: a tail would only duplicate it.
    pub fn keeps_tail(&self) -> bool {
        matches!(self, PartitionIndex::Sqlite(_))
    }

    /// The checkpoint the index is complete up to, and its sequence number.
    pub fn head(&self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.head(),
            PartitionIndex::Postgres(i) => i.head(),
        }
    }

    /// Runs `f` inside one write transaction that holds the index's write lock from the start,
    /// so concurrent catch-ups (in other processes and hosts too) serialize.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&mut IndexWriter<'_>) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.write(f),
            PartitionIndex::Postgres(i) => i.write(f),
        }
    }

    /// The events of one partition after version `after_version` (0: all), oldest first.
    pub fn partition_events(
        &self,
        partition: &PartitionName,
        after_version: u64,
    ) -> Result<Vec<EventRow>, IndexError> {
        self.partition_events_upto(partition, after_version, None)
    }

    /// The events of one partition after version `after_version` (0: all), in checkpoints up to
    /// sequence `max_seq`, oldest first.
    pub fn partition_events_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
    ) -> Result<Vec<EventRow>, IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.partition_events_upto(partition, after_version, max_seq),
            PartitionIndex::Postgres(i) => {
                i.partition_events_upto(partition, after_version, max_seq)
            }
        }
    }

    /// How many events a partition has in checkpoints up to sequence `max_seq`.
    pub fn partition_version_upto(
        &self,
        partition: &PartitionName,
        max_seq: u64,
    ) -> Result<u64, IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.partition_version_upto(partition, max_seq),
            PartitionIndex::Postgres(i) => i.partition_version_upto(partition, max_seq),
        }
    }

    /// Every partition with its event count, sorted by name, streamed to `f`.
    pub fn for_each_partition(
        &self,
        f: impl FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        self.for_each_partition_with_prefix("", f)
    }

    /// The partitions whose names start with `prefix`, sorted by name.
    pub fn for_each_partition_with_prefix(
        &self,
        prefix: &str,
        f: impl FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.for_each_partition_with_prefix(prefix, f),
            PartitionIndex::Postgres(i) => i.for_each_partition_with_prefix(prefix, f),
        }
    }

    /// The sequence number of an indexed checkpoint.
    pub fn checkpoint_seq(&self, id: &ObjectId) -> Result<Option<u64>, IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.checkpoint_seq(id),
            PartitionIndex::Postgres(i) => i.checkpoint_seq(id),
        }
    }

    /// Indexed checkpoints with `seq > after`, oldest first, streamed to `f(seq, id)` until it
    /// returns false.
    pub fn for_each_checkpoint(
        &self,
        after: u64,
        f: impl FnMut(u64, ObjectId) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.for_each_checkpoint(after, f),
            PartitionIndex::Postgres(i) => i.for_each_checkpoint(after, f),
        }
    }

    /// Counts for reports: checkpoints, partitions, events.
    pub fn counts(&self) -> Result<(u64, u64, u64), IndexError> {
        match self {
            PartitionIndex::Sqlite(i) => i.counts(),
            PartitionIndex::Postgres(i) => i.counts(),
        }
    }
}

impl IndexWriter<'_> {
    /// The head inside this transaction.
    pub fn head(&mut self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        match self {
            IndexWriter::Sqlite(w) => w.head(),
            IndexWriter::Postgres(w) => w.head(),
        }
    }

    /// Where `HEAD` points, read inside this transaction, when the backend keeps refs in the
    /// same database (PostgreSQL); `None`: ask the ref store.
    pub fn resolve_head(&mut self) -> Option<Result<Option<ObjectId>, IndexError>> {
        match self {
            IndexWriter::Sqlite(_) => None,
            IndexWriter::Postgres(w) => Some(w.resolve_head()),
        }
    }

    /// Empties the index (before a rebuild).
    pub fn clear(&mut self) -> Result<(), IndexError> {
        match self {
            IndexWriter::Sqlite(w) => w.clear(),
            IndexWriter::Postgres(w) => w.clear(),
        }
    }

    /// Appends one checkpoint (which must be a child of the head); returns its sequence number.
    pub fn append(&mut self, checkpoint: &IndexedCheckpoint) -> Result<u64, IndexError> {
        match self {
            IndexWriter::Sqlite(w) => w.append(checkpoint),
            IndexWriter::Postgres(w) => w.append(checkpoint),
        }
    }
}

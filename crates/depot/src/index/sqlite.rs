//! The SQLite backend of the partition index: a file per depot (native and go-retro layouts) or
//! a table in memory.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a power cut may lose the newest index rows
//! but never corrupts the file, and lost rows are re-derived on the next catch-up.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{EventRow, IndexError, IndexStore, IndexWrite, IndexedCheckpoint};
use crate::hash::ObjectId;
use crate::name::PartitionName;

/// 2: `events.at`, the location hint of each event (added in place to a version 1 index).
/// 3: `checkpoints.command_id` and its index, for idempotent commits. An older index is emptied
/// when upgraded (and rebuilt from history by the next catch-up): a checkpoint it indexed may
/// carry a command id it did not keep.
const SCHEMA_VERSION: i64 = 3;

/// The tables of the current schema.
const CREATE_TABLES: &str = "CREATE TABLE IF NOT EXISTS checkpoints(
         seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, date INTEGER, session TEXT NOT NULL,
         command_id TEXT);
     CREATE INDEX IF NOT EXISTS checkpoints_by_command_id ON checkpoints(command_id, seq)
         WHERE command_id IS NOT NULL;
     CREATE TABLE IF NOT EXISTS partitions(
         pid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, events INTEGER NOT NULL,
         last_seq INTEGER NOT NULL);
     CREATE TABLE IF NOT EXISTS events(
         pid INTEGER NOT NULL, n INTEGER NOT NULL, cseq INTEGER NOT NULL, event BLOB NOT NULL,
         at INTEGER, PRIMARY KEY(pid, n)) WITHOUT ROWID;";

/// The SQLite-backed partition index.
pub struct SqliteIndex {
    conn: Connection,
}

fn id_from(blob: Vec<u8>) -> Result<ObjectId, IndexError> {
    ObjectId::from_slice(&blob).ok_or_else(|| IndexError::Corrupt("an id is not 32 bytes".into()))
}

/// The newest indexed checkpoint and its sequence number.
fn head_of(conn: &Connection) -> Result<Option<(ObjectId, u64)>, IndexError> {
    let row: Option<(Vec<u8>, i64)> = conn
        .prepare_cached("SELECT id, seq FROM checkpoints ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(id, seq)| Ok((id_from(id)?, seq as u64)))
        .transpose()
}

fn date_from(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

impl SqliteIndex {
    /// Opens (creating) the index file at `path`.
    pub fn open(path: &Path) -> Result<SqliteIndex, IndexError> {
        let conn = Connection::open(path)?;
        Self::setup(conn, true)
    }

    /// An index that lives in memory.
    pub fn in_memory() -> Result<SqliteIndex, IndexError> {
        Self::setup(Connection::open_in_memory()?, false)
    }

    fn setup(conn: Connection, on_disk: bool) -> Result<SqliteIndex, IndexError> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        if on_disk {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        conn.pragma_update(None, "cache_size", -16_000)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);")?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version {
            None => {
                conn.execute_batch(CREATE_TABLES)?;
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => conn.execute_batch(CREATE_TABLES)?,
            Some(1 | 2) => {
                // Versions 1 and 2 kept no command ids: start the index afresh (it is derived;
                // the next catch-up rebuilds it from history, command ids included).
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     DROP TABLE IF EXISTS events;
                     DROP TABLE IF EXISTS partitions;
                     DROP TABLE IF EXISTS checkpoints;
                     {CREATE_TABLES}
                     UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'version';
                     COMMIT;"
                ))?;
            }
            Some(other) => {
                return Err(IndexError::Corrupt(format!(
                    "schema version {other} is not {SCHEMA_VERSION}; run 'retro reindex'"
                )))
            }
        }
        Ok(SqliteIndex { conn })
    }
}

/// Writes inside one index transaction.
pub struct SqliteWriter<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl IndexStore for SqliteIndex {
    /// The checkpoint the index is complete up to, and its sequence number.
    fn head(&self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        head_of(&self.conn)
    }

    /// One transaction that holds SQLite's write lock from the start (`BEGIN IMMEDIATE`), so
    /// concurrent catch-ups (in other processes too) serialize.
    fn write_with(
        &mut self,
        f: &mut dyn FnMut(&mut dyn IndexWrite) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut writer = SqliteWriter { tx };
        f(&mut writer)?;
        writer.tx.commit()?;
        Ok(())
    }

    /// A partition's events after `after_version`, in checkpoints up to sequence `max_seq`.
    fn partition_events_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
    ) -> Result<Vec<EventRow>, IndexError> {
        let mut out = Vec::new();
        self.for_each_partition_event_upto(partition, after_version, max_seq, &mut |row| {
            out.push(row);
            Ok(true)
        })?;
        Ok(out)
    }

    fn for_each_partition_event_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
        f: &mut dyn FnMut(EventRow) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT e.n, e.event, c.id, c.seq, c.date, c.session, e.at
             FROM partitions p JOIN events e ON e.pid = p.pid JOIN checkpoints c ON c.seq = e.cseq
             WHERE p.name = ?1 AND e.n > ?2 AND e.cseq <= ?3 ORDER BY e.n",
        )?;
        let max_seq = max_seq.map_or(i64::MAX, |s| s as i64);
        let mut rows = stmt.query(params![partition.as_str(), after_version as i64, max_seq])?;
        while let Some(r) = rows.next()? {
            let row = EventRow {
                partition: partition.clone(),
                version: r.get::<_, i64>(0)? as u64,
                event: id_from(r.get::<_, Vec<u8>>(1)?)?,
                checkpoint: id_from(r.get::<_, Vec<u8>>(2)?)?,
                checkpoint_seq: r.get::<_, i64>(3)? as u64,
                date: date_from(r.get::<_, Option<i64>>(4)?),
                session: r.get::<_, String>(5)?,
                at: r
                    .get::<_, Option<i64>>(6)?
                    .and_then(|a| u64::try_from(a).ok()),
            };
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
    ) -> Result<u64, IndexError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM partitions p JOIN events e ON e.pid = p.pid
                 WHERE p.name = ?1 AND e.cseq <= ?2",
            )?
            .query_row(params![partition.as_str(), max_seq as i64], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// The partitions whose names start with `prefix` (a range scan of the name index), sorted.
    fn for_each_partition_with_prefix(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, events FROM partitions WHERE name >= ?1 ORDER BY name")?;
        let mut rows = stmt.query([prefix])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            if !name.starts_with(prefix) {
                break;
            }
            let n: i64 = row.get(1)?;
            f(&name, n as u64)?;
        }
        Ok(())
    }

    /// The sequence number of an indexed checkpoint.
    fn checkpoint_seq(&self, id: &ObjectId) -> Result<Option<u64>, IndexError> {
        let n: Option<i64> = self
            .conn
            .prepare_cached("SELECT seq FROM checkpoints WHERE id = ?1")?
            .query_row([id.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        Ok(n.map(|n| n as u64))
    }

    /// The oldest checkpoint up to `max_seq` carrying `command_id`: one probe of
    /// `checkpoints_by_command_id`.
    fn checkpoint_by_command_id(
        &self,
        command_id: &str,
        max_seq: u64,
    ) -> Result<Option<ObjectId>, IndexError> {
        let id: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT id FROM checkpoints WHERE command_id = ?1 AND seq <= ?2
                 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![command_id, max_seq as i64], |r| r.get(0))
            .optional()?;
        id.map(id_from).transpose()
    }

    /// Indexed checkpoints with `seq > after`, oldest first, streamed to `f(seq, id)`.
    fn for_each_checkpoint(
        &self,
        after: u64,
        f: &mut dyn FnMut(u64, ObjectId) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, id FROM checkpoints WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = stmt.query([after as i64])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let id = id_from(row.get(1)?)?;
            if !f(seq as u64, id)? {
                break;
            }
        }
        Ok(())
    }

    /// Counts for reports: checkpoints, partitions, events.
    fn counts(&self) -> Result<(u64, u64, u64), IndexError> {
        let q = |sql: &str| -> Result<u64, IndexError> {
            Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok((
            q("SELECT COUNT(*) FROM checkpoints")?,
            q("SELECT COUNT(*) FROM partitions")?,
            q("SELECT COUNT(*) FROM events")?,
        ))
    }

    /// Rewrites every event's location hint in one transaction, streaming the rows.
    fn relocate(
        &mut self,
        locate: &mut dyn FnMut(&ObjectId) -> Option<u64>,
    ) -> Result<u64, IndexError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rewritten = 0u64;
        {
            let mut rows = tx.prepare("SELECT pid, n, event FROM events")?;
            let mut update = tx.prepare("UPDATE events SET at = ?1 WHERE pid = ?2 AND n = ?3")?;
            let mut cursor = rows.query([])?;
            while let Some(row) = cursor.next()? {
                let (pid, n): (i64, i64) = (row.get(0)?, row.get(1)?);
                let id = id_from(row.get(2)?)?;
                let at = locate(&id).and_then(|a| i64::try_from(a).ok());
                update.execute(params![at, pid, n])?;
                rewritten += 1;
            }
        }
        tx.commit()?;
        Ok(rewritten)
    }
}

impl IndexWrite for SqliteWriter<'_> {
    /// The head inside this transaction.
    fn head(&mut self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        head_of(&self.tx)
    }

    /// Empties the index (before a rebuild).
    fn clear(&mut self) -> Result<(), IndexError> {
        self.tx.execute_batch(
            "DELETE FROM events; DELETE FROM partitions; DELETE FROM checkpoints;",
        )?;
        Ok(())
    }

    /// Appends one checkpoint (which must be a child of the head).
    fn append(&mut self, checkpoint: &IndexedCheckpoint) -> Result<u64, IndexError> {
        let seq = self.head()?.map_or(1, |(_, seq)| seq + 1);
        self.tx
            .prepare_cached(
                "INSERT INTO checkpoints(seq, id, date, session, command_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                seq as i64,
                checkpoint.id.as_bytes().as_slice(),
                checkpoint.date.map(|d| d.timestamp()),
                checkpoint.session,
                checkpoint.command_id
            ])?;
        let mut located = 0usize;
        for (partition, events) in &checkpoint.partitions {
            let existing: Option<(i64, i64)> = self
                .tx
                .prepare_cached("SELECT pid, events FROM partitions WHERE name = ?1")?
                .query_row([partition.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let (pid, before) = match existing {
                Some(found) => found,
                None => {
                    self.tx
                        .prepare_cached(
                            "INSERT INTO partitions(name, events, last_seq) VALUES (?1, 0, ?2)",
                        )?
                        .execute(params![partition.as_str(), seq as i64])?;
                    (self.tx.last_insert_rowid(), 0)
                }
            };
            let mut insert = self.tx.prepare_cached(
                "INSERT INTO events(pid, n, cseq, event, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (i, event) in events.iter().enumerate() {
                let at = checkpoint
                    .at
                    .get(located)
                    .copied()
                    .flatten()
                    .and_then(|a| i64::try_from(a).ok());
                located += 1;
                insert.execute(params![
                    pid,
                    before + 1 + i as i64,
                    seq as i64,
                    event.as_bytes().as_slice(),
                    at
                ])?;
            }
            self.tx
                .prepare_cached("UPDATE partitions SET events = ?1, last_seq = ?2 WHERE pid = ?3")?
                .execute(params![before + events.len() as i64, seq as i64, pid])?;
        }
        Ok(seq)
    }
}

//! Aggregate snapshots: derived data the engine keeps beside the depot so that rehydrating a
//! long partition costs the events after its newest snapshot, not its whole history.
//!
//! A snapshot is the state an aggregate's handler folded from the first `version` events of a
//! partition, as opaque bytes, keyed by
//!
//! - the partition,
//! - the *domain version* (a string the engine derives from the code and manifest that produced
//!   the state: a snapshot of another domain version is never handed out for this one),
//! - the partition version and the checkpoint that added that version's event. The engine uses
//!   a snapshot only when `HEAD`'s history has exactly that checkpoint at exactly that partition
//!   version (so a snapshot taken on a history a non-fast-forward move left behind is ignored).
//!
//! Snapshots are never part of the hash chain and can always be rebuilt from history: a store
//! that cannot be opened is stood in for by one in memory, a row whose checksum (SHA-256 over the
//! key and the state) does not match is dropped with a warning, and a lost or torn write only
//! costs a longer rehydration. Native depots keep them in `snapshots.sqlite` (go-retro depots in
//! `.retro-snapshots.sqlite`), memory depots and other backends (PostgreSQL) in memory, per
//! process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use crate::hash::ObjectId;

/// The schema this build writes and reads (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Why the snapshot store failed. Never fatal to a command: the depot turns these into warnings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// SQLite failed.
    #[error("snapshot store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file holds another schema.
    #[error("snapshot store '{path}' has schema {found}, this build reads {SCHEMA_VERSION}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// A stored value is out of range (a version that does not fit, an id that is not 32 bytes).
    #[error("snapshot store holds a malformed row: {0}")]
    Malformed(String),
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The partition.
    pub partition: String,
    /// The domain version that produced the state.
    pub domain: String,
    /// How many of the partition's events the state folds.
    pub version: u64,
    /// The checkpoint that added event number `version` of the partition.
    pub checkpoint: ObjectId,
    /// The state, as the domain encoded it.
    pub state: Vec<u8>,
}

impl Snapshot {
    /// The checksum stored with it: SHA-256 over its key and its state.
    pub fn checksum(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(b"retro snapshot 1\0");
        hash.update(self.partition.as_bytes());
        hash.update([0]);
        hash.update(self.domain.as_bytes());
        hash.update([0]);
        hash.update(self.version.to_be_bytes());
        hash.update(self.checkpoint.as_bytes());
        hash.update(&self.state);
        hash.finalize().into()
    }
}

/// A stored snapshot as read back: verified, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Its checksum matches.
    Valid(Snapshot),
    /// Its checksum does not match: never to be used.
    Corrupt {
        /// The partition version it claims.
        version: u64,
        /// The checkpoint it claims.
        checkpoint: ObjectId,
    },
}

/// What `retro partitions --json` shows of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The domain version.
    pub domain: String,
    /// The partition version.
    pub version: u64,
    /// The checkpoint.
    pub checkpoint: ObjectId,
    /// Bytes of state.
    pub bytes: u64,
}

/// The snapshot table, in a file or in memory.
pub struct SnapshotStore {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

fn init(conn: &Connection, path: Option<&Path>) -> Result<(), SnapshotError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if path.is_some() {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found != 0 && found != SCHEMA_VERSION {
        return Err(SnapshotError::Schema {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            found,
        });
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS snapshots(
             partition TEXT NOT NULL,
             domain TEXT NOT NULL,
             version INTEGER NOT NULL,
             checkpoint BLOB NOT NULL,
             state BLOB NOT NULL,
             checksum BLOB NOT NULL,
             PRIMARY KEY (partition, domain, version, checkpoint)
         ) WITHOUT ROWID;",
    )?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

fn id_of(blob: Vec<u8>) -> Result<ObjectId, SnapshotError> {
    ObjectId::from_slice(&blob)
        .ok_or_else(|| SnapshotError::Malformed("a checkpoint id is not 32 bytes".to_owned()))
}

fn version_of(v: i64) -> Result<u64, SnapshotError> {
    u64::try_from(v).map_err(|_| SnapshotError::Malformed(format!("version {v}")))
}

fn sql_version(v: u64) -> Result<i64, SnapshotError> {
    i64::try_from(v).map_err(|_| SnapshotError::Malformed(format!("version {v}")))
}

impl SnapshotStore {
    /// Opens (or creates) the store in file `path`.
    pub fn open(path: &Path) -> Result<SnapshotStore, SnapshotError> {
        let conn = Connection::open(path)?;
        init(&conn, Some(path))?;
        Ok(SnapshotStore {
            conn: Mutex::new(conn),
            path: Some(path.to_path_buf()),
        })
    }

    /// A store in memory.
    pub fn in_memory() -> Result<SnapshotStore, SnapshotError> {
        let conn = Connection::open_in_memory()?;
        init(&conn, None)?;
        Ok(SnapshotStore {
            conn: Mutex::new(conn),
            path: None,
        })
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding it leaves no half-done state behind (SQLite statements are
        // atomic): carry on with the connection.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `snapshot` (replacing one with the same key).
    pub fn put(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO snapshots(partition, domain, version, checkpoint, state, checksum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                snapshot.partition,
                snapshot.domain,
                sql_version(snapshot.version)?,
                snapshot.checkpoint.as_bytes().as_slice(),
                snapshot.state,
                snapshot.checksum().as_slice(),
            ])?;
        Ok(())
    }

    /// Up to `limit` snapshots of `partition` for `domain`, newest (highest version) first, each
    /// verified against its checksum.
    pub fn newest(
        &self,
        partition: &str,
        domain: &str,
        limit: usize,
    ) -> Result<Vec<Stored>, SnapshotError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT version, checkpoint, state, checksum FROM snapshots
             WHERE partition = ?1 AND domain = ?2 ORDER BY version DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(
            params![partition, domain, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (version, checkpoint, state, checksum) = row?;
            let snapshot = Snapshot {
                partition: partition.to_owned(),
                domain: domain.to_owned(),
                version: version_of(version)?,
                checkpoint: id_of(checkpoint)?,
                state,
            };
            if snapshot.checksum().as_slice() == checksum.as_slice() {
                out.push(Stored::Valid(snapshot));
            } else {
                out.push(Stored::Corrupt {
                    version: snapshot.version,
                    checkpoint: snapshot.checkpoint,
                });
            }
        }
        Ok(out)
    }

    /// Removes one snapshot (absent: nothing to do).
    pub fn remove(
        &self,
        partition: &str,
        domain: &str,
        version: u64,
        checkpoint: &ObjectId,
    ) -> Result<(), SnapshotError> {
        self.conn()
            .prepare_cached(
                "DELETE FROM snapshots WHERE partition = ?1 AND domain = ?2 AND version = ?3 AND checkpoint = ?4",
            )?
            .execute(params![
                partition,
                domain,
                sql_version(version)?,
                checkpoint.as_bytes().as_slice()
            ])?;
        Ok(())
    }

    /// The newest snapshot of `partition` for each domain version, by domain.
    pub fn newest_of_each(&self, partition: &str) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT domain, version, checkpoint, length(state) FROM snapshots AS s
             WHERE partition = ?1 AND version = (SELECT max(version) FROM snapshots
                 WHERE partition = s.partition AND domain = s.domain)
             ORDER BY domain",
        )?;
        let rows = statement.query_map(params![partition], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out: Vec<SnapshotInfo> = Vec::new();
        for row in rows {
            let (domain, version, checkpoint, bytes) = row?;
            // Two snapshots at one version (taken on diverged histories): show one.
            if out.last().is_some_and(|last| last.domain == domain) {
                continue;
            }
            out.push(SnapshotInfo {
                domain,
                version: version_of(version)?,
                checkpoint: id_of(checkpoint)?,
                bytes: version_of(bytes)?,
            });
        }
        Ok(out)
    }

    /// How many snapshots are stored.
    pub fn count(&self) -> Result<u64, SnapshotError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))?;
        version_of(n)
    }

    /// Drops every snapshot superseded by a newer one (a higher version) of the same partition
    /// and domain version; returns how many were dropped.
    pub fn prune(&self) -> Result<u64, SnapshotError> {
        let n = self.conn().execute(
            "DELETE FROM snapshots WHERE EXISTS (SELECT 1 FROM snapshots AS newer
                 WHERE newer.partition = snapshots.partition AND newer.domain = snapshots.domain
                 AND newer.version > snapshots.version)",
            [],
        )?;
        Ok(n as u64)
    }

    /// Removes every snapshot so that no file keeps their bytes (redaction): SQLite's secure
    /// delete zeroes the freed pages, the WAL is checkpointed and truncated, and a vacuum
    /// rewrites the file.
    pub fn erase_all(&self) -> Result<(), SnapshotError> {
        let conn = self.conn();
        conn.execute_batch("PRAGMA secure_delete = ON; DELETE FROM snapshots; VACUUM;")?;
        if self.path.is_some() {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// Removes every snapshot.
    pub fn clear(&self) -> Result<(), SnapshotError> {
        self.conn().execute("DELETE FROM snapshots", [])?;
        Ok(())
    }

    /// For tests of corruption: overwrites the stored state bytes of one snapshot without
    /// updating its checksum.
    #[doc(hidden)]
    pub fn tamper(
        &self,
        partition: &str,
        domain: &str,
        state: &[u8],
    ) -> Result<u64, SnapshotError> {
        let n = self.conn().execute(
            "UPDATE snapshots SET state = ?3 WHERE partition = ?1 AND domain = ?2",
            params![partition, domain, state],
        )?;
        Ok(n as u64)
    }
}

/// Whether `err` says the file is not a readable store (it is then replaced).
pub(crate) fn is_unreadable(err: &SnapshotError) -> bool {
    match err {
        SnapshotError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
            e.code,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
        ),
        SnapshotError::Schema { .. } => true,
        _ => false,
    }
}

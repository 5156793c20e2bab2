//! The partition index of a PostgreSQL depot, in the depot's own database: the tables
//! `retro_index_checkpoints`, `retro_index_partitions` and `retro_index_events` (schema version 2).
//!
//! `retro_commit` appends a commit's checkpoints to them in the same transaction that moves the
//! ref `HEAD` names, when the move continues what is indexed, so every host reads an index that is
//! already current. Other moves (`update-ref`, `sync`, a `HEAD` that changed branch) leave it
//! behind; the next reader catches it up or rebuilds it, through [`PgIndexWriter`], under the
//! index lock that `retro_commit` takes too, so writers never interleave.

use chrono::{TimeZone, Utc};

use crate::{PgConnection, PgError};
use depot::index::{EventRow, IndexError, IndexStore, IndexWrite, IndexedCheckpoint};
use depot::ObjectId;
use depot::PartitionName;

/// The advisory lock key of index writers (the same in `retro_commit`, schema version 2).
pub(super) const INDEX_LOCK: i64 = 0x7265_7472_6f5f_6978; // "retro_ix"

/// Appends buffered by a catch-up before one call to `retro_index_append`.
const APPEND_BATCH: usize = 500;

const HEAD: &str = "SELECT id, seq FROM retro_index_checkpoints ORDER BY seq DESC LIMIT 1";
const APPEND: &str = "SELECT retro_index_append(NULL, $1, $2, $3, $4, $5, $6, $7, $8)";
const CLEAR: &str = "TRUNCATE retro_index_events, retro_index_partitions, retro_index_checkpoints";
const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
/// Records checkpoints' command ids (schema version 4): `$1` checkpoint ids, `$2` command ids.
pub(super) const INSERT_COMMAND_IDS: &str =
    "INSERT INTO retro_command_ids (checkpoint, command_id) SELECT * FROM unnest($1::bytea[], $2::text[])
     ON CONFLICT (checkpoint) DO NOTHING";
const COMMAND_CHECKPOINT: &str = "SELECT c.id FROM retro_command_ids k
     JOIN retro_index_checkpoints c ON c.id = k.checkpoint
     WHERE k.command_id = $1 AND c.seq <= $2 ORDER BY c.seq LIMIT 1";

/// The checkpoint ids and command ids of those of `checkpoints` that carry one, for
/// [`INSERT_COMMAND_IDS`].
pub(super) fn command_id_arrays<'a>(
    checkpoints: impl Iterator<Item = &'a IndexedCheckpoint>,
) -> (Vec<Vec<u8>>, Vec<String>) {
    checkpoints
        .filter_map(|c| Some((c.id.as_bytes().to_vec(), c.command_id.clone()?)))
        .unzip()
}

fn pg(err: PgError) -> IndexError {
    IndexError::Backend(crate::backend_error(err))
}

fn db(err: postgres::Error) -> IndexError {
    IndexError::Backend(depot::BackendError::new(crate::pg_class(&err), err))
}

fn id_from(raw: &[u8]) -> Result<ObjectId, IndexError> {
    ObjectId::from_slice(raw).ok_or_else(|| IndexError::Corrupt("an id is not 32 bytes".into()))
}

fn head_from(row: Option<postgres::Row>) -> Result<Option<(ObjectId, u64)>, IndexError> {
    row.map(|r| {
        let id: Vec<u8> = r.try_get(0).map_err(db)?;
        let seq: i64 = r.try_get(1).map_err(db)?;
        Ok((id_from(&id)?, seq as u64))
    })
    .transpose()
}

/// The arrays `retro_commit` and `retro_index_append` take for checkpoints, each checkpoint's
/// events flattened in order.
#[derive(Default)]
pub(super) struct CheckpointArrays {
    pub refs: Vec<String>,
    pub ids: Vec<Vec<u8>>,
    pub parents: Vec<Option<Vec<u8>>>,
    pub dates: Vec<Option<i64>>,
    pub sessions: Vec<String>,
    pub event_checkpoints: Vec<i32>,
    pub event_partitions: Vec<String>,
    pub event_ids: Vec<Vec<u8>>,
}

impl CheckpointArrays {
    /// Adds one checkpoint committed to `target`.
    pub fn push(&mut self, target: &str, checkpoint: &IndexedCheckpoint) {
        self.refs.push(target.to_owned());
        self.ids.push(checkpoint.id.as_bytes().to_vec());
        self.parents
            .push(checkpoint.parent.map(|p| p.as_bytes().to_vec()));
        self.dates.push(checkpoint.date.map(|d| d.timestamp()));
        self.sessions.push(checkpoint.session.clone());
        let position = self.ids.len() as i32;
        for (partition, events) in &checkpoint.partitions {
            for event in events {
                self.event_checkpoints.push(position);
                self.event_partitions.push(partition.as_str().to_owned());
                self.event_ids.push(event.as_bytes().to_vec());
            }
        }
    }
}

/// The index tables of a PostgreSQL depot, read through their own connection.
pub struct PgIndex {
    connection: PgConnection,
}

impl PgIndex {
    /// The index over an open connection (schema version 2 or newer).
    pub fn new(connection: PgConnection) -> PgIndex {
        PgIndex { connection }
    }
}

struct Statements {
    head: postgres::Statement,
    append: postgres::Statement,
    clear: postgres::Statement,
}

/// Writes inside one index transaction: appends are buffered and sent in batches.
pub struct PgIndexWriter<'a> {
    tx: postgres::Transaction<'a>,
    statements: Statements,
    buffer: Vec<IndexedCheckpoint>,
    /// The head including the buffer, once known.
    head: Option<Option<(ObjectId, u64)>>,
}

impl PgIndexWriter<'_> {
    /// The checkpoint `HEAD` resolves to, read inside this transaction on its own connection:
    /// a catch-up never waits for a ref-store connection that a committer holds while it waits
    /// for the index lock.
    pub fn resolve_head(&mut self) -> Result<Option<ObjectId>, IndexError> {
        let mut name = "HEAD".to_owned();
        for _ in 0..=5 {
            let value: Option<String> = self
                .tx
                .query_opt("SELECT value FROM retro_refs WHERE name = $1", &[&name])
                .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                .map_err(db)?;
            match value
                .as_deref()
                .map(depot::refdb::RefValue::parse_file_text)
            {
                None => return Ok(None),
                Some(Some(depot::refdb::RefValue::Direct(id))) => return Ok(Some(id)),
                Some(Some(depot::refdb::RefValue::Symbolic(target))) => {
                    name = target.as_str().to_owned();
                }
                Some(None) => {
                    return Err(IndexError::Corrupt(format!("ref '{name}' does not parse")))
                }
            }
        }
        Err(IndexError::Corrupt("HEAD does not resolve".into()))
    }

    /// Sends the buffered appends.
    fn flush(&mut self) -> Result<(), IndexError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut arrays = CheckpointArrays::default();
        for checkpoint in &self.buffer {
            arrays.push("", checkpoint);
        }
        let (checkpoints, command_ids) = command_id_arrays(self.buffer.iter());
        if !checkpoints.is_empty() {
            self.tx
                .execute(INSERT_COMMAND_IDS, &[&checkpoints, &command_ids])
                .map_err(db)?;
        }
        let appended: i64 = self
            .tx
            .query_one(
                &self.statements.append,
                &[
                    &arrays.refs,
                    &arrays.ids,
                    &arrays.parents,
                    &arrays.dates,
                    &arrays.sessions,
                    &arrays.event_checkpoints,
                    &arrays.event_partitions,
                    &arrays.event_ids,
                ],
            )
            .and_then(|r| r.try_get(0))
            .map_err(db)?;
        if appended as usize != self.buffer.len() {
            return Err(IndexError::Corrupt(format!(
                "appended {appended} of {} checkpoints: they do not continue the indexed head",
                self.buffer.len()
            )));
        }
        self.buffer.clear();
        Ok(())
    }
}

impl IndexStore for PgIndex {
    /// The commit's own transaction appends to this index: no in-memory tail in front of it.
    fn keeps_tail(&self) -> bool {
        false
    }

    /// The newest indexed checkpoint and its sequence number.
    fn head(&self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        let row = self
            .connection
            .with("read the index head", |s| s.query_opt(HEAD, &[]))
            .map_err(pg)?;
        head_from(row)
    }

    /// One transaction holding the index lock (an advisory lock: hosts serialize); commits when
    /// `f` returns Ok, after flushing buffered appends.
    fn write_with(
        &mut self,
        f: &mut dyn FnMut(&mut dyn IndexWrite) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let mut outcome = None;
        self.connection
            .with("update the partition index", |session| {
                let statements = Statements {
                    head: session.prepare(HEAD)?,
                    append: session.prepare(APPEND)?,
                    clear: session.prepare(CLEAR)?,
                };
                let lock = session.prepare(LOCK)?;
                let mut tx = session.client().transaction()?;
                tx.execute(&lock, &[&INDEX_LOCK])?;
                let mut writer = PgIndexWriter {
                    tx,
                    statements,
                    buffer: Vec::new(),
                    head: None,
                };
                let result = f(&mut writer);
                match result {
                    Ok(()) => match writer.flush() {
                        Ok(()) => {
                            writer.tx.commit()?;
                            outcome = Some(Ok(()));
                        }
                        Err(err) => outcome = Some(Err(err)),
                    },
                    // Dropped without commit: rolled back.
                    Err(err) => outcome = Some(Err(err)),
                }
                Ok(())
            })
            .map_err(pg)?;
        outcome.expect("the closure ran")
    }

    /// A partition's events after `after_version`, in checkpoints up to sequence `max_seq`.
    fn partition_events_upto(
        &self,
        partition: &PartitionName,
        after_version: u64,
        max_seq: Option<u64>,
    ) -> Result<Vec<EventRow>, IndexError> {
        let max_seq = max_seq.map_or(i64::MAX, |s| s as i64);
        let rows = self
            .connection
            .with("read a partition", |s| {
                s.query(
                    // One table, one primary-key range: no join for a generic plan to get wrong.
                    "SELECT n, event, checkpoint, cseq, date, session FROM retro_index_events
                     WHERE partition = $1 AND n > $2 AND cseq <= $3 ORDER BY n",
                    &[&partition.as_str(), &(after_version as i64), &max_seq],
                )
            })
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(0).map_err(db)?;
                let event: Vec<u8> = r.try_get(1).map_err(db)?;
                let checkpoint: Vec<u8> = r.try_get(2).map_err(db)?;
                let seq: i64 = r.try_get(3).map_err(db)?;
                let date: Option<i64> = r.try_get(4).map_err(db)?;
                Ok(EventRow {
                    at: None,
                    partition: partition.clone(),
                    version: n as u64,
                    event: id_from(&event)?,
                    checkpoint: id_from(&checkpoint)?,
                    checkpoint_seq: seq as u64,
                    date: date.and_then(|d| Utc.timestamp_opt(d, 0).single()),
                    session: r.try_get(5).map_err(db)?,
                })
            })
            .collect()
    }

    /// How many events a partition has in checkpoints up to sequence `max_seq`.
    fn partition_version_upto(
        &self,
        partition: &PartitionName,
        max_seq: u64,
    ) -> Result<u64, IndexError> {
        let n: i64 = self
            .connection
            .with("count a partition's events", |s| {
                s.query_opt(
                    "SELECT count(*) FROM retro_index_events WHERE partition = $1 AND cseq <= $2",
                    &[&partition.as_str(), &(max_seq as i64)],
                )?
                .map_or(Ok(0), |r| r.try_get(0))
            })
            .map_err(pg)?;
        Ok(n as u64)
    }

    /// The partitions whose names start with `prefix`, sorted by name (bytewise).
    fn for_each_partition_with_prefix(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(&str, u64) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let rows: Vec<(String, i64)> = self
            .connection
            .with("list partitions", |s| {
                s.query(
                    "SELECT name, events FROM retro_index_partitions
                     WHERE starts_with(name, $1) ORDER BY name",
                    &[&prefix],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
            })
            .map_err(pg)?;
        for (name, events) in rows {
            f(&name, events as u64)?;
        }
        Ok(())
    }

    /// The sequence number of an indexed checkpoint.
    fn checkpoint_seq(&self, id: &ObjectId) -> Result<Option<u64>, IndexError> {
        let seq: Option<i64> = self
            .connection
            .with("look up an indexed checkpoint", |s| {
                s.query_opt(
                    "SELECT seq FROM retro_index_checkpoints WHERE id = $1",
                    &[&&id.as_bytes()[..]],
                )?
                .map(|r| r.try_get(0))
                .transpose()
            })
            .map_err(pg)?;
        Ok(seq.map(|s| s as u64))
    }

    /// The oldest indexed checkpoint up to `max_seq` with this command id: one probe of
    /// `retro_command_ids_by_id` joined with the indexed checkpoints.
    fn checkpoint_by_command_id(
        &self,
        command_id: &str,
        max_seq: u64,
    ) -> Result<Option<ObjectId>, IndexError> {
        let id: Option<Vec<u8>> = self
            .connection
            .with("look up a command id", |s| {
                s.query_opt(COMMAND_CHECKPOINT, &[&command_id, &(max_seq as i64)])?
                    .map(|r| r.try_get(0))
                    .transpose()
            })
            .map_err(pg)?;
        id.map(|id| id_from(&id)).transpose()
    }

    /// Indexed checkpoints with `seq > after`, oldest first, in pages, until `f` returns false.
    fn for_each_checkpoint(
        &self,
        after: u64,
        f: &mut dyn FnMut(u64, ObjectId) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        let mut after = after as i64;
        loop {
            let page: Vec<(i64, Vec<u8>)> = self
                .connection
                .with("list indexed checkpoints", |s| {
                    s.query(
                        "SELECT seq, id FROM retro_index_checkpoints WHERE seq > $1
                         ORDER BY seq LIMIT 10000",
                        &[&after],
                    )?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
                })
                .map_err(pg)?;
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            for (seq, id) in page {
                if !f(seq as u64, id_from(&id)?)? {
                    return Ok(());
                }
            }
            after = last;
        }
    }

    /// Counts for reports: checkpoints, partitions, events.
    fn counts(&self) -> Result<(u64, u64, u64), IndexError> {
        let row = self
            .connection
            .with("count the index", |s| {
                s.query_opt(
                    "SELECT (SELECT count(*) FROM retro_index_checkpoints),
                            (SELECT count(*) FROM retro_index_partitions),
                            (SELECT count(*) FROM retro_index_events)",
                    &[],
                )
            })
            .map_err(pg)?
            .ok_or_else(|| IndexError::Corrupt("no counts".into()))?;
        let get = |i: usize| -> Result<u64, IndexError> {
            Ok(row.try_get::<_, i64>(i).map_err(db)? as u64)
        };
        Ok((get(0)?, get(1)?, get(2)?))
    }
}

impl IndexWrite for PgIndexWriter<'_> {
    /// The head inside this transaction (buffered appends included).
    fn head(&mut self) -> Result<Option<(ObjectId, u64)>, IndexError> {
        if let Some(head) = self.head {
            return Ok(head);
        }
        let row = self.tx.query_opt(&self.statements.head, &[]).map_err(db)?;
        let head = head_from(row)?;
        self.head = Some(head);
        Ok(head)
    }

    /// Refs live in the same database: read `HEAD` inside this transaction.
    fn resolve_head(&mut self) -> Option<Result<Option<ObjectId>, IndexError>> {
        Some(PgIndexWriter::resolve_head(self))
    }

    /// Empties the index (before a rebuild).
    fn clear(&mut self) -> Result<(), IndexError> {
        self.buffer.clear();
        self.tx.execute(&self.statements.clear, &[]).map_err(db)?;
        self.head = Some(None);
        Ok(())
    }

    /// Appends one checkpoint (a child of the head); returns its sequence number.
    fn append(&mut self, checkpoint: &IndexedCheckpoint) -> Result<u64, IndexError> {
        let head = self.head()?;
        if checkpoint.parent != head.map(|(id, _)| id) {
            return Err(IndexError::Corrupt(format!(
                "{} is not a child of the indexed head",
                checkpoint.id
            )));
        }
        let seq = head.map_or(1, |(_, seq)| seq + 1);
        self.buffer.push(checkpoint.clone());
        self.head = Some(Some((checkpoint.id, seq)));
        if self.buffer.len() >= APPEND_BATCH {
            self.flush()?;
        }
        Ok(seq)
    }
}

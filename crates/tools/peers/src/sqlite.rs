//! SQLite as an event store: durable commits of the workload, and reads from a large database.
//!
//! The schema is the obvious one: `events(partition, seq, name, data, checkpoint)` with a unique
//! index on `(partition, seq)`, `checkpoints(id, parent, session, date, message)` and a `head`
//! row naming the latest checkpoint. A writer commits one command per transaction: it reads the
//! head, checks it is the checkpoint it expects (the compare-and-swap retro's ref update does),
//! inserts the checkpoint and the 3 events and moves the head.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use benchkit::{per_second, Figure, Percentiles};

use crate::report::Report;
use benchkit::Rng;

use crate::workload::{Command, Workload, SESSION};

const PEER: &str = "sqlite";

const TABLES: &str = "
    CREATE TABLE checkpoints(
        id INTEGER PRIMARY KEY,
        parent INTEGER REFERENCES checkpoints(id),
        session TEXT NOT NULL,
        date TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE TABLE events(
        partition TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        checkpoint INTEGER NOT NULL REFERENCES checkpoints(id)
    );
    CREATE TABLE head(name TEXT PRIMARY KEY, checkpoint INTEGER REFERENCES checkpoints(id));
    INSERT INTO head(name, checkpoint) VALUES ('master', NULL);
";
const INDEX: &str = "CREATE UNIQUE INDEX events_by_partition ON events(partition, seq);";
const INSERT_CHECKPOINT: &str =
    "INSERT INTO checkpoints(parent, session, date, message) VALUES (?1, ?2, ?3, ?4)";
const INSERT_EVENT: &str =
    "INSERT INTO events(partition, seq, name, data, checkpoint) VALUES (?1, ?2, ?3, ?4, ?5)";
const READ_PARTITION: &str =
    "SELECT seq, name, data, checkpoint FROM events WHERE partition = ?1 ORDER BY seq";

/// Options of `retro-peers sqlite-durable`.
#[derive(Debug, Clone, clap::Args)]
pub struct DurableArgs {
    /// Commands committed one per transaction (per synchronous setting).
    #[arg(long, default_value_t = DurableArgs::DEFAULT_N)]
    pub n: u64,
    /// Commands per transaction in the batched variant.
    #[arg(long, default_value_t = 16)]
    pub batch: u64,
    /// Commands committed in the batched variant.
    #[arg(long, default_value_t = DurableArgs::DEFAULT_BATCH_N)]
    pub batch_n: u64,
}

impl DurableArgs {
    const DEFAULT_N: u64 = 2000;
    const DEFAULT_BATCH_N: u64 = 16_000;

    /// The sizes `retro-peers all --quick` uses.
    pub fn quick() -> Self {
        Self {
            n: 1000,
            batch_n: 8000,
            ..Self::default()
        }
    }
}

impl Default for DurableArgs {
    fn default() -> Self {
        Self {
            n: Self::DEFAULT_N,
            batch: 16,
            batch_n: Self::DEFAULT_BATCH_N,
        }
    }
}

/// Options of `retro-peers sqlite-read`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// Events in the large database (a small one of `--small` events is measured too).
    #[arg(long, default_value_t = ReadArgs::DEFAULT_N)]
    pub n: u64,
    /// Events in the small database.
    #[arg(long, default_value_t = 10_000)]
    pub small: u64,
    /// Partition reads measured per database.
    #[arg(long, default_value_t = 20_000)]
    pub reads: usize,
}

impl ReadArgs {
    const DEFAULT_N: u64 = 1_000_000;

    /// The sizes `retro-peers all --quick` uses.
    pub fn quick() -> Self {
        Self {
            n: 20_000,
            ..Self::default()
        }
    }
}

impl Default for ReadArgs {
    fn default() -> Self {
        Self {
            n: Self::DEFAULT_N,
            small: 10_000,
            reads: 20_000,
        }
    }
}

/// The `synchronous` settings the durable figures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synchronous {
    /// One `fdatasync` of the WAL per commit: durable.
    Full,
    /// The WAL is synced only at checkpoints: not durable on power loss.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Measures durable commits of the workload, in fresh databases under `dir`.
pub fn run_durable(args: &DurableArgs, dir: &Path, report: &mut Report) -> Result<()> {
    let version = rusqlite::version();
    let variants = [
        ("durable_commit", Synchronous::Full, 1, args.n),
        ("commit_synchronous_normal", Synchronous::Normal, 1, args.n),
        (
            "durable_commit_batch",
            Synchronous::Full,
            args.batch.max(1),
            args.batch_n,
        ),
    ];
    for (name, sync, batch, n) in variants {
        let n = n.max(1);
        let name = if batch > 1 {
            format!("{name}{batch}")
        } else {
            name.to_owned()
        };
        eprintln!(
            "sqlite-durable: {n} commands, {batch} per transaction, synchronous={}",
            sync.pragma()
        );
        let path = dir.join(format!("{name}.db"));
        let (elapsed, mut samples) = commit_commands(&path, sync, n, batch)?;
        let note = format!(
            "SQLite {version}, WAL, synchronous={}, {batch} command(s) per transaction, head checked",
            sync.pragma()
        );
        let p = Percentiles::of(&mut samples);
        let per = if batch > 1 { "transaction" } else { "command" };
        report.push(
            Figure::new(PEER, &name, "commands/s", per_second(n, elapsed), n).note(note.clone()),
        )?;
        report.push(
            Figure::new(PEER, format!("{name}_p50"), "us", p.p50_us, n)
                .note(format!("latency per {per}")),
        )?;
        report.push(
            Figure::new(PEER, format!("{name}_p99"), "us", p.p99_us, n)
                .note(format!("latency per {per}")),
        )?;
    }
    Ok(())
}

/// Opens a fresh durable database at `path`, WAL mode, with the schema and its index.
fn create_durable(path: &Path, sync: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("creating {}", path.display()))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .context("setting WAL mode")?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "journal mode is {mode}");
    conn.pragma_update(None, "synchronous", sync.pragma())
        .context("setting synchronous")?;
    conn.execute_batch(TABLES)
        .and_then(|()| conn.execute_batch(INDEX))
        .context("creating the schema")?;
    Ok(conn)
}

/// Commits `n` commands, `batch` per transaction; returns the total time and each
/// transaction's latency.
fn commit_commands(
    path: &Path,
    sync: Synchronous,
    n: u64,
    batch: u64,
) -> Result<(Duration, Vec<Duration>)> {
    let mut conn = create_durable(path, sync)?;
    let mut head = None;
    let mut commands = Workload::new().take(usize::try_from(n)?).peekable();
    let mut samples = Vec::new();
    let start = Instant::now();
    while commands.peek().is_some() {
        let began = Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for command in commands.by_ref().take(usize::try_from(batch)?) {
            head = Some(commit_one(&tx, head, &command)?);
        }
        tx.commit().context("committing")?;
        samples.push(began.elapsed());
    }
    let elapsed = start.elapsed();
    let events: u64 = conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
    ensure!(events == 3 * n, "{events} events stored for {n} commands");
    Ok((elapsed, samples))
}

/// Inside a transaction: checks the head is `expected`, stores `command`, moves the head.
fn commit_one(conn: &Connection, expected: Option<i64>, command: &Command) -> Result<i64> {
    let head: Option<i64> = conn
        .prepare_cached("SELECT checkpoint FROM head WHERE name = 'master'")?
        .query_row([], |row| row.get(0))
        .context("reading the head")?;
    if head != expected {
        bail!("the head moved: expected {expected:?}, found {head:?}");
    }
    conn.prepare_cached(INSERT_CHECKPOINT)?
        .execute(params![head, SESSION, command.date(), command.message])
        .context("inserting the checkpoint")?;
    let id = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(INSERT_EVENT)?;
    for event in &command.events {
        insert
            .execute(params![
                event.partition,
                event.seq,
                event.name,
                event.data,
                id
            ])
            .context("inserting an event")?;
    }
    let moved = conn
        .prepare_cached(
            "UPDATE head SET checkpoint = ?1 WHERE name = 'master' AND checkpoint IS ?2",
        )?
        .execute(params![id, head])
        .context("moving the head")?;
    ensure!(moved == 1, "the head moved during the transaction");
    Ok(id)
}

/// Measures reads from a large and a small database built under `dir`.
pub fn run_read(args: &ReadArgs, dir: &Path, report: &mut Report) -> Result<()> {
    let mut sizes = vec![args.n.max(10)];
    if args.small.max(10) != sizes[0] {
        sizes.push(args.small.max(10));
    }
    for events in sizes {
        let path = dir.join(format!("read-{events}.db"));
        eprintln!("sqlite-read: building a database of {events} events");
        let start = Instant::now();
        build_read_db(&path, events)?;
        let built = start.elapsed();
        report.push(
            Figure::new(
                PEER,
                "bulk_load",
                "events/s",
                per_second(events, built),
                events,
            )
            .note("synchronous=OFF, ~100,000 events per transaction, index built afterwards"),
        )?;
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        report.push(Figure::new(
            PEER,
            "file_bytes_per_event",
            "B/event",
            bytes as f64 / events as f64,
            events,
        ))?;

        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        eprintln!(
            "sqlite-read: {} reads of a random 10-event partition",
            args.reads
        );
        let mut samples = read_partitions(&conn, events / 10, args.reads)?;
        let p = Percentiles::of(&mut samples);
        let note = format!(
            "all events of one random 10-event partition, prepared statement, in {events} events"
        );
        report.push(
            Figure::new(PEER, "read_partition_p50", "us", p.p50_us, events).note(note.clone()),
        )?;
        report.push(Figure::new(PEER, "read_partition_p99", "us", p.p99_us, events).note(note))?;

        let (rows, elapsed) = walk_checkpoints(&conn)?;
        report.push(
            Figure::new(
                PEER,
                "walk_checkpoints",
                "rows/s",
                per_second(rows, elapsed),
                rows,
            )
            .note(format!("scan of all checkpoint rows in {events} events")),
        )?;
        let (rows, elapsed) = walk_chain(&conn)?;
        report.push(
            Figure::new(
                PEER,
                "walk_checkpoint_chain",
                "rows/s",
                per_second(rows, elapsed),
                rows,
            )
            .note("from the head, one primary-key lookup per parent"),
        )?;
    }
    Ok(())
}

/// Builds a read database of `events` events: `identity/<k>` holds events `10k..10k+10`, so
/// every partition but perhaps the last holds exactly 10, and every 3 events share a checkpoint
/// as in the workload.
fn build_read_db(path: &Path, events: u64) -> Result<()> {
    const COMMANDS_PER_TRANSACTION: u64 = 33_334;
    let mut conn =
        Connection::open(path).with_context(|| format!("creating {}", path.display()))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let _: String =
        conn.pragma_update_and_check(None, "journal_mode", "MEMORY", |row| row.get(0))?;
    conn.execute_batch(TABLES).context("creating the schema")?;
    let mut commands = Workload::new()
        .take(usize::try_from(events.div_ceil(3))?)
        .peekable();
    let mut stored = 0;
    let mut parent: Option<i64> = None;
    while commands.peek().is_some() {
        let tx = conn.transaction()?;
        {
            let mut checkpoint = tx.prepare(INSERT_CHECKPOINT)?;
            let mut event = tx.prepare(INSERT_EVENT)?;
            for command in commands
                .by_ref()
                .take(usize::try_from(COMMANDS_PER_TRANSACTION)?)
            {
                checkpoint.execute(params![parent, SESSION, command.date(), command.message])?;
                let id = tx.last_insert_rowid();
                for e in &command.events {
                    if stored == events {
                        break;
                    }
                    let partition = format!("identity/{}", stored / 10);
                    event.execute(params![partition, stored % 10, e.name, e.data, id])?;
                    stored += 1;
                }
                parent = Some(id);
            }
        }
        tx.commit().context("committing a bulk transaction")?;
    }
    conn.execute_batch(INDEX).context("building the index")?;
    conn.execute(
        "UPDATE head SET checkpoint = ?1 WHERE name = 'master'",
        [parent],
    )?;
    conn.close().map_err(|(_, e)| e).context("closing")?;
    Ok(())
}

/// Times `reads` reads of all events of a random one of the `partitions` full partitions,
/// after as many unmeasured reads to warm the caches.
fn read_partitions(conn: &Connection, partitions: u64, reads: usize) -> Result<Vec<Duration>> {
    let mut statement = conn.prepare(READ_PARTITION)?;
    let mut rng = Rng::new(0x5eed);
    let mut samples = Vec::with_capacity(reads);
    for i in 0..2 * reads {
        let partition = format!("identity/{}", rng.below(partitions));
        let start = Instant::now();
        let rows = statement
            .query_map([&partition], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("reading {partition}"))?;
        let elapsed = start.elapsed();
        ensure!(rows.len() == 10, "{partition} holds {} events", rows.len());
        if i >= reads {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// Times a scan of every checkpoint row, reading every column.
fn walk_checkpoints(conn: &Connection) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let mut statement =
        conn.prepare("SELECT id, parent, session, date, message FROM checkpoints ORDER BY id")?;
    let mut rows = statement.query([])?;
    let (mut count, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        let _id: i64 = row.get(0)?;
        let _parent: Option<i64> = row.get(1)?;
        let session: String = row.get(2)?;
        let date: String = row.get(3)?;
        let message: String = row.get(4)?;
        bytes += session.len() + date.len() + message.len();
        count += 1;
    }
    let elapsed = start.elapsed();
    ensure!(bytes > 0, "no checkpoints");
    Ok((count, elapsed))
}

/// Times a walk of the checkpoint chain from the head, as a log would do it.
fn walk_chain(conn: &Connection) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let mut next: Option<i64> = conn.query_row(
        "SELECT checkpoint FROM head WHERE name = 'master'",
        [],
        |row| row.get(0),
    )?;
    let mut statement =
        conn.prepare("SELECT parent, session, date, message FROM checkpoints WHERE id = ?1")?;
    let mut count = 0u64;
    while let Some(id) = next {
        next = statement
            .query_row([id], |row| row.get(0))
            .optional()?
            .with_context(|| format!("checkpoint {id} is missing"))?;
        count += 1;
    }
    Ok((count, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_commits_keep_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (_, samples) = commit_commands(&path, Synchronous::Normal, 37, 16).unwrap();
        assert_eq!(samples.len(), 3);
        let conn = Connection::open(&path).unwrap();
        let (rows, _) = walk_chain(&conn).unwrap();
        assert_eq!(rows, 37);
        let session: u64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE partition = 'session/s1'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(session, 37);
    }

    #[test]
    fn read_database_has_ten_event_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        build_read_db(&path, 95).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(read_partitions(&conn, 9, 20).unwrap().len(), 20);
        assert_eq!(walk_checkpoints(&conn).unwrap().0, 32);
        assert_eq!(walk_chain(&conn).unwrap().0, 32);
    }

    #[test]
    fn a_moved_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = create_durable(&dir.path().join("c.db"), Synchronous::Normal).unwrap();
        commit_one(&conn, None, &Command::new(0)).unwrap();
        let err = commit_one(&conn, None, &Command::new(1)).unwrap_err();
        assert!(err.to_string().contains("the head moved"), "{err}");
    }
}

//! Measures retro's depot on the workload: bulk writes, durable commits (one writer and group
//! commit), partition reads, first-parent log walks and disk use before and after gc; and, for
//! the durable figures, the disk's own append + `fdatasync` rate, in the same scratch directory.
//!
//! Every depot lives in its own directory under the scratch directory (created by the caller on
//! the filesystem being measured, as fsync costs depend on the disk) and is removed once measured.
//!
//! It uses only `figures` and `workload` in this crate (no `report`: no module cycle); `memory`,
//! `engine_bench` and `postgres_bench` use its stage and bulk loader.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use depot::{Base, Depot, GcOptions, HistoryOrder, ObjectId, PartitionName};

use benchkit::{per_second, Figure, Percentiles};

use crate::figures::Figures;
use crate::workload::{self, Shape, EVENTS_PER_COMMAND, EVENTS_PER_READ_PARTITION};

/// Where retro's own figures are filed.
const RETRO: &str = "retro";
/// Where the bench's own measurement of the disk is filed.
const DISK: &str = "disk-bench";
/// Commands per `commit_many` call in the bulk path (one fsync each).
pub const BULK_BATCH: u64 = 1000;

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Commands bulk-written for the write rate and walked for the log walk.
    pub bulk_commands: u64,
    /// Commands committed one at a time, durably.
    pub durable_commands: u64,
    /// Writers in the group-commit measurement.
    pub writers: u64,
    /// Commands each writer commits.
    pub group_commands_per_writer: u64,
    /// Events in the small and the large read depots.
    pub read_events: [u64; 2],
    /// Partition reads measured per read depot (as many again are run first, unmeasured).
    pub reads: u64,
    /// Checkpoints walked (at most the bulk depot's).
    pub walk: u64,
    /// Events in the depot measured for disk use (the large read depot when equal).
    pub disk_events: u64,
    /// Appends + `fdatasync` measured for the disk's own rate.
    pub fsyncs: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Self {
        Self {
            bulk_commands: 100_000,
            durable_commands: 2000,
            writers: 4,
            group_commands_per_writer: 1000,
            read_events: [10_000, 1_000_000],
            reads: 20_000,
            walk: 100_000,
            disk_events: 1_000_000,
            fsyncs: 2000,
        }
    }

    /// The quick run (about 30 s).
    pub fn quick() -> Self {
        Self {
            bulk_commands: 10_000,
            durable_commands: 500,
            writers: 4,
            group_commands_per_writer: 250,
            read_events: [10_000, 20_000],
            reads: 5000,
            walk: 10_000,
            disk_events: 100_000,
            fsyncs: 1000,
        }
    }
}

/// The measurements, as `--only` names them.
pub const PHASES: [&str; 7] = ["bulk", "walk", "fsync", "durable", "group", "read", "disk"];

/// Runs the depot measurements in `scratch` (those named in `only`, or all when it is empty),
/// adding figures to `figures`.
pub fn run(sizes: &Sizes, only: &[String], scratch: &Path, figures: &mut Figures) -> Result<()> {
    let wanted = |phase: &str| only.is_empty() || only.iter().any(|o| o == phase);
    let stage = Stage::new(scratch);

    if wanted("bulk") || wanted("walk") {
        let dir = stage.dir("bulk")?;
        bulk(&dir, sizes, figures)?;
        if wanted("walk") {
            walk(&dir, sizes.walk, figures)?;
        }
        stage.remove(&dir)?;
    }
    if wanted("fsync") {
        let dir = stage.dir("fsync")?;
        disk_fsync(&dir, sizes.fsyncs, figures)?;
        stage.remove(&dir)?;
    }
    if wanted("durable") {
        let dir = stage.dir("durable")?;
        durable(&dir, sizes.durable_commands, figures)?;
        stage.remove(&dir)?;
    }
    if wanted("group") {
        let dir = stage.dir("group")?;
        group(&dir, sizes, figures)?;
        stage.remove(&dir)?;
    }
    let disk_in_reads = sizes.read_events.contains(&sizes.disk_events);
    for events in sizes.read_events {
        let disk_here = wanted("disk") && events == sizes.disk_events;
        if !wanted("read") && !disk_here {
            continue;
        }
        let dir = stage.dir(&format!("read-{events}"))?;
        build_read_depot(&dir, events, figures)?;
        if wanted("read") {
            reads(&dir, events, sizes.reads, "", figures)?;
        }
        if disk_here {
            let again = if wanted("read") { sizes.reads / 4 } else { 0 };
            disk_use(&dir, events, again, figures)?;
        }
        stage.remove(&dir)?;
    }
    if wanted("disk") && !disk_in_reads {
        let dir = stage.dir(&format!("disk-{}", sizes.disk_events))?;
        build_read_depot(&dir, sizes.disk_events, figures)?;
        disk_use(&dir, sizes.disk_events, 0, figures)?;
        stage.remove(&dir)?;
    }
    Ok(())
}

/// Fresh directories under the scratch directory.
pub(crate) struct Stage<'a> {
    scratch: &'a Path,
}

impl<'a> Stage<'a> {
    pub(crate) fn new(scratch: &'a Path) -> Self {
        Self { scratch }
    }

    pub(crate) fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.scratch.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    pub(crate) fn remove(&self, dir: &Path) -> Result<()> {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
    }
}

/// Commits `commands` commands of `shape` through `commit_many` in batches of [`BULK_BATCH`],
/// returning the time spent inside `commit_many` (building the requests is not counted).
pub(crate) fn bulk_load(
    depot: &Depot,
    commands: u64,
    shape: Shape,
    progress: &str,
) -> Result<Duration> {
    let mut spent = Duration::ZERO;
    let mut next = 0;
    let mut last_report = Instant::now();
    while next < commands {
        let end = (next + BULK_BATCH).min(commands);
        let requests = (next..end)
            .map(|i| workload::request(i, shape, Base::Tip))
            .collect::<Result<Vec<_>>>()?;
        let start = Instant::now();
        let results = depot.commit_many(requests);
        spent += start.elapsed();
        for (i, result) in (next..end).zip(results) {
            result.with_context(|| format!("bulk commit of command {i}"))?;
        }
        next = end;
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("retro-bench: {progress}: {next} of {commands} commands");
            last_report = Instant::now();
        }
    }
    Ok(spent)
}

/// a. The bulk path: `commit_many` with `Base::Tip`, 1,000 commands per call.
fn bulk(dir: &Path, sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    let commands = sizes.bulk_commands;
    let events = commands * EVENTS_PER_COMMAND;
    eprintln!("retro-bench: bulk write of {commands} commands ({events} events)");
    let depot = crate::workload::init_plain(dir)?;
    let spent = bulk_load(&depot, commands, Shape::Fresh, "bulk write")?;
    let note = format!(
        "Depot::commit_many, Base::Tip, {BULK_BATCH} commands per call (one fsync each), \
         time inside commit_many"
    );
    figures.push(
        Figure::new(
            RETRO,
            "bulk_write",
            "events/s",
            per_second(events, spent),
            events,
        )
        .note(note.clone()),
    );
    figures.push(
        Figure::new(
            RETRO,
            "bulk_write_commands",
            "commands/s",
            per_second(commands, spent),
            commands,
        )
        .note(note),
    );
    let checkpoints = count_checkpoints(&depot, commands + 1)?;
    ensure!(
        checkpoints == commands,
        "the bulk depot holds {checkpoints} checkpoints, not {commands}"
    );
    Ok(())
}

/// Counts the first-parent checkpoints from `HEAD`, stopping after `limit`.
fn count_checkpoints(depot: &Depot, limit: u64) -> Result<u64> {
    let Some(head) = depot.head()? else {
        return Ok(0);
    };
    let mut count = 0;
    depot.walk(head, HistoryOrder::FirstParent, |_, _| {
        count += 1;
        Ok(count < limit)
    })?;
    Ok(count)
}

/// e. Walks `walk` checkpoints from `HEAD` (first parents), 3 times on a freshly opened depot;
/// the median rate is kept.
fn walk(dir: &Path, walk: u64, figures: &mut Figures) -> Result<()> {
    eprintln!("retro-bench: log walk of {walk} checkpoints (3 runs)");
    let depot = Depot::open(dir)?;
    let head = depot.head()?.context("the bulk depot has no head")?;
    let mut rates = Vec::new();
    let mut walked = 0;
    // Ids, parents and dates only, as `git rev-list` prints: from the commit-graph.
    for _ in 0..3 {
        let mut count = 0u64;
        let mut dated = 0u64;
        let start = Instant::now();
        depot.walk_ids(head, HistoryOrder::FirstParent, |entry| {
            count += 1;
            dated += u64::from(entry.date.is_some());
            Ok(count < walk)
        })?;
        let elapsed = start.elapsed();
        ensure!(dated == count, "the walk lost dates");
        walked = count;
        rates.push(per_second(count, elapsed));
    }
    figures.push(
        Figure::new(
            RETRO,
            "walk_first_parent",
            "checkpoints/s",
            median(&mut rates),
            walked,
        )
        .note("Depot::walk_ids(head, FirstParent): ids, parents, dates from the commit-graph; median of 3"),
    );
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut count = 0u64;
        let mut bytes = 0usize;
        let start = Instant::now();
        depot.walk(head, HistoryOrder::FirstParent, |_, checkpoint| {
            count += 1;
            bytes += checkpoint.message().len();
            Ok(count < walk)
        })?;
        let elapsed = start.elapsed();
        ensure!(bytes > 0, "the walk read no messages");
        walked = count;
        rates.push(per_second(count, elapsed));
    }
    figures.push(
        Figure::new(
            RETRO,
            "walk_first_parent_read",
            "checkpoints/s",
            median(&mut rates),
            walked,
        )
        .note("Depot::walk(head, FirstParent), each checkpoint read, hash-verified and decoded; median of 3"),
    );
    Ok(())
}

/// The disk's own limit, measured here: appends of 1 KiB, each followed by `fdatasync`.
fn disk_fsync(dir: &Path, n: u64, figures: &mut Figures) -> Result<()> {
    eprintln!("retro-bench: {n} appends of 1 KiB + fdatasync");
    let path = dir.join("append.log");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = [0x5au8; 1024];
    let mut samples = Vec::with_capacity(usize::try_from(n)?);
    for i in 0..n + 20 {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()
            .with_context(|| format!("fdatasync of {}", path.display()))?;
        if i >= 20 {
            samples.push(start.elapsed());
        }
    }
    let total: Duration = samples.iter().sum();
    let p = Percentiles::of(&mut samples);
    let note = "append 1 KiB + fdatasync, measured by retro-bench in its scratch directory";
    figures
        .push(Figure::new(DISK, "append_fdatasync", "ops/s", per_second(n, total), n).note(note));
    figures.push(Figure::new(DISK, "append_fdatasync_p50", "us", p.p50_us, n).note(note));
    figures.push(Figure::new(DISK, "append_fdatasync_p99", "us", p.p99_us, n).note(note));
    Ok(())
}

/// b. One writer, `Depot::commit` one command at a time, each durable when it returns; every
/// request expects the head the previous one produced (as SQLite's transaction checks it).
fn durable(dir: &Path, n: u64, figures: &mut Figures) -> Result<()> {
    eprintln!("retro-bench: {n} durable commits, one writer");
    let depot = crate::workload::init_plain(dir)?;
    let warmup = 50;
    let mut head: Option<ObjectId> = None;
    let mut samples = Vec::with_capacity(usize::try_from(n)?);
    let mut total = Duration::ZERO;
    for i in 0..n + warmup {
        let request = workload::request(i, Shape::Fresh, Base::Expect(head))?;
        let start = Instant::now();
        let committed = depot
            .commit(request)
            .with_context(|| format!("durable commit of command {i}"))?;
        let elapsed = start.elapsed();
        head = Some(committed.checkpoint);
        if i >= warmup {
            samples.push(elapsed);
            total += elapsed;
        }
    }
    let p = Percentiles::of(&mut samples);
    let note = "Depot::commit, Base::Expect(previous head), durable on return";
    figures.push(
        Figure::new(
            RETRO,
            "durable_commit",
            "commands/s",
            per_second(n, total),
            n,
        )
        .note(note),
    );
    figures.push(Figure::new(RETRO, "durable_commit_p50", "us", p.p50_us, n).note(note));
    figures.push(Figure::new(RETRO, "durable_commit_p99", "us", p.p99_us, n).note(note));
    Ok(())
}

/// c. Group commit: writers on disjoint partitions, each request based on the head read just
/// before it and allowed to rebase.
fn group(dir: &Path, sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    let writers = sizes.writers;
    let each = sizes.group_commands_per_writer;
    eprintln!("retro-bench: group commit, {writers} writers x {each} commands");
    let depot = crate::workload::init_plain(dir)?;
    // Warm up: one command per writer, unmeasured.
    for writer in 0..writers {
        let mut request = workload::request(1_000_000_000, Shape::Writer { writer }, Base::Tip)?;
        request.rebase = true;
        depot.commit(request)?;
    }
    let conflicts = AtomicU64::new(0);
    let rebased = AtomicU64::new(0);
    let committed = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let depot = &depot;
                let (conflicts, rebased, committed) = (&conflicts, &rebased, &committed);
                scope.spawn(move || -> Result<()> {
                    for i in 0..each {
                        let head = depot.head()?;
                        let mut request =
                            workload::request(i, Shape::Writer { writer }, Base::Expect(head))?;
                        request.rebase = true;
                        match depot.commit(request) {
                            Ok(c) => {
                                committed.fetch_add(1, Ordering::Relaxed);
                                if c.rebased {
                                    rebased.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(e) if e.is_conflict() => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                return Err(e).context(format!("writer {writer}, command {i}"))
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        benchkit::join_all(handles.into_iter().map(|h| h.join()), "a writer")
    })?;
    let elapsed = start.elapsed();
    let committed = committed.into_inner();
    let conflicts = conflicts.into_inner();
    let rebased = rebased.into_inner();
    let note = format!(
        "{writers} threads on disjoint partitions, Base::Expect(head read just before), \
         rebase allowed; {rebased} rebased, {conflicts} conflicts"
    );
    figures.push(
        Figure::new(
            RETRO,
            "group_commit",
            "commands/s",
            per_second(committed, elapsed),
            committed,
        )
        .note(note.clone()),
    );
    figures.push(
        Figure::new(
            RETRO,
            "group_commit_conflicts",
            "conflicts",
            conflicts as f64,
            writers * each,
        )
        .note(note),
    );
    let total = count_checkpoints(&depot, u64::MAX)?;
    ensure!(
        total == committed + writers,
        "the group depot holds {total} checkpoints, not {}",
        committed + writers
    );
    Ok(())
}

/// Builds a read depot of about `events` events with the bulk path: identity partitions of
/// exactly 10 events each, spread over the whole history.
fn build_read_depot(dir: &Path, events: u64, figures: &mut Figures) -> Result<()> {
    let commands = workload::read_commands(events);
    let stored = commands * EVENTS_PER_COMMAND;
    eprintln!("retro-bench: building a read depot of {stored} events");
    let depot = crate::workload::init_plain(dir)?;
    let spent = bulk_load(
        &depot,
        commands,
        Shape::for_reads(events),
        &format!("read depot of {stored} events"),
    )?;
    figures.push(
        Figure::new(
            RETRO,
            "bulk_write_read_depot",
            "events/s",
            per_second(stored, spent),
            stored,
        )
        .note("the bulk path again, building a read depot (10-event identity partitions)"),
    );
    Ok(())
}

/// d. Reads random 10-event identity partitions with `Depot::partition_events` on a freshly
/// opened depot: `reads` unmeasured reads, then `reads` measured ones.
fn reads(dir: &Path, events: u64, reads: u64, suffix: &str, figures: &mut Figures) -> Result<()> {
    let stored = workload::read_commands(events) * EVENTS_PER_COMMAND;
    let when = if suffix.is_empty() { "" } else { ", after gc" };
    eprintln!("retro-bench: {reads} reads of a random 10-event partition in {stored} events{when}");
    let depot = Depot::open(dir)?;
    let partitions = workload::read_partitions(events);
    let mut rng = benchkit::Rng::new(0x5eed);
    let names = (0..2 * reads)
        .map(|_| PartitionName::new(&format!("identity/{}", rng.below(partitions))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut samples = Vec::with_capacity(usize::try_from(reads)?);
    for (i, name) in names.iter().enumerate() {
        let start = Instant::now();
        let records = depot.partition_events(name)?;
        let elapsed = start.elapsed();
        ensure!(
            records.len() as u64 == EVENTS_PER_READ_PARTITION,
            "{name} holds {} events",
            records.len()
        );
        if i as u64 >= reads {
            samples.push(elapsed);
        }
    }
    let p = Percentiles::of(&mut samples);
    let note = format!(
        "Depot::partition_events of a random 10-event partition in {stored} events, in-process{when}"
    );
    figures.push(
        Figure::new(
            RETRO,
            format!("read_partition_p50{suffix}"),
            "us",
            p.p50_us,
            stored,
        )
        .note(note.clone()),
    );
    figures.push(
        Figure::new(
            RETRO,
            format!("read_partition_p99{suffix}"),
            "us",
            p.p99_us,
            stored,
        )
        .note(note),
    );
    Ok(())
}

/// What a depot directory holds on disk.
struct DiskUse {
    /// Bytes of every file.
    total: u64,
    /// Bytes of the `index.sqlite*` files.
    index: u64,
    /// Bytes by top-level entry (`packs`, `logs`, `index.sqlite*`, ...), largest first.
    parts: Vec<(String, u64)>,
}

/// Measures the apparent size of every file under `dir`.
fn dir_bytes(dir: &Path) -> Result<DiskUse> {
    let (mut total, mut index) = (0, 0);
    let mut parts: std::collections::BTreeMap<String, u64> = Default::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            total += meta.len();
            let relative = entry.path();
            let relative = relative.strip_prefix(dir).unwrap_or(&relative);
            let top = relative
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if path == dir && top.starts_with("index.sqlite") {
                index += meta.len();
                *parts.entry("index.sqlite*".to_owned()).or_default() += meta.len();
            } else {
                *parts.entry(top).or_default() += meta.len();
            }
        }
    }
    let mut parts: Vec<(String, u64)> = parts.into_iter().collect();
    parts.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    Ok(DiskUse {
        total,
        index,
        parts,
    })
}

/// A breakdown as `packs 123.4, logs 56.7` (bytes per event).
fn breakdown(parts: &[(String, u64)], events: u64) -> String {
    parts
        .iter()
        .map(|(name, bytes)| format!("{name} {:.1}", *bytes as f64 / events as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The disk figures of the depot in `dir` holding `stored` events, named with `suffix` (`""`
/// before gc, `"_after_gc"` after).
pub(crate) fn disk_figures(
    dir: &Path,
    stored: u64,
    suffix: &str,
    figures: &mut Figures,
) -> Result<()> {
    let DiskUse {
        total,
        index,
        parts,
    } = dir_bytes(dir)?;
    let per_event = |bytes: u64| bytes as f64 / stored as f64;
    let note = format!(
        "apparent size of every file in the depot directory, index.sqlite included; \
         B/event by entry: {}",
        breakdown(&parts, stored)
    );
    let name = |what: &str| format!("{what}_bytes_per_event{suffix}");
    figures.push(Figure::new(RETRO, name("disk"), "B/event", per_event(total), stored).note(note));
    figures.push(
        Figure::new(RETRO, name("index"), "B/event", per_event(index), stored)
            .note("index.sqlite (and its -wal/-shm files)"),
    );
    Ok(())
}

/// f. Disk use of a bulk-built depot, before and after `Depot::gc` (no pruning); with
/// `reads_after` > 0 the 10-event reads are measured again after gc.
fn disk_use(dir: &Path, events: u64, reads_after: u64, figures: &mut Figures) -> Result<()> {
    let stored = workload::read_commands(events) * EVENTS_PER_COMMAND;
    disk_figures(dir, stored, "", figures)?;
    eprintln!("retro-bench: gc of the depot of {stored} events");
    let depot = Depot::open(dir)?;
    let start = Instant::now();
    let report = depot.gc(&GcOptions::default(), |_| {})?;
    let elapsed = start.elapsed();
    drop(depot);
    figures.push(
        Figure::new(RETRO, "gc", "s", elapsed.as_secs_f64(), stored).note(format!(
            "Depot::gc(GcOptions::default()): {} objects kept, packs {} -> {} B ({} packs before)",
            report.kept, report.bytes_before, report.bytes_after, report.packs_before
        )),
    );
    disk_figures(dir, stored, "_after_gc", figures)?;
    if reads_after > 0 {
        reads(dir, events, reads_after, "_after_gc", figures)?;
    }
    Ok(())
}

/// The median of `values` (sorted in place); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Sizes {
        Sizes {
            bulk_commands: 1500,
            durable_commands: 10,
            writers: 2,
            group_commands_per_writer: 5,
            read_events: [150, 300],
            reads: 20,
            walk: 1000,
            disk_events: 450,
            fsyncs: 5,
        }
    }

    #[test]
    fn every_measurement_runs_on_tiny_sizes() {
        let scratch = tempfile::tempdir().unwrap();
        let mut figures = Figures::default();
        run(&tiny(), &[], scratch.path(), &mut figures).unwrap();
        for name in [
            "bulk_write",
            "walk_first_parent",
            "durable_commit",
            "durable_commit_p99",
            "group_commit",
            "disk_bytes_per_event",
            "disk_bytes_per_event_after_gc",
        ] {
            let figure = figures.get(RETRO, name).unwrap_or_else(|| panic!("{name}"));
            assert!(figure.value > 0.0, "{name}");
        }
        assert!(figures.get_n(RETRO, "read_partition_p50", 150).is_some());
        assert!(figures.get_n(RETRO, "read_partition_p50", 300).is_some());
        assert_eq!(figures.get(RETRO, "walk_first_parent").unwrap().n, 1000);
    }

    #[test]
    fn median_of_three() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut []), 0.0);
    }
}

//! Measures a PostgreSQL depot on a throw-away local server (`pgtest`: Debian's PostgreSQL 15 on
//! loopback, `fsync=on`, `synchronous_commit=on`): durable applies through the engine with one
//! writer and with 8 writers that each open their own depot (own connections, standing in for
//! application servers on other hosts), the delivery latency from an apply to a subscriber woken
//! by `LISTEN/NOTIFY`, and the latency of reading a 10-event partition in a depot of about
//! 1,000,000 events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use depot::{Delivery, PartitionName, RefName};
use engine::Engine;

use benchkit::{per_second, Figure, Percentiles};

use crate::depot_bench::bulk_load;
use crate::engine_bench::{create_payload, identity_manifest};
use crate::figures::Figures;
use crate::workload::{self, Shape};

/// Where the PostgreSQL depot's figures are filed.
pub const PG: &str = "retro-postgres";

/// The sizes of the PostgreSQL measurements.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Durable applies by the one writer.
    pub applies: u64,
    /// Writers (each with its own depot) in the contended measurement.
    pub writers: u64,
    /// Applies per writer there.
    pub applies_per_writer: u64,
    /// Events in the read depot.
    pub read_events: u64,
    /// Partition reads measured (as many again first, unmeasured).
    pub reads: u64,
    /// Applies whose delivery to a subscriber (woken by `LISTEN/NOTIFY`) is timed.
    pub deliveries: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Self {
        Self {
            applies: 1000,
            writers: 8,
            applies_per_writer: 250,
            read_events: 1_000_000,
            reads: 5000,
            deliveries: 500,
        }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self {
            applies: 200,
            writers: 8,
            applies_per_writer: 50,
            read_events: 20_000,
            reads: 1000,
            deliveries: 100,
        }
    }
}

/// Runs the PostgreSQL measurements on a server of their own.
pub fn run(sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    eprintln!("retro-bench: postgres: starting a throw-away PostgreSQL server");
    let server = pgtest::PgServer::start();
    applies(&server, sizes, figures)?;
    delivery(&server, sizes, figures)?;
    reads(&server, sizes, figures)?;
    Ok(())
}

fn applies(server: &pgtest::PgServer, sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    let url = server.create_database();
    depot_postgres::init(&url)?;
    eprintln!(
        "retro-bench: postgres: {} durable applies, 1 writer",
        sizes.applies
    );
    let engine = Engine::new(Arc::new(depot_postgres::open(&url)?), identity_manifest()?);
    for i in 0..50 {
        engine.apply(
            "s1",
            create_payload(&format!("identity/warm-{i}"), i).as_bytes(),
        )?;
    }
    let mut samples = Vec::with_capacity(sizes.applies as usize);
    let start = Instant::now();
    for i in 0..sizes.applies {
        let payload = create_payload(&format!("identity/one-{i}"), 1_000_000 + i);
        let t = Instant::now();
        engine.apply("s1", payload.as_bytes())?;
        samples.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let note =
        "Engine::apply over depot_postgres::open, Rust handler, 3 events over 2 partitions, \
                each apply committed (PostgreSQL synchronous_commit=on) before it returns";
    figures.push(
        Figure::new(
            PG,
            "apply_1",
            "applies/s",
            per_second(sizes.applies, elapsed),
            sizes.applies,
        )
        .note(note),
    );
    let p = Percentiles::of(&mut samples);
    figures.push(Figure::new(PG, "apply_1_p50", "us", p.p50_us, sizes.applies).note(note));
    figures.push(Figure::new(PG, "apply_1_p99", "us", p.p99_us, sizes.applies).note(note));

    let writers = sizes.writers;
    let per = sizes.applies_per_writer;
    eprintln!("retro-bench: postgres: {writers} writers x {per} applies, one depot each");
    let engines: Vec<Engine> = (0..writers)
        .map(|_| {
            Ok(Engine::new(
                Arc::new(depot_postgres::open(&url)?),
                identity_manifest()?,
            ))
        })
        .collect::<Result<_>>()?;
    let (reruns, rebased) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = engines
            .iter()
            .enumerate()
            .map(|(w, engine)| {
                let (reruns, rebased) = (&reruns, &rebased);
                scope.spawn(move || -> Result<()> {
                    let session = format!("s{}", w + 1);
                    for i in 0..per {
                        let path = format!("identity/w{w}-{i}");
                        let payload = create_payload(&path, (w as u64 + 1) * 10_000_000 + i);
                        let applied = engine
                            .apply(&session, payload.as_bytes())
                            .with_context(|| format!("writer {w}, apply {i}"))?;
                        reruns.fetch_add(u64::from(applied.attempts - 1), Ordering::Relaxed);
                        if applied.rebased {
                            rebased.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        benchkit::join_all(handles.into_iter().map(|h| h.join()), "a writer")
    })?;
    let elapsed = start.elapsed();
    let total = writers * per;
    figures.push(
        Figure::new(
            PG,
            "apply_writers",
            "applies/s",
            per_second(total, elapsed),
            total,
        )
        .note(format!(
            "{writers} threads, each with its own depot_postgres::open (own connections), \
                 disjoint identities, own session; {} rebased onto a moved head without \
                 re-running, {} handler re-runs",
            rebased.load(Ordering::Relaxed),
            reruns.load(Ordering::Relaxed)
        )),
    );
    Ok(())
}

/// The delivery latency of a PostgreSQL depot: from sending an apply (one connection) to a
/// subscriber on a depot of its own (another connection, woken by `LISTEN/NOTIFY`) receiving its
/// checkpoint, one apply at a time. This is the latency `tests/postgres/watch.rs` used to bound.
fn delivery(server: &pgtest::PgServer, sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    let url = server.create_database();
    depot_postgres::init(&url)?;
    eprintln!(
        "retro-bench: postgres: delivery latency over {} applies",
        sizes.deliveries
    );
    let engine = Engine::new(Arc::new(depot_postgres::open(&url)?), identity_manifest()?);
    engine.apply("s1", create_payload("identity/first", 0).as_bytes())?;
    let observer = depot_postgres::open(&url)?;
    let mut subscription = observer.subscribe(&RefName::head(), "identity/**", observer.head()?)?;
    let mut delays = Vec::with_capacity(sizes.deliveries as usize);
    for i in 0..sizes.deliveries {
        let payload = create_payload(&format!("identity/live-{i}"), 2_000_000 + i);
        let sent = Instant::now();
        engine.apply("s1", payload.as_bytes())?;
        loop {
            match subscription.next_timeout(Duration::from_secs(10))? {
                Some(Delivery::Checkpoint { .. }) => break,
                Some(_) => continue,
                None => bail!("apply {i} was not delivered within 10 s"),
            }
        }
        delays.push(sent.elapsed());
    }
    let n = delays.len() as u64;
    let p = Percentiles::of(&mut delays);
    let note = "from sending Engine::apply to a subscriber on its own depot_postgres::open \
                (LISTEN/NOTIFY) receiving the checkpoint, one apply at a time";
    figures.push(Figure::new(PG, "delivery_latency_p50", "us", p.p50_us, n).note(note));
    figures.push(Figure::new(PG, "delivery_latency_p99", "us", p.p99_us, n).note(note));
    Ok(())
}

fn reads(server: &pgtest::PgServer, sizes: &Sizes, figures: &mut Figures) -> Result<()> {
    let url = server.create_database();
    let commands = workload::read_commands(sizes.read_events);
    let events = commands * workload::EVENTS_PER_COMMAND;
    eprintln!("retro-bench: postgres: bulk load of {events} events");
    let loaded = {
        let depot = depot_postgres::init(&url)?;
        let spent = bulk_load(
            &depot,
            commands,
            Shape::for_reads(sizes.read_events),
            "postgres bulk",
        )?;
        depot.flush_index()?;
        spent
    };
    figures.push(
        Figure::new(PG, "bulk_write", "events/s", per_second(events, loaded), events)
            .note("Depot::commit_many, Base::Tip, 1000 commands per call: objects, ref move and index rows in one retro_commit"),
    );
    // A fresh handle, as another process or host would open it.
    let depot = depot_postgres::open(&url)?;
    let partitions = workload::read_partitions(sizes.read_events);
    let mut rng = benchkit::Rng::new(7);
    let mut samples = Vec::with_capacity(sizes.reads as usize);
    for round in 0..2 {
        for _ in 0..sizes.reads {
            let name = PartitionName::new(&format!("identity/{}", rng.below(partitions)))?;
            let t = Instant::now();
            let read = depot.partition_events(&name)?;
            let spent = t.elapsed();
            anyhow::ensure!(read.len() == 10, "{name} has {} events", read.len());
            if round == 1 {
                samples.push(spent);
            }
        }
    }
    let p = Percentiles::of(&mut samples);
    let note = format!(
        "Depot::partition_events of a random 10-event partition in {events} events: HEAD resolved, \
         index rows (PostgreSQL tables), the 10 events in one query"
    );
    figures.push(Figure::new(PG, "read_partition_p50", "us", p.p50_us, events).note(&note));
    figures.push(Figure::new(PG, "read_partition_p99", "us", p.p99_us, events).note(note));
    Ok(())
}

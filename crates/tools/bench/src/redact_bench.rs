//! Measures verifiable erasure (phase `redact`): a depot of sealed events (the default of
//! `retro init`) holding the workload's history is bulk-built, then single events are redacted one
//! call at a time (`Depot::redact`: intent fsynced, the data's pack record overwritten and
//! fsynced, the redaction checkpoint committed). Also the disk use of that sealed depot after gc,
//! beside the plain depot's of the `disk` phase: what erasability costs in bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use depot::{Depot, GcOptions, PartitionName};

use benchkit::{Figure, Percentiles};

use crate::depot_bench::{bulk_load, disk_figures};
use crate::figures::Figures;
use crate::workload::{Shape, EVENTS_PER_COMMAND};

const RETRO: &str = "retro";

/// The sizes of the redaction measurement.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Commands of the history (3 events each).
    pub commands: u64,
    /// Measured redactions.
    pub redactions: u64,
}

impl Sizes {
    /// The full run: 999,999 events.
    pub fn full() -> Self {
        Self {
            commands: 333_333,
            redactions: 20,
        }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self {
            commands: 10_000,
            redactions: 10,
        }
    }
}

/// Runs the measurement in a directory of `scratch`.
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<()> {
    let dir = scratch.join("redact");
    let events = sizes.commands * EVENTS_PER_COMMAND;
    eprintln!("retro-bench: redact: a sealed depot of {events} events");
    let depot = Depot::init(&dir)?;
    ensure!(depot.seals_events(), "a new depot seals its events");
    let spent = bulk_load(&depot, sizes.commands, Shape::Fresh, "redact")?;
    figures.push(
        Figure::new(
            RETRO,
            "bulk_write_sealed",
            "events/s",
            events as f64 / spent.as_secs_f64().max(1e-9),
            events,
        )
        .note("Depot::commit_many as the bulk phase, into a depot that seals its events"),
    );
    let mut rng = benchkit::Rng::new(0x4ed);
    let mut samples: Vec<Duration> = Vec::new();
    for _ in 0..sizes.redactions {
        let partition = PartitionName::new(&format!("identity/{}", rng.below(sizes.commands)))?;
        let target = depot.partition_events(&partition)?;
        ensure!(!target.is_empty(), "{partition} holds no event");
        let id = target[0].id;
        let start = Instant::now();
        let report = depot.redact(&[id], "bench", "s1")?;
        samples.push(start.elapsed());
        ensure!(
            report.redacted.len() + report.already.len() == 1,
            "redacting {id}: {report:?}"
        );
    }
    let p = Percentiles::of(&mut samples);
    let note = format!(
        "Depot::redact of one event in {events} sealed events (intent, in-place erasure, redaction checkpoint; each fsynced), {} calls",
        sizes.redactions
    );
    figures.push(
        Figure::new(RETRO, "redact_one_p50", "ms", p.p50_us / 1000.0, events).note(note.clone()),
    );
    figures.push(Figure::new(RETRO, "redact_one_p99", "ms", p.p99_us / 1000.0, events).note(note));
    eprintln!(
        "retro-bench: redact: one event in {events}: p50 {:.1} ms",
        p.p50_us / 1000.0
    );
    depot.gc(&GcOptions::default(), |_| {})?;
    drop(depot);
    disk_figures(&dir, events, "_sealed_after_gc", figures)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

//! Measures aggregate snapshots (phase `snapshot`): single durable applies on an aggregate of 10
//! and of 10,000 events, for a Rust aggregate (`snapshot_every(100)`) and for an exec handler
//! (a shell script that returns `"state"`, `"snapshot_every": 100`), and the same 10,000-event
//! apply without snapshots for comparison. The target: the 10,000-event apply within 1.5x of the
//! 10-event one.
//!
//! Each case gets a fresh native depot whose partition `counters/c` is bulk-committed first
//! (1,000 events a checkpoint), then one unmeasured apply (the one that takes the first snapshot
//! of a long aggregate), then the measured ones, each committed (fsynced) before it returns.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use depot::PartitionName;
use engine::{exec, Aggregate, Engine, Manifest, RecordedEvent};
use serde::{Deserialize, Serialize};

use benchkit::{Figure, Percentiles};

use crate::figures::Figures;

const RETRO: &str = "retro";
/// The aggregate sizes compared.
pub const EVENTS: [u64; 2] = [10, 10_000];
/// Events between snapshots.
const EVERY: u64 = 100;

/// The sizes of the snapshot measurement.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Measured applies per case.
    pub applies: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Self {
        Self { applies: 300 }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self { applies: 100 }
    }
}

/// A counter with a little state, serde-encoded in its snapshots.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
    last: u64,
}

impl Aggregate for Counter {
    fn apply(&mut self, event: &RecordedEvent) {
        self.count += 1;
        self.last = event.data.get("n").and_then(|n| n.as_u64()).unwrap_or(0);
    }
}

fn rust_manifest(snapshots: bool) -> Result<Manifest> {
    let mut manifest = Manifest::new();
    let kind = manifest.aggregate::<Counter>("counters")?;
    let kind = if snapshots {
        kind.snapshot_every(EVERY, "1")
    } else {
        kind
    };
    kind.command("increment", |counter, ctx| {
        let path = ctx.path().to_string();
        ctx.emit_json(
            &path,
            "Incremented",
            &serde_json::json!({"n": counter.count + 1}),
        )
    })?;
    Ok(manifest)
}

const HANDLER: &str = r#"#!/bin/sh
# Reads the request (the whole history, or a snapshot and the events since), returns one event
# and the state after it.
cat >/dev/null
n=$((RETRO_AGGREGATE_VERSION + 1))
printf '{"events":{"%s":[{"name":"Incremented","data":{"n":%s}}]},"state":{"count":%s}}\n' "$RETRO_PATH" "$n" "$n"
"#;

fn exec_manifest(dir: &Path, snapshots: bool) -> Result<Manifest> {
    std::fs::write(dir.join("counter.sh"), HANDLER)?;
    let every = if snapshots {
        format!(r#""snapshot_every": {EVERY},"#)
    } else {
        String::new()
    };
    let file = dir.join("manifest.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"aggregates": {{"counters": {{{every} "commands": {{"increment": {{"exec": ["sh", "counter.sh"]}}}}}}}}}}"#
        ),
    )?;
    let mut manifest = Manifest::new();
    exec::load_manifest(&file, &mut manifest)?;
    Ok(manifest)
}

/// p50 of `applies` applies on `counters/c` after `events` events.
fn measure(
    scratch: &Path,
    name: &str,
    events: u64,
    applies: u64,
    manifest: impl FnOnce(&Path) -> Result<Manifest>,
) -> Result<Percentiles> {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir)?;
    let depot = Arc::new(crate::workload::one_partition_depot(
        dir.join("depot"),
        "counters/c",
        "Incremented",
        events,
        |i| format!(r#"{{"n":{}}}"#, i + 1),
    )?);
    let engine = Engine::new(depot, manifest(&dir)?);
    let command = br#"{"path":"counters/c","name":"increment"}"#;
    engine
        .apply("bench", command)
        .context("the unmeasured apply")?;
    let mut samples: Vec<Duration> = Vec::with_capacity(applies as usize);
    for _ in 0..applies {
        let started = Instant::now();
        engine.apply("bench", command)?;
        samples.push(started.elapsed());
    }
    let total = engine
        .depot()
        .partition_version(&PartitionName::new("counters/c")?)?;
    ensure!(total == events + applies + 1, "{name}: {total} events");
    Ok(Percentiles::of(&mut samples))
}

/// Runs the phase and files `snapshot_{rust,exec}_apply_p50` (n: events before) and
/// `snapshot_{rust,exec}_plain_apply_p50` (no snapshots, 10,000 events).
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<()> {
    let note = format!(
        "durable applies on counters/c, snapshot every {EVERY}, p50 of {}",
        sizes.applies
    );
    for (kind, with, plain) in [
        ("rust", true, false),
        ("exec", true, false),
        ("rust", false, true),
        ("exec", false, true),
    ] {
        let sizes_here: &[u64] = if plain { &EVENTS[1..] } else { &EVENTS };
        for &events in sizes_here {
            let name = format!("{kind}-{events}-{with}");
            let p = match kind {
                "rust" => measure(scratch, &name, events, sizes.applies, |_| {
                    rust_manifest(with)
                })?,
                _ => measure(scratch, &name, events, sizes.applies, |dir| {
                    exec_manifest(dir, with)
                })?,
            };
            let figure = if plain {
                format!("snapshot_{kind}_plain_apply_p50")
            } else {
                format!("snapshot_{kind}_apply_p50")
            };
            figures.push(Figure::new(RETRO, figure, "us", p.p50_us, events).note(note.clone()));
            eprintln!(
                "retro-bench: snapshot: {kind}, {events} events, snapshots {with}: p50 {:.0} us",
                p.p50_us
            );
        }
    }
    Ok(())
}

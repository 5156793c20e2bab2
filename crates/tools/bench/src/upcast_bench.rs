//! Measures the read cost of upcasting (phase `upcast`): a full
//! rehydration (`Engine::load`) of one partition of 10,000 schema-version-1 `Deposited` events,
//! with no upcaster (the events are at their newest version), with a declarative upcaster
//! (v1 → v2: rename a field, add a default), and with an exec upcaster (a shell script, one
//! process per event, on fewer events: it is that slow), read cold (a fresh engine each read)
//! and cached (the same engine again: the upcasters keep an exec step's results in memory).
//!
//! It files `upcast_read_{plain,declarative,exec,exec_cached}_ms` (n: events read) and
//! `upcast_read_{declarative,exec,exec_cached}_us_per_event` (the cost over the plain read, per
//! event).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use depot::Depot;
use engine::{exec, Aggregate, Engine, Manifest, RecordedEvent, Transform, Upcaster};

use benchkit::{Figure, Percentiles};

use crate::figures::Figures;

const RETRO: &str = "retro";

/// The sizes of the upcast measurement.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Events in the partition read plain and with the declarative upcaster.
    pub events: u64,
    /// Events in the partition read with the exec upcaster (one process each).
    pub exec_events: u64,
    /// Measured reads per case (the exec case: at most 3).
    pub reads: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Self {
        Self {
            events: 10_000,
            exec_events: 1_000,
            reads: 20,
        }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self {
            events: 10_000,
            exec_events: 200,
            reads: 5,
        }
    }
}

/// Sums the deposits, whichever field the version names them by, and fails on an unexpected
/// version (so a measured read that did not upcast would not go unnoticed).
#[derive(Debug, Default)]
struct Balance {
    cents: u64,
    versions: [u64; 3],
}

impl Aggregate for Balance {
    fn apply(&mut self, event: &RecordedEvent) {
        let field = if event.schema_version >= 2 {
            "cents"
        } else {
            "amount"
        };
        self.cents += event.data.get(field).and_then(|n| n.as_u64()).unwrap_or(0);
        let slot = (event.schema_version as usize).min(2);
        self.versions[slot] += 1;
    }
}

/// The exec step: the event on stdin, `[{"name","data"}]` on stdout with `amount` renamed
/// `cents` (by `sed`, to keep the script's own cost small).
const UPCASTER: &str = r#"#!/bin/sh
sed -e 's/^.*"data":{"amount":\([0-9]*\),"n":\([0-9]*\)}.*$/[{"name":"Deposited","data":{"cents":\1,"n":\2,"currency":"EUR"}}]/'
"#;

fn manifest(dir: &Path, upcaster: &str) -> Result<Manifest> {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Balance>("wallets")?
        .command("noop", |_, _| Ok(()))?;
    match upcaster {
        "declarative" => {
            manifest.upcast(
                "Deposited",
                1,
                Upcaster::Transform(Transform {
                    rename: [("amount".to_owned(), "cents".to_owned())].into(),
                    default: [("currency".to_owned(), serde_json::json!("EUR"))]
                        .into_iter()
                        .collect(),
                    ..Transform::default()
                }),
            )?;
        }
        "exec" => {
            std::fs::write(dir.join("up.sh"), UPCASTER)?;
            let file = dir.join("manifest.json");
            std::fs::write(
                &file,
                r#"{"aggregates": {}, "upcasters": {"Deposited": [{"from": 1, "to": 2, "exec": ["sh", "up.sh"]}]}}"#,
            )?;
            exec::load_manifest(&file, &mut manifest)?;
        }
        _ => {}
    }
    Ok(manifest)
}

/// A fresh depot whose `wallets/w` holds `events` v1 `Deposited {"amount": 1, "n": i}` (each
/// its own object: identical events share an id, and the exec step's results are cached by it).
fn depot_with(dir: &Path, events: u64) -> Result<Arc<Depot>> {
    let depot = Arc::new(crate::workload::one_partition_depot(
        dir.join("depot"),
        "wallets/w",
        "Deposited",
        events,
        |i| format!(r#"{{"amount":1,"n":{i}}}"#),
    )?);
    Ok(depot)
}

/// p50 of `reads` full rehydrations of `wallets/w` (`events` events) under `upcaster`; `cold`:
/// each by an engine with its manifest loaded afresh (so the exec step's results, which the
/// upcasters keep in memory, are not).
fn measure(
    scratch: &Path,
    upcaster: &str,
    events: u64,
    reads: u64,
    cold: bool,
) -> Result<Percentiles> {
    let dir = scratch.join(format!("upcast-{upcaster}-{events}-{cold}"));
    std::fs::create_dir_all(&dir)?;
    let depot = depot_with(&dir, events)?;
    let mut engine = Engine::new(depot.clone(), manifest(&dir, upcaster)?);
    let expected_version = if upcaster == "plain" { 1 } else { 2 };
    // One unmeasured read: the index's pages warm, and the result checked.
    let loaded = engine.load::<Balance>("wallets/w")?;
    ensure!(
        loaded.version == events
            && loaded.state.cents == events
            && loaded.state.versions[expected_version] == events,
        "{upcaster}: read {:?} at version {}",
        loaded.state,
        loaded.version
    );
    let mut samples: Vec<Duration> = Vec::with_capacity(reads as usize);
    for _ in 0..reads {
        if cold {
            engine = Engine::new(depot.clone(), manifest(&dir, upcaster)?);
        }
        let started = Instant::now();
        let loaded = engine.load::<Balance>("wallets/w")?;
        samples.push(started.elapsed());
        ensure!(loaded.state.cents == events, "{upcaster}: a short read");
    }
    Ok(Percentiles::of(&mut samples))
}

/// Runs the phase and files its figures (see the module docs).
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<()> {
    let mut plain_per_event_us = 0.0;
    for (upcaster, events, reads, cold) in [
        ("plain", sizes.events, sizes.reads, false),
        ("declarative", sizes.events, sizes.reads, false),
        ("plain", sizes.exec_events, sizes.reads, false),
        ("exec", sizes.exec_events, sizes.reads.min(3), true),
        ("exec", sizes.exec_events, sizes.reads, false),
    ] {
        let p = measure(scratch, upcaster, events, reads, cold)?;
        let upcaster = match (upcaster, cold) {
            ("exec", false) => "exec_cached",
            _ => upcaster,
        };
        let ms = p.p50_us / 1000.0;
        let per_event = p.p50_us / events as f64;
        let note =
            format!("Engine::load of one partition of {events} v1 events, p50 of {reads} reads");
        eprintln!(
            "retro-bench: upcast: {upcaster}, {events} events: p50 {ms:.1} ms ({per_event:.2} us/event)"
        );
        if upcaster == "plain" {
            plain_per_event_us = per_event;
            if events != sizes.events {
                // Only the baseline of the exec case's size.
                continue;
            }
        }
        figures.push(
            Figure::new(
                RETRO,
                format!("upcast_read_{upcaster}_ms"),
                "ms",
                ms,
                events,
            )
            .note(note.clone()),
        );
        if upcaster != "plain" {
            figures.push(
                Figure::new(
                    RETRO,
                    format!("upcast_read_{upcaster}_us_per_event"),
                    "us",
                    per_event - plain_per_event_us,
                    events,
                )
                .note(format!("{note}, less the plain read's per-event cost")),
            );
        }
    }
    Ok(())
}

//! `retro project run | status | rebuild | retry`: the projections the domain manifest declares
//! (the runner, generations and parking are `engine::projection`'s; docs/cli.md).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use anyhow::Result;
use serde_json::json;

use depot::Depot;
use engine::projection::{self, ProjectionError, ProjectionRunner, Until};
use engine::Engine;
use server::api::{GenerationView, ProjectionView};

use super::{apply::load_manifest, depot_dir, open};
use crate::ui::{self, Ui};

/// `run --once` ended with generations parked (exit 4, as a failing handler).
#[derive(Debug, thiserror::Error)]
#[error("parked: {}", .0.join(", "))]
pub struct ProjectionsParked(pub Vec<String>);

/// Set by SIGINT and SIGTERM: the runners stop between batches.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Lets SIGINT and SIGTERM stop the runners cleanly (their handler programs are then killed;
/// a batch not yet acknowledged is delivered again next run).
fn stop_on_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn engine_for(flag: Option<&Path>, manifest: Option<&Path>) -> Result<Engine> {
    let dir = depot_dir(flag)?;
    Ok(Engine::new(open(flag)?, load_manifest(&dir, manifest)?))
}

/// The names to run: those given (each must be declared), else every declared one.
fn chosen(engine: &Engine, names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        let all: Vec<String> = engine
            .manifest()
            .projections()
            .map(|d| d.name().to_owned())
            .collect();
        if all.is_empty() {
            return Err(ProjectionError::NoneDeclared.into());
        }
        return Ok(all);
    }
    for name in names {
        engine.manifest().projection_def(name)?;
    }
    Ok(names.to_vec())
}

/// `retro project run [NAME]... [--once]`: one thread per projection.
pub fn run(
    flag: Option<&Path>,
    names: &[String],
    once: bool,
    manifest: Option<&Path>,
) -> Result<()> {
    let engine = engine_for(flag, manifest)?;
    let names = chosen(&engine, names)?;
    stop_on_signals();
    let until = if once {
        Until::CaughtUp
    } else {
        Until::Stopped
    };
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for name in &names {
        let mut runner = ProjectionRunner::new(engine.clone(), name)?
            .on_log(|line| ui::status(format!("retro: {line}")));
        let tx = tx.clone();
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            let result = runner.run(until, &STOP);
            let _ = tx.send((name, result));
        }));
    }
    drop(tx);
    let mut parked = Vec::new();
    let mut failure = None;
    for (name, result) in rx {
        match result {
            Ok(outcome) => {
                if once {
                    ui::status(format!(
                        "retro: projection {name}: {} batch(es) acknowledged, {}",
                        outcome.acknowledged,
                        if outcome.parked.is_empty() {
                            "caught up".to_owned()
                        } else {
                            format!(
                                "generation {} parked ('retro project status {name}' shows why)",
                                outcome
                                    .parked
                                    .iter()
                                    .map(u64::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    ));
                }
                if !outcome.parked.is_empty() {
                    parked.push(name);
                }
            }
            Err(e) => {
                // One runner failing stops the others: the process exits with its error.
                STOP.store(true, Ordering::Relaxed);
                failure.get_or_insert(anyhow::Error::new(e).context(format!("projection {name}")));
            }
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    if !parked.is_empty() && once {
        parked.sort();
        return Err(ProjectionsParked(parked).into());
    }
    Ok(())
}

fn generation_text(label: &str, generation: &GenerationView) -> String {
    format!(
        "{label} generation {} at {}, {}",
        generation.generation,
        generation
            .position
            .as_deref()
            .map_or("the start".to_owned(), short),
        generation
            .behind
            .map_or("not on HEAD's history".to_owned(), |b| format!(
                "{b} checkpoint(s) behind"
            ))
    )
}

fn short(id: &str) -> String {
    id.strip_prefix("sha256:")
        .map_or(id, |hex| &hex[..hex.len().min(12)])
        .to_owned()
}

/// `retro project status [NAME] [--json]`.
pub fn status(
    flag: Option<&Path>,
    name: Option<&str>,
    manifest: Option<&Path>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let engine = engine_for(flag, manifest)?;
    let mut views = ProjectionView::read_all(&engine)?;
    if let Some(name) = name {
        projection::check_name(name)?;
        views.retain(|v| v.name == name);
        if views.is_empty() {
            return Err(ProjectionError::Unknown {
                name: name.to_owned(),
                declared: engine
                    .manifest()
                    .projections()
                    .map(|d| d.name().to_owned())
                    .collect(),
            }
            .into());
        }
    }
    for view in &views {
        if json {
            ui.json(view)?;
            continue;
        }
        let globs = if view.declared {
            view.partitions.join(" ")
        } else {
            "not declared by this manifest".to_owned()
        };
        match &view.live {
            None => ui.line(format!("{} ({globs}): never run", view.name))?,
            Some(live) => ui.line(format!(
                "{} ({globs}): {}",
                view.name,
                generation_text("live", live)
            ))?,
        }
        if let Some(rebuilding) = &view.rebuilding {
            ui.line(format!("  {}", generation_text("rebuilding", rebuilding)))?;
        }
        for parked in &view.parked {
            ui.line(format!(
                "  parked: generation {} at {} after {} attempt(s), {}: {}",
                parked.generation,
                parked
                    .checkpoint
                    .as_deref()
                    .map_or("its switch notice".to_owned(), |c| format!(
                        "checkpoint {}",
                        short(c)
                    )),
                parked.attempts,
                parked.at,
                parked.error
            ))?;
            for event in &parked.events {
                ui.line(format!(
                    "    {}#{} {} {}",
                    event.partition, event.version, event.name, event.id
                ))?;
            }
        }
    }
    Ok(())
}

/// `retro project rebuild NAME [--json]`.
pub fn rebuild(
    flag: Option<&Path>,
    name: &str,
    manifest: Option<&Path>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let engine = engine_for(flag, manifest)?;
    engine.manifest().projection_def(name)?;
    let generation = projection::rebuild(engine.depot(), name)?;
    if json {
        ui.json(&json!({"projection": name, "rebuilding": generation}))?;
    } else {
        ui.line(format!(
            "projection {name}: generation {generation} rebuilds from the start beside the live one, and goes live when it has caught up (a runner does it: 'retro project run {name}' or 'retro serve --projections')"
        ))?;
    }
    Ok(())
}

/// `retro project retry NAME [--generation N] [--json]`.
pub fn retry(
    depot: &Depot,
    name: &str,
    generation: Option<u64>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let retried = projection::retry(depot, name, generation)?;
    if json {
        ui.json(&json!({"projection": name, "retried": retried}))?;
    } else if retried.is_empty() {
        ui.line(format!("projection {name}: nothing is parked"))?;
    } else {
        ui.line(format!(
            "projection {name}: generation {} un-parked; its runner delivers the failing batch again",
            retried
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    Ok(())
}

//! `retro sync SRC DST` and `retro clone SRC DST`: copy history between depots of any layout
//! (files, go-retro, PostgreSQL), byte for byte, then move refs fast-forward only (see
//! `depot::Depot::sync_from` for the order that makes an interrupted sync safe to resume).

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;

use depot::{Depot, RefOutcome, SyncOptions, SyncReport};

use super::{init_location, open_location, shown_location};
use crate::ui::Ui;

pub fn sync(
    src: &Path,
    dst: &Path,
    force: bool,
    batch: usize,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let source = open_location(src).with_context(|| format!("source {}", shown_location(src)))?;
    let destination =
        open_location(dst).with_context(|| format!("destination {}", shown_location(dst)))?;
    run(&source, &destination, force, batch, json, ui)
}

pub fn clone(src: &Path, dst: &Path, batch: usize, json: bool, ui: &mut Ui) -> Result<()> {
    let source = open_location(src).with_context(|| format!("source {}", shown_location(src)))?;
    let dst = &crate::locate::clone_destination(dst);
    let (destination, _) = init_location(dst)?;
    run(&source, &destination, false, batch, json, ui)
}

fn run(
    source: &Depot,
    destination: &Depot,
    force: bool,
    batch: usize,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let options = SyncOptions {
        force,
        batch,
        ..SyncOptions::default()
    };
    let bar = ui.progress(0, "checkpoints copied");
    let report = destination.sync_from(source, &options, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    render(&report, json, ui)?;
    let rejected: Vec<String> = report
        .refs
        .iter()
        .filter(|r| r.outcome == RefOutcome::Rejected)
        .map(|r| r.name.to_string())
        .collect();
    if !rejected.is_empty() {
        return Err(crate::error::NotFastForward(rejected).into());
    }
    Ok(())
}

fn word(outcome: RefOutcome) -> &'static str {
    match outcome {
        RefOutcome::UpToDate => "up to date",
        RefOutcome::Created => "created",
        RefOutcome::FastForward => "fast-forward",
        RefOutcome::Forced => "forced",
        RefOutcome::Rejected => "rejected",
    }
}

fn render(report: &SyncReport, json: bool, ui: &mut Ui) -> Result<()> {
    if json {
        let refs: Vec<_> = report
            .refs
            .iter()
            .map(|r| {
                json!({
                    "name": r.name.as_str(),
                    "old": r.old.map(|id| id.to_string()),
                    "new": r.new.to_string(),
                    "outcome": word(r.outcome),
                })
            })
            .collect();
        ui.json(&json!({
            "checkpoints": report.checkpoints,
            "objects": report.objects,
            "failures": report.failures,
            "refs": refs,
        }))?;
        return Ok(());
    }
    ui.line(format!(
        "copied {} checkpoint(s), {} object(s)",
        report.checkpoints, report.objects
    ))?;
    if report.failures > 0 {
        ui.line(format!("copied {} failed command(s)", report.failures))?;
    }
    for r in &report.refs {
        let old = r
            .old
            .map_or_else(|| "(none)".to_owned(), |id| id.to_short_hex(12));
        ui.line(format!(
            "  {:<12} -> {}  {}  ({})",
            old,
            r.new.to_short_hex(12),
            r.name,
            word(r.outcome)
        ))?;
    }
    Ok(())
}

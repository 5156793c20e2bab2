//! `retro sync SRC DST` and `retro clone SRC DST`: copy history between depots of any layout
//! (files, go-retro, PostgreSQL), byte for byte, then move refs fast-forward only (see
//! `depot::Depot::sync_from` for the order that makes an interrupted sync safe to resume).
//! `--partitions` makes a partial clone (`clone`) or widens one (`sync`): see `depot::PartialFilter`.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;

use depot::{Depot, PartialFilter, RefOutcome, SyncOptions, SyncReport};

use super::{init_location, open_location, postgres_url, shown_location};
use crate::ui::Ui;

/// The `--partitions` globs as a filter (`None` when none are given); a bad glob is refused
/// before any depot is opened or created.
fn filter_of(partitions: &[String]) -> Result<Option<PartialFilter>> {
    if partitions.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        PartialFilter::new(partitions).context("--partitions")?,
    ))
}

pub fn sync(
    src: &Path,
    dst: &Path,
    force: bool,
    partitions: &[String],
    batch: usize,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let widen = filter_of(partitions)?;
    let source = open_location(src).with_context(|| format!("source {}", shown_location(src)))?;
    let destination =
        open_location(dst).with_context(|| format!("destination {}", shown_location(dst)))?;
    run(&source, &destination, force, widen, batch, json, ui)
}

pub fn clone(
    src: &Path,
    dst: &Path,
    partitions: &[String],
    batch: usize,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let filter = filter_of(partitions)?;
    let source = open_location(src).with_context(|| format!("source {}", shown_location(src)))?;
    // A clone of a partial clone is partial too, unless it names its own partitions (which the
    // source must then hold).
    let filter = filter.or_else(|| source.partial_filter());
    if filter.is_some() && postgres_url(dst).is_some() {
        // Refused before the database is initialised.
        return Err(depot::Error::Invalid(
            "a partial clone must be a files depot: a PostgreSQL depot holds every partition (clone it whole, or clone into a directory)".to_owned(),
        )
        .into());
    }
    let dst = &crate::locate::clone_destination(dst);
    let (destination, _) = init_location(dst)?;
    if let Some(filter) = &filter {
        destination.begin_partial_clone(filter)?;
    }
    run(&source, &destination, false, None, batch, json, ui)
}

fn run(
    source: &Depot,
    destination: &Depot,
    force: bool,
    partitions: Option<PartialFilter>,
    batch: usize,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let options = SyncOptions {
        force,
        batch,
        partitions,
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
            "partitions": report.partial,
            "events_fetched": report.events_fetched,
        }))?;
        return Ok(());
    }
    ui.line(format!(
        "copied {} checkpoint(s), {} object(s)",
        report.checkpoints, report.objects
    ))?;
    if let Some(globs) = &report.partial {
        ui.line(format!(
            "partial clone: holds the events of partitions {}",
            quoted(globs)
        ))?;
    }
    if report.events_fetched > 0 {
        ui.line(format!(
            "fetched {} object(s) of newly held partitions for checkpoints already here",
            report.events_fetched
        ))?;
    }
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

/// Globs quoted for a line: `'accounts/*', 'notes/**'`.
pub fn quoted(globs: &[String]) -> String {
    globs
        .iter()
        .map(|g| format!("'{g}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

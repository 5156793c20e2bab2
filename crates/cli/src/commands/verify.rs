//! `retro verify [RANGE] [--manifest FILE] [--json]`: re-runs every recorded command of a range
//! of first-parent history with the current domain, on the state as of its parent checkpoint
//! ([`engine::replay::Replay`]), and reports each command whose events differ from the recorded
//! ones (by event id), with a readable diff of their data. Exit 7 when one diverges, as a failed
//! `retro test` case.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use depot::{Depot, HistoryOrder, ObjectId};
use engine::replay::{Divergence, Replay, Replayed, ReplayedEvent, Verdict};

use super::{depot_dir, open};
use crate::error::VerifyDiverged;
use crate::render;
use crate::ui::Ui;

/// A range that names no stretch of first-parent history.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// `A..B` where A is not on B's first-parent history.
    #[error("'{}' is not on the first-parent history of '{}': give A..B with A an ancestor of B", depot::shown(.start), depot::shown(.end))]
    NotAnAncestor {
        /// A as given.
        start: String,
        /// B as given.
        end: String,
    },
    /// `A...B` (Git's symmetric difference) has no meaning on one line of history.
    #[error("range '{}': '...' is not supported; give A..B or a single revision", depot::shown(.0))]
    ThreeDots(String),
}

/// A first-parent stretch of history: the checkpoint before it (`None`: the root's parent) and
/// its checkpoints, oldest first.
pub struct Stretch {
    /// The checkpoint the stretch starts after.
    pub after: Option<ObjectId>,
    /// Its checkpoints, oldest first.
    pub checkpoints: Vec<ObjectId>,
}

/// Resolves `A..B` (B's first parents after A; A empty: the root, B empty: HEAD) or `REV` (the
/// root up to REV); `None` is HEAD's whole first-parent history (empty on an unborn HEAD).
pub fn stretch(depot: &Depot, range: Option<&str>) -> Result<Stretch> {
    let (start, end) = match range {
        None => (None, None),
        Some(text) if text.contains("...") => {
            return Err(RangeError::ThreeDots(text.to_owned()).into())
        }
        Some(text) => match text.split_once("..") {
            Some((a, b)) => (
                Some(a).filter(|a| !a.is_empty()),
                Some(b).filter(|b| !b.is_empty()),
            ),
            None => (None, Some(text)),
        },
    };
    let end_id = match end {
        None if depot.head()?.is_none() => {
            return Ok(Stretch {
                after: None,
                checkpoints: Vec::new(),
            })
        }
        end => super::resolve(depot, end)?,
    };
    depot.read_checkpoint(&end_id)?;
    let start_id = start
        .map(|a| -> Result<ObjectId> {
            let id = depot.resolve_revision(a)?;
            depot.read_checkpoint(&id)?;
            Ok(id)
        })
        .transpose()?;
    let mut checkpoints = Vec::new();
    let mut found = start_id.is_none();
    depot.walk_ids(end_id, HistoryOrder::FirstParent, |entry| {
        if Some(entry.id) == start_id {
            found = true;
            return Ok(false);
        }
        checkpoints.push(entry.id);
        Ok(true)
    })?;
    if !found {
        return Err(RangeError::NotAnAncestor {
            start: start.unwrap_or_default().to_owned(),
            end: end.unwrap_or("HEAD").to_owned(),
        }
        .into());
    }
    checkpoints.reverse();
    Ok(Stretch {
        after: start_id,
        checkpoints,
    })
}

/// What a verify run counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    checkpoints: u64,
    commands: u64,
    events: u64,
    skipped: u64,
    divergences: u64,
}

pub fn run(
    flag: Option<&Path>,
    range: Option<&str>,
    manifest: Option<&Path>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let depot: Arc<Depot> = open(flag)?;
    let manifest = super::apply::load_manifest(&depot_dir(flag)?, manifest)?;
    let stretch = stretch(&depot, range)?;
    let mut replay = Replay::new(depot.clone(), manifest)?;
    if let Some(after) = stretch.after {
        replay.start_at(after)?;
    }
    let bar = ui.progress(stretch.checkpoints.len() as u64, "checkpoints verified");
    let started = Instant::now();
    let mut counts = Counts::default();
    for id in &stretch.checkpoints {
        let verdict = replay
            .check(*id)
            .with_context(|| format!("could not replay checkpoint {id}"))?;
        counts.checkpoints += 1;
        match verdict {
            Verdict::Same { events } => {
                counts.commands += 1;
                counts.events += events as u64;
            }
            Verdict::Skipped(_) => counts.skipped += 1,
            Verdict::Diverged(divergence) => {
                counts.commands += 1;
                counts.events += divergence.recorded.len() as u64;
                counts.divergences += 1;
                bar.suspend(|| -> Result<()> {
                    if json {
                        ui.json(&divergence_json(&divergence))?;
                    } else {
                        print_divergence(ui, &divergence)?;
                    }
                    ui.flush()?;
                    Ok(())
                })?;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if json {
        ui.json(&json!({
            "type": "summary",
            "checkpoints": counts.checkpoints,
            "commands": counts.commands,
            "events": counts.events,
            "skipped": counts.skipped,
            "divergences": counts.divergences,
            "seconds": seconds,
        }))?;
    } else {
        ui.line(format!(
            "verified {} checkpoint(s): {} command(s) replayed, {} event(s), {} skipped, {} divergence(s)",
            counts.checkpoints, counts.commands, counts.events, counts.skipped, counts.divergences
        ))?;
    }
    if counts.divergences > 0 {
        return Err(VerifyDiverged {
            divergences: counts.divergences,
            commands: counts.commands,
        }
        .into());
    }
    Ok(())
}

fn event_json(e: &ReplayedEvent) -> Value {
    json!({"partition": e.partition, "name": e.name, "data": e.data, "id": e.id.to_string()})
}

fn divergence_json(d: &Divergence) -> Value {
    let replayed = match &d.replayed {
        Replayed::Events(events) => {
            json!({"events": events.iter().map(event_json).collect::<Vec<_>>()})
        }
        Replayed::Rejected { code, message } => {
            json!({"rejected": {"code": code, "message": message}})
        }
        Replayed::Failed { reason } => json!({ "failed": reason }),
    };
    let diff: Vec<Value> = d
        .diff
        .iter()
        .flat_map(|diff| &diff.fields)
        .map(|f| json!({"path": f.path, "recorded": f.expected, "replayed": f.actual}))
        .collect();
    json!({
        "type": "divergence",
        "checkpoint": d.checkpoint.to_string(),
        "session": d.session,
        "date": d.date,
        "command": render::message_value(d.command.as_bytes()),
        "recorded": d.recorded.iter().map(event_json).collect::<Vec<_>>(),
        "replayed": replayed,
        "diff": diff,
    })
}

fn event_line(i: usize, e: &ReplayedEvent) -> String {
    let body = json!({"partition": e.partition, "name": e.name, "data": e.data});
    depot::escape_invisible(&format!("    events[{i}] {} {body}", e.id.to_short_hex(12)))
}

fn print_divergence(ui: &mut Ui, d: &Divergence) -> Result<()> {
    ui.line(format!(
        "{} {} ({}, session {}): {}",
        ui.red("diverged"),
        ui.yellow(&d.checkpoint.to_short_hex(12)),
        d.date.as_deref().unwrap_or("-"),
        depot::escape_invisible(&d.session),
        depot::escape_invisible(&render::summary(d.command.as_bytes())),
    ))?;
    ui.line(format!(
        "  command: {}",
        depot::escape_invisible(&d.command)
    ))?;
    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_owned(), Value::to_string);
    match &d.replayed {
        Replayed::Events(events) => {
            ui.line(format!(
                "  recorded {} event(s), replayed {} event(s)",
                d.recorded.len(),
                events.len()
            ))?;
            match &d.diff {
                Some(diff) => {
                    for f in &diff.fields {
                        ui.line(depot::escape_invisible(&format!(
                            "  {}: recorded {}, replayed {}",
                            f.path,
                            show(&f.expected),
                            show(&f.actual)
                        )))?;
                    }
                }
                None => ui.line(
                    "  the events' data are equal as JSON but their bytes differ (key order, spacing or number form)",
                )?,
            }
            print_recorded(ui, d)?;
            ui.line("  replayed:")?;
            if events.is_empty() {
                ui.line("    (no events)")?;
            }
            for (i, e) in events.iter().enumerate() {
                ui.line(event_line(i, e))?;
            }
        }
        Replayed::Rejected { code, message } => {
            ui.line(depot::escape_invisible(&format!(
                "  recorded {} event(s), replayed: rejected {code}: {message}",
                d.recorded.len()
            )))?;
            print_recorded(ui, d)?;
        }
        Replayed::Failed { reason } => {
            ui.line(depot::escape_invisible(&format!(
                "  recorded {} event(s), replayed: failed: {reason}",
                d.recorded.len()
            )))?;
            print_recorded(ui, d)?;
        }
    }
    Ok(())
}

fn print_recorded(ui: &mut Ui, d: &Divergence) -> Result<()> {
    ui.line("  recorded:")?;
    for (i, e) in d.recorded.iter().enumerate() {
        ui.line(event_line(i, e))?;
    }
    Ok(())
}

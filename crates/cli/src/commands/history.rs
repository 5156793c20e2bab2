//! `retro log`, `retro show`, `retro events`, `retro partitions`.

use anyhow::Result;

use depot::{Depot, HistoryOrder, ObjectId};
use server::api::{CheckpointSummary, CheckpointView, EventEntry, PartitionEntry, SnapshotEntry};

use super::resolve;
use crate::args::LogArgs;
use crate::render;
use crate::ui::Ui;

pub fn log(depot: &Depot, args: &LogArgs, ui: &mut Ui) -> Result<()> {
    if args.rev.is_none() && depot.head()?.is_none() {
        // An empty depot has an empty history, as `git log` on an unborn branch says nothing.
        return Ok(());
    }
    let start = resolve(depot, args.rev.as_deref())?;
    let order = if args.all_parents {
        HistoryOrder::Full
    } else {
        HistoryOrder::FirstParent
    };
    // The commit-graph's partition summaries rule checkpoints out without reading them.
    let filter = args
        .partition
        .as_deref()
        .map(depot::PartitionFilter::new)
        .transpose()?;
    let limit = args.max_count.unwrap_or(usize::MAX);
    let mut selected: Vec<ObjectId> = Vec::new();
    let mut printed = 0usize;
    let mut failure: Option<anyhow::Error> = None;
    depot.walk_touching(start, order, filter.as_ref(), |id, checkpoint| {
        if printed >= limit {
            return Ok(false);
        }
        printed += 1;
        if args.reverse {
            selected.push(id);
        } else if let Err(e) = print_checkpoint(depot, &id, checkpoint, args, ui) {
            failure = Some(e);
            return Ok(false);
        }
        Ok(true)
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    for id in selected.iter().rev() {
        let checkpoint = depot.read_checkpoint(id)?;
        print_checkpoint(depot, id, &checkpoint, args, ui)?;
    }
    Ok(())
}

fn print_checkpoint(
    depot: &Depot,
    id: &ObjectId,
    checkpoint: &depot::Checkpoint,
    args: &LogArgs,
    ui: &mut Ui,
) -> Result<()> {
    let affix = depot.read_affix(&checkpoint.affix())?;
    if args.json {
        ui.json(&CheckpointSummary::new(id, checkpoint, Some(&affix)))?;
    } else if args.oneline {
        let partitions: Vec<&str> = affix.partitions().map(|(p, _)| p.as_str()).collect();
        let line = format!(
            "{} {} {} [{}]",
            ui.yellow(&id.to_short_hex(12)),
            render::date_text(checkpoint),
            render::summary(checkpoint.message()),
            partitions.join(", ")
        );
        ui.line(line)?;
    } else {
        let names = |event: &ObjectId| {
            depot
                .read_event(event)
                .map(|e| e.name().to_string())
                .unwrap_or_else(|e| format!("<{e}>"))
        };
        let text = render::checkpoint_text(ui, id, checkpoint, Some(&affix), Some(&names));
        ui.line(text)?;
    }
    Ok(())
}

pub fn show(depot: &Depot, rev: Option<&str>, json: bool, ui: &mut Ui) -> Result<()> {
    let id = resolve(depot, rev)?;
    if json {
        ui.json(&CheckpointView::read(depot, &id)?)?;
        return Ok(());
    }
    let checkpoint = depot.read_checkpoint(&id)?;
    let affix = depot.read_affix(&checkpoint.affix())?;
    let text = render::checkpoint_text(ui, &id, &checkpoint, None, None);
    ui.line(text.trim_end())?;
    for (partition, ids) in affix.partitions() {
        ui.line("")?;
        ui.line(ui.green(partition.as_str()))?;
        for event_id in ids {
            let event = depot.read_event(event_id)?;
            ui.line(format!(
                "  {} {}",
                event.name(),
                ui.dim(&event_id.to_short_hex(12))
            ))?;
            let pretty = serde_json::to_string_pretty(&render::data_value(event.data()))?;
            for line in pretty.lines() {
                ui.line(format!("      {line}"))?;
            }
        }
    }
    Ok(())
}

pub fn events(
    depot: &Depot,
    glob: Option<&str>,
    since: Option<&str>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let glob = glob.unwrap_or("**");
    let since = since.map(|rev| depot.resolve_revision(rev)).transpose()?;
    let mut failure: Option<anyhow::Error> = None;
    depot.events_matching(glob, since, |record| {
        let written = if json {
            ui.json(&EventEntry::from(&record))
        } else {
            let line = format!(
                "{} {} {}#{} {} {}",
                ui.yellow(&record.checkpoint.to_short_hex(12)),
                record
                    .date
                    .map(depot::format_date)
                    .unwrap_or_else(|| "-".to_owned()),
                record.partition,
                record.version,
                record.event.name(),
                String::from_utf8_lossy(record.event.data())
            );
            ui.line(line)
        };
        match written {
            Ok(()) => Ok(true),
            Err(e) => {
                failure = Some(e.into());
                Ok(false)
            }
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub fn partitions(depot: &Depot, glob: Option<&str>, json: bool, ui: &mut Ui) -> Result<()> {
    for (partition, count) in depot.partitions(glob.unwrap_or("**"))? {
        if json {
            ui.json(&PartitionEntry {
                partition: partition.to_string(),
                events: count,
                snapshot: SnapshotEntry::newest(depot, &partition),
            })?;
        } else {
            ui.line(format!("{count:>8}  {partition}"))?;
        }
    }
    Ok(())
}

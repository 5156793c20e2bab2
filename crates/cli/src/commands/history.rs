//! `retro log`, `retro show`, `retro events`, `retro partitions` (and their `--at REV` forms).

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
    if args.graph {
        return log_graph(depot, start, args, ui);
    }
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
    // `--correlation` and `--command-id` compare the checkpoint's fields exactly.
    let field_filters: Vec<(&str, &str)> = [
        (depot::CORRELATION_ID_FIELD, args.correlation.as_deref()),
        (depot::COMMAND_ID_FIELD, args.command_id.as_deref()),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value?)))
    .collect();
    depot.walk_touching(start, order, filter.as_ref(), |id, checkpoint| {
        if printed >= limit {
            return Ok(false);
        }
        if !field_filters
            .iter()
            .all(|(key, value)| checkpoint.field(key) == Some(*value))
        {
            return Ok(true);
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

/// `retro log --graph`: every ancestor, drawn (see `log_graph`).
fn log_graph(depot: &Depot, start: ObjectId, args: &LogArgs, ui: &mut Ui) -> Result<()> {
    let limit = args.max_count.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    for (id, parents) in super::log_graph::topological(depot, start)?
        .into_iter()
        .take(limit)
    {
        let checkpoint = depot.read_checkpoint(&id)?;
        let text = format!(
            "{} {}",
            ui.yellow(&id.to_short_hex(12)),
            render::summary(checkpoint.message())
        );
        rows.push(super::log_graph::Row { id, parents, text });
    }
    for line in super::log_graph::draw(&rows) {
        ui.line(line)?;
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

pub fn show(
    depot: &Depot,
    rev: Option<&str>,
    json: bool,
    upcasters: Option<&engine::Upcasters>,
    ui: &mut Ui,
) -> Result<()> {
    let id = resolve(depot, rev)?;
    let view = match upcasters {
        Some(upcasters) => {
            CheckpointView::read_upcast(depot, &id, upcasters).map_err(|e| match e {
                // The depot's own error, so that its class (corrupt, unavailable) gives the
                // exit code.
                server::api::UpcastReadError::Depot(e) => anyhow::Error::from(e),
                server::api::UpcastReadError::Upcast(e) => anyhow::Error::from(e),
            })?
        }
        None => CheckpointView::read(depot, &id)?,
    };
    if json {
        ui.json(&view)?;
        return Ok(());
    }
    let checkpoint = depot.read_checkpoint(&id)?;
    let text = render::checkpoint_text(ui, &id, &checkpoint, None, None);
    ui.line(text.trim_end())?;
    let mut partition: Option<&str> = None;
    for event in &view.events {
        if partition != Some(event.partition.as_str()) {
            ui.line("")?;
            ui.line(ui.green(&event.partition))?;
            partition = Some(event.partition.as_str());
        }
        let short = event
            .event
            .parse::<ObjectId>()
            .map(|id| id.to_short_hex(12))
            .unwrap_or_else(|_| event.event.clone());
        ui.line(format!(
            "  {}{} {}{}",
            event.name,
            version_text(event.schema_version),
            ui.dim(&short),
            origin_text(event.upcast.as_ref()),
        ))?;
        let pretty = serde_json::to_string_pretty(&event.data)?;
        for line in pretty.lines() {
            ui.line(format!("      {line}"))?;
        }
    }
    Ok(())
}

/// ` v<N>` after an event's name, for a schema version other than 1.
fn version_text(version: Option<u32>) -> String {
    match version {
        Some(version) if version != 1 => format!(" v{version}"),
        _ => String::new(),
    }
}

/// ` (upcast from <name> v<N>)` for an upcast event.
fn origin_text(origin: Option<&server::api::UpcastOrigin>) -> String {
    match origin {
        Some(origin) => format!(" (upcast from {} v{})", origin.name, origin.version),
        None => String::new(),
    }
}

/// How `retro events` prints: as JSON lines or text, and upcast or as stored.
#[derive(Clone, Copy)]
pub struct EventsView<'a> {
    /// One JSON object per line.
    pub json: bool,
    /// Upcast by these (`--upcast`), else as stored.
    pub upcasters: Option<&'a engine::Upcasters>,
}

pub fn events(
    depot: &Depot,
    glob: Option<&str>,
    since: Option<&str>,
    view: EventsView<'_>,
    ui: &mut Ui,
) -> Result<()> {
    let glob = glob.unwrap_or("**");
    let since = since.map(|rev| depot.resolve_revision(rev)).transpose()?;
    let mut failure: Option<anyhow::Error> = None;
    depot.events_matching(glob, since, |record| {
        let written = print_event(&record, view, ui);
        match written {
            Ok(()) => Ok(true),
            Err(e) => {
                failure = Some(e);
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

/// `at`'s first-parent history, oldest first: the slow path for `--at`, O(history up to it)
/// (ids from the commit-graph where there is one; each checkpoint and affix then read once).
fn line_at(depot: &Depot, at: &str) -> Result<Vec<ObjectId>> {
    let id = resolve(depot, Some(at))?;
    depot.read_checkpoint(&id)?;
    let mut line = Vec::new();
    depot.walk_ids(id, HistoryOrder::FirstParent, |entry| {
        line.push(entry.id);
        Ok(true)
    })?;
    line.reverse();
    Ok(line)
}

/// `retro events --at REV`: the events of matching partitions as of checkpoint REV, oldest first,
/// numbered as they were then; `--since` (on REV's history) keeps only later ones.
pub fn events_at(
    depot: &Depot,
    glob: Option<&str>,
    at: &str,
    since: Option<&str>,
    view: EventsView<'_>,
    ui: &mut Ui,
) -> Result<()> {
    let filter = depot::PartitionFilter::new(glob.unwrap_or("**"))?;
    let at_id = resolve(depot, Some(at))?;
    depot.read_checkpoint(&at_id)?;
    if depot.on_head_history(&at_id)? {
        // HEAD's branch: the partition index answers, O(the matching partitions' events).
        let since = since.map(|rev| depot.resolve_revision(rev)).transpose()?;
        if let Some(since) = since {
            if !depot.on_head_history(&since)? || !depot.is_ancestor(since, at_id)? {
                anyhow::bail!(
                    "--since {} is not on the first-parent history of --at {}",
                    depot::shown(&since.to_string()),
                    depot::shown(at)
                );
            }
        }
        let mut failure: Option<anyhow::Error> = None;
        depot.events_matching_upto(glob.unwrap_or("**"), since, Some(at_id), |record| {
            match print_event(&record, view, ui) {
                Ok(()) => Ok(true),
                Err(e) => {
                    failure = Some(e);
                    Ok(false)
                }
            }
        })?;
        return failure.map_or(Ok(()), Err);
    }
    let line = line_at(depot, at)?;
    let skip_through = match since {
        None => None,
        Some(rev) => {
            let id = depot.resolve_revision(rev)?;
            Some(line.iter().position(|c| *c == id).ok_or_else(|| {
                anyhow::anyhow!(
                    "--since {} is not on the first-parent history of --at {}",
                    depot::shown(rev),
                    depot::shown(at)
                )
            })?)
        }
    };
    let mut versions: std::collections::HashMap<depot::PartitionName, u64> =
        std::collections::HashMap::new();
    for (i, id) in line.iter().enumerate() {
        let checkpoint = depot.read_checkpoint(id)?;
        let affix = depot.read_affix(&checkpoint.affix())?;
        for (partition, ids) in affix.partitions() {
            if !filter.matches(partition.as_str()) {
                continue;
            }
            let version = versions.entry(partition.clone()).or_insert(0);
            for event_id in ids {
                *version += 1;
                if skip_through.is_some_and(|s| i <= s) {
                    continue;
                }
                let record = depot::EventRecord {
                    partition: partition.clone(),
                    version: *version,
                    id: *event_id,
                    event: depot.read_event(event_id)?,
                    checkpoint: *id,
                    date: checkpoint.date(),
                    session: checkpoint.session().to_owned(),
                };
                print_event(&record, view, ui)?;
            }
        }
    }
    Ok(())
}

/// `retro partitions --at REV`: matching partitions and their event counts as of checkpoint REV.
pub fn partitions_at(
    depot: &Depot,
    glob: Option<&str>,
    at: &str,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let filter = depot::PartitionFilter::new(glob.unwrap_or("**"))?;
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for id in line_at(depot, at)? {
        let checkpoint = depot.read_checkpoint(&id)?;
        let affix = depot.read_affix(&checkpoint.affix())?;
        for (partition, ids) in affix.partitions() {
            if filter.matches(partition.as_str()) {
                *counts.entry(partition.to_string()).or_insert(0) += ids.len() as u64;
            }
        }
    }
    for (partition, count) in counts {
        if json {
            // Snapshots are kept for HEAD only: none is shown as of another checkpoint.
            ui.json(&PartitionEntry {
                partition,
                events: count,
                snapshot: None,
            })?;
        } else {
            ui.line(format!("{count:>8}  {partition}"))?;
        }
    }
    Ok(())
}

fn print_event(record: &depot::EventRecord, view: EventsView<'_>, ui: &mut Ui) -> Result<()> {
    let Some(upcasters) = view.upcasters else {
        if view.json {
            return Ok(ui.json(&EventEntry::from(record))?);
        }
        return Ok(ui.line(format!(
            "{} {} {}#{} {}{} {}",
            ui.yellow(&record.checkpoint.to_short_hex(12)),
            record
                .date
                .map(depot::format_date)
                .unwrap_or_else(|| "-".to_owned()),
            record.partition,
            record.version,
            record.event.name(),
            version_text(Some(record.event.version())),
            String::from_utf8_lossy(record.event.data())
        ))?);
    };
    for entry in EventEntry::upcast(record, upcasters)? {
        if view.json {
            ui.json(&entry)?;
            continue;
        }
        ui.line(format!(
            "{} {} {}#{} {}{} {}{}",
            ui.yellow(&record.checkpoint.to_short_hex(12)),
            entry.date.as_deref().unwrap_or("-"),
            entry.partition,
            entry.version,
            entry.name,
            version_text(entry.schema_version),
            serde_json::to_string(&entry.data)?,
            origin_text(entry.upcast.as_ref()),
        ))?;
    }
    Ok(())
}

//! `retro fsck`, `retro gc`, `retro reindex`, `retro repair`, `retro failed`.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use depot::{Depot, GcOptions};

use crate::error::{Corrupt, Unrepaired};
use crate::render;
use crate::ui::{status, Ui};

pub fn fsck(depot: &Depot, json: bool, ui: &mut Ui) -> Result<()> {
    let bar = ui.progress(0, "objects checked");
    let report = depot.fsck(|n| bar.set_position(n))?;
    bar.finish_and_clear();
    if json {
        ui.json(&json!({
            "clean": report.is_clean(),
            "refs": report.refs,
            "checkpoints": report.checkpoints,
            "affixes": report.affixes,
            "events": report.events,
            "data": report.data,
            "redacted": report.redacted,
            "unverifiable": report.unverifiable.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "failed_commands": report.failed_commands,
            "partitions_checked": report.partitions_checked,
            "partial": report.partial,
            "absent_by_filter": report.absent_by_filter,
            "unreachable": report.unreachable.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "warnings": report.warnings,
            "problems": report.problems.iter().map(|p| json!({
                "kind": p.kind.as_str(),
                "object": p.id.map(|id| id.to_string()),
                "message": p.message,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for id in &report.unreachable {
            let kind = depot
                .read_object(id)
                .ok()
                .and_then(|o| o.kind().ok())
                .map_or("object", |k| k.as_str());
            ui.line(format!("unreachable {kind} {id}"))?;
        }
        for warning in &report.warnings {
            ui.line(format!("warning {warning}"))?;
        }
        for id in &report.unverifiable {
            ui.line(format!("redacted, unverifiable event {id}"))?;
        }
        if report.redacted > 0 {
            ui.line(format!(
                "{} redacted (events' data or commands erased, their ids verified)",
                report.redacted
            ))?;
        }
        if let Some(globs) = &report.partial {
            ui.line(format!(
                "partial clone: {} event(s) of partitions outside {} absent by design; every id held verified",
                report.absent_by_filter,
                super::sync::quoted(globs)
            ))?;
        }
        for problem in &report.problems {
            match problem.id {
                Some(id) => ui.line(format!("{} {id}: {}", ui.red("error"), problem.message))?,
                None => ui.line(format!("{} {}", ui.red("error"), problem.message))?,
            }
        }
        ui.line(format!(
            "checked {} refs: {} checkpoints, {} affixes, {} events; {} failed commands kept; {} partitions match the index; {} unreachable objects; {}",
            report.refs,
            report.checkpoints,
            report.affixes,
            report.events,
            report.failed_commands,
            report.partitions_checked,
            report.unreachable.len(),
            if report.is_clean() { "no problems".to_owned() } else { format!("{} problem(s)", report.problems.len()) }
        ))?;
    }
    if !report.is_clean() {
        ui.flush()?;
        return Err(Corrupt(report.problems.len()).into());
    }
    Ok(())
}

/// Parses `0`, `now`, `90s`, `30m`, `12h`, `14d`, `2w`.
pub fn parse_age(text: &str) -> Result<Duration> {
    if text == "0" || text == "now" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(n) = number.parse::<u64>() else {
        bail!(
            "'{}' is not an age such as 0, 30m, 12h or 14d",
            depot::shown(text)
        );
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!(
            "'{}' is not an age such as 0, 30m, 12h or 14d",
            depot::shown(text)
        ),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// `retro redact EVENT-ID... --reason TEXT`: every id is resolved and checked before anything
/// is written.
pub fn redact(
    depot: &Depot,
    events: &[String],
    reason: &str,
    session: &str,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let ids = events
        .iter()
        .map(|name| depot.resolve_revision(name))
        .collect::<Result<Vec<_>, _>>()?;
    let report = depot.redact(&ids, reason, session)?;
    if json {
        // The same body as `POST /redact`.
        ui.json(&server::api::Redacted::new(&report))?;
        return Ok(());
    }
    for id in &report.redacted {
        let note = if report.unverifiable.contains(id) {
            " (plain event: its id can no longer be verified)"
        } else {
            ""
        };
        ui.line(format!("redacted {id}{note}"))?;
    }
    for id in &report.already {
        ui.line(format!("already redacted {id}"))?;
    }
    for id in &report.checkpoints {
        ui.line(format!("recorded in checkpoint {id}"))?;
    }
    Ok(())
}

pub fn gc(depot: &Depot, prune: Option<&str>, json: bool, ui: &mut Ui) -> Result<()> {
    let options = GcOptions {
        prune_older_than: prune.map(parse_age).transpose()?,
    };
    let bar = ui.progress(0, "objects repacked");
    let report = depot.gc(&options, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if json {
        ui.json(&json!({
            "kept": report.kept,
            "pruned": report.pruned,
            "packs_before": report.packs_before,
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
            "snapshots_pruned": report.snapshots_pruned,
        }))?;
    } else if let depot::Layout::Backend(backend) = depot.layout() {
        ui.line(format!(
            "kept {} objects ({backend}: nothing to repack): {} → {} bytes; pruned {}",
            report.kept, report.bytes_before, report.bytes_after, report.pruned
        ))?;
    } else {
        ui.line(format!(
            "repacked {} objects from {} pack(s): {} → {} bytes; pruned {}",
            report.kept,
            report.packs_before,
            report.bytes_before,
            report.bytes_after,
            report.pruned
        ))?;
    }
    Ok(())
}

pub fn reindex(depot: &Depot, ui: &mut Ui) -> Result<()> {
    let bar = ui.progress(0, "reindexing");
    let (checkpoints, partitions, events) = depot.reindex()?;
    bar.finish_and_clear();
    ui.line(format!(
        "indexed {checkpoints} checkpoints, {partitions} partitions, {events} events"
    ))?;
    Ok(())
}

pub fn repair(depot: &Depot, json: bool, ui: &mut Ui) -> Result<()> {
    let report = depot.repair()?;
    if json {
        ui.json(&json!({
            "clean": report.unfixable.is_empty(),
            "fixed": report.fixed,
            "unfixable": report.unfixable,
        }))?;
    } else {
        for line in &report.fixed {
            ui.line(format!("fixed: {line}"))?;
        }
        for line in &report.unfixable {
            ui.line(format!("{} {line}", ui.red("cannot fix:")))?;
        }
        if report.unfixable.is_empty() {
            ui.line("repair done; run 'retro fsck' to check")?;
        }
    }
    if !report.unfixable.is_empty() {
        return Err(Unrepaired(report.unfixable.len()).into());
    }
    Ok(())
}

pub fn failed(depot: &Depot, json: bool, ui: &mut Ui) -> Result<()> {
    for id in depot.failures()? {
        let checkpoint = match depot.read_checkpoint(&id) {
            Ok(c) => c,
            Err(e) => {
                status(format!(
                    "retro: warning: failed command {id} is unreadable: {e}"
                ));
                continue;
            }
        };
        let error = checkpoint.field("error").unwrap_or("-");
        if json {
            // The same body as `GET /failed`'s entries.
            ui.json(&server::api::FailedEntry::read(depot, &id)?)?;
        } else {
            ui.line(format!(
                "{} {} {} {}\n    {}",
                ui.yellow(&id.to_short_hex(12)),
                render::date_text(&checkpoint),
                checkpoint.session(),
                render::summary(checkpoint.message()),
                ui.red(error)
            ))?;
        }
    }
    Ok(())
}

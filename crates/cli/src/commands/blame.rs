//! `retro blame PARTITION [--json]`: each event of a partition on `HEAD`, oldest first, with the
//! checkpoint that added it, the command (path, name and the short hash of its payload), the
//! session, the date and the command's correlation id (`-` when it carries none). Costs
//! O(events of the partition): the partition index gives each event's checkpoint, date and
//! session, and each distinct checkpoint is read once for its message.

use anyhow::Result;
use serde_json::{json, Value};

use depot::{Depot, ObjectId, PartitionName};

use crate::render;
use crate::ui::Ui;

/// Why a partition cannot be blamed.
#[derive(Debug, thiserror::Error)]
pub enum BlameError {
    /// Not a valid partition name.
    #[error("'{}' is not a partition name", depot::shown(.name))]
    BadName {
        /// As given.
        name: String,
        /// Why.
        #[source]
        source: depot::NameError,
    },
    /// The partition has no events on `HEAD`.
    #[error("partition '{}' has no events on HEAD ('retro partitions' lists them)", depot::shown(.0))]
    Empty(String),
}

/// What blame shows of a checkpoint's command.
struct CommandInfo {
    path: Option<String>,
    name: Option<String>,
    summary: String,
    payload: ObjectId,
    correlation: Option<String>,
}

/// The correlation id a command carries, if any: `correlation_id` (or `correlationId`) at the
/// top level or in `params`.
fn correlation(message: &Value) -> Option<String> {
    let keys = ["correlation_id", "correlationId"];
    let find = |v: &Value| {
        keys.iter().find_map(|k| v.get(k)).and_then(|c| match c {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    };
    find(message).or_else(|| message.get("params").and_then(find))
}

fn command_info(message: &[u8]) -> CommandInfo {
    let value: Value = serde_json::from_slice(message).unwrap_or(Value::Null);
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    CommandInfo {
        path: text("path"),
        name: text("name"),
        summary: render::summary(message),
        payload: ObjectId::of(message),
        correlation: correlation(&value),
    }
}

pub fn run(depot: &Depot, partition: &str, json: bool, ui: &mut Ui) -> Result<()> {
    let name = PartitionName::new(partition).map_err(|source| BlameError::BadName {
        name: partition.to_owned(),
        source,
    })?;
    let records = depot.partition_events(&name)?;
    if records.is_empty() {
        return Err(BlameError::Empty(partition.to_owned()).into());
    }
    let mut current: Option<(ObjectId, CommandInfo)> = None;
    for record in &records {
        if current.as_ref().map(|(id, _)| *id) != Some(record.checkpoint) {
            let checkpoint = depot.read_checkpoint(&record.checkpoint)?;
            let mut info = command_info(checkpoint.message());
            // The checkpoint's own `correlation-id` field first; else one in the payload.
            if let Some(field) = checkpoint.field(depot::CORRELATION_ID_FIELD) {
                info.correlation = Some(field.to_owned());
            }
            current = Some((record.checkpoint, info));
        }
        let Some((_, info)) = &current else { continue };
        let date = record.date.map(depot::format_date);
        if json {
            ui.json(&json!({
                "partition": record.partition.as_str(),
                "version": record.version,
                "event": record.id.to_string(),
                "name": record.event.name().as_str(),
                "checkpoint": record.checkpoint.to_string(),
                "date": date,
                "session": record.session,
                "command": {"path": info.path, "name": info.name},
                "payload": info.payload.to_string(),
                "correlation": info.correlation,
            }))?;
        } else {
            ui.line(format!(
                "{:>4} {} {} {} {} {} {} {}",
                format!("#{}", record.version),
                ui.yellow(&record.checkpoint.to_short_hex(12)),
                date.as_deref().unwrap_or("-"),
                depot::escape_invisible(&record.session),
                depot::escape_invisible(&info.summary),
                info.payload.to_short_hex(12),
                depot::escape_invisible(info.correlation.as_deref().unwrap_or("-")),
                record.event.name(),
            ))?;
        }
    }
    Ok(())
}

//! `retro status`: where the depot is, what `HEAD` holds, and how far each consumer is behind.

use anyhow::Result;
use serde::Serialize;

use depot::{Depot, Layout, RefName};
use server::api::ConsumerStatus;

use crate::ui::Ui;

/// What `retro status --json` prints.
#[derive(Debug, Serialize)]
struct Status {
    /// The depot's location (a directory, or a URL without its password).
    depot: String,
    /// `native`, `go-retro`, `memory`, or the backend's name.
    layout: String,
    /// The branch `HEAD` names.
    branch: String,
    /// Its checkpoint (`null` while unborn).
    head: Option<String>,
    checkpoints: u64,
    partitions: u64,
    events: u64,
    /// A partial clone's partition globs (`null`: every partition's events are here).
    partial: Option<Vec<String>>,
    consumers: Vec<ConsumerStatus>,
}

pub fn status(depot: &Depot, location: String, json: bool, ui: &mut Ui) -> Result<()> {
    let (branch, head) = depot.resolve_ref(&RefName::head())?;
    let (checkpoints, partitions, events) = depot.counts()?;
    let consumers = ConsumerStatus::read_all(depot)?;
    let status = Status {
        depot: location,
        layout: match depot.layout() {
            Layout::Native => "native".to_owned(),
            Layout::GoRetro => "go-retro".to_owned(),
            Layout::Memory => "memory".to_owned(),
            Layout::Backend(name) => name.to_owned(),
        },
        branch: branch.to_string(),
        head: head.map(|h| h.to_string()),
        checkpoints,
        partitions,
        events,
        partial: depot.partial_filter().map(|f| f.globs().to_vec()),
        consumers,
    };
    if json {
        return Ok(ui.json(&status)?);
    }
    ui.line(format!("depot {} ({})", status.depot, status.layout))?;
    match &status.head {
        Some(head) => ui.line(format!("on {} at {head}", status.branch))?,
        None => ui.line(format!("on {}: no checkpoint yet", status.branch))?,
    }
    ui.line(format!(
        "{} checkpoints, {} partitions, {} events",
        status.checkpoints, status.partitions, status.events
    ))?;
    if let Some(globs) = &status.partial {
        ui.line(format!(
            "partial clone: holds the events of partitions {} only ('retro sync --partitions GLOB SRC DST' fetches more)",
            super::sync::quoted(globs)
        ))?;
    }
    for consumer in &status.consumers {
        let at = consumer.position.as_deref().unwrap_or("(start)");
        match consumer.behind {
            Some(0) => ui.line(format!("consumer {} at {at}: up to date", consumer.name))?,
            Some(n) => ui.line(format!(
                "consumer {} at {at}: {n} checkpoint(s) behind",
                consumer.name
            ))?,
            None => ui.line(format!(
                "consumer {} at {at}: not on HEAD's history (the branch was rewound)",
                consumer.name
            ))?,
        }
    }
    Ok(())
}

//! `retro demo` (what `make demo` runs): the built-in bank domain in a fresh depot.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use depot::Depot;
use engine::{example, Engine};

use super::history;
use crate::args::LogArgs;
use crate::ui::Ui;

pub fn run(keep: Option<PathBuf>, ui: &mut Ui) -> Result<()> {
    let temp;
    let dir = match keep {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir()?;
            temp.path().join(".retro")
        }
    };
    let depot = Arc::new(Depot::init(&dir)?);
    ui.line(format!("$ retro init {}", dir.display()))?;
    let engine = Engine::new(depot.clone(), example::bank_manifest()?);
    let session = engine.start_session()?;
    ui.line(format!("$ retro session start\n{session}"))?;
    for command in example::DEMO_COMMANDS {
        ui.line(format!("$ retro apply --session {session} '{command}'"))?;
        match engine.apply(&session, command.as_bytes()) {
            Ok(applied) => ui.line(applied.checkpoint.to_string())?,
            Err(err) => ui.line(format!(
                "retro: error: {err}   (exit 4: recorded, no ref moved)"
            ))?,
        }
    }
    ui.line("$ retro log --oneline")?;
    let oneline = LogArgs {
        rev: None,
        oneline: true,
        max_count: None,
        reverse: false,
        partition: None,
        all_parents: false,
        graph: false,
        correlation: None,
        command_id: None,
        json: false,
    };
    history::log(&depot, &oneline, ui)?;
    ui.line("$ retro log -n 1")?;
    let last = LogArgs {
        oneline: false,
        max_count: Some(1),
        ..oneline
    };
    history::log(&depot, &last, ui)?;
    ui.line("$ retro events 'accounts/*'")?;
    history::events(
        &depot,
        Some("accounts/*"),
        None,
        history::EventsView {
            json: false,
            upcasters: None,
        },
        ui,
    )?;
    ui.line("$ retro partitions")?;
    history::partitions(&depot, None, false, ui)?;
    ui.line("$ retro failed")?;
    super::maintenance::failed(&depot, false, ui)?;
    ui.line("$ retro fsck")?;
    super::maintenance::fsck(&depot, false, ui)?;
    Ok(())
}

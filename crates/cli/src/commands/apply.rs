//! `retro init`, `retro apply`, `retro session`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde_json::json;

use depot::{Depot, RefName};
use engine::{example, exec, Engine, Manifest};

use super::{depot_dir, open};
use crate::locate::DEFAULT_DIR;
use crate::ui::Ui;

/// The session used when none is given.
pub const DEFAULT_SESSION: &str = "cli";

pub fn init(flag: Option<&Path>, dir: Option<PathBuf>, json: bool, ui: &mut Ui) -> Result<()> {
    let dir = match (dir, flag) {
        (Some(dir), _) => dir,
        (None, Some(flag)) => flag.to_path_buf(),
        (None, None) => PathBuf::from(DEFAULT_DIR),
    };
    let (_, shown) = super::init_location(&dir)?;
    if json {
        ui.json(&json!({"depot": shown}))?;
    } else {
        ui.line(format!("Initialized empty retro depot in {shown}"))?;
    }
    Ok(())
}

/// The domain manifest: `--manifest`/`$RETRO_MANIFEST`, else `<depot>/manifest.json`, else the
/// built-in example bank.
pub fn load_manifest(depot_dir: &Path, flag: Option<&Path>) -> Result<Manifest> {
    let mut manifest = Manifest::new();
    let in_depot = depot_dir.join("manifest.json");
    match flag {
        Some(path) => exec::load_manifest(path, &mut manifest)?,
        None if in_depot.is_file() => exec::load_manifest(&in_depot, &mut manifest)?,
        None => example::register_bank(&mut manifest)?,
    }
    Ok(manifest)
}

fn engine_for(flag: Option<&Path>, manifest: Option<&Path>) -> Result<Engine> {
    let dir = depot_dir(flag)?;
    let depot = open(flag)?;
    let manifest = load_manifest(&dir, manifest)?;
    Ok(Engine::new(depot, manifest))
}

pub fn apply(
    flag: Option<&Path>,
    command: &str,
    session: Option<String>,
    target: Option<String>,
    manifest: Option<PathBuf>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let payload = if command == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(engine::MAX_COMMAND_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .context("could not read the command from stdin")?;
        buf
    } else {
        command.as_bytes().to_vec()
    };
    let mut engine = engine_for(flag, manifest.as_deref())?;
    if let Some(target) = target {
        engine = engine.with_ref(RefName::new(&target)?);
    }
    let session = session.unwrap_or_else(|| DEFAULT_SESSION.to_owned());
    let applied = engine.apply(&session, &payload)?;
    if json {
        // The same body as POST /apply's 201.
        ui.json(&server::api::Applied::from(&applied))?;
    } else {
        ui.line(applied.checkpoint.to_string())?;
    }
    Ok(())
}

pub fn session_start(flag: Option<&Path>, json: bool, ui: &mut Ui) -> Result<()> {
    let depot: Arc<Depot> = open(flag)?;
    let engine = Engine::new(depot, Manifest::new());
    let id = engine.start_session()?;
    if json {
        ui.json(&json!({"session": id}))?;
    } else {
        ui.line(id)?;
    }
    Ok(())
}

pub fn session_end(flag: Option<&Path>, id: &str, ui: &mut Ui) -> Result<()> {
    let depot = open(flag)?;
    let engine = Engine::new(depot, Manifest::new());
    match engine.end_session(id)? {
        engine::SessionEnd::Ended => ui.line(format!("ended session {id}"))?,
        engine::SessionEnd::AlreadyEnded => {
            ui.line(format!("session {id} had already ended; nothing written"))?
        }
    }
    Ok(())
}

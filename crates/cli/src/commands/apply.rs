//! `retro init`, `retro apply` (one command; `--batch` hands the stream to [`super::batch`]),
//! `retro session`, `retro snapshot`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde_json::json;

use depot::{Depot, RefName};
use engine::{example, exec, Engine, Manifest, SnapshotOutcome};

use super::{depot_dir, open};
use crate::error::Usage;
use crate::locate::DEFAULT_DIR;
use crate::ui::Ui;

/// The session used when none is given.
pub const DEFAULT_SESSION: &str = "cli";

pub fn init(
    flag: Option<&Path>,
    dir: Option<PathBuf>,
    sealed: bool,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let dir = match (dir, flag) {
        (Some(dir), _) => dir,
        (None, Some(flag)) => flag.to_path_buf(),
        (None, None) => PathBuf::from(DEFAULT_DIR),
    };
    let (depot, shown) = super::init_location(&dir)?;
    if !sealed {
        depot.configure_events(false)?;
    }
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

/// `retro snapshot GLOB`: snapshots now, one line (or JSON object) per matching partition.
pub fn snapshot(
    flag: Option<&Path>,
    glob: &str,
    manifest: Option<&Path>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let engine = engine_for(flag, manifest)?;
    for made in engine.snapshot_now(glob)? {
        let partition = made.partition;
        match made.outcome {
            SnapshotOutcome::Taken {
                version,
                domain,
                bytes,
            } => {
                if json {
                    ui.json(&json!({"partition": partition, "taken": true, "version": version, "domain": domain, "bytes": bytes}))?;
                } else {
                    ui.line(format!(
                        "{partition}: snapshot at version {version} ({bytes} bytes)"
                    ))?;
                }
            }
            SnapshotOutcome::Current { version } => {
                if json {
                    ui.json(&json!({"partition": partition, "taken": false, "version": version, "reason": "current"}))?;
                } else {
                    ui.line(format!(
                        "{partition}: snapshot at version {version} is current"
                    ))?;
                }
            }
            SnapshotOutcome::Skipped(reason) => {
                if json {
                    ui.json(&json!({"partition": partition, "taken": false, "reason": reason}))?;
                } else {
                    ui.line(format!("{partition}: skipped: {reason}"))?;
                }
            }
        }
    }
    Ok(())
}

/// What `retro apply` is given besides the depot: the command (or `--batch`), the session, the
/// ref, the manifest and the output form.
pub struct ApplyArgs {
    /// The command JSON, `-` for stdin; `None` with `batch`.
    pub command: Option<String>,
    /// Read a stream of commands on stdin (`retro apply --batch`).
    pub batch: bool,
    /// `--session`.
    pub session: Option<String>,
    /// `--ref`.
    pub target: Option<String>,
    /// `--manifest`.
    pub manifest: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--id`, `--correlation-id`, `--causation-id`.
    pub ids: engine::CommandIds,
}

pub fn apply(flag: Option<&Path>, args: ApplyArgs, ui: &mut Ui) -> Result<()> {
    let payload = match args.command.as_deref() {
        // clap refuses a command with --batch and requires one without it.
        None if args.batch => None,
        None => return Err(Usage("retro apply needs a COMMAND, - or --batch".to_owned()).into()),
        Some(_) if args.batch => {
            return Err(Usage(
                "retro apply --batch reads its commands from stdin; give no COMMAND".to_owned(),
            )
            .into())
        }
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(engine::MAX_COMMAND_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .context("could not read the command from stdin")?;
            Some(buf)
        }
        Some(command) => Some(command.as_bytes().to_vec()),
    };
    let mut engine = engine_for(flag, args.manifest.as_deref())?;
    if let Some(target) = args.target {
        engine = engine.with_ref(RefName::new(&target)?);
    }
    let session = args.session.unwrap_or_else(|| DEFAULT_SESSION.to_owned());
    let Some(payload) = payload else {
        // One engine for the whole stream.
        let stdin = std::io::stdin();
        return Ok(super::batch::run(
            &engine,
            &session,
            args.json,
            stdin.lock(),
            ui,
        )?);
    };
    // As an ApplyError, like every failure of an apply (its hint and exit code).
    let command = engine::Command::parse(&payload)
        .and_then(|command| command.with_ids(args.ids))
        .map_err(engine::ApplyError::from)?;
    let applied = engine.apply_command(&session, command)?;
    if args.json {
        // The same body as POST /apply's 201.
        ui.json(&server::api::Applied::from(&applied))?;
    } else {
        ui.line(applied.checkpoint.to_string())?;
        if applied.replayed {
            crate::ui::status(
                "command id already applied: nothing written; that is its checkpoint",
            );
        }
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

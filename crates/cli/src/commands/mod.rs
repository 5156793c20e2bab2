//! One module per group of subcommands; each takes parsed arguments and the [`Ui`].

mod apply;
mod batch;
mod bisect;
mod blame;
mod branch;
mod config;
mod demo;
mod group;
mod history;
mod log_graph;
mod maintenance;
mod objects;
mod project;
mod proofs;
mod refs;
mod serve;
mod status;
mod sync;
mod test;
mod transfer;
mod verify;
mod verify_signatures;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use depot::{Depot, ObjectId};

pub use batch::BatchError;
pub use branch::merge_hint;
pub use config::BadSigningKey;
pub use project::ProjectionsParked;
pub use verify_signatures::SignaturesFailed;

use crate::args::{
    BisectCommand, Cli, Commands, ConfigCommand, GroupCommand, ProjectCommand, SessionCommand,
};
use crate::locate;
use crate::ui::Ui;

/// A command whose handler emitted nothing wrote nothing: that is an outcome, not an error.
/// It says so on stderr and exits 0; `--json` prints `{"written":false,…}`.
fn nothing_written(result: Result<()>, json: bool, ui: &mut Ui) -> Result<()> {
    let Err(err) = result else { return Ok(()) };
    let Some(body) = err
        .downcast_ref::<engine::ApplyError>()
        .and_then(server::api::NothingWritten::from_error)
    else {
        return Err(err);
    };
    if json {
        ui.json(&body)?;
    } else {
        crate::ui::status(format!(
            "nothing written: '{}' on '{}' emitted no events (no checkpoint, no ref moved)",
            depot::shown(&body.command),
            depot::shown(&body.path)
        ));
    }
    Ok(())
}

/// The upcasters `--upcast` applies: those of the domain manifest (`--manifest`, else
/// `$RETRO_MANIFEST`, else `<depot>/manifest.json`, else the built-in bank, which has none);
/// `None` without `--upcast`.
fn upcasters_for(
    flag: Option<&Path>,
    upcast: bool,
    manifest: Option<&Path>,
) -> Result<Option<engine::Upcasters>> {
    if !upcast {
        return Ok(None);
    }
    let from_env = std::env::var_os("RETRO_MANIFEST").map(PathBuf::from);
    let manifest = manifest.or(from_env.as_deref());
    let dir = locate::depot_dir(flag)?;
    Ok(Some(
        apply::load_manifest(&dir, manifest)?.upcasters().clone(),
    ))
}

/// Runs the parsed command line.
pub fn run(cli: Cli, ui: &mut Ui) -> Result<()> {
    let depot_flag = cli.depot.clone();
    let flag = depot_flag.as_deref();
    match cli.command {
        Commands::Init { dir, events, json } => {
            apply::init(flag, dir, events == "sealed", json, ui)
        }
        Commands::Apply {
            command,
            batch,
            session,
            target,
            manifest,
            json,
            command_id,
            correlation_id,
            causation_id,
        } => nothing_written(
            apply::apply(
                flag,
                apply::ApplyArgs {
                    command,
                    batch,
                    session,
                    target,
                    manifest,
                    json,
                    ids: engine::CommandIds {
                        id: command_id,
                        correlation_id,
                        causation_id,
                    },
                },
                ui,
            ),
            json,
            ui,
        ),
        Commands::Session(SessionCommand::Start { json }) => apply::session_start(flag, json, ui),
        Commands::Session(SessionCommand::End { id }) => apply::session_end(flag, &id, ui),
        Commands::Group(GroupCommand::Run {
            name,
            glob,
            member,
            lease_ms,
            slots,
            since,
            target,
            idle_exit,
            json,
        }) => group::run(
            &open(flag)?,
            &group::RunArgs {
                name,
                glob: glob.unwrap_or_else(|| "**".to_owned()),
                member,
                lease_ms,
                slots,
                since,
                target,
                idle_exit,
                json,
            },
            ui,
        ),
        Commands::Group(GroupCommand::Status { name, json }) => {
            group::status(&*open(flag)?, name.as_deref(), json, ui)
        }
        Commands::Log(args) => history::log(&*open(flag)?, &args, ui),
        Commands::CatObject(args) => objects::cat(&*open(flag)?, &args, ui),
        Commands::Show {
            rev,
            json,
            upcast,
            manifest,
        } => {
            let upcasters = upcasters_for(flag, upcast, manifest.as_deref())?;
            history::show(&*open(flag)?, rev.as_deref(), json, upcasters.as_ref(), ui)
        }
        Commands::Events {
            glob,
            since,
            at,
            json,
            upcast,
            manifest,
        } => {
            let upcasters = upcasters_for(flag, upcast, manifest.as_deref())?;
            let view = history::EventsView {
                json,
                upcasters: upcasters.as_ref(),
            };
            match at {
                Some(at) => history::events_at(
                    &*open(flag)?,
                    glob.as_deref(),
                    &at,
                    since.as_deref(),
                    view,
                    ui,
                ),
                None => history::events(&*open(flag)?, glob.as_deref(), since.as_deref(), view, ui),
            }
        }
        Commands::Partitions { glob, at, json } => match at {
            Some(at) => history::partitions_at(&*open(flag)?, glob.as_deref(), &at, json, ui),
            None => history::partitions(&*open(flag)?, glob.as_deref(), json, ui),
        },
        Commands::Refs { json } => refs::list(&*open(flag)?, json, ui),
        Commands::UpdateRef {
            delete,
            name,
            new,
            old,
            message,
        } => refs::update(
            &*open(flag)?,
            delete,
            &name,
            new.as_deref(),
            old.as_deref(),
            &message,
            ui,
        ),
        Commands::Reflog { name, json } => refs::reflog(&*open(flag)?, name.as_deref(), json, ui),
        Commands::Fsck { json } => maintenance::fsck(&*open(flag)?, json, ui),
        Commands::Prove { event, at } => proofs::prove(&*open(flag)?, &event, at.as_deref(), ui),
        Commands::VerifyProof {
            file,
            trusted,
            json,
        } => proofs::verify_proof(&file, trusted.as_deref(), json, ui),
        Commands::Snapshot {
            glob,
            manifest,
            json,
        } => apply::snapshot(flag, &glob, manifest.as_deref(), json, ui),
        Commands::Redact {
            events,
            reason,
            session,
            json,
        } => maintenance::redact(
            &*open(flag)?,
            &events,
            &reason,
            session.as_deref().unwrap_or("cli"),
            json,
            ui,
        ),
        Commands::Gc { prune, json } => maintenance::gc(&*open(flag)?, prune.as_deref(), json, ui),
        Commands::Reindex => maintenance::reindex(&*open(flag)?, ui),
        Commands::Status { json } => {
            let location = depot_dir(flag)?;
            let depot = open_location(&location)?;
            status::status(
                &depot,
                shown_location(&locate::contained(&location)),
                json,
                ui,
            )
        }
        Commands::Repair { json } => maintenance::repair(&*open(flag)?, json, ui),
        Commands::Failed { json } => maintenance::failed(&*open(flag)?, json, ui),
        Commands::Export { rev, output } => {
            transfer::export(&*open(flag)?, rev.as_deref(), output.as_deref(), ui)
        }
        Commands::Import { file, batch, json } => {
            transfer::import(&*open(flag)?, file.as_deref(), batch, json, ui)
        }
        Commands::Sync {
            src,
            dst,
            force,
            partitions,
            batch,
            json,
        } => sync::sync(&src, &dst, force, &partitions, batch, json, ui),
        Commands::Clone {
            src,
            dst,
            partitions,
            batch,
            json,
        } => sync::clone(&src, &dst, &partitions, batch, json, ui),
        Commands::Demo { keep } => demo::run(keep, ui),
        Commands::Test { spec, manifest } => test::run(&spec, manifest.as_deref(), ui),
        Commands::Watch {
            glob,
            since,
            all,
            consumer,
            target,
            idle_exit,
            json,
        } => watch::run(
            &*open(flag)?,
            &watch::WatchArgs {
                glob: glob.unwrap_or_else(|| "**".to_owned()),
                since,
                all,
                consumer,
                target,
                idle_exit,
                json,
            },
            ui,
        ),
        Commands::Project(command) => match command {
            ProjectCommand::Run {
                names,
                once,
                manifest,
            } => project::run(flag, &names, once, manifest.as_deref()),
            ProjectCommand::Status {
                name,
                manifest,
                json,
            } => project::status(flag, name.as_deref(), manifest.as_deref(), json, ui),
            ProjectCommand::Rebuild {
                name,
                manifest,
                json,
            } => project::rebuild(flag, &name, manifest.as_deref(), json, ui),
            ProjectCommand::Retry {
                name,
                generation,
                json,
            } => project::retry(&*open(flag)?, &name, generation, json, ui),
        },
        Commands::Serve {
            projections,
            listen,
            token,
            read_token,
            admin_token,
            manifest,
            allow_hosts,
            header_timeout,
            request_timeout,
        } => serve::run(
            flag,
            serve::Options {
                listen,
                tokens: server::Tokens {
                    read: read_token,
                    write: token,
                    admin: admin_token,
                },
                manifest,
                projections,
                allow_hosts,
                header_timeout: std::time::Duration::from_secs(header_timeout),
                request_timeout: std::time::Duration::from_secs(request_timeout),
            },
        ),
        Commands::Verify {
            range,
            manifest: _,
            json,
            signatures: true,
            trusted_keys,
        } => verify_signatures::run(&*open(flag)?, range.as_deref(), &trusted_keys, json, ui),
        Commands::Verify {
            range,
            manifest,
            json,
            ..
        } => verify::run(flag, range.as_deref(), manifest.as_deref(), json, ui),
        Commands::Branch {
            name,
            rev,
            list: _,
            json,
        } => branch::branch(&*open(flag)?, name.as_deref(), rev.as_deref(), json, ui),
        Commands::Switch { name, create } => branch::switch(&*open(flag)?, &name, create),
        Commands::Merge {
            rev,
            session,
            manifest,
            json,
        } => branch::merge(
            flag,
            &rev,
            session.as_deref(),
            manifest.as_deref(),
            json,
            ui,
        ),
        Commands::Config(ConfigCommand::SigningKey {
            path,
            generate,
            unset,
            json,
        }) => config::signing_key(
            &depot_dir(flag)?,
            path.as_deref(),
            generate,
            unset,
            json,
            ui,
        ),
        Commands::Blame { partition, json } => blame::run(&*open(flag)?, &partition, json, ui),
        Commands::Bisect(BisectCommand::Run { good, bad, cmd }) => {
            bisect::run(flag, &good, &bad, &cmd, ui)
        }
        Commands::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "retro", ui.out());
            Ok(())
        }
        Commands::Help { command } => help(&command, ui),
    }
}

fn help(path: &[String], ui: &mut Ui) -> Result<()> {
    let mut command = Cli::command();
    // Building propagates the binary name, so usage lines read `retro apply`, not `apply`.
    command.build();
    let mut current = &mut command;
    for name in path {
        current = current.find_subcommand_mut(name).ok_or_else(|| {
            crate::error::Usage(format!(
                "no such command '{}'; see 'retro help'",
                depot::shown(name)
            ))
        })?;
    }
    let text = current.render_long_help().to_string();
    ui.line(text.trim_end())?;
    Ok(())
}

/// The depot directory per `--depot`, `$RETRO_DEPOT`, or the nearest `.retro`.
pub fn depot_dir(flag: Option<&Path>) -> Result<PathBuf> {
    locate::depot_dir(flag)
}

/// Opens the depot: a directory, or a `postgres://` URL.
pub fn open(flag: Option<&Path>) -> Result<Arc<Depot>> {
    let dir = depot_dir(flag)?;
    Ok(Arc::new(open_location(&dir)?))
}

/// Opens a depot named by a directory or a `postgres://` URL. The depot's warnings (a derived
/// index replaced or stood in for) are shown on stderr as `retro: warning: …` lines.
pub fn open_location(location: &Path) -> Result<Depot> {
    let depot = open_location_unsigned(location)?;
    config::load_signer(&depot)?;
    Ok(depot)
}

/// [`open_location`] without loading the signing key (`retro config signing-key` fixes a bad one).
fn open_location_unsigned(location: &Path) -> Result<Depot> {
    let location = &locate::contained(location);
    let depot = if let Some(url) = postgres_url(location) {
        depot_postgres::open(url)?
    } else {
        if !location.exists() {
            return Err(anyhow::Error::new(crate::error::NoDepot(
                location.to_path_buf(),
            )));
        }
        Depot::open_with(location, depot_options()?)?
    };
    depot.on_warning(|warning| crate::ui::status(format!("retro: warning: {warning}")));
    Ok(depot)
}

/// How a files depot is opened: `$RETRO_LOCK_TIMEOUT` (seconds, fractions allowed) is how long
/// a writer waits for the depot lock before failing as unavailable (default 30).
fn depot_options() -> Result<depot::Options, crate::error::BadLockTimeout> {
    let mut options = depot::Options::default();
    if let Some(value) = std::env::var_os("RETRO_LOCK_TIMEOUT").filter(|v| !v.is_empty()) {
        let text = value.to_string_lossy().into_owned();
        options.lock_timeout = text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
            .ok_or(crate::error::BadLockTimeout(text))?;
    }
    Ok(options)
}

/// Creates a depot at a directory (made absolute, so that a relative `.retro` has a parent to
/// start from) or a `postgres://` URL; returns it and how to show its location.
pub fn init_location(location: &Path) -> Result<(Depot, String)> {
    if let Some(url) = postgres_url(location) {
        return Ok((depot_postgres::init(url)?, shown_location(location)));
    }
    let dir = std::path::absolute(location)
        .with_context(|| format!("could not resolve '{}'", location.display()))?;
    let depot = Depot::init(&dir)?;
    Ok((depot, shown_location(&dir)))
}

/// The URL, when `location` names a PostgreSQL depot.
pub fn postgres_url(location: &Path) -> Option<&str> {
    location.to_str().filter(|s| depot_postgres::is_url(s))
}

/// How a depot location is shown: a canonical directory, or a URL without its password.
pub fn shown_location(location: &Path) -> String {
    match postgres_url(location) {
        Some(url) => depot_postgres::redact(url),
        None => location
            .canonicalize()
            .unwrap_or_else(|_| location.to_path_buf())
            .display()
            .to_string(),
    }
}

/// Resolves a revision, defaulting to HEAD, with a clear error when HEAD is unborn.
pub fn resolve(depot: &Depot, rev: Option<&str>) -> Result<ObjectId> {
    let rev = rev.unwrap_or("HEAD");
    if rev == "HEAD" && depot.head()?.is_none() {
        anyhow::bail!("the depot has no checkpoints yet (HEAD is unborn); apply a command first");
    }
    Ok(depot.resolve_revision(rev)?)
}

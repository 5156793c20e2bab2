//! `retro-peers`: measures the peers retro is compared against, on retro's workload, in the
//! same run and on the same disk.
//!
//! The workload (see [`workload`]) is the one retro is benchmarked on: one command is 3 events
//! of ~60-byte JSON over 2 partitions, an affix and a checkpoint whose message is the command.
//! The peers are the disk itself ([`fsync`]), SQLite ([`sqlite`]) and Git ([`git`]). Each
//! figure is printed on stdout as one JSON object per line, e.g.
//! `{"peer":"sqlite","figure":"durable_commit","unit":"commands/s","value":2100.5,"n":2000}`;
//! progress goes to stderr. The machines this runs on are noisy, so compare retro with peers
//! measured in the same run, as ratios.

mod fsync;
mod git;
mod report;
mod sqlite;
mod workload;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::report::Report;

/// Measures retro's peers (the disk, SQLite, Git) on retro's workload.
#[derive(Debug, Parser)]
#[command(name = "retro-peers", version, about)]
struct Cli {
    /// Directory in which the scratch directory is created and removed afterwards (default: the
    /// current directory, as fsync costs depend on the filesystem).
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Small sizes, in place of any size flags: a 20,000-event SQLite read database, 10,000
    /// fast-imported commands, 200 durable Git commands.
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    command: Peer,
}

#[derive(Debug, Subcommand)]
enum Peer {
    /// The disk: append + fdatasync, overwrite + fdatasync, lock-file ref updates.
    Fsync(fsync::Args),
    /// SQLite WAL: one transaction per command checking the head (synchronous FULL and NORMAL),
    /// and batched commands per transaction.
    SqliteDurable(sqlite::DurableArgs),
    /// SQLite: read one 10-event partition from a large and a small database; size; walks.
    SqliteRead(sqlite::ReadArgs),
    /// Git: fast-import of the workload, size before and after gc, history walks.
    GitBulk(git::BulkArgs),
    /// Git: per-command plumbing loop with core.fsync=all (long-lived processes, and one process
    /// per step).
    GitDurable(git::DurableArgs),
    /// Everything, one after the other, with default (or, with --quick, small) sizes.
    All,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let parent = cli.dir.unwrap_or_else(|| PathBuf::from("."));
    let scratch = tempfile::Builder::new()
        .prefix(".retro-peers-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
    let mut report = Report::printing();
    let peers = if cli.quick {
        cli.command.quick()
    } else {
        vec![cli.command]
    };
    let result = peers
        .into_iter()
        .try_for_each(|peer| run(peer, scratch.path(), &mut report));
    let closed = scratch.close();
    result?;
    closed.context("removing the scratch directory")
}

fn run(peer: Peer, scratch: &Path, report: &mut Report) -> Result<()> {
    match peer {
        Peer::Fsync(args) => fsync::run(&args, &stage(scratch, "fsync")?, report),
        Peer::SqliteDurable(args) => {
            sqlite::run_durable(&args, &stage(scratch, "sqlite-durable")?, report)
        }
        Peer::SqliteRead(args) => sqlite::run_read(&args, &stage(scratch, "sqlite-read")?, report),
        Peer::GitBulk(args) => git::run_bulk(&args, &stage(scratch, "git-bulk")?, report),
        Peer::GitDurable(args) => git::run_durable(&args, &stage(scratch, "git-durable")?, report),
        Peer::All => everything(false)
            .into_iter()
            .try_for_each(|peer| run(peer, scratch, report)),
    }
}

impl Peer {
    /// The same measurement with the quick sizes (for `all`: every measurement, quick).
    fn quick(self) -> Vec<Self> {
        match self {
            Self::Fsync(_) => vec![Self::Fsync(fsync::Args::quick())],
            Self::SqliteDurable(_) => vec![Self::SqliteDurable(sqlite::DurableArgs::quick())],
            Self::SqliteRead(_) => vec![Self::SqliteRead(sqlite::ReadArgs::quick())],
            Self::GitBulk(_) => vec![Self::GitBulk(git::BulkArgs::quick())],
            Self::GitDurable(_) => vec![Self::GitDurable(git::DurableArgs::quick())],
            Self::All => everything(true),
        }
    }
}

/// Every measurement, with the default or the quick sizes.
fn everything(quick: bool) -> Vec<Peer> {
    if quick {
        vec![
            Peer::Fsync(fsync::Args::quick()),
            Peer::SqliteDurable(sqlite::DurableArgs::quick()),
            Peer::SqliteRead(sqlite::ReadArgs::quick()),
            Peer::GitBulk(git::BulkArgs::quick()),
            Peer::GitDurable(git::DurableArgs::quick()),
        ]
    } else {
        vec![
            Peer::Fsync(fsync::Args::default()),
            Peer::SqliteDurable(sqlite::DurableArgs::default()),
            Peer::SqliteRead(sqlite::ReadArgs::default()),
            Peer::GitBulk(git::BulkArgs::default()),
            Peer::GitDurable(git::DurableArgs::default()),
        ]
    }
}

/// A fresh directory for one peer inside the scratch directory.
fn stage(scratch: &Path, name: &str) -> Result<PathBuf> {
    let dir = scratch.join(name);
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

//! What the class rounds (`syskill`, `serve`, `refs`, `flips`, `diskfull`) share with the driver
//! in `main`: the [`Ctx`] a round works with and the run's [`Tally`]. It lives in its own module so
//! that the class modules do not depend on the crate root that calls them (no module cycle):
//! `check`, `round` ← `class` ← the class modules ← `main`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::check::Ack;
use crate::round::Setup;

/// What a class round works with.
pub struct Ctx<'a> {
    /// The binaries.
    pub setup: &'a Setup,
    /// The round's depot.
    pub dir: &'a Path,
    /// A scratch directory beside it (mirrors, copies, import files).
    pub tmp: &'a Path,
    /// The round's tag (`r12`), a prefix of every command id it makes.
    pub tag: &'a str,
    /// Every command acknowledged on this depot before the round.
    pub prior: &'a [Ack],
}

impl Ctx<'_> {
    /// A `retro-torture writer` on this round's depot, committing under ids that start with
    /// `prefix`, from `seed`; callers add `--limit`, `--threads` and how to run it.
    pub fn writer(&self, prefix: &str, seed: u64) -> std::process::Command {
        let mut command = std::process::Command::new(&self.setup.me);
        command
            .arg("writer")
            .arg("--depot")
            .arg(self.dir)
            .arg("--prefix")
            .arg(prefix)
            .arg("--seed")
            .arg(seed.to_string());
        command
    }
}

/// Counters over the whole run, for the summary.
#[derive(Default)]
pub struct Tally {
    /// Kill points exercised: command → syscall → kills.
    pub kill_points: BTreeMap<String, BTreeMap<String, u64>>,
    /// Injections whose N-th syscall never came (the command finished).
    pub kill_missed: u64,
    /// POST /apply requests answered 2xx by a long-lived server.
    pub posts: u64,
    /// `retro gc` runs beside a long-lived server and watcher.
    pub serve_gcs: u64,
    /// Checkpoints a long-lived watcher printed.
    pub watched: u64,
    /// Ref moves that succeeded in the refs class.
    pub ref_moves: u64,
    /// Ref moves refused as name clashes (as expected).
    pub ref_clashes: u64,
    /// Invalid ref names refused (as expected).
    pub ref_invalid: u64,
    /// Bits flipped.
    pub flips: u64,
    /// Flip runs (each on its own copy).
    pub flip_runs: u64,
    /// Flip runs after which `retro gc` succeeded (and so kept every intact object).
    pub flip_gc_ok: u64,
    /// Disk-full runs.
    pub diskfull_runs: u64,
    /// Commands that failed for want of space (cleanly).
    pub enospc: u64,
    /// Why the syskill class could not run.
    pub syskill_skipped: Option<String>,
    /// Why the disk-full class could not run, once.
    pub diskfull_skipped: Option<String>,
}

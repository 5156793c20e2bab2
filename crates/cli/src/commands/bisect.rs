//! `retro bisect run --good REV --bad REV -- CMD...`: finds the first checkpoint, on the
//! first-parent line from GOOD (exclusive) to BAD, where CMD turns bad, in O(log n) runs of CMD.
//! CMD runs with `RETRO_REV` (the checkpoint's full id) and `RETRO_DEPOT` (this depot) set, its
//! stdout sent to stderr so that stdout carries only the steps and the result. Exit 0 is good,
//! 125 skips the checkpoint (as `git bisect run`), anything else, a death by signal included, is
//! bad. GOOD and BAD are taken at their word: CMD is not run on them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};

use depot::{Depot, HistoryOrder, ObjectId};

use super::{depot_dir, open_location, postgres_url};
use crate::locate;
use crate::render;
use crate::ui::Ui;

/// The exit code that skips a checkpoint (git's).
pub const SKIP: i32 = 125;

/// Why a bisection could not run or could not decide.
#[derive(Debug, thiserror::Error)]
pub enum BisectError {
    /// GOOD is not on BAD's first-parent history.
    #[error("--good {} is not an ancestor of --bad {} on its first-parent line", depot::shown(.good), depot::shown(.bad))]
    NotAnAncestor {
        /// As given.
        good: String,
        /// As given.
        bad: String,
    },
    /// GOOD and BAD are one checkpoint.
    #[error("--good and --bad are the same checkpoint {0}: there is nothing to bisect")]
    Same(ObjectId),
    /// CMD could not be started.
    #[error("could not start '{}'", depot::shown(.program))]
    CannotStart {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every candidate left was skipped.
    #[error("only skipped checkpoints are left: the first bad one is one of {}", .candidates.join(", "))]
    OnlySkipped {
        /// The candidates, oldest first (the last is known bad).
        candidates: Vec<String>,
    },
}

/// What one run of CMD said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Good,
    Bad,
    Skip,
}

fn resolve_checkpoint(depot: &Depot, flag: &str, rev: &str) -> Result<ObjectId> {
    let id = depot
        .resolve_revision(rev)
        .with_context(|| format!("--{flag} {}", depot::shown(rev)))?;
    depot
        .read_checkpoint(&id)
        .with_context(|| format!("--{flag} {}", depot::shown(rev)))?;
    Ok(id)
}

/// The value of `RETRO_DEPOT` for CMD: the URL as given, or the depot's absolute directory.
fn depot_env(location: &Path) -> PathBuf {
    if postgres_url(location).is_some() {
        return location.to_path_buf();
    }
    let contained = locate::contained(location);
    contained
        .canonicalize()
        .or_else(|_| std::path::absolute(&contained))
        .unwrap_or(contained)
}

fn run_check(cmd: &[String], id: &ObjectId, depot: &Path) -> Result<(Answer, String)> {
    let Some((program, args)) = cmd.split_first() else {
        return Err(crate::error::Usage("retro bisect run needs a CMD after --".to_owned()).into());
    };
    let status = Command::new(program)
        .args(args)
        .env("RETRO_REV", id.to_string())
        .env("RETRO_DEPOT", depot)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| BisectError::CannotStart {
            program: program.clone(),
            source,
        })?;
    Ok(match status.code() {
        Some(0) => (Answer::Good, "exit 0".to_owned()),
        Some(SKIP) => (Answer::Skip, format!("exit {SKIP}")),
        Some(code) => (Answer::Bad, format!("exit {code}")),
        None => {
            #[cfg(unix)]
            let how = {
                use std::os::unix::process::ExitStatusExt;
                status.signal().map_or("no exit code".to_owned(), |s| {
                    format!("killed by signal {s}")
                })
            };
            #[cfg(not(unix))]
            let how = "no exit code".to_owned();
            (Answer::Bad, how)
        }
    })
}

/// The untested candidate nearest the middle of `lo+1..hi` (indices into the line), if any.
fn pick(lo: Option<usize>, hi: usize, skipped: &BTreeSet<usize>) -> Option<usize> {
    let first = lo.map_or(0, |l| l + 1);
    if first >= hi {
        return None;
    }
    let mid = first + (hi - first) / 2;
    (0..hi - first)
        .flat_map(|d| [mid.checked_sub(d), mid.checked_add(d)])
        .flatten()
        .find(|&i| i >= first && i < hi && !skipped.contains(&i))
}

fn steps_left(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

pub fn run(flag: Option<&Path>, good: &str, bad: &str, cmd: &[String], ui: &mut Ui) -> Result<()> {
    let location = depot_dir(flag)?;
    let depot = open_location(&location)?;
    let good_id = resolve_checkpoint(&depot, "good", good)?;
    let bad_id = resolve_checkpoint(&depot, "bad", bad)?;
    if good_id == bad_id {
        return Err(BisectError::Same(good_id).into());
    }
    // BAD's first parents back to GOOD, then oldest first: line[0] follows GOOD, the last is BAD.
    let mut line = Vec::new();
    let mut found = false;
    depot.walk_ids(bad_id, HistoryOrder::FirstParent, |entry| {
        if entry.id == good_id {
            found = true;
            return Ok(false);
        }
        line.push(entry.id);
        Ok(true)
    })?;
    if !found {
        return Err(BisectError::NotAnAncestor {
            good: good.to_owned(),
            bad: bad.to_owned(),
        }
        .into());
    }
    line.reverse();
    let env_depot = depot_env(&location);
    let mut lo: Option<usize> = None;
    let mut hi = line.len() - 1;
    let mut skipped = BTreeSet::new();
    let mut step = 0;
    ui.line(format!(
        "bisecting {} checkpoint(s) between {} (good) and {} (bad): about {} step(s)",
        line.len(),
        good_id.to_short_hex(12),
        bad_id.to_short_hex(12),
        steps_left(hi - lo.map_or(0, |l| l + 1))
    ))?;
    while let Some(at) = pick(lo, hi, &skipped) {
        step += 1;
        let id = line[at];
        let checkpoint = depot.read_checkpoint(&id)?;
        ui.flush()?;
        let (answer, how) = run_check(cmd, &id, &env_depot)?;
        match answer {
            Answer::Good => lo = Some(at),
            Answer::Bad => hi = at,
            Answer::Skip => {
                skipped.insert(at);
            }
        }
        let first = lo.map_or(0, |l| l + 1);
        let left = (first..hi).filter(|i| !skipped.contains(i)).count();
        ui.line(format!(
            "step {step}: {} {} -> {} ({how}); {left} left to test, about {} step(s)",
            id.to_short_hex(12),
            depot::escape_invisible(&render::summary(checkpoint.message())),
            match answer {
                Answer::Good => "good",
                Answer::Bad => "bad",
                Answer::Skip => "skip",
            },
            steps_left(left)
        ))?;
    }
    let first = lo.map_or(0, |l| l + 1);
    if (first..hi).any(|i| skipped.contains(&i)) {
        let candidates: Vec<String> = (first..=hi).map(|i| line[i].to_string()).collect();
        for c in &candidates {
            ui.line(format!("candidate {c}"))?;
        }
        return Err(BisectError::OnlySkipped { candidates }.into());
    }
    let id = line[hi];
    let checkpoint = depot.read_checkpoint(&id)?;
    ui.line(format!("{id} is the first bad checkpoint"))?;
    ui.line(format!(
        "Session: {}",
        depot::escape_invisible(checkpoint.session())
    ))?;
    ui.line(format!("Date:    {}", render::date_text(&checkpoint)))?;
    ui.line(format!(
        "    {}",
        depot::escape_invisible(&String::from_utf8_lossy(checkpoint.message()))
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pick_halves_and_steps_around_skipped_checkpoints() {
        let none = BTreeSet::new();
        assert_eq!(pick(None, 8, &none), Some(4));
        assert_eq!(pick(Some(3), 4, &none), None);
        let skipped: BTreeSet<usize> = [4].into();
        assert_eq!(pick(None, 8, &skipped), Some(3));
        let all: BTreeSet<usize> = (0..8).collect();
        assert_eq!(pick(None, 8, &all), None);
        assert_eq!(steps_left(0), 0);
        assert_eq!(steps_left(7), 3);
    }
}

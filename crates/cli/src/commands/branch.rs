//! `retro branch`, `retro switch`, `retro merge`: branches are refs under `refs/heads/`, the
//! current one is where `HEAD` points, and a merge moves the current branch once (see
//! docs/branches.md and `engine::merge`).

use std::path::Path;

use anyhow::{bail, Result};
use depot::{Depot, Expected, LogInfo, ObjectId, RefEdit, RefName, RefValue};
use engine::merge::{MergeError, MergeOutcome};
use server::api::{BranchEntry, MergeResult};

use super::{depot_dir, open, resolve};
use crate::error::{NoSuchRef, RefExists};
use crate::ui::Ui;

/// `NAME` or `refs/heads/NAME`, validated as a ref name (the rule `POST /branches` shares:
/// `server::branches::branch_ref`).
pub fn branch_ref(name: &str) -> Result<RefName> {
    Ok(server::branches::branch_ref(name)?)
}

/// The branch `HEAD` points at (it may be unborn).
fn current_branch(depot: &Depot) -> Result<RefName> {
    match depot.read_ref(&RefName::head())? {
        Some(RefValue::Symbolic(target)) => Ok(target),
        // A depot without a HEAD file (go-retro's) is on master.
        None => Ok(RefName::master()),
        Some(RefValue::Direct(id)) => {
            bail!("HEAD is detached at {id}, not on a branch; 'retro switch BRANCH' first")
        }
    }
}

fn create(depot: &Depot, name: &RefName, at: ObjectId) -> Result<()> {
    if let Some(value) = depot.read_ref(name)? {
        return Err(RefExists {
            name: name.to_string(),
            holds: value.to_string(),
        }
        .into());
    }
    depot.update_refs(&[RefEdit {
        name: name.clone(),
        expected: Expected::MustNotExist,
        new: Some(RefValue::Direct(at)),
        log: LogInfo {
            session: "cli".to_owned(),
            message: "branch: created".to_owned(),
        },
    }])?;
    Ok(())
}

/// `retro branch NAME [REV]` and `retro branch --list`.
pub fn branch(
    depot: &Depot,
    name: Option<&str>,
    rev: Option<&str>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let Some(name) = name else {
        let current = current_branch(depot).ok();
        for (ref_name, value) in depot.list_refs("refs/heads/")? {
            let Some(id) = value.id() else { continue };
            let short = ref_name
                .as_str()
                .strip_prefix("refs/heads/")
                .unwrap_or(ref_name.as_str())
                .to_owned();
            let is_current = current.as_ref() == Some(&ref_name);
            if json {
                // The body of `GET /branches`, one a line.
                ui.json(&BranchEntry::new(&ref_name, &id, is_current))?;
            } else {
                let mark = if is_current { "*" } else { " " };
                ui.line(format!(
                    "{mark} {short} {}",
                    ui.yellow(&id.to_short_hex(12))
                ))?;
            }
        }
        return Ok(());
    };
    let name = branch_ref(name)?;
    let at = resolve(depot, rev)?;
    create(depot, &name, at)?;
    if json {
        ui.json(&serde_json::json!({"ref": name.to_string(), "checkpoint": at.to_string()}))?;
    } else {
        ui.line(format!("{name} {}", at))?;
    }
    Ok(())
}

/// `retro switch [-c] NAME`: points `HEAD` at the branch.
pub fn switch(depot: &Depot, name: &str, create_it: bool) -> Result<()> {
    let name = branch_ref(name)?;
    if create_it {
        let at = resolve(depot, None)?;
        create(depot, &name, at)?;
    } else if depot.read_ref(&name)?.is_none() {
        return Err(NoSuchRef(name.to_string()).into());
    }
    if depot.layout() == depot::Layout::GoRetro {
        bail!("a go-retro depot has no HEAD file: it is always on refs/heads/master");
    }
    depot.update_refs(&[RefEdit {
        name: RefName::head(),
        expected: Expected::Any,
        new: Some(RefValue::Symbolic(name.clone())),
        log: LogInfo {
            session: "cli".to_owned(),
            message: format!("switch: to {name}"),
        },
    }])?;
    // As git's switch, the news goes to stderr: stdout stays empty for scripts.
    crate::ui::status(format!("on {name}"));
    Ok(())
}

/// `retro merge REV` into the current branch.
pub fn merge(
    flag: Option<&Path>,
    rev: &str,
    session: Option<&str>,
    manifest: Option<&Path>,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let depot = open(flag)?;
    let branch = current_branch(&depot)?;
    let theirs = depot.resolve_revision(rev)?;
    let manifest = super::apply::load_manifest(&depot_dir(flag)?, manifest)?;
    let session = session.unwrap_or("cli");
    let outcome = engine::merge::merge(&depot, &manifest, &branch, theirs, rev, session)
        .map_err(anyhow::Error::new)?;
    // The body of `POST /merge`.
    let body = MergeResult::new(&branch, &outcome);
    if json {
        ui.json(&body)?;
        return Ok(());
    }
    match outcome {
        MergeOutcome::UpToDate { .. } => ui.line("already up to date")?,
        MergeOutcome::FastForward { from, to } => ui.line(format!(
            "fast-forward {}..{}",
            from.map_or("(unborn)".to_owned(), |f| f.to_short_hex(12)),
            to.to_short_hex(12)
        ))?,
        MergeOutcome::Merged {
            checkpoint,
            events,
            partitions,
            ..
        } => ui.line(format!(
            "merged {}: {events} event(s) in {}",
            checkpoint.to_short_hex(12),
            if partitions.is_empty() {
                "no partition".to_owned()
            } else {
                partitions.join(", ")
            }
        ))?,
        MergeOutcome::Replayed { to, replayed, .. } => {
            for (from, new) in &replayed {
                ui.line(format!(
                    "replayed {} as {}",
                    from.to_short_hex(12),
                    new.to_short_hex(12)
                ))?;
            }
            ui.line(format!(
                "merged by replay: {} command(s), now at {}",
                replayed.len(),
                to.to_short_hex(12)
            ))?;
        }
    }
    Ok(())
}

/// The hint for a failed merge (see `crate::error::classify`).
pub fn merge_hint(err: &MergeError) -> Option<String> {
    match err {
        MergeError::Unrelated { .. } => Some(
            "the two share no checkpoint; 'retro log --graph REV' shows each history".to_owned(),
        ),
        MergeError::Rejected { command, .. } => Some(format!(
            "the branch is as it was; the rejected command was {command}"
        )),
        MergeError::ReplayFailed { .. } | MergeError::MergeInReplay { .. } => {
            Some("the branch is as it was".to_owned())
        }
        MergeError::Conflict { .. } => Some("other writers kept moving the branch".to_owned()),
        _ => None,
    }
}

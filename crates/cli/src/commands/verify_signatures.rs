//! `retro verify --signatures [RANGE] [--trusted-key PUBKEY…] [--json]`: checks the signature of
//! every checkpoint reachable from the range's head (all parents: a merge brings the other side's
//! checkpoints), except those reachable from its start, and names each one that is unsigned, badly
//! signed, or (with `--trusted-key`) signed by a key not trusted. Exit 7 when one is found.

use std::collections::HashSet;

use anyhow::Result;
use serde::Serialize;

use depot::signing::{check_signature, parse_public_key, SignatureCheck};
use depot::{Depot, HistoryOrder, ObjectId};

use crate::ui::Ui;

/// Checkpoints whose signatures do not pass (already reported; exit 7).
#[derive(Debug, thiserror::Error)]
#[error("{problems} of {checkpoints} checkpoint(s) are not signed by a trusted key")]
pub struct SignaturesFailed {
    /// Checkpoints unsigned, badly signed or signed by an untrusted key.
    pub problems: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
}

#[derive(Serialize)]
struct Problem<'a> {
    checkpoint: String,
    problem: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    checkpoints: u64,
    signed: u64,
    problems: u64,
}

/// Runs the check over `range` (`A..B`, `REV`, or HEAD).
pub fn run(
    depot: &Depot,
    range: Option<&str>,
    trusted: &[String],
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let trusted: HashSet<String> = trusted
        .iter()
        .map(|k| parse_public_key(k))
        .collect::<Result<_, _>>()?;
    let (start, end) = match range {
        None => (None, None),
        Some(text) if text.contains("...") => {
            return Err(super::verify::RangeError::ThreeDots(text.to_owned()).into())
        }
        Some(text) => match text.split_once("..") {
            Some((a, b)) => (
                Some(a).filter(|a| !a.is_empty()),
                Some(b).filter(|b| !b.is_empty()),
            ),
            None => (None, Some(text)),
        },
    };
    if end.is_none() && depot.head()?.is_none() {
        return finish(0, 0, 0, json, ui);
    }
    let end = super::resolve(depot, end)?;
    let mut excluded: HashSet<ObjectId> = HashSet::new();
    if let Some(start) = start {
        let start = depot.resolve_revision(start)?;
        depot.walk_ids(start, HistoryOrder::Full, |entry| {
            excluded.insert(entry.id);
            Ok(true)
        })?;
    }
    let mut ids = Vec::new();
    depot.walk_ids(end, HistoryOrder::Full, |entry| {
        if !excluded.contains(&entry.id) {
            ids.push(entry.id);
        }
        Ok(true)
    })?;
    let (mut signed, mut problems) = (0u64, 0u64);
    for id in &ids {
        // Read, and so verified by hash: a signature is only as good as the bytes under it.
        let checkpoint = depot.read_checkpoint(id)?;
        let problem = match check_signature(&checkpoint) {
            SignatureCheck::Valid { key } if trusted.is_empty() || trusted.contains(&key) => {
                signed += 1;
                continue;
            }
            SignatureCheck::Valid { key } => Problem {
                checkpoint: id.to_string(),
                problem: "untrusted",
                reason: Some("signed by a key that is not trusted".to_owned()),
                key: Some(key),
            },
            SignatureCheck::Unsigned => Problem {
                checkpoint: id.to_string(),
                problem: "unsigned",
                key: None,
                reason: None,
            },
            SignatureCheck::Invalid { key, reason } => Problem {
                checkpoint: id.to_string(),
                problem: "bad-signature",
                key,
                reason: Some(reason),
            },
        };
        problems += 1;
        if json {
            ui.json(&problem)?;
        } else {
            let mut line = format!("{} {}", problem.problem, problem.checkpoint);
            if let Some(key) = &problem.key {
                line.push_str(&format!(" key {key}"));
            }
            if let Some(reason) = &problem.reason {
                line.push_str(&format!(": {reason}"));
            }
            ui.line(line)?;
        }
    }
    finish(ids.len() as u64, signed, problems, json, ui)
}

fn finish(checkpoints: u64, signed: u64, problems: u64, json: bool, ui: &mut Ui) -> Result<()> {
    if json {
        ui.json(&Summary {
            kind: "summary",
            checkpoints,
            signed,
            problems,
        })?;
    } else {
        crate::ui::status(format!(
            "{checkpoints} checkpoint(s) checked, {signed} signed by a trusted key, {problems} problem(s)"
        ));
    }
    if problems > 0 {
        return Err(SignaturesFailed {
            problems,
            checkpoints,
        }
        .into());
    }
    Ok(())
}

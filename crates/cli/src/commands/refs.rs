//! `retro refs`, `retro update-ref`, `retro reflog`.

use anyhow::{bail, Result};
use serde_json::json;

use depot::{Depot, Expected, LogInfo, RefEdit, RefName, RefValue};

use crate::ui::Ui;

pub fn list(depot: &Depot, json: bool, ui: &mut Ui) -> Result<()> {
    for (name, value) in depot.list_refs("")? {
        if json {
            ui.json(&server::api::RefEntry::new(&name, &value))?;
        } else {
            ui.line(format!("{value} {name}"))?;
        }
    }
    Ok(())
}

fn full_ref_name(name: &str) -> Result<RefName> {
    match RefName::new(name) {
        Ok(name) => Ok(name),
        Err(err) => {
            // `master` → `refs/heads/master`, but only for names that are valid there.
            if !name.contains('/') {
                if let Ok(full) = RefName::new(&format!("refs/heads/{name}")) {
                    return Ok(full);
                }
            }
            Err(err.into())
        }
    }
}

pub fn update(
    depot: &Depot,
    delete: bool,
    name: &str,
    new: Option<&str>,
    old: Option<&str>,
    message: &str,
    ui: &mut Ui,
) -> Result<()> {
    let name = full_ref_name(name)?;
    let expected_of = |rev: Option<&str>| -> Result<Expected> {
        Ok(match rev {
            None => Expected::Any,
            Some("0") | Some("none") => Expected::MustNotExist,
            Some(rev) if rev.chars().all(|c| c == '0') && rev.len() >= 4 => Expected::MustNotExist,
            Some(rev) => Expected::MustBe(depot.resolve_revision(rev)?),
        })
    };
    let log = LogInfo {
        session: "cli".to_owned(),
        message: message.to_owned(),
    };
    let edit = if delete {
        if old.is_some() {
            bail!("with -d, give the expected old value as the second argument only");
        }
        RefEdit {
            name: name.clone(),
            expected: match new {
                None => Expected::MustExist,
                Some(rev) => Expected::MustBe(depot.resolve_revision(rev)?),
            },
            new: None,
            log,
        }
    } else {
        let Some(new) = new else {
            bail!("give the new value: retro update-ref REF NEW [OLD]");
        };
        let new = depot.resolve_revision(new)?;
        RefEdit {
            name: name.clone(),
            expected: expected_of(old)?,
            new: Some(RefValue::Direct(new)),
            log,
        }
    };
    let create_only = matches!(edit.expected, Expected::MustNotExist);
    if let Err(err) = depot.update_refs(&[edit]) {
        if create_only && err.class() == depot::ErrorClass::Conflict {
            if let Some(value) = depot.read_ref(&name)? {
                return Err(crate::error::RefExists {
                    name: name.as_str().to_owned(),
                    holds: match value {
                        RefValue::Direct(id) => id.to_string(),
                        RefValue::Symbolic(target) => format!("ref: {target}"),
                    },
                }
                .into());
            }
        }
        return Err(err.into());
    }
    let _ = ui;
    Ok(())
}

pub fn reflog(depot: &Depot, name: Option<&str>, json: bool, ui: &mut Ui) -> Result<()> {
    let name = match name {
        None => RefName::head(),
        Some(name) => full_ref_name(name)?,
    };
    let entries = depot.reflog(&name)?;
    if entries.is_empty() && depot.read_ref(&name)?.is_none() {
        return Err(crate::error::NoSuchRef(name.as_str().to_owned()).into());
    }
    let count = entries.len();
    for (i, entry) in entries.iter().enumerate().rev() {
        let n = count - 1 - i;
        if json {
            ui.json(&json!({
                "ref": name.as_str(),
                "index": n,
                "old": entry.old.map(|id| id.to_string()),
                "new": entry.new.map(|id| id.to_string()),
                "date": depot::format_date(entry.date),
                "session": entry.session,
                "message": entry.message,
            }))?;
        } else {
            let new = entry
                .new
                .map(|id| id.to_short_hex(12))
                .unwrap_or_else(|| "(deleted)".to_owned());
            ui.line(format!(
                "{} {}@{{{n}}}: {} ({}, {})",
                ui.yellow(&new),
                name.short(),
                entry.message,
                if entry.session.is_empty() {
                    "-"
                } else {
                    &entry.session
                },
                depot::format_date(entry.date)
            ))?;
        }
    }
    Ok(())
}

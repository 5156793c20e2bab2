//! `retro cat-object`: like `git cat-file`.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};

use depot::{Depot, ObjectId};

use crate::args::CatArgs;
use crate::render;
use crate::ui::Ui;

/// An object name: a full id, a unique prefix, or a revision.
fn resolve_object(depot: &Depot, name: &str) -> Result<ObjectId> {
    Ok(depot.resolve_revision(name)?)
}

pub fn cat(depot: &Depot, args: &CatArgs, ui: &mut Ui) -> Result<()> {
    if args.batch {
        if args.object.is_some() {
            bail!("--batch reads names from stdin; give no OBJECT");
        }
        return batch(depot, ui);
    }
    let Some(name) = &args.object else {
        bail!("name an object: an id, a unique prefix, or a revision such as HEAD");
    };
    let id = resolve_object(depot, name)?;
    if args.pretty {
        // Events resolved: a sealed event with its data, a redacted one with its tombstone.
        let decoded = depot.read_resolved(&id)?;
        let text = render::pretty_object(&decoded);
        ui.out().write_all(text.as_bytes())?;
        return Ok(());
    }
    let object = depot.read_object(&id)?;
    if args.kind {
        ui.line(object.kind().map(|k| k.as_str()).unwrap_or("unknown"))?;
    } else if args.size {
        ui.line(object.body_len().to_string())?;
    } else {
        ui.out().write_all(object.bytes())?;
    }
    Ok(())
}

/// `--batch`: for each name on stdin, `<id> <kind> <size>\n<raw>\n`, or `<name> missing`.
fn batch(depot: &Depot, ui: &mut Ui) -> Result<()> {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        let found = resolve_object(depot, name).and_then(|id| Ok((id, depot.read_object(&id)?)));
        match found {
            Ok((id, object)) => {
                let kind = object.kind().map(|k| k.as_str()).unwrap_or("unknown");
                writeln!(ui.out(), "{id} {kind} {}", object.bytes().len())?;
                ui.out().write_all(object.bytes())?;
                ui.out().write_all(b"\n")?;
            }
            Err(_) => writeln!(ui.out(), "{name} missing")?,
        }
        ui.flush()?;
    }
    Ok(())
}

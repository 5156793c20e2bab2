//! `retro prove EVENT-ID [--at REV]` (an inclusion proof, JSON on stdout) and `retro verify-proof
//! FILE [--trusted ID] [--json]`, which opens no depot: it checks the proof's own bytes and prints
//! what it proved. The format and the check are `depot::proof`.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use depot::proof::{InclusionProof, MAX_PROOF_BYTES};
use depot::{Depot, ObjectId, Prefix};

use crate::ui::Ui;

/// `retro prove`: writes the proof that `event` is in the history `at` (default HEAD) commits to.
pub fn prove(depot: &Depot, event: &str, at: Option<&str>, ui: &mut Ui) -> Result<()> {
    let event = match event.parse::<ObjectId>() {
        Ok(id) => id,
        Err(_) => {
            let prefix: Prefix = event
                .parse()
                .with_context(|| format!("'{}' is not an event id", depot::shown(event)))?;
            depot.resolve_prefix(&prefix)?
        }
    };
    let at = super::resolve(depot, at)?;
    let proof = depot.prove(event, at)?;
    ui.line(proof.to_json())?;
    Ok(())
}

#[derive(Serialize)]
struct Proved {
    event: String,
    partitions: Vec<String>,
    checkpoint: String,
    leaf: Option<u64>,
    size: u64,
    at: String,
    trusted: bool,
}

/// `retro verify-proof`: checks `file` (`-`: stdin) and prints what it proves.
pub fn verify_proof(file: &Path, trusted: Option<&str>, json: bool, ui: &mut Ui) -> Result<()> {
    let trusted: Option<ObjectId> = trusted
        .map(|t| {
            t.parse::<ObjectId>()
                .with_context(|| format!("--trusted '{}' is not a checkpoint id", depot::shown(t)))
        })
        .transpose()?;
    let mut bytes = Vec::new();
    let reader: Box<dyn std::io::Read> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file)
                .with_context(|| format!("could not open '{}'", file.display()))?,
        )
    };
    use std::io::Read as _;
    reader
        .take(MAX_PROOF_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("could not read '{}'", file.display()))?;
    if bytes.len() > MAX_PROOF_BYTES {
        anyhow::bail!(
            "'{}' is larger than a proof can be ({MAX_PROOF_BYTES} bytes)",
            file.display()
        );
    }
    let proven = InclusionProof::parse(&bytes)
        .and_then(|proof| proof.verify(trusted))
        .with_context(|| format!("'{}' does not verify", file.display()))?;
    if json {
        ui.json(&Proved {
            event: proven.event.to_string(),
            partitions: proven.partitions.clone(),
            checkpoint: proven.checkpoint.to_string(),
            leaf: proven.leaf,
            size: proven.size,
            at: proven.at.to_string(),
            trusted: trusted.is_some(),
        })?;
    } else {
        ui.line(proven.to_string())?;
        if trusted.is_none() {
            crate::ui::status(format!(
                "the proof is only as good as {}: compare it with the checkpoint id you trust (or pass --trusted ID)",
                proven.at
            ));
        }
    }
    Ok(())
}

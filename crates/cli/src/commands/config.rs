//! `retro config signing-key`: which ed25519 key signs a depot's new checkpoints, and loading it
//! when a depot is opened. The setting is `<depot>/signing` (one line `key <absolute path>`),
//! beside the depot's files and outside its hashed objects; `$RETRO_SIGNING_KEY` (a key file's
//! path) overrides it, and is the only way for a PostgreSQL depot. The key file itself holds the
//! secret (`depot::signing`); it is never printed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use depot::signing::Signer;

use crate::ui::Ui;

/// The setting's file name inside a depot directory.
const SETTING: &str = "signing";
/// Where `--generate` puts a new key.
const GENERATED: &str = "signing.key";

/// A signing key that is configured but cannot be used (exit 1, invalid).
#[derive(Debug, thiserror::Error)]
#[error("the signing key '{}' cannot be used", .path.display())]
pub struct BadSigningKey {
    /// The key file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: anyhow::Error,
}

fn read_key(path: &Path) -> Result<Signer, BadSigningKey> {
    let bad = |source: anyhow::Error| BadSigningKey {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.into()))?;
    Signer::from_key_file(&text).map_err(|e| bad(e.into()))
}

/// The key file the depot at `dir` is configured to sign with (`$RETRO_SIGNING_KEY` first).
fn configured_path(dir: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(path) = std::env::var_os("RETRO_SIGNING_KEY").filter(|v| !v.is_empty()) {
        return Ok(Some(PathBuf::from(path)));
    }
    let Some(dir) = dir else { return Ok(None) };
    let setting = dir.join(SETTING);
    let text = match std::fs::read_to_string(&setting) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("could not read '{}'", setting.display())),
    };
    let Some(path) = text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .strip_prefix("key ")
        .filter(|p| !p.is_empty() && !p.contains('\n'))
    else {
        bail!(
            "'{}' is not one line 'key <path>'; set it again with 'retro config signing-key'",
            setting.display()
        );
    };
    Ok(Some(PathBuf::from(path)))
}

/// Sets the depot's signer from its configuration, if it has one (called on every open).
pub fn load_signer(depot: &depot::Depot) -> Result<()> {
    if let Some(path) = configured_path(depot.root())? {
        depot.set_signer(Some(Arc::new(read_key(&path)?)));
    }
    Ok(())
}

#[derive(Serialize)]
struct KeyBody {
    signing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

/// `retro config signing-key [PATH | --generate | --unset]`.
pub fn signing_key(
    dir: &Path,
    path: Option<&Path>,
    generate: bool,
    unset: bool,
    json: bool,
    ui: &mut Ui,
) -> Result<()> {
    let depot = super::open_location_unsigned(dir)?;
    let Some(root) = depot.root().map(Path::to_path_buf) else {
        bail!("only a depot directory keeps a signing-key setting; set $RETRO_SIGNING_KEY to a key file instead");
    };
    let setting = root.join(SETTING);
    if unset {
        match std::fs::remove_file(&setting) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("could not remove '{}'", setting.display()))
            }
        }
        sync_dir(&root)?;
        return show(None, json, ui);
    }
    let chosen = if generate {
        let key_path = root.join(GENERATED);
        if key_path.exists() {
            bail!(
                "'{}' already exists; give it as PATH to sign with it, or move it away first",
                key_path.display()
            );
        }
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .context("could not read random bytes from /dev/urandom")?;
        let signer = Signer::from_seed(seed);
        write_private(&key_path, signer.key_file_text().as_bytes())?;
        Some(key_path)
    } else {
        path.map(std::path::absolute)
            .transpose()
            .context("could not resolve the key file's path")?
    };
    match chosen {
        Some(key_path) => {
            // Refuse a key that cannot be read before pointing the depot at it.
            let signer = read_key(&key_path)?;
            let line = format!("key {}\n", key_path.display());
            if key_path.to_str().is_none() || line.matches('\n').count() != 1 {
                bail!("the key file's path must be one line of UTF-8");
            }
            write_durable(&setting, line.as_bytes())?;
            show(Some((&key_path, &signer)), json, ui)
        }
        None => match configured_path(Some(&root))? {
            Some(key_path) => {
                let signer = read_key(&key_path)?;
                show(Some((&key_path, &signer)), json, ui)
            }
            None => show(None, json, ui),
        },
    }
}

fn show(key: Option<(&Path, &Signer)>, json: bool, ui: &mut Ui) -> Result<()> {
    let body = KeyBody {
        signing: key.is_some(),
        path: key.map(|(p, _)| p.display().to_string()),
        public_key: key.map(|(_, s)| s.public_key_hex()),
    };
    if json {
        ui.json(&body)?;
    } else {
        match key {
            Some((path, signer)) => ui.line(format!(
                "ed25519 {} {}",
                signer.public_key_hex(),
                path.display()
            ))?,
            None => ui.line("no signing key: new checkpoints are not signed")?,
        }
    }
    Ok(())
}

/// Writes a new file readable by its owner only, durably.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not create '{}'", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write '{}'", path.display()))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` durably: a temporary file beside it, synced, renamed over it, and
/// the directory synced (a crash leaves the old setting or the new one, never a torn line).
fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("could not create '{}'", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "could not rename '{}' to '{}'",
            tmp.display(),
            path.display()
        )
    })?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("could not sync '{}'", dir.display()))
}

//! Small file-system helpers with the write order retro relies on, over a [`Storage`].
//!
//! [`write_atomic`] is the one way a whole file is replaced durably: write a temp file in the same
//! directory, fsync it, rename it over the target, fsync the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::{OpenOptions, Storage};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp-file path beside `target`, unique within this process and across processes.
pub(crate) fn temp_path_for(target: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".tmp-{}-{}-{}", std::process::id(), n, name))
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn fsync_dir(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    storage.fsync_dir(dir)
}

/// Creates `dir` and its missing parents, fsyncing each parent whose entries changed.
pub(crate) fn create_dir_durable(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || storage.is_dir(dir) {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durable(storage, parent)?;
    }
    match storage.create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    fsync_dir(storage, parent.unwrap_or(Path::new(".")))?;
    Ok(())
}

/// Replaces `target` with `bytes` durably: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(storage: &dyn Storage, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path_for(target);
    let result = (|| {
        let file = storage.open(&temp, OpenOptions::CREATE_NEW)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        storage.rename(&temp, target)?;
        if let Some(dir) = target.parent() {
            fsync_dir(storage, dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = storage.remove_file(&temp);
    }
    result
}

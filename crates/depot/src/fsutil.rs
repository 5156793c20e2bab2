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

/// Removes the temp files ([`temp_path_for`]) in `dir` whose writer is dead: its pid (in the
/// name) is not a live process on this host. A live writer's file is never touched; a dead
/// writer's may survive a reused pid until that process ends. Linux only (`/proc`); elsewhere
/// nothing is removed. Best effort: returns how many were removed.
pub(crate) fn remove_dead_temps(storage: &dyn Storage, dir: &Path) -> usize {
    if !storage.is_os() || !Path::new("/proc/self").exists() {
        return 0;
    }
    let Ok(entries) = storage.read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries {
        let Some(pid) = entry
            .name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists()
            && storage.remove_file(&entry.path).is_ok()
        {
            removed += 1;
        }
    }
    removed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    #[test]
    fn only_dead_writers_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".tmp-4294967294-1-commit-graph");
        let live = temp_path_for(&dir.path().join("commit-graph"));
        let other = dir.path().join("commit-graph");
        for path in [&dead, &live, &other] {
            std::fs::write(path, b"x").unwrap();
        }
        assert_eq!(remove_dead_temps(&FsStorage, dir.path()), 1);
        assert!(!dead.exists() && live.exists() && other.exists());
    }
}

//! Keeping the derived partition index out of the user's way.
//!
//! The SQLite index of a depot on disk is derived data: it must never stand between a user and
//! their history. So:
//!
//! - a file that is not a readable index (garbage, a damaged page, another schema) is removed,
//!   with its `-wal` and `-shm`, and rebuilt from history, with one warning;
//! - a file that cannot be opened or written (a read-only depot, a directory in its place, a lock
//!   held for longer than the busy timeout) is left alone and this process uses an index in
//!   memory instead, rebuilt from history, with one warning;
//! - `retro reindex` removes the files and builds a new index from nothing.
//!
//! Only SQLite files fall back. An in-memory index has nothing to fall back to, and PostgreSQL's
//! index is written by the commit's own transaction: its errors are the database's errors.

use std::path::{Path, PathBuf};

use super::{Error, IndexState};
use crate::index::{IndexError, PartitionIndex};

/// Whether `err` says the index file holds something this build cannot read.
pub(crate) fn is_corrupt(err: &IndexError) -> bool {
    match err {
        IndexError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
            e.code,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
        ),
        IndexError::Corrupt(_) => true,
        _ => false,
    }
}

/// The index file and its SQLite companions.
fn index_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Removes the index file, its `-wal` and its `-shm` (absent ones are fine).
fn remove_index_files(path: &Path) -> Result<(), Error> {
    for file in index_files(path) {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", file)(e)),
        }
    }
    Ok(())
}

/// A callback that shows a warning to the user (the depot itself never prints).
pub(crate) type WarningSink = Box<dyn Fn(&str) + Send>;

impl IndexState {
    /// The index of a depot on disk, stored at `path`. Never fails: a file that cannot be used is
    /// replaced or stood in for (see the module documentation), with a warning.
    pub(crate) fn open_file(path: PathBuf) -> Result<IndexState, Error> {
        let (stored, warning, fallback) = match PartitionIndex::open(&path) {
            Ok(index) => (index, None, false),
            Err(err) if is_corrupt(&err) => {
                match remove_index_files(&path).and_then(|()| Ok(PartitionIndex::open(&path)?)) {
                    Ok(index) => (index, Some(replaced_warning(&path, &err)), false),
                    Err(again) => (
                        PartitionIndex::in_memory()?,
                        Some(in_memory_warning(
                            &path,
                            &format!("{err}; replacing it: {again}"),
                        )),
                        true,
                    ),
                }
            }
            Err(err) => (
                PartitionIndex::in_memory()?,
                Some(in_memory_warning(&path, &err.to_string())),
                true,
            ),
        };
        let mut state = IndexState::new(stored);
        state.path = Some(path);
        state.fallback = fallback;
        state.replaced = warning.is_some() && !fallback;
        if let Some(warning) = warning {
            state.warn(warning);
        }
        Ok(state)
    }

    /// Shows `warning` through the sink, or keeps it until one is set.
    pub(crate) fn warn(&mut self, warning: String) {
        match &self.sink {
            Some(sink) => sink(&warning),
            None => self.warnings.push(warning),
        }
    }

    /// Sets where warnings go, handing it those kept so far.
    pub(crate) fn set_sink(&mut self, sink: WarningSink) {
        for warning in self.warnings.drain(..) {
            sink(&warning);
        }
        self.sink = Some(sink);
    }

    /// After the stored index failed with `err`: replaces a corrupt file with a fresh one (once),
    /// else switches to an index in memory. Returns false when there is nothing left to fall back
    /// to (the caller reports `err`). Either way the new index starts empty and is caught up from
    /// history by the caller's retry.
    pub(crate) fn recover(&mut self, err: &IndexError) -> bool {
        let Some(path) = self.path.clone() else {
            return false;
        };
        if self.fallback {
            return false;
        }
        let Ok(memory) = PartitionIndex::in_memory() else {
            return false;
        };
        // Close the failing file before touching it.
        self.stored = memory;
        self.pending.clear();
        self.base = None;
        if is_corrupt(err) && !self.replaced {
            self.replaced = true;
            match remove_index_files(&path).and_then(|()| Ok(PartitionIndex::open(&path)?)) {
                Ok(fresh) => {
                    self.stored = fresh;
                    self.warn(replaced_warning(&path, err));
                    return true;
                }
                Err(again) => {
                    self.fallback = true;
                    self.warn(in_memory_warning(
                        &path,
                        &format!("{err}; replacing it: {again}"),
                    ));
                    return true;
                }
            }
        }
        self.fallback = true;
        self.warn(in_memory_warning(&path, &err.to_string()));
        true
    }

    /// `retro reindex` for a file: closes it, removes it with its `-wal` and `-shm`, and opens a
    /// new, empty one (which the caller fills). Fails when the files cannot be removed or
    /// created; the process then goes on with an index in memory.
    pub(crate) fn recreate(&mut self) -> Result<(), Error> {
        self.pending.clear();
        self.base = None;
        match self.path.clone() {
            Some(path) => {
                self.stored = PartitionIndex::in_memory()?;
                self.fallback = true;
                remove_index_files(&path)?;
                self.stored = PartitionIndex::open(&path)?;
                self.fallback = false;
                self.replaced = true;
            }
            None => self.stored.write(|w| w.clear())?,
        }
        Ok(())
    }
}

fn replaced_warning(path: &Path, err: &IndexError) -> String {
    format!(
        "the partition index '{}' was unreadable ({err}); it holds only derived data, so it was removed and is rebuilt from history",
        path.display()
    )
}

fn in_memory_warning(path: &Path, why: &str) -> String {
    format!(
        "the partition index '{}' cannot be used ({why}); this run reads through an index built in memory from history",
        path.display()
    )
}

//! Where a consumer group's state lives: the [`GroupStore`] trait (one atomic
//! read-modify-write of a group's state, under a lock every member on every host takes, with the
//! store's own clock), [`FilesGroupStore`] (a files depot's `groups/` directory: a state file
//! replaced by temp + fsync + rename under an `flock`), and [`MemoryGroupStore`] (one process).
//! PostgreSQL's store is in crate `retro-depot-postgres`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{GroupError, GroupName, GroupState};
use crate::lockfile::LockFile;
use crate::storage::FsStorage;

/// A change to a group's state, run under the store's lock: it gets the state (`None`: no such
/// group yet) and the store's clock (milliseconds since the Unix epoch), and returns whether it
/// changed the state (which is then written durably before [`GroupStore::update`] returns).
pub type Change<'a> = dyn FnMut(&mut Option<GroupState>, i64) -> Result<bool, GroupError> + 'a;

/// A store of consumer-group states.
pub trait GroupStore: Send + Sync {
    /// Runs `change` on `group`'s state under the group's lock (serialized with every other
    /// update of that group, in any process on any host the store serves) and writes the result
    /// durably if it says so. A failure leaves the stored state as it was.
    fn update(&self, group: &GroupName, change: &mut Change<'_>) -> Result<(), GroupError>;
    /// Reads `group`'s state without the lock, with the store's clock.
    fn read(&self, group: &GroupName) -> Result<(Option<GroupState>, i64), GroupError>;
    /// Every group's name, sorted.
    fn list(&self) -> Result<Vec<GroupName>, GroupError>;
}

/// Milliseconds since the Unix epoch by this host's clock.
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The consumer groups of a files depot: `groups/NAME` (the state) and `groups/NAME.lock`.
/// Clocks are this host's wall clock: members on several hosts sharing a directory need clocks
/// kept in step (NTP), and a lease can be cut short by a clock that jumps forward.
pub struct FilesGroupStore {
    dir: PathBuf,
    lock_timeout: Duration,
    locks: Mutex<HashMap<GroupName, Arc<LockFile>>>,
    /// Whether a dead writer's temp files were looked for yet.
    swept: std::sync::atomic::AtomicBool,
}

impl FilesGroupStore {
    /// The store in `dir` (a depot's `groups/`; created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> FilesGroupStore {
        FilesGroupStore {
            dir: dir.into(),
            lock_timeout: crate::refdb::DEFAULT_LOCK_TIMEOUT,
            locks: Mutex::new(HashMap::new()),
            swept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// How long an update waits for the group's lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> FilesGroupStore {
        self.lock_timeout = timeout;
        self
    }

    fn state_path(&self, group: &GroupName) -> PathBuf {
        self.dir.join(group.as_str())
    }

    fn lock_for(&self, group: &GroupName) -> Arc<LockFile> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry(group.clone())
            .or_insert_with(|| {
                Arc::new(LockFile::new(
                    self.dir.join(format!("{}.lock", group.as_str())),
                ))
            })
            .clone()
    }

    fn read_state(path: &Path) -> Result<Option<GroupState>, GroupError> {
        match std::fs::read(path) {
            Ok(bytes) => GroupState::decode(&bytes).map(Some).map_err(|e| match e {
                GroupError::Corrupt { reason } => GroupError::Corrupt {
                    reason: format!("'{}': {reason}", path.display()),
                },
                other => other,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(GroupError::Io {
                verb: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

impl GroupStore for FilesGroupStore {
    fn update(&self, group: &GroupName, change: &mut Change<'_>) -> Result<(), GroupError> {
        let storage = FsStorage::shared();
        crate::fsutil::create_dir_durable(&*storage, &self.dir).map_err(|source| {
            GroupError::Io {
                verb: "create directory",
                path: self.dir.clone(),
                source,
            }
        })?;
        let lock = self.lock_for(group);
        let _held = lock.acquire(self.lock_timeout)?;
        if !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::fsutil::remove_dead_temps(&*storage, &self.dir);
        }
        let path = self.state_path(group);
        let mut state = Self::read_state(&path)?;
        if change(&mut state, wall_clock_ms())? {
            if let Some(state) = &state {
                // Temp file, fsync, rename, fsync of the directory: a crash leaves the old state
                // or the new one, never a mix (docs/crash-safety.md, "Consumer groups").
                crate::fsutil::write_atomic(&*storage, &path, &state.encode()).map_err(
                    |source| GroupError::Io {
                        verb: "write",
                        path: path.clone(),
                        source,
                    },
                )?;
            }
        }
        Ok(())
    }

    fn read(&self, group: &GroupName) -> Result<(Option<GroupState>, i64), GroupError> {
        Ok((Self::read_state(&self.state_path(group))?, wall_clock_ms()))
    }

    fn list(&self) -> Result<Vec<GroupName>, GroupError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(GroupError::Io {
                    verb: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".lock") {
                continue;
            }
            // Temp files of a dead writer start with '.', which no group name does.
            if let Ok(group) = GroupName::new(name) {
                names.push(group);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Groups of one process (a memory depot).
#[derive(Default)]
pub struct MemoryGroupStore {
    states: Mutex<HashMap<GroupName, GroupState>>,
}

impl GroupStore for MemoryGroupStore {
    fn update(&self, group: &GroupName, change: &mut Change<'_>) -> Result<(), GroupError> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = states.get(group).cloned();
        if change(&mut state, wall_clock_ms())? {
            match state {
                Some(state) => states.insert(group.clone(), state),
                None => states.remove(group),
            };
        }
        Ok(())
    }

    fn read(&self, group: &GroupName) -> Result<(Option<GroupState>, i64), GroupError> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        Ok((states.get(group).cloned(), wall_clock_ms()))
    }

    fn list(&self) -> Result<Vec<GroupName>, GroupError> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<GroupName> = states.keys().cloned().collect();
        names.sort();
        Ok(names)
    }
}

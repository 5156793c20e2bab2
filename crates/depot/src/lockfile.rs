//! Writer locks: an OS advisory lock (fs2 `flock`) on one file, held for a whole
//! transaction. The kernel drops it when the holder dies, so a SIGKILLed writer never leaves the
//! depot locked. The holder writes its pid into the file so that a writer that waited too long can
//! say who holds it.
//!
//! A [`LockFile`] keeps its file open between transactions (one `flock` and one `pwrite` per
//! acquisition) and serializes the threads of its process with a mutex, since `flock` does not
//! exclude holders of the same open file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fs2::FileExt;

/// How long a writer waits for the lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A lock file, opened once.
pub struct LockFile {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

/// A held lock; dropping it releases the lock.
#[must_use = "the lock is released when this value is dropped"]
pub struct DepotLock<'a> {
    guard: MutexGuard<'a, Option<File>>,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another live writer holds it.
    #[error("the depot is locked by another writer ({holder}); if no retro process is running, delete '{}'", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as recorded in the file.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("could not {verb} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        verb: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn is_contended(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()
}

impl LockFile {
    /// A lock on `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> LockFile {
        LockFile {
            path: path.into(),
            file: Mutex::new(None),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock, waiting with backoff up to `timeout`.
    pub fn acquire(&self, timeout: Duration) -> Result<DepotLock<'_>, LockError> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(|source| LockError::Io {
                    verb: "open",
                    path: self.path.clone(),
                    source,
                })?;
            *guard = Some(file);
        }
        let file = guard.as_mut().expect("opened above");
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => break,
                Err(e) if is_contended(&e) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = (&*file).read_to_string(&mut holder);
                        let mut buf = [0u8; 64];
                        let n = file.read_at(&mut buf, 0).unwrap_or(0);
                        if holder.is_empty() {
                            holder = String::from_utf8_lossy(&buf[..n]).into_owned();
                        }
                        return Err(LockError::Locked {
                            path: self.path.clone(),
                            holder: holder
                                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                                .to_owned(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(LockError::Io {
                        verb: "lock",
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        let _ = file.write_all_at(format!("pid {:<12}", std::process::id()).as_bytes(), 0);
        Ok(DepotLock { guard })
    }
}

impl Drop for DepotLock<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.guard.as_ref() {
            let _ = FileExt::unlock(file);
        }
    }
}

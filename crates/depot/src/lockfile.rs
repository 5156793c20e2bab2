//! Writer locks: an OS advisory lock (fs2 `flock`) on one file, held for a whole
//! transaction. The kernel drops it when the holder dies, so a SIGKILLed writer never leaves the
//! depot locked. Once it holds the lock, the holder writes `pid <pid> host <host> since <date>`
//! into the file. That text outlives its writer (the kernel drops the lock at death, not the
//! file's content), so a writer that waited too long names the real holder from the kernel's lock
//! table (`/proc/locks`, matched by the file's device and inode), and uses the file's text only
//! for the host and date of that same pid. A lock whose holder died is simply taken: there is
//! never a reason to delete the file.
//!
//! A [`LockFile`] keeps its file open between transactions (one `flock` and one `pwrite` per
//! acquisition) and serializes the threads of its process with a mutex, since `flock` does not
//! exclude holders of the same open file.

use std::fs::{File, OpenOptions};
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
    /// Only the mutex: for a depot on a simulated storage, which one process uses (the file is
    /// never created).
    process_local: bool,
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
    #[error("the depot is locked by another writer ({holder}); waited {}s for '{}' (the lock is released when that writer finishes or dies)", waited.as_secs_f32(), path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it: pid, host and since when, as the kernel and the holder's note say.
        holder: String,
        /// How long this writer waited.
        waited: Duration,
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
            process_local: false,
        }
    }

    /// A lock on `path` for files kept by `storage`: the OS's `flock` on the real file system;
    /// on a simulated one (used by one process), only the mutex that serializes this process's
    /// threads, and no file.
    pub(crate) fn for_storage(storage: &dyn crate::storage::Storage, path: PathBuf) -> LockFile {
        LockFile {
            process_local: !storage.is_os(),
            ..LockFile::new(path)
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock, waiting with backoff up to `timeout`.
    pub fn acquire(&self, timeout: Duration) -> Result<DepotLock<'_>, LockError> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if self.process_local {
            return Ok(DepotLock { guard });
        }
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
                        return Err(LockError::Locked {
                            path: self.path.clone(),
                            holder: describe_holder(file),
                            waited: start.elapsed(),
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
        // Written only now that the lock is ours, so the note names a holder (or a dead one).
        // Padded with spaces to a fixed length, so that it overwrites any earlier note whole
        // without a truncate (a lock is taken per commit).
        let mut note = format!(
            "pid {} host {} since {}",
            std::process::id(),
            host_name(),
            crate::object::format_date(chrono::Utc::now())
        );
        if note.len() < NOTE_LEN {
            note.extend(std::iter::repeat_n(' ', NOTE_LEN - 1 - note.len()));
        }
        note.push('\n');
        if file.write_all_at(note.as_bytes(), 0).is_ok() && note.len() > NOTE_LEN {
            let _ = file.set_len(note.len() as u64);
        }
        Ok(DepotLock { guard })
    }
}

/// The length of a holder's note (padded with spaces); a longer one is written whole and the
/// file truncated after it.
const NOTE_LEN: usize = 96;

/// This machine's host name (`/proc/sys/kernel/hostname`), or `unknown`; read once per process
/// (a lock is taken per commit, and the name does not change under a running writer).
fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// What the holder wrote: (pid, host, since).
fn read_note(file: &File) -> Option<(u32, String, String)> {
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    // The first line only: a shorter note leaves the end of a longer earlier one after it.
    let mut words = text.lines().next()?.split_whitespace();
    let mut pid = None;
    let mut host = String::new();
    let mut since = String::new();
    while let Some(word) = words.next() {
        match word {
            "pid" => pid = words.next().and_then(|p| p.parse().ok()),
            "host" => host = words.next().unwrap_or_default().to_owned(),
            "since" => since = words.next().unwrap_or_default().to_owned(),
            _ => {}
        }
    }
    Some((pid?, host, since))
}

/// The pids the kernel lists as holding an exclusive `flock` on the file with this device and
/// inode (`/proc/locks`: `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF`).
fn kernel_holders(dev: u64, ino: u64) -> Vec<u32> {
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    // Linux's encoding of a device number (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A blocked waiter's line starts with "->": skip it.
            if fields.len() < 6 || fields[1] != "FLOCK" || fields[3] != "WRITE" {
                return None;
            }
            (fields[5] == wanted)
                .then(|| fields[4].parse().ok())
                .flatten()
        })
        .collect()
}

/// Who holds the lock, for the timeout message: the kernel's holder (with the host and date of
/// the note when the note is that holder's), else the note's pid if it is alive here, else the
/// note marked as unconfirmed (a holder on another host over a network file system, say).
fn describe_holder(file: &File) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let note = read_note(file);
    let host = host_name();
    let holders = file
        .metadata()
        .map(|m| kernel_holders(m.dev(), m.ino()))
        .unwrap_or_default();
    if let Some(&pid) = holders.first() {
        return match &note {
            Some((noted, noted_host, since)) if *noted == pid && *noted_host == host => {
                format!("pid {pid} on host {host} since {since}")
            }
            _ => format!("pid {pid} on host {host}; it has not written its note yet"),
        };
    }
    match note {
        Some((pid, noted_host, since)) if noted_host == host && pid_alive(pid) => {
            format!("pid {pid} on host {host} since {since}")
        }
        Some((pid, noted_host, since)) if noted_host != host => {
            format!("pid {pid} on host {noted_host} since {since}, as its note says")
        }
        _ => {
            "a holder the kernel does not name (the note left in the lock file is stale)".to_owned()
        }
    }
}

/// Whether a process with this pid exists on this host.
fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Drop for DepotLock<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.guard.as_ref() {
            let _ = FileExt::unlock(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// D12 (d): the note in the lock file outlives its writer; a writer that times out names the
    /// process that really holds the `flock` (from the kernel), with its host and date, and never
    /// tells anyone to delete the file.
    #[test]
    fn d12_lock_timeout_names_the_real_holder_not_the_stale_pid_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // A dead writer's note (pid 4194304 is above Linux's pid_max limit, never alive), then a
        // live holder that has not written its own note: an flock on another open file.
        std::fs::write(&path, "pid 4194304 host ghost since 2020-01-01T00:00:00Z\n").unwrap();
        let holder = File::open(&path).unwrap();
        holder.lock_exclusive().unwrap();
        let waiter = LockFile::new(&path);
        let err = waiter
            .acquire(Duration::from_millis(50))
            .err()
            .expect("the lock is held");
        let text = err.to_string();
        let me = std::process::id();
        assert!(
            text.contains(&format!("pid {me} on host {}", host_name())),
            "{text}"
        );
        assert!(
            !text.contains("4194304") && !text.contains("ghost"),
            "{text}"
        );
        assert!(!text.contains("delete"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        // Released (as at the holder's death): simply taken, and the note is the new holder's.
        FileExt::unlock(&holder).unwrap();
        drop(holder);
        let held = waiter.acquire(Duration::from_millis(50)).unwrap();
        let note = std::fs::read_to_string(&path).unwrap();
        assert!(note.starts_with(&format!("pid {me} host ")), "{note}");
        assert!(
            note.ends_with('\n') && note.lines().count() == 1,
            "{note:?}"
        );
        drop(held);
        // A live holder that wrote its note: named with the date from it.
        let first = LockFile::new(&path);
        let _held = first.acquire(Duration::from_millis(50)).unwrap();
        let since = read_note(&File::open(&path).unwrap()).unwrap().2;
        let text = LockFile::new(&path)
            .acquire(Duration::from_millis(50))
            .err()
            .expect("the lock is held")
            .to_string();
        assert!(
            text.contains(&format!("pid {me} on host {} since {since}", host_name())),
            "{text}"
        );
    }
}

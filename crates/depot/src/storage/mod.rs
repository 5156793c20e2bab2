//! The I/O seam: every write a native depot's durability rests on goes through a [`Storage`].
//!
//! The pack store (`odb/pack.rs`), the journal's state file and `logs/skipped-ref-moves`
//! (`journal.rs`), the ref files and reflogs (`refdb/files.rs`), whole-file writes
//! (`fsutil::write_atomic`: pack headers, indexes, gc's markers, `HEAD` and `config` at init) and
//! the failed-command log are all written through one, so that a test backend can decide what a
//! power cut keeps.
//!
//! - [`FsStorage`] is the real file system: each method is the one `std::fs` (or `fs2`, or
//!   `memmap2`) call the code made before the seam existed, in the same order; nothing is added
//!   (no fsync, no copy). Sealed pack indexes are memory-mapped.
//! - [`SimStorage`] keeps files in memory with, for each file and directory, what is durable and
//!   what is still pending (written but not fsynced), in the order it happened. It records every
//!   operation that changes state, so that a test can rebuild the state after any prefix of them
//!   and "cut the power" there: see [`SimStorage`] and `docs/crash-safety.md`.
//!
//! What stays outside the seam, and why:
//! - advisory locks (`<depot>/lock`, `packs/write.lock`, the ref files' `flock`s): on a real
//!   file system they are the OS's; on a simulated one a depot is used by one process, whose
//!   threads [`crate::lockfile::LockFile`] already serializes with a mutex, so the lock files are
//!   not created at all and ref-file locks are no-ops;
//! - the SQLite partition index: derived from history and rebuilt when lost, so a depot on a
//!   simulated storage uses the in-memory index;
//! - the loose-object store (`objects/`, go-retro's format): a native depot on a simulated
//!   storage has none;
//! - subscriptions' inotify watches (they fall back to polling).

mod sim;

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use sim::{CrashMode, SimReplay, SimStorage};

/// How to open a file: the subset of [`std::fs::OpenOptions`] retro uses, with the same meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for reading.
    pub read: bool,
    /// Open for writing (at explicit offsets, or at the cursor).
    pub write: bool,
    /// Every [`StorageFile::write_all`] goes to the end of the file (`O_APPEND`).
    pub append: bool,
    /// Create the file if it does not exist.
    pub create: bool,
    /// Create the file, failing if it exists (`O_EXCL`).
    pub create_new: bool,
    /// Truncate the file to zero length.
    pub truncate: bool,
}

impl OpenOptions {
    /// Read only (`File::open`).
    pub const READ: OpenOptions = OpenOptions {
        read: true,
        write: false,
        append: false,
        create: false,
        create_new: false,
        truncate: false,
    };
    /// Write an existing file in place.
    pub const WRITE: OpenOptions = OpenOptions {
        read: false,
        write: true,
        append: false,
        create: false,
        create_new: false,
        truncate: false,
    };
    /// Write in place, creating the file if needed (never truncating).
    pub const WRITE_CREATE: OpenOptions = OpenOptions {
        read: false,
        write: true,
        append: false,
        create: true,
        create_new: false,
        truncate: false,
    };
    /// Append, creating the file if needed.
    pub const APPEND: OpenOptions = OpenOptions {
        read: false,
        write: true,
        append: true,
        create: true,
        create_new: false,
        truncate: false,
    };
    /// A new file that must not exist yet.
    pub const CREATE_NEW: OpenOptions = OpenOptions {
        read: false,
        write: true,
        append: false,
        create: false,
        create_new: true,
        truncate: false,
    };
    /// Create or truncate (`File::create`).
    pub const CREATE_TRUNCATE: OpenOptions = OpenOptions {
        read: false,
        write: true,
        append: false,
        create: true,
        create_new: false,
        truncate: true,
    };
}

/// What [`Storage::metadata`] tells about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Length in bytes.
    pub len: u64,
    /// A directory.
    pub is_dir: bool,
    /// A regular file.
    pub is_file: bool,
    /// (device, inode): tells a replaced file from the one a handle reads.
    pub identity: (u64, u64),
    /// Last modification.
    pub modified: SystemTime,
}

/// One entry of [`Storage::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: String,
    /// Its full path.
    pub path: PathBuf,
    /// A directory.
    pub is_dir: bool,
    /// A regular file.
    pub is_file: bool,
}

/// The bytes of a whole file opened for reading only: memory-mapped on the real file system.
pub enum Mapped {
    /// A mapping of the file.
    Map(memmap2::Mmap),
    /// A copy in memory.
    Owned(Vec<u8>),
}

impl Mapped {
    /// Tells the kernel the pages of `range` are not needed now (`madvise(MADV_DONTNEED)`), so a
    /// pass over a large mapped file does not keep all of it resident; a later read of them
    /// faults them back in from the file. Best effort; nothing for a copy in memory.
    #[allow(unsafe_code)]
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let Mapped::Map(map) = self {
            const PAGE: usize = 4096;
            let start = range.start.div_ceil(PAGE) * PAGE;
            let end = range.end.min(map.len()) / PAGE * PAGE;
            if end > start {
                // SAFETY: retro maps only files that are never modified in place where mapped
                // (sealed pack indexes; the commit-graph, which is only appended to or replaced
                // by rename), read-only: dropping the pages only makes the next access read the
                // same bytes from the file again. No reference into these pages outlives the
                // caller's pass over them.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Mapped::Map(map) => map,
            Mapped::Owned(bytes) => bytes,
        }
    }
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync {
    /// Reads at `offset`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Reads from the cursor to the end.
    fn read_to_end(&self, out: &mut Vec<u8>) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (`pwrite`).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at the cursor, or at the end for a file opened to append.
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data (and its length) are durable once this returns.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: as [`StorageFile::sync_data`], with all metadata.
    fn sync_all(&self) -> io::Result<()>;
    /// (device, inode) of the open file.
    fn identity(&self) -> io::Result<(u64, u64)>;
    /// Tries to take an advisory lock (`flock`) without waiting: `WouldBlock` when held.
    fn try_lock(&self, exclusive: bool) -> io::Result<()>;
}

/// A file system: what the depot's writers and readers need, and nothing more.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Opens a file.
    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<Box<dyn StorageFile>>;
    /// Metadata of `path`, following symbolic links.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Metadata of `path` itself.
    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// The entries of a directory (not `.` and `..`), in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// Creates one directory.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its missing parents (no fsync).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` over `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs a directory: the creations, renames and removals in it are durable once it returns.
    fn fsync_dir(&self, path: &Path) -> io::Result<()>;
    /// The whole file, for reading only (a sealed pack index): mapped where possible.
    fn map(&self, path: &Path) -> io::Result<Mapped>;
    /// The running kernel's boot id: a different one after a power cut (only fsynced data
    /// survived) than after a process death (the page cache did too). Empty where unknown.
    fn boot_id(&self) -> String;
    /// True for the OS's file system: its paths can be shared with other processes, locked with
    /// `flock`, and hold a SQLite index and loose objects.
    fn is_os(&self) -> bool;

    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenOptions::READ)?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }

    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool {
        self.metadata(path).is_ok_and(|m| m.is_dir)
    }

    /// Whether `path` is a regular file.
    fn is_file(&self, path: &Path) -> bool {
        self.metadata(path).is_ok_and(|m| m.is_file)
    }
}

/// A `Write` over a file's cursor (for `BufWriter`).
pub(crate) struct Writer<'a>(pub &'a dyn StorageFile);

impl io::Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The OS's file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

impl FsStorage {
    /// The real file system, shared.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(FsStorage)
    }
}

struct FsFile(fs::File);

fn meta(m: &fs::Metadata) -> Metadata {
    use std::os::unix::fs::MetadataExt as _;
    Metadata {
        len: m.len(),
        is_dir: m.is_dir(),
        is_file: m.is_file(),
        identity: (m.dev(), m.ino()),
        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn read_to_end(&self, out: &mut Vec<u8>) -> io::Result<usize> {
        (&self.0).read_to_end(out)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn identity(&self) -> io::Result<(u64, u64)> {
        Ok(meta(&self.0.metadata()?).identity)
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<()> {
        let result = if exclusive {
            fs2::FileExt::try_lock_exclusive(&self.0)
        } else {
            fs2::FileExt::try_lock_shared(&self.0)
        };
        result.map_err(|e| {
            if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() {
                io::Error::new(io::ErrorKind::WouldBlock, e)
            } else {
                e
            }
        })
    }
}

impl Storage for FsStorage {
    fn open(&self, path: &Path, o: OpenOptions) -> io::Result<Box<dyn StorageFile>> {
        let file = fs::OpenOptions::new()
            .read(o.read)
            .write(o.write && !o.append)
            .append(o.append)
            .create(o.create)
            .create_new(o.create_new)
            .truncate(o.truncate)
            .open(path)?;
        Ok(Box::new(FsFile(file)))
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        fs::metadata(path).map(|m| meta(&m))
    }

    fn symlink_metadata(&self, path: &Path) -> io::Result<Metadata> {
        fs::symlink_metadata(path).map(|m| meta(&m))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            out.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                path: entry.path(),
                is_dir: file_type.is_dir(),
                is_file: file_type.is_file(),
            });
        }
        Ok(out)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn fsync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)?.sync_all()
    }

    #[allow(unsafe_code)]
    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let file = fs::File::open(path)?;
        // SAFETY: retro maps only sealed pack indexes, which are written whole (temp file, fsync,
        // rename) and never written again; retro only deletes them whole, and a deleted file
        // stays mapped.
        unsafe { memmap2::Mmap::map(&file) }.map(Mapped::Map)
    }

    fn boot_id(&self) -> String {
        // Read once per process: a process never outlives the boot it started in.
        static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        BOOT_ID
            .get_or_init(|| {
                fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default()
            })
            .clone()
    }

    fn is_os(&self) -> bool {
        true
    }
}

/// Takes a file's `flock` (shared or exclusive), waiting at most `timeout` with backoff from
/// `first_pause` up to `max_pause`.
pub(crate) fn flock_within(
    file: &dyn StorageFile,
    exclusive: bool,
    timeout: Duration,
    first_pause: Duration,
    max_pause: Duration,
) -> io::Result<bool> {
    let start = std::time::Instant::now();
    let mut pause = first_pause;
    loop {
        match file.try_lock(exclusive) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if start.elapsed() >= timeout {
                    return Ok(false);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(max_pause);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Appends `bytes` to `path` durably: creates the file if needed, writes, `fdatasync`s, and when
/// the file was new, fsyncs its directory too (else a power cut may drop the file's entry and
/// with it what was appended). For the one-line logs (failed commands, skipped ref moves).
pub(crate) fn append_durable(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let existed = storage.exists(path);
    let file = storage.open(path, OpenOptions::APPEND)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if !existed {
        if let Some(dir) = path.parent() {
            storage.fsync_dir(dir)?;
        }
    }
    Ok(())
}

/// Appends one line durably, starting it on a line of its own: when a torn (unacknowledged)
/// append left the file without a final newline, a newline goes first, so the new line is never
/// glued onto the torn bytes.
pub(crate) fn append_line_durable(
    storage: &dyn Storage,
    path: &Path,
    line: &str,
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 2);
    if storage.exists(path) {
        let file = storage.open(path, OpenOptions::READ)?;
        let len = file.len()?;
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                bytes.push(b'\n');
            }
        }
    }
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    append_durable(storage, path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_storage_maps_options_like_std() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage;
        let path = dir.path().join("f");
        let file = storage.open(&path, OpenOptions::CREATE_NEW).unwrap();
        file.write_all(b"abc").unwrap();
        assert!(storage.open(&path, OpenOptions::CREATE_NEW).is_err());
        let log = storage.open(&path, OpenOptions::APPEND).unwrap();
        log.write_all(b"de").unwrap();
        file.write_all_at(b"X", 0).unwrap();
        assert_eq!(storage.read(&path).unwrap(), b"Xbcde");
        storage.open(&path, OpenOptions::CREATE_TRUNCATE).unwrap();
        assert_eq!(storage.metadata(&path).unwrap().len, 0);
        assert!(storage.is_file(&path) && storage.is_dir(dir.path()));
    }
}

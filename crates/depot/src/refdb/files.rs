//! Ref files: `<root>/<refname>` holding `sha256:<hex>` (no newline, as go-retro writes) or
//! `ref: <refname>`, and reflogs at `<root>/logs/<refname>`.
//!
//! A transaction, in this order:
//! 1. take the depot lock (`flock` on the lock file; the kernel drops it if we die);
//! 2. for each edit, create `<ref>.lock` with `O_EXCL` (a leftover one can only belong to a dead
//!    writer, since every writer holds the depot lock: it is removed), check the expected value,
//!    write the new value into the lock file and fsync it;
//! 3. if any expectation fails, remove every lock file: nothing changed;
//! 4. rename each lock file over its ref, fsync each directory touched;
//! 5. append the reflog lines and fsync them; release the depot lock.
//!
//! A crash before step 4 leaves at most stale `.lock` files, removed by the next writer. A crash
//! during step 4 of a multi-ref transaction can leave some refs moved: the files backend alone is
//! not atomic across refs (the depot's journal is; see `docs/crash-safety.md`).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{
    ancestors, check_clashes, prepare_edits, DepotLock, Error, LockFile, RefEdit, RefName,
    RefStore, RefValue, ReflogEntry, DEFAULT_LOCK_TIMEOUT,
};
use crate::fsutil;
use crate::storage::{FsStorage, OpenOptions, Storage, StorageFile};

/// Refs as files under a root directory.
pub struct FilesRefStore {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    lock: LockFile,
    lock_timeout: Duration,
}

impl FilesRefStore {
    /// Refs under `root`, writers serialized by an advisory lock on `lock_path`.
    pub fn new(root: impl Into<PathBuf>, lock_path: impl Into<PathBuf>) -> FilesRefStore {
        Self::new_on(Arc::new(FsStorage), root, lock_path)
    }

    /// [`FilesRefStore::new`] on any storage (a simulated one, in power-loss tests).
    pub fn new_on(
        storage: Arc<dyn Storage>,
        root: impl Into<PathBuf>,
        lock_path: impl Into<PathBuf>,
    ) -> FilesRefStore {
        FilesRefStore {
            lock: LockFile::for_storage(&*storage, lock_path.into()),
            storage,
            root: root.into(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// Sets how long a writer waits for the depot lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> FilesRefStore {
        self.lock_timeout = timeout;
        self
    }

    /// The file of a ref.
    pub fn path_of(&self, name: &RefName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// The reflog file of a ref.
    pub fn log_path_of(&self, name: &RefName) -> PathBuf {
        self.root.join("logs").join(name.as_str())
    }

    /// Takes the depot lock.
    pub fn lock(&self) -> Result<DepotLock<'_>, Error> {
        Ok(self.lock.acquire(self.lock_timeout)?)
    }

    fn read_path(&self, path: &Path) -> Result<Option<RefValue>, Error> {
        match read_locked(&*self.storage, path, self.lock_timeout) {
            // A ref file is created empty, then locked and written: a reader that got the lock
            // in between sees the moment before the ref existed.
            Ok(text) if text.is_empty() => Ok(None),
            Ok(text) => RefValue::parse_file_text(&text)
                .map(Some)
                .ok_or_else(|| Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "'{}' is not 'sha256:<hex>' or 'ref: <name>'",
                        text.escape_debug()
                    ),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A directory of other refs, or a name below a file: not a ref.
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(Error::io("read", path)(e)),
        }
    }

    /// Checks that `name`'s ref file and reflog can be written where the tree has room for them,
    /// beyond the ref-name rule every store keeps ([`super::names_clash`]): no reflog of a deleted
    /// ref in the way (a files depot keeps reflogs of deleted refs), and no stray file. Called
    /// before a ref is created, so a move that cannot be written is refused before it is
    /// journaled. A directory left empty by deleted refs is no obstacle: it is removed when the
    /// ref is written.
    pub fn check_paths(&self, name: &RefName) -> Result<(), Error> {
        if name.as_str() == "HEAD" {
            return Ok(());
        }
        let logs = self.root.join("logs");
        // Reflogs that deleted refs left where the new ref's reflog must go: no live ref owns
        // them (the name-clash check ran first), so they move aside, keeping their history.
        for ancestor in ancestors(name) {
            let path = self.log_path_of(&ancestor);
            if self.storage.is_file(&path) {
                self.set_aside_reflog(&ancestor, &path)?;
            }
        }
        let log = self.log_path_of(name);
        if self.storage.is_dir(&log) {
            while let Some(file) =
                first_file(&*self.storage, &log).map_err(Error::io("list", &log))?
            {
                let other = file
                    .strip_prefix(&logs)
                    .ok()
                    .and_then(Path::to_str)
                    .and_then(|t| RefName::new(t).ok());
                match other {
                    Some(other) => self.set_aside_reflog(&other, &file)?,
                    None => {
                        return Err(Error::Corrupt {
                            path: file,
                            reason: format!(
                                "this file is in the way of the reflog of ref '{name}'"
                            ),
                        })
                    }
                }
            }
            remove_empty_dirs(&*self.storage, &log).map_err(Error::io("remove", &log))?;
        }
        let path = self.path_of(name);
        if self.storage.is_dir(&path) {
            if let Some(file) =
                first_file(&*self.storage, &path).map_err(Error::io("list", &path))?
            {
                return Err(Error::Corrupt {
                    path: file,
                    reason: format!("this file is in the way of ref '{name}'"),
                });
            }
        }
        for ancestor in ancestors(name) {
            let path = self.path_of(&ancestor);
            if self.storage.is_file(&path) {
                return Err(Error::Corrupt {
                    path,
                    reason: format!("this file is in the way of ref '{name}'"),
                });
            }
        }
        Ok(())
    }

    /// Writes a ref file and its reflog line without fsync, for a caller that holds the depot lock
    /// and has already made the move durable elsewhere (the depot's journal). The ref file is
    /// rewritten in place under an exclusive `flock` (readers take a shared one), which costs a
    /// few microseconds where a rename over the old file makes ext4 flush the new one.
    pub fn materialize(
        &self,
        name: &RefName,
        new: Option<&RefValue>,
        entry: Option<&ReflogEntry>,
    ) -> Result<(), Error> {
        let path = self.path_of(name);
        match new {
            Some(value) => {
                let dir = path.parent().expect("a ref path has a parent");
                remove_empty_dirs(&*self.storage, &path)
                    .map_err(Error::io("remove empty directory", &path))?;
                let text = value.to_file_text();
                let write =
                    || write_locked(&*self.storage, &path, text.as_bytes(), self.lock_timeout);
                // The directory almost always exists: create it only when the write says not.
                match write() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.storage
                            .create_dir_all(dir)
                            .map_err(Error::io("create directory", dir))?;
                        write()
                    }
                    other => other,
                }
                .map_err(Error::io("write", &path))?;
            }
            None => match self.storage.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path)(e)),
            },
        }
        if let Some(entry) = entry {
            self.append_reflog(name, entry, false)?;
        }
        Ok(())
    }

    /// fsyncs the files of these refs and their reflogs, and every directory from theirs up to
    /// the root.
    pub fn sync_refs<'a>(&self, names: impl IntoIterator<Item = &'a RefName>) -> Result<(), Error> {
        let mut dirs = BTreeSet::new();
        for name in names {
            for path in [self.path_of(name), self.log_path_of(name)] {
                match self.storage.open(&path, OpenOptions::READ) {
                    Ok(file) => file.sync_all().map_err(Error::io("fsync", &path))?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("open", &path)(e)),
                }
                // Every directory up to the root: `materialize` and the reflog appends create
                // missing ones (`refs/consumers/`, `logs/refs/heads/`) without fsync, and a new
                // directory's own entry is in its parent.
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| d.starts_with(&self.root)) {
                    dirs.insert(d.to_path_buf());
                    dir = d.parent();
                }
            }
        }
        for dir in dirs {
            if self.storage.is_dir(&dir) {
                fsutil::fsync_dir(&*self.storage, &dir).map_err(Error::io("fsync", &dir))?;
            }
        }
        Ok(())
    }

    /// Whether the last 64 KiB of a ref's reflog already hold `entry` (recovery replays a move
    /// into the reflog only when its line is not there yet).
    pub fn reflog_tail_contains(&self, name: &RefName, entry: &ReflogEntry) -> Result<bool, Error> {
        let path = self.log_path_of(name);
        let file = match self.storage.open(&path, OpenOptions::READ) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("open", &path)(e)),
        };
        let len = file.len().map_err(Error::io("stat", &path))?;
        let start = len.saturating_sub(64 << 10);
        let mut buf = vec![0u8; (len - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(Error::io("read", &path))?;
        let line = entry.to_line();
        let line = line.trim_end_matches('\n');
        Ok(String::from_utf8_lossy(&buf).lines().any(|l| l == line))
    }

    /// Appends reflog lines in one write, without fsync (the journal holds the truth).
    pub fn append_reflog_entries(
        &self,
        name: &RefName,
        entries: &[ReflogEntry],
    ) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let text: String = entries.iter().map(ReflogEntry::to_line).collect();
        self.append_reflog_text(name, text, false)
    }

    /// Appends one reflog line (without fsync unless `durable`).
    pub fn append_reflog(
        &self,
        name: &RefName,
        entry: &ReflogEntry,
        durable: bool,
    ) -> Result<(), Error> {
        self.append_reflog_text(name, entry.to_line(), durable)
    }

    /// Appends whole lines to a reflog. A power cut can leave its last, unsynced line torn:
    /// then the new text starts with a newline, so it is never glued onto the torn bytes (one
    /// 1-byte read per append).
    fn append_reflog_text(
        &self,
        name: &RefName,
        mut text: String,
        durable: bool,
    ) -> Result<(), Error> {
        let path = self.log_path_of(name);
        let dir = path.parent().expect("a reflog path has a parent");
        let options = OpenOptions {
            read: true,
            ..OpenOptions::APPEND
        };
        // The directory almost always exists: create it only when the open says not.
        let file = match self.storage.open(&path, options) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.storage
                    .create_dir_all(dir)
                    .map_err(Error::io("create directory", dir))?;
                self.storage.open(&path, options)
            }
            other => other,
        }
        .map_err(Error::io("open", &path))?;
        let len = file.len().map_err(Error::io("stat", &path))?;
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_at(&mut last, len - 1)
                .map_err(Error::io("read", &path))?;
            if last[0] != b'\n' {
                text.insert(0, '\n');
            }
        }
        file.write_all(text.as_bytes())
            .map_err(Error::io("append to", &path))?;
        if durable {
            file.sync_data().map_err(Error::io("fsync", &path))?;
        }
        Ok(())
    }

    fn create_lock_file(&self, name: &RefName) -> Result<(PathBuf, Box<dyn StorageFile>), Error> {
        let path = self.root.join(format!("{}.lock", name.as_str()));
        let dir = path.parent().expect("a ref path has a parent");
        fsutil::create_dir_durable(&*self.storage, dir)
            .map_err(Error::io("create directory", dir))?;
        for _ in 0..2 {
            match self.storage.open(&path, OpenOptions::CREATE_NEW) {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Every writer holds the depot lock, and we do: this lock file's writer died.
                    self.storage
                        .remove_file(&path)
                        .map_err(Error::io("remove stale lock", &path))?;
                }
                Err(e) => return Err(Error::io("create", &path)(e)),
            }
        }
        Err(Error::io("create", &path)(io::Error::other(
            "lock file keeps reappearing",
        )))
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(RefName, RefValue)>) -> Result<(), Error> {
        self.walk_collecting(dir, out, None)
    }

    /// Walks `dir` for ref files; with `errors`, an unreadable ref is collected there instead of
    /// ending the walk.
    fn walk_collecting(
        &self,
        dir: &Path,
        out: &mut Vec<(RefName, RefValue)>,
        mut errors: Option<&mut Vec<Error>>,
    ) -> Result<(), Error> {
        let entries = match self.storage.read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
            Err(e) => return Err(Error::io("list", dir)(e)),
        };
        for entry in entries {
            let path = entry.path;
            if entry.is_dir {
                self.walk_collecting(&path, out, errors.as_deref_mut())?;
            } else if entry.is_file {
                let Ok(relative) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(text) = relative.to_str() else {
                    continue;
                };
                // Lock and temp files are not refs; RefName refuses them.
                if let Ok(name) = RefName::new(text) {
                    match (self.read_path(&path), errors.as_deref_mut()) {
                        (Ok(Some(value)), _) => out.push((name, value)),
                        (Ok(None), _) => {}
                        (Err(e), Some(errors)) => errors.push(e),
                        (Err(e), None) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The first file (not directory) under `dir`, if any.
fn first_file(storage: &dyn Storage, dir: &Path) -> io::Result<Option<PathBuf>> {
    for entry in storage.read_dir(dir)? {
        if entry.is_dir {
            if let Some(found) = first_file(storage, &entry.path)? {
                return Ok(Some(found));
            }
        } else {
            return Ok(Some(entry.path));
        }
    }
    Ok(None)
}

impl FilesRefStore {
    /// A ref's reflog, oldest first, and the numbers (1-based) of lines that are not reflog
    /// entries. Those are skipped, not fatal: a reflog is the journal's materialization, and a
    /// power cut can tear its last, unsynced line; fsck reports them.
    pub fn reflog_checked(&self, name: &RefName) -> Result<(Vec<ReflogEntry>, Vec<usize>), Error> {
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        self.for_each_reflog_line(name, &mut |line| {
            match line {
                Ok(entry) => entries.push(entry),
                Err(n) => bad.push(n),
            }
            Ok(())
        })?;
        Ok((entries, bad))
    }

    /// Visits the reflog of `name`, oldest first, streamed (never held in memory): each entry
    /// as `Ok`, each line that is not one as `Err(its 1-based number)`.
    pub fn for_each_reflog_line(
        &self,
        name: &RefName,
        visit: &mut dyn FnMut(Result<ReflogEntry, usize>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        use std::io::BufRead;
        let path = self.log_path_of(name);
        let reader = match super::compact::reader(&*self.storage, &path) {
            Ok(Some(reader)) => reader,
            Ok(None) => return Ok(()),
            // The reflogs of refs below this name (`x/y` for `x`): this one has none.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        // A frame that does not decompress is damage; any other failure is the disk's.
        let corrupt = |e: io::Error| match e.kind() {
            io::ErrorKind::Other => Error::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            },
            _ => Error::io("read", &path)(e),
        };
        let mut reader = io::BufReader::with_capacity(1 << 16, reader);
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // Opening a directory succeeds; reading it does not: no reflog of its own.
                Err(e) if e.kind() == io::ErrorKind::IsADirectory && number == 0 => return Ok(()),
                Err(e) => return Err(corrupt(e)),
            }
            number += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.is_empty() {
                continue;
            }
            match std::str::from_utf8(text)
                .ok()
                .and_then(ReflogEntry::parse_line)
            {
                Some(entry) => visit(Ok(entry))?,
                None => visit(Err(number))?,
            }
        }
    }

    /// Folds the reflog of `name` into one compressed frame (see `refdb/compact.rs`); the
    /// caller holds the depot lock. `Ok(false)` when there was nothing worth folding.
    pub fn compact_reflog(&self, name: &RefName) -> Result<bool, Error> {
        let path = self.log_path_of(name);
        super::compact::compact(&*self.storage, &path, &self.root)
            .map_err(Error::io("compact", &path))
    }

    /// Moves the reflog of the deleted ref `name` (at `path`) to `logs/deleted/`, under a name
    /// that says which ref it was and when it moved, so that a new ref can take its place; the
    /// move is made durable (both directories fsynced) before the caller journals anything.
    fn set_aside_reflog(&self, name: &RefName, path: &Path) -> Result<(), Error> {
        let aside = self.root.join("logs/deleted");
        self.storage
            .create_dir_all(&aside)
            .map_err(Error::io("create directory", &aside))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let target = aside.join(format!("{}.{stamp}", name.as_str().replace('/', "%2F")));
        self.storage
            .rename(path, &target)
            .map_err(Error::io("move aside", path))?;
        for dir in [aside.as_path(), path.parent().unwrap_or(&aside)] {
            self.storage
                .fsync_dir(dir)
                .map_err(Error::io("fsync", dir))?;
        }
        Ok(())
    }
}

/// Removes `path` if it is a tree of empty directories (left by deleted refs), so that a ref file
/// can take its place. Anything else is left alone.
fn remove_empty_dirs(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.symlink_metadata(path) {
        Ok(meta) if meta.is_dir => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    for entry in storage.read_dir(path)? {
        if entry.is_dir {
            remove_empty_dirs(storage, &entry.path)?;
        }
    }
    match storage.remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes a ref file's `flock` (shared or exclusive), waiting at most `timeout` (the depot's lock
/// timeout): these are held for microseconds, but a stopped process must not hang every writer.
fn flock_within(file: &dyn StorageFile, exclusive: bool, timeout: Duration) -> io::Result<()> {
    let start = std::time::Instant::now();
    let locked = crate::storage::flock_within(
        file,
        exclusive,
        timeout,
        Duration::from_micros(20),
        Duration::from_millis(5),
    )?;
    if !locked {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "another process kept the ref file locked for {:.1}s",
                start.elapsed().as_secs_f32()
            ),
        ));
    }
    Ok(())
}

/// Reads a ref file under a shared `flock`, so an in-place rewrite is never seen half done.
/// `HEAD` is only ever replaced whole (temp file and rename), so it is read without the lock.
fn read_locked(storage: &dyn Storage, path: &Path, timeout: Duration) -> io::Result<String> {
    let file = storage.open(path, OpenOptions::READ)?;
    if path.file_name().is_none_or(|name| name != "HEAD") {
        flock_within(&*file, false, timeout)?;
    }
    // A ref file is one short line: one `pread` of a buffer larger than any ref text reads it
    // whole (no `stat`, no cursor), and a longer file is read on to its end.
    let mut bytes = vec![0u8; 256];
    let mut filled = 0;
    loop {
        let want = bytes.len() - filled;
        let n = file.read_at(&mut bytes[filled..], filled as u64)?;
        filled += n;
        // A short read of a regular file is its end: no second call to learn that.
        if n < want {
            break;
        }
        bytes.resize(bytes.len() * 2, 0);
    }
    bytes.truncate(filled);
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Rewrites a ref file in place under an exclusive `flock`.
fn write_locked(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    let file = storage.open(path, OpenOptions::WRITE_CREATE)?;
    flock_within(&*file, true, timeout)?;
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)?;
    Ok(())
}

impl RefStore for FilesRefStore {
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, Error> {
        self.read_path(&self.path_of(name))
    }

    fn transaction(&self, edits: &[RefEdit]) -> Result<(), Error> {
        let _lock = self.lock()?;
        let prepared = prepare_edits(edits, |n| self.read(n))?;
        check_clashes(&prepared, |n| self.read(n), |n| self.list_under(n))?;
        for (edit, actual) in &prepared {
            if edit.new.is_some() && actual.is_none() {
                self.check_paths(&edit.name)?;
            }
        }
        let mut locks: Vec<PathBuf> = Vec::with_capacity(prepared.len());
        let result = (|| {
            for (edit, _) in &prepared {
                let (path, file) = self.create_lock_file(&edit.name)?;
                locks.push(path.clone());
                if let Some(value) = &edit.new {
                    file.write_all(value.to_file_text().as_bytes())
                        .map_err(Error::io("write", &path))?;
                    file.sync_all().map_err(Error::io("fsync", &path))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for path in &locks {
                let _ = self.storage.remove_file(path);
            }
            return Err(e);
        }
        let mut dirs = BTreeSet::new();
        for ((edit, _), lock) in prepared.iter().zip(&locks) {
            let path = self.path_of(&edit.name);
            if edit.new.is_some() {
                remove_empty_dirs(&*self.storage, &path)
                    .map_err(Error::io("remove empty directory", &path))?;
                self.storage
                    .rename(lock, &path)
                    .map_err(Error::io("rename", lock))?;
            } else {
                match self.storage.remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &path)(e)),
                }
                self.storage
                    .remove_file(lock)
                    .map_err(Error::io("remove", lock))?;
            }
            dirs.insert(
                path.parent()
                    .expect("a ref path has a parent")
                    .to_path_buf(),
            );
        }
        for dir in dirs {
            fsutil::fsync_dir(&*self.storage, &dir).map_err(Error::io("fsync", &dir))?;
        }
        let date = chrono::Utc::now();
        for (edit, old) in &prepared {
            if let Some(RefValue::Symbolic(_)) = &edit.new {
                continue;
            }
            let entry = ReflogEntry {
                old: old.as_ref().and_then(RefValue::id),
                new: edit.new.as_ref().and_then(RefValue::id),
                date,
                session: edit.log.session.clone(),
                message: edit.log.message.clone(),
            };
            self.append_reflog(&edit.name, &entry, true)?;
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, Error> {
        let mut out = Vec::new();
        self.walk(&self.root.join("refs"), &mut out)?;
        if let Some(head) = self.read(&RefName::head())? {
            out.push((RefName::head(), head));
        }
        out.retain(|(name, _)| name.as_str().starts_with(prefix));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn list_lenient(&self, prefix: &str) -> Result<super::LenientListing, Error> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        self.walk_collecting(&self.root.join("refs"), &mut out, Some(&mut errors))?;
        match self.read(&RefName::head()) {
            Ok(Some(head)) => out.push((RefName::head(), head)),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        out.retain(|(name, _)| name.as_str().starts_with(prefix));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, errors))
    }

    fn list_under(&self, name: &RefName) -> Result<Vec<RefName>, Error> {
        let mut out = Vec::new();
        self.walk(&self.path_of(name), &mut out)?;
        let mut names: Vec<RefName> = out.into_iter().map(|(n, _)| n).collect();
        names.sort();
        Ok(names)
    }

    fn reflog(&self, name: &RefName) -> Result<Vec<ReflogEntry>, Error> {
        Ok(FilesRefStore::reflog_checked(self, name)?.0)
    }

    fn reflog_checked(&self, name: &RefName) -> Result<(Vec<ReflogEntry>, Vec<usize>), Error> {
        FilesRefStore::reflog_checked(self, name)
    }

    fn for_each_reflog_line(
        &self,
        name: &RefName,
        visit: &mut dyn FnMut(Result<ReflogEntry, usize>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        FilesRefStore::for_each_reflog_line(self, name, visit)
    }

    fn compact_reflog(&self, name: &RefName) -> Result<bool, Error> {
        FilesRefStore::compact_reflog(self, name)
    }
}

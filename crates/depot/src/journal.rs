//! The journal: how a native depot makes a commit durable with one fsync.
//!
//! A commit's objects **and** its ref moves are appended to the active pack in one write, as object
//! records followed by one journal record, and made durable by one `fdatasync`. The journal record is
//! the truth about refs; the ref files and reflogs are its *materialization*, written right after
//! (without fsync) under the same depot lock, so readers can keep reading plain ref files.
//!
//! `<depot>/journal` (64 bytes, overwritten in place, crc-checked) remembers how far the packs have
//! been materialized and how far that materialization is known to be durable, with the boot id of
//! the kernel that wrote it:
//!
//! - same boot, materialized up to the end of the packs: nothing to do (the common case, one read);
//! - same boot, behind the end: a writer died between its fsync and its materialization (the page
//!   cache survived): replay the journal records from the materialized position;
//! - different boot (power cut, reboot): only fsynced data survived, so replay from the durable
//!   position, fsync what was replayed, and advance the durable position.
//!
//! Every `DURABLE_EVERY` bytes of journal a writer also fsyncs the ref files it materialized and
//! advances the durable position, so that the replay after a reboot stays short.
//! See `docs/crash-safety.md` for the full argument.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::hash::ObjectId;
use crate::lockfile::{DepotLock, LockFile};
use crate::odb::{self, PackStore, Position, RecordKind};
use crate::refdb::{self, FilesRefStore, RefName, RefValue, ReflogEntry};
use crate::storage::{OpenOptions, Storage};

const STATE_MAGIC: &[u8; 8] = b"RETROJN1";
const STATE_LEN: usize = 8 + 8 + 16 + 16 + 4;
/// Advance the durable position after this many journal bytes.
const DURABLE_EVERY: u64 = 4 << 20;

/// One ref move inside a journal record, with its reflog details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalUpdate {
    pub name: RefName,
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
    pub session: String,
    pub message: String,
}

/// A journal record: ref moves made together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalRecord {
    pub date: DateTime<Utc>,
    pub updates: Vec<JournalUpdate>,
}

fn one_token(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.replace(char::is_whitespace, "_")
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

fn show(id: &Option<ObjectId>) -> String {
    id.map_or_else(|| "-".to_owned(), |id| id.to_string())
}

impl JournalRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "retro-journal 1\ndate {}\n",
            crate::object::format_date(self.date)
        );
        for update in &self.updates {
            out.push_str(&format!(
                "update {} {} {} {}\t{}\n",
                update.name,
                show(&update.old),
                show(&update.new),
                one_token(&update.session),
                one_line(&update.message)
            ));
        }
        out.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<JournalRecord> {
        let text = str::from_utf8(bytes).ok()?;
        let mut lines = text.split_terminator('\n');
        if lines.next()? != "retro-journal 1" {
            return None;
        }
        let date = crate::object::parse_date(lines.next()?.strip_prefix("date ")?).ok()?;
        let read = |t: &str| -> Option<Option<ObjectId>> {
            if t == "-" {
                Some(None)
            } else {
                t.parse().ok().map(Some)
            }
        };
        let mut updates = Vec::new();
        for line in lines {
            let (head, message) = line.strip_prefix("update ")?.split_once('\t')?;
            let mut parts = head.split(' ');
            let name = RefName::new(parts.next()?).ok()?;
            let old = read(parts.next()?)?;
            let new = read(parts.next()?)?;
            let session = parts.next()?;
            updates.push(JournalUpdate {
                name,
                old,
                new,
                session: if session == "-" {
                    String::new()
                } else {
                    session.to_owned()
                },
                message: message.to_owned(),
            });
        }
        Some(JournalRecord { date, updates })
    }

    fn reflog_entry(&self, update: &JournalUpdate) -> ReflogEntry {
        ReflogEntry {
            old: update.old,
            new: update.new,
            date: self.date,
            session: update.session.clone(),
            message: update.message.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    boot: u64,
    materialized: Position,
    durable: Position,
}

fn boot_hash(storage: &dyn Storage) -> u64 {
    let id = storage.boot_id();
    let digest = ObjectId::of(id.as_bytes());
    u64::from_be_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// What went wrong in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The pack store failed.
    #[error(transparent)]
    Objects(#[from] odb::Error),
    /// The ref store failed.
    #[error(transparent)]
    Refs(#[from] refdb::Error),
    /// The state file could not be written.
    #[error("could not {verb} '{path}': {source}")]
    Io {
        /// What was being done.
        verb: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The native depot's journal: packs, ref files and the state file, under the depot lock.
pub(crate) struct Journal {
    storage: Arc<dyn Storage>,
    packs: std::sync::Arc<PackStore>,
    refs: std::sync::Arc<FilesRefStore>,
    root: PathBuf,
    state_path: PathBuf,
    /// The state file, opened once for reading and writing in place (it is never replaced:
    /// created once, then overwritten), so a commit reads and writes it without opening it.
    /// `true` with it when it was opened for writing (a read-only depot opens it for reading).
    state_file: std::sync::Mutex<Option<(Box<dyn crate::storage::StorageFile>, bool)>>,
    lock_file: LockFile,
    lock_timeout: Duration,
}

/// The file under `logs/` listing journaled ref moves that recovery skipped.
pub(crate) const SKIPPED_MOVES: &str = "skipped-ref-moves";

/// Whether a materialization failed because the file tree has no room for the ref (a file where a
/// directory must be, or the reverse): no retry can succeed.
fn cannot_fit(err: &refdb::Error) -> bool {
    match err {
        refdb::Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::IsADirectory
                | std::io::ErrorKind::NotADirectory
                | std::io::ErrorKind::DirectoryNotEmpty
                | std::io::ErrorKind::AlreadyExists
                | std::io::ErrorKind::InvalidFilename
        ),
        _ => false,
    }
}

impl Journal {
    pub(crate) fn new(
        packs: std::sync::Arc<PackStore>,
        refs: std::sync::Arc<FilesRefStore>,
        root: &Path,
    ) -> Journal {
        let storage = packs.storage().clone();
        Journal {
            lock_file: LockFile::for_storage(&*storage, root.join("lock")),
            storage,
            packs,
            refs,
            root: root.to_path_buf(),
            state_path: root.join("journal"),
            state_file: std::sync::Mutex::new(None),
            lock_timeout: refdb::DEFAULT_LOCK_TIMEOUT,
        }
    }

    pub(crate) fn set_lock_timeout(&mut self, timeout: Duration) {
        self.lock_timeout = timeout;
    }

    pub(crate) fn lock(&self) -> Result<DepotLock<'_>, JournalError> {
        Ok(self
            .lock_file
            .acquire(self.lock_timeout)
            .map_err(refdb::Error::from)?)
    }

    fn boot_hash(&self) -> u64 {
        boot_hash(&*self.storage)
    }

    /// Runs `f` on the state file, opened on first use (never created here): for reading and
    /// writing, or, when `write` is false and the depot cannot be written (a read-only mount),
    /// for reading only.
    fn with_state_file<T>(
        &self,
        write: bool,
        f: impl FnOnce(&dyn crate::storage::StorageFile) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut cached = self.state_file.lock().unwrap_or_else(|e| e.into_inner());
        if cached
            .as_ref()
            .is_none_or(|(_, writable)| write && !writable)
        {
            let both = OpenOptions {
                read: true,
                ..OpenOptions::WRITE
            };
            *cached = Some(match self.storage.open(&self.state_path, both) {
                Ok(file) => (file, true),
                Err(e) if write || e.kind() == std::io::ErrorKind::NotFound => return Err(e),
                Err(_) => (
                    self.storage.open(&self.state_path, OpenOptions::READ)?,
                    false,
                ),
            });
        }
        f(&*cached.as_ref().expect("opened above").0)
    }

    fn read_state(&self) -> Option<State> {
        let mut buf = [0u8; STATE_LEN];
        self.with_state_file(false, |file| file.read_exact_at(&mut buf, 0))
            .ok()?;
        if &buf[..8] != STATE_MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(buf[STATE_LEN - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(&buf[..STATE_LEN - 4]) != crc {
            return None;
        }
        let u = |at: usize| u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        Some(State {
            boot: u(8),
            materialized: Position {
                pack: u(16),
                offset: u(24),
            },
            durable: Position {
                pack: u(32),
                offset: u(40),
            },
        })
    }

    fn write_state(&self, state: &State, sync: bool) -> Result<(), JournalError> {
        let mut buf = Vec::with_capacity(STATE_LEN);
        buf.extend_from_slice(STATE_MAGIC);
        for v in [
            state.boot,
            state.materialized.pack,
            state.materialized.offset,
            state.durable.pack,
            state.durable.offset,
        ] {
            buf.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        let io = |verb| {
            let path = self.state_path.clone();
            move |source| JournalError::Io { verb, path, source }
        };
        // Created once; then its directory is fsynced too, or a power cut could drop the file
        // and with it the durable position (recovery would then replay every pack).
        let written = self.with_state_file(true, |file| {
            file.write_all_at(&buf, 0)?;
            if sync {
                file.sync_data()?;
            }
            Ok(())
        });
        let created = match written {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = self
                    .storage
                    .open(&self.state_path, OpenOptions::WRITE_CREATE)
                    .map_err(io("open"))?;
                file.write_all_at(&buf, 0).map_err(io("write"))?;
                file.sync_data().map_err(io("fsync"))?;
                true
            }
            Err(e) => return Err(io("write")(e)),
        };
        if created {
            crate::fsutil::fsync_dir(&*self.storage, &self.root).map_err(io("fsync"))?;
        }
        Ok(())
    }

    /// Tells the pack store where acknowledged data ends (the materialized position), so that
    /// damage below it is reported as damage and never truncated as a torn write.
    pub(crate) fn publish_acknowledged(&self) -> Result<(), JournalError> {
        if let Some(state) = self.read_state() {
            self.packs.set_acknowledged(state.materialized)?;
        }
        Ok(())
    }

    /// fsyncs every ref file (and reflog) that a journal record after `from` moved.
    fn sync_refs_moved_since(&self, from: Position) -> Result<(), JournalError> {
        let mut touched = BTreeSet::new();
        self.packs.scan_journal(from, |_, payload| {
            if let Some(record) = JournalRecord::decode(payload) {
                touched.extend(record.updates.into_iter().map(|u| u.name));
            }
            Ok(())
        })?;
        self.refs.sync_refs(&touched)?;
        Ok(())
    }

    /// Makes every ref move journaled so far durable in the ref files (fsyncs them) and records
    /// the packs' end as both materialized and durable, fsynced. gc calls it before it deletes
    /// packs, and again after, since the journal records it deletes could no longer be replayed
    /// after a power cut. Call with the depot lock held, after `recover_locked`.
    pub(crate) fn settle_locked(&self) -> Result<(), JournalError> {
        let end = self.packs.end()?;
        let boot = self.boot_hash();
        let durable = self
            .read_state()
            .filter(|s| s.boot == boot)
            .map_or(Position { pack: 0, offset: 0 }, |s| s.durable);
        if durable != end {
            self.sync_refs_moved_since(durable)?;
        }
        self.write_state(
            &State {
                boot,
                materialized: end,
                durable: end,
            },
            true,
        )
    }

    /// Rewrites a ref whose file is unreadable with `value`, recorded like any move (a journal
    /// record, fsynced, then the file and a reflog line). The file's damaged content is not
    /// compared: that is what is being repaired. Call with the depot lock held.
    pub(crate) fn restore_ref_locked(
        &self,
        name: &RefName,
        value: ObjectId,
        message: &str,
    ) -> Result<(), JournalError> {
        let record = JournalRecord {
            date: Utc::now(),
            updates: vec![JournalUpdate {
                name: name.clone(),
                old: None,
                new: Some(value),
                session: "repair".to_owned(),
                message: message.to_owned(),
            }],
        };
        self.commit_locked(Vec::new(), &record)
    }

    /// True when the materialized refs may lag the packs (checked without the lock).
    pub(crate) fn needs_recovery(&self) -> Result<bool, JournalError> {
        let end = self.packs.end()?;
        Ok(match self.read_state() {
            Some(state) => state.boot != self.boot_hash() || state.materialized != end,
            // No state (a new depot, or its entry lost in a power cut): any record in any pack
            // may be unmaterialized, not only in the newest one, which a seal leaves empty.
            None => end.offset > 8 || end.pack > 1,
        })
    }

    /// Brings ref files up to date with the journal. Call with the depot lock held.
    pub(crate) fn recover_locked(&self) -> Result<(), JournalError> {
        let end = self.packs.end()?;
        let boot = self.boot_hash();
        let state = self.read_state();
        if let Some(s) = &state {
            self.packs.set_acknowledged(s.materialized)?;
        }
        let (from, rebooted) = match state {
            Some(s) if s.boot == boot && s.materialized == end => return Ok(()),
            Some(s) if s.boot == boot => (s.materialized, false),
            Some(s) => (s.durable, true),
            None => (Position { pack: 0, offset: 0 }, true),
        };
        let mut records = Vec::new();
        let end = self.packs.scan_journal(from, |_, payload| {
            if let Some(record) = JournalRecord::decode(payload) {
                records.push(record);
            }
            Ok(())
        })?;
        // Replay in order: each ref file ends at its last value, and a reflog line is added only
        // where the reflog's tail does not hold it yet (the crash may have come before or after
        // either write).
        //
        // A move the file tree has no room for (a ref name clashing with a directory of refs, as
        // the code before the name check let through) can never be written: it is skipped and
        // recorded in `logs/skipped-ref-moves` instead of failing every later open. Any other
        // failure (a full disk, say) may pass, so it stops recovery, to be retried.
        let mut touched = BTreeSet::new();
        for record in &records {
            for update in &record.updates {
                let written = self.refs.materialize(
                    &update.name,
                    update.new.map(RefValue::Direct).as_ref(),
                    None,
                );
                if let Err(err) = written {
                    if !cannot_fit(&err) {
                        return Err(err.into());
                    }
                    self.skip_move(record, update, "the ref file", &err)?;
                    continue;
                }
                touched.insert(update.name.clone());
                let entry = record.reflog_entry(update);
                let logged = self
                    .refs
                    .reflog_tail_contains(&update.name, &entry)
                    .and_then(|present| match present {
                        true => Ok(()),
                        false => self.refs.append_reflog(&update.name, &entry, false),
                    });
                if let Err(err) = logged {
                    if !cannot_fit(&err) {
                        return Err(err.into());
                    }
                    self.skip_move(record, update, "the reflog line", &err)?;
                }
            }
        }
        let durable = if rebooted {
            self.refs.sync_refs(&touched)?;
            end
        } else {
            state.map_or(end, |s| s.durable)
        };
        self.write_state(
            &State {
                boot,
                materialized: end,
                durable,
            },
            rebooted,
        )
    }

    /// The ref files and reflogs this journal materializes.
    pub(crate) fn refs(&self) -> &FilesRefStore {
        &self.refs
    }

    fn skipped_path(&self) -> PathBuf {
        self.root.join("logs").join(SKIPPED_MOVES)
    }

    /// Records a journaled move recovery could not write (one line, fsynced: it is the only
    /// trace of the move outside the pack).
    fn skip_move(
        &self,
        record: &JournalRecord,
        update: &JournalUpdate,
        what: &str,
        err: &refdb::Error,
    ) -> Result<(), JournalError> {
        let path = self.skipped_path();
        let io = |verb| {
            let path = path.clone();
            move |source| JournalError::Io { verb, path, source }
        };
        if let Some(dir) = path.parent() {
            self.storage
                .create_dir_all(dir)
                .map_err(io("create directory"))?;
        }
        let line = format!(
            "{} skipped {what} of the journaled move of {} from {} to {} (session {}, {}): {}\n",
            crate::object::format_date(record.date),
            update.name,
            show(&update.old),
            show(&update.new),
            one_token(&update.session),
            one_line(&update.message),
            one_line(&err.to_string()),
        );
        crate::storage::append_durable(&*self.storage, &path, line.as_bytes())
            .map_err(io("append to"))
    }

    /// The lines of `logs/skipped-ref-moves`: journaled moves recovery skipped.
    pub(crate) fn skipped_moves(&self) -> Result<Vec<String>, JournalError> {
        let path = self.skipped_path();
        match self.storage.read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(JournalError::Io {
                verb: "read",
                path,
                source,
            }),
        }
    }

    /// Appends objects that no ref names yet (a failed command's record) durably, and advances
    /// the journal state past them. Call with the depot lock held.
    pub(crate) fn append_objects_locked(
        &self,
        records: Vec<(RecordKind, Vec<u8>)>,
    ) -> Result<(), JournalError> {
        self.packs.append(&records, true)?;
        let end = self.packs.end()?;
        let boot = self.boot_hash();
        let durable = self
            .read_state()
            .filter(|s| s.boot == boot)
            .map_or(Position { pack: 0, offset: 0 }, |s| s.durable);
        self.write_state(
            &State {
                boot,
                materialized: end,
                durable,
            },
            false,
        )
    }

    /// Appends `objects` and one journal record in one write and one fdatasync, then materializes
    /// the ref moves. Call with the depot lock held, after checking the moves' expectations.
    pub(crate) fn commit_locked(
        &self,
        mut records: Vec<(RecordKind, Vec<u8>)>,
        journal: &JournalRecord,
    ) -> Result<(), JournalError> {
        records.push((RecordKind::Journal, journal.encode()));
        let (positions, end) = self.packs.append_with_end(&records, true)?;
        // The commit is durable now; what follows only materializes it: each ref once, with its
        // final value, and its reflog lines in one append.
        let mut finals: Vec<(&RefName, Option<ObjectId>, Vec<ReflogEntry>)> = Vec::new();
        for update in &journal.updates {
            let entry = journal.reflog_entry(update);
            match finals.iter_mut().find(|(name, _, _)| *name == &update.name) {
                Some((_, value, entries)) => {
                    *value = update.new;
                    entries.push(entry);
                }
                None => finals.push((&update.name, update.new, vec![entry])),
            }
        }
        for (name, value, entries) in &finals {
            self.refs
                .materialize(name, value.map(RefValue::Direct).as_ref(), None)?;
            self.refs.append_reflog_entries(name, entries)?;
        }
        // `end` is where the pack ended right after this append: another process may append
        // objects after it (never journal records: those need the depot lock held here), which
        // the next recovery check then scans past.
        let last = positions.last().copied().unwrap_or(end);
        let boot = self.boot_hash();
        let previous = self.read_state().filter(|s| s.boot == boot);
        let mut durable = previous.map_or(Position { pack: 0, offset: 0 }, |s| s.durable);
        let behind =
            durable.pack != last.pack || last.offset.saturating_sub(durable.offset) > DURABLE_EVERY;
        if behind {
            self.sync_refs_moved_since(durable)?;
            durable = end;
        }
        self.write_state(
            &State {
                boot,
                materialized: end,
                durable,
            },
            behind,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_records_round_trip() {
        let record = JournalRecord {
            date: crate::object::parse_date("2026-11-25T10:00:00Z").unwrap(),
            updates: vec![
                JournalUpdate {
                    name: RefName::master(),
                    old: None,
                    new: Some(ObjectId::of(b"a")),
                    session: "s1".to_owned(),
                    message: "apply accounts/a deposit".to_owned(),
                },
                JournalUpdate {
                    name: RefName::new("refs/consumers/x").unwrap(),
                    old: Some(ObjectId::of(b"a")),
                    new: None,
                    session: String::new(),
                    message: "delete".to_owned(),
                },
            ],
        };
        let decoded = JournalRecord::decode(&record.encode()).unwrap();
        assert_eq!(decoded, record);
        let odd = JournalRecord {
            date: record.date,
            updates: vec![JournalUpdate {
                session: "s 1".to_owned(),
                message: "two\nlines\tand tab".to_owned(),
                ..record.updates[0].clone()
            }],
        };
        let decoded = JournalRecord::decode(&odd.encode()).unwrap();
        assert_eq!(decoded.updates[0].session, "s_1");
        assert_eq!(decoded.updates[0].message, "two lines and tab");
    }
}

//! The ref database: named pointers to checkpoints, moved only by compare-and-swap.
//!
//! A ref holds an object id (`refs/heads/master`) or names another ref (`HEAD` holding
//! `ref: refs/heads/master`). Every update is a [`RefEdit`] with an [`Expected`] previous value,
//! checked under the writer lock; a mismatch is [`Error::Conflict`] carrying the actual value, and a
//! transaction of several edits applies all of them or none. Each applied edit appends a
//! [`ReflogEntry`] under the same lock.
//!
//! Backends: [`FilesRefStore`] (ref files, `.lock` files, fsync, rename; see its docs for the write
//! order) and [`MemoryRefStore`].

mod compact;
mod files;
mod memory;
mod name;

use std::fmt;
use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::hash::ObjectId;

pub use crate::lockfile::{DepotLock, LockError, LockFile, DEFAULT_LOCK_TIMEOUT};
pub use files::FilesRefStore;
pub use memory::MemoryRefStore;
pub use name::{RefName, RefNameError};

/// What a ref holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefValue {
    /// An object id.
    Direct(ObjectId),
    /// Another ref's name.
    Symbolic(RefName),
}

impl RefValue {
    /// The text stored in a ref file: `sha256:<hex>` or `ref: <name>`.
    pub fn to_file_text(&self) -> String {
        match self {
            RefValue::Direct(id) => id.to_string(),
            RefValue::Symbolic(name) => format!("ref: {name}"),
        }
    }

    /// Parses a ref file's text (a trailing newline is tolerated).
    pub fn parse_file_text(text: &str) -> Option<RefValue> {
        let text = text.trim_end_matches('\n');
        if let Some(target) = text.strip_prefix("ref: ") {
            return RefName::new(target).ok().map(RefValue::Symbolic);
        }
        text.parse().ok().map(RefValue::Direct)
    }

    /// The id, if direct.
    pub fn id(&self) -> Option<ObjectId> {
        match self {
            RefValue::Direct(id) => Some(*id),
            RefValue::Symbolic(_) => None,
        }
    }
}

impl fmt::Display for RefValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_file_text())
    }
}

/// The previous value an edit expects (gix-ref's `PreviousValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Whatever it is, or nothing.
    Any,
    /// It must exist, with any value.
    MustExist,
    /// It must not exist yet.
    MustNotExist,
    /// It must hold exactly this id.
    MustBe(ObjectId),
    /// It must hold exactly this id, or not exist.
    MustBeOrAbsent(Option<ObjectId>),
}

impl Expected {
    /// Whether `actual` satisfies the expectation.
    pub fn allows(&self, actual: Option<&RefValue>) -> bool {
        match self {
            Expected::Any => true,
            Expected::MustExist => actual.is_some(),
            Expected::MustNotExist => actual.is_none(),
            Expected::MustBe(id) => actual == Some(&RefValue::Direct(*id)),
            Expected::MustBeOrAbsent(None) => actual.is_none(),
            Expected::MustBeOrAbsent(Some(id)) => actual == Some(&RefValue::Direct(*id)),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Any => f.write_str("any value"),
            Expected::MustExist => f.write_str("an existing value"),
            Expected::MustNotExist | Expected::MustBeOrAbsent(None) => f.write_str("no value"),
            Expected::MustBe(id) | Expected::MustBeOrAbsent(Some(id)) => write!(f, "{id}"),
        }
    }
}

/// Who made a ref move and why, for the reflog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogInfo {
    /// The session that moved the ref.
    pub session: String,
    /// A one-line message.
    pub message: String,
}

/// One change to one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEdit {
    /// The ref. A symbolic ref is followed to its target unless `new` is symbolic.
    pub name: RefName,
    /// What its value must be now.
    pub expected: Expected,
    /// Its new value, or `None` to delete it.
    pub new: Option<RefValue>,
    /// For the reflog.
    pub log: LogInfo,
}

impl RefEdit {
    /// Points `name` at `new` if it now holds `old` (`None`: if it does not exist).
    pub fn cas(name: RefName, old: Option<ObjectId>, new: ObjectId, log: LogInfo) -> RefEdit {
        RefEdit {
            name,
            expected: match old {
                Some(id) => Expected::MustBe(id),
                None => Expected::MustNotExist,
            },
            new: Some(RefValue::Direct(new)),
            log,
        }
    }
}

/// One line of a ref's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflogEntry {
    /// The value before (`None`: did not exist).
    pub old: Option<ObjectId>,
    /// The value after (`None`: deleted).
    pub new: Option<ObjectId>,
    /// When.
    pub date: DateTime<Utc>,
    /// Who.
    pub session: String,
    /// Why.
    pub message: String,
}

const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

impl ReflogEntry {
    /// `<old> <new> <date> <session>\t<message>\n`, zeros for a missing side.
    pub fn to_line(&self) -> String {
        let show = |id: &Option<ObjectId>| id.map_or_else(|| ZERO.to_owned(), |id| id.to_string());
        let session = if self.session.is_empty() {
            "-".to_owned()
        } else {
            self.session.replace(char::is_whitespace, "_")
        };
        format!(
            "{} {} {} {}\t{}\n",
            show(&self.old),
            show(&self.new),
            crate::object::format_date(self.date),
            session,
            self.message.replace(['\n', '\r'], " ")
        )
    }

    /// Parses one reflog line (without its newline).
    pub fn parse_line(line: &str) -> Option<ReflogEntry> {
        let (head, message) = line.split_once('\t')?;
        let mut parts = head.split(' ');
        let old = parts.next()?;
        let new = parts.next()?;
        let date = crate::object::parse_date(parts.next()?).ok()?;
        let session = parts.next()?.to_owned();
        let read = |t: &str| -> Option<Option<ObjectId>> {
            if t == ZERO {
                Some(None)
            } else {
                t.parse().ok().map(Some)
            }
        };
        Some(ReflogEntry {
            old: read(old)?,
            new: read(new)?,
            date,
            session: if session == "-" {
                String::new()
            } else {
                session
            },
            message: message.to_owned(),
        })
    }
}

/// What went wrong in a ref store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ref's value is not what the edit expected.
    #[error("ref '{name}' moved: expected {expected}, found {}", actual.as_ref().map_or_else(|| "no value".to_owned(), |v| v.to_string()))]
    Conflict {
        /// The ref.
        name: RefName,
        /// What the edit expected.
        expected: Expected,
        /// What it holds.
        actual: Option<RefValue>,
    },
    /// Another live writer holds the lock.
    #[error("the depot is locked by another writer ({holder}); waited {}s for '{}' (the lock is released when that writer finishes or dies)", waited.as_secs_f32(), path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it: pid, host and since when.
        holder: String,
        /// How long the writer waited.
        waited: std::time::Duration,
    },
    /// A file operation failed.
    #[error("could not {verb} '{path}': {source}")]
    Io {
        /// What was being done.
        verb: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A ref file holds something that is not a ref value.
    #[error("ref file '{path}' is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Symbolic refs point at each other in a loop, or too deep.
    #[error("symbolic ref '{0}' does not resolve (a loop, or more than 5 levels)")]
    SymbolicLoop(RefName),
    /// The same ref appears twice in one transaction.
    #[error("ref '{0}' is edited twice in one transaction")]
    DuplicateEdit(RefName),
    /// A ref would be both a name and a directory of other refs (`a` and `a/b`), as Git refuses.
    #[error(
        "ref '{name}' cannot be created: it clashes with {} '{other}' (a ref 'a/b' cannot coexist with a ref 'a'; delete one or pick another name)",
        if *.same_transaction { "the ref created in the same transaction" } else { "the existing ref" }
    )]
    NameClash {
        /// The ref being created.
        name: RefName,
        /// The ref it clashes with.
        other: RefName,
        /// Whether `other` is created by the same transaction (else it exists already).
        same_transaction: bool,
    },
    /// A files depot keeps the reflog of a deleted ref where the new ref's reflog would go.
    #[error("ref '{name}' cannot be created: the reflog of the deleted ref '{other}' is kept at '{}' (delete that reflog first, or pick another name)", path.display())]
    ReflogClash {
        /// The ref being created.
        name: RefName,
        /// The deleted ref whose reflog is in the way.
        other: RefName,
        /// That reflog file.
        path: PathBuf,
    },
    /// A backend-specific failure (a database server, say), with its class.
    #[error(transparent)]
    Backend(#[from] crate::class::BackendError),
}

impl From<crate::lockfile::LockError> for Error {
    fn from(err: crate::lockfile::LockError) -> Self {
        match err {
            crate::lockfile::LockError::Locked {
                path,
                holder,
                waited,
            } => Error::Locked {
                path,
                holder,
                waited,
            },
            crate::lockfile::LockError::Io { verb, path, source } => {
                Error::Io { verb, path, source }
            }
        }
    }
}

impl Error {
    pub(crate) fn io(
        verb: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { verb, path, source }
    }
}

/// The readable refs, and the errors of those that could not be read.
pub type LenientListing = (Vec<(RefName, RefValue)>, Vec<Error>);

/// A place that stores refs.
pub trait RefStore: Send + Sync {
    /// The raw value of a ref (a symbolic ref is not followed).
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, Error>;

    /// Applies all edits or none; every expectation is checked under the writer lock.
    fn transaction(&self, edits: &[RefEdit]) -> Result<(), Error>;

    /// Every ref whose name starts with `prefix`, sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, Error>;

    /// Like [`RefStore::list`], but a ref that cannot be read (a corrupt ref file) is returned
    /// as its error beside the readable ones instead of failing the whole listing: fsck and
    /// repair use it to go on past damage.
    fn list_lenient(&self, prefix: &str) -> Result<LenientListing, Error> {
        self.list(prefix).map(|refs| (refs, Vec::new()))
    }

    /// A ref's history, oldest first.
    fn reflog(&self, name: &RefName) -> Result<Vec<ReflogEntry>, Error>;

    /// The reflog and the numbers (1-based) of its lines that could not be read (skipped by
    /// [`RefStore::reflog`]); stores that cannot have such lines report none.
    fn reflog_checked(&self, name: &RefName) -> Result<(Vec<ReflogEntry>, Vec<usize>), Error> {
        Ok((self.reflog(name)?, Vec::new()))
    }

    /// Visits the reflog of `name`, oldest first, each entry as `Ok` and each unreadable line
    /// as `Err(its 1-based number)`; a store that can stream it does (fsck and gc walk reflogs
    /// of millions of lines without holding them).
    fn for_each_reflog_line(
        &self,
        name: &RefName,
        visit: &mut dyn FnMut(Result<ReflogEntry, usize>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (entries, bad) = self.reflog_checked(name)?;
        for n in bad {
            visit(Err(n))?;
        }
        entries.into_iter().try_for_each(|entry| visit(Ok(entry)))
    }

    /// Stores the reflog of `name` in less space, keeping every line (gc calls it under the
    /// depot lock); `Ok(false)` when the store has nothing to do.
    fn compact_reflog(&self, _name: &RefName) -> Result<bool, Error> {
        Ok(false)
    }

    /// The refs strictly inside `name` taken as a directory (`name/…`), sorted.
    fn list_under(&self, name: &RefName) -> Result<Vec<RefName>, Error> {
        Ok(self
            .list(&format!("{name}/"))?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// Follows symbolic refs to a direct one: the final name and its id (`None` if unborn).
    fn resolve(&self, name: &RefName) -> Result<(RefName, Option<ObjectId>), Error> {
        resolve_with(name, |n| self.read(n))
    }

    /// Stores `objects` and applies `edits` in one atomic, durable step, when the backend can
    /// (PostgreSQL: one transaction, one WAL flush). `None`: it cannot, and the caller writes and
    /// syncs the objects first, then calls [`RefStore::transaction`].
    ///
    /// `checkpoints` are the commit's new checkpoints with the ref each was committed to, oldest
    /// first, for a backend that keeps the partition index in the same transaction.
    fn transaction_with_objects(
        &self,
        _objects: &[crate::object::EncodedObject],
        _edits: &[RefEdit],
        _checkpoints: &[(RefName, &crate::index::IndexedCheckpoint)],
    ) -> Option<Result<(), Error>> {
        None
    }

    /// A way to wait for ref moves made by any process or host, if the backend has one of its own
    /// (PostgreSQL's `LISTEN`). Files depots are watched through the file system instead.
    fn listener(&self) -> Option<Box<dyn RefListener>> {
        None
    }
}

/// Waits for ref moves announced by a backend.
pub trait RefListener: Send {
    /// Blocks until a ref moved or `timeout` passed; true if woken by a move.
    fn wait(&mut self, timeout: std::time::Duration) -> bool;
}

/// Follows symbolic refs using `read`, at most 5 levels.
pub fn resolve_with(
    name: &RefName,
    mut read: impl FnMut(&RefName) -> Result<Option<RefValue>, Error>,
) -> Result<(RefName, Option<ObjectId>), Error> {
    let mut current = name.clone();
    for _ in 0..=5 {
        match read(&current)? {
            None => return Ok((current, None)),
            Some(RefValue::Direct(id)) => return Ok((current, Some(id))),
            Some(RefValue::Symbolic(target)) => current = target,
        }
    }
    Err(Error::SymbolicLoop(name.clone()))
}

/// Checks a transaction's edits against current values (read through `read`) and returns the
/// edits with symbolic refs followed, ready to apply. Shared by every backend.
pub fn prepare_edits(
    edits: &[RefEdit],
    mut read: impl FnMut(&RefName) -> Result<Option<RefValue>, Error>,
) -> Result<Vec<(RefEdit, Option<RefValue>)>, Error> {
    let mut prepared: Vec<(RefEdit, Option<RefValue>)> = Vec::with_capacity(edits.len());
    for edit in edits {
        let target = match &edit.new {
            Some(RefValue::Symbolic(_)) => edit.name.clone(),
            _ => resolve_with(&edit.name, &mut read)?.0,
        };
        if prepared.iter().any(|(e, _)| e.name == target) {
            return Err(Error::DuplicateEdit(target));
        }
        let actual = read(&target)?;
        if !edit.expected.allows(actual.as_ref()) {
            return Err(Error::Conflict {
                name: target,
                expected: edit.expected.clone(),
                actual,
            });
        }
        let mut edit = edit.clone();
        edit.name = target;
        prepared.push((edit, actual));
    }
    Ok(prepared)
}

/// Whether two refs cannot both exist because one is a directory of the other (`a` and `a/b`):
/// Git's rule, kept by every ref store so that refs always fit in a file tree and a sync between
/// stores never fails halfway.
pub fn names_clash(a: &RefName, b: &RefName) -> bool {
    let inside = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|rest| rest.starts_with('/'));
    inside(a.as_str(), b.as_str()) || inside(b.as_str(), a.as_str())
}

/// The refs that would be directories of `name` (`refs/tags` and `refs/tags/x` for
/// `refs/tags/x/y`), shortest first.
pub(crate) fn ancestors(name: &RefName) -> impl Iterator<Item = RefName> + '_ {
    let text = name.as_str();
    text.match_indices('/')
        .skip(1)
        .filter_map(move |(at, _)| RefName::new(&text[..at]).ok())
}

/// Refuses a transaction (already through [`prepare_edits`]) that would create a ref clashing with
/// an existing ref (read through `read`, and listed by `under` for `name/…`) or with another ref
/// created by the same transaction. Refs deleted by the transaction do not count. Shared by every
/// backend, and called before anything is written.
pub fn check_clashes(
    prepared: &[(RefEdit, Option<RefValue>)],
    mut read: impl FnMut(&RefName) -> Result<Option<RefValue>, Error>,
    mut under: impl FnMut(&RefName) -> Result<Vec<RefName>, Error>,
) -> Result<(), Error> {
    let deleted = |n: &RefName| {
        prepared
            .iter()
            .any(|(e, _)| e.new.is_none() && &e.name == n)
    };
    for (i, (edit, actual)) in prepared.iter().enumerate() {
        if edit.new.is_none() {
            continue;
        }
        if let Some((other, _)) = prepared[..i]
            .iter()
            .find(|(o, _)| o.new.is_some() && names_clash(&o.name, &edit.name))
        {
            return Err(Error::NameClash {
                name: edit.name.clone(),
                other: other.name.clone(),
                same_transaction: true,
            });
        }
        if actual.is_some() {
            // It exists already, so nothing existing clashes with it.
            continue;
        }
        let existing = |other: RefName| Error::NameClash {
            name: edit.name.clone(),
            other,
            same_transaction: false,
        };
        for ancestor in ancestors(&edit.name) {
            if !deleted(&ancestor) && read(&ancestor)?.is_some() {
                return Err(existing(ancestor));
            }
        }
        if let Some(child) = under(&edit.name)?.into_iter().find(|c| !deleted(c)) {
            return Err(existing(child));
        }
    }
    Ok(())
}

/// The suite every ref store must pass (for backends in other crates: feature `conformance`).
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod clash_tests {
    use super::*;

    fn n(text: &str) -> RefName {
        RefName::new(text).unwrap()
    }

    #[test]
    fn names_clash_only_at_a_slash() {
        assert!(names_clash(&n("refs/tags/x"), &n("refs/tags/x/y")));
        assert!(names_clash(&n("refs/tags/x/y/z"), &n("refs/tags/x")));
        assert!(!names_clash(&n("refs/tags/x"), &n("refs/tags/xy")));
        assert!(!names_clash(&n("refs/tags/x"), &n("refs/tags/x")));
        assert!(!names_clash(&n("HEAD"), &n("refs/heads/master")));
        let found: Vec<_> = ancestors(&n("refs/tags/x/y")).collect();
        assert_eq!(found, vec![n("refs/tags"), n("refs/tags/x")]);
    }
}

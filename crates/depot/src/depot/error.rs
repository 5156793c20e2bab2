//! The depot's error: one superset over the layers below, each variant naming what failed.

use std::path::PathBuf;

use crate::hash::{ObjectId, ParseIdError};
use crate::index::IndexError;
use crate::journal::JournalError;
use crate::name::{escape_invisible, shown, NameError};
use crate::object::{DecodeError, Kind};
use crate::odb;
use crate::refdb::{self, RefName, RefNameError};

/// What went wrong in a depot operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory holds no depot.
    #[error("'{0}' is not a retro depot (no 'config' file, and not a go-retro depot either)")]
    NotADepot(PathBuf),
    /// A native depot (packs, journal, index) whose `config` file is missing.
    #[error("'{}' is a damaged retro depot: its 'config' file is missing (it has packs/, journal or index.sqlite, which only retro writes); restore it as one line 'retro depot 1': echo 'retro depot 1' > '{}'", .0.display(), .0.join("config").display())]
    MissingConfig(PathBuf),
    /// `init` found a depot already there.
    #[error("'{0}' already holds a depot")]
    AlreadyExists(PathBuf),
    /// The depot's format version is newer than this build understands.
    #[error("depot '{path}' has format '{found}', this retro reads 'retro depot 1'")]
    UnsupportedFormat {
        /// The depot.
        path: PathBuf,
        /// What its config says.
        found: String,
    },
    /// A file operation outside the stores failed.
    #[error("could not {verb} '{path}': {source}")]
    Io {
        /// What was being done.
        verb: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The commit-graph (derived) could not be written (gc, reindex).
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    /// The object store failed.
    #[error(transparent)]
    Objects(#[from] odb::Error),
    /// The ref store failed.
    #[error(transparent)]
    Refs(refdb::Error),
    /// A consumer group's operation failed.
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The partition index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// An object whose bytes a redaction erased (`retro redact`; docs/redaction.md).
    #[error("object {0} was erased by a redaction ('retro redact'): its data is gone for good")]
    Erased(ObjectId),
    /// An object is missing.
    #[error("object {id} is missing ({context})")]
    MissingObject {
        /// The id.
        id: ObjectId,
        /// Where it was referenced from.
        context: String,
    },
    /// An object does not decode.
    #[error("object {id} does not decode: {source}")]
    Decode {
        /// The id.
        id: ObjectId,
        /// Why.
        source: DecodeError,
    },
    /// An object is of the wrong kind.
    #[error("object {id} is a {found}, expected a {expected}")]
    WrongKind {
        /// The id.
        id: ObjectId,
        /// What was wanted.
        expected: Kind,
        /// What it is.
        found: Kind,
    },
    /// A compare-and-swap lost: the ref moved.
    #[error("ref '{name}' moved: expected {}, found {}", show(.expected), show(.actual))]
    Conflict {
        /// The ref.
        name: RefName,
        /// The value the writer expected.
        expected: Option<ObjectId>,
        /// The value it holds.
        actual: Option<ObjectId>,
    },
    /// A compare-and-swap that needed the ref to exist found none.
    #[error("ref '{0}' does not exist")]
    RefMissing(RefName),
    /// A revision does not parse.
    #[error("bad revision '{}': {reason}", shown(.rev))]
    BadRevision {
        /// The text.
        rev: String,
        /// Why.
        reason: String,
    },
    /// A revision names nothing.
    #[error("unknown revision '{}': no such ref, and no object id starts with it", shown(.0))]
    UnknownRevision(String),
    /// A well-formed full object id (`sha256:` and 64 hex digits) that the depot does not hold.
    #[error("no such object '{0}'")]
    NoSuchObject(ObjectId),
    /// A prefix matches several objects.
    #[error("prefix '{}' is ambiguous: {} and {} more match", shown(.prefix), .candidates.first().map(|c| c.to_string()).unwrap_or_default(), .candidates.len().saturating_sub(1))]
    AmbiguousPrefix {
        /// The prefix.
        prefix: String,
        /// The ids it matches (a few).
        candidates: Vec<ObjectId>,
    },
    /// A ref name is invalid.
    #[error(transparent)]
    RefName(#[from] RefNameError),
    /// An id does not parse.
    #[error(transparent)]
    Id(#[from] ParseIdError),
    /// A partition, event name or field is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A glob pattern is invalid.
    #[error("bad partition glob '{}': {}", shown(.pattern), escape_invisible(.reason))]
    Glob {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A backend outside this crate failed (the PostgreSQL one, say), with its class.
    #[error(transparent)]
    Backend(#[from] crate::class::BackendError),
    /// A request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A partition whose events this partial clone does not hold (`retro clone --partitions`).
    #[error("partition '{}' is outside the partial clone{depot}, which holds only the events of partitions matching {filter}; fetch it with 'retro sync --partitions GLOB SRC DST'", shown(.partition))]
    OutsidePartialClone {
        /// The partition asked for.
        partition: String,
        /// The clone's filter, quoted globs.
        filter: String,
        /// The depot (` '<dir>'`, or empty).
        depot: String,
    },
    /// An event absent by design from a partial clone, read by id.
    #[error("event {id} is not in the partial clone{depot}, which holds only the events of partitions matching {filter}; fetch its partition with 'retro sync --partitions GLOB SRC DST'")]
    AbsentFromPartialClone {
        /// The event.
        id: ObjectId,
        /// The clone's filter, quoted globs.
        filter: String,
        /// The depot (` '<dir>'`, or empty).
        depot: String,
    },
    /// A partial clone's `partial` file is damaged.
    #[error("the partial-clone filter '{}' is damaged: {reason} (it is 'retro partial 1' then one 'partitions <glob>' line per glob)", .path.display())]
    PartialFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint's `log` field is not the head of the log over its first-parent chain.
    #[error("checkpoint {id} is corrupt: {reason}")]
    BadLog {
        /// The checkpoint.
        id: ObjectId,
        /// What disagrees.
        reason: String,
    },
    /// A proof was asked at a checkpoint without a `log` field.
    #[error("checkpoint {0} has no 'log' field (it was committed before retro wrote one): commit on top of it and prove at the new checkpoint")]
    NoLog(ObjectId),
    /// The event is neither in the checkpoint nor in its first-parent history.
    #[error("event {event} is not in the history of checkpoint {at} (its first-parent chain; a merged branch's events count through the merge checkpoint)")]
    NotInHistory {
        /// The event.
        event: ObjectId,
        /// The checkpoint.
        at: ObjectId,
    },
    /// A commit batch failed as a whole (a lock timeout, an fsync error): every request in it
    /// gets this, sharing the one cause.
    #[error("commit failed: {0}")]
    Batch(#[source] std::sync::Arc<Error>),
    /// Another writer kept winning the race for the ref.
    #[error("the ref kept moving; gave up after {attempts} attempts")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
}

use crate::class::io_class;
pub use crate::class::ErrorClass;

fn odb_class(e: &odb::Error) -> ErrorClass {
    match e {
        odb::Error::Corrupt { .. } | odb::Error::CorruptFile { .. } => ErrorClass::Corrupt,
        odb::Error::Io { source, .. } => io_class(source),
        odb::Error::Lock(_) => ErrorClass::Unavailable,
        odb::Error::Backend(b) => b.class(),
    }
}

fn refs_class(e: &refdb::Error) -> ErrorClass {
    match e {
        refdb::Error::Conflict { .. } => ErrorClass::Conflict,
        refdb::Error::Locked { .. } => ErrorClass::Unavailable,
        refdb::Error::Io { source, .. } => io_class(source),
        refdb::Error::Corrupt { .. } => ErrorClass::Corrupt,
        refdb::Error::Backend(b) => b.class(),
        _ => ErrorClass::Invalid,
    }
}

fn show(id: &Option<ObjectId>) -> String {
    id.map_or_else(|| "no checkpoint".to_owned(), |id| id.to_string())
}

impl From<refdb::Error> for Error {
    fn from(err: refdb::Error) -> Self {
        match err {
            refdb::Error::Conflict {
                name,
                expected: refdb::Expected::MustExist,
                actual: None,
            } => Error::RefMissing(name),
            refdb::Error::Conflict {
                name,
                expected,
                actual,
            } => Error::Conflict {
                name,
                expected: match expected {
                    refdb::Expected::MustBe(id) | refdb::Expected::MustBeOrAbsent(Some(id)) => {
                        Some(id)
                    }
                    _ => None,
                },
                actual: actual.and_then(|v| v.id()),
            },
            other => Error::Refs(other),
        }
    }
}

impl Error {
    pub(crate) fn io(
        verb: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { verb, path, source }
    }

    /// True for a lost compare-and-swap (retry on fresh state).
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Batch(inner) => inner.is_conflict(),
            other => matches!(other, Error::Conflict { .. } | Error::RefMissing(_)),
        }
    }

    /// The class of this failure (what a caller should do about it).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotADepot(_)
            | Error::UnknownRevision(_)
            | Error::NoSuchObject(_)
            | Error::Erased(_)
            | Error::NotInHistory { .. } => ErrorClass::NotFound,
            // A compare-and-swap that needed the ref to exist lost the race like any other.
            Error::Conflict { .. } | Error::RefMissing(_) | Error::Contended { .. } => {
                ErrorClass::Conflict
            }
            // `init` where a depot is: nothing to retry.
            Error::AlreadyExists(_)
            | Error::UnsupportedFormat { .. }
            | Error::BadRevision { .. }
            | Error::AmbiguousPrefix { .. }
            | Error::RefName(_)
            | Error::Id(_)
            | Error::Name(_)
            | Error::Glob { .. }
            | Error::Invalid(_)
            | Error::OutsidePartialClone { .. }
            | Error::AbsentFromPartialClone { .. }
            | Error::NoLog(_) => ErrorClass::Invalid,
            Error::MissingObject { .. }
            | Error::Decode { .. }
            | Error::WrongKind { .. }
            | Error::PartialFile { .. }
            | Error::MissingConfig(_)
            | Error::BadLog { .. } => ErrorClass::Corrupt,
            Error::Io { source, .. } => io_class(source),
            Error::Objects(e) => odb_class(e),
            Error::Refs(e) => refs_class(e),
            Error::Journal(e) => match e {
                JournalError::Objects(e) => odb_class(e),
                JournalError::Refs(e) => refs_class(e),
                JournalError::Io { source, .. } => io_class(source),
            },
            Error::Index(e) => match e {
                IndexError::Corrupt(_) => ErrorClass::Corrupt,
                _ => ErrorClass::Unavailable,
            },
            Error::Backend(e) => e.class(),
            Error::Group(e) => e.class(),
            Error::Graph(e) => match e {
                crate::graph::GraphError::Io { source, .. } => io_class(source),
                crate::graph::GraphError::Busy { .. } => ErrorClass::Unavailable,
                _ => ErrorClass::Corrupt,
            },
            Error::Batch(inner) => inner.class(),
        }
    }
}

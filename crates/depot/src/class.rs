//! Failure classes: what a caller should do about an error. Every error of the depot (and of the
//! engine above it) belongs to exactly one [`ErrorClass`]; the CLI chooses its exit code and the
//! server its HTTP status by class (docs/errors.md has the table). [`BackendError`] carries a
//! failure from a backend outside this crate (a database server) with its class and its cause.

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The request is wrong (bad JSON, a bad name, an unknown revision syntax): fix it.
    Invalid,
    /// A compare-and-swap lost, or what is being created exists: read again and retry.
    Conflict,
    /// The domain refused the command (its rules, or its handler failed).
    Rejected,
    /// What was asked for does not exist.
    NotFound,
    /// Retryable: a lock held too long, the database down, the disk busy or full.
    Unavailable,
    /// Stored data is damaged: fsck, repair, restore.
    Corrupt,
    /// Anything else (a bug, an unexpected I/O failure).
    Internal,
}

impl ErrorClass {
    /// Every class, in the order of docs/errors.md.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Invalid,
        ErrorClass::Conflict,
        ErrorClass::Rejected,
        ErrorClass::NotFound,
        ErrorClass::Unavailable,
        ErrorClass::Corrupt,
        ErrorClass::Internal,
    ];

    /// The name used in JSON error bodies and docs (`invalid`, `conflict`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Invalid => "invalid",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Rejected => "rejected",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an I/O failure: out of space, quota, busy or interrupted ones are retryable.
pub fn io_class(err: &std::io::Error) -> ErrorClass {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::NotFound => ErrorClass::NotFound,
        ErrorKind::StorageFull
        | ErrorKind::QuotaExceeded
        | ErrorKind::ResourceBusy
        | ErrorKind::WouldBlock
        | ErrorKind::TimedOut
        | ErrorKind::Interrupted
        | ErrorKind::ReadOnlyFilesystem => ErrorClass::Unavailable,
        ErrorKind::InvalidData => ErrorClass::Corrupt,
        _ => ErrorClass::Internal,
    }
}

/// A failure inside a backend that lives outside this crate (the PostgreSQL backend, say): its
/// class, decided by the backend that understands it, and its cause. It displays as its cause.
#[derive(Debug)]
pub struct BackendError {
    class: ErrorClass,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl BackendError {
    /// A failure of class `class` caused by `source`.
    pub fn new(
        class: ErrorClass,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError {
            class,
            source: source.into(),
        }
    }

    /// Its class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Its cause.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent: the cause's own cause comes next (its text is this error's text).
        self.source.source()
    }
}

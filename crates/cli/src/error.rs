//! Exit codes and how errors are shown: one line `retro: error: …`, plus a hint where one exists.

use std::path::PathBuf;

/// Success.
pub const OK: u8 = 0;
/// Any error not listed below.
pub const ERROR: u8 = 1;
/// The command line was wrong.
pub const USAGE: u8 = 2;
/// A compare-and-swap lost: the ref moved (retry on fresh state).
pub const CONFLICT: u8 = 3;
/// The domain rejected the command, or its handler failed.
pub const REJECTED: u8 = 4;
/// Stored data is damaged (fsck found corruption, or a read met it).
pub const CORRUPT: u8 = 5;
/// Retryable: a lock held too long, PostgreSQL unreachable, the disk full or busy.
pub const UNAVAILABLE: u8 = 6;
/// `retro test`: a case did not pass (the domain did something else than its spec says).
pub const TEST_FAILED: u8 = 7;
/// A stored event cannot be read as the domain's newest version: it is newer than the domain
/// knows, or an upcaster failed (`engine::UpcastError`).
pub const UPCAST: u8 = 8;

const UPCAST_HINT: &str = "the depot holds events this domain cannot read: use the domain manifest that wrote them (--manifest), or fix its upcasters (docs/handlers.md)";

const UNAVAILABLE_HINT: &str =
    "this is retryable: nothing was changed; try again when the lock holder, database or disk is back";

/// No depot was found.
#[derive(Debug)]
pub struct NoDepot(pub PathBuf);

impl std::fmt::Display for NoDepot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no depot found in '{}' or any parent directory",
            self.0.display()
        )
    }
}

impl std::error::Error for NoDepot {}

/// A ref that does not exist and has no reflog (exit 1, not found).
#[derive(Debug)]
pub struct NoSuchRef(pub String);

impl std::fmt::Display for NoSuchRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no such ref '{}'", depot::shown(&self.0))
    }
}

impl std::error::Error for NoSuchRef {}

/// `update-ref REF NEW 0` on a ref that exists (exit 3, a conflict).
#[derive(Debug)]
pub struct RefExists {
    /// The ref.
    pub name: String,
    /// What it holds now (an id, or `ref: …` for a symbolic ref).
    pub holds: String,
}

impl std::fmt::Display for RefExists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ref '{}' already exists and holds {}",
            depot::shown(&self.name),
            self.holds
        )
    }
}

impl std::error::Error for RefExists {}

/// The command line was wrong in a way clap does not check (exit 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `$RETRO_LOCK_TIMEOUT` is not a number of seconds (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("RETRO_LOCK_TIMEOUT must be a number of seconds (such as 30 or 0.5), not '{}'", depot::shown(.0))]
pub struct BadLockTimeout(pub String);

/// fsck found problems (already printed).
#[derive(Debug)]
pub struct Corrupt(pub usize);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fsck found {} problem(s)", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// `retro test`: cases failed (already reported on stdout; exit 7).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} case(s) failed")]
pub struct TestsFailed {
    /// Cases that failed.
    pub failed: usize,
    /// Cases run.
    pub total: usize,
}

/// `retro verify`: replayed commands diverged from their recorded events (already reported;
/// exit 7, as a failed `retro test` case: the domain does something else than history says).
#[derive(Debug, thiserror::Error)]
#[error("{divergences} of {commands} replayed command(s) diverged from the recorded events")]
pub struct VerifyDiverged {
    /// Commands whose replay diverged.
    pub divergences: u64,
    /// Commands replayed.
    pub commands: u64,
}

/// repair could not fix everything (already printed).
#[derive(Debug)]
pub struct Unrepaired(pub usize);

impl std::fmt::Display for Unrepaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "repair could not fix {} problem(s)", self.0)
    }
}

impl std::error::Error for Unrepaired {}

const CORRUPT_HINT: &str = "the depot is damaged: 'retro fsck' lists every problem, 'retro repair' rebuilds what can be derived";

/// The exit code of each error class: the table in docs/errors.md, which a test reads.
pub fn exit_code(class: depot::ErrorClass) -> u8 {
    use depot::ErrorClass;
    match class {
        ErrorClass::Invalid | ErrorClass::NotFound => ERROR,
        ErrorClass::Conflict => CONFLICT,
        ErrorClass::Rejected => REJECTED,
        ErrorClass::Unavailable => UNAVAILABLE,
        ErrorClass::Corrupt => CORRUPT,
        _ => ERROR,
    }
}

/// True for errors that mean stored data is damaged (exit 5), not that the request was wrong.
fn is_corrupt(e: &depot::Error) -> bool {
    e.class() == depot::ErrorClass::Corrupt
}

/// A sync left refs alone because moving them was not a fast-forward (exit 3, like a Conflict).
#[derive(Debug)]
pub struct NotFastForward(pub Vec<String>);

impl std::fmt::Display for NotFastForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a fast-forward, left alone: {}", self.0.join(", "))
    }
}

impl std::error::Error for NotFastForward {}

/// The exit code and an optional hint for an error.
pub fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    for cause in err.chain() {
        if let Some(code) = cause
            .downcast_ref::<crate::commands::BatchError>()
            .and_then(crate::commands::BatchError::exit_code)
        {
            return (
                code,
                Some("each failed line is answered on stdout with its number and why; the other lines were applied".to_owned()),
            );
        }
        if let Some(e) = cause.downcast_ref::<NoDepot>() {
            let _ = e;
            return (
                ERROR,
                Some(
                    "run 'retro init' to create one, or pass --depot DIR (or set RETRO_DEPOT)"
                        .to_owned(),
                ),
            );
        }
        if cause.downcast_ref::<RefExists>().is_some() {
            return (
                CONFLICT,
                Some("OLD 0 means the ref must not exist; give its current value as OLD to move it, or no OLD".to_owned()),
            );
        }
        if cause.downcast_ref::<NoSuchRef>().is_some() {
            return (ERROR, Some("'retro refs' lists the refs".to_owned()));
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return (USAGE, None);
        }
        if cause.downcast_ref::<NotFastForward>().is_some() {
            return (
                CONFLICT,
                Some("the destination has history the source lacks; pass --force to move the destination's refs to the source's (their old values stay in the destination's reflog)".to_owned()),
            );
        }
        if cause.downcast_ref::<Corrupt>().is_some() {
            return (CORRUPT, None);
        }
        if cause.downcast_ref::<TestsFailed>().is_some() {
            return (
                TEST_FAILED,
                Some("each 'not ok' case above says what differs".to_owned()),
            );
        }
        if cause.downcast_ref::<VerifyDiverged>().is_some() {
            return (
                TEST_FAILED,
                Some("each divergence above names its checkpoint and what differs; 'retro show CHECKPOINT' shows what was recorded".to_owned()),
            );
        }
        if let Some(e) = cause.downcast_ref::<depot::proof::ProofError>() {
            if e.is_malformed() {
                return (ERROR, None);
            }
            return (
                TEST_FAILED,
                Some("the proof was refused: nothing it claims is proved".to_owned()),
            );
        }
        if cause
            .downcast_ref::<crate::commands::SignaturesFailed>()
            .is_some()
        {
            return (
                TEST_FAILED,
                Some(
                    "each line above names a checkpoint and what is wrong with its signature"
                        .to_owned(),
                ),
            );
        }
        if cause
            .downcast_ref::<crate::commands::ProjectionsParked>()
            .is_some()
        {
            return (
                REJECTED,
                Some("'retro project status' shows each parked batch and its error; fix the handler, then 'retro project retry NAME'".to_owned()),
            );
        }
        if let Some(e) = cause.downcast_ref::<engine::projection::ProjectionError>() {
            return match e {
                engine::projection::ProjectionError::Depot(e) if is_corrupt(e) => {
                    (CORRUPT, Some(CORRUPT_HINT.to_owned()))
                }
                engine::projection::ProjectionError::Depot(e)
                    if e.class() == depot::ErrorClass::Unavailable =>
                {
                    (UNAVAILABLE, Some(UNAVAILABLE_HINT.to_owned()))
                }
                engine::projection::ProjectionError::Unknown { .. }
                | engine::projection::ProjectionError::NoneDeclared => (
                    ERROR,
                    Some("projections are declared in the domain manifest's \"projections\" (docs/handlers.md); --manifest FILE chooses the manifest".to_owned()),
                ),
                e => (exit_code(e.class()), None),
            };
        }
        if let Some(e) = cause.downcast_ref::<engine::merge::MergeError>() {
            if let engine::merge::MergeError::Depot(e) = e {
                if is_corrupt(e) {
                    return (CORRUPT, Some(CORRUPT_HINT.to_owned()));
                }
            }
            return (exit_code(e.class()), crate::commands::merge_hint(e));
        }
        if cause
            .downcast_ref::<crate::commands::BadSigningKey>()
            .is_some()
        {
            return (
                ERROR,
                Some("fix the key file, or choose another with 'retro config signing-key PATH' (or --unset)".to_owned()),
            );
        }
        if cause.downcast_ref::<engine::testing::SpecError>().is_some() {
            return (
                ERROR,
                Some(r#"a case looks like {"name":"…","given":[{"partition":"…","name":"…","data":{}}],"when":{"path":"…","name":"…","params":{}},"then":{"events":[…]}}; see docs/handlers.md"#.to_owned()),
            );
        }
        if cause.downcast_ref::<Unrepaired>().is_some() {
            return (
                CORRUPT,
                Some(
                    "restore what repair names from a clone ('retro sync CLONE .') or a backup"
                        .to_owned(),
                ),
            );
        }
        if cause.downcast_ref::<engine::UpcastError>().is_some()
            || matches!(
                cause.downcast_ref::<engine::ApplyError>(),
                Some(engine::ApplyError::Upcast(_))
            )
            || matches!(
                cause.downcast_ref::<server::api::UpcastReadError>(),
                Some(server::api::UpcastReadError::Upcast(_))
            )
        {
            return (UPCAST, Some(UPCAST_HINT.to_owned()));
        }
        if let Some(e) = cause.downcast_ref::<engine::ApplyError>() {
            return match e {
                engine::ApplyError::Rejected { recorded, .. }
                | engine::ApplyError::Handler { recorded, .. } => (
                    REJECTED,
                    Some(match recorded {
                        Some(_) => "the failure is recorded: see 'retro failed'".to_owned(),
                        // Recording is best effort (the disk may be full): say so.
                        None => "the failure could not be recorded (see the warning above, if any); nothing was written".to_owned(),
                    }),
                ),
                engine::ApplyError::Depot(e) if is_corrupt(e) => (CORRUPT, Some(CORRUPT_HINT.to_owned())),
                engine::ApplyError::Depot(e) if e.class() == depot::ErrorClass::Unavailable => {
                    (UNAVAILABLE, Some(UNAVAILABLE_HINT.to_owned()))
                }
                engine::ApplyError::SessionRequired { .. } => (REJECTED, None),
                e if e.is_conflict() => (CONFLICT, Some("the ref moved; retry".to_owned())),
                engine::ApplyError::Command(_) => (
                    ERROR,
                    Some(r#"a command looks like {"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#.to_owned()),
                ),
                e => (exit_code(e.class()), None),
            };
        }
        if let Some(e) = cause.downcast_ref::<depot::Error>() {
            if is_corrupt(e) {
                return (CORRUPT, Some(CORRUPT_HINT.to_owned()));
            }
            if e.class() == depot::ErrorClass::Unavailable {
                return (UNAVAILABLE, Some(UNAVAILABLE_HINT.to_owned()));
            }
            return match e {
                depot::Error::RefMissing(_) => (CONFLICT, None),
                depot::Error::Conflict { .. } => (
                    CONFLICT,
                    Some("the ref moved since you read it; read it again and retry".to_owned()),
                ),
                depot::Error::AmbiguousPrefix { candidates, .. } => (
                    ERROR,
                    Some(format!(
                        "candidates: {}",
                        candidates
                            .iter()
                            .map(|c| c.to_short_hex(16))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                ),
                depot::Error::UnknownRevision(_) => (
                    ERROR,
                    Some("give a ref (HEAD, master, refs/…), an id, or a unique prefix of 4+ hex digits".to_owned()),
                ),
                depot::Error::Refs(
                    depot::refdb::Error::NameClash { .. } | depot::refdb::Error::ReflogClash { .. },
                ) => (
                    ERROR,
                    Some("'retro refs' lists the refs; 'retro update-ref -d REF' deletes one".to_owned()),
                ),
                depot::Error::MissingConfig(_) => (CORRUPT, None),
                depot::Error::NotADepot(_) => (
                    ERROR,
                    Some("run 'retro init DIR' to create one".to_owned()),
                ),
                e => (exit_code(e.class()), None),
            };
        }
    }
    (ERROR, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/errors.md's table is the contract: every class is in it, with the exit code the CLI
    /// uses and the HTTP status the server answers.
    #[test]
    fn the_error_table_in_the_docs_matches_the_exit_codes_and_http_statuses() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
                .expect("docs/errors.md");
        for class in depot::ErrorClass::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", class.as_str())))
                .unwrap_or_else(|| panic!("docs/errors.md has no row for class {class}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let code: u8 = cells[3]
                .parse()
                .unwrap_or_else(|_| panic!("exit code in {row}"));
            assert_eq!(code, exit_code(class), "exit code of {class}: {row}");
            let http: u16 = cells[4]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("HTTP status in {row}"));
            assert_eq!(
                http,
                server::status(class).as_u16(),
                "HTTP status of {class}: {row}"
            );
        }
    }
}

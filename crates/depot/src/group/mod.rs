//! Consumer groups: several processes (on one host or many) share the work of one durable
//! consumer. Partitions are hashed into a fixed number of slots ([`slot_of`]); members lease
//! slots from a [`GroupStore`] (a state file under a lock in a files depot, a row in
//! PostgreSQL), heartbeat their leases, take over the slots of a member whose lease ran out, and
//! give up slots above their fair share when a member joins. Each slot has its own durable
//! position, moved only when the member acknowledges (fenced by the lease's epoch), so delivery
//! is at-least-once and in order within a partition; a redelivered event carries the same
//! checkpoint id and event index.
//!
//! - [`state`]: the stored state, its encoding, and the lease round (a pure function);
//! - [`store`]: the [`GroupStore`] trait, [`FilesGroupStore`], [`MemoryGroupStore`];
//! - [`member`]: [`GroupMember`] (what a process runs), [`GroupDelivery`], [`GroupStatus`].
//!
//! ```
//! use std::time::Duration;
//! use depot::group::{GroupDelivery, GroupOptions};
//! use depot::{CommitRequest, Depot, Event, EventName, PartitionName};
//!
//! let depot = Depot::in_memory()?;
//! let event = Event::new(EventName::new("Opened")?, "{}");
//! depot.commit(CommitRequest::new(None, vec![(PartitionName::new("accounts/ada")?, event)], "s1", "open"))?;
//! let options = GroupOptions { glob: "accounts/*".to_owned(), ..GroupOptions::new() };
//! let mut member = depot.join_group("billing", "worker-1", &options)?;
//! let mut handled = Vec::new();
//! while let Some(delivery) = member.next_timeout(Duration::from_millis(100))? {
//!     if let GroupDelivery::Checkpoint { id, events, .. } = delivery {
//!         for e in events {
//!             // (checkpoint, index) names the event on every redelivery: deduplicate by it.
//!             handled.push((id, e.index, e.record.partition.to_string()));
//!         }
//!     }
//!     member.ack()?; // after handling: the slots' positions move
//! }
//! assert_eq!(handled.len(), 1);
//! assert_eq!(depot.group_status("billing")?.max_behind(), Some(0));
//! member.leave()?; // its slots are free at once
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod member;
pub mod state;
pub mod store;

use std::fmt;

use crate::class::{io_class, BackendError, ErrorClass};

pub use member::{
    GroupDelivery, GroupEvent, GroupMember, GroupOptions, GroupStatus, MemberStatus, SlotStatus,
};
pub use state::{slot_of, GroupState, MAX_SLOTS};
pub use store::{Change, FilesGroupStore, GroupStore, MemoryGroupStore};

/// The number of slots a group gets when its creator does not say.
pub const DEFAULT_SLOTS: u32 = 64;

/// The shortest lease a member may ask for, in milliseconds.
pub const MIN_LEASE_MS: u64 = 100;

/// Why a consumer-group operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A group name that is not 1 to 64 of `A-Z a-z 0-9 . _ -` (not starting with `.` or `-`).
    #[error("invalid consumer group name '{0}': use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with '.' or '-')")]
    BadName(String),
    /// A member id that is not 1 to 128 of `A-Z a-z 0-9 . _ -` (not starting with `.` or `-`).
    #[error(
        "invalid member id '{0}': use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with '.' or '-')"
    )]
    BadMember(String),
    /// A slot count out of range.
    #[error("a consumer group has 1 to {max} slots, not {0}", max = MAX_SLOTS)]
    BadSlots(u32),
    /// A lease too short to heartbeat.
    #[error("a lease of {0} ms is too short: at least {min} ms", min = MIN_LEASE_MS)]
    BadLease(u64),
    /// A glob with a control character (it could not be stored on one line).
    #[error("invalid partition glob for a consumer group '{0}': it contains a control character")]
    BadGlob(String),
    /// Joining a group with settings other than the ones it was created with.
    #[error("consumer group '{group}' was created with {what} '{stored}', not '{asked}' (every member uses the group's own; pass the same, or use another group name)")]
    Mismatch {
        /// The group.
        group: String,
        /// Which setting.
        what: &'static str,
        /// The group's.
        stored: String,
        /// The one asked for.
        asked: String,
    },
    /// No such group.
    #[error("no consumer group '{0}' (a group is created when its first member joins)")]
    Unknown(String),
    /// The stored state does not decode or fails its checksum.
    #[error("the consumer group state is corrupt: {reason}")]
    Corrupt {
        /// What is wrong, and where.
        reason: String,
    },
    /// A file of a files store could not be read or written.
    #[error("could not {verb} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        verb: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The group's lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::lockfile::LockError),
    /// A backend's store failed (PostgreSQL).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl GroupError {
    /// What a caller should do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            GroupError::BadName(_)
            | GroupError::BadMember(_)
            | GroupError::BadSlots(_)
            | GroupError::BadLease(_)
            | GroupError::BadGlob(_)
            | GroupError::Mismatch { .. } => ErrorClass::Invalid,
            GroupError::Unknown(_) => ErrorClass::NotFound,
            GroupError::Corrupt { .. } => ErrorClass::Corrupt,
            GroupError::Io { source, .. } => io_class(source),
            GroupError::Lock(crate::lockfile::LockError::Locked { .. }) => ErrorClass::Unavailable,
            GroupError::Lock(crate::lockfile::LockError::Io { source, .. }) => io_class(source),
            GroupError::Backend(e) => e.class(),
        }
    }
}

/// Whether `name` is 1 to `max` of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
fn valid_word(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A consumer group's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-` (it
/// names a file in a files depot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

impl GroupName {
    /// Validates a group name.
    pub fn new(name: &str) -> Result<GroupName, GroupError> {
        if valid_word(name, 64) {
            Ok(GroupName(name.to_owned()))
        } else {
            Err(GroupError::BadName(crate::name::shown(name)))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A member's id: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`. Two processes
/// must not share one (they would share its leases).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(String);

impl MemberId {
    /// Validates a member id.
    pub fn new(id: &str) -> Result<MemberId, GroupError> {
        if valid_word(id, 128) {
            Ok(MemberId(id.to_owned()))
        } else {
            Err(GroupError::BadMember(crate::name::shown(id)))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group's glob is stored on one line: no control characters.
pub(crate) fn check_glob(glob: &str) -> Result<(), GroupError> {
    if glob.chars().any(char::is_control) {
        return Err(GroupError::BadGlob(crate::name::shown(glob)));
    }
    Ok(())
}

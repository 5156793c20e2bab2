//! retro's depot: a Git-like, content-addressed store of events.
//!
//! - [`ObjectId`], [`Object`] and friends (from crate `retro-object`): the three object kinds and
//!   their one encoding;
//! - [`odb`]: object stores (pack, loose, memory) behind [`odb::ObjectStore`];
//! - [`refdb`]: ref stores (files, memory) behind [`refdb::RefStore`], moved by compare-and-swap;
//! - [`index`]: the derived partition index behind [`index::IndexStore`] (SQLite here);
//! - [`snapshot`]: aggregate snapshots the engine keeps beside the depot (derived data);
//! - [`group`]: consumer groups (slots leased by members, a position per slot);
//! - [`storage`]: the I/O seam native depots write through ([`storage::FsStorage`], and
//!   [`storage::SimStorage`] for power-loss tests);
//! - [`Depot`]: all of it together with the journal (one fsync per commit), group commit, history
//!   walks, revisions, subscriptions, fsck, gc and repair; other backends (PostgreSQL, in crate
//!   `retro-depot-postgres`) plug in through [`Backend`].
//!
//! No network and no async runtime: embedding a files depot pulls in neither.
//!
//! ```
//! use depot::{CommitRequest, Depot, Event, EventName, PartitionName};
//!
//! let depot = Depot::in_memory()?;
//! let event = Event::new(EventName::new("AccountOpened")?, r#"{"owner":"ada"}"#);
//! let partition = PartitionName::new("accounts/ada")?;
//! let committed = depot.commit(CommitRequest::new(None, vec![(partition.clone(), event)], "s1", "open"))?;
//! assert_eq!(depot.head()?, Some(committed.checkpoint));
//! assert_eq!(depot.partition_events(&partition)?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod class;
// The object model lives in its own crate; these names keep `crate::hash::…` paths short.
use retro_object as object;
use retro_object::{hash, name};
mod depot;
mod fsutil;
pub mod graph;
pub mod group;
pub mod index;
mod journal;
mod lockfile;
mod log_frontiers;
pub mod odb;
pub mod proof;
pub mod refdb;
mod rev;
pub mod signing;
pub mod snapshot;
pub mod storage;

pub use class::{io_class, BackendError, ErrorClass};
pub use depot::native_without_config;
pub use depot::PartialFilter;
pub use depot::{
    Backend, Base, CommitIntent, CommitRequest, Committed, Consumer, Delivery, Depot, Error,
    EventRecord, FailureStore, FsckKind, FsckProblem, FsckReport, GcOptions, GcReport,
    HistoryEntry, HistoryOrder, Layout, Maintenance, Options, PartitionFilter, RedactReport,
    Redaction, RefOutcome, RefSync, RepairReport, Subscription, SyncOptions, SyncReport,
    REDACTED_EVENT_NAME, REDACTION_BATCH_FIELD, REDACTION_FIELD,
};
pub use depot::{CAUSATION_ID_FIELD, COMMAND_ID_FIELD, CORRELATION_ID_FIELD};
pub use hash::{HashKind, ObjectId, ParseIdError, Prefix};
pub use index::{IndexError, IndexedCheckpoint};
pub use journal::JournalError;
pub use lockfile::LockError;
pub use name::{
    escape_invisible, is_invisible, shown, EventName, FieldKey, FieldValue, NameError,
    PartitionName,
};
pub use object::checkpoint_log;
pub use object::{
    format_date, parse_date, Affix, Checkpoint, CheckpointError, Data, DecodeError, EncodedObject,
    Event, Kind, Object,
};
pub use refdb::{Expected, LogInfo, RefEdit, RefName, RefValue, ReflogEntry};
pub use rev::{Revision, Step};

//! retro's depot: a Git-like, content-addressed store of events.
//!
//! - [`ObjectId`], [`Object`] and friends: the three object kinds and their one encoding;
//! - [`odb`]: object stores (pack, loose, memory) behind [`odb::ObjectStore`];
//! - [`refdb`]: ref stores (files, memory) behind [`refdb::RefStore`], moved by compare-and-swap;
//! - [`postgres`]: both stores in a PostgreSQL database, for depots shared by several hosts;
//! - [`storage`]: the I/O seam native depots write through ([`storage::FsStorage`], and
//!   [`storage::SimStorage`] for power-loss tests);
//! - [`Depot`]: both together with the journal (one fsync per commit), group commit, the
//!   partition index, history walks, revisions, fsck and gc.
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

mod depot;
mod fsutil;
mod hash;
mod index;
mod journal;
mod lockfile;
mod name;
mod object;
pub mod odb;
pub mod postgres;
pub mod refdb;
mod rev;
pub mod storage;

pub use depot::native_without_config;
pub use depot::{
    Base, CommitIntent, CommitRequest, Committed, Consumer, Delivery, Depot, Error, ErrorClass,
    EventRecord, FsckProblem, FsckReport, GcOptions, GcReport, HistoryOrder, Layout, Options,
    RefOutcome, RefSync, RepairReport, Subscription, SyncOptions, SyncReport,
};
pub use hash::{HashKind, ObjectId, ParseIdError, Prefix};
pub use index::{IndexError, IndexedCheckpoint};
pub use journal::JournalError;
pub use lockfile::LockError;
pub use name::{
    escape_invisible, is_invisible, shown, EventName, FieldKey, FieldValue, NameError,
    PartitionName,
};
pub use object::{
    format_date, parse_date, Affix, Checkpoint, CheckpointError, DecodeError, EncodedObject, Event,
    Kind, Object,
};
pub use refdb::{Expected, LogInfo, RefEdit, RefName, RefValue, ReflogEntry};
pub use rev::{Revision, Step};

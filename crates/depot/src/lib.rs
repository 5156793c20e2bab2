//! retro's depot: a Git-like, content-addressed store of events.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod hash;
mod name;
mod object;

pub use hash::{HashKind, ObjectId, ParseIdError, Prefix};
pub use name::{EventName, FieldKey, FieldValue, NameError, PartitionName};
pub use object::{
    format_date, parse_date, Affix, Checkpoint, CheckpointError, DecodeError, EncodedObject, Event,
    Kind, Object,
};
mod fsutil;
pub mod odb;
pub mod refdb;

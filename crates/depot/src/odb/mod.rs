//! The object database: where encoded objects live, behind one trait with several stores.
//!
//! Every store verifies on read that the bytes it returns hash to the id asked for, so a corrupt
//! file is an [`Error::Corrupt`], never wrong data. Writes are idempotent (an object already present
//! is left alone). `write` may buffer; after `sync` returns, every object written before it is
//! durable.
//!
//! - [`MemoryStore`]: a map, for tests and embedding.
//! - [`LooseStore`]: one zlib file per object at `<hex[0:2]>/<hex[2:4]>/<hex[4:]>` (go-retro's
//!   layout), each written via temp file, fsync and rename.
//! - [`PackStore`]: append-only pack files with an index, retro's default: a commit appends a few
//!   records and fsyncs once.

mod codec;
mod keys;
mod loose;
mod memory;
mod pack;

use std::io;
use std::path::PathBuf;

use crate::hash::{ObjectId, Prefix};
use crate::object::EncodedObject;

pub use loose::LooseStore;
pub use memory::MemoryStore;
pub(crate) use pack::object_payload as pack_object_payload;
pub(crate) use pack::RecordKind;
pub use pack::{PackProblem, PackRepair, PackStats, PackStore, Position};

/// What went wrong in an object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// Stored bytes do not hash to their id, or cannot be read back.
    #[error("object {id} is corrupt: {reason}")]
    Corrupt {
        /// The id that was asked for.
        id: ObjectId,
        /// What is wrong.
        reason: String,
    },
    /// A pack or index file is malformed.
    #[error("'{path}' is corrupt: {reason}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A backend-specific failure (a database server, say), with its class.
    #[error(transparent)]
    Backend(#[from] crate::class::BackendError),
    /// A lock (`packs/write.lock`) could not be taken in time.
    #[error(transparent)]
    Lock(#[from] crate::lockfile::LockError),
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

/// A place that stores objects by id.
pub trait ObjectStore: Send + Sync {
    /// The object with this id, verified, or `None` if the store does not have it.
    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, Error>;

    /// Several objects at once, in the order asked (`None` for the missing ones), each verified.
    /// Stores with a round trip per call (PostgreSQL) answer in one.
    fn read_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<EncodedObject>>, Error> {
        ids.iter().map(|id| self.read(id)).collect()
    }

    /// Where the object's record is, as a hint a later [`ObjectStore::read_many_hinted`] can use to
    /// skip the lookup by id (the pack store: pack number and offset); `None` when the store
    /// keeps no such thing. The partition index stores it beside each event.
    fn locate(&self, id: &ObjectId) -> Option<u64> {
        let _ = id;
        None
    }

    /// [`ObjectStore::read_many`] with a location hint per id (from [`ObjectStore::locate`]).
    /// A hint is never trusted: what is read there must be the object asked for, verified; a
    /// hint that is stale (the object moved) or wrong only costs the lookup by id.
    fn read_many_hinted(
        &self,
        ids: &[(ObjectId, Option<u64>)],
    ) -> Result<Vec<Option<EncodedObject>>, Error> {
        let ids: Vec<ObjectId> = ids.iter().map(|(id, _)| *id).collect();
        self.read_many(&ids)
    }

    /// Whether the store has the object (without verifying it).
    fn contains(&self, id: &ObjectId) -> Result<bool, Error>;

    /// Stores objects; existing ones are left alone. Durable only after [`ObjectStore::sync`].
    fn write(&self, objects: &[EncodedObject]) -> Result<(), Error>;

    /// Makes every object written so far durable.
    fn sync(&self) -> Result<(), Error>;

    /// Calls `f` with every id in the store, in no particular order, streaming.
    fn for_each_id(&self, f: &mut dyn FnMut(ObjectId) -> Result<(), Error>) -> Result<(), Error>;

    /// The ids starting with `prefix`, at most `limit` of them.
    fn find_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<ObjectId>, Error>;

    /// A short description for messages (`pack store at …`).
    fn describe(&self) -> String;
}

/// Reads and verifies: the shared check that stored bytes hash to `id`.
pub fn verify(id: &ObjectId, bytes: Vec<u8>) -> Result<EncodedObject, Error> {
    let object = EncodedObject::from_bytes(bytes);
    if object.id() != *id {
        return Err(Error::Corrupt {
            id: *id,
            reason: format!("its bytes hash to {}", object.id()),
        });
    }
    Ok(object)
}

/// The suite every object store must pass (for backends in other crates: feature `conformance`).
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

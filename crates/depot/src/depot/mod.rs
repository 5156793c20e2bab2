//! The depot: an object database and a ref database used together, with the partition index, the
//! commit pipeline (group commit, one fsync per batch), history walks, fsck and gc.
//!
//! Four layouts open through the same type ([`Layout`]):
//! - **native** (`retro init`): packs + journal, ref files, reflogs, the SQLite partition index;
//! - **go-retro**: a directory written by go-retro's filesystem store (loose objects at the root,
//!   `refs/heads/master`, no `HEAD`), read and written in place in its own format;
//! - **memory**: everything in memory, for tests and embedding;
//! - **a backend** from another crate, through [`Backend`]: the PostgreSQL one (crate
//!   `retro-depot-postgres`, `postgres://…`) keeps objects, refs, reflogs, failed commands and the
//!   partition index in one database.

mod checkpoint_log;
mod command_ids;
mod commit;
mod error;
mod fsck;
mod gc;
mod graph_walk;
mod history;
mod index_state;
mod partial;
mod redact;
mod repair;
mod snapshots;
mod subscribe;
mod sync;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use commit::{
    Base, CommitIntent, CommitRequest, Committed, CAUSATION_ID_FIELD, COMMAND_ID_FIELD,
    CORRELATION_ID_FIELD,
};
pub use error::Error;
pub use fsck::{FsckKind, FsckProblem, FsckReport};
pub use gc::{GcOptions, GcReport};
pub use graph_walk::{HistoryEntry, PartitionFilter};
pub(crate) use history::compile_glob;
pub use history::{EventRecord, HistoryOrder};
pub use partial::PartialFilter;
pub use redact::{
    RedactReport, Redaction, REDACTED_EVENT_NAME, REDACTION_BATCH_FIELD, REDACTION_FIELD,
};
pub use repair::RepairReport;
pub(crate) use subscribe::DepotRef;
pub use subscribe::{Consumer, Delivery, Subscription};
pub use sync::{RefOutcome, RefSync, SyncOptions, SyncReport};

use crate::fsutil;
use crate::hash::{ObjectId, Prefix};
use crate::index::{EventRow, IndexedCheckpoint, PartitionIndex};
use crate::journal::Journal;
use crate::name::PartitionName;
use crate::object::{Affix, Checkpoint, EncodedObject, Event, Kind, Object};
use crate::odb::{LooseStore, MemoryStore, ObjectStore, PackStore};
use crate::refdb::{
    Expected, FilesRefStore, LogInfo, MemoryRefStore, RefEdit, RefName, RefStore, RefValue,
    ReflogEntry,
};
use crate::storage::{FsStorage, Storage};

/// The format line in a native depot's `config`.
const FORMAT_LINE: &str = "retro depot 1";
/// The `config` line that makes commits write sealed (redactable) events; `retro init` writes it.
const SEALED_LINE: &str = "events sealed";
/// The `config` line that keeps commits writing plain events (the default without a line).
const PLAIN_LINE: &str = "events plain";

/// Which on-disk shape a depot has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// retro's own: packs, journal, index.
    Native,
    /// go-retro's filesystem store, read and written in its format.
    GoRetro,
    /// In memory only.
    Memory,
    /// In a backend outside this crate (a database server), named here (`PostgreSQL`).
    Backend(&'static str),
}

/// A backend's failed-command log (see [`Depot::record_failure`]).
pub trait FailureStore: Send + Sync {
    /// Records the checkpoint of a failed command, durably.
    fn append_failure(&self, id: &ObjectId) -> Result<(), Error>;
    /// The recorded ones, oldest first.
    fn failures(&self) -> Result<Vec<ObjectId>, Error>;
}

/// What gc can do in a backend that keeps objects as rows: nothing to repack, but old
/// unreachable objects can be pruned while every commit (on every host) waits.
pub trait Maintenance: Send + Sync {
    /// Stops every commit (on every host) until the guard is dropped.
    fn lock_commits(&self) -> Result<Box<dyn std::any::Any>, Error>;
    /// Deletes objects older than `grace` that `keep` does not name; returns (kept, pruned).
    fn prune(
        &self,
        keep: &std::collections::HashSet<ObjectId>,
        grace: Duration,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u64, u64), Error>;
    /// Bytes the objects take, for gc's report.
    fn bytes(&self) -> Result<u64, Error>;
}

/// Everything a depot needs from a backend outside this crate: see [`Depot::from_backend`].
pub struct Backend {
    /// Its name, for messages and [`Layout::Backend`] (`PostgreSQL`).
    pub name: &'static str,
    /// Its object store.
    pub objects: Arc<dyn ObjectStore>,
    /// Its ref store.
    pub refs: Arc<dyn RefStore>,
    /// Its partition index (or an in-memory one: [`PartitionIndex::in_memory`]).
    pub index: PartitionIndex,
    /// Its failed-command log.
    pub failures: Arc<dyn FailureStore>,
    /// What gc can do there, if anything.
    pub maintenance: Option<Arc<dyn Maintenance>>,
    /// Its consumer-group store (`None`: groups are kept in memory, for this process only).
    pub groups: Option<Arc<dyn crate::group::GroupStore>>,
}

/// Where failed commands are listed.
enum FailureLog {
    /// A file of ids, one a line.
    File(PathBuf),
    /// A backend's own log.
    Store(Arc<dyn FailureStore>),
    /// In memory (the committer keeps them).
    Memory,
}

/// Settings for opening a depot.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a writer waits for the depot lock.
    pub lock_timeout: Duration,
    /// Size past which the active pack is sealed.
    pub pack_roll_size: Option<u64>,
    /// How many bytes of the active pack may go uncovered by its key log before a writer
    /// extends it (default 32 KiB); tests set it small to exercise the log at every commit.
    pub key_log_every: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lock_timeout: crate::refdb::DEFAULT_LOCK_TIMEOUT,
            pack_roll_size: None,
            key_log_every: None,
        }
    }
}

/// A depot: objects, refs, the partition index and the commit pipeline.
pub struct Depot {
    root: Option<PathBuf>,
    layout: Layout,
    objects: Arc<dyn ObjectStore>,
    refs: Arc<dyn RefStore>,
    packs: Option<Arc<PackStore>>,
    journal: Option<Journal>,
    index: Mutex<IndexState>,
    committer: commit::Committer,
    failed_log: FailureLog,
    lock_file: Option<crate::lockfile::LockFile>,
    options: Options,
    /// What gc can do in a backend outside this crate.
    maintenance: Option<Arc<dyn Maintenance>>,
    /// What a native depot's files are written through (the real file system but in power-loss
    /// tests); the failed-command log file goes through it too.
    storage: Arc<dyn Storage>,
    /// The commit-graph of a native depot (derived; see `graph_walk`).
    graph: Option<graph_walk::GraphHandle>,
    /// Aggregate snapshots (derived; opened on first use: see `snapshots`).
    snapshots: std::sync::OnceLock<Option<crate::snapshot::SnapshotStore>>,
    /// The key that signs each new checkpoint, if one is set ([`Depot::set_signer`]).
    signer: std::sync::RwLock<Option<Arc<crate::signing::Signer>>>,
    /// Whether commits write sealed events (see `redact`).
    seal_events: std::sync::atomic::AtomicBool,
    /// The redactions known (the `redactions` file of a native depot; see `redact`).
    redactions: std::sync::RwLock<redact::Redactions>,
    /// A partial clone's partition filter (the `partial` file of a native depot; see `partial`).
    partial: std::sync::RwLock<Option<PartialFilter>>,
    /// Where consumer groups live (see `group`): set by a backend, else made on first use.
    groups: std::sync::OnceLock<Arc<dyn crate::group::GroupStore>>,
}

impl Depot {
    /// Creates a native depot in `dir` (which may exist but must not hold a depot).
    pub fn init(dir: impl AsRef<Path>) -> Result<Depot, Error> {
        Self::init_with(dir, Options::default())
    }

    /// [`Depot::init`] with options.
    pub fn init_with(dir: impl AsRef<Path>, options: Options) -> Result<Depot, Error> {
        Self::init_on(FsStorage::shared(), dir, options)
    }

    /// [`Depot::init_with`] on any storage: a native depot whose files are all written through
    /// `storage` (a [`crate::storage::SimStorage`] in power-loss tests).
    pub fn init_on(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Depot, Error> {
        let dir = dir.as_ref();
        if storage.is_os() && native_without_config(dir) {
            return Err(Error::MissingConfig(dir.to_path_buf()));
        }
        if storage.exists(&dir.join("config")) || (storage.is_os() && detect_go_retro(dir)) {
            return Err(Error::AlreadyExists(dir.to_path_buf()));
        }
        fsutil::create_dir_durable(&*storage, &dir.join("refs/heads"))
            .map_err(Error::io("create directory", dir.join("refs/heads")))?;
        for sub in ["objects", "packs", "logs"] {
            fsutil::create_dir_durable(&*storage, &dir.join(sub))
                .map_err(Error::io("create directory", dir.join(sub)))?;
        }
        fsutil::write_atomic(&*storage, &dir.join("HEAD"), b"ref: refs/heads/master")
            .map_err(Error::io("write", dir.join("HEAD")))?;
        // The config is written last: a crash before it leaves no half-made depot behind.
        fsutil::write_atomic(
            &*storage,
            &dir.join("config"),
            format!("{FORMAT_LINE}\n{SEALED_LINE}\n").as_bytes(),
        )
        .map_err(Error::io("write", dir.join("config")))?;
        Self::open_on(storage, dir, options)
    }

    /// Opens the depot in `dir`, native or go-retro.
    pub fn open(dir: impl AsRef<Path>) -> Result<Depot, Error> {
        Self::open_with(dir, Options::default())
    }

    /// [`Depot::open`] with options.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Depot, Error> {
        Self::open_on(FsStorage::shared(), dir, options)
    }

    /// [`Depot::open_with`] on any storage. On a storage other than the OS's file system only a
    /// native depot opens, with its partition index in memory (it is derived: rebuilt from
    /// history) and no loose-object directory.
    pub fn open_on(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Depot, Error> {
        let dir = dir.as_ref();
        let config = dir.join("config");
        if storage.is_file(&config) {
            let bytes = storage.read(&config).map_err(Error::io("read", &config))?;
            let text = String::from_utf8_lossy(&bytes);
            let first = text.lines().next().unwrap_or_default().trim().to_owned();
            if first != FORMAT_LINE {
                return Err(Error::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found: first,
                });
            }
            let mut seal = false;
            for line in text.lines().skip(1).map(str::trim) {
                match line {
                    SEALED_LINE => seal = true,
                    PLAIN_LINE => seal = false,
                    // Other settings belong to other features (or a later release).
                    _ => {}
                }
            }
            let depot = Self::open_native(storage, dir, options)?;
            depot.set_seal_events(seal)?;
            depot.reload_redactions()?;
            depot.reload_partial()?;
            return Ok(depot);
        }
        if !storage.is_os() {
            return Err(Error::NotADepot(dir.to_path_buf()));
        }
        if native_without_config(dir) {
            // Not go-retro's layout: opening it as one would show "missing object" errors.
            return Err(Error::MissingConfig(dir.to_path_buf()));
        }
        if detect_go_retro(dir) {
            let depot = Self::open_go_retro(dir, options)?;
            depot.reload_redactions()?;
            return Ok(depot);
        }
        Err(Error::NotADepot(dir.to_path_buf()))
    }

    fn open_native(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: Options,
    ) -> Result<Depot, Error> {
        // What killed writers left in the root: commit-graph rebuilds, gc's reflog compaction.
        fsutil::remove_dead_temps(&*storage, dir);
        let loose = storage
            .is_os()
            .then(|| LooseStore::new(dir.join("objects")));
        let mut packs = PackStore::open_on(storage.clone(), dir.join("packs"), loose)?
            .with_lock_timeout(options.lock_timeout);
        if let Some(size) = options.pack_roll_size {
            packs = packs.with_roll_size(size);
        }
        if let Some(bytes) = options.key_log_every {
            packs = packs.with_key_log_every(bytes);
        }
        let packs = Arc::new(packs);
        let files = Arc::new(
            FilesRefStore::new_on(storage.clone(), dir, dir.join("lock"))
                .with_lock_timeout(options.lock_timeout),
        );
        let mut journal = Journal::new(packs.clone(), files.clone(), dir);
        journal.set_lock_timeout(options.lock_timeout);
        journal.publish_acknowledged()?;
        if journal.needs_recovery()? {
            let _lock = journal.lock()?;
            journal.recover_locked()?;
        }
        let index = match storage.is_os() {
            true => IndexState::open_file(dir.join("index.sqlite"))?,
            false => IndexState::new(PartitionIndex::in_memory()?),
        };
        Ok(Depot {
            root: Some(dir.to_path_buf()),
            layout: Layout::Native,
            objects: packs.clone(),
            refs: files,
            packs: Some(packs),
            journal: Some(journal),
            index: Mutex::new(index),
            committer: commit::Committer::default(),
            failed_log: FailureLog::File(dir.join("logs/failed")),
            lock_file: None,
            options,
            maintenance: None,
            graph: Some(graph_walk::GraphHandle::new(
                storage.clone(),
                dir.join("commit-graph"),
            )),
            storage,
            snapshots: Default::default(),
            signer: Default::default(),
            seal_events: Default::default(),
            redactions: Default::default(),
            partial: Default::default(),
            groups: Default::default(),
        })
    }

    fn open_go_retro(dir: &Path, options: Options) -> Result<Depot, Error> {
        let lock_path = dir.join(".retro-lock");
        let refs =
            Arc::new(FilesRefStore::new(dir, &lock_path).with_lock_timeout(options.lock_timeout));
        let index = IndexState::open_file(dir.join(".retro-index.sqlite"))?;
        Ok(Depot {
            root: Some(dir.to_path_buf()),
            layout: Layout::GoRetro,
            objects: Arc::new(LooseStore::new(dir)),
            refs,
            packs: None,
            journal: None,
            index: Mutex::new(index),
            committer: commit::Committer::default(),
            failed_log: FailureLog::File(dir.join(".retro-failed")),
            lock_file: Some(crate::lockfile::LockFile::new(&lock_path)),
            options,
            maintenance: None,
            storage: FsStorage::shared(),
            graph: None,
            snapshots: Default::default(),
            signer: Default::default(),
            seal_events: Default::default(),
            redactions: Default::default(),
            partial: Default::default(),
            groups: Default::default(),
        })
    }

    /// A depot in memory.
    pub fn in_memory() -> Result<Depot, Error> {
        Self::with_stores(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryRefStore::new()),
        )
    }

    /// A depot over any object and ref stores (PostgreSQL, say); commits write objects, sync, then
    /// move refs by compare-and-swap. `HEAD` is created pointing at `refs/heads/master` if absent.
    pub fn with_stores(
        objects: Arc<dyn ObjectStore>,
        refs: Arc<dyn RefStore>,
    ) -> Result<Depot, Error> {
        Self::over_stores(
            objects,
            refs,
            PartitionIndex::in_memory()?,
            Layout::Memory,
            FailureLog::Memory,
        )
    }

    fn over_stores(
        objects: Arc<dyn ObjectStore>,
        refs: Arc<dyn RefStore>,
        index: PartitionIndex,
        layout: Layout,
        failed_log: FailureLog,
    ) -> Result<Depot, Error> {
        if refs.read(&RefName::head())?.is_none() {
            refs.transaction(&[RefEdit {
                name: RefName::head(),
                expected: Expected::MustNotExist,
                new: Some(RefValue::Symbolic(RefName::master())),
                log: LogInfo::default(),
            }])?;
        }
        Ok(Depot {
            root: None,
            layout,
            objects,
            refs,
            packs: None,
            journal: None,
            index: Mutex::new(IndexState::new(index)),
            committer: commit::Committer::default(),
            failed_log,
            lock_file: None,
            options: Options::default(),
            maintenance: None,
            storage: FsStorage::shared(),
            graph: None,
            snapshots: Default::default(),
            signer: Default::default(),
            seal_events: Default::default(),
            redactions: Default::default(),
            partial: Default::default(),
            groups: Default::default(),
        })
    }

    /// A depot over a backend that lives outside this crate (the PostgreSQL backend of crate
    /// `retro-depot-postgres`, say): its stores, its partition index, its failed-command log and
    /// what gc can do there. Commits write objects, sync, then move refs by compare-and-swap (a
    /// ref store may do all of it in one statement: [`RefStore::transaction_with_objects`]).
    /// `HEAD` is created pointing at `refs/heads/master` if absent.
    pub fn from_backend(backend: Backend) -> Result<Depot, Error> {
        let mut depot = Self::over_stores(
            backend.objects,
            backend.refs,
            backend.index,
            Layout::Backend(backend.name),
            FailureLog::Store(backend.failures),
        )?;
        depot.maintenance = backend.maintenance;
        if let Some(groups) = backend.groups {
            let _ = depot.groups.set(groups);
        }
        Ok(depot)
    }

    /// Where warnings go: the depot never prints, so a caller that shows them to a user sets a
    /// sink (warnings raised before are handed to it at once). Today these say that the derived
    /// partition index was replaced or is stood in for by one in memory.
    pub fn on_warning(&self, sink: impl Fn(&str) + Send + 'static) {
        self.index
            .lock()
            .expect("index lock poisoned")
            .set_sink(Box::new(sink));
    }

    /// The consumer-group store: the backend's, `groups/` in a depot on the file system, or one
    /// in memory.
    pub(crate) fn group_store_ref(&self) -> &Arc<dyn crate::group::GroupStore> {
        self.groups
            .get_or_init(|| match (&self.root, self.storage.is_os()) {
                (Some(root), true) => Arc::new(
                    crate::group::FilesGroupStore::new(root.join("groups"))
                        .with_lock_timeout(self.options.lock_timeout),
                ),
                _ => Arc::new(crate::group::MemoryGroupStore::default()),
            })
    }

    /// The depot's directory (none for a memory depot).
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The depot's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Bytes of pack files this handle has read by scanning since it was opened (a native
    /// depot; `None` for others): what an open costs beyond reading the active pack's key log
    /// (see [`PackStore::scan_work`]). For tests and benchmarks of the open path.
    pub fn pack_scan_work(&self) -> Option<u64> {
        self.packs.as_ref().map(|packs| packs.scan_work())
    }

    /// The object store.
    pub fn objects(&self) -> &dyn ObjectStore {
        &*self.objects
    }

    /// The ref store (read it freely; move refs through [`Depot::update_refs`]).
    pub(crate) fn refs(&self) -> &dyn RefStore {
        &*self.refs
    }

    /// Reads a ref's raw value. A go-retro depot has no `HEAD` file: `HEAD` reads as a symbolic
    /// ref to `refs/heads/master` there.
    pub fn read_ref(&self, name: &RefName) -> Result<Option<RefValue>, Error> {
        match self.refs.read(name)? {
            None if name.as_str() == "HEAD" => Ok(Some(RefValue::Symbolic(RefName::master()))),
            other => Ok(other),
        }
    }

    /// Follows symbolic refs: the direct ref's name and its checkpoint (`None` while unborn).
    pub fn resolve_ref(&self, name: &RefName) -> Result<(RefName, Option<ObjectId>), Error> {
        if matches!(self.layout, Layout::Backend(_)) {
            // One round trip for the whole chain.
            return Ok(self.refs.resolve(name)?);
        }
        Ok(crate::refdb::resolve_with(name, |n| {
            self.read_ref(n).map_err(|e| match e {
                Error::Refs(r) => r,
                other => crate::refdb::Error::Backend(crate::class::BackendError::new(
                    other.class(),
                    other,
                )),
            })
        })?)
    }

    /// The checkpoint `HEAD` points at, if any.
    pub fn head(&self) -> Result<Option<ObjectId>, Error> {
        Ok(self.resolve_ref(&RefName::head())?.1)
    }

    /// Every ref whose name starts with `prefix`, with `HEAD` shown for go-retro depots too.
    pub fn list_refs(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, Error> {
        let mut refs = self.refs.list(prefix)?;
        if "HEAD".starts_with(prefix) && !refs.iter().any(|(n, _)| n.as_str() == "HEAD") {
            if let Some(head) = self.read_ref(&RefName::head())? {
                refs.push((RefName::head(), head));
                refs.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        Ok(refs)
    }

    /// A ref's reflog, oldest first.
    pub fn reflog(&self, name: &RefName) -> Result<Vec<ReflogEntry>, Error> {
        let (target, _) = self.resolve_ref(name)?;
        Ok(self.refs.reflog(&target)?)
    }

    /// Reads an object, verified.
    pub fn read_object(&self, id: &ObjectId) -> Result<EncodedObject, Error> {
        if self.is_erased(id) {
            return Err(Error::Erased(*id));
        }
        self.objects.read(id)?.ok_or_else(|| Error::MissingObject {
            id: *id,
            context: "not in the object store".to_owned(),
        })
    }

    /// Reads and decodes an object.
    pub fn read_decoded(&self, id: &ObjectId) -> Result<Object, Error> {
        self.read_object(id)?
            .decode()
            .map_err(|source| Error::Decode { id: *id, source })
    }

    /// Reads a checkpoint.
    pub fn read_checkpoint(&self, id: &ObjectId) -> Result<Checkpoint, Error> {
        match self.read_decoded(id)? {
            Object::Checkpoint(c) => self.resolve_checkpoint(id, c),
            other => Err(Error::WrongKind {
                id: *id,
                expected: Kind::Checkpoint,
                found: other.kind(),
            }),
        }
    }

    /// Reads a checkpoint without resolving its command (`message()` is empty when a
    /// `message-data` field names it): for walks that need only parents, affix and fields.
    pub(crate) fn read_checkpoint_unresolved(&self, id: &ObjectId) -> Result<Checkpoint, Error> {
        match self.read_decoded(id)? {
            Object::Checkpoint(c) => Ok(c),
            other => Err(Error::WrongKind {
                id: *id,
                expected: Kind::Checkpoint,
                found: other.kind(),
            }),
        }
    }

    /// Reads an affix.
    pub fn read_affix(&self, id: &ObjectId) -> Result<Affix, Error> {
        match self.read_decoded(id)? {
            Object::Affix(a) => Ok(a),
            other => Err(Error::WrongKind {
                id: *id,
                expected: Kind::Affix,
                found: other.kind(),
            }),
        }
    }

    /// Reads an event, resolved: a sealed event with its data, a redacted one with its
    /// tombstone (see [`Depot::resolve_event`]).
    pub fn read_event(&self, id: &ObjectId) -> Result<Event, Error> {
        if let Some(tombstone) = self.erased_plain_event(id) {
            return Ok(tombstone);
        }
        match self
            .read_decoded(id)
            .map_err(|missing| self.absent_or(id, missing))?
        {
            Object::Event(e) => self.resolve_event(id, e),
            other => Err(Error::WrongKind {
                id: *id,
                expected: Kind::Event,
                found: other.kind(),
            }),
        }
    }

    /// Resolves a unique id prefix (at least 4 hex digits).
    pub fn resolve_prefix(&self, prefix: &Prefix) -> Result<ObjectId, Error> {
        let found = self.objects.find_prefix(prefix, 8)?;
        match found.as_slice() {
            [] => Err(Error::UnknownRevision(prefix.to_string())),
            [one] => Ok(*one),
            _ => Err(Error::AmbiguousPrefix {
                prefix: prefix.to_string(),
                candidates: found,
            }),
        }
    }

    /// Sets (or with `None` clears) the key that signs every checkpoint this depot commits from
    /// now on: each gets a `signature` field ([`crate::signing`]). Failed commands' orphaned
    /// checkpoints are not signed (they are on no chain).
    pub fn set_signer(&self, signer: Option<Arc<crate::signing::Signer>>) {
        *self.signer.write().unwrap_or_else(|e| e.into_inner()) = signer;
    }

    /// The key that signs new checkpoints, if one is set.
    pub fn signer(&self) -> Option<Arc<crate::signing::Signer>> {
        self.signer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Signs `checkpoint` with the depot's key, if one is set (a checkpoint built outside the
    /// commit pipeline, such as a merge checkpoint, is signed with this before it is written).
    pub fn sign_checkpoint(&self, checkpoint: &mut Checkpoint) {
        if let Some(signer) = self.signer() {
            signer.sign(checkpoint);
        }
    }

    /// Moves refs by compare-and-swap, all or none (through the journal in a native depot).
    pub fn update_refs(&self, edits: &[RefEdit]) -> Result<(), Error> {
        for edit in edits {
            if let Some(RefValue::Direct(id)) = &edit.new {
                self.read_checkpoint_unresolved(id)?;
            }
        }
        match &self.journal {
            Some(journal) => {
                if edits
                    .iter()
                    .any(|e| matches!(e.new, Some(RefValue::Symbolic(_))))
                {
                    // Symbolic refs (HEAD) are not journaled: set them with a plain ref transaction.
                    return Ok(self.refs.transaction(edits)?);
                }
                let _lock = journal.lock()?;
                journal.recover_locked()?;
                let prepared = crate::refdb::prepare_edits(edits, |n| self.refs.read(n))?;
                // Every refusal comes before the journal: a move in it must be writable.
                crate::refdb::check_clashes(
                    &prepared,
                    |n| self.refs.read(n),
                    |n| self.refs.list_under(n),
                )?;
                for (edit, actual) in &prepared {
                    if edit.new.is_some() && actual.is_none() {
                        journal.refs().check_paths(&edit.name)?;
                    }
                }
                let record = crate::journal::JournalRecord {
                    date: chrono::Utc::now(),
                    updates: prepared
                        .iter()
                        .map(|(edit, old)| crate::journal::JournalUpdate {
                            name: edit.name.clone(),
                            old: old.as_ref().and_then(RefValue::id),
                            new: edit.new.as_ref().and_then(RefValue::id),
                            session: edit.log.session.clone(),
                            message: edit.log.message.clone(),
                        })
                        .collect(),
                };
                journal.commit_locked(Vec::new(), &record)?;
                Ok(())
            }
            None => Ok(self.refs.transaction(edits)?),
        }
    }

    /// Refuses to create `name` where it cannot exist: beside a ref it clashes with (`a` and
    /// `a/b`, [`crate::refdb::names_clash`]), existing or in `batch` (refs created earlier in the
    /// same commit batch), or, in a files depot, where the file tree has no room for it. Checked
    /// before anything is written.
    pub(crate) fn check_new_ref(&self, name: &RefName, batch: &[RefName]) -> Result<(), Error> {
        let clash = |other: RefName, same_transaction| {
            Error::from(crate::refdb::Error::NameClash {
                name: name.clone(),
                other,
                same_transaction,
            })
        };
        if let Some(other) = batch.iter().find(|b| crate::refdb::names_clash(b, name)) {
            return Err(clash(other.clone(), true));
        }
        for ancestor in crate::refdb::ancestors(name) {
            if self.refs.read(&ancestor)?.is_some() {
                return Err(clash(ancestor, false));
            }
        }
        if let Some(child) = self.refs.list_under(name)?.into_iter().next() {
            return Err(clash(child, false));
        }
        if let Some(journal) = &self.journal {
            journal.refs().check_paths(name)?;
        }
        Ok(())
    }

    /// The journaled ref moves that recovery could not write and skipped, one line each as
    /// recorded in `logs/skipped-ref-moves` (empty for other layouts). fsck reports them.
    pub fn skipped_ref_moves(&self) -> Result<Vec<String>, Error> {
        match &self.journal {
            Some(journal) => Ok(journal.skipped_moves()?),
            None => Ok(Vec::new()),
        }
    }

    /// Writes objects durably without moving any ref (sync's copy path): appended with one fsync
    /// in a native depot (under its lock), written then synced elsewhere. Objects already present
    /// are left alone.
    pub fn write_objects(&self, objects: &[EncodedObject]) -> Result<(), Error> {
        self.write_objects_then(objects, || Ok(()))
    }

    /// Records a failed command: its checkpoint is written (unreferenced) and listed in the
    /// depot's failure log, which fsck and gc treat as a root. Returns the checkpoint id.
    pub fn record_failure(
        &self,
        checkpoint: &Checkpoint,
        affix: &Affix,
    ) -> Result<ObjectId, Error> {
        let affix = Object::from(affix.clone()).to_encoded();
        let mut objects = vec![affix];
        let mut checkpoint = checkpoint.clone();
        if self.seals_events()
            && checkpoint.message_data().is_none()
            && !checkpoint.stored_message().is_empty()
        {
            // Sealed like a committed checkpoint: the command in a data object of its own.
            let (sealed, data) = redact::seal_message(&checkpoint)?;
            checkpoint = sealed;
            objects.push(data);
        }
        let encoded = Object::from(checkpoint).to_encoded();
        let id = encoded.id();
        objects.push(encoded);
        self.write_objects_then(&objects, || self.append_failure_line(&id))?;
        Ok(id)
    }

    /// Writes `objects` durably under the depot's writer lock, then runs `then` still holding it.
    pub(crate) fn write_objects_then(
        &self,
        objects: &[EncodedObject],
        then: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        match &self.journal {
            Some(journal) => {
                let _lock = journal.lock()?;
                journal.recover_locked()?;
                let packs = self.packs.as_ref().expect("native depots have packs");
                let mut seen = std::collections::HashSet::new();
                let records: Vec<_> = objects
                    .iter()
                    .filter(|o| seen.insert(o.id()) && !packs.has_in_packs(&o.id()))
                    .map(|o| {
                        (
                            crate::odb::RecordKind::Object,
                            crate::odb::pack_object_payload(o),
                        )
                    })
                    .collect();
                if !records.is_empty() {
                    journal.append_objects_locked(records)?;
                }
                then()
            }
            None => {
                let _lock = self
                    .lock_file
                    .as_ref()
                    .map(|l| l.acquire(self.options.lock_timeout))
                    .transpose()
                    .map_err(crate::refdb::Error::from)?;
                self.objects.write(objects)?;
                self.objects.sync()?;
                then()
            }
        }
    }

    pub(crate) fn append_failure_line(&self, id: &ObjectId) -> Result<(), Error> {
        match &self.failed_log {
            FailureLog::File(path) => {
                crate::storage::append_line_durable(&*self.storage, path, &id.to_string())
                    .map_err(Error::io("append to", path))?;
            }
            FailureLog::Store(store) => store.append_failure(id)?,
            FailureLog::Memory => self.committer.remember_failure(*id),
        }
        Ok(())
    }

    /// The recorded failed commands' checkpoints, oldest first.
    pub fn failures(&self) -> Result<Vec<ObjectId>, Error> {
        self.failures_checked().map(|(ids, _)| ids)
    }

    /// The failed-command log's ids and the numbers (1-based) of its lines that are not ids (a
    /// damaged log never hides the readable entries).
    pub(crate) fn failures_checked(&self) -> Result<(Vec<ObjectId>, Vec<usize>), Error> {
        match &self.failed_log {
            FailureLog::File(path) => {
                let bytes = match self.storage.read(path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Error::io("read", path)(e)),
                };
                let mut ids = Vec::new();
                let mut bad = Vec::new();
                for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    // A power cut can leave the file longer than the bytes written to it, zeros
                    // at the end: a whole id whose newline is a zero is that id.
                    let line = &line[..line.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
                    let parsed = std::str::from_utf8(line)
                        .ok()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(|l| l.parse::<ObjectId>());
                    match parsed {
                        Some(Ok(id)) => ids.push(id),
                        None if line.iter().all(u8::is_ascii_whitespace) => {}
                        // A power cut during an append that was never acknowledged: part of an id.
                        _ if is_torn_id(line) => {}
                        _ => bad.push(i + 1),
                    }
                }
                Ok((ids, bad))
            }
            FailureLog::Store(store) => Ok((store.failures()?, Vec::new())),
            FailureLog::Memory => Ok((self.committer.failures(), Vec::new())),
        }
    }

    /// Opens the depot in `dir`, creating a native one there first when `dir` holds none (as
    /// [`Depot::init`] would; also when another process creates it at the same moment). A
    /// damaged depot is an error, never replaced.
    pub fn open_or_init(dir: impl AsRef<Path>) -> Result<Depot, Error> {
        let dir = dir.as_ref();
        match Self::open(dir) {
            Err(Error::NotADepot(_)) => match Self::init(dir) {
                Err(Error::AlreadyExists(_)) => Self::open(dir),
                result => result,
            },
            result => result,
        }
    }
}

/// True for the start of an id line cut short (`sha256:` and fewer than 64 hex digits, or a
/// prefix of `sha256:`; the caller strips the zeros a power cut can leave at the end): what a
/// torn append to a log of ids leaves.
fn is_torn_id(line: &[u8]) -> bool {
    const TAG: &[u8] = b"sha256:";
    let (tag, digits) = line.split_at(line.len().min(TAG.len()));
    TAG.starts_with(tag)
        && digits.len() < 64
        && digits
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// How far the in-memory tail of the index may be walked before SQLite catches up instead.
pub(crate) const PENDING_WALK_LIMIT: usize = 4096;
/// The in-memory tail is written to SQLite once it holds this many checkpoints.
pub(crate) const PENDING_FLUSH_AT: usize = 256;

/// The partition index: the stored index (SQLite, shared by processes; or PostgreSQL, shared by
/// hosts) plus, for SQLite, an in-memory tail of checkpoints this process has seen since the
/// stored head, written in batches. Below, "SQLite" stands for the stored index.
pub(crate) struct IndexState {
    pub(crate) stored: PartitionIndex,
    /// Checkpoints after `base`, oldest first, not yet in SQLite.
    pub(crate) pending: Vec<Arc<IndexedCheckpoint>>,
    /// SQLite's head (id, sequence number) that `pending` continues.
    pub(crate) base: Option<(ObjectId, u64)>,
    /// The SQLite file of a depot on disk (none in memory and on PostgreSQL): what a fallback
    /// or a reindex replaces (see `index_state`).
    pub(crate) path: Option<PathBuf>,
    /// Whether `stored` is the in-memory stand-in for a file that cannot be used.
    pub(crate) fallback: bool,
    /// Whether this process already replaced a corrupt file (it does so once).
    pub(crate) replaced: bool,
    /// Warnings not yet handed to a sink.
    pub(crate) warnings: Vec<String>,
    /// Where warnings go.
    pub(crate) sink: Option<index_state::WarningSink>,
}

impl IndexState {
    fn new(stored: PartitionIndex) -> IndexState {
        IndexState {
            stored,
            pending: Vec::new(),
            base: None,
            path: None,
            fallback: false,
            replaced: false,
            warnings: Vec::new(),
            sink: None,
        }
    }

    /// The checkpoint the index (SQLite plus tail) stands at.
    pub(crate) fn tip(&self) -> Option<ObjectId> {
        self.pending
            .last()
            .map(|c| c.id)
            .or(self.base.map(|(id, _)| id))
    }

    /// A partition's rows after `after`, from SQLite then the tail.
    pub(crate) fn rows(
        &self,
        partition: &PartitionName,
        after: u64,
    ) -> Result<Vec<EventRow>, crate::index::IndexError> {
        // SQLite may be ahead of `base` (another handle wrote it): read only up to `base`.
        let base_seq = self.base.map_or(0, |(_, seq)| seq);
        let mut rows = self
            .stored
            .partition_events_upto(partition, after, Some(base_seq))?;
        if self.pending.is_empty() {
            return Ok(rows);
        }
        let mut version = match rows.last() {
            Some(last) => last.version,
            None => self.stored.partition_version_upto(partition, base_seq)?,
        };
        for (i, checkpoint) in self.pending.iter().enumerate() {
            for (p, ids) in &checkpoint.partitions {
                if p != partition {
                    continue;
                }
                for event in ids {
                    version += 1;
                    if version > after {
                        rows.push(EventRow {
                            at: None,
                            partition: partition.clone(),
                            version,
                            event: *event,
                            checkpoint: checkpoint.id,
                            checkpoint_seq: base_seq + i as u64 + 1,
                            date: checkpoint.date,
                            session: checkpoint.session.clone(),
                        });
                    }
                }
            }
        }
        Ok(rows)
    }

    /// A partition's event count, SQLite plus the tail.
    pub(crate) fn version(
        &self,
        partition: &PartitionName,
    ) -> Result<u64, crate::index::IndexError> {
        let tail: usize = self
            .pending
            .iter()
            .flat_map(|c| c.partitions.iter())
            .filter(|(p, _)| p == partition)
            .map(|(_, ids)| ids.len())
            .sum();
        let base_seq = self.base.map_or(0, |(_, seq)| seq);
        Ok(self.stored.partition_version_upto(partition, base_seq)? + tail as u64)
    }
}

impl Drop for Depot {
    fn drop(&mut self) {
        // The tail is derived data: losing it costs a catch-up, so a failure here is ignored.
        let _ = self.flush_index();
        self.flush_log_frontiers();
    }
}

/// A native depot whose `config` is missing: it has what only retro's own layout has (`packs/`, the
/// journal state `journal`, the partition index `index.sqlite`) but no `config`. go-retro writes
/// none of these (its index is `.retro-index.sqlite`).
pub fn native_without_config(dir: &Path) -> bool {
    !dir.join("config").exists()
        && (dir.join("packs").is_dir()
            || dir.join("journal").is_file()
            || dir.join("index.sqlite").is_file())
}

/// A go-retro depot: `refs/heads/master` or two-hex-digit object directories, and no `config`.
fn detect_go_retro(dir: &Path) -> bool {
    if dir.join("config").exists() {
        return false;
    }
    if dir.join("refs/heads").is_dir() {
        return true;
    }
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.len() == 2
                && name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && e.path().is_dir()
        })
    })
}

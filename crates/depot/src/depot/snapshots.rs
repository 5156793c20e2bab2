//! The depot's side of aggregate snapshots: where the store lives (opened on first use, stood in
//! for by one in memory when its file cannot be used), verified reads that drop and report a
//! corrupt row, writes that never fail a command, and the consistent read the engine resumes
//! from. See [`crate::snapshot`] for what a snapshot is.

use super::{Depot, Error, Layout};
use crate::hash::ObjectId;
use crate::name::PartitionName;
use crate::snapshot::{is_unreadable, Snapshot, SnapshotInfo, SnapshotStore, Stored};

/// How many stored snapshots a rehydration considers (newest first) before reading everything.
const CANDIDATES: usize = 4;

impl Depot {
    fn snapshot_file(&self) -> Option<std::path::PathBuf> {
        match (self.layout, self.root.as_deref(), self.storage.is_os()) {
            (Layout::Native, Some(root), true) => Some(root.join("snapshots.sqlite")),
            (Layout::GoRetro, Some(root), _) => Some(root.join(".retro-snapshots.sqlite")),
            _ => None,
        }
    }

    fn open_snapshots(&self) -> Option<SnapshotStore> {
        if let Some(path) = self.snapshot_file() {
            match SnapshotStore::open(&path) {
                Ok(store) => return Some(store),
                Err(err) if is_unreadable(&err) => {
                    for suffix in ["", "-wal", "-shm"] {
                        let mut name = path.as_os_str().to_owned();
                        name.push(suffix);
                        let _ = std::fs::remove_file(&name);
                    }
                    match SnapshotStore::open(&path) {
                        Ok(store) => {
                            self.warn(format!(
                                "the snapshot store '{}' was unreadable ({err}); it holds only derived data, so it was replaced by an empty one",
                                path.display()
                            ));
                            return Some(store);
                        }
                        Err(again) => self.warn(format!(
                            "the snapshot store '{}' cannot be used ({err}; replacing it: {again}); this run keeps snapshots in memory",
                            path.display()
                        )),
                    }
                }
                Err(err) => self.warn(format!(
                    "the snapshot store '{}' cannot be used ({err}); this run keeps snapshots in memory",
                    path.display()
                )),
            }
        }
        // An in-memory SQLite database fails only when memory does: then no snapshots.
        match SnapshotStore::in_memory() {
            Ok(store) => Some(store),
            Err(e) => {
                self.warn(format!(
                    "no snapshot store ({e}): every rehydration reads all events"
                ));
                None
            }
        }
    }

    /// The aggregate snapshot store (derived data; see [`crate::snapshot`]); `None` only when
    /// not even one in memory could be made.
    pub fn snapshots(&self) -> Option<&SnapshotStore> {
        self.snapshots
            .get_or_init(|| self.open_snapshots())
            .as_ref()
    }

    /// The store if it is open or its file exists: reads never create the file (a depot that
    /// was never given a snapshot stays as it was, read-only ones included).
    pub(super) fn existing_snapshots(&self) -> Option<&SnapshotStore> {
        if let Some(store) = self.snapshots.get() {
            return store.as_ref();
        }
        match self.snapshot_file() {
            Some(path) if !path.exists() => None,
            _ => self.snapshots(),
        }
    }

    /// Shows a warning through [`Depot::on_warning`]'s sink.
    pub fn warn(&self, warning: String) {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .warn(warning);
    }

    /// The stored snapshots of `partition` for domain version `domain` whose checksum matches,
    /// newest first (at most a few). A corrupt one is removed with a warning; a store that fails
    /// is a warning and no snapshot: they are only ever an optimisation.
    pub fn load_snapshots(&self, partition: &PartitionName, domain: &str) -> Vec<Snapshot> {
        let Some(store) = self.existing_snapshots() else {
            return Vec::new();
        };
        let stored = match store.newest(partition.as_str(), domain, CANDIDATES) {
            Ok(stored) => stored,
            Err(e) => {
                self.warn(format!(
                    "could not read the snapshots of '{}' ({e}); rehydrating from its events",
                    crate::name::shown(partition.as_str())
                ));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for snapshot in stored {
            match snapshot {
                Stored::Valid(s) => out.push(s),
                Stored::Corrupt {
                    version,
                    checkpoint,
                } => {
                    self.warn(format!(
                        "the snapshot of '{}' at version {version} ({checkpoint}) does not match its checksum; ignored, removed and rebuilt from events",
                        crate::name::shown(partition.as_str())
                    ));
                    let _ = store.remove(partition.as_str(), domain, version, &checkpoint);
                }
            }
        }
        out
    }

    /// Stores a snapshot; a failure is a warning (never the caller's error).
    pub fn save_snapshot(&self, snapshot: &Snapshot) {
        let Some(store) = self.snapshots() else {
            return;
        };
        if let Err(e) = store.put(snapshot) {
            self.warn(format!(
                "could not store a snapshot of '{}' ({e}); the next rehydration reads its events",
                crate::name::shown(&snapshot.partition)
            ));
        }
    }

    /// Removes one stored snapshot (one that turned out unusable); a failure is a warning.
    pub fn drop_snapshot(&self, snapshot: &Snapshot) {
        let Some(store) = self.existing_snapshots() else {
            return;
        };
        if let Err(e) = store.remove(
            &snapshot.partition,
            &snapshot.domain,
            snapshot.version,
            &snapshot.checkpoint,
        ) {
            self.warn(format!("could not remove a snapshot ({e})"));
        }
    }

    /// The newest snapshot of `partition` for each domain version (for listings).
    pub fn snapshot_infos(&self, partition: &PartitionName) -> Vec<SnapshotInfo> {
        self.existing_snapshots()
            .and_then(|store| store.newest_of_each(partition.as_str()).ok())
            .unwrap_or_default()
    }

    /// Drops superseded snapshots (gc): keeps the newest per partition and domain version.
    pub(crate) fn prune_snapshots(&self) -> u64 {
        let Some(store) = self.existing_snapshots() else {
            return 0;
        };
        match store.prune() {
            Ok(n) => n,
            Err(e) => {
                self.warn(format!("gc could not prune snapshots ({e})"));
                0
            }
        }
    }

    /// The checkpoint the index stands at (HEAD after catching up) with the partition's events
    /// after version `after`, in one consistent read: what a rehydration from a snapshot at
    /// version `after + 1` checks (the first event returned must be the snapshot's own) and
    /// folds (the rest).
    pub fn partition_snapshot_after(
        &self,
        partition: &PartitionName,
        after: u64,
    ) -> Result<(Option<ObjectId>, Vec<crate::EventRecord>), Error> {
        self.check_partition_held(partition)?;
        let (head, rows) = self.with_index(false, |state| {
            Ok((state.tip(), state.rows(partition, after)?))
        })?;
        Ok((head, self.load_rows(rows)?))
    }
}

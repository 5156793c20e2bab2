//! gc: fold loose objects and small packs into one compressed pack, and optionally prune
//! unreachable objects older than a grace period. It holds the depot lock throughout, so no commit
//! (and no failed-command recording) can interleave with it: nothing a writer is about to reference
//! can be pruned under it. In a backend that keeps objects as rows (PostgreSQL) there is nothing
//! to repack; a prune holds its commit lock (every commit on every host waits) and deletes old
//! unreachable rows through [`super::Maintenance`]. Either way gc drops superseded aggregate
//! snapshots (keeping the newest per partition and domain version).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::{Depot, Error};
use crate::hash::ObjectId;
use crate::lockfile::DepotLock;
use crate::object::Object;

/// What gc should do.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Prune unreachable objects older than this; `None` keeps every object.
    pub prune_older_than: Option<Duration>,
}

/// What gc did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Objects kept.
    pub kept: u64,
    /// Objects pruned.
    pub pruned: u64,
    /// Pack bytes before.
    pub bytes_before: u64,
    /// Pack bytes after.
    pub bytes_after: u64,
    /// Packs before.
    pub packs_before: usize,
    /// Aggregate snapshots dropped because a newer one of the same partition and domain
    /// version supersedes them.
    pub snapshots_pruned: u64,
    /// Reflogs folded into a compressed frame.
    pub reflogs_compacted: u64,
}

impl Depot {
    /// Repacks (native depots) and optionally prunes (native and PostgreSQL depots).
    pub fn gc(
        &self,
        options: &GcOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<GcReport, Error> {
        if let Some(maintenance) = &self.maintenance {
            return self.gc_backend(&**maintenance, options, progress);
        }
        let (Some(packs), Some(journal)) = (&self.packs, &self.journal) else {
            return Err(Error::Invalid(
                "gc works on native and PostgreSQL depots only (this one keeps go-retro's loose \
                 layout)"
                    .to_owned(),
            ));
        };
        let _lock: DepotLock<'_> = journal.lock()?;
        journal.recover_locked()?;
        // The packs gc deletes hold journal records: make every ref move they record durable
        // in the ref files first, so that no replay after a power cut needs them.
        journal.settle_locked()?;
        let before = packs.stats()?;
        let mut report = GcReport {
            bytes_before: before.bytes,
            packs_before: before.packs,
            ..GcReport::default()
        };
        let mut keep: HashSet<ObjectId> = HashSet::new();
        if let Some(grace) = options.prune_older_than {
            keep = self.reachable()?;
            // Young unreachable objects are kept: pack or loose file newer than the grace period.
            let cutoff = SystemTime::now()
                .checked_sub(grace)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let young_packs = packs.young_object_ids(cutoff)?;
            keep.extend(young_packs);
            if let Some(loose) = packs.loose() {
                let mut young = Vec::new();
                crate::odb::ObjectStore::for_each_id(loose, &mut |id| {
                    if loose.mtime(&id).is_some_and(|t| t > cutoff) {
                        young.push(id);
                    }
                    Ok(())
                })?;
                keep.extend(young);
            }
        }
        let mut loose_ids = Vec::new();
        if let Some(loose) = packs.loose() {
            crate::odb::ObjectStore::for_each_id(loose, &mut |id| {
                loose_ids.push(id);
                Ok(())
            })?;
        }
        // Erased records (redaction) are dropped: the new pack does not carry even their zeros.
        // The log is re-read under the depot lock, so a redaction of another process counts.
        self.reload_redactions()?;
        // Streamed in id order from the packs' indexes (never every id in memory): each kept
        // object is read and written to the new pack as the merge reaches it.
        let (mut kept, mut dropped, mut done) = (0u64, 0u64, 0u64);
        let objects = packs.sorted_ids()?.filter_map(|id| {
            let id = match id {
                Ok(id) => id,
                Err(e) => return Some(Err(e)),
            };
            let wanted = options.prune_older_than.is_none() || keep.contains(&id);
            if !wanted || self.is_erased(&id) {
                dropped += 1;
                return None;
            }
            kept += 1;
            done += 1;
            if done.is_multiple_of(10_000) {
                progress(done);
            }
            Some(self.objects.read(&id).and_then(|object| {
                object.ok_or(crate::odb::Error::Corrupt {
                    id,
                    reason: "vanished during gc".to_owned(),
                })
            }))
        });
        let after = packs.repack(objects, &loose_ids)?;
        report.kept = kept;
        report.pruned = dropped;
        drop(keep);
        // The journal state names positions in the packs just deleted: point it at the new end
        // (no record after it), so the next open reads nothing back.
        journal.settle_locked()?;
        report.bytes_after = after.bytes;
        // The partition index keeps where each event's record was: point it at the new pack,
        // so reads after gc skip the lookup as before it. Only hints: a failure costs lookups.
        {
            let mut state = self.index.lock().expect("index lock poisoned");
            let objects = &self.objects;
            if let Err(e) = state.stored.relocate(|id| objects.locate(id)) {
                state.warn(format!(
                    "gc could not update the partition index's event locations ({e}); reads look events up by id until 'retro reindex'"
                ));
            }
        }
        // Reflogs repeat the chain itself (a line per move): fold each into a compressed frame.
        for (name, _) in self.refs.list("")? {
            report.reflogs_compacted += u64::from(self.refs.compact_reflog(&name)?);
        }
        // The commit-graph is derived: rebuilt from what the refs reach (repairing any damage).
        self.rebuild_graph()?;
        report.snapshots_pruned = self.prune_snapshots();
        Ok(report)
    }

    /// Every object reachable from a root: refs, reflog values (recent history stays
    /// recoverable) and failed commands.
    fn reachable(&self) -> Result<HashSet<ObjectId>, Error> {
        let mut roots: Vec<ObjectId> = Vec::new();
        for (name, value) in self.list_refs("")? {
            roots.extend(value.id());
            // Streamed: a reflog of millions of lines is never held whole.
            let _ = self.refs.for_each_reflog_line(&name, &mut |line| {
                if let Ok(entry) = line {
                    roots.extend(entry.new);
                    roots.extend(entry.old);
                }
                Ok(())
            });
        }
        roots.extend(self.failures()?);
        let mut keep = HashSet::new();
        let mut stack = roots;
        while let Some(id) = stack.pop() {
            if !keep.insert(id) {
                continue;
            }
            if self.is_erased(&id) {
                continue;
            }
            if let Some(encoded) = self.objects.read(&id)? {
                match encoded.decode() {
                    Ok(Object::Checkpoint(c)) => {
                        stack.push(c.affix());
                        stack.extend(c.message_data());
                        stack.extend(c.parents().iter().copied());
                    }
                    Ok(Object::Affix(a)) => {
                        for (_, ids) in a.partitions() {
                            stack.extend(ids.iter().copied());
                        }
                    }
                    Ok(Object::Event(e)) => stack.extend(e.sealed_data()),
                    Ok(Object::Data(_)) | Err(_) => {}
                }
            }
        }
        Ok(keep)
    }

    /// gc in a backend that keeps objects as rows (PostgreSQL): nothing to repack; with a grace
    /// period, every commit (on every host) waits while the index is brought to `HEAD`,
    /// reachability is computed and old unreachable objects are deleted. Do not run it while this
    /// same process commits from another thread (the commit would wait for the lock gc holds):
    /// run it as its own process, as `retro gc` does.
    fn gc_backend(
        &self,
        maintenance: &dyn super::Maintenance,
        options: &GcOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<GcReport, Error> {
        let mut report = GcReport {
            bytes_before: maintenance.bytes()?,
            ..GcReport::default()
        };
        match options.prune_older_than {
            None => {
                self.objects.for_each_id(&mut |_| {
                    report.kept += 1;
                    Ok(())
                })?;
            }
            Some(grace) => {
                let _lock = maintenance.lock_commits()?;
                // The index must follow HEAD before rows it names can be judged unreachable.
                self.catch_up_index()?;
                self.flush_index()?;
                let keep = self.reachable()?;
                let (kept, pruned) = maintenance.prune(&keep, grace, &mut progress)?;
                report.kept = kept;
                report.pruned = pruned;
            }
        }
        report.bytes_after = maintenance.bytes()?;
        report.snapshots_pruned = self.prune_snapshots();
        Ok(report)
    }
}

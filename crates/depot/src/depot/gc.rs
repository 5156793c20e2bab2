//! gc: fold loose objects and small packs into one compressed pack, and optionally prune
//! unreachable objects older than a grace period. It holds the depot lock throughout, so no commit
//! (and no failed-command recording) can interleave with it: nothing a writer is about to reference
//! can be pruned under it.

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
}

impl Depot {
    /// Repacks (native depots only) and optionally prunes.
    pub fn gc(
        &self,
        options: &GcOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<GcReport, Error> {
        let (Some(packs), Some(journal)) = (&self.packs, &self.journal) else {
            let why = match self.layout {
                super::Layout::Postgres => {
                    "gc works on files depots only (PostgreSQL keeps one row per object: there \
                     is nothing to repack; reclaim space with PostgreSQL's VACUUM)"
                }
                super::Layout::GoRetro => {
                    "gc works on native depots only (this one keeps go-retro's loose layout)"
                }
                _ => "gc works on native depots only",
            };
            return Err(Error::Invalid(why.to_owned()));
        };
        let _lock: DepotLock<'_> = journal.lock()?;
        journal.recover_locked()?;
        let before = packs.stats()?;
        let mut report = GcReport {
            bytes_before: before.bytes,
            packs_before: before.packs,
            ..GcReport::default()
        };
        let mut keep: HashSet<ObjectId> = HashSet::new();
        if let Some(grace) = options.prune_older_than {
            // Roots: refs, reflog values (recent history stays recoverable) and failed commands.
            let mut roots: Vec<ObjectId> = Vec::new();
            for (name, value) in self.list_refs("")? {
                roots.extend(value.id());
                for entry in self.refs.reflog(&name).unwrap_or_default() {
                    roots.extend(entry.new);
                    roots.extend(entry.old);
                }
            }
            roots.extend(self.failures()?);
            let mut stack = roots;
            while let Some(id) = stack.pop() {
                if !keep.insert(id) {
                    continue;
                }
                if let Some(encoded) = self.objects.read(&id)? {
                    match encoded.decode() {
                        Ok(Object::Checkpoint(c)) => {
                            stack.push(c.affix());
                            stack.extend(c.parents().iter().copied());
                        }
                        Ok(Object::Affix(a)) => {
                            for (_, ids) in a.partitions() {
                                stack.extend(ids.iter().copied());
                            }
                        }
                        Ok(Object::Event(_)) | Err(_) => {}
                    }
                }
            }
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
        let mut all = Vec::with_capacity(before.objects as usize);
        let mut loose_ids = Vec::new();
        crate::odb::ObjectStore::for_each_id(&**packs, &mut |id| {
            all.push(id);
            Ok(())
        })?;
        if let Some(loose) = packs.loose() {
            crate::odb::ObjectStore::for_each_id(loose, &mut |id| {
                loose_ids.push(id);
                Ok(())
            })?;
        }
        all.sort();
        all.dedup();
        let total = all.len();
        let kept: Vec<ObjectId> = match options.prune_older_than {
            Some(_) => all.into_iter().filter(|id| keep.contains(id)).collect(),
            None => all,
        };
        report.kept = kept.len() as u64;
        report.pruned = (total - kept.len()) as u64;
        drop(keep);
        let mut done = 0u64;
        let objects = kept.iter().map(|id| {
            done += 1;
            if done.is_multiple_of(10_000) {
                progress(done);
            }
            self.objects.read(id)?.ok_or(crate::odb::Error::Corrupt {
                id: *id,
                reason: "vanished during gc".to_owned(),
            })
        });
        let after = packs.repack(objects, &loose_ids)?;
        report.bytes_after = after.bytes;
        Ok(report)
    }
}

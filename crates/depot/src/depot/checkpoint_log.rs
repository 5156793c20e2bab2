//! The checkpoint log in a depot (see [`crate::object::checkpoint_log`]): the `log` field each
//! new checkpoint carries, computed in O(log n) from its first parent's frontier; the frontiers
//! kept for that (in memory, and in a native depot's `log-frontiers` file: derived, verified
//! before use, rebuilt by a walk of the first-parent chain when missing); inclusion proofs
//! ([`Depot::prove`]); and fsck's check of every `log` field on the refs' first-parent chains.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use super::fsck::{FsckKind, FsckProblem, FsckReport};
use super::{Depot, Error, HistoryOrder, Layout};
use crate::hash::ObjectId;
use crate::log_frontiers;
use crate::object::checkpoint_log::{self, Frontier, LogHead};
use crate::proof::InclusionProof;

/// How many checkpoints' frontiers a depot keeps in memory.
const MEMORY_CAPACITY: usize = 1024;

/// How many commits a process makes between two saves of the `log-frontiers` file (it is also
/// saved when the depot is dropped). A process killed before a save costs the next one a walk of
/// at most this many checkpoints (plus those of other killed processes), never of the history.
const SAVE_EVERY: usize = 64;

/// Frontiers known to this process: for a checkpoint id, the frontier of its log *with itself
/// appended* (what a child's `log` field is the head of). A pure function of the id, so any
/// entry stays right; bounded, oldest out first.
#[derive(Default)]
pub(crate) struct LogCache {
    after: HashMap<ObjectId, Frontier>,
    order: VecDeque<ObjectId>,
    /// The newest checkpoints committed by this process, newest first, with the frontier of the
    /// log *before* each (what the file keeps): at most `log_frontiers::KEEP`.
    committed: VecDeque<(ObjectId, Frontier)>,
    /// Commits since the file was last saved.
    unsaved: usize,
}

impl LogCache {
    fn insert(&mut self, id: ObjectId, after: Frontier) {
        if self.after.contains_key(&id) {
            return;
        }
        if self.after.len() >= MEMORY_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.after.remove(&old);
            }
        }
        self.order.push_back(id);
        self.after.insert(id, after);
    }
}

impl Depot {
    /// Where a files depot keeps its frontiers (`None`: memory and PostgreSQL depots keep them
    /// in memory only).
    fn log_frontiers_path(&self) -> Option<PathBuf> {
        let root = self.root.as_ref()?;
        match self.layout {
            Layout::Native => Some(root.join(log_frontiers::FILE_NAME)),
            Layout::GoRetro => Some(root.join(format!(".retro-{}", log_frontiers::FILE_NAME))),
            _ => None,
        }
    }

    /// The `log` field for a new checkpoint whose first parent is `parent` (`None`: a root, whose
    /// log is empty). O(log n) when the parent's frontier is known (committed by this process, or
    /// in the `log-frontiers` file); otherwise one walk of the parent's first-parent chain.
    pub fn log_head_for_child(&self, parent: Option<ObjectId>) -> Result<LogHead, Error> {
        Ok(self.log_frontier_for_child(parent, &HashMap::new())?.head())
    }

    /// Remembers the log frontier of `checkpoint`, written outside the commit pipeline (a merge
    /// checkpoint) on top of `first_parent`, in memory and in the `log-frontiers` file, so that
    /// the next commit on top of it is O(log n) in any process. Derived data: best effort.
    pub fn remember_log(
        &self,
        checkpoint: ObjectId,
        first_parent: Option<ObjectId>,
    ) -> Result<(), Error> {
        let before = self.log_frontier_for_child(first_parent, &HashMap::new())?;
        self.log_committed(&[(checkpoint, before)]);
        Ok(())
    }

    /// The frontier a child of `parent` commits to: `parent`'s log with `parent` appended.
    /// `batch` holds the frontiers of checkpoints planned in the same commit batch.
    pub(crate) fn log_frontier_for_child(
        &self,
        parent: Option<ObjectId>,
        batch: &HashMap<ObjectId, Frontier>,
    ) -> Result<Frontier, Error> {
        let Some(parent) = parent else {
            return Ok(Frontier::new());
        };
        if let Some(found) = batch.get(&parent) {
            return Ok(found.clone());
        }
        if let Some(found) = self.log_cache().after.get(&parent) {
            return Ok(found.clone());
        }
        // Walk the first-parent chain back from the parent to the newest checkpoint whose
        // frontier is known: in memory, or in the `log-frontiers` file (used only if its head is
        // that checkpoint's own `log` field, read and hash-verified). That is at most a few
        // dozen checkpoints after any commit (see `SAVE_EVERY`); the whole chain only when the
        // file is lost.
        let stored: HashMap<ObjectId, Frontier> = self.stored_frontiers();
        let mut newer = Vec::new();
        let mut base = Frontier::new();
        self.walk_ids(parent, HistoryOrder::FirstParent, |entry| {
            if let Some(after) = self.log_cache().after.get(&entry.id) {
                base = after.clone();
                return Ok(false);
            }
            if let Some(before) = stored.get(&entry.id) {
                let checkpoint = self.read_checkpoint_unresolved(&entry.id)?;
                if checkpoint.log_head() == Some(before.head()) {
                    base = before.clone();
                    base.push_id(&entry.id);
                    return Ok(false);
                }
            }
            newer.push(entry.id);
            Ok(true)
        })?;
        // `newer` is newest first: the parent, then the checkpoints back to the known one.
        let mut frontier = base;
        if let Some((_, older)) = newer.split_first() {
            for id in older.iter().rev() {
                frontier.push_id(id);
            }
            if let Some(head) = self.read_checkpoint_unresolved(&parent)?.log_head() {
                if head != frontier.head() {
                    return Err(Error::BadLog {
                        id: parent,
                        reason: format!(
                            "its log field is '{head}', its first-parent chain gives '{}'",
                            frontier.head()
                        ),
                    });
                }
            }
            frontier.push_id(&parent);
        }
        let after = frontier;
        self.log_cache().insert(parent, after.clone());
        Ok(after)
    }

    fn log_cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        self.committer.log.lock().expect("log cache poisoned")
    }

    /// The frontiers in the `log-frontiers` file (each of the log before its checkpoint),
    /// unverified: read on each miss, since another process may have committed since.
    fn stored_frontiers(&self) -> HashMap<ObjectId, Frontier> {
        match self.log_frontiers_path() {
            Some(path) => log_frontiers::read(&*self.storage, &path)
                .into_iter()
                .collect(),
            None => HashMap::new(),
        }
    }

    /// The ids of `start`'s first-parent chain, root first, `start` last.
    fn first_parent_ids(&self, start: ObjectId) -> Result<Vec<ObjectId>, Error> {
        let mut ids = Vec::new();
        self.walk_ids(start, HistoryOrder::FirstParent, |entry| {
            ids.push(entry.id);
            Ok(true)
        })?;
        // Newest first from the walk; the callers want the start last.
        ids.reverse();
        Ok(ids)
    }

    /// Remembers the frontiers of committed checkpoints (`(id, frontier of its log)`, oldest
    /// first), and saves the `log-frontiers` file every [`SAVE_EVERY`] commits.
    pub(crate) fn log_committed(&self, committed: &[(ObjectId, Frontier)]) {
        if committed.is_empty() {
            return;
        }
        let mut cache = self.log_cache();
        for (id, before) in committed {
            let mut after = before.clone();
            after.push_id(id);
            cache.insert(*id, after);
            cache.committed.push_front((*id, before.clone()));
        }
        cache.committed.truncate(log_frontiers::KEEP);
        cache.unsaved += committed.len();
        if cache.unsaved >= SAVE_EVERY {
            self.save_log_frontiers(&mut cache);
        }
    }

    /// Saves the frontiers of this process's newest commits, if any are unsaved (the depot
    /// does when it is dropped).
    pub(crate) fn flush_log_frontiers(&self) {
        let mut cache = self.log_cache();
        if cache.unsaved > 0 {
            self.save_log_frontiers(&mut cache);
        }
    }

    fn save_log_frontiers(&self, cache: &mut LogCache) {
        cache.unsaved = 0;
        let Some(path) = self.log_frontiers_path() else {
            return;
        };
        let storage = &*self.storage;
        // Read again: another process may have written since. Its entries stay behind ours;
        // any entry on a chain shortens a later walk, so losing the oldest costs little.
        let old = log_frontiers::read(storage, &path);
        let ours: HashSet<ObjectId> = cache.committed.iter().map(|(id, _)| *id).collect();
        let mut entries: Vec<(ObjectId, Frontier)> = cache.committed.iter().cloned().collect();
        entries.extend(old.into_iter().filter(|(id, _)| !ours.contains(id)));
        entries.truncate(log_frontiers::KEEP);
        log_frontiers::write(storage, &path, &entries);
    }

    /// An inclusion proof that `event` is in the history `at` commits to: `at`'s own affix, or
    /// the affix of a checkpoint on `at`'s first-parent chain before it (a leaf of its log). An
    /// event a merge brought is proved through the merge checkpoint, whose affix lists it; the
    /// checkpoints of a merged branch are not leaves. Costs one walk of the chain (ids from the
    /// commit-graph, an affix read per checkpoint until the event is found) and O(n) hashing.
    pub fn prove(&self, event: ObjectId, at: ObjectId) -> Result<InclusionProof, Error> {
        let at_bytes = self.read_object(&at)?;
        let at_checkpoint = self.read_checkpoint_unresolved(&at)?;
        let head = at_checkpoint.log_head().ok_or(Error::NoLog(at))?;
        let own_affix = self.read_object(&at_checkpoint.affix())?;
        if affix_lists(&self.read_affix(&at_checkpoint.affix())?, &event) {
            return Ok(InclusionProof {
                event,
                at: at_bytes.bytes().to_vec(),
                checkpoint: None,
                affix: own_affix.bytes().to_vec(),
                leaf: None,
                path: Vec::new(),
            });
        }
        let mut chain = self.first_parent_ids(at)?;
        chain.pop(); // `at` itself: the rest, root first, are its log's leaves
        if chain.len() as u64 != head.size {
            return Err(Error::BadLog {
                id: at,
                reason: format!(
                    "its log has {} leaves, its first-parent chain {} checkpoints",
                    head.size,
                    chain.len()
                ),
            });
        }
        let mut found = None;
        for (index, id) in chain.iter().enumerate().rev() {
            let checkpoint = self.read_checkpoint_unresolved(id)?;
            if affix_lists(&self.read_affix(&checkpoint.affix())?, &event) {
                found = Some((index, *id, checkpoint.affix()));
                break;
            }
        }
        let Some((index, holder, affix)) = found else {
            return Err(Error::NotInHistory { event, at });
        };
        let leaves: Vec<checkpoint_log::Hash> =
            chain.iter().map(checkpoint_log::leaf_hash).collect();
        let path = checkpoint_log::inclusion_path(&leaves, index as u64)
            .expect("the index is one of the leaves");
        // The path must lead to the field: a checkpoint whose field is wrong proves nothing.
        checkpoint_log::verify_inclusion(
            &leaves[index],
            index as u64,
            head.size,
            &path,
            &head.root,
        )
        .map_err(|e| Error::BadLog {
            id: at,
            reason: format!("its first-parent chain does not hash to its log field ({e})"),
        })?;
        Ok(InclusionProof {
            event,
            at: at_bytes.bytes().to_vec(),
            checkpoint: Some(self.read_object(&holder)?.bytes().to_vec()),
            affix: self.read_object(&affix)?.bytes().to_vec(),
            leaf: Some(index as u64),
            path,
        })
    }

    /// fsck: every `log` field on a ref's first-parent chain is the head of the log over the
    /// checkpoints before it. One pass per distinct chain: each checkpoint is read once and the
    /// log is extended one leaf at a time (O(log n) hashes each); a chain that reaches a checkpoint
    /// checked for an earlier ref is still hashed, not read again.
    pub(crate) fn check_logs(&self, report: &mut FsckReport) -> Result<(), Error> {
        let mut heads: Vec<ObjectId> = Vec::new();
        // Leniently: an unreadable ref is a problem fsck already reported.
        let (refs, _) = self.refs.list_lenient("")?;
        for (_, value) in refs {
            if let Some(id) = value.id() {
                if !heads.contains(&id) {
                    heads.push(id);
                }
            }
        }
        // 8 bytes of each id (not 32): a checkpoint sharing its prefix with one checked already
        // (odds of 2^-64 a pair) would not have its field checked again; nothing else depends
        // on it (every chain's log is still computed over all of its ids).
        let key =
            |id: &ObjectId| u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"));
        let mut checked: HashSet<u64> = HashSet::new();
        for head in heads {
            if checked.contains(&key(&head)) {
                continue;
            }
            let chain = match self.first_parent_ids(head) {
                Ok(chain) => chain,
                // A missing or corrupt checkpoint is already a problem fsck reported.
                Err(_) => continue,
            };
            let mut frontier = Frontier::new();
            for id in &chain {
                if checked.insert(key(id)) {
                    let Ok(checkpoint) = self.read_checkpoint_unresolved(id) else {
                        break;
                    };
                    if let Some(field) = checkpoint.field(checkpoint_log::LOG_KEY) {
                        let expected = frontier.head();
                        if LogHead::parse(field).ok() != Some(expected) {
                            report.problems.push(FsckProblem {
                                kind: FsckKind::BadLog,
                                id: Some(*id),
                                message: format!(
                                    "checkpoint {id} has the log field '{field}', its first-parent chain gives '{expected}'"
                                ),
                            });
                        }
                    }
                }
                frontier.push_id(id);
            }
        }
        Ok(())
    }
}

fn affix_lists(affix: &crate::object::Affix, event: &ObjectId) -> bool {
    affix.partitions().any(|(_, ids)| ids.contains(event))
}

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

/// Frontiers known to this process: for a checkpoint id, the frontier of its log *with itself
/// appended* (what a child's `log` field is the head of). A pure function of the id, so any
/// entry stays right; bounded, oldest out first.
#[derive(Default)]
pub(crate) struct LogCache {
    after: HashMap<ObjectId, Frontier>,
    order: VecDeque<ObjectId>,
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
        // The parent is read (so hash-verified): a stored frontier is used only if its head is
        // the parent's own `log` field.
        let checkpoint = self.read_checkpoint_unresolved(&parent)?;
        let claimed = checkpoint.log_head();
        if let Some(head) = claimed {
            if let Some(before) = self.stored_frontier(&parent, head) {
                let mut after = before;
                after.push_id(&parent);
                self.log_cache().insert(parent, after.clone());
                return Ok(after);
            }
        }
        let mut chain = self.first_parent_ids(parent)?;
        chain.pop(); // the parent itself; the rest, root first, are the leaves before it
        let mut before = Frontier::new();
        for id in &chain {
            before.push_id(id);
        }
        if let Some(head) = claimed {
            if head != before.head() {
                return Err(Error::BadLog {
                    id: parent,
                    reason: format!(
                        "its log field is '{head}', its first-parent chain gives '{}'",
                        before.head()
                    ),
                });
            }
        }
        let mut after = before;
        after.push_id(&parent);
        self.log_cache().insert(parent, after.clone());
        Ok(after)
    }

    fn log_cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        self.committer.log.lock().expect("log cache poisoned")
    }

    /// The stored frontier of `id`'s log, if the `log-frontiers` file has one whose head is
    /// `head` (the field as read from the checkpoint).
    fn stored_frontier(&self, id: &ObjectId, head: LogHead) -> Option<Frontier> {
        // Read on each miss (another process may have committed `id`): a few KiB, and only
        // when this process did not commit the parent itself.
        let path = self.log_frontiers_path()?;
        log_frontiers::read(&*self.storage, &path)
            .into_iter()
            .find(|(entry, frontier)| entry == id && frontier.head() == head)
            .map(|(_, frontier)| frontier)
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
    /// first) and writes the newest to the `log-frontiers` file.
    pub(crate) fn log_committed(&self, committed: &[(ObjectId, Frontier)]) {
        if committed.is_empty() {
            return;
        }
        let path = self.log_frontiers_path();
        let mut cache = self.log_cache();
        for (id, before) in committed {
            let mut after = before.clone();
            after.push_id(id);
            cache.insert(*id, after);
        }
        let Some(path) = path else { return };
        let storage = &*self.storage;
        // Read again: another process may have written since (a native depot writes under the
        // depot lock, so no entry of another writer is lost).
        let old = log_frontiers::read(storage, &path);
        let fresh: HashSet<ObjectId> = committed.iter().map(|(id, _)| *id).collect();
        let mut entries: Vec<(ObjectId, Frontier)> = committed.iter().rev().cloned().collect();
        entries.extend(old.into_iter().filter(|(id, _)| !fresh.contains(id)));
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

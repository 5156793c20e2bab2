//! Idempotent commits: finding the checkpoint that already applied a command id.
//!
//! A checkpoint may carry a `command-id` field ([`super::commit::COMMAND_ID_FIELD`]). A command
//! id is *applied* on a ref when a checkpoint carrying it is on the ref's first-parent history.
//! The commit pipeline asks [`Depot::applied_command_on`] for every request that carries one,
//! after it read the target's head and (on a files depot) under the depot lock, so the answer
//! covers every committed checkpoint: two writers with one command id, in one process or in two,
//! get exactly one checkpoint, and the later one that checkpoint's result, marked replayed.
//!
//! On `HEAD`'s branch the answer comes from the partition index (derived, caught up first, so it
//! sees checkpoints a crash kept out of `index.sqlite`): one indexed lookup, O(log n), with no
//! window (every checkpoint of the branch stays indexed). On any other ref it is a walk of the
//! ref's first parents (the slow path, as for any query on a ref the index does not follow).
//! When history carries one command id twice (imported or synced from elsewhere), the oldest is
//! the original.

use super::{Depot, Error};
use crate::hash::ObjectId;
use crate::refdb::RefName;

use super::commit::{Committed, COMMAND_ID_FIELD};

impl Depot {
    /// The checkpoint on `HEAD`'s branch (first parents) that carries `command_id`, if any: one
    /// lookup in the partition index, caught up first.
    pub fn applied_command(&self, command_id: &str) -> Result<Option<ObjectId>, Error> {
        self.with_index(false, |state| Ok(state.command_checkpoint(command_id)?))
    }

    /// The checkpoint on the first-parent history of `target` (a resolved, direct ref) that
    /// carries `command_id`, given the ref's head `head`: through the index when `target` is
    /// the branch `HEAD` names, else by walking from `head`.
    pub fn applied_command_on(
        &self,
        target: &RefName,
        head: Option<ObjectId>,
        command_id: &str,
    ) -> Result<Option<ObjectId>, Error> {
        let Some(head) = head else {
            return Ok(None);
        };
        let (head_branch, _) = self.resolve_ref(&RefName::head())?;
        if head_branch == *target {
            return self.applied_command(command_id);
        }
        let mut found = None;
        self.walk(head, super::HistoryOrder::FirstParent, |id, checkpoint| {
            if checkpoint.field(COMMAND_ID_FIELD) == Some(command_id) {
                // Keep walking: the oldest is the original.
                found = Some(id);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// What committing `original` produced, read back from its objects (verified by hash) for
    /// a request that repeated its command id: nothing written, `replayed` set.
    pub(crate) fn replayed(
        &self,
        original: ObjectId,
        target: &RefName,
    ) -> Result<Committed, Error> {
        let checkpoint = self.read_checkpoint(&original)?;
        let affix = self.read_affix(&checkpoint.affix())?;
        Ok(Committed {
            checkpoint: original,
            parent: checkpoint.first_parent(),
            affix: checkpoint.affix(),
            events: affix
                .partitions()
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect(),
            ref_name: target.clone(),
            rebased: false,
            replayed: true,
        })
    }
}

impl super::IndexState {
    /// The oldest checkpoint carrying `command_id` in this view of the index: SQLite up to
    /// `base`, then the in-memory tail.
    pub(crate) fn command_checkpoint(
        &self,
        command_id: &str,
    ) -> Result<Option<ObjectId>, crate::index::IndexError> {
        // The stored index may be ahead of `base` (another handle wrote it): read up to `base`.
        if let Some((_, base_seq)) = self.base {
            if let Some(found) = self.stored.checkpoint_by_command_id(command_id, base_seq)? {
                return Ok(Some(found));
            }
        }
        Ok(self
            .pending
            .iter()
            .find(|c| c.command_id.as_deref() == Some(command_id))
            .map(|c| c.id))
    }
}

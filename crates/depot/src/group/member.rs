//! A consumer group's member: what one process runs. [`GroupMember`] joins (creating the group
//! on first use), leases its share of the slots, walks the group's ref from each held slot's
//! position delivering the events of its slots' partitions checkpoint by checkpoint, heartbeats,
//! takes over dead members' slots, gives slots back when a member joins, and moves its slots'
//! positions when the caller acknowledges. [`GroupStatus`] is what an operator reads.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use globset::GlobMatcher;

use super::state::{round, Ack, Held, Intent};
use super::{
    check_glob, slot_of, GroupError, GroupName, GroupState, GroupStore, MemberId, DEFAULT_SLOTS,
    MIN_LEASE_MS,
};
use crate::depot::{compile_glob, DepotRef};
use crate::hash::ObjectId;
use crate::name::PartitionName;
use crate::refdb::RefName;
use crate::{Depot, Error, EventRecord, HistoryOrder, Subscription};

/// How a member joins a group. The target, glob and slot count are the group's own, fixed when
/// its first member creates it: a member asking for others is refused.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// The ref to consume (resolved when the group is created: `HEAD` means the branch it points
    /// at then).
    pub target: RefName,
    /// The partition glob.
    pub glob: String,
    /// The number of slots (`None`: the group's, or [`DEFAULT_SLOTS`] for a new group).
    pub slots: Option<u32>,
    /// Where a new group starts (`None`: from the first checkpoint).
    pub start: Option<ObjectId>,
    /// How long a lease lasts without a heartbeat: a dead member's slots are taken over this
    /// long after its last heartbeat. It must exceed the longest time one checkpoint's handling
    /// takes.
    pub lease: Duration,
}

impl GroupOptions {
    /// The defaults: `HEAD`, `**`, the group's slots, from the start, 10 s leases.
    pub fn new() -> GroupOptions {
        GroupOptions {
            target: RefName::head(),
            glob: "**".to_owned(),
            slots: None,
            start: None,
            lease: Duration::from_secs(10),
        }
    }
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// An event delivered to a group member: the record, its slot, and its index among all the
/// events of its checkpoint (affix order, every partition counted), so that (checkpoint, index)
/// names it whichever member delivers it, however often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    /// Its index in its checkpoint's affix, counting every partition's events.
    pub index: u32,
    /// The slot of its partition.
    pub slot: u32,
    /// The event, its partition, version and checkpoint.
    pub record: EventRecord,
}

/// What a member receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDelivery {
    /// A checkpoint's events of the member's slots, in affix order (never empty).
    Checkpoint {
        /// The checkpoint.
        id: ObjectId,
        /// Its first parent.
        parent: Option<ObjectId>,
        /// Its date.
        date: Option<DateTime<Utc>>,
        /// Its session.
        session: String,
        /// The events.
        events: Vec<GroupEvent>,
    },
    /// The member's slots changed (it joined, took some over, gave some up, or lost some).
    Slots {
        /// The slots it holds now.
        held: Vec<u32>,
        /// Those it has just taken.
        taken: Vec<u32>,
        /// Those it has just given up or lost (their unacknowledged events go to the next owner).
        released: Vec<u32>,
    },
    /// The positions of `slots` are not on the ref's history any more (a non-fast-forward
    /// move): their delivery resumes after `base`.
    NonFastForward {
        /// The slots concerned.
        slots: Vec<u32>,
        /// Their position.
        from: ObjectId,
        /// The ref's head.
        head: Option<ObjectId>,
        /// The newest checkpoint both histories share (`None`: from the first checkpoint).
        base: Option<ObjectId>,
    },
}

/// A slot this member holds.
#[derive(Debug, Clone, Copy)]
struct HeldSlot {
    epoch: u64,
    /// The position stored in the group's state.
    acked: Option<ObjectId>,
    /// Delivered (or skipped) up to here.
    cursor: Option<ObjectId>,
}

/// The checkpoints left to walk, oldest first, each with its place in the chain, and from which
/// place each held slot takes part.
#[derive(Default)]
struct Plan {
    queue: VecDeque<(usize, ObjectId)>,
    start: HashMap<u32, usize>,
}

/// A member of a consumer group. Call [`GroupMember::next_timeout`] in a loop, handle each
/// delivery, then [`GroupMember::ack`]; [`GroupMember::leave`] at the end hands the slots over at
/// once (otherwise they are taken over when the lease runs out).
pub struct GroupMember<'d> {
    depot: DepotRef<'d>,
    store: Arc<dyn GroupStore>,
    group: GroupName,
    member: MemberId,
    target: RefName,
    matcher: GlobMatcher,
    slots: u32,
    lease: Duration,
    held: BTreeMap<u32, HeldSlot>,
    plan: Option<Plan>,
    versions: HashMap<PartitionName, u64>,
    notices: VecDeque<GroupDelivery>,
    /// Renew before delivering past this instant (half a lease after the last round began).
    renew_by: Instant,
    /// Heartbeat at this instant (a third of a lease after the last round began).
    heartbeat_at: Instant,
    /// Wakes the member when the ref moves (inotify, or the store's `LISTEN`).
    waker: Subscription<'d>,
}

impl Depot {
    /// The store this depot keeps consumer groups in: `groups/` beside a files depot, the
    /// backend's (PostgreSQL's tables), or one in memory.
    pub fn group_store(&self) -> Arc<dyn GroupStore> {
        self.group_store_ref().clone()
    }

    /// Joins the consumer group `group` as `member` (creating the group if it is new).
    pub fn join_group(
        &self,
        group: &str,
        member: &str,
        options: &GroupOptions,
    ) -> Result<GroupMember<'_>, Error> {
        GroupMember::join(DepotRef::Borrowed(self), group, member, options)
    }

    /// [`Depot::join_group`] holding the depot by `Arc`, to move into another thread.
    pub fn join_group_shared(
        self: &Arc<Self>,
        group: &str,
        member: &str,
        options: &GroupOptions,
    ) -> Result<GroupMember<'static>, Error> {
        GroupMember::join(DepotRef::Shared(self.clone()), group, member, options)
    }

    /// The names of the depot's consumer groups.
    pub fn list_groups(&self) -> Result<Vec<GroupName>, Error> {
        Ok(self.group_store().list()?)
    }

    /// A group's members, leases, positions and lag behind its ref.
    pub fn group_status(&self, group: &str) -> Result<GroupStatus, Error> {
        let name = GroupName::new(group)?;
        let (state, now) = self.group_store().read(&name)?;
        let state = state.ok_or_else(|| GroupError::Unknown(name.to_string()))?;
        let (_, head) = self.resolve_ref(&state.target)?;
        let behind = lag(self, head, state.leases.iter().map(|l| l.position))?;
        let live = |owner: &Option<MemberId>, expires: i64| -> Option<String> {
            owner
                .as_ref()
                .filter(|o| expires > now && state.members.get(*o).is_some_and(|m| m.expires > now))
                .map(|o| o.to_string())
        };
        let leases: Vec<SlotStatus> = state
            .leases
            .iter()
            .enumerate()
            .map(|(slot, lease)| SlotStatus {
                slot: slot as u32,
                owner: live(&lease.owner, lease.expires),
                epoch: lease.epoch,
                expires_in_ms: lease.expires - now,
                position: lease.position,
                behind: behind[slot],
            })
            .collect();
        let members = state
            .members
            .iter()
            .filter(|(_, m)| m.expires > now)
            .map(|(id, m)| MemberStatus {
                id: id.to_string(),
                slots: leases
                    .iter()
                    .filter(|l| l.owner.as_deref() == Some(id.as_str()))
                    .count() as u32,
                expires_in_ms: m.expires - now,
            })
            .collect();
        Ok(GroupStatus {
            name: state.group.to_string(),
            target: state.target.to_string(),
            glob: state.glob.clone(),
            head,
            members,
            leases,
        })
    }
}

/// For each position, how many checkpoints of `head`'s first-parent history come after it
/// (`None`: it is not on that history). One walk back from the head to the oldest position.
fn lag(
    depot: &Depot,
    head: Option<ObjectId>,
    positions: impl Iterator<Item = Option<ObjectId>>,
) -> Result<Vec<Option<u64>>, Error> {
    let positions: Vec<Option<ObjectId>> = positions.collect();
    let mut wanted: HashSet<ObjectId> = positions.iter().flatten().copied().collect();
    let to_root = positions.iter().any(Option::is_none);
    let mut depth: HashMap<ObjectId, u64> = HashMap::new();
    let mut walked = 0u64;
    if let Some(head) = head {
        depot.walk(head, HistoryOrder::FirstParent, |id, _| {
            if wanted.remove(&id) {
                depth.insert(id, walked);
            }
            walked += 1;
            Ok(to_root || !wanted.is_empty())
        })?;
    }
    Ok(positions
        .iter()
        .map(|p| match p {
            None => Some(walked),
            Some(id) => depth.get(id).copied(),
        })
        .collect())
}

impl<'d> GroupMember<'d> {
    fn join(
        depot: DepotRef<'d>,
        group: &str,
        member: &str,
        options: &GroupOptions,
    ) -> Result<GroupMember<'d>, Error> {
        let group = GroupName::new(group)?;
        let member = MemberId::new(member)?;
        check_glob(&options.glob)?;
        let matcher = compile_glob(&options.glob)?;
        let lease_ms = u64::try_from(options.lease.as_millis()).unwrap_or(u64::MAX);
        if lease_ms < MIN_LEASE_MS {
            return Err(GroupError::BadLease(lease_ms).into());
        }
        if let Some(start) = options.start {
            depot.read_checkpoint_unresolved(&start)?;
        }
        let (target, _) = depot.resolve_ref(&options.target)?;
        let store = depot.group_store();
        let mut stored: Option<(RefName, u32)> = None;
        store.update(&group, &mut |state, _now| {
            let created = state.is_none();
            if created {
                *state = Some(GroupState::new(
                    group.clone(),
                    target.clone(),
                    options.glob.clone(),
                    options.slots.unwrap_or(DEFAULT_SLOTS),
                    options.start,
                )?);
            }
            let state = state.as_ref().expect("created above");
            let mismatch = |what, stored: String, asked: String| GroupError::Mismatch {
                group: group.to_string(),
                what,
                stored,
                asked,
            };
            if state.glob != options.glob {
                return Err(mismatch(
                    "the glob",
                    state.glob.clone(),
                    options.glob.clone(),
                ));
            }
            if options.target != RefName::head() && state.target != target {
                return Err(mismatch(
                    "the ref",
                    state.target.to_string(),
                    target.to_string(),
                ));
            }
            if let Some(slots) = options.slots.filter(|s| *s != state.slots) {
                return Err(mismatch(
                    "the slot count",
                    state.slots.to_string(),
                    slots.to_string(),
                ));
            }
            stored = Some((state.target.clone(), state.slots));
            Ok(created)
        })?;
        let (target, slots) = stored.expect("set by the update");
        let waker = Subscription::new(
            match &depot {
                DepotRef::Borrowed(d) => DepotRef::Borrowed(d),
                DepotRef::Shared(d) => DepotRef::Shared(d.clone()),
            },
            &target,
            "**",
            None,
        )?;
        let now = Instant::now();
        let mut joined = GroupMember {
            depot,
            store,
            group,
            member,
            target,
            matcher,
            slots,
            lease: options.lease,
            held: BTreeMap::new(),
            plan: None,
            versions: HashMap::new(),
            notices: VecDeque::new(),
            renew_by: now,
            heartbeat_at: now,
            waker,
        };
        joined.round(&[], Intent::Work)?;
        Ok(joined)
    }

    /// The group's name.
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// This member's id.
    pub fn member(&self) -> &MemberId {
        &self.member
    }

    /// The slots this member holds.
    pub fn held(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    /// The next delivery, waiting up to `timeout` (`None` if none came). Heartbeats when due,
    /// and renews before delivering when the lease is half spent, so a delivery always starts
    /// with at least half a lease left.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<GroupDelivery>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(notice) = self.notices.pop_front() {
                return Ok(Some(notice));
            }
            let now = Instant::now();
            if now >= self.heartbeat_at || now >= self.renew_by {
                self.round(&[], Intent::Work)?;
                continue;
            }
            if let Some(delivery) = self.step()? {
                return Ok(Some(delivery));
            }
            if !self.notices.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let pause = (deadline - now).min(self.heartbeat_at.saturating_duration_since(now));
            self.waker.wait(pause.max(Duration::from_millis(1)));
        }
    }

    /// Records that everything delivered so far was handled: moves the positions of the slots
    /// it touched (one write to the group's state, refused for a slot that changed hands: that
    /// slot's events are delivered again by its new owner). Also a heartbeat.
    pub fn ack(&mut self) -> Result<(), Error> {
        let acks = self.pending_acks();
        if acks.is_empty() && Instant::now() < self.heartbeat_at {
            return Ok(());
        }
        self.round(&acks, Intent::Work)
    }

    /// Acknowledges what was delivered and leaves the group: its slots are free at once.
    pub fn leave(mut self) -> Result<(), Error> {
        let acks = self.pending_acks();
        self.round(&acks, Intent::Leave)
    }

    fn pending_acks(&self) -> Vec<Ack> {
        self.held
            .iter()
            .filter(|(_, h)| h.cursor != h.acked)
            .map(|(slot, h)| Ack {
                slot: *slot,
                epoch: h.epoch,
                position: h.cursor,
            })
            .collect()
    }

    /// One lease round: acknowledgements, heartbeat, rebalancing; then the held slots are
    /// reconciled with the outcome.
    fn round(&mut self, acks: &[Ack], intent: Intent) -> Result<(), Error> {
        let began = Instant::now();
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let mut outcome = None;
        let member = &self.member;
        let group = &self.group;
        self.store.update(&self.group, &mut |state, now| {
            let state = state
                .as_mut()
                .ok_or_else(|| GroupError::Unknown(group.to_string()))?;
            outcome = Some(round(state, member, now, lease_ms, acks, intent));
            Ok(true)
        })?;
        let outcome = outcome.expect("set by the update");
        self.renew_by = began + self.lease / 2;
        self.heartbeat_at = began + self.lease / 3;
        for ack in acks {
            if outcome.refused.contains(&ack.slot) {
                continue;
            }
            if let Some(held) = self.held.get_mut(&ack.slot) {
                held.acked = ack.position;
            }
        }
        if intent == Intent::Leave {
            self.held.clear();
            return Ok(());
        }
        self.reconcile(&outcome.held);
        Ok(())
    }

    fn reconcile(&mut self, now_held: &[Held]) {
        let mut released = Vec::new();
        let mut taken = Vec::new();
        let keep: HashMap<u32, &Held> = now_held.iter().map(|h| (h.slot, h)).collect();
        self.held.retain(|slot, held| {
            let same = keep.get(slot).is_some_and(|h| h.epoch == held.epoch);
            if !same {
                released.push(*slot);
            }
            same
        });
        for h in now_held {
            if let std::collections::btree_map::Entry::Vacant(entry) = self.held.entry(h.slot) {
                taken.push(h.slot);
                entry.insert(HeldSlot {
                    epoch: h.epoch,
                    acked: h.position,
                    cursor: h.position,
                });
            }
        }
        if !released.is_empty() || !taken.is_empty() {
            self.plan = None;
            self.versions.clear();
            self.notices.push_back(GroupDelivery::Slots {
                held: self.held(),
                taken,
                released,
            });
        }
    }

    /// Delivers the next checkpoint with events of the held slots, if one is ready.
    fn step(&mut self) -> Result<Option<GroupDelivery>, Error> {
        loop {
            // Taken off the queue only once delivered: a failure (the store away) retries it.
            let next = self.plan.as_ref().and_then(|p| p.queue.front().copied());
            let Some((place, id)) = next else {
                if self.replan()? {
                    if !self.notices.is_empty() {
                        return Ok(None);
                    }
                    continue;
                }
                return Ok(None);
            };
            let delivery = self.deliver(place, id)?;
            if let Some(plan) = self.plan.as_mut() {
                plan.queue.pop_front();
            }
            if let Some(delivery) = delivery {
                return Ok(Some(delivery));
            }
        }
    }

    /// Plans the walk from the held slots' cursors to the ref's head; true if there is
    /// something to walk (or a non-fast-forward notice was queued).
    fn replan(&mut self) -> Result<bool, Error> {
        let (_, head) = self.depot.resolve_ref(&self.target)?;
        if self.held.values().all(|h| h.cursor == head) {
            self.plan = Some(Plan::default());
            return Ok(false);
        }
        let mut wanted: HashSet<ObjectId> = self.held.values().filter_map(|h| h.cursor).collect();
        let to_root = self.held.values().any(|h| h.cursor.is_none());
        let mut chain = Vec::new();
        if let Some(head) = head {
            self.depot.walk(head, HistoryOrder::FirstParent, |id, _| {
                wanted.remove(&id);
                chain.push(id);
                Ok(to_root || !wanted.is_empty())
            })?;
        }
        chain.reverse();
        if !wanted.is_empty() {
            // Positions the head does not descend from: resume those slots from the newest
            // checkpoint their history shares with the head's (the chain reaches the root here).
            let on_chain: HashSet<ObjectId> = chain.iter().copied().collect();
            for from in wanted {
                let mut base = None;
                self.depot.walk(from, HistoryOrder::FirstParent, |id, _| {
                    if on_chain.contains(&id) {
                        base = Some(id);
                        return Ok(false);
                    }
                    Ok(true)
                })?;
                let mut slots = Vec::new();
                for (slot, held) in self.held.iter_mut() {
                    if held.cursor == Some(from) {
                        held.cursor = base;
                        slots.push(*slot);
                    }
                }
                self.notices.push_back(GroupDelivery::NonFastForward {
                    slots,
                    from,
                    head,
                    base,
                });
            }
            self.versions.clear();
            self.plan = None;
            return Ok(true);
        }
        let place: HashMap<ObjectId, usize> =
            chain.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let start = self
            .held
            .iter()
            .map(|(slot, h)| (*slot, h.cursor.map_or(0, |c| place[&c] + 1)))
            .collect();
        self.plan = Some(Plan {
            queue: chain.into_iter().enumerate().collect(),
            start,
        });
        Ok(true)
    }

    fn deliver(&mut self, place: usize, id: ObjectId) -> Result<Option<GroupDelivery>, Error> {
        let plan = self.plan.as_ref().expect("delivering from a plan");
        let active: HashSet<u32> = plan
            .start
            .iter()
            .filter(|(slot, start)| **start <= place && self.held.contains_key(slot))
            .map(|(slot, _)| *slot)
            .collect();
        if active.is_empty() {
            return Ok(None);
        }
        let checkpoint = self.depot.read_checkpoint(&id)?;
        let affix = self.depot.read_affix(&checkpoint.affix())?;
        let mut events = Vec::new();
        let mut index = 0u32;
        for (partition, ids) in affix.partitions() {
            let slot = slot_of(partition.as_str(), self.slots);
            if active.contains(&slot) && self.matcher.is_match(partition.as_str()) {
                let version = match self.versions.get(partition) {
                    Some(v) => *v,
                    None => self.depot.partition_version_before(partition, &id)?,
                };
                self.versions
                    .insert(partition.clone(), version + ids.len() as u64);
                for (i, event_id) in ids.iter().enumerate() {
                    events.push(GroupEvent {
                        index: index + i as u32,
                        slot,
                        record: EventRecord {
                            partition: partition.clone(),
                            version: version + i as u64 + 1,
                            id: *event_id,
                            event: self.depot.read_event(event_id)?,
                            checkpoint: id,
                            date: checkpoint.date(),
                            session: checkpoint.session().to_owned(),
                        },
                    });
                }
            }
            index += ids.len() as u32;
        }
        for slot in &active {
            if let Some(held) = self.held.get_mut(slot) {
                held.cursor = Some(id);
            }
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(GroupDelivery::Checkpoint {
            id,
            parent: checkpoint.first_parent(),
            date: checkpoint.date(),
            session: checkpoint.session().to_owned(),
            events,
        }))
    }
}

/// A consumer group as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// Its name.
    pub name: String,
    /// The ref it consumes.
    pub target: String,
    /// Its partition glob.
    pub glob: String,
    /// The ref's head now.
    pub head: Option<ObjectId>,
    /// The live members.
    pub members: Vec<MemberStatus>,
    /// Every slot.
    pub leases: Vec<SlotStatus>,
}

impl GroupStatus {
    /// The largest lag of any slot (`None`: a slot's position is off the ref's history).
    pub fn max_behind(&self) -> Option<u64> {
        self.leases
            .iter()
            .map(|l| l.behind)
            .try_fold(0u64, |max, b| b.map(|b| max.max(b)))
    }
}

/// A live member, as [`GroupStatus`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its id.
    pub id: String,
    /// How many slots it holds.
    pub slots: u32,
    /// Milliseconds until it counts as dead without a heartbeat.
    pub expires_in_ms: i64,
}

/// A slot, as [`GroupStatus`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// The slot.
    pub slot: u32,
    /// The member holding a live lease on it (`None`: free, or its holder's lease ran out).
    pub owner: Option<String>,
    /// Its lease's epoch.
    pub epoch: u64,
    /// Milliseconds until its lease runs out (negative: it has).
    pub expires_in_ms: i64,
    /// Its acknowledged position.
    pub position: Option<ObjectId>,
    /// Checkpoints of the ref's first-parent history after its position (`None`: the position
    /// is not on that history).
    pub behind: Option<u64>,
}

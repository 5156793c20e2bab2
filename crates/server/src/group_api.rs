//! The bodies of consumer groups, one struct each (re-exported by `api`): what a member
//! delivers (`retro group run --json` prints one a line) and a group's status (`GET
//! /groups/{name}`, `retro group status --json`, the `retro_group_*` metrics).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use depot::group::{GroupDelivery, GroupStatus};

use crate::api::EventEntry;

/// An event delivered to a group member: the event, its slot, and its index among all its
/// checkpoint's events (with the checkpoint id, it names the event across redeliveries).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GroupEventEntry {
    /// Its index in its checkpoint's affix, counting every partition's events.
    pub index: u32,
    /// The slot of its partition.
    pub slot: u32,
    /// The event.
    #[serde(flatten)]
    pub event: EventEntry,
}

/// A checkpoint's events of a member's slots.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GroupCheckpoint {
    /// Its id.
    pub checkpoint: String,
    /// Its first parent.
    pub parent: Option<String>,
    /// Its date.
    pub date: Option<String>,
    /// Its session.
    pub session: String,
    /// The events (never empty).
    pub events: Vec<GroupEventEntry>,
}

/// A member's slots changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupSlots {
    /// The member.
    pub member: String,
    /// The slots it holds now.
    pub held: Vec<u32>,
    /// Those just taken.
    pub taken: Vec<u32>,
    /// Those just given up or lost.
    pub released: Vec<u32>,
}

/// Slots whose position is off the ref's history: they resume after `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupNonFastForward {
    /// The slots.
    pub slots: Vec<u32>,
    /// Their position.
    pub from: String,
    /// The ref's head.
    pub head: Option<String>,
    /// Where they resume after (`null`: from the first checkpoint).
    pub base: Option<String>,
}

/// A line of `retro group run --json`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupDelivered {
    /// A checkpoint.
    Checkpoint(GroupCheckpoint),
    /// The member's slots changed.
    Slots(GroupSlots),
    /// A non-fast-forward move.
    NonFastForward(GroupNonFastForward),
}

impl GroupDelivered {
    /// The body of `delivery`, received by `member`.
    pub fn new(member: &str, delivery: &GroupDelivery) -> GroupDelivered {
        match delivery {
            GroupDelivery::Checkpoint {
                id,
                parent,
                date,
                session,
                events,
            } => GroupDelivered::Checkpoint(GroupCheckpoint {
                checkpoint: id.to_string(),
                parent: parent.map(|p| p.to_string()),
                date: date.map(depot::format_date),
                session: session.clone(),
                events: events
                    .iter()
                    .map(|e| GroupEventEntry {
                        index: e.index,
                        slot: e.slot,
                        event: EventEntry::from(&e.record),
                    })
                    .collect(),
            }),
            GroupDelivery::Slots {
                held,
                taken,
                released,
            } => GroupDelivered::Slots(GroupSlots {
                member: member.to_owned(),
                held: held.clone(),
                taken: taken.clone(),
                released: released.clone(),
            }),
            GroupDelivery::NonFastForward {
                slots,
                from,
                head,
                base,
            } => GroupDelivered::NonFastForward(GroupNonFastForward {
                slots: slots.clone(),
                from: from.to_string(),
                head: head.map(|h| h.to_string()),
                base: base.map(|b| b.to_string()),
            }),
        }
    }
}

/// A live member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupMemberEntry {
    /// Its id.
    pub id: String,
    /// How many slots it holds.
    pub slots: u32,
    /// Milliseconds until it counts as dead without a heartbeat.
    pub expires_in_ms: i64,
}

/// A slot of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupSlotEntry {
    /// The slot.
    pub slot: u32,
    /// The member with a live lease on it (`null`: free).
    pub owner: Option<String>,
    /// Its lease's epoch (incremented at each change of hands).
    pub epoch: u64,
    /// Milliseconds until its lease runs out (negative: it has).
    pub expires_in_ms: i64,
    /// The checkpoint its events are acknowledged up to (`null`: none yet).
    pub position: Option<String>,
    /// Checkpoints of the ref's first-parent history after its position (`null`: off that
    /// history).
    pub behind: Option<u64>,
}

/// A consumer group: `GET /groups/{name}`, `retro group status NAME --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupStatusBody {
    /// Its name.
    pub name: String,
    /// The ref it consumes.
    #[serde(rename = "ref")]
    pub target: String,
    /// Its partition glob.
    pub glob: String,
    /// The ref's head.
    pub head: Option<String>,
    /// The largest lag of any slot (`null`: a slot's position is off the ref's history).
    pub behind: Option<u64>,
    /// Slots without a live lease.
    pub unowned: u32,
    /// The live members.
    pub members: Vec<GroupMemberEntry>,
    /// Every slot.
    pub slots: Vec<GroupSlotEntry>,
}

impl From<&GroupStatus> for GroupStatusBody {
    fn from(status: &GroupStatus) -> GroupStatusBody {
        GroupStatusBody {
            name: status.name.clone(),
            target: status.target.clone(),
            glob: status.glob.clone(),
            head: status.head.map(|h| h.to_string()),
            behind: status.max_behind(),
            unowned: status.leases.iter().filter(|l| l.owner.is_none()).count() as u32,
            members: status
                .members
                .iter()
                .map(|m| GroupMemberEntry {
                    id: m.id.clone(),
                    slots: m.slots,
                    expires_in_ms: m.expires_in_ms,
                })
                .collect(),
            slots: status
                .leases
                .iter()
                .map(|l| GroupSlotEntry {
                    slot: l.slot,
                    owner: l.owner.clone(),
                    epoch: l.epoch,
                    expires_in_ms: l.expires_in_ms,
                    position: l.position.map(|p| p.to_string()),
                    behind: l.behind,
                })
                .collect(),
        }
    }
}

impl GroupStatusBody {
    /// Every group of `depot`, by name.
    pub fn read_all(depot: &depot::Depot) -> Result<Vec<GroupStatusBody>, depot::Error> {
        depot
            .list_groups()?
            .iter()
            .map(|name| Ok(GroupStatusBody::from(&depot.group_status(name.as_str())?)))
            .collect()
    }
}

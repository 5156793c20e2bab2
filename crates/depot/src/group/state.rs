//! A consumer group's persisted state (members, one lease and one position per slot), its one
//! encoding (a checksummed header line over `key value` lines, the same bytes in a file or a
//! PostgreSQL row), and the lease round every member runs against it: expire the dead, apply
//! acknowledgements fenced by epoch, renew, and take or give up slots toward a fair share.
//!
//! The round is a pure function of the state, the store's clock and the member's request, so the
//! files and PostgreSQL stores share it and the tests run it without a store.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{check_glob, GroupError, GroupName, MemberId};
use crate::hash::ObjectId;
use crate::refdb::RefName;

/// The first word of an encoded state.
const MAGIC: &str = "retro-group";
/// The encoding version this build writes and reads.
const VERSION: u32 = 1;
/// The most slots a group may have.
pub const MAX_SLOTS: u32 = 4096;

/// The slot a partition belongs to in a group of `slots` slots: the first 8 bytes of the
/// SHA-256 of its name, big-endian, modulo `slots` (stable across builds and hosts).
pub fn slot_of(partition: &str, slots: u32) -> u32 {
    let digest = Sha256::digest(partition.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(slots.max(1))) as u32
}

/// A live member (as far as the store's clock knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// When it joined (store clock, milliseconds since the Unix epoch).
    pub joined: i64,
    /// When it counts as dead unless it heartbeats again.
    pub expires: i64,
}

/// One slot: who leases it, under which epoch, until when, and how far it has been processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The member holding it (`None`: free).
    pub owner: Option<MemberId>,
    /// Incremented each time the slot changes hands: an acknowledgement from an older epoch is
    /// refused (fencing).
    pub epoch: u64,
    /// When the lease runs out (store clock, ms).
    pub expires: i64,
    /// The last checkpoint whose events of this slot were acknowledged (`None`: from the start
    /// position the group was created with).
    pub position: Option<ObjectId>,
}

/// A consumer group's state, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The group's name.
    pub group: GroupName,
    /// The ref whose first-parent history the group consumes.
    pub target: RefName,
    /// The partition glob.
    pub glob: String,
    /// The number of slots partitions are hashed into (fixed at creation).
    pub slots: u32,
    /// The live members, by id.
    pub members: BTreeMap<MemberId, MemberEntry>,
    /// One lease per slot, slot 0 first.
    pub leases: Vec<Lease>,
}

impl GroupState {
    /// A new group: every slot free at `start`.
    pub fn new(
        group: GroupName,
        target: RefName,
        glob: String,
        slots: u32,
        start: Option<ObjectId>,
    ) -> Result<GroupState, GroupError> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(GroupError::BadSlots(slots));
        }
        check_glob(&glob)?;
        Ok(GroupState {
            group,
            target,
            glob,
            slots,
            members: BTreeMap::new(),
            leases: (0..slots)
                .map(|_| Lease {
                    owner: None,
                    epoch: 0,
                    expires: 0,
                    position: start,
                })
                .collect(),
        })
    }

    /// The encoding: a header `retro-group 1 <sha256 of the body, hex>`, then the body, one
    /// `key value…` line each: `group`, `target`, `slots`, `glob` (the rest of the line), one
    /// `member ID JOINED EXPIRES` per member, one `lease SLOT OWNER|- EPOCH EXPIRES POSITION|-`
    /// per slot (docs/format.md, "Consumer groups").
    pub fn encode(&self) -> Vec<u8> {
        let mut body = format!(
            "group {}\ntarget {}\nslots {}\nglob {}\n",
            self.group, self.target, self.slots, self.glob
        );
        for (id, entry) in &self.members {
            body.push_str(&format!("member {id} {} {}\n", entry.joined, entry.expires));
        }
        for (slot, lease) in self.leases.iter().enumerate() {
            body.push_str(&format!(
                "lease {slot} {} {} {} {}\n",
                lease.owner.as_ref().map_or("-", |o| o.as_str()),
                lease.epoch,
                lease.expires,
                lease.position.map_or("-".to_owned(), |p| p.to_string())
            ));
        }
        let digest = hex::encode(Sha256::digest(body.as_bytes()));
        format!("{MAGIC} {VERSION} {digest}\n{body}").into_bytes()
    }

    /// Decodes and checks an encoded state (checksum, every field, one lease per slot in
    /// order). Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<GroupState, GroupError> {
        let corrupt = |reason: String| GroupError::Corrupt { reason };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("it is not UTF-8".to_owned()))?;
        let (header, body) = text
            .split_once('\n')
            .ok_or_else(|| corrupt("no header line".to_owned()))?;
        let mut words = header.split(' ');
        if words.next() != Some(MAGIC) {
            return Err(corrupt(format!("the header does not start with '{MAGIC}'")));
        }
        match words.next() {
            Some(v) if v == VERSION.to_string() => {}
            other => {
                return Err(corrupt(format!(
                    "unknown encoding version '{}'",
                    crate::name::shown(other.unwrap_or_default())
                )))
            }
        }
        let digest = words
            .next()
            .ok_or_else(|| corrupt("no checksum".to_owned()))?;
        if words.next().is_some() {
            return Err(corrupt("extra words in the header".to_owned()));
        }
        if digest != hex::encode(Sha256::digest(body.as_bytes())) {
            return Err(corrupt(
                "checksum mismatch (the state was damaged after it was written)".to_owned(),
            ));
        }
        let mut lines = body.split_terminator('\n');
        let mut field = |key: &str| -> Result<&str, GroupError> {
            let line = lines.next().unwrap_or_default();
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(' '))
                .ok_or_else(|| corrupt(format!("expected a '{key}' line")))
        };
        let group = GroupName::new(field("group")?)?;
        let target =
            RefName::new(field("target")?).map_err(|e| corrupt(format!("bad target: {e}")))?;
        let slots: u32 = field("slots")?
            .parse()
            .map_err(|_| corrupt("bad slot count".to_owned()))?;
        if slots == 0 || slots > MAX_SLOTS {
            return Err(corrupt(format!("{slots} slots")));
        }
        let glob = field("glob")?.to_owned();
        check_glob(&glob)?;
        let number = |word: Option<&str>, what: &str| -> Result<i64, GroupError> {
            word.and_then(|w| w.parse().ok())
                .ok_or_else(|| corrupt(format!("bad {what}")))
        };
        let mut members = BTreeMap::new();
        let mut leases = Vec::new();
        for line in lines {
            let mut words = line.split(' ');
            match words.next() {
                Some("member") if leases.is_empty() => {
                    let id = MemberId::new(words.next().unwrap_or_default())?;
                    let joined = number(words.next(), "member join time")?;
                    let expires = number(words.next(), "member expiry")?;
                    if words.next().is_some() {
                        return Err(corrupt("extra words in a member line".to_owned()));
                    }
                    if members
                        .insert(id, MemberEntry { joined, expires })
                        .is_some()
                    {
                        return Err(corrupt("a member is listed twice".to_owned()));
                    }
                }
                Some("lease") => {
                    let slot = number(words.next(), "lease slot")?;
                    if slot != leases.len() as i64 {
                        return Err(corrupt(format!("lease {slot} out of order")));
                    }
                    let owner = match words.next() {
                        Some("-") => None,
                        Some(name) => Some(MemberId::new(name)?),
                        None => return Err(corrupt("a lease line without owner".to_owned())),
                    };
                    let epoch = number(words.next(), "lease epoch")?;
                    let epoch = u64::try_from(epoch)
                        .map_err(|_| corrupt("negative lease epoch".to_owned()))?;
                    let expires = number(words.next(), "lease expiry")?;
                    let position = match words.next() {
                        Some("-") => None,
                        Some(id) => Some(
                            id.parse()
                                .map_err(|e| corrupt(format!("bad lease position: {e}")))?,
                        ),
                        None => return Err(corrupt("a lease line without position".to_owned())),
                    };
                    if words.next().is_some() {
                        return Err(corrupt("extra words in a lease line".to_owned()));
                    }
                    leases.push(Lease {
                        owner,
                        epoch,
                        expires,
                        position,
                    });
                }
                _ => {
                    return Err(corrupt(format!(
                        "unexpected line '{}'",
                        crate::name::shown(line)
                    )))
                }
            }
        }
        if leases.len() != slots as usize {
            return Err(corrupt(format!(
                "{} leases for {slots} slots",
                leases.len()
            )));
        }
        Ok(GroupState {
            group,
            target,
            glob,
            slots,
            members,
            leases,
        })
    }

    /// How many slots each member's fair share is: the members sorted by id, the first
    /// `slots % members` get one more.
    pub fn fair_share(&self, member: &MemberId) -> u32 {
        let count = self.members.len() as u32;
        let Some(index) = self.members.keys().position(|m| m == member) else {
            return 0;
        };
        if count == 0 {
            return 0;
        }
        self.slots / count + u32::from((index as u32) < self.slots % count)
    }
}

/// An acknowledgement: slot `slot`, held under `epoch`, is processed up to `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The slot.
    pub slot: u32,
    /// The epoch the member holds it under.
    pub epoch: u64,
    /// The new position (`None`: from the first checkpoint again, after a non-fast-forward move
    /// to a history sharing nothing).
    pub position: Option<ObjectId>,
}

/// What a member asks of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Stay: renew, take or give up slots toward the fair share.
    Work,
    /// Leave the group: every slot held is released (after the acknowledgements).
    Leave,
}

/// A slot a member holds after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The slot.
    pub slot: u32,
    /// Its epoch.
    pub epoch: u64,
    /// Its acknowledged position.
    pub position: Option<ObjectId>,
}

/// What a round decided for the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundOutcome {
    /// The slots it holds now, by slot.
    pub held: Vec<Held>,
    /// Acknowledgements refused: the slot had changed hands (its epoch or owner differs).
    pub refused: Vec<u32>,
}

/// One lease round of `member` at store time `now` (ms), leases of `lease_ms`: under the
/// store's lock, so rounds of all members are serialized.
///
/// 1. Members whose heartbeat expired are removed; slots whose owner is gone or whose lease ran
///    out (and that are not `member`'s own) become free, keeping their position.
/// 2. The acknowledgements are applied where `member` still owns the slot under that epoch.
/// 3. `Leave`: `member` is removed and its slots freed. `Work`: its heartbeat and leases are
///    renewed; slots above its fair share are given up (highest first), and free slots are
///    taken (lowest first, epoch + 1) up to it.
pub fn round(
    state: &mut GroupState,
    member: &MemberId,
    now: i64,
    lease_ms: i64,
    acks: &[Ack],
    intent: Intent,
) -> RoundOutcome {
    state
        .members
        .retain(|id, entry| id == member || entry.expires > now);
    for lease in &mut state.leases {
        let alive = match &lease.owner {
            None => true,
            Some(owner) if owner == member => state.members.contains_key(owner),
            Some(owner) => state.members.contains_key(owner) && lease.expires > now,
        };
        if !alive {
            lease.owner = None;
        }
    }
    let mut refused = Vec::new();
    for ack in acks {
        match state.leases.get_mut(ack.slot as usize) {
            Some(lease) if lease.owner.as_ref() == Some(member) && lease.epoch == ack.epoch => {
                lease.position = ack.position;
            }
            _ => refused.push(ack.slot),
        }
    }
    if intent == Intent::Leave {
        state.members.remove(member);
        for lease in &mut state.leases {
            if lease.owner.as_ref() == Some(member) {
                lease.owner = None;
                lease.expires = now;
            }
        }
        return RoundOutcome {
            held: Vec::new(),
            refused,
        };
    }
    let expires = now.saturating_add(lease_ms);
    let joined = state.members.get(member).map_or(now, |m| m.joined);
    state
        .members
        .insert(member.clone(), MemberEntry { joined, expires });
    let share = state.fair_share(member) as usize;
    let mut mine: Vec<usize> = (0..state.leases.len())
        .filter(|i| state.leases[*i].owner.as_ref() == Some(member))
        .collect();
    while mine.len() > share {
        let give_up = mine.pop().expect("longer than the share");
        state.leases[give_up].owner = None;
        state.leases[give_up].expires = now;
    }
    for (i, lease) in state.leases.iter_mut().enumerate() {
        if mine.len() >= share {
            break;
        }
        if lease.owner.is_none() {
            lease.owner = Some(member.clone());
            lease.epoch += 1;
            mine.push(i);
        }
    }
    mine.sort_unstable();
    let held = mine
        .into_iter()
        .map(|i| {
            let lease = &mut state.leases[i];
            lease.expires = expires;
            Held {
                slot: i as u32,
                epoch: lease.epoch,
                position: lease.position,
            }
        })
        .collect();
    RoundOutcome { held, refused }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(slots: u32) -> GroupState {
        GroupState::new(
            GroupName::new("g").unwrap(),
            RefName::head(),
            "**".to_owned(),
            slots,
            None,
        )
        .unwrap()
    }

    fn m(name: &str) -> MemberId {
        MemberId::new(name).unwrap()
    }

    fn id(n: u8) -> ObjectId {
        format!("sha256:{}", hex::encode([n; 32])).parse().unwrap()
    }

    #[test]
    fn a_lone_member_takes_every_slot_and_a_second_one_gets_half_after_a_release() {
        let mut s = state(8);
        let a = round(&mut s, &m("a"), 0, 100, &[], Intent::Work);
        assert_eq!(a.held.len(), 8);
        // b joins: nothing is free yet.
        let b = round(&mut s, &m("b"), 10, 100, &[], Intent::Work);
        assert!(b.held.is_empty());
        // a's next round gives up the slots above its share, b's takes them.
        let a = round(&mut s, &m("a"), 20, 100, &[], Intent::Work);
        assert_eq!(
            a.held.iter().map(|h| h.slot).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        let b = round(&mut s, &m("b"), 30, 100, &[], Intent::Work);
        assert_eq!(
            b.held.iter().map(|h| h.slot).collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        assert!(b.held.iter().all(|h| h.epoch == 2));
    }

    #[test]
    fn a_dead_members_slots_are_taken_over_with_their_positions_and_its_acks_are_refused() {
        let mut s = state(2);
        round(&mut s, &m("a"), 0, 100, &[], Intent::Work);
        let a = round(
            &mut s,
            &m("a"),
            10,
            100,
            &[Ack {
                slot: 1,
                epoch: 1,
                position: Some(id(7)),
            }],
            Intent::Work,
        );
        assert!(a.refused.is_empty());
        // a stops heartbeating; b comes after a's lease ran out.
        let b = round(&mut s, &m("b"), 200, 100, &[], Intent::Work);
        assert_eq!(b.held.len(), 2);
        assert_eq!(b.held[1].position, Some(id(7)));
        assert!(!s.members.contains_key(&m("a")));
        // a wakes up and acknowledges under its old epoch: refused, and it holds nothing.
        let a = round(
            &mut s,
            &m("a"),
            210,
            100,
            &[Ack {
                slot: 1,
                epoch: 1,
                position: Some(id(9)),
            }],
            Intent::Work,
        );
        assert_eq!(a.refused, [1]);
        assert_eq!(s.leases[1].position, Some(id(7)));
    }

    #[test]
    fn leaving_frees_the_slots_after_applying_the_acks() {
        let mut s = state(3);
        let a = round(&mut s, &m("a"), 0, 100, &[], Intent::Work);
        let acks: Vec<Ack> = a
            .held
            .iter()
            .map(|h| Ack {
                slot: h.slot,
                epoch: h.epoch,
                position: Some(id(1)),
            })
            .collect();
        round(&mut s, &m("a"), 5, 100, &acks, Intent::Leave);
        assert!(s.members.is_empty());
        assert!(s
            .leases
            .iter()
            .all(|l| l.owner.is_none() && l.position == Some(id(1))));
    }

    #[test]
    fn the_encoding_round_trips_and_any_flipped_byte_is_refused() {
        let mut s = state(4);
        round(&mut s, &m("a"), 0, 100, &[], Intent::Work);
        let bytes = s.encode();
        assert_eq!(GroupState::decode(&bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(GroupState::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn slots_are_spread_and_stable() {
        assert_eq!(slot_of("accounts/alice", 64), slot_of("accounts/alice", 64));
        let used: std::collections::HashSet<u32> =
            (0..200).map(|i| slot_of(&format!("p/{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
    }
}

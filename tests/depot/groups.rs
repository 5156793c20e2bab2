//! Consumer groups: slots spread over members, rebalancing when one joins, takeover from a dead
//! member at its last acknowledgement, fencing of a stalled member's acknowledgements, and the
//! settings a group keeps.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use benchkit::wait_until;
use depot::group::{GroupDelivery, GroupMember, GroupOptions};
use depot::{Depot, ErrorClass, ObjectId};

use crate::common::*;

const LEASE: Duration = Duration::from_millis(300);
const SOON: Duration = Duration::from_secs(20);

fn options(slots: u32) -> GroupOptions {
    GroupOptions {
        slots: Some(slots),
        lease: LEASE,
        ..GroupOptions::new()
    }
}

/// Ten partitions, `n` checkpoints: checkpoint i writes one event to `p/{i % 10}`.
fn fill(depot: &Depot, from: u64, to: u64) -> Vec<ObjectId> {
    (from..to)
        .map(|i| {
            commit_retrying(
                depot,
                vec![(
                    p(&format!("p/{}", i % 10)),
                    ev("E", &format!("{{\"i\":{i}}}")),
                )],
                "x",
            )
            .checkpoint
        })
        .collect()
}

/// What a member saw: (partition, version, checkpoint, index) in delivery order.
type Seen = Vec<(String, u64, ObjectId, u32)>;

/// Takes one delivery (if one comes within `wait`), records its events, acknowledges.
fn pump(member: &mut GroupMember<'_>, seen: &mut Seen, wait: Duration) -> Option<GroupDelivery> {
    let delivery = member.next_timeout(wait).unwrap();
    if let Some(GroupDelivery::Checkpoint { id, events, .. }) = &delivery {
        for e in events {
            assert_eq!(e.record.checkpoint, *id);
            seen.push((
                e.record.partition.to_string(),
                e.record.version,
                *id,
                e.index,
            ));
        }
    }
    // Also when nothing came: the positions of checkpoints skipped (no event of this member's
    // slots) move too.
    member.ack().unwrap();
    delivery
}

/// Every partition's versions, in the order delivered, across members.
fn by_partition(seen: &[&Seen]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in seen {
        for (partition, version, _, _) in s.iter() {
            out.entry(partition.clone()).or_default().push(*version);
        }
    }
    out
}

#[test]
fn a_joining_member_gets_its_share_and_every_event_is_delivered_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    fill(&depot, 0, 30);
    let mut a = depot.join_group("billing", "a", &options(8)).unwrap();
    assert_eq!(a.held().len(), 8);
    let mut seen_a = Seen::new();
    // a consumes part of the history alone.
    while seen_a.len() < 12 {
        pump(&mut a, &mut seen_a, SOON);
    }
    // b joins; a gives up half at a batch boundary (its next acknowledgement), b takes it.
    let other = Depot::open(dir.path().join("d")).unwrap();
    let mut b = other.join_group("billing", "b", &options(8)).unwrap();
    let mut seen_b = Seen::new();
    wait_until("each member holds 4 slots", SOON, || {
        pump(&mut a, &mut seen_a, Duration::from_millis(20));
        pump(&mut b, &mut seen_b, Duration::from_millis(20));
        a.held().len() == 4 && b.held().len() == 4
    })
    .unwrap();
    fill(&depot, 30, 50);
    wait_until(
        "all 50 events delivered and every slot at the head",
        SOON,
        || {
            pump(&mut a, &mut seen_a, Duration::from_millis(20));
            pump(&mut b, &mut seen_b, Duration::from_millis(20));
            seen_a.len() + seen_b.len() >= 50
                && depot.group_status("billing").unwrap().max_behind() == Some(0)
        },
    )
    .unwrap();
    let held_a: HashSet<u32> = a.held().into_iter().collect();
    assert!(b.held().iter().all(|s| !held_a.contains(s)));
    // Each partition: versions 1..=5, in order, none twice (a cooperative handover redelivers
    // nothing: the giver acknowledges before it lets go).
    let partitions = by_partition(&[&seen_a, &seen_b]);
    assert_eq!(partitions.len(), 10);
    for (partition, versions) in &partitions {
        assert_eq!(versions, &(1..=5).collect::<Vec<u64>>(), "{partition}");
    }
    let status = depot.group_status("billing").unwrap();
    assert_eq!(status.members.len(), 2);
    assert!(status.members.iter().all(|m| m.slots == 4));
    a.leave().unwrap();
    b.leave().unwrap();
    let status = depot.group_status("billing").unwrap();
    assert!(status.members.is_empty());
    assert!(status.leases.iter().all(|l| l.owner.is_none()));
}

#[test]
fn a_dead_members_slots_are_taken_over_at_its_last_ack_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    fill(&depot, 0, 20);
    let mut a = depot.join_group("g", "a", &options(4)).unwrap();
    let mut seen_a = Seen::new();
    while seen_a.len() < 5 {
        pump(&mut a, &mut seen_a, SOON);
    }
    // One more delivery that a never acknowledges, then a dies (no leave, no heartbeat).
    let unacked = loop {
        if let Some(GroupDelivery::Checkpoint { id, events, .. }) = a.next_timeout(SOON).unwrap() {
            break (id, events.iter().map(|e| e.index).collect::<Vec<_>>());
        }
    };
    drop(a);
    let mut b = depot.join_group("g", "b", &options(4)).unwrap();
    let mut seen_b = Seen::new();
    wait_until("b holds every slot", SOON, || {
        pump(&mut b, &mut seen_b, Duration::from_millis(20));
        b.held().len() == 4
    })
    .unwrap();
    wait_until("b caught up", SOON, || {
        pump(&mut b, &mut seen_b, Duration::from_millis(20));
        seen_a.len() + seen_b.len() >= 20
    })
    .unwrap();
    // The unacknowledged checkpoint came again, with the same checkpoint id and indexes.
    let again: Vec<u32> = seen_b
        .iter()
        .filter(|(_, _, id, _)| *id == unacked.0)
        .map(|(_, _, _, index)| *index)
        .collect();
    assert_eq!(again, unacked.1);
    // Nothing lost, nothing reordered: per partition, b continues where a's acks ended.
    for (partition, versions) in by_partition(&[&seen_a, &seen_b]) {
        let mut expected: Vec<u64> = (1..=2).collect();
        if versions.len() > 2 {
            expected = versions.clone();
            expected.sort_unstable();
        }
        assert_eq!(versions, expected, "{partition}");
        let unique: HashSet<u64> = versions.iter().copied().collect();
        assert_eq!(unique.len(), 2, "{partition}: {versions:?}");
    }
}

#[test]
fn a_stalled_members_acks_are_refused_once_its_slots_were_taken_over() {
    let depot = Depot::in_memory().unwrap();
    fill(&depot, 0, 4);
    let mut a = depot.join_group("g", "a", &options(2)).unwrap();
    let mut seen_a = Seen::new();
    // a takes a delivery and stalls past its lease before acknowledging it.
    let first = loop {
        if let Some(GroupDelivery::Checkpoint { id, .. }) = a.next_timeout(SOON).unwrap() {
            break id;
        }
    };
    let mut b = depot.join_group("g", "b", &options(2)).unwrap();
    let mut seen_b = Seen::new();
    wait_until("b took both slots", SOON, || {
        pump(&mut b, &mut seen_b, Duration::from_millis(20));
        b.held().len() == 2
    })
    .unwrap();
    a.ack().unwrap();
    assert!(
        a.held().is_empty(),
        "a still thinks it holds {:?}",
        a.held()
    );
    match a.next_timeout(Duration::ZERO).unwrap() {
        Some(GroupDelivery::Slots { released, .. }) => assert_eq!(released.len(), 2),
        other => panic!("expected the lost slots, got {other:?}"),
    }
    wait_until("b delivered everything", SOON, || {
        pump(&mut b, &mut seen_b, Duration::from_millis(20));
        seen_b.len() >= 4
    })
    .unwrap();
    assert!(seen_b.iter().any(|(_, _, id, _)| *id == first));
    let _ = &mut seen_a;
}

#[test]
fn a_group_keeps_its_settings_and_refuses_bad_names() {
    let depot = Depot::in_memory().unwrap();
    let _a = depot.join_group("g", "a", &options(4)).unwrap();
    let other_glob = GroupOptions {
        glob: "accounts/*".to_owned(),
        ..options(4)
    };
    let err = depot.join_group("g", "b", &other_glob).err().unwrap();
    assert_eq!(err.class(), ErrorClass::Invalid);
    assert!(err.to_string().contains("glob"), "{err}");
    let err = depot.join_group("g", "b", &options(8)).err().unwrap();
    assert!(err.to_string().contains("slot count"), "{err}");
    for bad in ["", "../x", ".hidden", "a b", &"x".repeat(65)] {
        let err = depot.join_group(bad, "m", &options(4)).err().unwrap();
        assert_eq!(err.class(), ErrorClass::Invalid, "{bad}");
    }
    let err = depot.join_group("g2", "m/1", &options(4)).err().unwrap();
    assert_eq!(err.class(), ErrorClass::Invalid);
    let short = GroupOptions {
        lease: Duration::from_millis(5),
        ..options(4)
    };
    assert_eq!(
        depot.join_group("g3", "m", &short).err().unwrap().class(),
        ErrorClass::Invalid
    );
    let err = depot.group_status("nope").err().unwrap();
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert_eq!(
        depot
            .list_groups()
            .unwrap()
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>(),
        ["g"]
    );
}

#[test]
fn a_damaged_state_file_is_a_corrupt_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    depot
        .join_group("g", "a", &options(4))
        .unwrap()
        .leave()
        .unwrap();
    let path = dir.path().join("d/groups/g");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = depot.group_status("g").err().unwrap();
    assert_eq!(err.class(), ErrorClass::Corrupt);
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_non_fast_forward_move_restarts_the_slots_after_the_common_checkpoint() {
    let depot = Depot::in_memory().unwrap();
    let ids = fill(&depot, 0, 6);
    let mut a = depot.join_group("g", "a", &options(2)).unwrap();
    let mut seen = Seen::new();
    wait_until("a at the head", SOON, || {
        pump(&mut a, &mut seen, Duration::from_millis(20));
        depot.group_status("g").unwrap().max_behind() == Some(0)
    })
    .unwrap();
    assert_eq!(seen.len(), 6);
    // The branch is moved back to the third checkpoint, and two new ones land on it.
    let master = depot::RefName::master();
    depot
        .update_refs(&[depot::RefEdit::cas(
            master,
            Some(ids[5]),
            ids[2],
            depot::LogInfo {
                session: String::new(),
                message: "reset".to_owned(),
            },
        )])
        .unwrap();
    let new = fill(&depot, 100, 102);
    let mut notices = Vec::new();
    let mut after = Seen::new();
    wait_until("the new checkpoints delivered", SOON, || {
        if let Some(GroupDelivery::NonFastForward { base, from, .. }) =
            pump(&mut a, &mut after, Duration::from_millis(20))
        {
            notices.push((from, base));
        }
        after.len() >= 2
    })
    .unwrap();
    assert!(!notices.is_empty());
    assert!(notices
        .iter()
        .all(|(from, base)| *from == ids[5] && *base == Some(ids[2])));
    // Only what the new history adds after the base, in order.
    let delivered: Vec<ObjectId> = after.iter().map(|(_, _, id, _)| *id).collect();
    assert_eq!(delivered, new);
    assert_eq!(depot.group_status("g").unwrap().max_behind(), Some(0));
}

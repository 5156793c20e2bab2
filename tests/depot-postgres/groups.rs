//! Consumer groups on PostgreSQL: two members on two "hosts" (depot handles of their own) share a
//! group whose state is a `retro_groups` row, and the server is restarted under them: they wait
//! it out, renew their leases and deliver everything, in order within each partition.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use depot::group::{GroupDelivery, GroupMember, GroupOptions};
use depot::{Depot, ErrorClass};

use crate::common::{ev, p};

const SOON: Duration = Duration::from_secs(60);

/// (partition, version) in delivery order.
type Seen = Vec<(String, u64)>;

/// One delivery (if any) recorded and acknowledged; a retryable failure (the server is down) is
/// waited out like `retro group run` does.
fn pump(member: &mut GroupMember<'_>, seen: &mut Seen) {
    match member.next_timeout(Duration::from_millis(20)) {
        Ok(Some(GroupDelivery::Checkpoint { events, .. })) => {
            for e in events {
                seen.push((e.record.partition.to_string(), e.record.version));
            }
        }
        Ok(_) => {}
        Err(e) if e.class() == ErrorClass::Unavailable => return,
        Err(e) => panic!("{e}"),
    }
    match member.ack() {
        Ok(()) => {}
        Err(e) if e.class() == ErrorClass::Unavailable => {}
        Err(e) => panic!("{e}"),
    }
}

/// Commits checkpoint `i` (one event on `p/{i % 6}`), retrying while the server is away.
fn commit(depot: &Depot, i: u64) {
    let deadline = Instant::now() + SOON;
    loop {
        let head = depot.head();
        let result = head.and_then(|head| {
            depot.commit(depot::CommitRequest::new(
                head,
                vec![(
                    p(&format!("p/{}", i % 6)),
                    ev("E", &format!("{{\"i\":{i}}}")),
                )],
                "s",
                "x",
            ))
        });
        match result {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline && e.class() != ErrorClass::Invalid => continue,
            Err(e) => panic!("commit {i}: {e}"),
        }
    }
}

#[test]
fn a_group_survives_a_postgresql_restart_under_its_members() {
    let server = pgtest::PgServer::start();
    let url = server.create_database();
    let writer = depot_postgres::init(&url).unwrap();
    for i in 0..12 {
        commit(&writer, i);
    }
    let host_a = depot_postgres::open(&url).unwrap();
    let host_b = depot_postgres::open(&url).unwrap();
    let options = GroupOptions {
        slots: Some(4),
        lease: Duration::from_millis(1500),
        ..GroupOptions::new()
    };
    let mut a = host_a.join_group("g", "a", &options).unwrap();
    let mut b = host_b.join_group("g", "b", &options).unwrap();
    let (mut seen_a, mut seen_b) = (Seen::new(), Seen::new());
    benchkit::wait_until("two slots each and the history delivered", SOON, || {
        pump(&mut a, &mut seen_a);
        pump(&mut b, &mut seen_b);
        a.held().len() == 2 && b.held().len() == 2 && seen_a.len() + seen_b.len() >= 12
    })
    .unwrap();
    assert_eq!(writer.group_status("g").unwrap().members.len(), 2);

    server.restart();
    for i in 12..24 {
        commit(&writer, i);
    }
    let mut last = String::new();
    let waited = benchkit::wait_until("every event delivered after the restart", SOON, || {
        pump(&mut a, &mut seen_a);
        pump(&mut b, &mut seen_b);
        let unique: HashSet<&(String, u64)> = seen_a.iter().chain(&seen_b).collect();
        let status = writer.group_status("g");
        last = format!("{} unique; status {status:?}", unique.len());
        unique.len() == 24
            && status.is_ok_and(|s| s.max_behind() == Some(0) && s.members.len() == 2)
    });
    assert!(waited.is_ok(), "{last}");
    // Within each member, a partition's versions only go up; together, each partition has all 4.
    let mut together: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    for seen in [&seen_a, &seen_b] {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (partition, version) in seen.iter() {
            if let Some(before) = last.insert(partition, *version) {
                assert!(before < *version, "{partition}: {before} then {version}");
            }
            together
                .entry(partition.clone())
                .or_default()
                .insert(*version);
        }
    }
    assert_eq!(together.len(), 6);
    for (partition, versions) in together {
        assert_eq!(versions, (1..=4).collect::<HashSet<u64>>(), "{partition}");
    }
    a.leave().unwrap();
    b.leave().unwrap();
    assert!(writer.group_status("g").unwrap().members.is_empty());
}

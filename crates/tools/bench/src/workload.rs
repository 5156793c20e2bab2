//! The workload retro is measured on, as depot commit requests.
//!
//! One command is `createIdentity`: 3 events of ~60 bytes of JSON over 2 partitions (the
//! identity's partition gets 2, the session's partition gets 1), an affix listing them, and a
//! checkpoint whose message is the ~100-byte JSON of the command. The bytes are those
//! `retro-peers` stores, so the peers and retro hold the same data; only where the identity
//! events go (which partition) is chosen per measurement by a [`Shape`].

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use depot::{Base, CommitRequest, Event, EventName, PartitionName};

/// A fresh native depot at `dir` writing plain events: the peers store the same JSON with no
/// way to erase it, so plain events are what compares with them (a sealed depot, the default of
/// `retro init`, adds a salted data object per event and per command: see the disk figures).
pub fn init_plain(dir: impl AsRef<std::path::Path>) -> Result<depot::Depot> {
    let depot = depot::Depot::init(dir)?;
    depot.configure_events(false)?;
    Ok(depot)
}

/// A fresh plain depot at `dir` whose `partition` holds `events` events named `name`, event `i`
/// (from 0) carrying `data(i)`, bulk-committed 1,000 a checkpoint.
pub fn one_partition_depot(
    dir: impl AsRef<std::path::Path>,
    partition: &str,
    name: &str,
    events: u64,
    data: impl Fn(u64) -> String,
) -> Result<depot::Depot> {
    let depot = init_plain(dir)?;
    let partition = PartitionName::new(partition)?;
    let name = EventName::new(name)?;
    let mut written = 0;
    while written < events {
        let batch = (events - written).min(1000);
        let list = (written..written + batch)
            .map(|i| (partition.clone(), Event::new(name.clone(), data(i))))
            .collect();
        let mut request = CommitRequest::new(None, list, "bench", "load");
        request.base = Base::Tip;
        depot.commit(request)?;
        written += batch;
    }
    Ok(depot)
}

/// Events each command emits.
pub const EVENTS_PER_COMMAND: u64 = 3;
/// Events the read measurement's identity partitions hold.
pub const EVENTS_PER_READ_PARTITION: u64 = 10;
/// 2026-01-01T00:00:00Z: command `i` happens `i` seconds later (as in `retro-peers`).
const EPOCH: i64 = 1_767_225_600;

/// Which partitions a run's commands write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Command `i` creates `identity/<i>` (2 events) in session `s1`: the peers' workload.
    Fresh,
    /// Command `i` appends to `identity/<i mod partitions>` in session `s1`, so that every identity
    /// partition ends up with 10 events spread over the whole history (the read measurement).
    Cycling {
        /// How many identity partitions there are.
        partitions: u64,
    },
    /// Writer `writer`'s command `i` creates `identity/w<writer>-<i>` in session `s<writer+1>`:
    /// writers touch disjoint partitions (the group-commit measurement).
    Writer {
        /// The writer's number, from 0.
        writer: u64,
    },
}

impl Shape {
    /// The shape of a read depot of (about) `events` events: identity partitions of 10 events.
    pub fn for_reads(events: u64) -> Shape {
        Shape::Cycling {
            partitions: read_partitions(events),
        }
    }
}

/// How many 10-event identity partitions a read depot of about `events` events holds.
pub fn read_partitions(events: u64) -> u64 {
    // Each command adds 2 identity events and 1 session event: 5 commands (15 events) fill one.
    (events / (EVENTS_PER_READ_PARTITION / 2 * EVENTS_PER_COMMAND)).max(1)
}

/// Commands of a read depot of about `events` events: exactly 5 per identity partition, so every
/// identity partition holds exactly 10 events.
pub fn read_commands(events: u64) -> u64 {
    read_partitions(events) * (EVENTS_PER_READ_PARTITION / 2)
}

/// Builds the `index`th command of a run as a commit request on `HEAD`.
///
/// The event bodies carry the command's index, so no two events are byte-identical (the depot
/// is content-addressed: equal events would be stored once).
pub fn request(index: u64, shape: Shape, base: Base) -> Result<CommitRequest> {
    let (partition, session) = match shape {
        Shape::Fresh => (format!("identity/{index}"), "s1".to_owned()),
        Shape::Cycling { partitions } => (
            format!("identity/{}", index % partitions.max(1)),
            "s1".to_owned(),
        ),
        Shape::Writer { writer } => (
            format!("identity/w{writer}-{index}"),
            format!("s{}", writer + 1),
        ),
    };
    let identity = format!("id-{index:08}");
    let email = format!("user{index}@example.org");
    let timestamp = EPOCH.saturating_add(i64::try_from(index).unwrap_or(i64::MAX));
    let date = DateTime::<Utc>::from_timestamp(timestamp, 0).context("workload date")?;
    let stamp = date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let identity_partition = PartitionName::new(&partition)?;
    let session_partition = PartitionName::new(&format!("session/{session}"))?;
    let events = vec![
        (
            identity_partition.clone(),
            Event::new(
                EventName::new("IdentityCreated")?,
                format!(r#"{{"identity":"{identity}","email":"{email}"}}"#),
            ),
        ),
        (
            identity_partition,
            Event::new(
                EventName::new("EmailVerificationRequested")?,
                format!(r#"{{"identity":"{identity}","requestedAt":"{stamp}"}}"#),
            ),
        ),
        (
            session_partition,
            Event::new(
                EventName::new("SessionCommandApplied")?,
                format!(
                    r#"{{"session":"{session}","identity":"{identity}","seq":{index},"ok":true}}"#
                ),
            ),
        ),
    ];
    let message = format!(
        r#"{{"command":"createIdentity","session":"{session}","identity":"{identity}","email":"{email}"}}"#
    );
    let mut request = CommitRequest::new(None, events, session, message);
    request.base = base;
    request.date = date;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_peers_workload() {
        let request = request(1234, Shape::Fresh, Base::Tip).unwrap();
        assert_eq!(request.events.len(), 3);
        for (_, event) in &request.events {
            assert!((55..=70).contains(&event.data().len()));
        }
        assert!((95..=115).contains(&request.message.len()));
        assert_eq!(request.events[0].0.as_str(), "identity/1234");
        assert_eq!(request.events[2].0.as_str(), "session/s1");
    }

    #[test]
    fn cycling_fills_ten_event_partitions() {
        let events = 10_000;
        let partitions = read_partitions(events);
        let commands = read_commands(events);
        assert_eq!((partitions, commands), (666, 3330));
        let mut counts = vec![0u64; partitions as usize];
        for i in 0..commands {
            let request = request(i, Shape::for_reads(events), Base::Tip).unwrap();
            let name = request.events[0].0.as_str().to_owned();
            let k: usize = name.trim_start_matches("identity/").parse().unwrap();
            counts[k] += 2;
        }
        assert!(counts.iter().all(|&c| c == 10));
    }

    #[test]
    fn writers_touch_disjoint_partitions() {
        let a = request(7, Shape::Writer { writer: 0 }, Base::Tip).unwrap();
        let b = request(7, Shape::Writer { writer: 1 }, Base::Tip).unwrap();
        assert_ne!(a.events[0].0, b.events[0].0);
        assert_ne!(a.events[2].0, b.events[2].0);
        assert_ne!(a.session, b.session);
    }
}

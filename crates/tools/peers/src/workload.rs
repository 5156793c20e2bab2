//! The workload every peer is measured on, generated in-process and deterministically.
//!
//! One command is `createIdentity`: it emits 3 events of ~60 bytes of JSON over 2 partitions
//! (`identity/<n>` gets 2 events, `session/s1` gets 1), which an affix lists, and a checkpoint
//! whose message is the ~100-byte JSON of the command itself.

use chrono::{DateTime, SecondsFormat, Utc};

/// Events each command emits.
pub const EVENTS_PER_COMMAND: u64 = 3;
/// The one session every command runs in.
pub const SESSION: &str = "s1";
/// The session's partition; every command appends one event to it.
pub const SESSION_PARTITION: &str = "session/s1";
/// 2026-01-01T00:00:00Z: command `i` happens `i` seconds later.
const EPOCH: i64 = 1_767_225_600;

/// One event, as stored by a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Partition the event belongs to, e.g. `identity/42`.
    pub partition: String,
    /// Position of the event in its partition, from 0.
    pub seq: u64,
    /// Event name, e.g. `IdentityCreated`.
    pub name: &'static str,
    /// The event's JSON body.
    pub data: String,
}

/// One command: its events and what its checkpoint records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Position of the command in the run, from 0.
    pub index: u64,
    /// Unix time of the command, in seconds.
    pub timestamp: i64,
    /// The events, `identity/<index>` twice, then `session/s1`.
    pub events: [Event; 3],
    /// The checkpoint message: the command's JSON.
    pub message: String,
}

impl Command {
    /// The `index`th command of a run (the session partition already holds `index` events).
    pub fn new(index: u64) -> Self {
        let identity = format!("id-{index:08}");
        let partition = format!("identity/{index}");
        let timestamp = EPOCH.saturating_add(i64::try_from(index).unwrap_or(i64::MAX));
        let date = rfc3339(timestamp);
        let email = format!("user{index}@example.org");
        let events = [
            Event {
                partition: partition.clone(),
                seq: 0,
                name: "IdentityCreated",
                data: format!(r#"{{"identity":"{identity}","email":"{email}"}}"#),
            },
            Event {
                partition,
                seq: 1,
                name: "EmailVerificationRequested",
                data: format!(r#"{{"identity":"{identity}","requestedAt":"{date}"}}"#),
            },
            Event {
                partition: SESSION_PARTITION.to_owned(),
                seq: index,
                name: "SessionCommandApplied",
                data: format!(
                    r#"{{"session":"{SESSION}","identity":"{identity}","seq":{index},"ok":true}}"#
                ),
            },
        ];
        let message = format!(
            r#"{{"command":"createIdentity","session":"{SESSION}","identity":"{identity}","email":"{email}"}}"#
        );
        Self {
            index,
            timestamp,
            events,
            message,
        }
    }

    /// The checkpoint date, RFC 3339 in UTC with seconds, e.g. `2026-01-01T00:00:42Z`.
    pub fn date(&self) -> String {
        rfc3339(self.timestamp)
    }
}

fn rfc3339(timestamp: i64) -> String {
    DateTime::<Utc>::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The commands of a run, in order, without end.
#[derive(Debug, Default, Clone)]
pub struct Workload {
    next: u64,
}

impl Workload {
    /// A run starting at command 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Iterator for Workload {
    type Item = Command;

    fn next(&mut self) -> Option<Command> {
        let command = Command::new(self.next);
        self.next += 1;
        Some(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_workload() {
        for command in Workload::new().skip(1000).take(10) {
            for event in &command.events {
                assert!((55..=70).contains(&event.data.len()), "{}", event.data);
                assert!(serde_json::from_str::<serde_json::Value>(&event.data).is_ok());
            }
            assert!(
                (95..=115).contains(&command.message.len()),
                "{}",
                command.message
            );
            assert!(serde_json::from_str::<serde_json::Value>(&command.message).is_ok());
        }
    }

    #[test]
    fn partitions_and_sequences() {
        let command = Command::new(42);
        assert_eq!(command.events[0].partition, "identity/42");
        assert_eq!(command.events[1].partition, "identity/42");
        assert_eq!(
            (command.events[0].seq, command.events[1].seq),
            (0, 1),
            "a fresh identity"
        );
        assert_eq!(command.events[2].partition, SESSION_PARTITION);
        assert_eq!(command.events[2].seq, 42);
        assert_eq!(command.date(), "2026-01-01T00:00:42Z");
    }
}

//! `retro group run` on a PostgreSQL depot: two member processes (as on two hosts) share a group
//! kept in `retro_groups`; one is killed with SIGKILL, the other takes its slots over and every
//! event is delivered, in order within each partition.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{command, fresh_url, ok, retro};

const SOON: Duration = Duration::from_secs(60);

/// A member process (killed when dropped) and its stdout lines, parsed.
struct Member {
    child: Child,
    lines: mpsc::Receiver<Value>,
    /// (partition, version) in delivery order.
    events: Vec<(String, u64)>,
    held: usize,
}

impl Member {
    fn start(work: &std::path::Path, url: &str, id: &str) -> Member {
        let mut child = retro(
            work,
            &[
                "--depot",
                url,
                "group",
                "run",
                "g",
                "accounts/*",
                "--member",
                id,
                "--slots",
                "4",
                "--lease-ms",
                "1000",
                "--json",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Member {
            child,
            lines,
            events: Vec::new(),
            held: 0,
        }
    }

    /// Takes the next line, if one comes within 20 ms.
    fn pump(&mut self) {
        if let Ok(value) = self.lines.recv_timeout(Duration::from_millis(20)) {
            self.take(&value);
        }
    }

    /// Every line still to come (the process has ended).
    fn drain(&mut self) {
        while let Ok(value) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.take(&value);
        }
    }

    fn take(&mut self, value: &Value) {
        match value["type"].as_str().unwrap() {
            "checkpoint" => {
                for e in value["events"].as_array().unwrap() {
                    self.events.push((
                        e["partition"].as_str().unwrap().to_owned(),
                        e["version"].as_u64().unwrap(),
                    ));
                }
            }
            "slots" => self.held = value["held"].as_array().unwrap().len(),
            other => panic!("unexpected line {other}: {value}"),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn until(what: &str, members: &mut [&mut Member], mut done: impl FnMut(&[&mut Member]) -> bool) {
    let deadline = Instant::now() + SOON;
    while !done(members) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            members
                .iter()
                .map(|m| (m.held, &m.events))
                .collect::<Vec<_>>()
        );
        for m in members.iter_mut() {
            m.pump();
        }
    }
}

#[test]
fn a_killed_member_process_is_taken_over_on_postgresql() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = fresh_url();
    ok(w, &["init", &url]);
    let apply = |path: &str, name: &str, params: &str| {
        ok(w, &["--depot", &url, "apply", &command(path, name, params)]);
    };
    for i in 0..6 {
        apply(&format!("accounts/a{i}"), "open", r#"{"owner":"o"}"#);
    }
    let mut a = Member::start(w, &url, "a");
    let mut b = Member::start(w, &url, "b");
    until("two slots each", &mut [&mut a, &mut b], |m| {
        m[0].held == 2 && m[1].held == 2
    });
    for i in 0..12 {
        apply(
            &format!("accounts/a{}", i % 6),
            "deposit",
            r#"{"amount":1}"#,
        );
    }
    until("a delivering", &mut [&mut a, &mut b], |m| {
        m[0].events.len() >= 3
    });
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    a.drain();
    for i in 12..18 {
        apply(
            &format!("accounts/a{}", i % 6),
            "deposit",
            r#"{"amount":1}"#,
        );
    }
    let a_events = a.events.clone();
    until("b holds every slot and has caught up", &mut [&mut b], |m| {
        let union: BTreeSet<&(String, u64)> = a_events.iter().chain(&m[0].events).collect();
        m[0].held == 4 && union.len() == 6 * 4
    });
    for events in [&a.events, &b.events] {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (partition, version) in events.iter() {
            if let Some(before) = last.insert(partition, *version) {
                assert!(before < *version, "{partition}: {before} then {version}");
            }
        }
    }
    let status: Value =
        serde_json::from_str(&ok(w, &["--depot", &url, "group", "status", "g", "--json"])).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["members"][0]["id"], "b", "{status}");
}

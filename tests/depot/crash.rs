//! Crash safety: a child committing in a loop is SIGKILLed at random moments; after each kill the
//! depot opens, HEAD's objects all exist and verify, and every acknowledged commit is in history.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use depot::{Depot, HistoryOrder};

use crate::concurrency::spawn_child;

fn kill9(child: &std::process::Child) {
    let status = Command9::kill(child.id());
    assert!(status, "kill -9 failed");
}

struct Command9;

impl Command9 {
    fn kill(pid: u32) -> bool {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// A small deterministic pseudo-random sequence (no extra dependency).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkilled_writers_never_lose_an_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Depot::init(&path).unwrap();
    let mut acked = HashSet::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let rounds = 24;
    for round in 0..rounds {
        let mut child = spawn_child(
            "crash",
            &path,
            &[("RETRO_TEST_WRITER", (round % 3).to_string())],
        )
        .spawn()
        .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ACK ") {
                    ids.push(id.trim().parse::<depot::ObjectId>().unwrap());
                }
            }
            ids
        });
        // Let it start and commit a little, then kill it at a random moment.
        let wait = Duration::from_millis(30 + next(&mut seed) % 120);
        let start = Instant::now();
        while start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        kill9(&child);
        let _ = child.wait();
        acked.extend(reader.join().unwrap());

        let depot = Depot::open(&path).unwrap();
        let head = depot.head().unwrap();
        let mut in_history = HashSet::new();
        if let Some(head) = head {
            depot
                .walk(head, HistoryOrder::FirstParent, |id, c| {
                    depot.read_affix(&c.affix()).unwrap();
                    in_history.insert(id);
                    Ok(true)
                })
                .unwrap();
        }
        let missing: Vec<_> = acked.difference(&in_history).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged but lost: {missing:?}"
        );
    }
    let depot = Depot::open(&path).unwrap();
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(
        acked.len() > rounds,
        "the children made progress ({} acks)",
        acked.len()
    );
}

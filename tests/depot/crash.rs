//! Crash safety: a child committing in a loop is SIGKILLed at random moments; after each kill the
//! depot opens, HEAD's objects all exist and verify, and every acknowledged commit is in history.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::time::Duration;

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

#[test]
fn sigkilled_writers_never_lose_an_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Depot::init(&path).unwrap();
    let mut acked = HashSet::new();
    let mut rng = benchkit::Rng::new(u64::from(std::process::id()));
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
        let (tx, acks) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ACK ") {
                    let _ = tx.send(id.trim().parse::<depot::ObjectId>().unwrap());
                }
            }
        });
        // Wait for its first acknowledged commit (it is running and committing), then kill it at
        // a random moment: the pause picks where the kill lands, it synchronises nothing.
        let first = acks
            .recv_timeout(Duration::from_secs(60))
            .expect("the child acknowledged a commit");
        acked.insert(first);
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        kill9(&child);
        let _ = child.wait();
        reader.join().unwrap();
        acked.extend(acks.try_iter());

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
        acked.len() >= rounds,
        "the children made progress ({} acks)",
        acked.len()
    );
}

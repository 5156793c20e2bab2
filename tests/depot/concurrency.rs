//! Concurrent writers: threads in one process (group commit) and separate processes.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use depot::{Base, CommitRequest, Depot, HistoryOrder};

use crate::common::*;

/// Runs this test binary as a child process playing `role` (see [`child_process`]).
pub fn spawn_child(role: &str, depot: &std::path::Path, extra: &[(&str, String)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "concurrency::child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("RETRO_TEST_CHILD", role)
        .env("RETRO_TEST_DEPOT", depot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        command.env(k, v);
    }
    command
}

/// The child side: `writer` commits `RETRO_TEST_COUNT` times retrying on conflict; `crash`
/// commits forever and prints `ACK <id>` after each acknowledged commit; `consumer` prints
/// `GOT <id>` per delivery; `stepped-writer` commits once per line read on stdin.
#[test]
#[ignore = "run only as a child process of other tests"]
fn child_process() {
    let Ok(role) = std::env::var("RETRO_TEST_CHILD") else {
        return;
    };
    let path = std::env::var("RETRO_TEST_DEPOT").unwrap();
    let depot = Depot::open(&path).unwrap();
    let writer: u64 = std::env::var("RETRO_TEST_WRITER").map_or(0, |w| w.parse().unwrap());
    let stdout = std::io::stdout();
    match role.as_str() {
        "writer" => {
            let count: u64 = std::env::var("RETRO_TEST_COUNT").unwrap().parse().unwrap();
            for n in 0..count {
                let events = vec![(
                    p(&format!("writer/{writer}")),
                    ev("Wrote", &format!(r#"{{"writer":{writer},"n":{n}}}"#)),
                )];
                let c = commit_retrying(&depot, events, &format!("w{writer}-{n}"));
                writeln!(stdout.lock(), "ACK {}", c.checkpoint).unwrap();
            }
        }
        "crash" => {
            for n in 0.. {
                let events = workload(n, &format!("crash{writer}"));
                let c = commit_retrying(&depot, events, &format!("c{writer}-{n}"));
                let mut out = stdout.lock();
                writeln!(out, "ACK {}", c.checkpoint).unwrap();
                out.flush().unwrap();
            }
        }
        "consumer" => {
            let mut consumer = depot
                .consumer("projector", &depot::RefName::head(), "identity/**", None)
                .unwrap();
            while let Some(delivery) = consumer
                .subscription()
                .next_timeout(std::time::Duration::from_millis(700))
                .unwrap()
            {
                if let depot::Delivery::Checkpoint { id, .. } = delivery {
                    let mut out = stdout.lock();
                    writeln!(out, "GOT {id}").unwrap();
                    out.flush().unwrap();
                    // Slow enough that the parent's kill lands mid-stream: a deliberate pace, not
                    // a synchronisation (the parent waits for the `GOT` lines, not for time).
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                consumer.ack().unwrap();
            }
        }
        "stepped-writer" => {
            // One commit per line on stdin (the parent's "go"), printing `AT <id>` after each,
            // so the parent decides when each lands.
            let count: u64 = std::env::var("RETRO_TEST_COUNT").unwrap().parse().unwrap();
            let mut lines = std::io::stdin().lines();
            for n in 0..count {
                if lines.next().is_none() {
                    break;
                }
                let c = commit_retrying(&depot, workload(1000 + n, "slow"), "slow");
                let mut out = stdout.lock();
                writeln!(out, "AT {}", c.checkpoint).unwrap();
                out.flush().unwrap();
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

pub fn acks(output: &[u8]) -> Vec<depot::ObjectId> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|l| l.strip_prefix("ACK "))
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

fn first_parent_chain(depot: &Depot) -> Vec<depot::ObjectId> {
    let mut chain = Vec::new();
    if let Some(head) = depot.head().unwrap() {
        depot
            .walk(head, HistoryOrder::FirstParent, |id, c| {
                assert!(c.parents().len() <= 1, "history stays linear");
                chain.push(id);
                Ok(true)
            })
            .unwrap();
    }
    chain
}

#[test]
fn four_processes_times_two_hundred_commits_make_one_linear_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Depot::init(&path).unwrap();
    let children: Vec<_> = (0..4)
        .map(|w| {
            spawn_child(
                "writer",
                &path,
                &[
                    ("RETRO_TEST_WRITER", w.to_string()),
                    ("RETRO_TEST_COUNT", "200".to_owned()),
                ],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    let mut acked = HashSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        acked.extend(acks(&output.stdout));
    }
    assert_eq!(acked.len(), 800);
    let depot = Depot::open(&path).unwrap();
    let chain = first_parent_chain(&depot);
    assert_eq!(chain.len(), 800, "exactly 800 new checkpoints");
    let chain: HashSet<_> = chain.into_iter().collect();
    assert_eq!(
        chain, acked,
        "every acknowledged commit is in the one chain"
    );
    for w in 0..4 {
        let events = depot.partition_events(&p(&format!("writer/{w}"))).unwrap();
        assert_eq!(events.len(), 200);
    }
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.checkpoints, 800);
}

#[test]
fn threads_on_disjoint_partitions_share_fsyncs_and_never_conflict_with_rebase() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::init(dir.path().join("d")).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let depot = depot.clone();
            std::thread::spawn(move || {
                let mut rebased = 0;
                for n in 0..100u64 {
                    let base = depot.head().unwrap();
                    let events = vec![(
                        p(&format!("thread/{t}")),
                        ev("Counted", &format!(r#"{{"n":{n}}}"#)),
                    )];
                    let mut request = CommitRequest::new(base, events, format!("t{t}"), "x");
                    request.rebase = true;
                    let committed = depot
                        .commit(request)
                        .expect("disjoint commits never conflict");
                    rebased += u64::from(committed.rebased);
                }
                rebased
            })
        })
        .collect();
    let rebased: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let chain = first_parent_chain(&depot);
    assert_eq!(chain.len(), 400);
    for t in 0..4 {
        let events = depot.partition_events(&p(&format!("thread/{t}"))).unwrap();
        let ns: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8(e.event.data().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..100).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        assert_eq!(ns, expected, "thread {t}'s events in its order");
    }
    eprintln!("{rebased} of 400 commits were rebased onto a moved head");
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn tip_commits_from_threads_all_land() {
    let depot = Arc::new(Depot::in_memory().unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let depot = depot.clone();
            std::thread::spawn(move || {
                for n in 0..50u64 {
                    let mut request =
                        CommitRequest::new(None, workload(t * 1000 + n, "s"), "s", "x");
                    request.base = Base::Tip;
                    depot.commit(request).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(first_parent_chain(&depot).len(), 200);
    assert_eq!(depot.partition_version(&p("session/s")).unwrap(), 200);
}

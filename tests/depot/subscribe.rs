//! Subscriptions: catch-up then live, non-fast-forward moves, durable consumers surviving
//! kill -9, and delivery across processes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use depot::{Delivery, Depot, Expected, LogInfo, ObjectId, RefEdit, RefName, RefValue};

use crate::common::*;
use crate::concurrency::spawn_child;

fn checkpoint_of(delivery: Delivery) -> (ObjectId, Vec<String>) {
    match delivery {
        Delivery::Checkpoint { id, events, .. } => (
            id,
            events
                .iter()
                .map(|e| format!("{}#{}", e.partition, e.version))
                .collect(),
        ),
        other => panic!("expected a checkpoint, got {other:?}"),
    }
}

#[test]
fn a_subscriber_catches_up_then_follows_live_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let depot = Arc::new(Depot::init(&path).unwrap());
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(commit_retrying(&depot, workload(n, "s"), "x").checkpoint);
    }
    // The writer commits each of the three live checkpoints when told: after the catch-up, and
    // then after each live delivery, so they land while the subscriber follows.
    let writer = Arc::new(Depot::open(&path).unwrap());
    let (go, next) = std::sync::mpsc::channel::<()>();
    let handle = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut more = Vec::new();
            for n in 5..8 {
                if next.recv().is_err() {
                    break;
                }
                more.push(commit_retrying(&writer, workload(n, "s"), "x").checkpoint);
            }
            more
        })
    };
    let mut subscription = depot
        .subscribe(&RefName::head(), "identity/*", None)
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 8 {
        let delivery = subscription
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("a delivery within 10 s");
        let (id, events) = checkpoint_of(delivery);
        assert_eq!(
            events,
            vec![
                format!("identity/{}#1", got.len()),
                format!("identity/{}#2", got.len())
            ]
        );
        got.push(id);
        if (5..8).contains(&got.len()) {
            go.send(()).unwrap();
        }
    }
    ids.extend(handle.join().unwrap());
    assert_eq!(got, ids, "history order, nothing skipped");
    assert!(subscription.poll().unwrap().is_none());
}

#[test]
fn checkpoints_without_matching_events_advance_silently() {
    let depot = Depot::in_memory().unwrap();
    commit_retrying(&depot, workload(1, "s"), "x");
    let last = commit_retrying(&depot, vec![(p("other/1"), ev("E", "{}"))], "y").checkpoint;
    let mut subscription = depot
        .subscribe(&RefName::head(), "identity/**", None)
        .unwrap();
    assert!(matches!(
        subscription.poll().unwrap(),
        Some(Delivery::Checkpoint { .. })
    ));
    assert!(subscription.poll().unwrap().is_none());
    assert_eq!(subscription.position(), Some(last));
}

#[test]
fn a_non_fast_forward_move_is_reported_with_its_base() {
    let depot = Depot::in_memory().unwrap();
    for n in 0..5 {
        commit_retrying(&depot, workload(n, "s"), "x");
    }
    let old_head = depot.head().unwrap().unwrap();
    let base = depot.resolve_revision("HEAD~3").unwrap();
    let mut subscription = depot
        .subscribe(&RefName::head(), "**", Some(old_head))
        .unwrap();
    assert!(subscription.poll().unwrap().is_none());
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: Expected::MustBe(old_head),
            new: Some(RefValue::Direct(base)),
            log: LogInfo::default(),
        }])
        .unwrap();
    let new = commit_retrying(&depot, workload(99, "s"), "diverged").checkpoint;
    match subscription.poll().unwrap() {
        Some(Delivery::NonFastForward {
            from,
            head,
            base: b,
        }) => {
            assert_eq!(from, old_head);
            assert_eq!(head, Some(new));
            assert_eq!(b, Some(base));
        }
        other => panic!("expected a non-fast-forward notice, got {other:?}"),
    }
    let (id, events) = checkpoint_of(subscription.poll().unwrap().unwrap());
    assert_eq!(id, new);
    assert!(events.contains(&"identity/99#2".to_owned()));
    assert!(events.contains(&"session/s#3".to_owned()), "{events:?}");
}

fn run_consumer(path: &std::path::Path, kill_after: Option<usize>) -> Vec<ObjectId> {
    let mut child = spawn_child("consumer", path, &[]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut got = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("GOT ") {
            got.push(id.parse().unwrap());
            if kill_after == Some(got.len()) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &child.id().to_string()])
                    .status();
            }
        }
    }
    let _ = child.wait();
    got
}

#[test]
fn a_durable_consumer_killed_mid_stream_resumes_without_losing_or_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let depot = Depot::init(&path).unwrap();
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(commit_retrying(&depot, workload(n, "s"), "x").checkpoint);
    }
    let mut seen = run_consumer(&path, Some(17));
    assert!(seen.len() >= 17);
    // A fresh handle: opening recovers a ref move the kill interrupted between the journal's
    // fsync and the ref file's rewrite (the old handle would read the half-written file).
    let reopened = Depot::open(&path).unwrap();
    let consumer_ref = reopened
        .read_ref(&RefName::new("refs/consumers/projector").unwrap())
        .unwrap()
        .and_then(|v| v.id());
    let acked_upto = ids.iter().position(|id| Some(*id) == consumer_ref).unwrap();
    let rest = run_consumer(&path, None);
    assert_eq!(
        rest.first(),
        ids.get(acked_upto + 1),
        "resumes right after the last ack"
    );
    seen.extend(rest);
    // At least once, in order: every checkpoint delivered, duplicates only across the kill.
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 60);
    let mut deduped = seen.clone();
    deduped.dedup();
    let mut order = Vec::new();
    for id in deduped {
        if !order.contains(&id) {
            order.push(id);
        }
    }
    assert_eq!(order, ids);
    assert!(
        seen.len() - 60 <= 2,
        "only the unacknowledged tail is redelivered"
    );
}

#[test]
fn a_commit_in_another_process_reaches_a_live_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let depot = Depot::init(&path).unwrap();
    commit_retrying(&depot, workload(0, "s"), "x");
    let mut subscription = depot
        .subscribe(&RefName::head(), "identity/**", depot.head().unwrap())
        .unwrap();
    let mut child = spawn_child(
        "stepped-writer",
        &path,
        &[("RETRO_TEST_COUNT", "10".to_owned())],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut acks = BufReader::new(child.stdout.take().unwrap()).lines();
    // One commit at a time in the child, each delivered before the next is asked for. How fast
    // is the benchmark's concern (delivery_latency in docs/benchmarks.md), not this test's.
    for _ in 0..10 {
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
        let at = loop {
            let line = acks.next().expect("the child's AT line").unwrap();
            if let Some(id) = line.strip_prefix("AT ") {
                break id.trim().parse::<ObjectId>().unwrap();
            }
        };
        let delivery = subscription
            .next_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("a delivery within 20 s");
        assert_eq!(checkpoint_of(delivery).0, at);
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(subscription.poll().unwrap().is_none());
}

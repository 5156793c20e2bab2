//! Concurrent applies: disjoint aggregates never re-run a handler; one shared aggregate keeps its
//! invariant in every history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use depot::{HistoryOrder, PartitionName};
use engine::{example, Aggregate, DomainError, Engine, Manifest, RecordedEvent};

use crate::common::*;

#[derive(Default)]
struct Counter {
    n: u64,
}

impl Aggregate for Counter {
    fn apply(&mut self, event: &RecordedEvent) {
        if event.name == "Incremented" {
            self.n += 1;
        }
    }
}

#[test]
fn four_writers_on_disjoint_aggregates_never_run_a_handler_twice() {
    let runs = Arc::new(AtomicU64::new(0));
    let mut manifest = Manifest::new();
    let counted = runs.clone();
    manifest
        .aggregate::<Counter>("counters")
        .unwrap()
        .command("increment", move |counter, ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            ctx.emit_json(
                ctx.path().as_str().to_owned().as_str(),
                "Incremented",
                &serde_json::json!({"n": counter.n + 1}),
            )
        })
        .unwrap();
    let (_dir, engine) = native_engine(manifest);
    let per_writer = 100u64;
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut rebased = 0;
                for _ in 0..per_writer {
                    let payload = format!(r#"{{"path":"counters/{w}","name":"increment"}}"#);
                    let applied = engine
                        .apply(&format!("writer-{w}"), payload.as_bytes())
                        .unwrap();
                    assert_eq!(applied.attempts, 1, "disjoint writers never re-run");
                    rebased += u64::from(applied.rebased);
                }
                rebased
            })
        })
        .collect();
    let rebased: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4 * per_writer,
        "no handler ran twice"
    );
    let depot = engine.depot();
    for w in 0..4 {
        let events = depot
            .partition_events(&PartitionName::new(&format!("counters/{w}")).unwrap())
            .unwrap();
        let ns: Vec<u64> = events
            .iter()
            .map(|e| {
                serde_json::from_slice::<serde_json::Value>(e.event.data()).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            ns,
            (1..=per_writer).collect::<Vec<_>>(),
            "nothing lost, nothing doubled"
        );
    }
    eprintln!("{rebased} of 400 applies were re-parented without re-running");
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_shared_account_never_overdraws_in_any_history() {
    let (_dir, engine) = bank();
    engine
        .apply(
            "s",
            br#"{"path":"accounts/shared","name":"open","params":{"owner":"All"}}"#,
        )
        .unwrap();
    engine
        .apply(
            "s",
            br#"{"path":"accounts/shared","name":"deposit","params":{"amount":1000}}"#,
        )
        .unwrap();
    let engine = engine.with_max_attempts(200);
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let engine: Engine = engine.clone();
            std::thread::spawn(move || {
                let mut ok = 0u64;
                for i in 0..40 {
                    let amount = 10 + (w * 7 + i) % 30;
                    let payload = format!(
                        r#"{{"path":"accounts/shared","name":"withdraw","params":{{"amount":{amount}}}}}"#
                    );
                    match engine.apply(&format!("w{w}"), payload.as_bytes()) {
                        Ok(_) => ok += amount,
                        Err(engine::ApplyError::Rejected { error, .. }) => {
                            assert_eq!(error.code, "insufficient_funds")
                        }
                        Err(other) => panic!("unexpected: {other}"),
                    }
                }
                ok
            })
        })
        .collect();
    let withdrawn: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let depot = engine.depot();
    let events = depot
        .partition_events(&PartitionName::new("accounts/shared").unwrap())
        .unwrap();
    // Replay: the balance never goes below zero at any point of history.
    let mut account = example::Account::default();
    let mut balance: i64 = 0;
    for record in &events {
        let event = RecordedEvent {
            name: record.event.name().to_string(),
            data: serde_json::from_slice(record.event.data()).unwrap(),
            checkpoint: record.checkpoint,
            version: record.version,
            schema_version: record.event.version(),
            session: record.session.clone(),
            date: record.date,
        };
        match event.name.as_str() {
            "Deposited" => balance += event.data["amount"].as_i64().unwrap(),
            "Withdrawn" => balance -= event.data["amount"].as_i64().unwrap(),
            _ => {}
        }
        assert!(balance >= 0, "overdrawn at version {}", record.version);
        account.apply(&event);
    }
    assert_eq!(balance as u64, 1000 - withdrawn);
    assert_eq!(account.balance, 1000 - withdrawn);
    assert!(
        withdrawn > 900,
        "the account was drained to near zero ({withdrawn})"
    );
    let head = depot.head().unwrap().unwrap();
    let mut linear = true;
    depot
        .walk(head, HistoryOrder::FirstParent, |_, c| {
            linear &= c.parents().len() <= 1;
            Ok(true)
        })
        .unwrap();
    assert!(linear);
    let _ = DomainError::new("x", "y");
}

//! The inventory example's own tests: the never-negative invariant (alone and under concurrent
//! writers), moves between warehouses as one checkpoint, the domain's rejection codes, a
//! malformed stored event, and the demo binary.

use std::sync::Arc;

use engine::depot::{Base, CommitRequest, Event, EventName};
use engine::{ApplyError, Depot, Engine, ErrorClass, PartitionName};
use inventory::{stock_path, Move, Receive, Ship, Stock, StockEvent, StockRejection};

fn engine() -> Engine {
    Engine::new(
        Arc::new(Depot::in_memory().unwrap()),
        inventory::manifest().unwrap(),
    )
}

fn on_hand(engine: &Engine, path: &str) -> u64 {
    engine.load::<Stock>(path).unwrap().state.on_hand
}

fn rejection_code(result: Result<engine::Applied, ApplyError>) -> String {
    match result {
        Err(ApplyError::Rejected { error, .. }) => error.code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn i16_14g_inventory_stock_never_goes_negative() {
    let engine = engine();
    let path = stock_path("berlin", "nut-m6").unwrap();
    engine
        .execute("cli", &path, &Receive { quantity: 5 })
        .unwrap();
    engine.execute("cli", &path, &Ship { quantity: 3 }).unwrap();
    assert_eq!(
        rejection_code(engine.execute("cli", &path, &Ship { quantity: 3 })),
        "insufficient_stock"
    );
    assert_eq!(
        rejection_code(engine.execute("cli", &path, &Ship { quantity: 0 })),
        "invalid_params"
    );
    assert_eq!(
        rejection_code(engine.execute("cli", &path, &Receive { quantity: u64::MAX })),
        "stock_overflow"
    );
    // Nothing to ship from an empty warehouse.
    let empty = stock_path("oslo", "nut-m6").unwrap();
    assert_eq!(
        rejection_code(engine.execute("cli", &empty, &Ship { quantity: 1 })),
        "insufficient_stock"
    );
    // JSON commands with a bad shape are refused by the typed struct.
    assert_eq!(
        rejection_code(engine.apply(
            "cli",
            br#"{"path":"stock/berlin/nut-m6","name":"ship","params":{"quantity":-1}}"#
        )),
        "invalid_params"
    );
    assert_eq!(
        rejection_code(engine.apply(
            "cli",
            br#"{"path":"stock/berlin/nut-m6","name":"ship","params":{"quantity":1,"extra":true}}"#
        )),
        "invalid_params"
    );
    assert_eq!(
        rejection_code(engine.execute("cli", "stock/berlin", &Receive { quantity: 1 })),
        "not_a_stock_path"
    );
    assert_eq!(on_hand(&engine, &path), 2);
    // Every rejection was recorded as a failed command; nothing reached the history.
    assert_eq!(engine.depot().failures().unwrap().len(), 7);
}

#[test]
fn i16_14g_inventory_concurrent_shipments_never_overdraw() {
    let tmp = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::open_or_init(tmp.path().join(".retro")).unwrap());
    // Eight threads on one aggregate: on a loaded machine one can lose the default 16 rounds
    // in a row (a conflict, as documented); this test is about never overdrawing, so it lets
    // each command retry longer.
    let engine = Engine::new(depot, inventory::manifest().unwrap()).with_max_attempts(256);
    let path = stock_path("berlin", "washer").unwrap();
    engine
        .execute("cli", &path, &Receive { quantity: 20 })
        .unwrap();
    // Eight writers each try to ship 1 unit five times: 40 attempts for 20 units.
    let shipped: u64 = (0..8)
        .map(|_| {
            let engine = engine.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                let mut shipped = 0;
                for _ in 0..5 {
                    match engine.execute("cli", &path, &Ship { quantity: 1 }) {
                        Ok(_) => shipped += 1,
                        Err(ApplyError::Rejected { error, .. }) => {
                            assert_eq!(error.code, "insufficient_stock")
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                shipped
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(shipped, 20);
    assert_eq!(on_hand(&engine, &path), 0);
    // Replaying the stored history: never below zero at any point.
    let mut stock: i64 = 0;
    for record in engine
        .depot()
        .partition_events(&PartitionName::new(&path).unwrap())
        .unwrap()
    {
        let data: serde_json::Value = serde_json::from_slice(record.event.data()).unwrap();
        let quantity = data["quantity"].as_i64().unwrap();
        match record.event.name().as_str() {
            "Received" => stock += quantity,
            "Shipped" => stock -= quantity,
            other => panic!("unexpected event {other}"),
        }
        assert!(stock >= 0, "negative at version {}", record.version);
    }
}

#[test]
fn i16_14g_inventory_moves_stock_between_warehouses_in_one_checkpoint() {
    let engine = engine();
    let berlin = stock_path("berlin", "bolt").unwrap();
    let paris = stock_path("paris", "bolt").unwrap();
    engine
        .execute("cli", &berlin, &Receive { quantity: 50 })
        .unwrap();
    let moved = engine
        .execute(
            "cli",
            &berlin,
            &Move {
                to: paris.clone(),
                quantity: 20,
            },
        )
        .unwrap();
    assert_eq!(moved.partitions, [berlin.clone(), paris.clone()]);
    assert_eq!(moved.events, 2);
    assert_eq!(
        (on_hand(&engine, &berlin), on_hand(&engine, &paris)),
        (30, 20)
    );
    // Both events are in the one checkpoint's affix.
    let depot = engine.depot();
    let checkpoint = depot.read_checkpoint(&moved.checkpoint).unwrap();
    let affix = depot.read_affix(&checkpoint.affix()).unwrap();
    let partitions: Vec<String> = affix.partitions().map(|(p, _)| p.to_string()).collect();
    assert_eq!(partitions, [berlin.clone(), paris.clone()]);
    let received = depot
        .partition_events(&PartitionName::new(&paris).unwrap())
        .unwrap();
    assert_eq!(received[0].checkpoint, moved.checkpoint);
    assert_eq!(
        received[0].event.data(),
        br#"{"from":"stock/berlin/bolt","quantity":20}"#
    );

    // A move of more than is on hand, to the same warehouse, or to another item: refused, and
    // neither side changes.
    let head = depot.head().unwrap();
    for (command, code) in [
        (
            Move {
                to: paris.clone(),
                quantity: 31,
            },
            "insufficient_stock",
        ),
        (
            Move {
                to: berlin.clone(),
                quantity: 1,
            },
            "same_warehouse",
        ),
        (
            Move {
                to: stock_path("paris", "nut").unwrap(),
                quantity: 1,
            },
            "other_item",
        ),
        (
            Move {
                to: "accounts/alice".to_owned(),
                quantity: 1,
            },
            "not_a_stock_path",
        ),
    ] {
        assert_eq!(
            rejection_code(engine.execute("cli", &berlin, &command)),
            code
        );
    }
    assert_eq!(depot.head().unwrap(), head);
    assert_eq!(
        (on_hand(&engine, &berlin), on_hand(&engine, &paris)),
        (30, 20)
    );
}

#[test]
fn i16_14g_inventory_rejections_and_a_bad_history_are_typed() {
    let rejection = StockRejection::InsufficientStock {
        path: "stock/a/b".to_owned(),
        on_hand: 1,
        requested: 2,
    };
    let error: engine::DomainError = rejection.into();
    assert_eq!(error.code, "insufficient_stock");
    assert_eq!(
        error.message,
        "stock/a/b has 1 unit(s) on hand, 2 asked for"
    );
    assert!(stock_path("a/b", "c").is_err());
    assert!(stock_path("a", "").is_err());

    // A stored `Shipped` whose quantity is not a number: an error, never skipped.
    let engine = engine();
    let path = stock_path("berlin", "gear").unwrap();
    let mut request = CommitRequest::new(
        None,
        vec![(
            PartitionName::new(&path).unwrap(),
            Event::new(EventName::new("Shipped").unwrap(), r#"{"quantity":"lots"}"#),
        )],
        "import",
        r#"{"name":"import"}"#,
    );
    request.base = Base::Tip;
    engine.depot().commit(request).unwrap();
    let err = engine.load::<Stock>(&path).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Internal);
    let err = engine
        .execute("cli", &path, &Receive { quantity: 1 })
        .unwrap_err();
    assert!(matches!(err, ApplyError::Event(_)), "{err:?}");

    // A history that does not add up (more out than in) is refused by every command.
    let other = stock_path("berlin", "cog").unwrap();
    let mut request = CommitRequest::new(
        None,
        vec![(
            PartitionName::new(&other).unwrap(),
            Event::new(EventName::new("Shipped").unwrap(), r#"{"quantity":5}"#),
        )],
        "import",
        r#"{"name":"import"}"#,
    );
    request.base = Base::Tip;
    engine.depot().commit(request).unwrap();
    assert!(engine.load::<Stock>(&other).unwrap().state.inconsistent);
    assert_eq!(
        rejection_code(engine.execute("cli", &other, &Receive { quantity: 1 })),
        "inconsistent_history"
    );
    // Typed events are stored under their variant's name.
    let stored = engine::Events::to_event(&StockEvent::Received { quantity: 2 }).unwrap();
    assert_eq!(stored.name().as_str(), "Received");
    assert_eq!(stored.data(), br#"{"quantity":2}"#);
}

#[test]
fn i16_14g_inventory_demo_binary_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("depot");
    let run = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = run(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("stock/berlin/bolt-m6: 70 on hand (2 events)"),
        "{text}"
    );
    assert!(
        text.contains("stock/paris/bolt-m6: 20 on hand (2 events)"),
        "{text}"
    );
    assert!(text.contains("rejected: insufficient_stock: "), "{text}");
    // Again, in the same depot: it opens it and adds to the history.
    let out = run(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("stock/berlin/bolt-m6: 140 on hand (4 events)"),
        "{text}"
    );
    // No argument: usage, exit 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inventory"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn i16_14e_stock_movements_stream_to_async_code() {
    use engine::stream::DeliveryStream;
    use engine::Delivery;

    let tmp = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::open_or_init(tmp.path().join(".retro")).unwrap());
    let engine = Engine::new(depot, inventory::manifest().unwrap());
    let berlin = stock_path("berlin", "bolt").unwrap();
    let paris = stock_path("paris", "bolt").unwrap();
    let start = engine
        .execute("cli", &berlin, &Receive { quantity: 9 })
        .unwrap();
    let mut stream = DeliveryStream::spawn(
        engine
            .subscribe("stock/paris/**", Some(start.checkpoint))
            .unwrap(),
    )
    .unwrap();
    let writer = engine.clone();
    let (to, from) = (paris.clone(), berlin.clone());
    let moved = tokio::task::spawn_blocking(move || {
        writer.execute("cli", &from, &Move { to, quantity: 4 })
    })
    .await
    .unwrap()
    .unwrap();
    // Woken by the commit: the checkpoint, with the one matching event (Paris's side).
    match stream.next().await {
        Some(Ok(Delivery::Checkpoint { id, events, .. })) => {
            assert_eq!(id, moved.checkpoint);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].partition.as_str(), paris);
        }
        other => panic!("expected the move, got {other:?}"),
    }
    drop(stream);
}

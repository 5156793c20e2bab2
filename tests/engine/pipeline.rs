//! The apply pipeline: success, every error with the depot unchanged, failure recording,
//! sessions, anonymous aggregates, multi-partition affixes.

use std::sync::Arc;

use depot::{Depot, HistoryOrder, Object, PartitionName, RefName};
use engine::{example, ApplyError, Engine};

use crate::common::*;

fn p(name: &str) -> PartitionName {
    PartitionName::new(name).unwrap()
}

#[test]
fn a_command_becomes_one_checkpoint_with_the_payload_as_message() {
    let (_dir, engine) = bank();
    let session = engine.start_session().unwrap();
    let applied = engine
        .apply(
            &session,
            br#"{"path":"accounts/alice", "name":"open", "params":{"owner":"Alice"}}"#,
        )
        .unwrap();
    assert_eq!(applied.events, 2);
    assert_eq!(
        applied.partitions,
        vec!["accounts/alice", "registry/accounts"]
    );
    assert_eq!(applied.attempts, 1);
    let depot = engine.depot();
    let checkpoint = depot.read_checkpoint(&applied.checkpoint).unwrap();
    assert_eq!(
        checkpoint.message(),
        br#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#
    );
    assert_eq!(checkpoint.session(), session);
    assert!(checkpoint.date().is_some());
    let affix = depot.read_affix(&checkpoint.affix()).unwrap();
    assert_eq!(
        affix.partitions().count(),
        2,
        "one affix across two partitions"
    );
    // Both camelCase styles name the same command.
    engine
        .apply(
            &session,
            br#"{"path":"accounts/alice","name":"Deposit","params":{"amount":5}}"#,
        )
        .unwrap();
    let events = depot.partition_events(&p("accounts/alice")).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event.name().to_string())
            .collect::<Vec<_>>(),
        vec!["AccountOpened", "Deposited"]
    );
}

#[test]
fn every_bad_command_is_refused_with_the_depot_unchanged() {
    let (dir, engine) = bank();
    let session = engine.start_session().unwrap();
    engine
        .apply(
            &session,
            br#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
        )
        .unwrap();
    let before = snapshot(&depot_dir(&dir));
    let cases: &[(&[u8], &str)] = &[
        (b"{not json", "command is not valid JSON"),
        (b"[]", "command must be a JSON object"),
        (br#"{"path":"accounts/a"}"#, "command has no \"name\""),
        (br#"{"name":"open"}"#, "command has no \"path\""),
        (br#"{"path":"accounts/../x","name":"open"}"#, "command path 'accounts/../x' is invalid"),
        (br#"{"path":"accounts/a","name":"open","params":7}"#, "command \"params\" must be a JSON object, found a number"),
        (br#"{"path":"users/1","name":"open"}"#, "no aggregate kind matches path 'users/1' (known kinds: accounts)"),
        (br#"{"path":"accounts/a","name":"close"}"#, "aggregate kind 'accounts' has no command 'close' (known: deposit, open, transfer, withdraw)"),
    ];
    for (payload, expected) in cases {
        let err = engine.apply(&session, payload).unwrap_err();
        assert!(
            err.to_string().starts_with(expected),
            "{}: got '{err}'",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(
            snapshot(&depot_dir(&dir)),
            before,
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    let err = engine
        .apply(
            "bad session",
            br#"{"path":"accounts/a","name":"deposit","params":{"amount":1}}"#,
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::BadSession(_)));
    assert_eq!(snapshot(&depot_dir(&dir)), before);
}

#[test]
fn a_rejected_command_moves_no_ref_and_is_recorded_as_a_failure() {
    let (dir, engine) = bank();
    let session = engine.start_session().unwrap();
    engine
        .apply(
            &session,
            br#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#,
        )
        .unwrap();
    let head = engine.depot().head().unwrap();
    let refs_before = std::fs::read(depot_dir(&dir).join("refs/heads/master")).unwrap();
    let err = engine
        .apply(
            &session,
            br#"{"path":"accounts/a","name":"withdraw","params":{"amount":10}}"#,
        )
        .unwrap_err();
    let ApplyError::Rejected { error, recorded } = &err else {
        panic!("expected a rejection, got {err}");
    };
    assert_eq!(error.code, "insufficient_funds");
    assert_eq!(engine.depot().head().unwrap(), head);
    assert_eq!(
        std::fs::read(depot_dir(&dir).join("refs/heads/master")).unwrap(),
        refs_before
    );
    let recorded = recorded.expect("the failure is recorded");
    assert_eq!(engine.depot().failures().unwrap(), vec![recorded]);
    let failed = engine.depot().read_checkpoint(&recorded).unwrap();
    assert_eq!(
        failed.message(),
        br#"{"path":"accounts/a","name":"withdraw","params":{"amount":10}}"#
    );
    assert_eq!(failed.session(), session);
    assert_eq!(failed.parents(), head.as_slice());
    assert!(failed
        .field("error")
        .unwrap()
        .starts_with("insufficient_funds: cannot withdraw 10"));
    let report = engine.depot().fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.failed_commands, 1);
    assert!(
        report.unreachable.is_empty(),
        "failed commands are not unreachable junk"
    );
}

#[test]
fn sessions_are_partitions_and_commands_can_require_a_live_one() {
    let mut manifest = example::bank_manifest().unwrap();
    manifest
        .aggregate::<example::Account>("vault")
        .unwrap()
        .command_in_session("open", |_, ctx| {
            ctx.emit(&example::AccountOpened {
                owner: ctx.session().to_owned(),
            })
        })
        .unwrap();
    let (_dir, engine) = native_engine(manifest);
    let err = engine
        .apply("nobody", br#"{"path":"vault/1","name":"open"}"#)
        .unwrap_err();
    assert!(matches!(err, ApplyError::SessionRequired { .. }), "{err}");
    assert!(err.to_string().contains("retro session start"));
    let session = engine.start_session().unwrap();
    assert!(engine.session_is_live(&session).unwrap());
    let events = engine
        .depot()
        .partition_events(&p(&format!("session/{session}")))
        .unwrap();
    assert_eq!(events[0].event.name().as_str(), "SessionStarted");
    engine
        .apply(&session, br#"{"path":"vault/1","name":"open"}"#)
        .unwrap();
    engine.end_session(&session).unwrap();
    assert!(!engine.session_is_live(&session).unwrap());
    assert!(engine
        .apply(&session, br#"{"path":"vault/2","name":"open"}"#)
        .is_err());
}

#[test]
fn an_anonymous_aggregate_gets_its_id_from_the_id_function() {
    let depot = Arc::new(Depot::in_memory().unwrap());
    let counter = std::sync::atomic::AtomicU64::new(100);
    let engine = Engine::new(depot, example::bank_manifest().unwrap()).with_id_fn(move || {
        counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string()
    });
    let applied = engine
        .apply(
            "s1",
            br#"{"path":"accounts","name":"open","params":{"owner":"New"}}"#,
        )
        .unwrap();
    assert_eq!(applied.path, "accounts/100");
    let message = engine.depot().read_checkpoint(&applied.checkpoint).unwrap();
    assert!(String::from_utf8_lossy(message.message()).contains("\"path\":\"accounts/100\""));
}

#[test]
fn transfers_read_another_aggregate_and_write_both_in_one_affix() {
    let (_dir, engine) = bank();
    for command in example::DEMO_COMMANDS.iter().take(4) {
        engine.apply("s1", command.as_bytes()).unwrap();
    }
    let depot = engine.depot();
    let head = depot.head().unwrap().unwrap();
    let checkpoint = depot.read_checkpoint(&head).unwrap();
    let affix = depot.read_affix(&checkpoint.affix()).unwrap();
    let partitions: Vec<_> = affix.partitions().map(|(p, _)| p.to_string()).collect();
    assert_eq!(partitions, vec!["accounts/alice", "accounts/bob"]);
    let err = engine
        .apply("s1", br#"{"path":"accounts/alice","name":"transfer","params":{"to":"accounts/nobody","amount":1}}"#)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("account accounts/nobody is not open"),
        "{err}"
    );
    let mut count = 0;
    depot
        .walk(head, HistoryOrder::FirstParent, |_, c| {
            assert!(matches!(
                depot.read_decoded(&c.affix()).unwrap(),
                Object::Affix(_)
            ));
            count += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(count, 4);
    let _ = RefName::master();
}

fn rejection_code(err: &ApplyError) -> &str {
    match err {
        ApplyError::Rejected { error, .. } => &error.code,
        other => panic!("expected a rejection, got {other}"),
    }
}

#[test]
fn d7_deposit_past_u64_max_is_rejected_not_wrapped() {
    let (_dir, engine) = bank();
    let apply = |command: &str| engine.apply("s1", command.as_bytes());
    apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#).unwrap();
    apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":18446744073709551615}}"#)
        .unwrap();
    let head = engine.depot().head().unwrap();
    let err = apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":2}}"#).unwrap_err();
    assert_eq!(rejection_code(&err), "balance_overflow");
    assert!(
        err.to_string().contains("cannot credit 2 to accounts/a"),
        "{err}"
    );
    assert_eq!(engine.depot().head().unwrap(), head, "nothing committed");
    // The balance is still exactly u64::MAX (not 1): all of it can be withdrawn, and no more.
    let err = apply(
        r#"{"path":"accounts/a","name":"withdraw","params":{"amount":18446744073709551616}}"#,
    )
    .unwrap_err();
    assert!(matches!(err, ApplyError::Rejected { .. }), "{err}");
    apply(r#"{"path":"accounts/a","name":"withdraw","params":{"amount":18446744073709551615}}"#)
        .unwrap();
    let err =
        apply(r#"{"path":"accounts/a","name":"withdraw","params":{"amount":1}}"#).unwrap_err();
    assert_eq!(rejection_code(&err), "insufficient_funds");
    assert!(err.to_string().contains("the balance is 0"), "{err}");
}

#[test]
fn d7_transfer_that_would_overflow_the_receiver_is_rejected() {
    let (_dir, engine) = bank();
    let apply = |command: &str| engine.apply("s1", command.as_bytes());
    apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#).unwrap();
    apply(r#"{"path":"accounts/b","name":"open","params":{"owner":"B"}}"#).unwrap();
    apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":10}}"#).unwrap();
    apply(r#"{"path":"accounts/b","name":"deposit","params":{"amount":18446744073709551610}}"#)
        .unwrap();
    let head = engine.depot().head().unwrap();
    let err =
        apply(r#"{"path":"accounts/a","name":"transfer","params":{"to":"accounts/b","amount":6}}"#)
            .unwrap_err();
    assert_eq!(rejection_code(&err), "balance_overflow");
    assert!(
        err.to_string().contains("cannot credit 6 to accounts/b"),
        "{err}"
    );
    assert_eq!(engine.depot().head().unwrap(), head);
    // Up to the limit is fine.
    apply(r#"{"path":"accounts/a","name":"transfer","params":{"to":"accounts/b","amount":5}}"#)
        .unwrap();
}

#[test]
fn d7_a_history_that_overflows_is_refused_not_wrapped() {
    // Only an import can bring such a history: two deposits of u64::MAX.
    let (_dir, engine) = bank();
    let depot = engine.depot();
    let deposit = || {
        (
            p("accounts/a"),
            depot::Event::new(
                depot::EventName::new("Deposited").unwrap(),
                br#"{"amount":18446744073709551615}"#.to_vec(),
            ),
        )
    };
    let opened = (
        p("accounts/a"),
        depot::Event::new(
            depot::EventName::new("AccountOpened").unwrap(),
            br#"{"owner":"A"}"#.to_vec(),
        ),
    );
    let mut request = depot::CommitRequest::new(
        None,
        vec![opened, deposit(), deposit()],
        "import",
        b"{}".to_vec(),
    );
    request.base = depot::Base::Tip;
    depot.commit(request).unwrap();
    let head = depot.head().unwrap();
    for command in [
        r#"{"path":"accounts/a","name":"deposit","params":{"amount":1}}"#,
        r#"{"path":"accounts/a","name":"withdraw","params":{"amount":1}}"#,
    ] {
        let err = engine.apply("s1", command.as_bytes()).unwrap_err();
        assert_eq!(rejection_code(&err), "balance_overflow", "{command}");
        assert!(
            err.to_string().contains("overflows a 64-bit balance"),
            "{err}"
        );
    }
    assert_eq!(depot.head().unwrap(), head);
}

#[test]
fn i16_1_rust_handlers_see_the_manifests_spelling_of_the_command() {
    #[derive(Default)]
    struct Nothing;
    impl engine::Aggregate for Nothing {
        fn apply(&mut self, _: &engine::RecordedEvent) {}
    }
    let mut manifest = engine::Manifest::new();
    manifest
        .aggregate::<Nothing>("things")
        .unwrap()
        .command("makeThing", |_, ctx| {
            let data = serde_json::json!({ "name": ctx.command().name() });
            ctx.emit_json("things/t", "Made", &data)
        })
        .unwrap();
    let (_dir, engine) = native_engine(manifest);
    engine
        .apply("s1", br#"{"path":"things/t","name":"MakeThing"}"#)
        .unwrap();
    let events = engine.depot().partition_events(&p("things/t")).unwrap();
    assert_eq!(events[0].event.data(), br#"{"name":"makeThing"}"#);
}

#[test]
fn i16_3_a_command_that_emits_nothing_is_told_apart_and_writes_nothing() {
    #[derive(Default)]
    struct Nothing;
    impl engine::Aggregate for Nothing {
        fn apply(&mut self, _: &engine::RecordedEvent) {}
    }
    let mut manifest = engine::Manifest::new();
    manifest
        .aggregate::<Nothing>("things")
        .unwrap()
        .command("noop", |_, _| Ok(()))
        .unwrap();
    let (dir, engine) = native_engine(manifest);
    let session = engine.start_session().unwrap();
    let head = engine.depot().head().unwrap();
    let before = snapshot(&dir.path().join("d"));
    let err = engine
        .apply(&session, br#"{"path":"things/t","name":"noop"}"#)
        .unwrap_err();
    match &err {
        ApplyError::NothingToWrite {
            path,
            command,
            head: seen,
        } => {
            assert_eq!((path.as_str(), command.as_str()), ("things/t", "noop"));
            assert_eq!(*seen, head);
        }
        other => panic!("expected NothingToWrite, got {other}"),
    }
    assert_eq!(engine.depot().head().unwrap(), head);
    assert_eq!(snapshot(&dir.path().join("d")), before);
    assert!(engine.depot().failures().unwrap().is_empty());
}

#[test]
fn i16_7_ending_an_ended_session_is_idempotent_and_an_unknown_one_not_found() {
    let (_dir, engine) = bank();
    let session = engine.start_session().unwrap();
    assert_eq!(
        engine.end_session(&session).unwrap(),
        engine::SessionEnd::Ended
    );
    let head = engine.depot().head().unwrap();
    assert_eq!(
        engine.end_session(&session).unwrap(),
        engine::SessionEnd::AlreadyEnded
    );
    assert_eq!(engine.depot().head().unwrap(), head, "nothing written");
    let err = engine.end_session("never-started").unwrap_err();
    assert!(matches!(err, ApplyError::UnknownSession(_)), "{err}");
    assert_eq!(err.class(), depot::ErrorClass::NotFound);
    assert_eq!(engine.depot().head().unwrap(), head);
}

//! The example bank's rules as given/when/then cases (`engine::testing`), and the same helper
//! over exec handlers (the fixture domain in `fixtures/domain`).

use serde_json::json;

use engine::example::bank_manifest;
use engine::exec;
use engine::testing::{command, event, parse_spec, Mismatch, TestDomain, Then};
use engine::Manifest;

use crate::common::fixtures;

fn bank() -> TestDomain {
    TestDomain::new(bank_manifest().unwrap())
}

fn opened(path: &str) -> engine::testing::TestEvent {
    event(path, "AccountOpened", json!({"owner": "Alice"}))
}

#[test]
fn opening_an_account_lists_it_in_the_registry() {
    bank()
        .given([])
        .when(command("accounts/a", "open", json!({"owner": "Alice"})))
        .then_events([
            // Listed in any order across partitions: the checkpoint sorts them.
            event(
                "registry/accounts",
                "AccountListed",
                json!({"account": "accounts/a"}),
            ),
            event("accounts/a", "AccountOpened", json!({"owner": "Alice"})),
        ]);
}

#[test]
fn a_new_aggregate_gets_a_predictable_id() {
    bank()
        .given([])
        .when(command("accounts", "open", json!({"owner": "Alice"})))
        .then_events([
            event("accounts/new-1", "AccountOpened", json!({"owner": "Alice"})),
            event(
                "registry/accounts",
                "AccountListed",
                json!({"account": "accounts/new-1"}),
            ),
        ]);
}

#[test]
fn a_deposit_is_recorded() {
    bank()
        .given([opened("accounts/a")])
        .when(command("accounts/a", "Deposit", json!({"amount": 50})))
        .then_events([event("accounts/a", "Deposited", json!({"amount": 50}))]);
}

#[test]
fn an_overdraft_is_rejected() {
    bank()
        .given([
            opened("accounts/a"),
            event("accounts/a", "Deposited", json!({"amount": 10})),
            event("accounts/a", "Withdrawn", json!({"amount": 4})),
        ])
        .when(command("accounts/a", "withdraw", json!({"amount": 7})))
        .then_rejected("insufficient_funds");
}

#[test]
fn an_overflowing_deposit_is_rejected() {
    bank()
        .given([
            opened("accounts/a"),
            event("accounts/a", "Deposited", json!({"amount": u64::MAX})),
        ])
        .when(command("accounts/a", "deposit", json!({"amount": 1})))
        .then_rejected("balance_overflow");
}

#[test]
fn a_transfer_emits_to_both_accounts_and_reads_the_other() {
    let bank = bank();
    let given = [
        opened("accounts/b"),
        event("accounts/b", "Deposited", json!({"amount": 30})),
        opened("accounts/a"),
    ];
    bank.given(given.clone())
        .when(command(
            "accounts/b",
            "transfer",
            json!({"to": "accounts/a", "amount": 30}),
        ))
        .then_events([
            event(
                "accounts/b",
                "TransferSent",
                json!({"to": "accounts/a", "amount": 30}),
            ),
            event(
                "accounts/a",
                "TransferReceived",
                json!({"from": "accounts/b", "amount": 30}),
            ),
        ]);
    // The receiver's history counts too: it must be open.
    bank.given(given[..2].to_vec())
        .when(command(
            "accounts/b",
            "transfer",
            json!({"to": "accounts/a", "amount": 1}),
        ))
        .then_rejected("not_open");
}

#[test]
fn an_unknown_command_is_an_error_not_a_rejection() {
    bank()
        .given([])
        .when(command("accounts/a", "close", json!({})))
        .then_error("has no command 'close'");
}

#[test]
fn a_command_needing_a_session_runs_in_the_started_one() {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<engine::example::Account>("vault")
        .unwrap()
        .command_in_session("open", |_, ctx| {
            let session = ctx.session().to_owned();
            ctx.emit_json(
                ctx.path().clone().as_str(),
                "Opened",
                &json!({ "session": session }),
            )
        })
        .unwrap();
    let vault = TestDomain::new(manifest);
    vault
        .given([])
        .when(command("vault/1", "open", json!({})).in_session("s1"))
        .then_events([event("vault/1", "Opened", json!({"session": "s1"}))]);
    vault
        .given([])
        .when(command("vault/1", "open", json!({})))
        .then_error("needs a live session");
}

#[test]
fn check_reports_the_mismatch_instead_of_panicking() {
    let mismatch = bank()
        .given([opened("accounts/a")])
        .when(command("accounts/a", "deposit", json!({"amount": 50})))
        .check(&Then::Events(vec![event(
            "accounts/a",
            "Deposited",
            json!({"amount": 60}),
        )]))
        .unwrap_err();
    let Mismatch::Events(diff) = &mismatch else {
        panic!("{mismatch:?}")
    };
    assert_eq!(diff.index, 0);
    assert_eq!(diff.fields.len(), 1);
    assert_eq!(diff.fields[0].path, "events[0].data.amount");
    assert_eq!(
        (
            diff.fields[0].expected.clone(),
            diff.fields[0].actual.clone()
        ),
        (Some(json!(60)), Some(json!(50)))
    );
    assert!(mismatch
        .report()
        .contains("events[0].data.amount: expected 60, actual 50"));
}

#[test]
#[should_panic(
    expected = "expected a rejection 'insufficient_funds', but the command emitted 1 event(s)"
)]
fn then_rejected_panics_with_the_report_when_the_command_passes() {
    bank()
        .given([
            opened("accounts/a"),
            event("accounts/a", "Deposited", json!({"amount": 9})),
        ])
        .when(command("accounts/a", "withdraw", json!({"amount": 9})))
        .then_rejected("insufficient_funds");
}

#[test]
fn given_events_with_bad_names_are_invalid_cases() {
    let mismatch = bank()
        .given([event("../x", "E", json!({}))])
        .when(command("accounts/a", "deposit", json!({"amount": 1})))
        .check(&Then::Rejected("not_open".to_owned()))
        .unwrap_err();
    assert!(matches!(mismatch, Mismatch::Invalid(_)), "{mismatch:?}");
    assert!(
        mismatch.report().contains("given[0].partition"),
        "{}",
        mismatch.report()
    );
}

#[test]
fn the_shipped_bank_spec_passes() {
    let spec = std::fs::read(fixtures().join("../specs/bank.jsonl")).unwrap();
    let cases = parse_spec(&spec).unwrap();
    assert!(cases.len() >= 5, "{} cases", cases.len());
    let bank = bank();
    for case in &cases {
        if let Err(mismatch) = bank.check(case) {
            panic!("{}: {}", case.name, mismatch.report());
        }
    }
}

fn exec_domain() -> TestDomain {
    let mut manifest = Manifest::new();
    exec::load_manifest(&fixtures().join("manifest.json"), &mut manifest).unwrap();
    exec::load_manifest(&fixtures().join("misbehaving.json"), &mut manifest).unwrap();
    TestDomain::new(manifest)
}

#[test]
fn exec_handlers_are_tested_the_same_way() {
    let domain = exec_domain();
    domain
        .given([event(
            "accounts/a",
            "AccountOpened",
            json!({"owner": "A", "currency": "EUR"}),
        )])
        .when(command("accounts/a", "deposit", json!({"amount": 5})))
        .then_events([event("accounts/a", "Deposited", json!({"amount": 5}))]);
    domain
        .given([event(
            "accounts/a",
            "AccountOpened",
            json!({"owner": "A", "currency": "EUR"}),
        )])
        .when(command("accounts/a", "withdraw", json!({"amount": 5})))
        .then_rejected("insufficient_funds");
    domain
        .given([])
        .when(command("bad/1", "garbage", json!({})))
        .then_error("handler");
    let mismatch = domain
        .given([])
        .when(command("notes/1", "add", json!({"text": "hi"})))
        .check(&Then::Events(vec![event(
            "notes/1",
            "NoteAdded",
            json!({"text": "ho"}),
        )]))
        .unwrap_err();
    assert!(
        mismatch
            .report()
            .contains("events[0].data.text: expected \"ho\", actual \"hi\""),
        "{}",
        mismatch.report()
    );
}

//! Golden outputs: the fixed history of `fixtures/cli/history.jsonl` imported into a fresh depot
//! gives stable ids, so these outputs are compared byte for byte with
//! `fixtures/cli/<command>/<case>.txt`. `RETRO_BLESS=1 cargo test -p retro-cli --test cli golden`
//! rewrites them.

use crate::common::*;

fn check(depot: &TestDepot, name: &str, args: &[&str]) {
    golden(name, &depot.ok(args));
}

#[test]
fn golden_outputs() {
    let depot = TestDepot::with_history();
    check(&depot, "log/default", &["log"]);
    check(&depot, "log/oneline", &["log", "--oneline"]);
    check(
        &depot,
        "log/oneline-reverse-partition",
        &["log", "--oneline", "--reverse", "--partition", "accounts/*"],
    );
    check(&depot, "log/json", &["log", "--json"]);
    check(&depot, "show/head", &["show", "HEAD"]);
    check(&depot, "show/head-1", &["show", "HEAD~1"]);
    check(&depot, "show/json", &["show", "--json", "HEAD~3"]);
    check(&depot, "events/all", &["events"]);
    check(
        &depot,
        "events/accounts-since",
        &["events", "accounts/*", "--since", "HEAD~5"],
    );
    check(&depot, "events/json", &["events", "--json", "notes/**"]);
    check(&depot, "partitions/all", &["partitions"]);
    check(&depot, "refs/all", &["refs"]);
    check(&depot, "fsck/clean", &["fsck"]);
    check(&depot, "export/all", &["export"]);

    let head = json(depot.ok(&["show", "--json", "HEAD~1"]).trim());
    let checkpoint = head["checkpoint"].as_str().unwrap();
    let affix = head["affix"].as_str().unwrap();
    let event = head["events"][0]["event"].as_str().unwrap();
    let text_event = head["events"][1]["event"].as_str().unwrap();
    check(
        &depot,
        "cat-object/checkpoint",
        &["cat-object", "-p", checkpoint],
    );
    check(
        &depot,
        "cat-object/checkpoint-json-message",
        &["cat-object", "-p", "HEAD"],
    );
    check(&depot, "cat-object/affix", &["cat-object", "-p", affix]);
    check(&depot, "cat-object/event", &["cat-object", "-p", event]);
    check(
        &depot,
        "cat-object/event-text",
        &["cat-object", "-p", text_event],
    );
}

#[test]
fn golden_ids_do_not_depend_on_the_batch_size() {
    // One commit per fsync or all in one: the same history, the same ids.
    let depot = TestDepot::plain();
    let file = history_file();
    depot.ok(&["import", "--batch", "1", file.to_str().unwrap()]);
    golden("log/oneline", &depot.ok(&["log", "--oneline"]));
}

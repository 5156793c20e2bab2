//! branch, switch, merge (fast-forward, disjoint merge checkpoint, replay by commands, replay
//! stopped by a rejection with nothing written, unrelated histories, unknown refs) and
//! `log --graph`.

use crate::common::*;

const OPEN_ALICE: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const OPEN_BOB: &str = r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#;

fn deposit(who: &str, amount: u64) -> String {
    format!(r#"{{"path":"accounts/{who}","name":"deposit","params":{{"amount":{amount}}}}}"#)
}

fn withdraw(who: &str, amount: u64) -> String {
    format!(r#"{{"path":"accounts/{who}","name":"withdraw","params":{{"amount":{amount}}}}}"#)
}

fn id_of(depot: &TestDepot, rev: &str) -> String {
    json(depot.ok(&["show", "--json", rev]).trim())["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn event_names(depot: &TestDepot, glob: &str) -> Vec<String> {
    json_lines(&depot.ok(&["events", "--json", glob]))
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e["partition"].as_str().unwrap(),
                e["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// master: alice and bob opened; `feature` branched there; HEAD back on master.
fn two_accounts() -> TestDepot {
    let depot = TestDepot::new();
    depot.apply(OPEN_ALICE);
    depot.apply(OPEN_BOB);
    depot.ok(&["branch", "feature"]);
    depot
}

#[test]
fn branch_creates_lists_and_switch_moves_head() {
    let depot = two_accounts();
    let head = id_of(&depot, "HEAD");
    let short = &head[7..19];
    assert_eq!(
        depot.ok(&["branch", "--list"]),
        format!("  feature {short}\n* master {short}\n")
    );
    depot.ok(&["switch", "feature"]);
    assert!(depot
        .ok(&["refs"])
        .starts_with("ref: refs/heads/feature HEAD\n"));
    let listed = json_lines(&depot.ok(&["branch", "--list", "--json"]));
    assert_eq!(listed[0]["name"], "feature");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[1]["current"], false);
    // A commit on the current branch moves it, not master.
    let on_feature = depot.apply(&deposit("alice", 5));
    assert_eq!(id_of(&depot, "refs/heads/feature"), on_feature);
    assert_eq!(id_of(&depot, "master"), head);
    // A branch at another revision, then switch -c.
    depot.ok(&["branch", "old", "HEAD~1"]);
    assert_eq!(id_of(&depot, "refs/heads/old"), head);
    depot.ok(&["switch", "-c", "experiment"]);
    assert_eq!(id_of(&depot, "HEAD"), on_feature);
    assert!(depot
        .ok(&["refs"])
        .starts_with("ref: refs/heads/experiment HEAD\n"));
}

#[test]
fn bad_branch_names_existing_branches_and_unknown_refs_are_refused() {
    let depot = two_accounts();
    for bad in ["a..b", "-x/", "with space", "HEAD", "refs/tags/x", "a.lock"] {
        depot.fails_unchanged(&["branch", "--", bad], 1);
    }
    let run = depot.fails_unchanged(&["branch", "feature"], 3);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let run = depot.fails_unchanged(&["branch", "x", "nosuchrev"], 1);
    assert!(run.stderr.contains("nosuchrev"), "{}", run.stderr);
    let run = depot.fails_unchanged(&["switch", "nosuch"], 1);
    assert!(run.stderr.contains("no such ref"), "{}", run.stderr);
    let run = depot.fails_unchanged(&["merge", "nosuch"], 1);
    assert!(run.stderr.contains("nosuch"), "{}", run.stderr);
    depot.fails_unchanged(&["merge", "--session", "a b", "feature"], 1);
    depot.usage(&["branch"]);
    depot.usage(&["branch", "--list", "x"]);
}

#[test]
fn merge_fast_forwards_and_then_is_up_to_date() {
    let depot = two_accounts();
    depot.ok(&["switch", "feature"]);
    let tip = depot.apply(&deposit("alice", 5));
    depot.ok(&["switch", "master"]);
    let out = depot.ok(&["merge", "feature", "--json"]);
    let body = json(out.trim());
    assert_eq!(body["outcome"], "fast-forward");
    assert_eq!(body["to"], tip.as_str());
    assert_eq!(id_of(&depot, "HEAD"), tip);
    assert_eq!(depot.ok(&["merge", "feature"]), "already up to date\n");
    // An ancestor of the branch is up to date too.
    assert_eq!(depot.ok(&["merge", "HEAD~1"]), "already up to date\n");
}

#[test]
fn disjoint_partitions_merge_as_one_checkpoint_with_two_parents() {
    let depot = two_accounts();
    let ours = depot.apply(&deposit("alice", 10));
    depot.ok(&["switch", "feature"]);
    let theirs1 = depot.apply(&deposit("bob", 20));
    let theirs2 = depot.apply(&deposit("bob", 30));
    depot.ok(&["switch", "master"]);
    let body = json(depot.ok(&["merge", "feature", "--json"]).trim());
    assert_eq!(body["outcome"], "merged", "{body}");
    assert_eq!(body["events"], 2);
    assert_eq!(body["partitions"], serde_json::json!(["accounts/bob"]));
    let merge = id_of(&depot, "HEAD");
    let raw = depot.ok(&["cat-object", "-p", "HEAD"]);
    assert!(
        raw.contains(&format!("parent {ours}\nparent {theirs2}\n")),
        "{raw}"
    );
    assert!(raw.contains("\nmerge disjoint\n"), "{raw}");
    // The branch holds each event exactly once, in each partition's order (history order: the
    // merge's events come last).
    assert_eq!(
        event_names(&depot, "accounts/*"),
        [
            "accounts/alice AccountOpened",
            "accounts/bob AccountOpened",
            "accounts/alice Deposited",
            "accounts/bob Deposited",
            "accounts/bob Deposited",
        ]
    );
    // The domain sees the merged state: bob has 50.
    let run = depot.run(&["apply", &withdraw("bob", 51)]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    depot.apply(&withdraw("bob", 50));
    // Merging again is up to date; verify skips the merge and re-runs the rest.
    assert_eq!(depot.ok(&["merge", "feature"]), "already up to date\n");
    depot.ok(&["verify"]);
    depot.ok(&["fsck"]);
    assert_ne!(merge, theirs1);
}

#[test]
fn log_graph_draws_the_merge() {
    let depot = two_accounts();
    depot.apply(&deposit("alice", 10));
    depot.ok(&["switch", "feature"]);
    depot.apply(&deposit("bob", 20));
    depot.apply(&deposit("bob", 30));
    depot.ok(&["switch", "master"]);
    depot.ok(&["merge", "feature"]);
    let out = depot.ok(&["log", "--graph"]);
    // Ids change with dates: compare with each 12-digit id replaced by its role.
    let mut text = out.clone();
    for (rev, name) in [
        ("HEAD", "MERGE"),
        ("HEAD^1", "ALICE10"),
        ("HEAD^2", "BOB30"),
        ("HEAD^2~1", "BOB20"),
        ("HEAD~2", "OPENBOB"),
        ("HEAD~3", "OPENALICE"),
    ] {
        let id = id_of(&depot, rev);
        text = text.replace(&id[7..19], name);
    }
    assert_eq!(
        text,
        "*   MERGE merge feature\n\
         |\\\n\
         * | ALICE10 accounts/alice deposit\n\
         | * BOB30 accounts/bob deposit\n\
         | * BOB20 accounts/bob deposit\n\
         |/\n\
         * OPENBOB accounts/bob open\n\
         * OPENALICE accounts/alice open\n",
        "{out}"
    );
    // -n 1: the merge and the lanes it opens.
    let first_two: String = out.lines().take(2).map(|l| format!("{l}\n")).collect();
    assert_eq!(depot.ok(&["log", "--graph", "-n", "1"]), first_two);
    depot.usage(&["log", "--graph", "--json"]);
}

#[test]
fn a_partition_both_sides_wrote_is_merged_by_replaying_commands() {
    let depot = two_accounts();
    depot.apply(&deposit("alice", 100));
    depot.apply(&deposit("alice", 10));
    depot.ok(&["switch", "feature"]);
    let theirs = depot.apply(&deposit("alice", 20));
    depot.ok(&["switch", "master"]);
    let before = id_of(&depot, "HEAD");
    let body = json(depot.ok(&["merge", "feature", "--json"]).trim());
    assert_eq!(body["outcome"], "replayed", "{body}");
    let replayed = body["replayed"].as_array().unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["from"], theirs.as_str());
    let head = id_of(&depot, "HEAD");
    assert_eq!(replayed[0]["checkpoint"], head.as_str());
    let raw = depot.ok(&["cat-object", "-p", "HEAD"]);
    assert!(raw.contains(&format!("parent {before}\n")), "{raw}");
    assert!(raw.contains(&format!("replayed-from {theirs}\n")), "{raw}");
    assert_eq!(raw.matches("parent ").count(), 1, "{raw}");
    depot.ok(&["verify"]);
}

#[test]
fn a_replay_the_domain_rejects_stops_with_nothing_merged() {
    let depot = TestDepot::new();
    depot.apply(OPEN_ALICE);
    depot.apply(&deposit("alice", 100));
    depot.ok(&["branch", "feature"]);
    depot.apply(&withdraw("alice", 80));
    depot.ok(&["switch", "feature"]);
    depot.apply(&deposit("alice", 1));
    let rejected = depot.apply(&withdraw("alice", 50));
    depot.ok(&["switch", "master"]);
    let run = depot.fails_unchanged(&["merge", "feature"], 4);
    assert!(run.stderr.contains(&rejected), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was merged"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    assert_eq!(depot.ok(&["failed"]), "");
}

#[test]
fn unrelated_histories_are_refused() {
    let depot = TestDepot::new();
    depot.apply(OPEN_ALICE);
    // A new root on another branch.
    depot.ok(&["apply", "--ref", "refs/heads/other", OPEN_BOB]);
    let run = depot.fails_unchanged(&["merge", "other"], 1);
    assert!(run.stderr.contains("unrelated histories"), "{}", run.stderr);
}

#[test]
fn merge_needs_a_current_branch_and_an_unborn_one_fast_forwards() {
    let depot = TestDepot::new();
    depot.ok(&["apply", "--ref", "refs/heads/other", OPEN_BOB]);
    let other = id_of(&depot, "other");
    let body = json(depot.ok(&["merge", "other", "--json"]).trim());
    assert_eq!(body["outcome"], "fast-forward");
    assert_eq!(body["from"], serde_json::Value::Null);
    assert_eq!(id_of(&depot, "HEAD"), other);
    // A detached HEAD (a HEAD file holding an id) is on no branch.
    std::fs::write(depot.dir.join("HEAD"), &other).unwrap();
    let run = depot.fails_unchanged(&["merge", "other"], 1);
    assert!(run.stderr.contains("detached"), "{}", run.stderr);
}

#[test]
fn the_same_command_on_both_sides_counts_twice() {
    // Both sides deposit 20 into alice (in other sessions, so the checkpoints differ): the two
    // Deposited events have the same id (plain events: sealed ones differ by their salts), and
    // both must be in the merged history (a replay, since both sides wrote alice).
    let depot = TestDepot::plain();
    depot.apply(OPEN_ALICE);
    depot.apply(OPEN_BOB);
    depot.ok(&["branch", "feature"]);
    let ours = depot.apply(&deposit("alice", 20));
    depot.ok(&["switch", "feature"]);
    let out = depot.ok(&["apply", "--session", "other", &deposit("alice", 20)]);
    assert_ne!(out.trim(), ours);
    let event_of = |rev: &str| {
        json(depot.ok(&["show", "--json", rev]).trim())["events"][0]["event"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(event_of("master"), event_of("feature"));
    depot.ok(&["switch", "master"]);
    let body = json(depot.ok(&["merge", "feature", "--json"]).trim());
    assert_eq!(body["outcome"], "replayed", "{body}");
    let deposits = event_names(&depot, "accounts/alice")
        .into_iter()
        .filter(|e| e.ends_with("Deposited"))
        .count();
    assert_eq!(deposits, 2);
    let run = depot.run(&["apply", &withdraw("alice", 41)]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    depot.apply(&withdraw("alice", 40));
}

#[test]
fn a_failed_commands_checkpoint_cannot_be_merged() {
    let depot = TestDepot::new();
    depot.apply(OPEN_ALICE);
    let run = depot.run(&["apply", &withdraw("alice", 1)]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let failed = json_lines(&depot.ok(&["failed", "--json"]));
    let id = failed[0]["checkpoint"].as_str().unwrap().to_owned();
    let run = depot.fails_unchanged(&["merge", &id], 1);
    assert!(run.stderr.contains("failed command"), "{}", run.stderr);
}

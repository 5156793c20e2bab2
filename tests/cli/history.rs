//! log (--oneline, -n, --reverse, --partition, --json, a start revision), show, events (glob,
//! --since, --json), partitions, and revision syntax.

use crate::common::*;

/// The checkpoint ids of the fixed history, newest first.
fn ids(depot: &TestDepot) -> Vec<String> {
    json_lines(&depot.ok(&["log", "--json"]))
        .iter()
        .map(|v| v["checkpoint"].as_str().unwrap().to_owned())
        .collect()
}

fn oneline_ids(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

#[test]
fn log_forms_agree() {
    let depot = TestDepot::with_history();
    let all = ids(&depot);
    assert_eq!(all.len(), 8);
    let short: Vec<String> = all.iter().map(|id| id[7..19].to_owned()).collect();

    let oneline = depot.ok(&["log", "--oneline"]);
    assert_eq!(oneline_ids(&oneline), short);

    let text = depot.ok(&["log"]);
    let headers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("checkpoint "))
        .collect();
    assert_eq!(headers, all.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text.contains("Session: s-ann\nDate:    2026-01-09T17:45:10Z\n"),
        "{text}"
    );

    // -n, --max-count, --reverse and combinations.
    assert_eq!(
        oneline_ids(&depot.ok(&["log", "--oneline", "-n", "3"])),
        short[..3]
    );
    assert_eq!(
        oneline_ids(&depot.ok(&["log", "--oneline", "--max-count", "1"])),
        short[..1]
    );
    assert_eq!(depot.ok(&["log", "-n", "0"]), "");
    let mut reversed = short.clone();
    reversed.reverse();
    assert_eq!(
        oneline_ids(&depot.ok(&["log", "--oneline", "--reverse"])),
        reversed
    );
    // -n picks the newest N, --reverse then prints them oldest first.
    let mut newest_two = short[..2].to_vec();
    newest_two.reverse();
    assert_eq!(
        oneline_ids(&depot.ok(&["log", "--oneline", "--reverse", "-n", "2"])),
        newest_two
    );
    let json_reversed = json_lines(&depot.ok(&["log", "--json", "--reverse"]));
    assert_eq!(json_reversed[0]["checkpoint"].as_str().unwrap(), all[7]);
    assert!(json_reversed[0]["parents"].as_array().unwrap().is_empty());
}

#[test]
fn log_json_fields() {
    let depot = TestDepot::with_history();
    let log = json_lines(&depot.ok(&["log", "--json"]));
    for (i, value) in log.iter().enumerate() {
        for key in [
            "checkpoint",
            "parents",
            "affix",
            "session",
            "date",
            "message",
            "partitions",
        ] {
            assert!(
                value.get(key).is_some(),
                "log --json line {i} lacks {key}: {value}"
            );
        }
        if i + 1 < log.len() {
            assert_eq!(value["parents"][0], log[i + 1]["checkpoint"]);
        }
    }
    assert_eq!(log[0]["message"]["path"], "accounts/alice");
    assert_eq!(log[0]["partitions"]["accounts/alice"], 1);
    // A message that is not JSON comes out as a string.
    assert_eq!(
        log[1]["message"],
        "nightly batch\nsecond line of the message"
    );
    assert_eq!(log[1]["partitions"]["notes/n1"], 1);
    assert_eq!(log[1]["partitions"]["notes/n2"], 1);
}

#[test]
fn log_partition_filter() {
    let depot = TestDepot::with_history();
    let bob = depot.ok(&["log", "--oneline", "--partition", "accounts/bob"]);
    assert_eq!(bob.lines().count(), 3, "{bob}");
    assert!(bob.lines().all(|l| l.contains("accounts/bob")), "{bob}");
    let notes = depot.ok(&["log", "--oneline", "--partition", "notes/*"]);
    assert_eq!(notes.lines().count(), 2, "{notes}");
    let everything = depot.ok(&["log", "--oneline", "--partition", "**"]);
    assert_eq!(everything.lines().count(), 8);
    let nothing = depot.ok(&["log", "--oneline", "--partition", "planets/*"]);
    assert_eq!(nothing, "");
    let json = json_lines(&depot.ok(&["log", "--json", "--partition", "registry/*"]));
    assert_eq!(json.len(), 2);
    // Filters and limits combine.
    let one = depot.ok(&["log", "--oneline", "--partition", "accounts/*", "-n", "1"]);
    assert_eq!(one.lines().count(), 1);
    assert!(one.contains("accounts/alice withdraw"), "{one}");
}

#[test]
fn log_from_a_revision() {
    let depot = TestDepot::with_history();
    let all = ids(&depot);
    let from = |rev: &str| {
        json_lines(&depot.ok(&["log", "--json", rev]))
            .iter()
            .map(|v| v["checkpoint"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(from("refs/heads/master"), all);
    assert_eq!(from("master"), all);
    assert_eq!(from("HEAD"), all);
    assert_eq!(from("HEAD~3"), all[3..]);
    assert_eq!(from("master~7"), all[7..]);
    assert_eq!(from(&all[2]), all[2..]);
    assert_eq!(from(&all[2][7..15]), all[2..]);
    assert_eq!(from(&all[2][..15]), all[2..]);
}

#[test]
fn revisions_resolve_everywhere() {
    let depot = TestDepot::with_history();
    let all = ids(&depot);
    let resolve = |rev: &str| {
        json(depot.ok(&["show", "--json", rev]).trim())["checkpoint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(resolve("HEAD"), all[0]);
    assert_eq!(resolve("HEAD~1"), all[1]);
    assert_eq!(resolve("HEAD~7"), all[7]);
    assert_eq!(resolve("HEAD~0"), all[0]);
    assert_eq!(resolve("master"), all[0]);
    assert_eq!(resolve("master~2"), all[2]);
    assert_eq!(resolve("refs/heads/master"), all[0]);
    assert_eq!(resolve("refs/heads/master~4"), all[4]);
    assert_eq!(resolve(&all[5]), all[5]);
    assert_eq!(resolve(&all[5][7..11]), all[5]);
    assert_eq!(resolve(&all[5][7..]), all[5]);
    assert_eq!(resolve(&format!("{}~1", &all[5][7..19])), all[6]);
    // A tag works as a revision too.
    depot.ok(&["update-ref", "refs/tags/v1", "HEAD~2"]);
    assert_eq!(resolve("refs/tags/v1"), all[2]);
    // Beyond the root: an error naming the depth.
    let run = depot.fails_unchanged(&["show", "HEAD~8"], 1);
    assert!(run.stderr.contains("HEAD~8"), "{}", run.stderr);
}

#[test]
fn show_expands_events() {
    let depot = TestDepot::with_history();
    let out = depot.ok(&["show"]);
    assert_eq!(out, depot.ok(&["show", "HEAD"]));
    assert!(out.starts_with("checkpoint sha256:"), "{out}");
    assert!(out.contains("\naccounts/alice\n  Withdrawn "), "{out}");
    assert!(out.contains("\"amount\": 300"), "{out}");

    let value = json(depot.ok(&["show", "--json", "HEAD~1"]).trim());
    let events = value["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["partition"], "notes/n1");
    assert_eq!(events[0]["name"], "NoteEdited");
    assert_eq!(events[0]["data"]["text"], "hello again");
    assert_eq!(events[1]["partition"], "notes/n2");
    assert_eq!(events[1]["data"], "plain text, not JSON");
    assert_eq!(value["session"], "import");
    assert_eq!(value["date"], "2026-01-08T00:00:00Z");
}

#[test]
fn events_glob_since_and_json() {
    let depot = TestDepot::with_history();
    let all = depot.ok(&["events"]);
    assert_eq!(all.lines().count(), 12);
    assert_eq!(all, depot.ok(&["events", "**"]));

    let alice = depot.ok(&["events", "accounts/alice"]);
    let versions: Vec<&str> = alice
        .lines()
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    assert_eq!(
        versions,
        [
            "accounts/alice#1",
            "accounts/alice#2",
            "accounts/alice#3",
            "accounts/alice#4"
        ]
    );
    assert_eq!(depot.ok(&["events", "accounts/*"]).lines().count(), 7);
    assert_eq!(depot.ok(&["events", "*/n1"]).lines().count(), 2);
    assert_eq!(depot.ok(&["events", "planets/**"]), "");

    let json = json_lines(&depot.ok(&["events", "--json", "accounts/bob"]));
    assert_eq!(json.len(), 3);
    for (i, event) in json.iter().enumerate() {
        assert_eq!(event["partition"], "accounts/bob");
        assert_eq!(event["version"], i as u64 + 1);
        assert!(event["event"].as_str().unwrap().starts_with("sha256:"));
        assert!(event["checkpoint"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(event["session"], ["s-bob", "s-ann", "s-bob"][i]);
    }
    assert_eq!(json[0]["name"], "AccountOpened");
    assert_eq!(json[0]["data"]["currency"], "USD");
    assert_eq!(json[0]["date"], "2026-01-05T09:02:30Z");

    // --since: only events after that checkpoint.
    let since = json_lines(&depot.ok(&["events", "--json", "--since", "HEAD~3"]));
    let names: Vec<&str> = since.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Withdrawn", "NoteEdited", "NoteAdded", "Withdrawn"]);
    assert_eq!(depot.ok(&["events", "--since", "HEAD"]), "");
    let since_alice = depot.ok(&["events", "accounts/alice", "--since", "HEAD~5"]);
    assert_eq!(since_alice.lines().count(), 2, "{since_alice}");
}

#[test]
fn partitions_counts() {
    let depot = TestDepot::with_history();
    let out = depot.ok(&["partitions"]);
    assert_eq!(
        out,
        "       4  accounts/alice\n       3  accounts/bob\n       2  notes/n1\n       1  notes/n2\n       2  registry/accounts\n"
    );
    assert_eq!(
        depot.ok(&["partitions", "notes/*"]),
        "       2  notes/n1\n       1  notes/n2\n"
    );
    let json = json_lines(&depot.ok(&["partitions", "--json", "accounts/*"]));
    assert_eq!(
        json,
        [
            serde_json::json!({"partition": "accounts/alice", "events": 4}),
            serde_json::json!({"partition": "accounts/bob", "events": 3}),
        ]
    );
    assert_eq!(depot.ok(&["partitions", "nothing/**"]), "");
}

#[test]
fn empty_depot_commands() {
    let depot = TestDepot::new();
    assert_eq!(depot.ok(&["log"]), "");
    assert_eq!(depot.ok(&["log", "--json"]), "");
    assert_eq!(depot.ok(&["events"]), "");
    assert_eq!(depot.ok(&["partitions"]), "");
    assert_eq!(depot.ok(&["failed"]), "");
    let run = depot.fails_unchanged(&["show"], 1);
    assert!(run.stderr.contains("unborn"), "{}", run.stderr);
    depot.fails_unchanged(&["log", "HEAD"], 1);
    depot.fails_unchanged(&["export"], 1);
}

#[test]
fn i16_12_log_minus_n_is_git_s_count() {
    let depot = TestDepot::with_history();
    let three = depot.ok(&["log", "-3", "--oneline"]);
    assert_eq!(three.lines().count(), 3, "{three}");
    assert_eq!(three, depot.ok(&["log", "-n", "3", "--oneline"]));
    // After `--`, an argument is a revision, not a count.
    let run = depot.run(&["log", "--oneline", "--", "-3"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
}

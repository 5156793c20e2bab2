//! refs, update-ref (compare-and-swap: create, move, refuse with a stale OLD, -d) and reflog.

use crate::common::*;

fn id_of(depot: &TestDepot, rev: &str) -> String {
    json(depot.ok(&["show", "--json", rev]).trim())["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn refs_lists_head_and_branches() {
    let depot = TestDepot::with_history();
    let head = id_of(&depot, "HEAD");
    assert_eq!(
        depot.ok(&["refs"]),
        format!("ref: refs/heads/master HEAD\n{head} refs/heads/master\n")
    );
    let json = json_lines(&depot.ok(&["refs", "--json"]));
    assert_eq!(
        json,
        [
            serde_json::json!({"ref": "HEAD", "kind": "symbolic", "target": "refs/heads/master"}),
            serde_json::json!({"ref": "refs/heads/master", "kind": "direct", "target": head}),
        ]
    );
    // An empty depot has only the symbolic HEAD.
    let empty = TestDepot::new();
    assert_eq!(empty.ok(&["refs"]), "ref: refs/heads/master HEAD\n");
}

#[test]
fn update_ref_compare_and_swap() {
    let depot = TestDepot::with_history();
    let head = id_of(&depot, "HEAD");
    let one = id_of(&depot, "HEAD~1");
    let two = id_of(&depot, "HEAD~2");
    let target = |depot: &TestDepot, name: &str| {
        depot
            .refs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    };

    // Create (no OLD: any value).
    assert_eq!(depot.ok(&["update-ref", "refs/tags/audit", "HEAD~2"]), "");
    assert_eq!(target(&depot, "refs/tags/audit"), Some(two.clone()));
    // Move with the correct OLD.
    depot.ok(&["update-ref", "refs/tags/audit", "HEAD~1", "HEAD~2"]);
    assert_eq!(target(&depot, "refs/tags/audit"), Some(one.clone()));
    depot.ok(&["update-ref", "refs/tags/audit", &head, &one[7..19]]);
    assert_eq!(target(&depot, "refs/tags/audit"), Some(head.clone()));
    // A stale OLD: conflict, exit 3, nothing changes.
    let run = depot.fails_unchanged(&["update-ref", "refs/tags/audit", "HEAD~2", "HEAD~1"], 3);
    assert!(run.stderr.contains("refs/tags/audit"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    assert_eq!(target(&depot, "refs/tags/audit"), Some(head.clone()));
    // OLD 0: must not exist yet.
    depot.ok(&["update-ref", "refs/tags/fresh", "HEAD", "0"]);
    depot.fails_unchanged(&["update-ref", "refs/tags/fresh", "HEAD~1", "0"], 3);
    depot.fails_unchanged(
        &["update-ref", "refs/tags/fresh", "HEAD~1", &"0".repeat(64)],
        3,
    );
    // A short name means a branch.
    depot.ok(&["update-ref", "topic", "HEAD~2"]);
    assert_eq!(target(&depot, "refs/heads/topic"), Some(two.clone()));
    // -m sets the reflog message.
    depot.ok(&["update-ref", "-m", "rewind", "topic", "HEAD~3", "HEAD~2"]);
    let reflog = json_lines(&depot.ok(&["reflog", "--json", "topic"]));
    assert_eq!(reflog[0]["message"], "rewind");
    assert_eq!(reflog[0]["old"].as_str().unwrap(), two);

    // Delete: -d with the right expected value, then without one.
    depot.fails_unchanged(&["update-ref", "-d", "refs/tags/audit", "HEAD~1"], 3);
    depot.ok(&["update-ref", "-d", "refs/tags/audit", "HEAD"]);
    assert_eq!(target(&depot, "refs/tags/audit"), None);
    depot.ok(&["update-ref", "-d", "refs/tags/fresh"]);
    assert_eq!(target(&depot, "refs/tags/fresh"), None);
    // Deleting what is not there: a conflict (the ref must exist).
    depot.fails_unchanged(&["update-ref", "-d", "refs/tags/fresh"], 3);
    // Moving master moves HEAD.
    depot.ok(&["update-ref", "refs/heads/master", "HEAD~1", &head]);
    assert_eq!(id_of(&depot, "HEAD"), one);
    assert_eq!(depot.ok(&["log", "--oneline"]).lines().count(), 7);
    depot.ok(&["fsck"]);
}

#[test]
fn bad_ref_names_are_refused() {
    let depot = TestDepot::with_history();
    for name in [
        "refs/heads/../x",
        "refs/heads/a..b",
        "refs/heads/",
        "refs/heads/a b",
        "refs/heads/x.lock",
        "/refs/heads/x",
        "refs//heads/x",
        "refs/heads/x~1",
        "refs/heads/x^",
        "refs/heads/x:y",
        "refs/heads/x?",
        "refs/heads/x*",
        "refs/heads/x[",
        "refs/heads/x\\y",
        "refs/heads/.hidden",
        "refs/heads/x.",
        "../../outside",
    ] {
        let run = depot.fails_unchanged(&["update-ref", name, "HEAD"], 1);
        assert!(
            run.stderr.contains("ref name") || run.stderr.contains("ref '"),
            "{name}: {}",
            run.stderr
        );
        depot.fails_unchanged(&["update-ref", "-d", name], 1);
        depot.fails_unchanged(&["reflog", name], 1);
    }
    // Nothing escaped the depot.
    assert!(!depot.tmp.path().join("outside").exists());
    assert!(!depot.dir.join("refs/x").exists());
    let run = depot.fails_unchanged(
        &[
            "apply",
            "--ref",
            "refs/heads/a..b",
            r#"{"path":"accounts/x","name":"open","params":{"owner":"X"}}"#,
        ],
        1,
    );
    assert!(run.stderr.contains(".."), "{}", run.stderr);
}

#[test]
fn reflog_records_moves() {
    let depot = TestDepot::new();
    let a = depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#);
    let b = depot.apply(r#"{"path":"accounts/alice","name":"deposit","params":{"amount":7}}"#);
    depot.ok(&["update-ref", "-m", "undo", "master", &a, &b]);

    let text = depot.ok(&["reflog"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with(&format!("{} HEAD@{{0}}: undo (cli, ", &a[7..19])),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{} HEAD@{{1}}: apply accounts/alice deposit (cli, ",
            &b[7..19]
        )),
        "{text}"
    );
    assert!(
        lines[2].contains("HEAD@{2}: apply accounts/alice open"),
        "{text}"
    );

    let json = json_lines(&depot.ok(&["reflog", "--json", "refs/heads/master"]));
    assert_eq!(json.len(), 3);
    assert_eq!(json[0]["index"], 0);
    assert_eq!(json[0]["ref"], "refs/heads/master");
    assert_eq!(json[0]["old"].as_str().unwrap(), b);
    assert_eq!(json[0]["new"].as_str().unwrap(), a);
    assert_eq!(json[0]["message"], "undo");
    assert_eq!(json[0]["session"], "cli");
    assert!(json[2]["old"].is_null());
    assert_eq!(depot.ok(&["reflog", "master"]).lines().count(), 3);

    // A deleted ref's reflog shows the deletion.
    depot.ok(&["update-ref", "refs/tags/t", "HEAD"]);
    depot.ok(&["update-ref", "-d", "refs/tags/t"]);
    let text = depot.ok(&["reflog", "refs/tags/t"]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("(deleted) t@{0}: "),
        "{text}"
    );
    // A ref that never existed is not found (issue 16: not an empty success).
    let run = depot.fails(&["reflog", "refs/tags/never"], 1);
    assert!(
        run.stderr.contains("no such ref 'refs/tags/never'"),
        "{}",
        run.stderr
    );
}

#[test]
fn deleting_a_missing_ref_says_it_must_exist() {
    let depot = TestDepot::with_history();
    let run = depot.fails_unchanged(&["update-ref", "-d", "refs/tags/missing"], 3);
    assert!(
        !run.stderr
            .contains("expected no checkpoint, found no checkpoint"),
        "{}",
        run.stderr
    );
}

/// D1: a ref whose name clashes with a directory of refs (or the reverse) used to be journaled
/// before its write failed, and every later command failed with "Is a directory". Now it is
/// refused first (exit 1, naming both refs), the depot unchanged, and every command still works.
#[test]
fn d1_ref_directory_clash_does_not_brick_the_depot() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    depot.ok(&["watch", "--consumer", "x/y", "--idle-exit", "1"]);
    let run = depot.fails_unchanged(&["watch", "--consumer", "x", "--idle-exit", "1"], 1);
    assert!(
        run.stderr.contains("'refs/consumers/x'") && run.stderr.contains("'refs/consumers/x/y'"),
        "{}",
        run.stderr
    );
    depot.ok(&["update-ref", "refs/tags/x/y", "HEAD"]);
    let run = depot.fails_unchanged(&["update-ref", "refs/tags/x", "HEAD"], 1);
    assert!(
        run.stderr
            .contains("clashes with the existing ref 'refs/tags/x/y'"),
        "{}",
        run.stderr
    );
    // The other order: a ref, then a name below it.
    depot.ok(&["update-ref", "refs/tags/t", "HEAD"]);
    let run = depot.fails_unchanged(&["update-ref", "refs/tags/t/u", "HEAD"], 1);
    assert!(run.stderr.contains("'refs/tags/t'"), "{}", run.stderr);
    assert!(depot.ok(&["log"]).contains("AccountOpened"));
    assert!(depot.ok(&["fsck"]).contains("no problems"));
    depot.ok(&["gc"]);
    depot.ok(&["reindex"]);
    depot.apply(r#"{"path":"accounts/b","name":"open","params":{"owner":"B"}}"#);
    let names: Vec<String> = depot.refs().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "HEAD",
            "refs/consumers/x/y",
            "refs/heads/master",
            "refs/tags/t",
            "refs/tags/x/y"
        ]
    );
}

#[test]
fn i16_5_reflog_entries_are_revisions_and_an_unknown_reflog_is_not_found() {
    let depot = TestDepot::new();
    let first = depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    let second = depot.apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":5}}"#);
    let third = depot.apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":6}}"#);
    let id = |rev: &str| {
        json(
            depot
                .ok(&["log", "--json", "-n", "1", rev])
                .lines()
                .next()
                .unwrap(),
        )["checkpoint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id("HEAD@{0}"), third);
    assert_eq!(id("HEAD@{1}"), second);
    assert_eq!(id("master@{2}"), first);
    assert_eq!(id("refs/heads/master@{1}"), second);
    assert_eq!(id("@{1}"), second);
    assert_eq!(id("HEAD@{1}~1"), first);
    // Everywhere a revision is read: show, cat-object, update-ref.
    assert!(depot.ok(&["show", "HEAD@{2}"]).contains(&first));
    assert_eq!(depot.ok(&["cat-object", "-t", "HEAD@{1}"]), "checkpoint\n");
    depot.ok(&["update-ref", "refs/tags/t", "HEAD@{2}"]);
    assert_eq!(id("t"), first);
    // Past the end, and a form that is not supported: clear errors.
    let run = depot.fails(&["log", "HEAD@{3}"], 1);
    assert!(run.stderr.contains("has only 3 entries"), "{}", run.stderr);
    let run = depot.fails(&["log", "HEAD@{yesterday}"], 1);
    assert!(run.stderr.contains("'@{N}'"), "{}", run.stderr);
    let run = depot.fails(&["log", "nope@{1}"], 1);
    assert!(
        run.stderr.contains("unknown revision 'nope@{1}'"),
        "{}",
        run.stderr
    );
    // A reflog of a ref that does not exist: not found, not an empty success.
    let run = depot.fails(&["reflog", "nope"], 1);
    assert!(
        run.stderr.contains("no such ref 'refs/heads/nope'"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn i16_8_update_ref_with_old_0_on_an_existing_ref_says_it_exists_and_what_it_holds() {
    let depot = TestDepot::new();
    let first = depot.apply(r#"{"path":"accounts/a","name":"open","params":{"owner":"A"}}"#);
    depot.apply(r#"{"path":"accounts/a","name":"deposit","params":{"amount":5}}"#);
    depot.ok(&["update-ref", "refs/heads/exp", "HEAD~1"]);
    let run = depot.fails_unchanged(&["update-ref", "refs/heads/exp", "HEAD", "0"], 3);
    assert!(
        run.stderr.contains(&format!(
            "ref 'refs/heads/exp' already exists and holds {first}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("expected no checkpoint"),
        "{}",
        run.stderr
    );
}

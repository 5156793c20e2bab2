//! Partial clones (`retro clone --partitions GLOB`, `retro sync --partitions GLOB`): every
//! checkpoint and affix, only the matching partitions' events; fsck, reads, apply, status and
//! sync all know which events are absent by design.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

const OPEN_ALICE: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const DEPOSIT_ALICE: &str = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":40}}"#;
const OPEN_BOB: &str = r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#;

/// A source depot `src` in a temporary directory: accounts (the built-in bank) and a note (the
/// fixture's shell handler, in a started session), so partitions `accounts/*`, `registry/…`,
/// `notes/n1` and `session/…` all have events.
fn source() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    ok(tmp.path(), &["init", "src"]);
    for command in [OPEN_ALICE, DEPOSIT_ALICE, OPEN_BOB] {
        ok(tmp.path(), &["--depot", "src", "apply", command]);
    }
    let session = ok(tmp.path(), &["--depot", "src", "session", "start"])
        .trim()
        .to_owned();
    add_note(tmp.path(), "src", &session, "hello");
    (tmp, session)
}

fn add_note(dir: &Path, depot: &str, session: &str, text: &str) -> Run {
    let manifest = manifest();
    run(retro_in(dir).args([
        "--depot",
        depot,
        "apply",
        "--manifest",
        manifest.to_str().unwrap(),
        "--session",
        session,
        &format!(r#"{{"path":"notes/n1","name":"add","params":{{"text":"{text}"}}}}"#),
    ]))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(retro_in(dir).args(args));
    assert_eq!(out.code, 0, "retro {args:?}: {}", out.stderr);
    out.stdout
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap_or_else(|e| panic!("retro {args:?}: {e}"))
}

fn fails(dir: &Path, args: &[&str], code: i32) -> Run {
    let out = run(retro_in(dir).args(args));
    assert_error(&out, code);
    out
}

/// The partial clone's error: names the partition or event and the filter, never corruption.
fn assert_names_the_filter(out: &Run, what: &str, filter: &str) {
    assert!(out.stderr.contains(what), "{}", out.stderr);
    assert!(out.stderr.contains("partial clone"), "{}", out.stderr);
    assert!(out.stderr.contains(filter), "{}", out.stderr);
    assert!(
        out.stderr.contains("retro sync --partitions"),
        "{}",
        out.stderr
    );
    for word in ["corrupt", "missing", "fsck"] {
        assert!(!out.stderr.contains(word), "says {word:?}: {}", out.stderr);
    }
}

fn log_ids(dir: &Path, depot: &str) -> Vec<String> {
    ok(
        dir,
        &["--depot", depot, "log", "--oneline", "--all-parents"],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_partial_clone_has_every_checkpoint_and_only_the_matching_events() {
    let (tmp, _) = source();
    let dir = tmp.path();
    let out = ok(dir, &["clone", "--partitions", "accounts/*", "src", "part"]);
    assert!(
        out.contains("partial clone: holds the events of partitions 'accounts/*'"),
        "{out}"
    );
    assert_eq!(log_ids(dir, "src"), log_ids(dir, "part"));
    assert_eq!(
        ok(dir, &["--depot", "src", "events", "accounts/*"]),
        ok(dir, &["--depot", "part", "events", "accounts/*"])
    );
    // The filter is durable, in the depot's `partial` file.
    assert_eq!(
        fs::read_to_string(dir.join("part/.retro/partial")).unwrap(),
        "retro partial 1\npartitions accounts/*\n"
    );
    // fsck: clean, every id held verified, the rest counted as absent by design.
    let full = json(dir, &["--depot", "src", "fsck", "--json"]);
    let part = json(dir, &["--depot", "part", "fsck", "--json"]);
    assert_eq!(part["clean"], true, "{part}");
    assert_eq!(part["partial"], serde_json::json!(["accounts/*"]));
    assert_eq!(part["checkpoints"], full["checkpoints"]);
    assert_eq!(part["affixes"], full["affixes"]);
    let absent = part["absent_by_filter"].as_u64().unwrap();
    assert!(absent >= 3, "registry, note and session events: {part}");
    assert_eq!(
        part["events"].as_u64().unwrap() + absent,
        full["events"].as_u64().unwrap()
    );
    assert_eq!(full["partial"], Value::Null);
    let status = json(dir, &["--depot", "part", "status", "--json"]);
    assert_eq!(status["partial"], serde_json::json!(["accounts/*"]));
    assert!(ok(dir, &["--depot", "part", "status"]).contains("partial clone"));
    // A command on a held partition works as anywhere.
    ok(
        dir,
        &[
            "--depot",
            "part",
            "apply",
            r#"{"path":"accounts/bob","name":"deposit","params":{"amount":5}}"#,
        ],
    );
    assert_eq!(
        json(dir, &["--depot", "part", "fsck", "--json"])["clean"],
        true
    );
}

#[test]
fn reading_or_applying_outside_the_filter_is_refused_naming_the_filter() {
    let (tmp, session) = source();
    let dir = tmp.path();
    ok(dir, &["clone", "--partitions", "accounts/*", "src", "part"]);
    let head = ok(dir, &["--depot", "part", "log", "--json", "-n", "1"]);
    let out = fails(dir, &["--depot", "part", "events", "notes/n1"], 1);
    assert_names_the_filter(&out, "'notes/n1'", "'accounts/*'");
    // A glob that reaches an absent partition (the default `**` does) too.
    let out = fails(dir, &["--depot", "part", "events"], 1);
    assert!(
        out.stderr.contains("outside the partial clone"),
        "{}",
        out.stderr
    );
    // An event read by id (`show` of the note's checkpoint).
    let out = fails(dir, &["--depot", "part", "show", "HEAD"], 1);
    assert_names_the_filter(&out, "is not in the partial clone", "'accounts/*'");
    // A command on an absent partition would rehydrate from missing events: refused, nothing
    // written, not recorded as a failed command.
    let out = add_note(dir, "part", &session, "refused");
    assert_error(&out, 1);
    assert!(out.stderr.contains("partial clone"), "{}", out.stderr);
    assert_eq!(
        ok(dir, &["--depot", "part", "log", "--json", "-n", "1"]),
        head
    );
    assert_eq!(ok(dir, &["--depot", "part", "failed"]), "");
    // An import that writes to an absent partition is refused before anything is written.
    let line = r#"{"events":[{"partition":"notes/n2","name":"NoteAdded","data":{"text":"x"}}]}"#;
    let out = run(retro_in(dir)
        .args(["--depot", "part", "import"])
        .write_stdin(line));
    assert_error(&out, 1);
    assert_names_the_filter(&out, "'notes/n2'", "'accounts/*'");
    assert_eq!(
        ok(dir, &["--depot", "part", "log", "--json", "-n", "1"]),
        head
    );
    assert_eq!(
        json(dir, &["--depot", "part", "fsck", "--json"])["clean"],
        true
    );
}

#[test]
fn sync_partitions_widens_the_filter_and_fetches_the_missing_events() {
    let (tmp, session) = source();
    let dir = tmp.path();
    ok(dir, &["clone", "--partitions", "accounts/*", "src", "part"]);
    let out = json(
        dir,
        &["sync", "--json", "--partitions", "notes/**", "src", "part"],
    );
    assert_eq!(
        out["partitions"],
        serde_json::json!(["accounts/*", "notes/**"])
    );
    assert!(out["events_fetched"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(
        ok(dir, &["--depot", "src", "events", "notes/**"]),
        ok(dir, &["--depot", "part", "events", "notes/**"])
    );
    assert_eq!(
        fs::read_to_string(dir.join("part/.retro/partial")).unwrap(),
        "retro partial 1\npartitions accounts/*\npartitions notes/**\n"
    );
    assert_eq!(
        json(dir, &["--depot", "part", "fsck", "--json"])["clean"],
        true
    );
    // Later syncs bring the events of every held partition, and only those.
    ok(dir, &["--depot", "src", "apply", DEPOSIT_ALICE]);
    assert_eq!(add_note(dir, "src", &session, "again").code, 0);
    ok(dir, &["sync", "src", "part"]);
    assert_eq!(log_ids(dir, "src"), log_ids(dir, "part"));
    for glob in ["accounts/*", "notes/**"] {
        assert_eq!(
            ok(dir, &["--depot", "src", "events", glob]),
            ok(dir, &["--depot", "part", "events", glob])
        );
    }
    fails(dir, &["--depot", "part", "events", "session/*"], 1);
    // Widening again by a glob already held fetches nothing and changes nothing.
    let again = json(
        dir,
        &["sync", "--json", "--partitions", "notes/**", "src", "part"],
    );
    assert_eq!(again["events_fetched"], 0);
    assert_eq!(
        json(dir, &["--depot", "part", "fsck", "--json"])["clean"],
        true
    );
}

#[test]
fn a_widening_the_source_cannot_serve_leaves_the_filter_as_it_was() {
    let (tmp, _) = source();
    let dir = tmp.path();
    ok(dir, &["clone", "--partitions", "accounts/*", "src", "part"]);
    ok(
        dir,
        &["clone", "--partitions", "accounts/alice", "src", "alice"],
    );
    // `part` lacks notes/n1: `alice` cannot get it from there. The refusal names the source's
    // filter, and `alice` records no wider filter than the events it holds.
    let out = fails(
        dir,
        &["sync", "--partitions", "notes/**", "part", "alice"],
        1,
    );
    assert_names_the_filter(&out, "'notes/n1'", "'accounts/*'");
    assert_eq!(
        fs::read_to_string(dir.join("alice/.retro/partial")).unwrap(),
        "retro partial 1\npartitions accounts/alice\n"
    );
    fails(dir, &["--depot", "alice", "events", "notes/n1"], 1);
    assert_eq!(
        json(dir, &["--depot", "alice", "fsck", "--json"])["clean"],
        true
    );
    // What `part` holds it can give.
    ok(
        dir,
        &["sync", "--partitions", "accounts/bob", "part", "alice"],
    );
    assert_eq!(
        ok(dir, &["--depot", "src", "events", "accounts/bob"]),
        ok(dir, &["--depot", "alice", "events", "accounts/bob"])
    );
    // A clone of a partial clone is partial too, with the same filter.
    ok(dir, &["clone", "part", "again"]);
    assert_eq!(
        json(dir, &["--depot", "again", "status", "--json"])["partial"],
        serde_json::json!(["accounts/*"])
    );
    assert_eq!(
        json(dir, &["--depot", "again", "fsck", "--json"])["clean"],
        true
    );
    // A full depot cannot take history from a partial clone that lacks its events.
    ok(dir, &["init", "whole"]);
    let out = fails(dir, &["sync", "part", "whole"], 1);
    assert!(
        out.stderr.contains("outside the partial clone"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_partition_arguments_are_refused_before_anything_is_made() {
    let (tmp, _) = source();
    let dir = tmp.path();
    for (glob, says) in [
        ("accounts/[", "bad partition glob 'accounts/['"),
        ("", "the glob is empty"),
        ("accounts/ alice", "whitespace"),
    ] {
        let out = fails(dir, &["clone", "--partitions", glob, "src", "bad"], 1);
        assert!(out.stderr.contains(says), "{glob:?}: {}", out.stderr);
        assert!(!dir.join("bad").exists(), "{glob:?} made the destination");
    }
    // A partial clone must be a files depot: refused before the database is touched.
    let out = fails(
        dir,
        &[
            "clone",
            "--partitions",
            "accounts/*",
            "src",
            "postgres://nobody@127.0.0.1:1/none",
        ],
        1,
    );
    assert!(
        out.stderr.contains("must be a files depot"),
        "{}",
        out.stderr
    );
    // Widening a depot that holds every partition is a mistake, said so.
    ok(dir, &["clone", "src", "whole"]);
    let out = fails(
        dir,
        &["sync", "--partitions", "notes/**", "src", "whole"],
        1,
    );
    assert!(
        out.stderr.contains("is not a partial clone"),
        "{}",
        out.stderr
    );
    ok(dir, &["clone", "--partitions", "accounts/*", "src", "part"]);
    let out = fails(dir, &["sync", "--partitions", "[", "src", "part"], 1);
    assert!(out.stderr.contains("bad partition glob"), "{}", out.stderr);
    // A damaged filter file is corruption (exit 5), named, never guessed around.
    fs::write(dir.join("part/.retro/partial"), "retro partial 1\nglob x\n").unwrap();
    let out = fails(dir, &["--depot", "part", "status"], 5);
    assert!(
        out.stderr.contains("partial-clone filter"),
        "{}",
        out.stderr
    );
}

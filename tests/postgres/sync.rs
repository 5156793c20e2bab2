//! `retro sync` and `retro clone` between files and PostgreSQL: byte-identical round trips, and an
//! interrupted sync that resumes without ever leaving a ref on a missing object.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use depot::{Depot, ObjectId};

use crate::common::{command, fresh_url, ok, retro, run};

/// Every object of a files depot, by id.
fn objects_of(dir: &Path) -> BTreeMap<ObjectId, Vec<u8>> {
    let depot = Depot::open(dir).unwrap();
    let mut ids = Vec::new();
    depot
        .objects()
        .for_each_id(&mut |id| {
            ids.push(id);
            Ok(())
        })
        .unwrap();
    ids.into_iter()
        .map(|id| (id, depot.read_object(&id).unwrap().bytes().to_vec()))
        .collect()
}

/// A JSON-lines history of `n` commands over 20 accounts, for `retro import`.
fn write_history(path: &Path, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            r#"{{"session":"s1","date":"2026-12-01T10:00:00Z","message":{{"n":{i}}},"events":[{{"partition":"accounts/a{}","name":"Deposited","data":{{"amount":{i}}}}},{{"partition":"audit/log","name":"Noted","data":{{"n":{i}}}}}]}}"#,
            i % 20
        ));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn files_to_postgres_to_files_is_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (a, b) = (w.join("a"), w.join("b"));
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    ok(w, &["init", "--events", "plain", a_s]);
    let history = w.join("history.jsonl");
    write_history(&history, 300);
    ok(w, &["--depot", a_s, "import", history.to_str().unwrap()]);
    ok(
        w,
        &[
            "--depot",
            a_s,
            "apply",
            &command("accounts/x", "open", r#"{"owner":"X"}"#),
        ],
    );
    ok(
        w,
        &["--depot", a_s, "update-ref", "refs/tags/v1", "HEAD~10"],
    );
    let rejected = run(
        w,
        &[
            "--depot",
            a_s,
            "apply",
            &command("accounts/x", "withdraw", r#"{"amount":99}"#),
        ],
    );
    assert_eq!(
        rejected.status.code(),
        Some(4),
        "a failed command is recorded"
    );
    let url = fresh_url();
    ok(w, &["clone", a_s, &url]);
    ok(w, &["clone", &url, b_s]);

    // `clone URL b` makes `b/.retro`, as `retro init` in `b` would.
    assert_eq!(
        objects_of(&a),
        objects_of(&b.join(".retro")),
        "same ids, same bytes"
    );
    let failed = ok(w, &["--depot", a_s, "failed", "--json"]);
    assert_eq!(failed.lines().count(), 1);
    assert_eq!(failed, ok(w, &["--depot", &url, "failed", "--json"]));
    assert_eq!(failed, ok(w, &["--depot", b_s, "failed", "--json"]));
    assert_eq!(
        ok(w, &["--depot", a_s, "refs", "--json"]),
        ok(w, &["--depot", &url, "refs", "--json"])
    );
    assert_eq!(
        ok(w, &["--depot", a_s, "refs", "--json"]),
        ok(w, &["--depot", b_s, "refs", "--json"])
    );
    for depot in [a_s, url.as_str(), b_s] {
        let fsck = ok(w, &["--depot", depot, "fsck"]);
        assert!(fsck.contains("no problems"), "{depot}: {fsck}");
    }

    // Incremental: only what is new travels, and fast-forwards move.
    ok(
        w,
        &[
            "--depot",
            a_s,
            "apply",
            &command("accounts/x", "deposit", r#"{"amount":3}"#),
        ],
    );
    let again = ok(w, &["sync", a_s, &url]);
    assert!(
        again.contains("copied 1 checkpoint(s), 3 object(s)"),
        "{again}"
    );
    assert!(again.contains("(fast-forward)"), "{again}");
    let idle = ok(w, &["sync", a_s, &url]);
    assert!(idle.contains("copied 0 checkpoint(s)"), "{idle}");

    // Diverged: refused without --force (exit 3, destination untouched), moved with it.
    ok(
        w,
        &[
            "--depot",
            &url,
            "apply",
            &command("accounts/x", "deposit", r#"{"amount":4}"#),
        ],
    );
    ok(
        w,
        &[
            "--depot",
            a_s,
            "apply",
            &command("accounts/x", "deposit", r#"{"amount":5}"#),
        ],
    );
    let before = ok(w, &["--depot", &url, "refs", "--json"]);
    let refused = run(w, &["sync", a_s, &url]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a fast-forward"));
    assert_eq!(before, ok(w, &["--depot", &url, "refs", "--json"]));
    ok(w, &["sync", "--force", a_s, &url]);
    assert_eq!(
        ok(w, &["--depot", a_s, "refs", "--json"]),
        ok(w, &["--depot", &url, "refs", "--json"])
    );
}

#[test]
fn an_interrupted_sync_resumes_and_never_leaves_a_ref_on_a_missing_object() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = w.join("a");
    let a_s = a.to_str().unwrap();
    ok(w, &["init", "--events", "plain", a_s]);
    let history = w.join("history.jsonl");
    write_history(&history, 3000);
    ok(w, &["--depot", a_s, "import", history.to_str().unwrap()]);

    let url = fresh_url();
    ok(w, &["init", &url]);
    let mut interrupted = false;
    for delay_ms in [100, 200, 400, 800] {
        let mut child = retro(w, &["sync", "--batch", "10", a_s, &url])
            .spawn()
            .unwrap();
        // The pause picks where the kill lands (later each time until one interrupts the
        // sync); it synchronises nothing.
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let fsck = ok(w, &["--depot", &url, "fsck"]);
        assert!(fsck.contains("no problems"), "after a kill: {fsck}");
        if !status.success() {
            interrupted = true;
            break;
        }
    }
    assert!(interrupted, "no sync was caught in the middle");
    let resumed = ok(w, &["sync", a_s, &url]);
    assert!(
        resumed.contains("refs/heads/master  (created)") || resumed.contains("(fast-forward)"),
        "{resumed}"
    );
    assert_eq!(
        ok(w, &["--depot", a_s, "log", "--json"]),
        ok(w, &["--depot", &url, "log", "--json"])
    );
    let fsck = ok(w, &["--depot", &url, "fsck"]);
    assert!(
        fsck.contains("3000 checkpoints") && fsck.contains("no problems"),
        "{fsck}"
    );
}

/// A partial clone of a PostgreSQL depot into files, widened from it later; a partial clone into
/// PostgreSQL is refused before the database is initialised.
#[test]
fn a_partial_clone_of_a_postgres_depot_fetches_only_its_partitions_then_more() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = w.join("a");
    let a_s = a.to_str().unwrap();
    ok(w, &["init", a_s]);
    let history = w.join("history.jsonl");
    write_history(&history, 40);
    ok(w, &["--depot", a_s, "import", history.to_str().unwrap()]);
    let url = fresh_url();
    ok(w, &["clone", a_s, &url]);
    let part = w.join("part");
    let part_s = part.to_str().unwrap();
    ok(w, &["clone", "--partitions", "accounts/*", &url, part_s]);
    let fsck: serde_json::Value =
        serde_json::from_str(&ok(w, &["--depot", part_s, "fsck", "--json"])).unwrap();
    assert_eq!(fsck["clean"], true, "{fsck}");
    assert_eq!(fsck["absent_by_filter"], 40, "the audit/log events: {fsck}");
    assert_eq!(
        ok(w, &["--depot", &url, "events", "accounts/*"]),
        ok(w, &["--depot", part_s, "events", "accounts/*"])
    );
    let refused = run(w, &["--depot", part_s, "events", "audit/log"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("outside the partial clone"), "{stderr}");
    ok(w, &["sync", "--partitions", "audit/*", &url, part_s]);
    assert_eq!(
        ok(w, &["--depot", &url, "events", "audit/log"]),
        ok(w, &["--depot", part_s, "events", "audit/log"])
    );
    let fsck: serde_json::Value =
        serde_json::from_str(&ok(w, &["--depot", part_s, "fsck", "--json"])).unwrap();
    assert_eq!(fsck["absent_by_filter"], 0, "{fsck}");
    // Into PostgreSQL: refused, and the database is left uninitialised.
    let other = fresh_url();
    let refused = run(w, &["clone", "--partitions", "accounts/*", a_s, &other]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("must be a files depot"), "{stderr}");
    let open = run(w, &["--depot", &other, "log"]);
    assert_ne!(open.status.code(), Some(0), "no depot was made there");
}

//! Depots written by earlier releases keep opening: `fixtures/depots/retro-0.1/` is a native depot
//! written by the round-1 release (commit `dbb2ca0`, see its README): a sealed pack from a gc, an
//! active pack after it, a consumer ref, a recorded failed command, its SQLite partition index.
//! Each test works on a copy; the fixture itself is never changed.

use std::fs;

use crate::common::*;

/// A copy of the fixture depot, as a `TestDepot`.
fn round_1_depot() -> TestDepot {
    let depot = TestDepot::uninitialized();
    copy_dir(&fixtures().join("depots/retro-0.1/.retro"), &depot.dir);
    depot
}

#[test]
fn a_depot_written_by_the_round_1_release_opens_reads_and_takes_new_commits() {
    let depot = round_1_depot();
    let before = depot.ok(&["log", "--oneline"]);
    assert_eq!(before.lines().count(), 7, "{before}");
    let fsck = depot.ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
    let alice = json_lines(&depot.ok(&["events", "--json", "accounts/alice"]));
    assert_eq!(alice.len(), 4, "{alice:?}");
    assert_eq!(json_lines(&depot.ok(&["failed", "--json"])).len(), 1);
    let status = json(depot.ok(&["status", "--json"]).trim());
    assert_eq!(status["consumers"][0]["name"], "projector");
    // New writes, a gc, and everything still checks out.
    depot.apply(r#"{"path":"accounts/carol","name":"open","params":{"owner":"Carol"}}"#);
    depot.ok(&["gc"]);
    // gc is the in-place upgrade: one version 2 pack (dictionary, short-id index) holds it all.
    let packs: Vec<_> = fs::read_dir(depot.dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    assert_eq!(&fs::read(&packs[0]).unwrap()[..8], b"RETROIX2");
    assert_eq!(
        &fs::read(packs[0].with_extension("pack")).unwrap()[..8],
        b"RETROPK2"
    );
    assert_eq!(
        alice,
        json_lines(&depot.ok(&["events", "--json", "accounts/alice"]))
    );
    depot.apply(r#"{"path":"accounts/carol","name":"deposit","params":{"amount":7}}"#);
    assert_eq!(depot.ok(&["log", "--oneline"]).lines().count(), 9);
    let fsck = depot.ok(&["fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
    // The old history is unchanged under the new commits.
    assert!(depot.ok(&["log", "--oneline"]).ends_with(before.as_str()));
}

//! Storage v2: an open costs the same whatever the history (the active pack's key log), and
//! partition reads go straight to each event's record (the index's location hints), which are
//! never trusted over the objects.

use depot::{Depot, GcOptions, Options};

use crate::common::*;

fn index_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("index.sqlite")
}

fn hints(dir: &std::path::Path) -> Vec<Option<i64>> {
    let conn = rusqlite::Connection::open(index_path(dir)).unwrap();
    let mut stmt = conn
        .prepare("SELECT at FROM events ORDER BY pid, n")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn set_hints(dir: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(index_path(dir)).unwrap();
    conn.execute(sql, []).unwrap();
}

fn read_all(depot: &Depot, n: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        for record in depot
            .partition_events(&p(&format!("identity/{i}")))
            .unwrap()
        {
            out.push(format!(
                "{} {} {:?}",
                record.id,
                record.version,
                record.event.data()
            ));
        }
    }
    out
}

#[test]
fn opening_after_many_commits_scans_only_the_tail_of_the_active_pack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let depot = Depot::init(&root).unwrap();
    // Far more than one key-log chunk (32 KiB) in the active pack, below its roll size (8 MiB).
    for i in 0..2_000 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    drop(depot);
    let pack_len = std::fs::metadata(root.join("packs/pack-0000000000000001.pack"))
        .unwrap()
        .len();
    let reopened = Depot::open(&root).unwrap();
    let scanned = reopened.pack_scan_work().unwrap();
    assert!(
        scanned < 64 << 10,
        "an open scanned {scanned} of the active pack's {pack_len} bytes"
    );
    assert_eq!(
        reopened
            .partition_events(&p("identity/1999"))
            .unwrap()
            .len(),
        2
    );
    // So does one right after a bulk import (commit_many, the import path).
    let requests: Vec<_> = (2_000..6_000)
        .map(|i| {
            let mut request =
                depot::CommitRequest::new(None, workload(i, "s2"), "s2", format!("{{\"n\":{i}}}"));
            request.base = depot::Base::Tip;
            request
        })
        .collect();
    for result in reopened.commit_many(requests) {
        result.unwrap();
    }
    drop(reopened);
    let after_import = Depot::open(&root).unwrap();
    assert!(after_import.pack_scan_work().unwrap() < 64 << 10);
    assert_eq!(
        after_import
            .partition_events(&p("identity/5999"))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn reads_use_location_hints_and_never_trust_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let options = Options {
        pack_roll_size: Some(16 << 10),
        ..Default::default()
    };
    let depot = Depot::init_with(&root, options.clone()).unwrap();
    for i in 0..120 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    depot.flush_index().unwrap();
    let expected = read_all(&depot, 120);
    drop(depot);
    let stored = hints(&root);
    assert!(
        stored.iter().all(|h| h.is_some()),
        "every indexed event has a hint: {stored:?}"
    );
    // Garbage, another event's record, a pack that does not exist, none at all: the same
    // events come back, each verified.
    for sql in [
        "UPDATE events SET at = at + 7",
        "UPDATE events SET at = (SELECT MIN(at) FROM events)",
        "UPDATE events SET at = (999 << 40) | 8",
        "UPDATE events SET at = -1",
        "UPDATE events SET at = NULL",
    ] {
        set_hints(&root, sql);
        let reopened = Depot::open_with(&root, options.clone()).unwrap();
        assert_eq!(read_all(&reopened, 120), expected, "after {sql}");
    }
}

#[test]
fn gc_points_the_hints_at_the_new_pack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let options = Options {
        pack_roll_size: Some(16 << 10),
        ..Default::default()
    };
    let depot = Depot::init_with(&root, options).unwrap();
    for i in 0..120 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    depot.flush_index().unwrap();
    let expected = read_all(&depot, 120);
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
    let packs: Vec<u64> = std::fs::read_dir(root.join("packs"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".idx")?
                .strip_prefix("pack-")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(packs.len(), 1, "gc leaves one sealed pack: {packs:?}");
    let stored = hints(&root);
    assert!(
        stored
            .iter()
            .all(|h| h.is_some_and(|at| (at >> 40) as u64 == packs[0])),
        "every hint names the new pack {}: {stored:?}",
        packs[0]
    );
    assert_eq!(read_all(&depot, 120), expected);
}

#[test]
fn a_version_1_index_is_upgraded_and_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let depot = Depot::init(&root).unwrap();
    for i in 0..30 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    depot.flush_index().unwrap();
    let expected = read_all(&depot, 30);
    drop(depot);
    // The layout the previous release wrote: no `at` column, schema version 1.
    {
        let conn = rusqlite::Connection::open(index_path(&root)).unwrap();
        conn.execute_batch(
            "ALTER TABLE events DROP COLUMN at; UPDATE meta SET value = 1 WHERE key = 'version';",
        )
        .unwrap();
    }
    let reopened = Depot::open(&root).unwrap();
    assert_eq!(read_all(&reopened, 30), expected);
    let conn = rusqlite::Connection::open(index_path(&root)).unwrap();
    let version: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
            r.get(0)
        })
        .unwrap();
    // Version 3 (command ids): an older index is emptied at open and rebuilt from history.
    assert_eq!(version, 3);
}

#[test]
fn a_small_key_log_threshold_writes_the_log_on_simulated_storage() {
    use depot::storage::{SimStorage, Storage as _};
    let storage = SimStorage::new();
    let options = Options {
        key_log_every: Some(200),
        ..Default::default()
    };
    let depot = Depot::init_on(std::sync::Arc::new(storage.clone()), "/d", options).unwrap();
    for i in 0..5 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    let names: Vec<String> = storage
        .read_dir(std::path::Path::new("/d/packs"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".keys")), "{names:?}");
}

//! fsck, gc, failed commands and the partition index's self-repair.

use std::time::Duration;

use depot::{
    Affix, Checkpoint, CommitRequest, Depot, Expected, GcOptions, LogInfo, ObjectId, RefEdit,
    RefName, RefValue,
};

use crate::common::*;

fn depot_with_history(n: u64) -> (tempfile::TempDir, Depot) {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    for i in 0..n {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    (dir, depot)
}

fn failed_checkpoint(depot: &Depot) -> ObjectId {
    let affix = Affix::new();
    let affix_id = depot::Object::Affix(affix.clone()).to_encoded().id();
    let checkpoint = Checkpoint::new(
        affix_id,
        depot.head().unwrap().into_iter().collect(),
        "s1",
        chrono::Utc::now(),
        r#"{"path":"accounts/a","name":"withdraw","params":{"amount":99}}"#,
    )
    .unwrap();
    depot.record_failure(&checkpoint, &affix).unwrap()
}

#[test]
fn fsck_is_clean_lists_unreachable_objects_and_accepts_failed_commands() {
    let (_dir, depot) = depot_with_history(20);
    let failed = failed_checkpoint(&depot);
    assert_eq!(depot.failures().unwrap(), vec![failed]);
    // An object nothing references.
    let stray = depot::Object::Event(ev("Stray", "{}")).to_encoded();
    depot.objects().write(std::slice::from_ref(&stray)).unwrap();
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.checkpoints, 20);
    // The workload's events are all distinct, so each is its own object.
    assert_eq!(report.events, 20 * 3);
    assert_eq!(report.failed_commands, 1);
    assert_eq!(report.unreachable, vec![stray.id()]);
    assert!(report.partitions_checked >= 21);
}

#[test]
fn fsck_reports_a_corrupt_object_and_a_dangling_ref() {
    let (dir, depot) = depot_with_history(5);
    let head = depot.head().unwrap().unwrap();
    drop(depot);
    // Flip one byte inside the active pack's last record (HEAD's checkpoint was written last).
    let packs = dir.path().join("d/packs");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() - 200;
    eprintln!("len {} flip at {at}", bytes.len());
    bytes[at] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();
    let depot = Depot::open(dir.path().join("d")).unwrap();
    let report = depot.fsck(|_| {}).unwrap();
    assert!(!report.is_clean(), "{report:?} head {head}");

    let (_dir2, other) = depot_with_history(1);
    let dangling = ObjectId::of(b"nothing");
    std::fs::write(
        other.root().unwrap().join("refs/heads/broken"),
        dangling.to_string(),
    )
    .unwrap();
    let report = other.fsck(|_| {}).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.id == Some(dangling) && p.message.contains("missing checkpoint")));
}

#[test]
fn gc_folds_packs_and_prunes_only_old_unreachable_objects() {
    let dir = tempfile::tempdir().unwrap();
    let options = depot::Options {
        pack_roll_size: Some(4096),
        ..Default::default()
    };
    let depot = Depot::init_with(dir.path().join("d"), options).unwrap();
    for i in 0..60 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    let failed = failed_checkpoint(&depot);
    let stray = depot::Object::Event(ev("Stray", "{}")).to_encoded();
    depot.objects().write(std::slice::from_ref(&stray)).unwrap();
    let head = depot.head().unwrap();

    let report = depot.gc(&GcOptions::default(), |_| {}).unwrap();
    assert!(report.packs_before > 2);
    assert_eq!(report.pruned, 0);
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert!(depot.objects().contains(&stray.id()).unwrap());

    // Young unreachable objects survive a prune with a grace period...
    let report = depot
        .gc(
            &GcOptions {
                prune_older_than: Some(Duration::from_secs(3600)),
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(report.pruned, 0);
    // ...and go with none.
    let report = depot
        .gc(
            &GcOptions {
                prune_older_than: Some(Duration::ZERO),
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(report.pruned, 1, "only the stray event");
    assert!(!depot.objects().contains(&stray.id()).unwrap());
    assert!(
        depot.objects().contains(&failed).unwrap(),
        "failed commands are kept"
    );
    assert_eq!(depot.head().unwrap(), head);
    let reopened = Depot::open(dir.path().join("d")).unwrap();
    let fsck = reopened.fsck(|_| {}).unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.checkpoints, 60);
    commit_retrying(&reopened, workload(99, "s1"), "after gc");
    assert!(reopened.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_non_fast_forward_move_rebuilds_the_index() {
    let (_dir, depot) = depot_with_history(10);
    let old = depot.resolve_revision("HEAD~5").unwrap();
    assert_eq!(depot.partition_version(&p("session/s1")).unwrap(), 10);
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: Expected::MustExist,
            new: Some(RefValue::Direct(old)),
            log: LogInfo {
                session: "s1".into(),
                message: "reset".into(),
            },
        }])
        .unwrap();
    assert_eq!(depot.partition_version(&p("session/s1")).unwrap(), 5);
    assert_eq!(depot.partition_version(&p("identity/7")).unwrap(), 0);
    commit_retrying(&depot, workload(50, "s1"), "diverge");
    assert_eq!(depot.partition_version(&p("session/s1")).unwrap(), 6);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn update_refs_is_a_compare_and_swap_through_the_journal() {
    let (dir, depot) = depot_with_history(3);
    let head = depot.head().unwrap().unwrap();
    let older = depot.resolve_revision("HEAD~2").unwrap();
    let stale = RefEdit {
        name: RefName::master(),
        expected: Expected::MustBe(older),
        new: Some(RefValue::Direct(older)),
        log: LogInfo::default(),
    };
    assert!(depot.update_refs(&[stale]).unwrap_err().is_conflict());
    let not_a_checkpoint = depot.read_checkpoint(&head).unwrap().affix();
    let bad = RefEdit::cas(
        RefName::master(),
        Some(head),
        not_a_checkpoint,
        LogInfo::default(),
    );
    assert!(
        depot.update_refs(&[bad]).is_err(),
        "refs only point at checkpoints"
    );
    let tag = RefName::new("refs/tags/v1").unwrap();
    depot
        .update_refs(&[RefEdit::cas(tag.clone(), None, older, LogInfo::default())])
        .unwrap();
    drop(depot);
    let reopened = Depot::open(dir.path().join("d")).unwrap();
    assert_eq!(reopened.resolve_revision("v1").unwrap(), older);
    assert_eq!(reopened.reflog(&tag).unwrap().len(), 1);
}

#[test]
fn an_interrupted_index_is_caught_up_and_reindex_rebuilds_it() {
    let (dir, depot) = depot_with_history(8);
    drop(depot);
    std::fs::remove_file(dir.path().join("d/index.sqlite")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("d/index.sqlite-wal"));
    let _ = std::fs::remove_file(dir.path().join("d/index.sqlite-shm"));
    let depot = Depot::open(dir.path().join("d")).unwrap();
    assert_eq!(depot.partition_version(&p("session/s1")).unwrap(), 8);
    let (checkpoints, partitions, events) = depot.reindex().unwrap();
    assert_eq!((checkpoints, partitions, events), (8, 9, 24));
}

#[test]
fn memory_depots_record_failures_too() {
    let depot = Depot::in_memory().unwrap();
    let failed = failed_checkpoint(&depot);
    assert_eq!(depot.failures().unwrap(), vec![failed]);
    let request = CommitRequest::new(None, workload(1, "s"), "bad session", "x");
    assert!(depot.commit(request).is_err(), "sessions are one token");
}

#[test]
fn d9_an_index_that_fails_while_open_is_replaced_by_one_in_memory() {
    let (dir, depot) = depot_with_history(3);
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = warnings.clone();
    depot.on_warning(move |w| sink.lock().unwrap().push(w.to_owned()));
    depot.flush_index().unwrap();
    // Break the open index underneath this handle: its queries fail from now on.
    let conn = rusqlite::Connection::open(dir.path().join("d/index.sqlite")).unwrap();
    conn.execute_batch("DROP TABLE events;").unwrap();
    drop(conn);
    commit_retrying(&depot, workload(3, "s1"), "x");
    for n in 0..4 {
        let events = depot
            .partition_events(&p(&format!("identity/{n}")))
            .unwrap();
        assert_eq!(events.len(), 2, "identity/{n}");
    }
    assert_eq!(depot.partition_events(&p("session/s1")).unwrap().len(), 4);
    assert_eq!(depot.partitions("**").unwrap().len(), 5);
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let warnings = warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("built in memory"), "{warnings:?}");
    // reindex recreates the file from nothing, and the handle uses it again.
    assert_eq!(depot.reindex().unwrap(), (4, 5, 12));
    drop(depot);
    let depot = Depot::open(dir.path().join("d")).unwrap();
    assert_eq!(depot.partition_events(&p("session/s1")).unwrap().len(), 4);
}

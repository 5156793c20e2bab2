//! Idempotent commits on a files depot: a command id is applied once, whoever races with it,
//! and the lookup sees every committed checkpoint, indexed or not.

use depot::{Depot, HistoryOrder};

use crate::common::{command_request, ev, p, race_one_command_id};

fn open_request(depot: &Depot, id: &str) -> depot::CommitRequest {
    command_request(depot, id, vec![(p("accounts/a"), ev("Opened", "{}"))])
}

#[test]
fn two_handles_racing_with_one_command_id_write_one_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let a = Depot::init(dir.path().join("d")).unwrap();
    let b = Depot::open(dir.path().join("d")).unwrap();
    race_one_command_id(&a, &b, 40);
}

#[test]
fn threads_of_one_handle_with_one_command_id_share_one_checkpoint() {
    // One handle: the requests meet in one group-commit batch (or in consecutive ones).
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let barrier = std::sync::Barrier::new(4);
    for round in 0..20 {
        let id = format!("same-{round}");
        let results: Vec<depot::Committed> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let (depot, barrier, id) = (&depot, &barrier, &id);
                    s.spawn(move || {
                        let events = vec![(p(&format!("t/{w}")), ev("Ran", "{}"))];
                        let request = command_request(depot, id, events);
                        barrier.wait();
                        depot.commit(request).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results
            .iter()
            .all(|r| r.checkpoint == results[0].checkpoint));
        assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    }
    assert_eq!(depot.counts().unwrap().0, 20);
}

#[test]
fn a_repeat_writes_nothing_and_answers_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let depot = Depot::init(&path).unwrap();
    let first = depot.commit(open_request(&depot, "open-a")).unwrap();
    assert!(!first.replayed);
    let before = crate::common::snapshot(&path);
    let again = depot.commit(open_request(&depot, "open-a")).unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.checkpoint, again.parent, again.affix, &again.events),
        (first.checkpoint, first.parent, first.affix, &first.events)
    );
    assert_eq!(
        crate::common::snapshot(&path),
        before,
        "nothing was written"
    );
    // A commit without an id is as it always was: no id field (a sealed depot's `message-data`
    // and every new checkpoint's `log` aside), its own checkpoint.
    let plain = crate::common::commit_retrying(&depot, vec![(p("accounts/a"), ev("X", "{}"))], "x");
    let checkpoint = depot.read_checkpoint(&plain.checkpoint).unwrap();
    assert_eq!(
        checkpoint
            .fields()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "message-data")
            .collect::<Vec<_>>(),
        ["date", "log", "session"]
    );
}

#[test]
fn the_lookup_sees_checkpoints_the_index_file_lost_and_reindex_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let original = {
        let depot = Depot::init(&path).unwrap();
        let c = depot.commit(open_request(&depot, "open-a")).unwrap();
        depot
            .commit(command_request(
                &depot,
                "other",
                vec![(p("b/1"), ev("B", "{}"))],
            ))
            .unwrap();
        c.checkpoint
    };
    // The derived index is gone (as after a crash before it was written, or a user's rm).
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(path.join(format!("index.sqlite{suffix}")));
    }
    let depot = Depot::open(&path).unwrap();
    let again = depot.commit(open_request(&depot, "open-a")).unwrap();
    assert!(again.replayed);
    assert_eq!(again.checkpoint, original);
    depot.reindex().unwrap();
    assert_eq!(depot.applied_command("open-a").unwrap(), Some(original));
    assert_eq!(depot.applied_command("never").unwrap(), None);
    // The index file itself holds the command ids after the rebuild.
    drop(depot);
    let conn = rusqlite::Connection::open(path.join("index.sqlite")).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM checkpoints WHERE command_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn an_index_of_version_2_is_upgraded_by_a_rebuild_that_keeps_the_command_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let original = {
        let depot = Depot::init(&path).unwrap();
        depot
            .commit(open_request(&depot, "open-a"))
            .unwrap()
            .checkpoint
    };
    {
        // What an older retro leaves: version 2, no command ids.
        let conn = rusqlite::Connection::open(path.join("index.sqlite")).unwrap();
        conn.execute_batch(
            "DROP INDEX checkpoints_by_command_id;
             ALTER TABLE checkpoints DROP COLUMN command_id;
             UPDATE meta SET value = 2 WHERE key = 'version';",
        )
        .unwrap();
    }
    let depot = Depot::open(&path).unwrap();
    assert_eq!(depot.applied_command("open-a").unwrap(), Some(original));
    assert_eq!(depot.counts().unwrap().0, 1);
}

#[test]
fn on_a_ref_the_index_does_not_follow_the_lookup_walks_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    depot.commit(open_request(&depot, "on-master")).unwrap();
    let other = depot::RefName::new("refs/heads/other").unwrap();
    let mut request = command_request(&depot, "on-other", vec![(p("o/1"), ev("O", "{}"))]);
    request.target = other.clone();
    request.base = depot::Base::Tip;
    let first = depot.commit(request.clone()).unwrap();
    let again = depot.commit(request).unwrap();
    assert!(again.replayed);
    assert_eq!(again.checkpoint, first.checkpoint);
    // Not applied on HEAD's branch: the scope is the target's history.
    assert_eq!(depot.applied_command("on-other").unwrap(), None);
    let head = depot.resolve_ref(&other).unwrap().1;
    let mut n = 0;
    depot
        .walk(head.unwrap(), HistoryOrder::FirstParent, |_, _| {
            n += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(n, 1, "the repeat added nothing to the other branch");
}

#[test]
fn fields_the_depot_writes_itself_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let mut request = open_request(&depot, "x");
    request.fields.push((
        depot::FieldKey::new("session").unwrap(),
        depot::FieldValue::new("s2").unwrap(),
    ));
    let err = depot.commit(request).unwrap_err();
    assert_eq!(err.class(), depot::ErrorClass::Invalid, "{err}");
    assert_eq!(depot.head().unwrap(), None);
}

#[test]
fn one_batch_to_another_ref_checks_ids_against_what_is_stored_and_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let other = depot::RefName::new("refs/heads/other").unwrap();
    let request = |id: &str, partition: &str| {
        let mut r = command_request(&depot, id, vec![(p(partition), ev("O", "{}"))]);
        r.target = other.clone();
        r.base = depot::Base::Tip;
        r
    };
    depot.commit(request("first", "o/0")).unwrap();
    // One batch: a new id on top of the stored head, the stored id again, the new id again.
    let results = depot.commit_many(vec![
        request("second", "o/1"),
        request("first", "o/0"),
        request("second", "o/1"),
    ]);
    let results: Vec<depot::Committed> = results.into_iter().map(Result::unwrap).collect();
    assert!(!results[0].replayed);
    assert!(results[1].replayed);
    assert!(results[2].replayed);
    assert_eq!(results[2].checkpoint, results[0].checkpoint);
    let head = depot.resolve_ref(&other).unwrap().1.unwrap();
    assert_eq!(head, results[0].checkpoint);
}

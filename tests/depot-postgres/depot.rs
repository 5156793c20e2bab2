//! The depot on PostgreSQL, through the library: the partition index lives in the database and is
//! appended by the commit's own transaction; other hosts read it without catching up; moves that
//! are not fast-forwards rebuild it; fsck compares it with a replay of history.

use std::time::Duration;

use depot::{Depot, Expected, LogInfo, RefEdit, RefName, RefValue};

use crate::common::{commit_retrying, ev, p};

fn fresh() -> (String, Depot) {
    let url = pgtest::PgServer::shared().create_database();
    let depot = depot_postgres::init(&url).unwrap();
    (url, depot)
}

fn sql_count(url: &str, query: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.query_one(query, &[]).unwrap().get(0)
}

/// Commits `Deposited {"n": n}` to `accounts/a`.
fn deposit(depot: &Depot, n: u64) -> depot::Committed {
    commit_retrying(
        depot,
        vec![(p("accounts/a"), ev("Deposited", &format!(r#"{{"n":{n}}}"#)))],
        "deposit",
    )
}

fn indexed_head(url: &str) -> Option<Vec<u8>> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .query_opt(
            "SELECT id FROM retro_index_checkpoints ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn the_index_is_written_by_the_commit_itself() {
    let (url, depot) = fresh();
    let mut last = None;
    for i in 0..5 {
        let committed = commit_retrying(
            &depot,
            vec![
                (p("accounts/a"), ev("Deposited", &format!(r#"{{"n":{i}}}"#))),
                (p("audit/log"), ev("Noted", &format!(r#"{{"n":{i}}}"#))),
            ],
            "deposit",
        );
        // No read has happened: the rows are there because the commit wrote them.
        assert_eq!(
            indexed_head(&url).as_deref(),
            Some(&committed.checkpoint.as_bytes()[..])
        );
        last = Some(committed.checkpoint);
    }
    assert_eq!(
        sql_count(
            &url,
            "SELECT count(*) FROM retro_index_events WHERE partition = 'accounts/a'"
        ),
        5
    );
    // Another host: a fresh depot handle reads the same rows, nothing to catch up.
    let other = depot_postgres::open(&url).unwrap();
    let events = other.partition_events(&p("accounts/a")).unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[4].checkpoint, last.unwrap());
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(other.partition_version(&p("audit/log")).unwrap(), 5);
    let partitions = other.partitions("**").unwrap();
    assert_eq!(partitions.len(), 2);
    assert!(other.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_move_that_is_not_a_fast_forward_rebuilds_the_index() {
    let (url, depot) = fresh();
    let ids: Vec<_> = (0..4).map(|i| deposit(&depot, i).checkpoint).collect();
    // Rewind master to the second checkpoint (update-ref): the index is now ahead of HEAD.
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: Expected::MustBe(ids[3]),
            new: Some(RefValue::Direct(ids[1])),
            log: LogInfo::default(),
        }])
        .unwrap();
    let reader = depot_postgres::open(&url).unwrap();
    assert_eq!(reader.partition_events(&p("accounts/a")).unwrap().len(), 2);
    assert_eq!(
        sql_count(&url, "SELECT count(*) FROM retro_index_checkpoints"),
        2
    );
    // And commits continue to append in their own transaction from there.
    let next = deposit(&reader, 9);
    assert_eq!(
        indexed_head(&url).as_deref(),
        Some(&next.checkpoint.as_bytes()[..])
    );
    let versions: Vec<u64> = depot
        .partition_events(&p("accounts/a"))
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn fsck_finds_a_damaged_index_and_reindex_repairs_it() {
    let (url, depot) = fresh();
    for i in 0..3 {
        deposit(&depot, i);
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "DELETE FROM retro_index_events WHERE partition = 'accounts/a' AND n = 3",
            &[],
        )
        .unwrap();
    let report = depot.fsck(|_| {}).unwrap();
    assert!(!report.is_clean(), "fsck noticed the missing index row");
    let (checkpoints, partitions, events) = depot.reindex().unwrap();
    assert_eq!((checkpoints, partitions, events), (3, 1, 3));
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn writers_on_several_hosts_keep_one_index() {
    let (url, _depot) = fresh();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let host = depot_postgres::open(&url).unwrap();
                for i in 0..25 {
                    commit_retrying(
                        &host,
                        vec![
                            (
                                p(&format!("accounts/h{t}")),
                                ev("Deposited", &format!(r#"{{"i":{i}}}"#)),
                            ),
                            (
                                p("audit/log"),
                                ev("Noted", &format!(r#"{{"t":{t},"i":{i}}}"#)),
                            ),
                        ],
                        "deposit",
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let reader = depot_postgres::open(&url).unwrap();
    for t in 0..4 {
        assert_eq!(
            reader
                .partition_version(&p(&format!("accounts/h{t}")))
                .unwrap(),
            25
        );
    }
    assert_eq!(reader.partition_version(&p("audit/log")).unwrap(), 100);
    assert!(
        reader.fsck(|_| {}).unwrap().is_clean(),
        "the index agrees with a full replay"
    );
}

#[test]
fn gc_prunes_old_unreachable_rows_and_keeps_the_rest() {
    let (url, depot) = fresh();
    for i in 0..3 {
        deposit(&depot, i);
    }
    let orphans: Vec<depot::EncodedObject> = (0..5)
        .map(|i| depot::Object::Event(ev("Orphaned", &format!(r#"{{"n":{i}}}"#))).to_encoded())
        .collect();
    depot.write_objects(&orphans).unwrap();
    let total = sql_count(&url, "SELECT count(*) FROM retro_objects");

    // Young orphans survive a grace period.
    let options = depot::GcOptions {
        prune_older_than: Some(std::time::Duration::from_secs(3600)),
    };
    let report = depot.gc(&options, |_| {}).unwrap();
    assert_eq!((report.kept, report.pruned), (total as u64, 0));

    // Then they age (set in the table, not waited for), and an hour's grace no longer keeps them.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE retro_objects SET written = now() - interval '2 hours'",
            &[],
        )
        .unwrap();
    let report = depot.gc(&options, |_| {}).unwrap();
    assert_eq!(report.pruned, 5);
    assert_eq!(report.kept, total as u64 - 5);
    for orphan in &orphans {
        assert!(depot.objects().read(&orphan.id()).unwrap().is_none());
    }
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
    assert_eq!(depot.partition_events(&p("accounts/a")).unwrap().len(), 3);
}

#[test]
fn a_commit_reusing_an_old_unreachable_object_marks_it_young() {
    let (url, depot) = fresh();
    // An unreachable event row from long ago (a deleted branch's, say).
    let event = ev("Deposited", r#"{"amount":5}"#);
    let orphan = depot::Object::Event(event.clone()).to_encoded();
    depot.write_objects(std::slice::from_ref(&orphan)).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE retro_objects SET written = now() - interval '30 days'",
            &[],
        )
        .unwrap();
    // A new commit emits the identical event: the row is re-marked as written now, so a prune
    // that judged it unreachable a moment earlier cannot delete it any more.
    commit_retrying(&depot, vec![(p("accounts/a"), event)], "deposit");
    let age: f64 = client
        .query_one(
            "SELECT extract(epoch FROM now() - written)::float8 FROM retro_objects WHERE id = $1",
            &[&&orphan.id().as_bytes()[..]],
        )
        .unwrap()
        .get(0);
    assert!(age < 60.0, "re-marked as written now, not {age} s ago");
    let report = depot
        .gc(
            &depot::GcOptions {
                prune_older_than: Some(std::time::Duration::from_secs(86_400)),
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(report.pruned, 0);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn identical_events_in_one_commit_are_stored_once_and_indexed_twice() {
    let (_url, depot) = fresh();
    let twice = ev("Deposited", r#"{"amount":1}"#);
    commit_retrying(
        &depot,
        vec![(p("accounts/a"), twice.clone()), (p("accounts/a"), twice)],
        "deposit twice",
    );
    let events = depot.partition_events(&p("accounts/a")).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, events[1].id);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_commit_waiting_for_the_ref_lock_holds_no_row_a_prune_needs() {
    let (url, depot) = fresh();
    let event = ev("Deposited", r#"{"amount":7}"#);
    let orphan = depot::Object::Event(event.clone()).to_encoded();
    depot.write_objects(std::slice::from_ref(&orphan)).unwrap();

    // Stand in for gc: hold the ref lock, as a prune does.
    let guard = depot_postgres::RefLockGuard::acquire(&url).unwrap();
    let writer_url = url.clone();
    let writer = std::thread::spawn(move || {
        let host = depot_postgres::open(&writer_url).unwrap();
        commit_retrying(&host, vec![(p("accounts/a"), event)], "deposit")
    });
    // Wait until the commit is blocked on a lock (the ref lock the guard holds).
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    benchkit::wait_until(
        "the commit waiting for the ref lock",
        Duration::from_secs(30),
        || {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[],
                )
                .unwrap()
                .get(0);
            waiting > 0
        },
    )
    .unwrap();
    // The prune deletes the old row: the waiting commit must not hold a lock on it (else this
    // would wait for the commit, which waits for the guard: a deadlock PostgreSQL cannot see).
    client
        .batch_execute("SET statement_timeout = '5s'")
        .unwrap();
    let deleted = client
        .execute(
            "DELETE FROM retro_objects WHERE id = $1",
            &[&&orphan.id().as_bytes()[..]],
        )
        .expect("the delete waited for the committer, which waits for the ref lock: a deadlock");
    assert_eq!(deleted, 1);
    drop(guard);
    let committed = writer.join().unwrap();
    // The commit wrote the object again in its own transaction: nothing it names is missing.
    assert!(depot.objects().read(&orphan.id()).unwrap().is_some());
    assert_eq!(depot.head().unwrap(), Some(committed.checkpoint));
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn two_hosts_racing_with_one_command_id_write_one_checkpoint() {
    // Two handles, two connections: what two hosts have. The command-id check runs in each
    // host's plan, and the ref's compare-and-swap in retro_commit sends the loser back to plan
    // again, where it finds the winner's checkpoint.
    let (url, a) = fresh();
    let b = depot_postgres::open(&url).unwrap();
    crate::common::race_one_command_id(&a, &b, 25);
    assert_eq!(
        sql_count(
            &url,
            "SELECT count(*) FROM retro_command_ids k
             JOIN retro_index_checkpoints c ON c.id = k.checkpoint"
        ),
        25,
        "one indexed checkpoint per command id (a loser's row names a checkpoint never indexed)"
    );
}

#[test]
fn a_command_id_is_found_by_a_host_that_did_not_write_it() {
    let (url, a) = fresh();
    let request =
        crate::common::command_request(&a, "open-a", vec![(p("accounts/a"), ev("Opened", "{}"))]);
    let first = a.commit(request).unwrap();
    let b = depot_postgres::open(&url).unwrap();
    assert_eq!(b.applied_command("open-a").unwrap(), Some(first.checkpoint));
    let request =
        crate::common::command_request(&b, "open-a", vec![(p("accounts/a"), ev("Opened", "{}"))]);
    let again = b.commit(request).unwrap();
    assert!(again.replayed);
    assert_eq!(again.checkpoint, first.checkpoint);
    assert_eq!(
        sql_count(&url, "SELECT count(*) FROM retro_index_checkpoints"),
        1
    );
}

/// A PostgreSQL depot writes plain events and refuses a redaction (its rows would not be
/// erased: docs/redaction.md), before writing anything.
#[test]
fn a_redaction_is_refused_and_nothing_is_written() {
    let (_url, depot) = fresh();
    assert!(!depot.seals_events());
    let committed = deposit(&depot, 1);
    let err = depot
        .redact(&committed.events, "erasure", "admin")
        .unwrap_err();
    assert_eq!(err.class(), depot::ErrorClass::Invalid, "{err}");
    assert!(err.to_string().contains("not supported"), "{err}");
    assert_eq!(depot.head().unwrap(), Some(committed.checkpoint));
    assert!(depot.redactions().is_empty());
}

/// Every checkpoint a PostgreSQL depot commits carries its `log` field, right across two hosts
/// (each extends the other's checkpoints, walking once), and proofs verify.
#[test]
fn checkpoints_carry_their_log_across_hosts_and_prove_their_events() {
    let (url, one) = fresh();
    let two = depot_postgres::open(&url).unwrap();
    let mut commits = Vec::new();
    for i in 0..6 {
        let host = if i % 2 == 0 { &one } else { &two };
        commits.push(deposit(host, i));
    }
    for (i, committed) in commits.iter().enumerate() {
        let checkpoint = one.read_checkpoint(&committed.checkpoint).unwrap();
        assert_eq!(checkpoint.log_head().map(|h| h.size), Some(i as u64));
    }
    let report = one.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let head = commits[5].checkpoint;
    let proven = two
        .prove(commits[1].events[0], head)
        .unwrap()
        .verify(Some(head))
        .unwrap();
    assert_eq!(
        (proven.checkpoint, proven.leaf, proven.size),
        (commits[1].checkpoint, Some(1), 5)
    );
}

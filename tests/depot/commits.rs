//! Commits, reads and the partition index on every layout.

use depot::{Base, CommitRequest, Depot, Error, HistoryOrder, Object, RefName};

use crate::common::*;

fn layouts() -> Vec<(&'static str, Depot, Option<tempfile::TempDir>)> {
    let native = tempfile::tempdir().unwrap();
    let depot = Depot::init(native.path().join("d")).unwrap();
    vec![
        ("memory", Depot::in_memory().unwrap(), None),
        ("native", depot, Some(native)),
    ]
}

#[test]
fn a_commit_moves_head_and_its_events_read_back_in_order() {
    for (layout, depot, _dir) in layouts() {
        assert_eq!(depot.head().unwrap(), None, "{layout}");
        let first = depot
            .commit(CommitRequest::new(
                None,
                workload(1, "s1"),
                "s1",
                r#"{"path":"identity/1"}"#,
            ))
            .unwrap();
        let second = depot
            .commit(CommitRequest::new(
                Some(first.checkpoint),
                workload(1, "s1"),
                "s1",
                "again",
            ))
            .unwrap();
        assert_eq!(depot.head().unwrap(), Some(second.checkpoint), "{layout}");
        assert_eq!(second.parent, Some(first.checkpoint));
        let checkpoint = depot.read_checkpoint(&second.checkpoint).unwrap();
        assert_eq!(checkpoint.session(), "s1");
        assert!(checkpoint.date().is_some());
        assert_eq!(checkpoint.message(), b"again");
        let events = depot.partition_events(&p("identity/1")).unwrap();
        assert_eq!(events.len(), 4, "{layout}");
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(events[0].checkpoint, first.checkpoint);
        assert_eq!(events[3].checkpoint, second.checkpoint);
        assert_eq!(events[0].event.name().as_str(), "IdentityCreated");
        assert_eq!(depot.partition_events(&p("session/s1")).unwrap().len(), 2);
        assert_eq!(depot.partition_version(&p("identity/2")).unwrap(), 0);
        let mut walked = Vec::new();
        depot
            .walk(second.checkpoint, HistoryOrder::FirstParent, |id, _| {
                walked.push(id);
                Ok(true)
            })
            .unwrap();
        assert_eq!(walked, vec![second.checkpoint, first.checkpoint]);
    }
}

#[test]
fn a_stale_base_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let first = depot
        .commit(CommitRequest::new(None, workload(1, "s1"), "s1", "one"))
        .unwrap();
    let before = snapshot(&dir.path().join("d"));
    let err = depot
        .commit(CommitRequest::new(None, workload(2, "s1"), "s1", "stale"))
        .unwrap_err();
    match &err {
        Error::Conflict {
            name,
            expected,
            actual,
        } => {
            assert_eq!(name, &RefName::master());
            assert_eq!(*expected, None);
            assert_eq!(*actual, Some(first.checkpoint));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(snapshot(&dir.path().join("d")), before);
}

#[test]
fn a_stale_base_on_disjoint_partitions_is_rebased_without_conflict() {
    for (layout, depot, _dir) in layouts() {
        let base = depot
            .commit(CommitRequest::new(None, workload(1, "a"), "s1", "one"))
            .unwrap();
        let moved = depot
            .commit(CommitRequest::new(
                Some(base.checkpoint),
                workload(2, "b"),
                "s1",
                "two",
            ))
            .unwrap();
        let mut request =
            CommitRequest::new(Some(base.checkpoint), workload(3, "c"), "s1", "three");
        request.rebase = true;
        let rebased = depot.commit(request).unwrap();
        assert!(rebased.rebased, "{layout}");
        assert_eq!(rebased.parent, Some(moved.checkpoint));

        // Touching a partition that changed since the base is a conflict even with rebase on.
        let mut overlapping =
            CommitRequest::new(Some(base.checkpoint), workload(2, "d"), "s1", "four");
        overlapping.rebase = true;
        assert!(
            depot.commit(overlapping).unwrap_err().is_conflict(),
            "{layout}"
        );
        let mut read_conflict =
            CommitRequest::new(Some(base.checkpoint), workload(9, "e"), "s1", "five");
        read_conflict.rebase = true;
        read_conflict.reads = vec![p("identity/3")];
        assert!(
            depot.commit(read_conflict).unwrap_err().is_conflict(),
            "{layout}"
        );
    }
}

#[test]
fn a_native_depot_reopens_with_everything_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let committed = {
        let depot = Depot::init(&path).unwrap();
        let mut last = None;
        for n in 0..50 {
            last = Some(commit_retrying(&depot, workload(n, "s1"), "x"));
        }
        last.unwrap()
    };
    let depot = Depot::open(&path).unwrap();
    assert_eq!(depot.head().unwrap(), Some(committed.checkpoint));
    assert_eq!(depot.partition_events(&p("session/s1")).unwrap().len(), 50);
    let reflog = depot.reflog(&RefName::head()).unwrap();
    assert_eq!(reflog.len(), 50);
    assert_eq!(reflog[49].new, Some(committed.checkpoint));
    assert!(
        Depot::init(&path).is_err(),
        "init refuses an existing depot"
    );
}

#[test]
fn tip_commits_chain_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let requests: Vec<_> = (0..100)
        .map(|n| {
            let mut r = CommitRequest::new(None, workload(n, "bulk"), "import", "bulk");
            r.base = Base::Tip;
            r
        })
        .collect();
    let results = depot.commit_many(requests);
    let ids: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    for pair in ids.windows(2) {
        assert_eq!(pair[1].parent, Some(pair[0].checkpoint));
    }
    assert_eq!(depot.partition_version(&p("session/bulk")).unwrap(), 100);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn glob_queries_return_matching_events_oldest_first() {
    let depot = Depot::in_memory().unwrap();
    for n in 0..5 {
        commit_retrying(&depot, workload(n, "s1"), "x");
    }
    let mut seen = Vec::new();
    depot
        .events_matching("identity/*", None, |e| {
            seen.push((e.partition.to_string(), e.version));
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[0], ("identity/0".to_owned(), 1));
    assert_eq!(seen[9], ("identity/4".to_owned(), 2));
    let mut all = 0;
    depot
        .events_matching("**", None, |_| {
            all += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(all, 15);
    let partitions = depot.partitions("identity/*").unwrap();
    assert_eq!(partitions.len(), 5);
    assert!(depot.partitions("[").is_err());
}

#[test]
fn many_partitions_stream_through_the_checkpoint_walk_in_the_same_order() {
    let depot = Depot::in_memory().unwrap();
    for n in 0..80 {
        commit_retrying(&depot, workload(n, "s1"), "x");
    }
    let head = depot.head().unwrap().unwrap();
    let since = depot.resolve_revision("HEAD~10").unwrap();
    let mut via_walk = Vec::new();
    depot
        .events_matching("identity/**", Some(since), |e| {
            via_walk.push((e.checkpoint, e.partition.to_string(), e.version));
            Ok(true)
        })
        .unwrap();
    assert_eq!(via_walk.len(), 20);
    assert_eq!(via_walk.last().unwrap().0, head);
    assert_eq!(via_walk[0].1, "identity/70");
}

#[test]
fn the_checkpoint_is_byte_compatible_with_go_retro() {
    let depot = Depot::in_memory().unwrap();
    let committed = commit_retrying(
        &depot,
        workload(1, "s1"),
        r#"{"path":"identity/1","name":"create"}"#,
    );
    let raw = depot.read_object(&committed.checkpoint).unwrap();
    let text = String::from_utf8(raw.bytes().to_vec()).unwrap();
    let (header, body) = text.split_once('\0').unwrap();
    assert_eq!(header, format!("checkpoint {}", body.len()));
    assert!(body.starts_with(&format!("affix {}\n", committed.affix)));
    assert!(body.contains("\nsession s1\n\n{\"path\""));
    assert!(matches!(raw.decode().unwrap(), Object::Checkpoint(_)));
}

#[test]
fn two_handles_interleaving_commits_both_read_every_event() {
    // Each handle keeps an in-memory tail of the index; the other's commits must still show.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let a = Depot::init(&path).unwrap();
    let b = Depot::open(&path).unwrap();
    for n in 0..300u64 {
        let writer = if n % 3 == 0 { &a } else { &b };
        commit_retrying(writer, workload(n, "shared"), "x");
        if n % 50 == 0 {
            assert_eq!(a.partition_version(&p("session/shared")).unwrap(), n + 1);
            assert_eq!(b.partition_version(&p("session/shared")).unwrap(), n + 1);
        }
    }
    for depot in [&a, &b] {
        let events = depot.partition_events(&p("session/shared")).unwrap();
        assert_eq!(events.len(), 300);
        assert!(events.windows(2).all(|w| w[0].version + 1 == w[1].version));
        assert_eq!(depot.partitions("identity/*").unwrap().len(), 300);
    }
    drop(a);
    drop(b);
    let reopened = Depot::open(&path).unwrap();
    assert!(reopened.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_stale_handle_flushing_its_index_tail_never_rewinds_the_shared_index() {
    // Regression (found by `make torture`): a handle whose tail was behind SQLite used to
    // rebuild SQLite back to its own tip, and another handle then read too few events.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let a = Depot::init(&path).unwrap();
    let partition = p("session/s");
    for n in 0..3 {
        commit_retrying(&a, workload(n, "s"), "a");
    }
    a.flush_index().unwrap();
    let b = Depot::open(&path).unwrap();
    b.catch_up_index().unwrap();
    for n in 3..6 {
        commit_retrying(&b, workload(n, "s"), "b");
    }
    for n in 6..10 {
        commit_retrying(&a, workload(n, "s"), "a");
    }
    a.flush_index().unwrap();
    commit_retrying(&a, workload(10, "s"), "a");
    b.flush_index().unwrap();
    assert_eq!(a.partition_events(&partition).unwrap().len(), 11);
    assert_eq!(b.partition_events(&partition).unwrap().len(), 11);
    let (head, events) = b.partition_snapshot(&partition).unwrap();
    assert_eq!(head, a.head().unwrap());
    assert_eq!(events.len(), 11);
}

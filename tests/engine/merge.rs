//! `engine::merge` as consumers see it: a subscription following the branch receives a disjoint
//! merge as one delivery of the events it brings (each once, versions continuing), and a replay
//! as one delivery per replayed command; a writer racing a merge never loses its update.

use std::sync::Arc;

use depot::{Delivery, Depot, Expected, LogInfo, ObjectId, RefEdit, RefName, RefValue};
use engine::merge::{merge, MergeOutcome};
use engine::{example, Engine};

fn feature() -> RefName {
    RefName::new("refs/heads/feature").unwrap()
}

fn apply(engine: &Engine, command: &str) -> ObjectId {
    engine.apply("cli", command.as_bytes()).unwrap().checkpoint
}

fn deposit(who: &str, amount: u64) -> String {
    format!(r#"{{"path":"accounts/{who}","name":"deposit","params":{{"amount":{amount}}}}}"#)
}

/// A native bank depot with alice and bob opened on master and `feature` branched there; the
/// engines for master and for feature.
fn setup() -> (tempfile::TempDir, Arc<Depot>, Engine, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::init(dir.path().join("d")).unwrap());
    let manifest = example::bank_manifest().unwrap();
    let master = Engine::new(depot.clone(), manifest.clone());
    apply(
        &master,
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
    );
    let fork = apply(
        &master,
        r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#,
    );
    depot
        .update_refs(&[RefEdit {
            name: feature(),
            expected: Expected::MustNotExist,
            new: Some(RefValue::Direct(fork)),
            log: LogInfo::default(),
        }])
        .unwrap();
    let on_feature = Engine::new(depot.clone(), manifest).with_ref(feature());
    (dir, depot, master, on_feature)
}

/// A delivered checkpoint: its id and its events as (partition, name, version).
type Delivered = (ObjectId, Vec<(String, String, u64)>);

fn deliveries(sub: &mut depot::Subscription<'_>) -> Vec<Delivered> {
    let mut out = Vec::new();
    while let Some(delivery) = sub.poll().unwrap() {
        match delivery {
            Delivery::Checkpoint { id, events, .. } => out.push((
                id,
                events
                    .iter()
                    .map(|e| {
                        (
                            e.partition.to_string(),
                            e.event.name().to_string(),
                            e.version,
                        )
                    })
                    .collect(),
            )),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[test]
fn a_subscriber_receives_a_disjoint_merge_as_the_events_it_brings() {
    let (_dir, depot, master, on_feature) = setup();
    apply(&on_feature, &deposit("bob", 20));
    let theirs = apply(&on_feature, &deposit("bob", 30));
    let ours = apply(&master, &deposit("alice", 10));
    let mut sub = depot
        .subscribe(&RefName::master(), "**", Some(ours))
        .unwrap();
    assert!(deliveries(&mut sub).is_empty());
    let outcome = merge(
        &depot,
        master.manifest(),
        &RefName::master(),
        theirs,
        "feature",
        "cli",
    )
    .unwrap();
    let MergeOutcome::Merged {
        checkpoint, events, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(events, 2);
    assert_eq!(
        deliveries(&mut sub),
        [(
            checkpoint,
            vec![
                ("accounts/bob".to_owned(), "Deposited".to_owned(), 2),
                ("accounts/bob".to_owned(), "Deposited".to_owned(), 3),
            ]
        )]
    );
    // The index agrees: bob's partition has each event once.
    let bob = depot
        .partition_events(&depot::PartitionName::new("accounts/bob").unwrap())
        .unwrap();
    assert_eq!(bob.len(), 3);
    assert_eq!(bob[2].checkpoint, checkpoint);
}

#[test]
fn a_subscriber_receives_a_replay_one_command_at_a_time() {
    let (_dir, depot, master, on_feature) = setup();
    let first = apply(&on_feature, &deposit("alice", 20));
    let second = apply(&on_feature, &deposit("alice", 30));
    let ours = apply(&master, &deposit("alice", 10));
    let mut sub = depot
        .subscribe(&RefName::master(), "accounts/*", Some(ours))
        .unwrap();
    let outcome = merge(
        &depot,
        master.manifest(),
        &RefName::master(),
        second,
        "feature",
        "cli",
    )
    .unwrap();
    let MergeOutcome::Replayed { replayed, to, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        replayed.iter().map(|r| r.0).collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(replayed[1].1, to);
    let got = deliveries(&mut sub);
    assert_eq!(
        got.iter().map(|d| d.0).collect::<Vec<_>>(),
        replayed.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    assert_eq!(
        got[0].1,
        [("accounts/alice".to_owned(), "Deposited".to_owned(), 3)]
    );
    assert_eq!(
        got[1].1,
        [("accounts/alice".to_owned(), "Deposited".to_owned(), 4)]
    );
    let replayed_from = depot.read_checkpoint(&to).unwrap();
    assert_eq!(
        replayed_from.field("replayed-from"),
        Some(second.to_string().as_str())
    );
}

#[test]
fn a_writer_racing_a_merge_loses_nothing() {
    let (_dir, depot, master, on_feature) = setup();
    apply(&on_feature, &deposit("bob", 20));
    let theirs = apply(&on_feature, &deposit("alice", 5));
    let writer_depot = depot.clone();
    let manifest = master.manifest().clone();
    let writer = std::thread::spawn(move || {
        let engine = Engine::new(writer_depot, manifest);
        apply(
            &engine,
            r#"{"path":"accounts/carol","name":"open","params":{"owner":"Carol"}}"#,
        );
        (0..30)
            .map(|i| apply(&engine, &deposit("carol", i + 1)))
            .collect::<Vec<_>>()
    });
    let outcome = merge(
        &depot,
        master.manifest(),
        &RefName::master(),
        theirs,
        "feature",
        "cli",
    )
    .unwrap();
    let written = writer.join().unwrap();
    let head = depot.head().unwrap().unwrap();
    for id in written {
        assert!(
            depot.is_ancestor(id, head).unwrap(),
            "a writer's checkpoint was lost"
        );
    }
    let merged = match outcome {
        MergeOutcome::Merged { checkpoint, .. } => checkpoint,
        MergeOutcome::Replayed { to, .. } => to,
        MergeOutcome::FastForward { to, .. } => to,
        other => panic!("{other:?}"),
    };
    assert!(
        depot.is_ancestor(merged, head).unwrap(),
        "the merge was lost"
    );
    let alice = depot
        .partition_events(&depot::PartitionName::new("accounts/alice").unwrap())
        .unwrap();
    assert_eq!(
        alice
            .iter()
            .filter(|e| e.event.name().as_str() == "Deposited")
            .count(),
        1
    );
}

#[test]
fn merging_unrelated_histories_is_refused_and_writes_nothing() {
    let (_dir, depot, master, _) = setup();
    let other = RefName::new("refs/heads/other").unwrap();
    let alone = Engine::new(depot.clone(), master.manifest().clone()).with_ref(other);
    let root = apply(
        &alone,
        r#"{"path":"accounts/zed","name":"open","params":{"owner":"Zed"}}"#,
    );
    let before = depot.head().unwrap();
    let err = merge(
        &depot,
        master.manifest(),
        &RefName::master(),
        root,
        "other",
        "cli",
    )
    .unwrap_err();
    assert!(
        matches!(err, engine::merge::MergeError::Unrelated { .. }),
        "{err}"
    );
    assert_eq!(err.class(), depot::ErrorClass::Invalid);
    assert_eq!(depot.head().unwrap(), before);
    assert_eq!(depot.merge_base(before.unwrap(), root).unwrap(), None);
}

/// A ref store that, once armed, moves master to a given checkpoint just before the next
/// transaction that expects master to hold something: another writer winning the race.
struct RacingRefs {
    inner: depot::refdb::MemoryRefStore,
    armed: std::sync::Mutex<Option<ObjectId>>,
}

impl depot::refdb::RefStore for RacingRefs {
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, depot::refdb::Error> {
        self.inner.read(name)
    }
    fn transaction(&self, edits: &[RefEdit]) -> Result<(), depot::refdb::Error> {
        let racing = edits
            .iter()
            .any(|e| e.name == RefName::master() && matches!(e.expected, Expected::MustBe(_)));
        if racing {
            if let Some(winner) = self.armed.lock().unwrap().take() {
                self.inner.transaction(&[RefEdit {
                    name: RefName::master(),
                    expected: Expected::Any,
                    new: Some(RefValue::Direct(winner)),
                    log: LogInfo::default(),
                }])?;
            }
        }
        self.inner.transaction(edits)
    }
    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, depot::refdb::Error> {
        self.inner.list(prefix)
    }
    fn reflog(&self, name: &RefName) -> Result<Vec<depot::ReflogEntry>, depot::refdb::Error> {
        self.inner.reflog(name)
    }
}

#[test]
fn a_merge_that_loses_the_race_starts_over_and_keeps_the_winner() {
    let refs = Arc::new(RacingRefs {
        inner: depot::refdb::MemoryRefStore::new(),
        armed: std::sync::Mutex::new(None),
    });
    let depot = Arc::new(
        Depot::with_stores(Arc::new(depot::odb::MemoryStore::new()), refs.clone()).unwrap(),
    );
    let manifest = example::bank_manifest().unwrap();
    let master = Engine::new(depot.clone(), manifest.clone());
    apply(
        &master,
        r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
    );
    let fork = apply(
        &master,
        r#"{"path":"accounts/bob","name":"open","params":{"owner":"Bob"}}"#,
    );
    for name in [feature(), RefName::new("refs/heads/side").unwrap()] {
        depot
            .update_refs(&[RefEdit {
                name,
                expected: Expected::MustNotExist,
                new: Some(RefValue::Direct(fork)),
                log: LogInfo::default(),
            }])
            .unwrap();
    }
    let on_feature = Engine::new(depot.clone(), manifest.clone()).with_ref(feature());
    let theirs = apply(&on_feature, &deposit("bob", 20));
    let ours = apply(&master, &deposit("alice", 10));
    // The racing writer's checkpoint: a child of master's head, touching alice.
    let side =
        Engine::new(depot.clone(), manifest).with_ref(RefName::new("refs/heads/side").unwrap());
    depot
        .update_refs(&[RefEdit {
            name: RefName::new("refs/heads/side").unwrap(),
            expected: Expected::Any,
            new: Some(RefValue::Direct(ours)),
            log: LogInfo::default(),
        }])
        .unwrap();
    let winner = apply(&side, &deposit("alice", 1));
    *refs.armed.lock().unwrap() = Some(winner);
    let outcome = merge(
        &depot,
        master.manifest(),
        &RefName::master(),
        theirs,
        "feature",
        "cli",
    )
    .unwrap();
    let MergeOutcome::Merged {
        checkpoint, from, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    // Computed again from the winner's head: the winner is the merge's first parent.
    assert_eq!(from, winner);
    assert_eq!(depot.head().unwrap(), Some(checkpoint));
    assert_eq!(
        depot.read_checkpoint(&checkpoint).unwrap().parents(),
        [winner, theirs]
    );
    assert!(refs.armed.lock().unwrap().is_none(), "the race was run");
}

/// A disjoint merge checkpoint commits to its first parent's log; the events it brings are proved
/// through it (it lists them), the merged branch's own checkpoints are not leaves of master's log,
/// and the next commit on master extends the log by the merge checkpoint.
#[test]
fn a_merge_checkpoint_commits_to_its_first_parents_log_and_proves_what_it_brings() {
    let (_dir, depot, master, on_feature) = setup();
    let theirs = apply(&on_feature, &deposit("bob", 20));
    let ours = apply(&master, &deposit("alice", 10));
    let outcome = merge(
        &depot,
        master.manifest(),
        &RefName::master(),
        theirs,
        "feature",
        "cli",
    )
    .unwrap();
    let MergeOutcome::Merged { checkpoint, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let merged = depot.read_checkpoint(&checkpoint).unwrap();
    assert_eq!(
        merged.log_head(),
        Some(depot.log_head_for_child(Some(ours)).unwrap())
    );
    assert_eq!(merged.log_head().unwrap().size, 3);
    let brought = depot
        .read_affix(&merged.affix())
        .unwrap()
        .partitions()
        .flat_map(|(_, ids)| ids.to_vec())
        .next()
        .unwrap();
    let next = apply(&master, &deposit("alice", 1));
    let proven = depot
        .prove(brought, next)
        .unwrap()
        .verify(Some(next))
        .unwrap();
    assert_eq!(
        (proven.checkpoint, proven.leaf, proven.size),
        (checkpoint, Some(3), 4)
    );
    // (The same event is in the feature branch's checkpoint, which is not a leaf: the proof
    // names the merge checkpoint.)
    assert_ne!(proven.checkpoint, theirs);
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

//! The commit-graph: it and the object walk agree (order, parents, dates) on every layout and
//! after every kind of ref move; a torn tail, a flipped bit and a stale graph never change a
//! result; gc rebuilds it.

use std::sync::{Arc, Mutex};

use depot::{
    Affix, Checkpoint, Depot, Expected, GcOptions, HistoryOrder, LogInfo, Object, ObjectId,
    PartitionFilter, RefEdit, RefName, RefValue,
};

use crate::common::*;

type Walked = Vec<(
    ObjectId,
    Vec<ObjectId>,
    Option<chrono::DateTime<chrono::Utc>>,
)>;

/// The object walk: every checkpoint read and decoded.
fn by_objects(depot: &Depot, start: ObjectId, order: HistoryOrder) -> Walked {
    let mut out = Vec::new();
    depot
        .walk(start, order, |id, c| {
            out.push((id, c.parents().to_vec(), c.date()));
            Ok(true)
        })
        .unwrap();
    out
}

/// The id walk (the graph where there is one).
fn by_ids(depot: &Depot, start: ObjectId, order: HistoryOrder) -> Walked {
    let mut out = Vec::new();
    depot
        .walk_ids(start, order, |e| {
            out.push((e.id, e.parents.clone(), e.date));
            Ok(true)
        })
        .unwrap();
    out
}

fn assert_agree(depot: &Depot, starts: &[ObjectId]) {
    for &start in starts {
        for order in [HistoryOrder::FirstParent, HistoryOrder::Full] {
            let objects = by_objects(depot, start, order);
            assert!(!objects.is_empty());
            assert_eq!(
                by_ids(depot, start, order),
                objects,
                "{order:?} from {start}"
            );
        }
        for &other in starts {
            let mut expected = false;
            depot
                .walk(start, HistoryOrder::Full, |id, _| {
                    expected |= id == other;
                    Ok(!expected)
                })
                .unwrap();
            assert_eq!(depot.is_ancestor(other, start).unwrap(), expected);
        }
    }
}

/// A checkpoint written outside the commit path (as sync and import write them): merges too.
fn checkpoint(depot: &Depot, parents: Vec<ObjectId>, message: &str) -> ObjectId {
    let affix = Object::Affix(Affix::new()).to_encoded();
    let date = chrono::DateTime::from_timestamp(1_700_000_000 + parents.len() as i64, 0).unwrap();
    let c = Checkpoint::new(affix.id(), parents, "s1", date, message).unwrap();
    let encoded = Object::Checkpoint(c).to_encoded();
    depot.write_objects(&[affix, encoded.clone()]).unwrap();
    encoded.id()
}

fn set_ref(depot: &Depot, name: &str, id: ObjectId) {
    depot
        .update_refs(&[RefEdit {
            name: RefName::new(name).unwrap(),
            expected: Expected::Any,
            new: Some(RefValue::Direct(id)),
            log: LogInfo::default(),
        }])
        .unwrap();
}

/// History with merges (an octopus of 4 parents among them), a side branch and commits on top
/// of the merges; returns the tips worth walking from.
fn history(depot: &Depot) -> Vec<ObjectId> {
    let mut tips = Vec::new();
    for i in 0..6 {
        commit_retrying(depot, workload(i, "s1"), "x");
    }
    let fork = depot.head().unwrap().unwrap();
    let side1 = checkpoint(depot, vec![fork], "side 1");
    let side2 = checkpoint(depot, vec![side1], "side 2");
    set_ref(depot, "refs/heads/side", side2);
    for i in 6..9 {
        commit_retrying(depot, workload(i, "s1"), "x");
    }
    let main = depot.head().unwrap().unwrap();
    let merge = checkpoint(depot, vec![main, side2], "merge");
    let octopus = checkpoint(depot, vec![merge, side1, fork, main], "octopus");
    set_ref(depot, "refs/heads/master", octopus);
    for i in 9..12 {
        commit_retrying(depot, workload(i, "s1"), "x");
    }
    tips.extend([depot.head().unwrap().unwrap(), side2, merge, octopus, fork]);
    tips
}

fn graph_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("d/commit-graph")
}

/// Whether every one of `ids` has a valid row in the graph file.
fn in_graph(dir: &std::path::Path, ids: &[ObjectId]) -> bool {
    let graph = depot::graph::Graph::open(&depot::storage::FsStorage, &graph_path(dir))
        .unwrap()
        .unwrap();
    let missing: Vec<_> = ids.iter().filter(|id| graph.lookup(id).is_none()).collect();
    missing.is_empty()
}

fn warnings_of(depot: &Depot) -> Arc<Mutex<Vec<String>>> {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let sink = warnings.clone();
    depot.on_warning(move |w| sink.lock().unwrap().push(w.to_owned()));
    warnings
}

#[test]
fn the_graph_and_the_object_walk_agree_on_merges_and_after_a_non_fast_forward_move() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let warnings = warnings_of(&depot);
    let mut tips = history(&depot);
    assert!(graph_path(dir.path()).is_file(), "commits write the graph");
    assert_agree(&depot, &tips);
    assert!(
        in_graph(dir.path(), &tips),
        "reads catch the graph up past the merges"
    );
    // A non-fast-forward move back to the fork, then new commits there.
    set_ref(&depot, "refs/heads/master", tips[4]);
    for i in 20..23 {
        commit_retrying(&depot, workload(i, "s1"), "y");
    }
    tips.push(depot.head().unwrap().unwrap());
    assert_agree(&depot, &tips);
    // A fresh handle reads the file; gc rebuilds it; a memory depot walks its objects.
    drop(depot);
    let depot = Depot::open(dir.path().join("d")).unwrap();
    assert_agree(&depot, &tips);
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
    // Rebuilt from what the refs reach: the side branch, the fork and the new head, not the
    // merges the move left behind (walks from those read their objects).
    assert!(in_graph(dir.path(), &[tips[1], tips[4], tips[5]]));
    assert!(!in_graph(dir.path(), &[tips[3]]));
    assert_agree(&depot, &tips);
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let memory = Depot::in_memory().unwrap();
    let memory_tips = history(&memory);
    assert_agree(&memory, &memory_tips);
    assert!(warnings.lock().unwrap().is_empty());
}

#[test]
fn a_partition_filter_skips_by_the_graph_and_finds_what_the_affixes_say() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let tips = history(&depot);
    for glob in ["identity/3", "identity/*", "session/**", "nothing/*", "*"] {
        let filter = PartitionFilter::new(glob).unwrap();
        let mut expected = Vec::new();
        depot
            .walk(tips[0], HistoryOrder::Full, |id, c| {
                if depot.checkpoint_touches(c, glob)? {
                    expected.push(id);
                }
                Ok(true)
            })
            .unwrap();
        let mut found = Vec::new();
        depot
            .walk_touching(tips[0], HistoryOrder::Full, Some(&filter), |id, _| {
                found.push(id);
                Ok(true)
            })
            .unwrap();
        assert_eq!(found, expected, "{glob}");
    }
}

#[test]
fn a_torn_graph_tail_is_dropped_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let tips = history(&depot);
    drop(depot);
    let path = graph_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes.truncate(len - 37); // half a row
    bytes.extend_from_slice(&[0u8; 100]); // and zeros a power cut left past it
    std::fs::write(&path, &bytes).unwrap();
    let depot = Depot::open(dir.path().join("d")).unwrap();
    let warnings = warnings_of(&depot);
    assert_agree(&depot, &tips);
    // The next commit writes over the torn tail, and the graph has it.
    commit_retrying(&depot, workload(50, "s1"), "z");
    let head = depot.head().unwrap().unwrap();
    assert_agree(&depot, &[head]);
    drop(depot);
    let depot = Depot::open(dir.path().join("d")).unwrap();
    assert_agree(&depot, &[head]);
    assert!(depot.fsck(|_| {}).unwrap().warnings.is_empty());
    assert!(warnings.lock().unwrap().is_empty());
}

#[test]
fn a_flipped_bit_in_the_graph_is_detected_reported_and_repaired_by_gc() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let tips = history(&depot);
    drop(depot);
    let path = graph_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 5 * 80 + 50; // inside a row in the middle, not the tail
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let depot = Depot::open(dir.path().join("d")).unwrap();
    let warnings = warnings_of(&depot);
    assert_agree(&depot, &tips);
    let reported = warnings.lock().unwrap().clone();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0].contains("commit-graph"), "{reported:?}");
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean());
    assert!(report.warnings.iter().any(|w| w.contains("commit-graph")));
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
    assert!(depot.fsck(|_| {}).unwrap().warnings.is_empty());
    drop(depot);
    let depot = Depot::open(dir.path().join("d")).unwrap();
    let warnings = warnings_of(&depot);
    assert_agree(&depot, &tips);
    assert!(warnings.lock().unwrap().is_empty());
}

#[test]
fn a_graph_newer_than_the_refs_gives_the_refs_history() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    for i in 0..5 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    let old = depot.head().unwrap().unwrap();
    for i in 5..10 {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    let newer = depot.head().unwrap().unwrap();
    // The ref goes back (the graph still has the newer rows), then gets other commits.
    set_ref(&depot, "refs/heads/master", old);
    drop(depot);
    let depot = Depot::open(dir.path().join("d")).unwrap();
    assert_agree(&depot, &[old, newer]);
    assert_eq!(by_ids(&depot, old, HistoryOrder::FirstParent).len(), 5);
    commit_retrying(&depot, workload(11, "s1"), "y");
    let head = depot.head().unwrap().unwrap();
    assert_agree(&depot, &[head, old, newer]);
    // A graph file from before (an older copy put back) is only behind: the walk catches up.
    let path = graph_path(dir.path());
    let saved = std::fs::read(&path).unwrap();
    commit_retrying(&depot, workload(12, "s1"), "y");
    std::fs::write(&path, &saved).unwrap();
    drop(depot);
    let depot = Depot::open(dir.path().join("d")).unwrap();
    let head = depot.head().unwrap().unwrap();
    assert_agree(&depot, &[head, old, newer]);
    assert!(depot.fsck(|_| {}).unwrap().warnings.is_empty());
}

#[test]
fn a_missing_graph_falls_back_and_gc_builds_it() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let tips = history(&depot);
    drop(depot);
    std::fs::remove_file(graph_path(dir.path())).unwrap();
    let depot = Depot::open(dir.path().join("d")).unwrap();
    assert_agree(&depot, &tips);
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
    assert!(graph_path(dir.path()).is_file());
    assert_agree(&depot, &tips);
    depot.reindex().unwrap();
    assert_agree(&depot, &tips);
}

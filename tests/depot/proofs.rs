//! The checkpoint log and inclusion proofs: every committed checkpoint's `log` field is the head
//! of the log over its first-parent chain (after rebases, merges of history without the field,
//! a lost or damaged `log-frontiers` file, in memory; go-retro's layout: `go_retro.rs`), proofs verify by themselves,
//! and what is not proved is refused.

use depot::checkpoint_log::{Frontier, LogHead};
use depot::proof::{InclusionProof, ProofError};
use depot::{
    Affix, Base, Checkpoint, CommitRequest, Depot, ErrorClass, FsckKind, Object, ObjectId, RefEdit,
    RefName, RefValue,
};

use crate::common::*;

/// The head every checkpoint on `head`'s first-parent chain must carry, computed from scratch.
fn assert_logs_right(depot: &Depot, head: ObjectId) -> Vec<ObjectId> {
    let mut chain = Vec::new();
    let mut cursor = Some(head);
    while let Some(id) = cursor {
        chain.push(id);
        cursor = depot.read_checkpoint(&id).unwrap().first_parent();
    }
    chain.reverse();
    let mut frontier = Frontier::new();
    for id in &chain {
        let checkpoint = depot.read_checkpoint(id).unwrap();
        if let Some(head) = checkpoint.log_head() {
            assert_eq!(head, frontier.head(), "the log field of {id}");
        }
        frontier.push_id(id);
    }
    chain
}

fn events_of(depot: &Depot, checkpoint: &ObjectId) -> Vec<ObjectId> {
    let affix = depot
        .read_affix(&depot.read_checkpoint(checkpoint).unwrap().affix())
        .unwrap();
    affix
        .partitions()
        .flat_map(|(_, ids)| ids.to_vec())
        .collect()
}

#[test]
fn every_event_of_a_history_is_proved_at_its_head_and_at_each_later_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let mut ids = Vec::new();
    for n in 0..23 {
        ids.push(commit_retrying(&depot, workload(n, "s"), &format!("c{n}")).checkpoint);
    }
    let chain = assert_logs_right(&depot, ids[22]);
    assert_eq!(chain, ids);
    let root = depot.read_checkpoint(&ids[0]).unwrap();
    assert_eq!(
        root.log_head().unwrap().to_string(),
        "0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "a root checkpoint commits to the empty log"
    );
    for (at_index, at) in ids.iter().enumerate().step_by(5) {
        for (index, holder) in ids.iter().enumerate().take(at_index + 1) {
            for event in events_of(&depot, holder) {
                let proof = depot.prove(event, *at).unwrap();
                let reread = InclusionProof::parse(proof.to_json().as_bytes()).unwrap();
                assert_eq!(reread, proof);
                let proven = reread.verify(Some(*at)).unwrap();
                assert_eq!(proven.checkpoint, *holder);
                assert_eq!(proven.at, *at);
                assert_eq!(proven.size, at_index as u64);
                if index == at_index {
                    assert_eq!(proven.leaf, None);
                } else {
                    assert_eq!(proven.leaf, Some(index as u64));
                    assert!(proof.path.len() <= 5, "⌈log₂ 22⌉ hashes at most");
                }
            }
        }
    }
    // An event of a later checkpoint is not in an earlier one's history.
    let later = events_of(&depot, &ids[10])[0];
    let err = depot.prove(later, ids[9]).unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    assert!(err.to_string().contains("is not in the history"), "{err}");
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn a_rebased_checkpoint_commits_to_the_log_of_its_new_parent() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let base = commit_retrying(&depot, workload(0, "s"), "c0").checkpoint;
    let first = commit_retrying(&depot, vec![(p("a/1"), ev("E", "{}"))], "c1");
    // Planned on `base`, committed after `first` moved the branch: re-parented, so its log
    // has two leaves (base, first), not one.
    let mut request = CommitRequest::new(Some(base), vec![(p("b/1"), ev("E", "{}"))], "s1", "c2");
    request.base = Base::Expect(Some(base));
    request.rebase = true;
    let rebased = depot.commit(request).unwrap();
    assert!(rebased.rebased);
    assert_eq!(rebased.parent, Some(first.checkpoint));
    let checkpoint = depot.read_checkpoint(&rebased.checkpoint).unwrap();
    assert_eq!(checkpoint.log_head().unwrap().size, 2);
    assert_logs_right(&depot, rebased.checkpoint);
    // A batch of requests on one base: each on the one before it, in one leader's plan.
    let head = depot.head().unwrap();
    let requests = (0..5)
        .map(|n| {
            let mut r =
                CommitRequest::new(head, vec![(p(&format!("c/{n}")), ev("E", "{}"))], "s1", "b");
            r.rebase = true;
            r
        })
        .collect();
    for result in depot.commit_many(requests) {
        result.unwrap();
    }
    assert_eq!(
        assert_logs_right(&depot, depot.head().unwrap().unwrap()).len(),
        8
    );
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

/// Checkpoints as retro wrote them before the `log` field, written straight to the store.
fn old_style_history(depot: &Depot, n: usize) -> Vec<ObjectId> {
    let mut parent = None;
    let mut ids = Vec::new();
    for i in 0..n {
        let event = Object::Event(ev("Old", &format!(r#"{{"i":{i}}}"#))).to_encoded();
        let affix: Affix = [(p(&format!("old/{i}")), event.id())].into_iter().collect();
        let affix = Object::Affix(affix).to_encoded();
        let checkpoint = Checkpoint::new(
            affix.id(),
            parent.into_iter().collect(),
            "s1",
            depot::parse_date("2025-01-01T00:00:00Z").unwrap(),
            format!("old {i}"),
        )
        .unwrap();
        let checkpoint = Object::Checkpoint(checkpoint).to_encoded();
        let id = checkpoint.id();
        depot.write_objects(&[event, affix, checkpoint]).unwrap();
        ids.push(id);
        parent = Some(id);
    }
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: depot::Expected::Any,
            new: Some(RefValue::Direct(*ids.last().unwrap())),
            log: Default::default(),
        }])
        .unwrap();
    ids
}

#[test]
fn history_from_before_the_field_is_a_log_the_first_new_checkpoint_commits_to() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let old = old_style_history(&depot, 6);
    let old_event = events_of(&depot, &old[2])[0];
    // At an old checkpoint there is no log to prove against.
    let err = depot.prove(old_event, old[5]).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Invalid, "{err}");
    assert!(err.to_string().contains("no 'log' field"), "{err}");
    let new = commit_retrying(&depot, workload(1, "s"), "new");
    let head = depot.read_checkpoint(&new.checkpoint).unwrap().log_head();
    assert_eq!(head.map(|h| h.size), Some(6));
    assert_logs_right(&depot, new.checkpoint);
    let proven = depot
        .prove(old_event, new.checkpoint)
        .unwrap()
        .verify(Some(new.checkpoint))
        .unwrap();
    assert_eq!((proven.checkpoint, proven.leaf), (old[2], Some(2)));
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_wrong_log_field_is_corruption_to_fsck_and_to_a_commit_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let good = commit_retrying(&depot, workload(0, "s"), "c0").checkpoint;
    let affix = Object::Affix(Affix::new()).to_encoded();
    let mut bad = Checkpoint::new(
        affix.id(),
        vec![good],
        "s1",
        depot::parse_date("2026-01-01T00:00:00Z").unwrap(),
        "forged",
    )
    .unwrap();
    bad.set_log_head(LogHead {
        size: 1,
        root: [7; 32],
    });
    let bad = Object::Checkpoint(bad).to_encoded();
    let bad_id = bad.id();
    depot.write_objects(&[affix, bad]).unwrap();
    depot
        .update_refs(&[RefEdit {
            name: RefName::master(),
            expected: depot::Expected::Any,
            new: Some(RefValue::Direct(bad_id)),
            log: Default::default(),
        }])
        .unwrap();
    let report = depot.fsck(|_| {}).unwrap();
    let problems: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == FsckKind::BadLog)
        .collect();
    assert_eq!(problems.len(), 1, "{:?}", report.problems);
    assert_eq!(problems[0].id, Some(bad_id));
    assert_eq!(FsckKind::BadLog.as_str(), "bad_log");
    // A commit on top would extend a wrong log: refused, nothing written.
    let err = depot
        .commit(CommitRequest::new(
            Some(bad_id),
            vec![(p("a/1"), ev("E", "{}"))],
            "s1",
            "on top",
        ))
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Corrupt, "{err}");
    assert_eq!(depot.head().unwrap(), Some(bad_id));
    // And a proof at it is refused by the prover itself.
    let event = events_of(&depot, &good)[0];
    let err = depot.prove(event, bad_id).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Corrupt, "{err}");
}

#[test]
fn a_new_process_uses_the_frontiers_file_and_a_damaged_one_costs_only_a_walk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let mut head = None;
    for round in 0..3 {
        let depot = Depot::open_or_init(&path).unwrap();
        for n in 0..4 {
            head = Some(commit_retrying(&depot, workload(round * 10 + n, "s"), "c").checkpoint);
        }
        drop(depot);
        let file = path.join("log-frontiers");
        assert!(file.is_file(), "written after commits");
        match round {
            // A file torn or flipped, then one from another history: neither is used.
            0 => {
                let bytes = std::fs::read(&file).unwrap();
                std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
            }
            1 => {
                let mut bytes = std::fs::read(&file).unwrap();
                bytes[60] ^= 0xff;
                std::fs::write(&file, bytes).unwrap();
            }
            _ => {}
        }
    }
    let depot = Depot::open(&path).unwrap();
    assert_eq!(assert_logs_right(&depot, head.unwrap()).len(), 12);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

/// The file is saved every 64 commits and when the depot closes: a process killed in between
/// leaves it stale, and the next process extends the newest frontier it knows by a short walk.
#[test]
fn a_process_killed_between_saves_leaves_a_stale_file_that_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let depot = Depot::init(&path).unwrap();
    let file = path.join("log-frontiers");
    for n in 0..70 {
        commit_retrying(&depot, workload(n, "s"), "c");
        // Not rewritten after each commit: only after the 64th.
        assert_eq!(file.is_file(), n >= 63, "after commit {}", n + 1);
    }
    let saved = std::fs::read(&file).unwrap();
    // Killed: no save at close, so the file knows commit 64, not the 6 after it.
    std::mem::forget(depot);
    let depot = Depot::open(&path).unwrap();
    let head = commit_retrying(&depot, workload(70, "s"), "c").checkpoint;
    assert_eq!(
        std::fs::read(&file).unwrap(),
        saved,
        "not saved before close"
    );
    drop(depot);
    assert_ne!(std::fs::read(&file).unwrap(), saved, "saved at close");
    let depot = Depot::open(&path).unwrap();
    assert_eq!(assert_logs_right(&depot, head).len(), 71);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn tampered_proofs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::init(dir.path().join("d")).unwrap();
    let mut ids = Vec::new();
    for n in 0..9 {
        ids.push(commit_retrying(&depot, workload(n, "s"), "c").checkpoint);
    }
    let at = ids[8];
    let event = events_of(&depot, &ids[3])[1];
    let proof = depot.prove(event, at).unwrap();
    proof.verify(Some(at)).unwrap();
    // Every bit of every object and hash in it matters.
    let mut refused = 0;
    for field in 0..4 {
        let len = match field {
            0 => proof.at.len(),
            1 => proof.checkpoint.as_ref().unwrap().len(),
            2 => proof.affix.len(),
            _ => proof.path.len() * 32,
        };
        for byte in (0..len).step_by(7) {
            let mut tampered = proof.clone();
            match field {
                0 => tampered.at[byte] ^= 1,
                1 => tampered.checkpoint.as_mut().unwrap()[byte] ^= 1,
                2 => tampered.affix[byte] ^= 1,
                _ => tampered.path[byte / 32][byte % 32] ^= 1,
            }
            assert!(
                tampered.verify(Some(at)).is_err(),
                "field {field} byte {byte}"
            );
            refused += 1;
        }
    }
    assert!(refused > 100);
    // Another leaf index, another event, a path cut short, a proof at another checkpoint.
    let mut other = proof.clone();
    other.leaf = Some(4);
    assert!(matches!(
        other.verify(None),
        Err(ProofError::NotIncluded { .. })
    ));
    let mut other = proof.clone();
    other.event = ObjectId::of(b"not an event");
    assert!(matches!(
        other.verify(None),
        Err(ProofError::NotInAffix { .. })
    ));
    let mut other = proof.clone();
    other.path.pop();
    assert!(other.verify(None).is_err());
    assert!(matches!(
        proof.verify(Some(ids[7])),
        Err(ProofError::Untrusted { .. })
    ));
    // A file cut anywhere is not a proof (it reads as malformed, never panics).
    let text = proof.to_json();
    for cut in (0..text.len()).step_by(13) {
        let err = InclusionProof::parse(&text.as_bytes()[..cut]).unwrap_err();
        assert!(err.is_malformed(), "{err}");
    }
    // Unknown or repeated keys are refused.
    let extra = text.replacen('{', "{\n  \"extra\": 1,", 1);
    assert!(InclusionProof::parse(extra.as_bytes())
        .unwrap_err()
        .is_malformed());
    let twice = text.replacen('{', "{\n  \"leaf\": 0,", 1);
    assert!(InclusionProof::parse(twice.as_bytes())
        .unwrap_err()
        .is_malformed());
}

#[test]
fn an_in_memory_depot_writes_the_field_too() {
    let depot = Depot::in_memory().unwrap();
    let mut last = None;
    for n in 0..5 {
        last = Some(commit_retrying(&depot, workload(n, "s"), "c").checkpoint);
    }
    assert_eq!(assert_logs_right(&depot, last.unwrap()).len(), 5);
    let head = depot.read_checkpoint(&last.unwrap()).unwrap().log_head();
    assert_eq!(head.map(|h| h.size), Some(4));
}

/// The measurement docs/cli.md quotes: a proof's size and its check time at 1,000,000
/// checkpoints. The leaves are 1,000,000 ids (the proved checkpoint's real one among them); the
/// trusted checkpoint, the proved one and its affix are real encodings of the bank's shape.
/// Run it in release: `cargo test --release -p retro-depot --test depot measure -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement: about a second of hashing in release, much more in debug"]
fn measure_a_proof_at_a_million_checkpoints() {
    const N: u64 = 1_000_000;
    let date = depot::parse_date("2026-12-03T12:00:00Z").unwrap();
    let checkpoint_with = |affix: &Affix, parent: ObjectId, head: LogHead, message: &str| {
        let affix = Object::Affix(affix.clone()).to_encoded();
        let mut checkpoint =
            Checkpoint::new(affix.id(), vec![parent], "cli", date, message).unwrap();
        checkpoint.set_log_head(head);
        (affix, Object::Checkpoint(checkpoint).to_encoded())
    };
    let event = Object::Event(ev("AccountOpened", r#"{"owner":"Alice"}"#)).to_encoded();
    let affix: Affix = [
        (p("accounts/alice"), event.id()),
        (p("registry/accounts"), ObjectId::of(b"registered")),
    ]
    .into_iter()
    .collect();
    let message = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
    let holder_index = 123_457u64;
    let mut leaves = Vec::with_capacity(N as usize);
    let mut frontier = Frontier::new();
    let mut holder = None;
    for i in 0..N {
        if i == holder_index {
            let (affix_bytes, encoded) =
                checkpoint_with(&affix, ObjectId::of(b"parent"), frontier.head(), message);
            holder = Some((affix_bytes, encoded));
        }
        let id = match (&holder, i == holder_index) {
            (Some((_, encoded)), true) => encoded.id(),
            _ => ObjectId::of(&i.to_be_bytes()),
        };
        leaves.push(depot::checkpoint_log::leaf_hash(&id));
        frontier.push_id(&id);
    }
    let (affix_bytes, holder) = holder.unwrap();
    let (_, at) = checkpoint_with(
        &Affix::new(),
        ObjectId::of(b"tip"),
        frontier.head(),
        message,
    );
    let started = std::time::Instant::now();
    let path = depot::checkpoint_log::inclusion_path(&leaves, holder_index).unwrap();
    let built = started.elapsed();
    let proof = InclusionProof {
        event: event.id(),
        at: at.bytes().to_vec(),
        checkpoint: Some(holder.bytes().to_vec()),
        affix: affix_bytes.bytes().to_vec(),
        leaf: Some(holder_index),
        path,
    };
    let file = proof.to_json();
    let runs = 1000;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        let proven = InclusionProof::parse(file.as_bytes())
            .unwrap()
            .verify(Some(at.id()))
            .unwrap();
        assert_eq!(proven.size, N);
    }
    let check = started.elapsed() / runs;
    println!(
        "proof at {N} checkpoints: {} bytes ({} path hashes); audit path built in {built:?}; parse + verify {check:?}",
        file.len(),
        proof.path.len()
    );
    assert_eq!(proof.path.len(), 20);
    assert!(file.len() < 4096, "a few KiB: {}", file.len());
}

/// An import reproducing checkpoints written before the field (`log: false`), then one with it,
/// in one batch: the one with it commits to all of them.
#[test]
fn checkpoints_without_the_field_and_with_it_share_one_batch() {
    let depot = Depot::in_memory().unwrap();
    let requests = (0..4)
        .map(|n| {
            let mut r =
                CommitRequest::new(None, vec![(p(&format!("a/{n}")), ev("E", "{}"))], "s1", "x");
            r.base = Base::Tip;
            r.log = n == 3;
            r
        })
        .collect();
    let results: Vec<_> = depot
        .commit_many(requests)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (n, committed) in results.iter().enumerate() {
        let head = depot
            .read_checkpoint(&committed.checkpoint)
            .unwrap()
            .log_head();
        assert_eq!(head.map(|h| h.size), (n == 3).then_some(3));
    }
    assert_logs_right(&depot, results[3].checkpoint);
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

//! A depot in go-retro's layout, built here from the format spec, opens and reads.

use std::io::Write;
use std::path::Path;

use depot::{Affix, Checkpoint, Depot, Layout, Object, ObjectId};
use flate2::write::ZlibEncoder;
use flate2::Compression;

use crate::common::*;

fn write_loose(root: &Path, object: &Object) -> ObjectId {
    let encoded = object.to_encoded();
    let hex = encoded.id().to_hex();
    let dir = root.join(&hex[0..2]).join(&hex[2..4]);
    std::fs::create_dir_all(&dir).unwrap();
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(encoded.bytes()).unwrap();
    std::fs::write(dir.join(&hex[4..]), encoder.finish().unwrap()).unwrap();
    encoded.id()
}

/// Two commands as go-retro's engine would store them (message `<path>/<name>`).
fn build_go_retro_depot(root: &Path) -> (ObjectId, ObjectId) {
    let mut parent = None;
    let mut ids = Vec::new();
    for (n, name) in ["Alice", "Bob"].iter().enumerate() {
        let event = Object::Event(ev("SetName", &format!(r#"{{"name":"{name}"}}"#)));
        let session_event = Object::Event(ev("IdentityCreated", "{}"));
        let e1 = write_loose(root, &event);
        let e2 = write_loose(root, &session_event);
        let affix: Affix = [
            (p(&format!("identity/{n}")), e1),
            (p("session/DEADBEEF"), e2),
        ]
        .into_iter()
        .collect();
        let affix_id = write_loose(root, &Object::Affix(affix));
        let date = depot::parse_date("2019-02-11T14:51:00Z").unwrap();
        let checkpoint = Checkpoint::new(
            affix_id,
            parent.into_iter().collect(),
            "DEADBEEF",
            date,
            format!("identity/{n}/createIdentity"),
        )
        .unwrap();
        let id = write_loose(root, &Object::Checkpoint(checkpoint));
        ids.push(id);
        parent = Some(id);
    }
    std::fs::create_dir_all(root.join("refs/heads")).unwrap();
    std::fs::write(root.join("refs/heads/master"), ids[1].to_string()).unwrap();
    (ids[0], ids[1])
}

#[test]
fn a_go_retro_depot_opens_and_reads_without_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = build_go_retro_depot(dir.path());
    let before: Vec<_> = snapshot(dir.path());
    let depot = Depot::open(dir.path()).unwrap();
    assert_eq!(depot.layout(), Layout::GoRetro);
    assert_eq!(depot.head().unwrap(), Some(second));
    assert_eq!(depot.resolve_revision("HEAD~1").unwrap(), first);
    assert_eq!(depot.resolve_revision("master").unwrap(), second);
    let events = depot.partition_events(&p("session/DEADBEEF")).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].checkpoint, second);
    assert_eq!(events[1].session, "DEADBEEF");
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.checkpoints, 2);
    // Reading added only retro's own files beside go-retro's: none of its files changed.
    let after: Vec<_> = snapshot(dir.path())
        .into_iter()
        .filter(|(name, _)| !name.starts_with(".retro"))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn commits_to_a_go_retro_depot_stay_in_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let (_, second) = build_go_retro_depot(dir.path());
    let depot = Depot::open(dir.path()).unwrap();
    let committed = commit_retrying(&depot, workload(7, "DEADBEEF"), "identity/7/createIdentity");
    assert_eq!(committed.parent, Some(second));
    // go-retro's checkpoints have no `log` field; the new one commits to the log over them.
    let log = depot
        .read_checkpoint(&committed.checkpoint)
        .unwrap()
        .log_head();
    assert_eq!(log.map(|l| l.size), Some(2));
    let event = committed.events[0];
    let proven = depot
        .prove(event, committed.checkpoint)
        .unwrap()
        .verify(None)
        .unwrap();
    assert_eq!(
        (proven.checkpoint, proven.leaf),
        (committed.checkpoint, None)
    );
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
    let hex = committed.checkpoint.to_hex();
    assert!(dir
        .path()
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex[4..])
        .is_file());
    let text = std::fs::read_to_string(dir.path().join("refs/heads/master")).unwrap();
    assert_eq!(text, committed.checkpoint.to_string());
    assert!(
        !dir.path().join("HEAD").exists(),
        "no HEAD is added to a go-retro depot"
    );
    assert_eq!(
        depot
            .partition_events(&p("session/DEADBEEF"))
            .unwrap()
            .len(),
        3
    );
}

/// D12 (e): a native depot whose `config` was lost used to open as a go-retro depot (its
/// `refs/heads` looks like one) and fail later with "missing object". It is refused at open, and
/// at init, with an error that says the config is missing and what it must hold, and nothing in
/// the directory is changed.
#[test]
fn d12_a_native_depot_without_config_is_reported_damaged_not_opened_as_go_retro() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    {
        let depot = depot::Depot::init(&path).unwrap();
        crate::common::commit_retrying(
            &depot,
            vec![(crate::common::p("a/1"), crate::common::ev("Opened", "{}"))],
            "one",
        );
    }
    std::fs::remove_file(path.join("config")).unwrap();
    let before = crate::common::snapshot(&path);
    for err in [
        depot::Depot::open(&path).err().expect("open refuses"),
        depot::Depot::init(&path).err().expect("init refuses"),
    ] {
        assert!(matches!(err, depot::Error::MissingConfig(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("'config' file is missing") && text.contains("'retro depot 1'"),
            "{text}"
        );
    }
    assert!(
        crate::common::snapshot(&path) == before,
        "the depot changed"
    );
    // Restoring the one line is the whole repair.
    std::fs::write(path.join("config"), "retro depot 1\n").unwrap();
    let depot = depot::Depot::open(&path).unwrap();
    assert_eq!(depot.layout(), depot::Layout::Native);
    assert!(depot.head().unwrap().is_some());
}

/// A go-retro depot's events are plain: a redaction deletes the event's loose file (its bytes
/// were its id), reads give the tombstone, and fsck lists it as redacted, unverifiable.
#[test]
fn a_go_retro_event_is_redacted_as_unverifiable() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = build_go_retro_depot(dir.path());
    let depot = Depot::open(dir.path()).unwrap();
    assert!(!depot.seals_events());
    let event = depot.partition_events(&p("identity/0")).unwrap()[0].id;
    let hex = event.to_hex();
    let file = dir.path().join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..]);
    assert!(file.is_file());
    let report = depot.redact(&[event], "erasure", "DEADBEEF").unwrap();
    assert_eq!(report.unverifiable, vec![event]);
    assert!(!file.exists(), "the loose object is deleted");
    drop(depot);
    let depot = Depot::open(dir.path()).unwrap();
    assert_eq!(depot.layout(), Layout::GoRetro);
    let events = depot.partition_events(&p("identity/0")).unwrap();
    assert_eq!(events[0].event.name().as_str(), depot::REDACTED_EVENT_NAME);
    assert!(events[0]
        .event
        .data()
        .starts_with(br#"{"redacted":true,"reason":"erasure""#));
    let fsck = depot.fsck(|_| {}).unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.unverifiable, vec![event]);
    // The checkpoint that names it still verifies, and the redaction is the new head.
    assert!(depot.read_checkpoint(&first).is_ok());
    let head = depot.head().unwrap().unwrap();
    assert_eq!(
        depot
            .read_checkpoint(&head)
            .unwrap()
            .field(depot::REDACTION_FIELD),
        Some("erasure")
    );
}

/// A new process extends the log from `.retro-log-frontiers` without walking history: with the
/// root checkpoint's object gone, a commit on top still gets its field (reading only its
/// parent); without the file it would have to walk, and the walk meets the missing object.
#[test]
fn a_commit_in_a_new_process_reads_its_parents_frontier_not_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = build_go_retro_depot(dir.path());
    let depot = Depot::open(dir.path()).unwrap();
    let x = commit_retrying(&depot, workload(1, "DEADBEEF"), "x").checkpoint;
    drop(depot);
    assert!(dir.path().join(".retro-log-frontiers").is_file());
    let hex = first.to_hex();
    std::fs::remove_file(dir.path().join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..])).unwrap();
    let depot = Depot::open(dir.path()).unwrap();
    let y = commit_retrying(&depot, workload(2, "DEADBEEF"), "y");
    assert_eq!(y.parent, Some(x));
    let log = depot.read_checkpoint(&y.checkpoint).unwrap().log_head();
    assert_eq!(log.map(|l| l.size), Some(3));
    drop(depot);
    std::fs::remove_file(dir.path().join(".retro-log-frontiers")).unwrap();
    let depot = Depot::open(dir.path()).unwrap();
    let err = depot
        .commit(depot::CommitRequest::new(
            Some(y.checkpoint),
            workload(3, "DEADBEEF"),
            "DEADBEEF",
            "z",
        ))
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

//! Redaction: sealed events, erasure in every file of the depot, ids and fsck still valid,
//! tombstones, re-runs, unknown ids.

use depot::{CommitRequest, Depot, Object, ObjectId};

use crate::common::{ev, p};

const SECRET: &str = "Zelda-Quux-Personal-7731";

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// A native depot with two commits: a secret event (and a public one) in `people/z`.
fn depot_with_secret(dir: &std::path::Path) -> (Depot, ObjectId, ObjectId) {
    let depot = Depot::init(dir).unwrap();
    assert!(depot.seals_events(), "retro init makes sealed depots");
    let secret = format!(r#"{{"name":"{SECRET}"}}"#);
    let first = depot
        .commit(CommitRequest::new(
            None,
            vec![(p("people/z"), ev("Registered", &secret))],
            "s1",
            "{}",
        ))
        .unwrap();
    let second = depot
        .commit(CommitRequest::new(
            Some(first.checkpoint),
            vec![(p("people/z"), ev("Visited", r#"{"n":1}"#))],
            "s1",
            "{}",
        ))
        .unwrap();
    (depot, first.events[0], second.events[0])
}

#[test]
fn a_sealed_event_reads_its_data_and_hashes_only_the_data_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (depot, secret, _) = depot_with_secret(&tmp.path().join(".retro"));
    let raw = depot.read_object(&secret).unwrap();
    assert!(raw
        .bytes()
        .starts_with(b"event sealed Registered 77\0data sha256:"));
    let Object::Event(event) = raw.decode().unwrap() else {
        panic!("not an event")
    };
    let data = event.sealed_data().unwrap();
    let Object::Data(stored) = depot.read_decoded(&data).unwrap() else {
        panic!("not data")
    };
    assert_eq!(
        stored.json(),
        format!(r#"{{"name":"{SECRET}"}}"#).as_bytes()
    );
    let events = depot.partition_events(&p("people/z")).unwrap();
    assert_eq!(events[0].event.data(), stored.json());
    assert_eq!(depot.read_event(&secret).unwrap().data(), stored.json());
}

#[test]
fn redaction_erases_the_data_from_every_file_and_keeps_every_id_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".retro");
    let (depot, secret, public) = depot_with_secret(&dir);
    // A snapshot holding the secret in an aggregate state must go too.
    depot.save_snapshot(&depot::snapshot::Snapshot {
        partition: "people/z".to_owned(),
        domain: "test:1".to_owned(),
        version: 1,
        checkpoint: depot.partition_events(&p("people/z")).unwrap()[0].checkpoint,
        state: format!(r#"{{"who":"{SECRET}"}}"#).into_bytes(),
    });
    assert!(!files_containing(&dir, SECRET.as_bytes()).is_empty());

    let report = depot
        .redact(&[secret], "erasure request 7", "admin-1")
        .unwrap();
    assert_eq!(report.redacted, vec![secret]);
    assert!(report.unverifiable.is_empty());
    assert_eq!(report.records_erased, 1);
    assert_eq!(report.checkpoints.len(), 1);
    drop(depot);

    assert_eq!(
        files_containing(&dir, SECRET.as_bytes()),
        Vec::<String>::new()
    );
    let depot = Depot::open(&dir).unwrap();
    let fsck = depot.fsck(|_| {}).unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.redacted, 1);
    // The public event's data and the three checkpoints' commands (two commits, the redaction).
    assert_eq!(fsck.data, 4);
    // The event's own object still verifies by id; its data reads as a tombstone.
    assert!(depot.read_object(&secret).is_ok());
    let tomb = depot.read_event(&secret).unwrap();
    let value: String = String::from_utf8(tomb.data().to_vec()).unwrap();
    assert!(
        value.starts_with(r#"{"redacted":true,"reason":"erasure request 7","at":""#),
        "{value}"
    );
    let events = depot.partition_events(&p("people/z")).unwrap();
    assert_eq!(events[0].event.data(), tomb.data());
    assert_eq!(events[1].id, public);
    assert_eq!(events[1].event.data(), br#"{"n":1}"#);
    // The redaction checkpoint is on HEAD, names the event, the reason and the session.
    let head = depot.resolve_revision("HEAD").unwrap();
    let checkpoint = depot.read_checkpoint(&head).unwrap();
    assert_eq!(
        checkpoint.field(depot::REDACTION_FIELD),
        Some("erasure request 7")
    );
    assert_eq!(checkpoint.session(), "admin-1");
    assert_eq!(checkpoint.message(), secret.to_string().as_bytes());
    // gc drops the erased record for good and everything still checks.
    depot.gc(&Default::default(), |_| {}).unwrap();
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
    assert_eq!(
        files_containing(&dir, SECRET.as_bytes()),
        Vec::<String>::new()
    );
    // A second redaction of the same event changes nothing.
    let again = depot.redact(&[secret], "again", "admin-1").unwrap();
    assert_eq!(again.already, vec![secret]);
    assert!(again.checkpoints.is_empty());
}

#[test]
fn an_unknown_id_or_a_non_event_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".retro");
    let (depot, secret, _) = depot_with_secret(&dir);
    let unknown = ObjectId::of(b"nothing");
    let err = depot.redact(&[secret, unknown], "r", "s").unwrap_err();
    assert!(
        matches!(err, depot::Error::NoSuchObject(id) if id == unknown),
        "{err}"
    );
    assert_eq!(err.class(), depot::ErrorClass::NotFound);
    let head = depot.resolve_revision("HEAD").unwrap();
    let affix = depot.read_checkpoint(&head).unwrap().affix();
    let err = depot.redact(&[affix], "r", "s").unwrap_err();
    assert_eq!(err.class(), depot::ErrorClass::Invalid, "{err}");
    let err = depot.redact(&[secret], "two\nlines", "s").unwrap_err();
    assert_eq!(err.class(), depot::ErrorClass::Invalid, "{err}");
    assert!(!dir.join("redactions").exists());
    assert_eq!(depot.resolve_revision("HEAD").unwrap(), head);
    assert!(!files_containing(&dir, SECRET.as_bytes()).is_empty());
}

#[test]
fn a_plain_event_is_erased_and_reported_unverifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".retro");
    std::fs::create_dir_all(&dir).unwrap();
    let depot = Depot::init(&dir).unwrap();
    depot.set_seal_events(false).unwrap();
    let secret = format!(r#"{{"name":"{SECRET}"}}"#);
    let c = depot
        .commit(CommitRequest::new(
            None,
            vec![(p("people/z"), ev("Registered", &secret))],
            "s1",
            "{}",
        ))
        .unwrap();
    let report = depot.redact(&[c.events[0]], "r", "s").unwrap();
    assert_eq!(report.unverifiable, vec![c.events[0]]);
    assert_eq!(
        files_containing(&dir, SECRET.as_bytes()),
        Vec::<String>::new()
    );
    let fsck = depot.fsck(|_| {}).unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.unverifiable, vec![c.events[0]]);
    let events = depot.partition_events(&p("people/z")).unwrap();
    assert_eq!(events[0].event.name().as_str(), depot::REDACTED_EVENT_NAME);
}

#[test]
fn a_depot_without_the_config_line_keeps_writing_plain_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".retro");
    drop(Depot::init(&dir).unwrap());
    std::fs::write(dir.join("config"), "retro depot 1\n").unwrap();
    let depot = Depot::open(&dir).unwrap();
    assert!(!depot.seals_events());
    let c = depot
        .commit(CommitRequest::new(
            None,
            vec![(p("a"), ev("E", "{}"))],
            "s",
            "{}",
        ))
        .unwrap();
    assert!(depot
        .read_object(&c.events[0])
        .unwrap()
        .bytes()
        .starts_with(b"event json E 2\0"));
}

#[test]
fn sync_carries_the_redaction_and_the_other_depot_erases_its_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, secret, _) = depot_with_secret(&tmp.path().join("a"));
    let b_dir = tmp.path().join("b");
    let b = Depot::init(&b_dir).unwrap();
    b.sync_from(&a, &Default::default(), |_| {}).unwrap();
    // Synced before the redaction: b holds the data.
    assert_eq!(
        b.read_event(&secret).unwrap().data(),
        format!(r#"{{"name":"{SECRET}"}}"#).as_bytes()
    );
    assert!(!files_containing(&b_dir, SECRET.as_bytes()).is_empty());
    a.redact(&[secret], "erasure request 9", "admin").unwrap();
    // Its next sync brings the redaction checkpoint, and b erases what it holds.
    b.sync_from(&a, &Default::default(), |_| {}).unwrap();
    assert_eq!(
        files_containing(&b_dir, SECRET.as_bytes()),
        Vec::<String>::new()
    );
    let tomb = b.read_event(&secret).unwrap();
    assert!(tomb
        .data()
        .starts_with(br#"{"redacted":true,"reason":"erasure request 9""#));
    let fsck = b.fsck(|_| {}).unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.redacted, 1);
    assert_eq!(
        b.redaction_of(&secret).unwrap().checkpoint,
        a.redaction_of(&secret).unwrap().checkpoint
    );
    // A depot cloned after the redaction never receives the data at all.
    let c_dir = tmp.path().join("c");
    let c = Depot::init(&c_dir).unwrap();
    c.sync_from(&a, &Default::default(), |_| {}).unwrap();
    assert_eq!(
        files_containing(&c_dir, SECRET.as_bytes()),
        Vec::<String>::new()
    );
    assert!(c.fsck(|_| {}).unwrap().is_clean());
    assert!(c
        .read_event(&secret)
        .unwrap()
        .data()
        .starts_with(br#"{"redacted":true"#));
}

#[test]
fn a_checkpoint_command_in_its_own_data_object_is_redacted_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".retro");
    let depot = Depot::init(&dir).unwrap();
    let command =
        format!(r#"{{"path":"people/z","name":"register","params":{{"name":"{SECRET}"}}}}"#);
    let c = depot
        .commit(CommitRequest::new(
            None,
            vec![(
                p("people/z"),
                ev("Registered", &format!(r#"{{"name":"{SECRET}"}}"#)),
            )],
            "s1",
            command.clone(),
        ))
        .unwrap();
    let checkpoint = depot.read_checkpoint(&c.checkpoint).unwrap();
    assert!(checkpoint.stored_message().is_empty());
    assert!(checkpoint.message_data().is_some());
    assert_eq!(checkpoint.message(), command.as_bytes());
    depot
        .redact(&[c.events[0], c.checkpoint], "erasure", "admin")
        .unwrap();
    assert_eq!(
        files_containing(&dir, SECRET.as_bytes()),
        Vec::<String>::new()
    );
    let checkpoint = depot.read_checkpoint(&c.checkpoint).unwrap();
    assert!(checkpoint.message().starts_with(br#"{"redacted":true"#));
    let fsck = depot.fsck(|_| {}).unwrap();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.redacted, 2);
}

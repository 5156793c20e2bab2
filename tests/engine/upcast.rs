//! Upcasting through the Rust API: declarative, split, rename, exec and Rust-function steps in a
//! chain, what handlers and `Engine::load` see, the version emitted events are written at, strict
//! manifest validation, snapshots keyed by the upcasters, and every way a step fails: a typed
//! error naming the event and the step, nothing written.

use std::path::Path;
use std::sync::Arc;

use depot::{Depot, Event, EventName, PartitionName};
use engine::{
    exec, Aggregate, ApplyError, Engine, Manifest, RecordedEvent, Transform, UpcastError,
    UpcastEvent, Upcaster, Upcasters,
};
use serde_json::{json, Value};

use crate::common::*;

/// Every event a handler folded, as `(name, schema version, data)`.
#[derive(Default, Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Seen {
    events: Vec<(String, u32, Value)>,
}

impl Aggregate for Seen {
    fn apply(&mut self, event: &RecordedEvent) {
        self.events
            .push((event.name.clone(), event.schema_version, event.data.clone()));
    }
}

/// A depot whose `wallets/w` partition holds the given v1 (or other) events, written directly.
fn depot_with(events: &[(&str, u32, Value)]) -> (tempfile::TempDir, Arc<Depot>) {
    let dir = tempfile::tempdir().unwrap();
    let depot = Arc::new(Depot::init(dir.path().join("d")).unwrap());
    let partition = PartitionName::new("wallets/w").unwrap();
    let list = events
        .iter()
        .map(|(name, version, data)| {
            (
                partition.clone(),
                Event::new(EventName::new(name).unwrap(), data.to_string()).with_version(*version),
            )
        })
        .collect();
    depot
        .commit(depot::CommitRequest::new(None, list, "s", b"{}".to_vec()))
        .unwrap();
    (dir, depot)
}

/// A manifest with kind `wallets` and command `touch`, which emits `Touched` (and, with
/// `{"deposit": N}`, a `Deposited {"cents": N}`).
fn wallets() -> Manifest {
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Seen>("wallets")
        .unwrap()
        .command("touch", |_seen, ctx| {
            if let Some(cents) = ctx.params().get("deposit").cloned() {
                let path = ctx.path().to_string();
                ctx.emit_json(&path, "Deposited", &json!({"cents": cents}))?;
            }
            let path = ctx.path().to_string();
            ctx.emit_json(&path, "Touched", &json!({}))
        })
        .unwrap();
    manifest
}

fn cents_v2() -> Upcaster {
    Upcaster::Transform(Transform {
        rename: [("amount".to_owned(), "cents".to_owned())].into(),
        default: [("currency".to_owned(), json!("EUR"))]
            .into_iter()
            .collect(),
        ..Transform::default()
    })
}

fn seen(engine: &Engine) -> Vec<(String, u32, Value)> {
    engine.load::<Seen>("wallets/w").unwrap().state.events
}

#[test]
fn a_chain_of_declarative_and_rust_steps_gives_the_handler_the_newest_version() {
    let (_dir, depot) = depot_with(&[
        ("Deposited", 1, json!({"amount": 5, "note": "x"})),
        ("Deposited", 2, json!({"cents": 7, "currency": "USD"})),
    ]);
    let mut manifest = wallets();
    manifest
        .upcast("Deposited", 1, cents_v2())
        .unwrap()
        .upcast(
            "Deposited",
            2,
            Upcaster::function(
                "add-channel-1",
                |event: &UpcastEvent, _partition: &PartitionName| {
                    let mut data = event.data.clone();
                    data["channel"] = json!("branch");
                    Ok(vec![UpcastEvent {
                        name: event.name.clone(),
                        version: 3,
                        data,
                    }])
                },
            ),
        )
        .unwrap();
    assert_eq!(manifest.upcasters().current("Deposited"), 3);
    let engine = Engine::new(depot.clone(), manifest);
    let loaded = engine.load::<Seen>("wallets/w").unwrap();
    assert_eq!(loaded.version, 2, "versions count stored events");
    assert_eq!(
        loaded.state.events,
        vec![
            (
                "Deposited".to_owned(),
                3,
                json!({"cents": 5, "note": "x", "currency": "EUR", "channel": "branch"})
            ),
            (
                "Deposited".to_owned(),
                3,
                json!({"cents": 7, "currency": "USD", "channel": "branch"})
            ),
        ]
    );
    // A command emits at the newest version; the stored v1 and v2 events are unchanged.
    let before: Vec<_> = depot
        .partition_events(&PartitionName::new("wallets/w").unwrap())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    engine
        .apply(
            "s",
            br#"{"path":"wallets/w","name":"touch","params":{"deposit":1}}"#,
        )
        .unwrap();
    let after = depot
        .partition_events(&PartitionName::new("wallets/w").unwrap())
        .unwrap();
    assert_eq!(
        after.iter().take(2).map(|r| r.id).collect::<Vec<_>>(),
        before
    );
    let versions: Vec<(String, u32)> = after
        .iter()
        .map(|r| (r.event.name().to_string(), r.event.version()))
        .collect();
    assert_eq!(
        versions,
        [
            ("Deposited".to_owned(), 1),
            ("Deposited".to_owned(), 2),
            ("Deposited".to_owned(), 3),
            ("Touched".to_owned(), 1),
        ]
    );
    assert_eq!(seen(&engine).len(), 4);
}

#[test]
fn a_split_renames_into_the_newest_version_of_another_name() {
    let (_dir, depot) = depot_with(&[("Moved", 1, json!({"from": "a", "to": "b", "n": 3}))]);
    let mut manifest = wallets();
    manifest
        .upcast(
            "Moved",
            1,
            Upcaster::Split(vec![
                Transform {
                    remove: vec!["to".to_owned()],
                    rename_event: Some("Left".to_owned()),
                    ..Transform::default()
                },
                Transform {
                    remove: vec!["from".to_owned()],
                    rename_event: Some("Arrived".to_owned()),
                    ..Transform::default()
                },
            ]),
        )
        .unwrap()
        .event_version("Arrived", 2)
        .unwrap();
    let engine = Engine::new(depot, manifest);
    // Another name's result is at that name's newest version (Left has none declared: v1).
    assert_eq!(
        seen(&engine),
        vec![
            ("Left".to_owned(), 1, json!({"from": "a", "n": 3})),
            ("Arrived".to_owned(), 2, json!({"to": "b", "n": 3})),
        ]
    );
}

#[test]
fn a_result_under_another_name_at_an_older_version_goes_on_through_that_names_chain() {
    let (_dir, depot) = depot_with(&[("Moved", 1, json!({"from": "a", "n": 3}))]);
    let mut manifest = wallets();
    manifest
        .upcast(
            "Moved",
            1,
            Upcaster::function(
                "moved-is-left-v1",
                |event: &UpcastEvent, _: &PartitionName| {
                    Ok(vec![UpcastEvent {
                        name: "Left".to_owned(),
                        version: 1,
                        data: event.data.clone(),
                    }])
                },
            ),
        )
        .unwrap()
        .upcast("Left", 1, Upcaster::Transform(Transform::default()))
        .unwrap()
        .upcast(
            "Left",
            2,
            Upcaster::Transform(Transform {
                rename: [("n".to_owned(), "count".to_owned())].into(),
                ..Transform::default()
            }),
        )
        .unwrap();
    let engine = Engine::new(depot, manifest);
    assert_eq!(
        seen(&engine),
        vec![("Left".to_owned(), 3, json!({"from": "a", "count": 3}))]
    );
}

#[test]
fn an_unknown_future_version_is_a_typed_error_never_a_pass_through() {
    let (_dir, depot) = depot_with(&[("Deposited", 4, json!({"cents": 1}))]);
    let id = depot
        .partition_events(&PartitionName::new("wallets/w").unwrap())
        .unwrap()[0]
        .id;
    let mut manifest = wallets();
    manifest.upcast("Deposited", 1, cents_v2()).unwrap();
    let engine = Engine::new(depot.clone(), manifest);
    let head = depot.head().unwrap();
    let err = engine
        .apply("s", br#"{"path":"wallets/w","name":"touch","params":{}}"#)
        .unwrap_err();
    match &err {
        ApplyError::Upcast(upcast) if matches!(**upcast, UpcastError::UnknownVersion { .. }) => {
            let UpcastError::UnknownVersion {
                id: got,
                name,
                version,
                newest,
                position,
                ..
            } = &**upcast
            else {
                unreachable!()
            };
            assert_eq!(
                (*got, name.as_str(), *version, *newest, *position),
                (id, "Deposited", 4, 2, 1)
            );
        }
        other => panic!("expected an unknown version, got {other:?}"),
    }
    assert_eq!(err.class(), depot::ErrorClass::Internal);
    assert!(
        err.to_string()
            .contains("newer than this domain knows: its newest Deposited is v2"),
        "{err}"
    );
    assert_eq!(depot.head().unwrap(), head, "nothing written");
    assert!(depot.failures().unwrap().is_empty(), "nothing recorded");
    // Without upcasters at all, a v2 event is just as unknown.
    let plain = Engine::new(depot.clone(), wallets());
    match plain.load::<Seen>("wallets/w") {
        Err(engine::LoadError::Upcast(e)) => {
            assert!(
                matches!(*e, UpcastError::UnknownVersion { newest: 1, .. }),
                "{e:?}"
            )
        }
        other => panic!("expected an unknown version, got {other:?}"),
    }
}

#[test]
fn a_declared_version_without_a_step_from_the_stored_one_is_an_error() {
    let (_dir, depot) = depot_with(&[("Arrived", 1, json!({}))]);
    let mut manifest = wallets();
    manifest.event_version("Arrived", 2).unwrap();
    let engine = Engine::new(depot, manifest);
    let err = engine.load::<Seen>("wallets/w").unwrap_err();
    assert!(
        err.to_string()
            .contains("the domain's newest Arrived is v2 but it has no upcaster from v1"),
        "{err}"
    );
}

#[test]
fn chains_are_checked_as_they_are_declared() {
    let mut manifest = Manifest::new();
    let gap = manifest.upcast("Deposited", 2, cents_v2()).err().unwrap();
    assert!(
        gap.to_string()
            .contains("the first step must be from v1, not v2"),
        "{gap}"
    );
    manifest.upcast("Deposited", 1, cents_v2()).unwrap();
    let again = manifest.upcast("Deposited", 1, cents_v2()).err().unwrap();
    assert!(
        again.to_string().contains("the next step must be from v2"),
        "{again}"
    );
    let declared = manifest.event_version("Deposited", 3).err().unwrap();
    assert!(
        declared
            .to_string()
            .contains("end at v2, not at the declared v3"),
        "{declared}"
    );
    let bad_name = manifest
        .upcast(
            "Moved",
            1,
            Upcaster::Transform(Transform {
                rename_event: Some("not a name".to_owned()),
                ..Transform::default()
            }),
        )
        .err()
        .unwrap();
    assert!(bad_name.to_string().contains("rename_event"), "{bad_name}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn manifest_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "manifest.json", text);
    let mut manifest = Manifest::new();
    exec::load_manifest(&path, &mut manifest)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "loaded".to_owned())
}

#[test]
fn the_json_manifest_upcasters_section_is_validated_strictly() {
    let cases = [
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2},{"from":3,"to":4}]}}"#,
            "the chain ends at v2: the next step must be from v2",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":2,"to":1}]}}"#,
            "goes to a lower (or the same) version",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":3}]}}"#,
            "skips versions",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2,"renmae":{}}]}}"#,
            "unknown field `renmae`",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2,"exec":["x"],"rename":{"a":"b"}}]}}"#,
            "not beside \"exec\" or \"split\"",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2,"split":[{"rename_event":"A","extra":1}]}]}}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[]}}"#,
            "the chain is empty",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2,"exec":[]}]}}"#,
            "\"exec\" is empty",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2,"timeout_ms":5}]}}"#,
            "are for \"exec\" steps",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"Deposited":[{"from":1,"to":2}]},"event_versions":{"Deposited":5}}"#,
            "end at v2, not at the declared v5",
        ),
        (
            r#"{"aggregates":{},"upcasters":{"bad name":[{"from":1,"to":2}]}}"#,
            "upcaster of 'bad name' from v1",
        ),
        (
            r#"{"aggregates":{},"event_versions":{"A":0}}"#,
            "versions start at 1",
        ),
    ];
    for (text, expected) in cases {
        let error = manifest_error(text);
        assert!(error.contains(expected), "{text}: {error}");
        assert!(error.starts_with("domain manifest '"), "{error}");
    }
    assert_eq!(
        manifest_error(
            r#"{"aggregates":{},"upcasters":{"D":[{"from":1,"to":2,"rename":{"a":"b"}}]},"event_versions":{"E":3}}"#
        ),
        "loaded"
    );
}

/// A depot with one v1 `Deposited {"amount": 5}` and a manifest whose v1→v2 step runs `script`.
fn exec_engine(script: &str, timeout_ms: u64) -> (tempfile::TempDir, tempfile::TempDir, Engine) {
    let (dir, depot) = depot_with(&[("Deposited", 1, json!({"amount": 5}))]);
    let domain = tempfile::tempdir().unwrap();
    write(domain.path(), "up.sh", script);
    let manifest_path = write(
        domain.path(),
        "manifest.json",
        &json!({
            "aggregates": {},
            "upcasters": {"Deposited": [{"from": 1, "to": 2, "exec": ["sh", "up.sh"], "timeout_ms": timeout_ms}]}
        })
        .to_string(),
    );
    let mut manifest = wallets();
    exec::load_manifest(&manifest_path, &mut manifest).unwrap();
    (dir, domain, Engine::new(depot, manifest))
}

#[test]
fn an_exec_step_reads_the_event_on_stdin_and_may_split_it() {
    let (_dir, _domain, engine) = exec_engine(
        r#"read -r line
case "$line" in
  *'"name":"Deposited","version":1,"data":{"amount":5},"partition":"wallets/w"'*) ;;
  *) echo "unexpected input: $line" >&2; exit 9 ;;
esac
printf '[{"name":"Deposited","data":{"cents":5}},{"name":"Noted","version":1,"data":{"why":"split"}}]'
"#,
        5000,
    );
    assert_eq!(
        seen(&engine),
        vec![
            ("Deposited".to_owned(), 2, json!({"cents": 5})),
            ("Noted".to_owned(), 1, json!({"why": "split"})),
        ]
    );
}

fn step_failure(script: &str, timeout_ms: u64) -> String {
    let (_dir, _domain, engine) = exec_engine(script, timeout_ms);
    let head = engine.depot().head().unwrap();
    let err = engine
        .apply("s", br#"{"path":"wallets/w","name":"touch","params":{}}"#)
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::Upcast(e) if matches!(**e, UpcastError::StepFailed { .. })),
        "{err:?}"
    );
    assert_eq!(engine.depot().head().unwrap(), head, "nothing written");
    assert!(
        engine.depot().failures().unwrap().is_empty(),
        "nothing recorded"
    );
    let text = err.to_string();
    assert!(
        text.contains("(Deposited v1, event 1 of 'wallets/w'): upcaster Deposited v1->v2 (exec sh up.sh) failed: "),
        "{text}"
    );
    text
}

#[test]
fn an_exec_step_that_crashes_times_out_or_prints_garbage_is_an_error_naming_it() {
    let crash = step_failure("echo boom >&2; exit 3\n", 5000);
    assert!(
        crash.contains("exited with status 3; stderr: boom"),
        "{crash}"
    );
    let garbage = step_failure("echo 'not json'\n", 5000);
    assert!(garbage.contains("printed invalid JSON"), "{garbage}");
    let object = step_failure("echo '{\"name\":\"Deposited\"}'\n", 5000);
    assert!(object.contains("instead of a JSON array"), "{object}");
    let bad_name = step_failure("echo '[{\"name\":\"no good\"}]'\n", 5000);
    assert!(bad_name.contains("invalid event name"), "{bad_name}");
    let backwards = step_failure("echo '[{\"name\":\"Deposited\",\"version\":1}]'\n", 5000);
    assert!(
        backwards.contains("not newer than its input"),
        "{backwards}"
    );
    let future = step_failure("echo '[{\"name\":\"Deposited\",\"version\":7}]'\n", 5000);
    assert!(
        future.contains("newer than the domain's newest Deposited (v2)"),
        "{future}"
    );
    let slow = step_failure("exec sleep 30\n", 200);
    assert!(slow.contains("timed out after 200 ms"), "{slow}");
}

#[test]
fn a_transform_that_does_not_fit_the_payload_is_an_error() {
    let (_dir, depot) = depot_with(&[("Deposited", 1, json!([1, 2]))]);
    let mut manifest = wallets();
    manifest.upcast("Deposited", 1, cents_v2()).unwrap();
    let engine = Engine::new(depot.clone(), manifest);
    let err = engine.load::<Seen>("wallets/w").unwrap_err();
    assert!(
        err.to_string()
            .contains("its payload is not a JSON object but an array"),
        "{err}"
    );
    let (_dir2, depot2) = depot_with(&[("Deposited", 1, json!({"amount": 1, "cents": 2}))]);
    let mut manifest = wallets();
    manifest.upcast("Deposited", 1, cents_v2()).unwrap();
    let err = Engine::new(depot2, manifest)
        .load::<Seen>("wallets/w")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("renaming into 'cents', which is already present"),
        "{err}"
    );
}

#[test]
fn snapshot_keys_include_the_upcasters() {
    let mut plain = wallets();
    let mut with = wallets();
    with.upcast("Deposited", 1, cents_v2()).unwrap();
    let mut other = wallets();
    other
        .upcast(
            "Deposited",
            1,
            Upcaster::Transform(Transform {
                rename: [("amount".to_owned(), "value".to_owned())].into(),
                ..Transform::default()
            }),
        )
        .unwrap();
    let key = |manifest: &mut Manifest| {
        manifest
            .aggregate::<Snap>("counters")
            .unwrap()
            .snapshot_every(2, "1")
            .command("touch", |_, ctx| {
                ctx.emit_json("counters/c", "Touched", &json!({}))
            })
            .unwrap();
        let (_dir, engine) = native_engine(manifest.clone());
        for _ in 0..3 {
            engine
                .apply("s", br#"{"path":"counters/c","name":"touch","params":{}}"#)
                .unwrap();
        }
        engine
            .snapshot_now("counters/**")
            .unwrap()
            .into_iter()
            .find_map(|made| match made.outcome {
                engine::SnapshotOutcome::Taken { domain, .. } => Some(domain),
                _ => None,
            })
            .expect("a snapshot taken")
    };
    let (a, b, c) = (key(&mut plain), key(&mut with), key(&mut other));
    assert!(
        !a.contains("+upcast:"),
        "no upcasters, the key of before: {a}"
    );
    assert!(b.starts_with(&a) && b.contains("+upcast:"), "{b}");
    assert_ne!(b, c, "different upcasters, different keys");
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Snap {
    n: u64,
}

impl Aggregate for Snap {
    fn apply(&mut self, _event: &RecordedEvent) {
        self.n += 1;
    }
}

#[test]
fn exec_handlers_see_versions_and_may_declare_them() {
    let (_dir, depot) = depot_with(&[("Deposited", 1, json!({"amount": 5}))]);
    let domain = tempfile::tempdir().unwrap();
    // The handler echoes the versions it saw into its event, and declares v1 explicitly.
    write(
        domain.path(),
        "h.py",
        r#"import json, sys
req = json.load(sys.stdin)
seen = [[e["name"], e["version"]] for e in req["aggregate"]["events"]]
mode = req["command"]["params"].get("mode")
events = [{"name": "Deposited", "data": {"cents": 1, "seen": seen}}]
if mode == "old":
    events = [{"name": "Deposited", "version": 1, "data": {"amount": 1}}]
if mode == "future":
    events = [{"name": "Deposited", "version": 9, "data": {}}]
print(json.dumps({"events": {req["command"]["path"]: events}}))
"#,
    );
    let manifest_path = write(
        domain.path(),
        "manifest.json",
        &json!({
            "aggregates": {"wallets": {"commands": {"deposit": {"exec": ["python3", "h.py"]}}}},
            "upcasters": {"Deposited": [{"from": 1, "to": 2, "rename": {"amount": "cents"}}]}
        })
        .to_string(),
    );
    let mut manifest = Manifest::new();
    exec::load_manifest(&manifest_path, &mut manifest).unwrap();
    let engine = Engine::new(depot.clone(), manifest);
    engine
        .apply("s", br#"{"path":"wallets/w","name":"deposit","params":{}}"#)
        .unwrap();
    engine
        .apply(
            "s",
            br#"{"path":"wallets/w","name":"deposit","params":{"mode":"old"}}"#,
        )
        .unwrap();
    let err = engine
        .apply(
            "s",
            br#"{"path":"wallets/w","name":"deposit","params":{"mode":"future"}}"#,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("emitted Deposited v9, newer than the domain's newest (v2)"),
        "{err}"
    );
    let stored = depot
        .partition_events(&PartitionName::new("wallets/w").unwrap())
        .unwrap();
    let written: Vec<(u32, Value)> = stored
        .iter()
        .skip(1)
        .map(|r| {
            (
                r.event.version(),
                serde_json::from_slice(r.event.data()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        written,
        vec![
            (2, json!({"cents": 1, "seen": [["Deposited", 2]]})),
            (1, json!({"amount": 1})),
        ]
    );
}

#[test]
fn upcasters_alone_upcast_one_event() {
    let mut upcasters = Upcasters::new();
    upcasters
        .add(
            "A",
            1,
            Upcaster::Transform(Transform {
                rename_event: Some("B".to_owned()),
                ..Transform::default()
            }),
        )
        .unwrap();
    upcasters.declare_version("B", 2).unwrap();
    let out = upcasters
        .upcast(
            depot::ObjectId::of(b"x"),
            &PartitionName::new("p").unwrap(),
            1,
            UpcastEvent {
                name: "A".to_owned(),
                version: 1,
                data: json!({"k": 1}),
            },
        )
        .unwrap();
    assert_eq!(
        out,
        vec![UpcastEvent {
            name: "B".to_owned(),
            version: 2,
            data: json!({"k": 1})
        }]
    );
    assert_eq!(
        upcasters.versions().into_iter().collect::<Vec<_>>(),
        [("A".to_owned(), 2), ("B".to_owned(), 2)]
    );
}

#[test]
fn context_load_upcasts_the_other_aggregate_too() {
    let (_dir, depot) = depot_with(&[("Deposited", 1, json!({"amount": 5}))]);
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Seen>("readers")
        .unwrap()
        .command("peek", |_, ctx| {
            let other = ctx.load::<Seen>("wallets/w")?;
            let path = ctx.path().to_string();
            ctx.emit_json(&path, "Peeked", &json!({"seen": other.state.events}))
        })
        .unwrap();
    manifest.upcast("Deposited", 1, cents_v2()).unwrap();
    let engine = Engine::new(depot.clone(), manifest);
    engine
        .apply("s", br#"{"path":"readers/r","name":"peek","params":{}}"#)
        .unwrap();
    let peeked = depot
        .partition_events(&PartitionName::new("readers/r").unwrap())
        .unwrap();
    let data: Value = serde_json::from_slice(peeked[0].event.data()).unwrap();
    assert_eq!(
        data["seen"],
        json!([["Deposited", 2, {"cents": 5, "currency": "EUR"}]])
    );
    // A stored event of the loaded aggregate that cannot be upcast stops the command: an
    // upcast error, not a rejection, and nothing recorded.
    let (_dir2, depot2) = depot_with(&[("Deposited", 3, json!({}))]);
    let mut manifest = Manifest::new();
    manifest
        .aggregate::<Seen>("readers")
        .unwrap()
        .command("peek", |_, ctx| {
            ctx.load::<Seen>("wallets/w")?;
            Ok(())
        })
        .unwrap();
    manifest.upcast("Deposited", 1, cents_v2()).unwrap();
    let engine = Engine::new(depot2.clone(), manifest);
    let err = engine
        .apply("s", br#"{"path":"readers/r","name":"peek","params":{}}"#)
        .unwrap_err();
    assert!(matches!(err, ApplyError::Upcast(_)), "{err:?}");
    assert!(depot2.failures().unwrap().is_empty());
}

#[test]
fn an_exec_step_runs_once_per_stored_event_in_a_process() {
    let (_dir, domain, engine) = exec_engine(
        r#"cat >/dev/null
echo run >> runs.log
printf '[{"name":"Deposited","data":{"cents":5}}]'
"#,
        5000,
    );
    let runs = || {
        std::fs::read_to_string(domain.path().join("runs.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    for _ in 0..3 {
        assert_eq!(
            seen(&engine)[0],
            ("Deposited".to_owned(), 2, json!({"cents": 5}))
        );
    }
    engine
        .apply("s", br#"{"path":"wallets/w","name":"touch","params":{}}"#)
        .unwrap();
    assert_eq!(runs(), 1, "read 4 times, run once");
    // A manifest loaded afresh (new upcasters) runs it again.
    let mut manifest = wallets();
    exec::load_manifest(&domain.path().join("manifest.json"), &mut manifest).unwrap();
    let again = Engine::new(engine.depot().clone(), manifest);
    seen(&again);
    assert_eq!(runs(), 2);
}

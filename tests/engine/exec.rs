//! The exec protocol with the fixture handlers (Python and shell), and every way a handler can
//! misbehave: a clear error naming the handler, and no ref moved.

use std::path::Path;
use std::sync::Arc;

use depot::{Depot, PartitionName};
use engine::{exec, ApplyError, Engine, Manifest};

use crate::common::*;

fn engine_with(manifest_file: &str) -> (tempfile::TempDir, Engine) {
    let mut manifest = Manifest::new();
    exec::load_manifest(&fixtures().join(manifest_file), &mut manifest).unwrap();
    native_engine(manifest)
}

#[test]
fn the_python_handler_runs_the_accounts_domain() {
    let (_dir, engine) = engine_with("manifest.json");
    let applied = engine
        .apply(
            "s1",
            br#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#,
        )
        .unwrap();
    assert_eq!(
        applied.partitions,
        vec!["accounts/alice", "registry/accounts"]
    );
    engine
        .apply(
            "s1",
            br#"{"path":"accounts/alice","name":"deposit","params":{"amount":50}}"#,
        )
        .unwrap();
    let err = engine
        .apply(
            "s1",
            br#"{"path":"accounts/alice","name":"withdraw","params":{"amount":51}}"#,
        )
        .unwrap_err();
    match &err {
        ApplyError::Rejected { error, recorded } => {
            assert_eq!(error.code, "insufficient_funds");
            assert!(error.message.contains("balance is 50"), "{}", error.message);
            assert!(recorded.is_some());
        }
        other => panic!("expected a rejection, got {other}"),
    }
    engine
        .apply(
            "s1",
            br#"{"path":"accounts/alice","name":"withdraw","params":{"amount":50}}"#,
        )
        .unwrap();
    let events = engine
        .depot()
        .partition_events(&PartitionName::new("accounts/alice").unwrap())
        .unwrap();
    assert_eq!(events.len(), 3);
}

#[test]
fn the_shell_handler_runs_with_environment_variables() {
    let (_dir, engine) = engine_with("manifest.json");
    engine
        .apply(
            "s1",
            br#"{"path":"notes/n1","name":"add","params":{"text":"hello"}}"#,
        )
        .unwrap();
    let events = engine
        .depot()
        .partition_events(&PartitionName::new("notes/n1").unwrap())
        .unwrap();
    assert_eq!(events[0].event.name().as_str(), "NoteAdded");
    assert_eq!(events[0].event.data(), br#"{"text":"hello"}"#);
    let err = engine
        .apply("s1", br#"{"path":"notes/n1","name":"add","params":{}}"#)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid_params: add needs a text param"),
        "{err}"
    );
}

#[test]
fn misbehaving_handlers_fail_clearly_and_move_no_ref() {
    let (dir, engine) = engine_with("misbehaving.json");
    let ok = engine.start_session().unwrap();
    let head = engine.depot().head().unwrap();
    let master = std::fs::read(depot_dir(&dir).join("refs/heads/master")).unwrap();
    let cases = [
        ("sleep", "timed out after 1000 ms"),
        ("crash", "was killed by signal 11"),
        ("garbage", "printed invalid JSON"),
        ("huge", "printed more than"),
        ("badname", "emitted an invalid event name"),
        ("badpartition", "emitted to an invalid partition"),
    ];
    for (command, expected) in cases {
        let payload = format!(r#"{{"path":"bad/1","name":"{command}"}}"#);
        let started = std::time::Instant::now();
        let err = engine.apply(&ok, payload.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ApplyError::Handler { .. }),
            "{command}: {text}"
        );
        assert!(
            text.contains(&format!("'bad/{command}")),
            "names the handler: {text}"
        );
        assert!(text.contains(expected), "{command}: {text}");
        assert!(started.elapsed().as_secs() < 20, "{command} took too long");
        assert_eq!(engine.depot().head().unwrap(), head, "{command}");
        assert_eq!(
            std::fs::read(depot_dir(&dir).join("refs/heads/master")).unwrap(),
            master
        );
    }
    let err = engine
        .apply(&ok, br#"{"path":"bad/1","name":"exit0error"}"#)
        .unwrap_err();
    assert!(
        matches!(err, ApplyError::Rejected { .. }),
        "an error object wins: {err}"
    );
    assert_eq!(engine.depot().failures().unwrap().len(), cases.len() + 1);
    assert!(engine.depot().fsck(|_| {}).unwrap().is_clean());
}

#[test]
fn a_handler_that_cannot_start_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("m.json");
    std::fs::write(
        &manifest_path,
        r#"{"aggregates":{"x":{"commands":{"go":{"exec":["./no-such-program"]}}}}}"#,
    )
    .unwrap();
    let mut manifest = Manifest::new();
    exec::load_manifest(&manifest_path, &mut manifest).unwrap();
    let engine = Engine::new(Arc::new(Depot::in_memory().unwrap()), manifest);
    let err = engine
        .apply("s", br#"{"path":"x/1","name":"go"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("could not start"), "{err}");
    assert!(err.to_string().contains("'x/go'"), "{err}");
}

#[test]
fn invalid_manifests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("{", "is invalid"),
        (
            r#"{"aggregates":{"x":{"commands":{"go":{"exec":[]}}}}}"#,
            "\"exec\" is empty",
        ),
        (
            r#"{"aggregates":{"x":{"commands":{"go":{"exec":["a"],"timeout_ms":0}}}}}"#,
            "timeout_ms",
        ),
        (
            r#"{"aggregates":{"x":{"commands":{"go":{"exec":["a"],"bogus":1}}}}}"#,
            "unknown field",
        ),
        (
            r#"{"aggregates":{"../x":{"commands":{"go":{"exec":["a"]}}}}}"#,
            "aggregate kind",
        ),
    ] {
        let path = dir.path().join("m.json");
        std::fs::write(&path, text).unwrap();
        let err = exec::load_manifest(&path, &mut Manifest::new()).unwrap_err();
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
    let err =
        exec::load_manifest(Path::new("/nonexistent/m.json"), &mut Manifest::new()).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("could not read domain manifest"));
}

/// Writes `manifest.json` and `h.sh` (the handler script) into a fresh directory.
fn manifest_dir(manifest: &str, script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    std::fs::write(dir.path().join("h.sh"), script).unwrap();
    dir
}

fn engine_in(dir: &Path) -> (tempfile::TempDir, Engine) {
    let mut manifest = Manifest::new();
    exec::load_manifest(&dir.join("manifest.json"), &mut manifest).unwrap();
    native_engine(manifest)
}

#[test]
fn i16_1_command_names_are_normalised_to_the_manifests_spelling() {
    // The fixture's Python handler only knows `deposit`: `Deposit` must reach it as `deposit`.
    let (_dir, engine) = engine_with("manifest.json");
    engine
        .apply(
            "s1",
            br#"{"path":"accounts/py1","name":"Open","params":{"owner":"P"}}"#,
        )
        .unwrap();
    let applied = engine
        .apply(
            "s1",
            br#"{"path":"accounts/py1","name":"Deposit","params":{"amount":5}}"#,
        )
        .unwrap();
    let checkpoint = engine.depot().read_checkpoint(&applied.checkpoint).unwrap();
    assert_eq!(
        checkpoint.message(),
        br#"{"path":"accounts/py1","name":"deposit","params":{"amount":5}}"#
    );
    // Both the request and the environment say the manifest's spelling.
    let dir = manifest_dir(
        r#"{"aggregates":{"k":{"commands":{"doThing":{"exec":["sh","h.sh"]}}}}}"#,
        "req=$(cat); name=$(printf '%s' \"$req\" | sed 's/.*\"name\":\"\\([^\"]*\\)\".*/\\1/')\n\
         printf '{\"events\":{\"%s\":[{\"name\":\"Seen\",\"data\":{\"env\":\"%s\",\"request\":\"%s\"}}]}}' \"$RETRO_PATH\" \"$RETRO_COMMAND\" \"$name\"\n",
    );
    let (_d, engine) = engine_in(dir.path());
    engine
        .apply("s1", br#"{"path":"k/1","name":"DoThing","params":{}}"#)
        .unwrap();
    let events = engine
        .depot()
        .partition_events(&PartitionName::new("k/1").unwrap())
        .unwrap();
    assert_eq!(
        std::str::from_utf8(events[0].event.data()).unwrap(),
        r#"{"env":"doThing","request":"doThing"}"#
    );
}

#[test]
fn i16_2_exec_arguments_are_passed_as_given() {
    let dir = manifest_dir(
        r#"{"aggregates":{"k":{"commands":{"args":{"exec":["sh","h.sh","--flag=a/b","http://x/y","cat >/dev/null; echo"]},
            "prog":{"exec":["./bin/p.sh","rel/file"]}}}}}"#,
        "cat >/dev/null\n\
         printf '{\"events\":{\"%s\":[{\"name\":\"Args\",\"data\":{\"1\":\"%s\",\"2\":\"%s\",\"3\":\"%s\"}}]}}' \"$RETRO_PATH\" \"$1\" \"$2\" \"$3\"\n",
    );
    // The program itself, a relative path with a '/', still resolves against the manifest's
    // directory; its argument is passed as written.
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let prog = dir.path().join("bin/p.sh");
    std::fs::write(
        &prog,
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"events\":{\"%s\":[{\"name\":\"Prog\",\"data\":{\"1\":\"%s\"}}]}}' \"$RETRO_PATH\" \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_d, engine) = engine_in(dir.path());
    engine
        .apply("s1", br#"{"path":"k/1","name":"args"}"#)
        .unwrap();
    engine
        .apply("s1", br#"{"path":"k/1","name":"prog"}"#)
        .unwrap();
    let events = engine
        .depot()
        .partition_events(&PartitionName::new("k/1").unwrap())
        .unwrap();
    assert_eq!(
        std::str::from_utf8(events[0].event.data()).unwrap(),
        r#"{"1":"--flag=a/b","2":"http://x/y","3":"cat >/dev/null; echo"}"#
    );
    assert_eq!(
        std::str::from_utf8(events[1].event.data()).unwrap(),
        r#"{"1":"rel/file"}"#
    );
}

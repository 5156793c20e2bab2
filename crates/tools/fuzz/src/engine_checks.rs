//! Properties of the engine's parsers on arbitrary input, one function per fuzz target: the
//! command JSON, an exec handler's response, the JSON domain manifest, and `retro test` specs.
//!
//! Like `checks.rs`, each panics when a property fails, and uses only the public APIs of `engine`,
//! `depot` and `serde_json`: the file is also compiled into the engine's test binary
//! (`tests/engine/fuzz_smoke.rs`) by `#[path]`.

use std::path::Path;

use engine::exec::{load_manifest_bytes, ExecHandler};
use engine::{Command, Failure, Manifest};

/// A fuzz check: panics when an input breaks an invariant.
pub type Check = fn(&[u8]);

/// Every engine target, by name, as `corpus-seed/<name>/` and `fuzz_targets/<name>.rs` name them.
pub const TARGETS: &[(&str, Check)] = &[
    ("command_json", command_json),
    ("exec_response", exec_response),
    ("manifest", manifest),
    ("spec_line", spec_line),
    ("upcasters", upcasters),
    ("upcast_output", upcast_output),
    ("projection_ack", projection_ack),
];

/// A projection handler's answer line never panics the parser; an accepted acknowledgement
/// names exactly the batch's checkpoint (the parser refuses any other), and each issued command
/// carries a valid path.
pub fn projection_ack(data: &[u8]) {
    let checkpoint: depot::ObjectId =
        "sha256:1d877dceb0d2a86a4dd2542e1100ad05e25b3da324af8a68e691731ddb406e82"
            .parse()
            .expect("a valid id");
    for expected in [Some(&checkpoint), None] {
        match engine::projection::parse_ack(data, expected) {
            Ok(ack) => {
                let text = String::from_utf8_lossy(data);
                let acked = serde_json::from_slice::<serde_json::Value>(data)
                    .expect("an accepted answer is JSON")["ack"]
                    .clone();
                assert_eq!(
                    acked.as_str(),
                    expected.map(|c| c.to_string()).as_deref(),
                    "{text}"
                );
                for issued in ack.commands {
                    assert!(!issued.command.path().is_empty());
                }
            }
            Err(failure) => assert!(!failure.message.is_empty()),
        }
    }
}

/// The `upcasters`/`event_versions` sections of a manifest never panic the parser; what it
/// accepts is a gap-free chain per name (every name's newest version is at least 1, and a
/// declared version equals its chain's end).
pub fn upcasters(data: &[u8]) {
    let mut upcasters = engine::Upcasters::new();
    if engine::exec::parse_upcasters(data, Path::new("fuzz"), &mut upcasters).is_err() {
        return;
    }
    for (name, version) in upcasters.versions() {
        assert!(version >= 1);
        assert_eq!(upcasters.current(&name), version);
        assert!(depot::EventName::new(&name).is_ok());
    }
    assert_eq!(upcasters.is_empty(), upcasters.fingerprint().is_none());
}

/// An exec upcaster's standard output never panics the parser; accepted results have valid
/// names and versions of at least 1.
pub fn upcast_output(data: &[u8]) {
    let Ok(events) = engine::upcast::parse_exec_output(data, &|_| 2) else {
        return;
    };
    for event in events {
        assert!(depot::EventName::new(&event.name).is_ok());
        assert!(event.version >= 1);
    }
}

/// `Command::parse` never panics; an accepted command has a valid path and name, its ids are
/// valid tokens that make valid checkpoint fields, and its compact JSON (which never holds the
/// ids) parses back to the same command.
pub fn command_json(data: &[u8]) {
    let Ok(command) = Command::parse(data) else {
        return;
    };
    assert!(depot::PartitionName::new(command.path()).is_ok());
    assert!(!command.name().is_empty());
    let ids = command.ids();
    for id in [&ids.id, &ids.correlation_id, &ids.causation_id]
        .into_iter()
        .flatten()
    {
        assert!(engine::check_id("id", id).is_ok(), "{id:?}");
    }
    let fields = ids.fields();
    assert_eq!(
        fields.len(),
        [&ids.id, &ids.correlation_id, &ids.causation_id]
            .iter()
            .filter(|id| id.is_some())
            .count()
    );
    let again =
        Command::parse(command.to_json().as_bytes()).expect("a parsed command's JSON parses again");
    assert_eq!(again.path(), command.path());
    assert_eq!(again.name(), command.name());
    assert_eq!(again.params(), command.params());
    assert!(again.ids().is_empty(), "the message never holds the ids");
}

/// An exec handler's response never panics the parser; accepted events have valid partitions and
/// names and JSON data; a rejection carries a code.
pub fn exec_response(data: &[u8]) {
    let handler = ExecHandler::new("fuzz/handler", vec!["true".to_owned()], ".".into());
    match handler.parse_response(data) {
        Ok(events) => {
            for (partition, event) in events {
                assert!(depot::PartitionName::new(partition.as_str()).is_ok());
                assert!(depot::EventName::new(event.name().as_str()).is_ok());
                serde_json::from_slice::<serde_json::Value>(event.data())
                    .expect("event data is JSON");
            }
        }
        Err(Failure::Rejected(rejection)) => assert!(!rejection.code.is_empty()),
        Err(_) => {}
    }
}

/// Loading a JSON domain manifest never panics, whatever the bytes.
pub fn manifest(data: &[u8]) {
    let mut manifest = Manifest::new();
    let _ = load_manifest_bytes(data, Path::new("fuzz/manifest.json"), &mut manifest);
}

/// A `retro test` spec never panics the parser, whatever the bytes (lines, JSON, UTF-8); every
/// case it accepts prints back (`Case::to_line`) as a line that parses to the same case.
pub fn spec_line(data: &[u8]) {
    let Ok(cases) = engine::testing::parse_spec(data) else {
        return;
    };
    for case in cases {
        let line = case.to_line();
        let again = engine::testing::Case::parse(line.as_bytes())
            .unwrap_or_else(|e| panic!("a parsed case's line parses again: {e}: {line}"));
        assert_eq!(again, case, "{line}");
    }
}

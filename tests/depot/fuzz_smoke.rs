//! A bounded replay of the depot's fuzz targets on stable Rust: the checks of `crates/tools/fuzz/src/checks.rs`
//! through the shared harness `crates/tools/fuzz/src/smoke.rs` (both compiled in here by path). See
//! `crates/tools/fuzz/README.md`.

#[path = "../../crates/tools/fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../../crates/tools/fuzz/src/smoke.rs"]
mod smoke;

fn run(target: &str) {
    smoke::replay_named(checks::TARGETS, target);
}

#[test]
fn inclusion_proof() {
    run("inclusion_proof");
}

#[test]
fn object_decode() {
    run("object_decode");
}

#[test]
fn object_id() {
    run("object_id");
}

#[test]
fn ref_name() {
    run("ref_name");
}

#[test]
fn partition_name() {
    run("partition_name");
}

#[test]
fn group_state() {
    run("group_state");
}

#[test]
fn revision() {
    run("revision");
}

#[test]
fn every_target_has_a_seed_directory() {
    smoke::assert_seed_dirs(checks::TARGETS);
}

#[test]
fn event_format() {
    run("event_format");
}

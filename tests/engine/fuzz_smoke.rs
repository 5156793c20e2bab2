//! A bounded replay of the engine's fuzz targets (command JSON, exec-handler responses, domain
//! manifests, `retro test` specs) on stable Rust: the checks of `crates/tools/fuzz/src/engine_checks.rs` through the shared harness
//! `crates/tools/fuzz/src/smoke.rs` (both compiled in here by path). See `crates/tools/fuzz/README.md`.

#[path = "../../crates/tools/fuzz/src/engine_checks.rs"]
mod engine_checks;
#[path = "../../crates/tools/fuzz/src/smoke.rs"]
mod smoke;

fn run(target: &str) {
    smoke::replay_named(engine_checks::TARGETS, target);
}

#[test]
fn command_json() {
    run("command_json");
}

#[test]
fn exec_response() {
    run("exec_response");
}

#[test]
fn projection_ack() {
    run("projection_ack");
}

#[test]
fn manifest() {
    run("manifest");
}

#[test]
fn every_engine_target_has_a_seed_directory() {
    smoke::assert_seed_dirs(engine_checks::TARGETS);
}

#[test]
fn spec_line() {
    run("spec_line");
}

#[test]
fn upcasters() {
    run("upcasters");
}

#[test]
fn upcast_output() {
    run("upcast_output");
}

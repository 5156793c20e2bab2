//! A bounded replay of the engine's fuzz targets (command JSON, exec-handler responses, domain
//! manifests) on stable Rust: the checks of `crates/fuzz/src/engine_checks.rs` through the shared harness
//! `crates/fuzz/src/smoke.rs` (both compiled in here by path). See `crates/fuzz/README.md`.

#[path = "../../crates/fuzz/src/engine_checks.rs"]
mod engine_checks;
#[path = "../../crates/fuzz/src/smoke.rs"]
mod smoke;

fn run(target: &str) {
    let check = engine_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check named {target}"))
        .1;
    smoke::replay(target, check);
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
fn manifest() {
    run("manifest");
}

#[test]
fn every_engine_target_has_a_seed_directory() {
    for (target, _) in engine_checks::TARGETS {
        assert!(
            smoke::seed_dir(target).is_dir(),
            "crates/fuzz/corpus-seed/{target} is missing"
        );
    }
}

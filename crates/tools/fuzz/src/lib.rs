//! The checks behind retro's fuzz targets, shared with the bounded replay tests of the main
//! workspace (`tests/depot/fuzz_smoke.rs` and `tests/engine/fuzz_smoke.rs` include `checks.rs`,
//! `engine_checks.rs` and the harness `smoke.rs` by path), so that a crash found by libFuzzer and
//! saved under `corpus-seed/<target>/` is replayed on stable Rust too.

pub mod checks;
pub mod engine_checks;

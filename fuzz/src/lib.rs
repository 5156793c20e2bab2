//! The checks behind retro's fuzz targets, shared with the bounded replay test of the main
//! workspace (`tests/depot/fuzz_smoke.rs` includes `checks.rs` by path), so that a crash found by
//! libFuzzer and saved under `corpus-seed/<target>/` is replayed on stable Rust too.

pub mod checks;

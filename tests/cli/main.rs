//! End-to-end tests of the `retro` binary: each test drives the built executable in a fresh
//! temporary depot, with a clean environment (`RETRO_DEPOT`, `RETRO_SESSION`, `RETRO_MANIFEST`
//! removed, `NO_COLOR=1`). Golden outputs live in `fixtures/cli/`; `RETRO_BLESS=1` rewrites them.

mod apply_batch;
mod bad_inputs;
mod basics;
mod bisect;
mod blame;
mod branches;
mod common;
mod compat;
mod domain_test;
mod errors;
mod golden;
mod groups;
mod history;
mod idempotency;
mod maintenance;
mod objects;
mod partial_clone;
#[cfg(unix)]
mod projections;
mod proofs;
mod redact;
mod refs;
mod repair;
#[cfg(unix)]
mod serve;
mod signatures;
mod snapshots;
mod tour;
mod transfer;
mod upcast;
mod verify;
#[cfg(unix)]
mod watch;

//! Integration tests of the depot crate: commits, concurrency (threads and processes), crash
//! safety, go-retro depots, fsck, gc, revisions.

mod command_ids;
mod commits;
mod common;
mod concurrency;
mod crash;
mod fuzz_smoke;
mod go_retro;
mod graph;
mod groups;
mod maintenance;
mod pack_v2;
mod partial;
mod power_loss;
mod proofs;
mod recovery;
mod redact;
mod reliability;
mod revisions;
mod storage_v2;
mod subscribe;

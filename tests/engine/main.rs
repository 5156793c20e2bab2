//! Integration tests of the engine: the apply pipeline and its errors, sessions, failure
//! recording, concurrency, and the exec protocol with the fixture handlers.

mod common;
mod concurrency;
mod embedding;
mod exec;
mod fuzz_smoke;
mod given_when_then;
mod idempotency;
mod merge;
mod pipeline;
mod projections;
mod snapshots;
mod upcast;

//! Integration tests of the PostgreSQL backend (`retro-depot-postgres`) through the depot's
//! library API, against throw-away PostgreSQL servers (`pgtest`, Debian's `postgresql` package,
//! installed by `make test`). The CLI's tests on PostgreSQL depots are in `tests/postgres`.

mod depot;
mod groups;

/// Helpers shared with the files-depot tests.
#[path = "../depot/common.rs"]
#[allow(dead_code)]
mod common;

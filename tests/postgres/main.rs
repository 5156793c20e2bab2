//! retro on PostgreSQL, end to end, against a real server: a throw-away cluster on loopback
//! (`pgtest`, Debian's `postgresql` package, installed by `make test`). No mocks.
//!
//! - every CLI command on a `postgres://` depot, with the same output as the files depot it was
//!   synced from;
//! - sync round trips files → PostgreSQL → files, byte for byte, and resuming an interrupted sync;
//! - 8 writer processes on one depot: no lost update, one linear history, fsck clean;
//! - PostgreSQL killed in the middle of a write loop: clear errors, then nothing acknowledged lost;
//! - `retro watch` woken across processes by `LISTEN/NOTIFY`;
//! - `retro group run` members sharing a group, one killed and taken over;
//! - TLS with a private CA, and no silent downgrade.

mod cli;
mod common;
mod crash;
mod groups;
mod serve;
mod sync;
mod tls;
mod watch;
mod writers;

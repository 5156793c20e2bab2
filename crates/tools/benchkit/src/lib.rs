//! What retro's proof and tooling crates share, defined once: the [`Figure`] a measurement
//! produces (the JSON line `retro-peers` prints and `retro-bench` reads), latency
//! [`Percentiles`] and [`per_second`] rates, the seeded [`Rng`] (also used by the tests, as a
//! dev-dependency), finding a [`sibling_binary`], [`join_all`] for worker threads, and [`wait_until`] (polling a
//! condition with a deadline, where tests have no event to wait on).
//!
//! It depends on no retro crate, so that `retro-bench`, `retro-peers`, `retro-torture` and the
//! test suites of the depot and the engine can all use it: `benchkit` ← tools, tests.
//!
//! Modules: [`figure`] (the figure), [`stats`] (percentiles and rates), [`rng`] (splitmix64),
//! [`run`] (sibling binaries, joining threads), [`wait`] (polling with a deadline).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod figure;
pub mod rng;
pub mod run;
pub mod stats;
pub mod wait;

pub use figure::Figure;
pub use rng::Rng;
pub use run::{join_all, sibling_binary};
pub use stats::{per_second, Percentiles};
pub use wait::{wait_until, TimedOut};

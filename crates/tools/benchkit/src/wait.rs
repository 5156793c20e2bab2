//! [`wait_until`]: synchronising on a condition when no event announces it (a lock being waited
//! for, a file appearing): poll it with a short interval until a generous deadline. Tests use it
//! in place of fixed sleeps.

use std::fmt;
use std::time::{Duration, Instant};

/// How often [`wait_until`] checks its condition.
pub const POLL: Duration = Duration::from_millis(10);

/// A condition still false at its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} did not happen within {:?}", self.what, self.after)
    }
}

impl std::error::Error for TimedOut {}

/// Polls `condition` every [`POLL`] until it holds (`Ok`) or `within` has passed (`TimedOut`,
/// naming `what`). The deadline only bounds a failure: a condition that holds returns at once.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                after: within,
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds_and_names_what_never_did() {
        let mut calls = 0;
        wait_until("three calls", Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
        let err = wait_until("nothing", Duration::ZERO, || false).unwrap_err();
        assert_eq!(err.to_string(), "nothing did not happen within 0ns");
    }
}

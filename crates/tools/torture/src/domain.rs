//! The writers' domain: the built-in example bank plus a small counter aggregate whose events
//! carry their expected position, so that a lost update (a handler run on stale state that still
//! got committed) shows up as a gap or a repeat.

use serde::{Deserialize, Serialize};

use engine::{example, Aggregate, DomainEvent, Manifest, RecordedEvent, RegistrationError};

/// The counter's one event: `n` is the counter's value after it, `cid` the command id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incremented {
    /// The command id that produced it.
    pub cid: String,
    /// The counter's value after this event (equal to the event's version in its partition).
    pub n: u64,
}

impl DomainEvent for Incremented {
    const NAME: &'static str = "Incremented";
}

/// A counter: how many `Incremented` events it has seen.
#[derive(Debug, Default)]
pub struct Counter {
    n: u64,
}

impl Aggregate for Counter {
    fn apply(&mut self, event: &RecordedEvent) {
        if event.name == Incremented::NAME {
            self.n += 1;
        }
    }
}

/// The bank (`accounts/*`) and the counters (`counters/*`, command `inc {cid}`).
pub fn manifest() -> Result<Manifest, RegistrationError> {
    let mut manifest = example::bank_manifest()?;
    manifest
        .aggregate::<Counter>("counters")?
        .command("inc", |counter, ctx| {
            let cid: String = ctx.param("cid")?;
            ctx.emit(&Incremented {
                cid,
                n: counter.n + 1,
            })
        })?;
    Ok(manifest)
}

/// The accounts every depot opens before writers start.
pub const ACCOUNTS: &[&str] = &["accounts/a0", "accounts/a1", "accounts/a2", "accounts/a3"];

/// The counters writers increment.
pub const COUNTERS: &[&str] = &["counters/c0", "counters/c1", "counters/c2"];

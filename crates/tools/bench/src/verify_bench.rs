//! Measures `retro verify`'s replay ([`engine::replay::Replay`]): every command of a files
//! depot's history re-run with the built-in bank on the state as of its parent, compared by
//! event id. The history (opens, deposits and transfers over a fixed set of accounts) is made by
//! the engine in memory, then copied into a files depot with `sync_from` (one fsync per 1,000
//! checkpoints), so the replay reads packs as `retro verify` does.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use depot::{Depot, HistoryOrder};
use engine::replay::{Replay, Verdict};
use engine::{example, Engine, Manifest};

use benchkit::{per_second, Figure, Rng};

use crate::figures::Figures;

/// The sizes of the verify measurement.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Commands in the history.
    pub commands: u64,
    /// Accounts they touch.
    pub accounts: u64,
}

impl Sizes {
    /// The full run.
    pub fn full() -> Self {
        Self {
            commands: 100_000,
            accounts: 1000,
        }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self {
            commands: 5000,
            accounts: 100,
        }
    }
}

fn bank() -> Result<Manifest> {
    let mut manifest = Manifest::new();
    example::register_bank(&mut manifest)?;
    Ok(manifest)
}

/// Builds the history and replays it; files `verify_replay` (events/s and commands/s).
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<()> {
    let memory = Arc::new(Depot::in_memory()?);
    let engine = Engine::new(memory.clone(), bank()?);
    let mut rng = Rng::new(15);
    for a in 0..sizes.accounts.min(sizes.commands) {
        engine.apply(
            "bench",
            format!(r#"{{"path":"accounts/a{a}","name":"open","params":{{"owner":"A{a}"}}}}"#)
                .as_bytes(),
        )?;
    }
    for _ in sizes.accounts.min(sizes.commands)..sizes.commands {
        let a = rng.below(sizes.accounts);
        let command = if rng.below(4) == 0 {
            let b = rng.below(sizes.accounts);
            format!(
                r#"{{"path":"accounts/a{a}","name":"transfer","params":{{"to":"accounts/a{b}","amount":1}}}}"#
            )
        } else {
            format!(r#"{{"path":"accounts/a{a}","name":"deposit","params":{{"amount":5}}}}"#)
        };
        // A transfer to itself or beyond the balance is rejected: not in history, as in life.
        let _ = engine.apply("bench", command.as_bytes());
    }
    let dir = scratch.join("verify");
    let files = Arc::new(crate::workload::init_plain(&dir).context("creating the verify depot")?);
    files.sync_from(&memory, &Default::default(), |_| {})?;
    drop(engine);
    drop(memory);

    let head = files.head()?.context("the verify history is empty")?;
    let mut line = Vec::new();
    files.walk_ids(head, HistoryOrder::FirstParent, |entry| {
        line.push(entry.id);
        Ok(true)
    })?;
    line.reverse();
    let started = Instant::now();
    let mut replay = Replay::new(files.clone(), bank()?)?;
    let (mut commands, mut events) = (0u64, 0u64);
    let mut lap = Instant::now();
    for (i, id) in line.iter().enumerate() {
        if i > 0 && i % 20_000 == 0 {
            eprintln!(
                "retro-bench: verify: {i} checkpoints replayed, the last 20,000 in {:.2} s",
                lap.elapsed().as_secs_f64()
            );
            lap = Instant::now();
        }
        match replay.check(*id)? {
            Verdict::Same { events: n } => {
                commands += 1;
                events += n as u64;
            }
            Verdict::Skipped(_) => {}
            Verdict::Diverged(d) => {
                anyhow::bail!("the bank's own history diverged at {}", d.checkpoint)
            }
        }
    }
    let elapsed = started.elapsed();
    ensure!(commands > 0, "nothing was replayed");
    let note = format!(
        "Replay of {commands} bank commands ({events} events over {} accounts) from a files depot, each on its parent's state",
        sizes.accounts
    );
    figures.push(
        Figure::new(
            "retro",
            "verify_replay",
            "events/s",
            per_second(events, elapsed),
            events,
        )
        .note(note.clone()),
    );
    figures.push(
        Figure::new(
            "retro",
            "verify_replay_commands",
            "commands/s",
            per_second(commands, elapsed),
            commands,
        )
        .note(note),
    );
    eprintln!(
        "retro-bench: verify: {commands} commands, {events} events in {:.2} s",
        elapsed.as_secs_f64()
    );
    Ok(())
}

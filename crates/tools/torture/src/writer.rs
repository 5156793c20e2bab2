//! `retro-torture writer`: a library writer process. It applies commands through
//! `engine::Engine` in a loop from one or more threads and prints `ACK <checkpoint> <cid>` (one
//! write, flushed) after each apply that returned Ok, until it is killed.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use depot::Depot;
use engine::Engine;

use benchkit::Rng;

use crate::domain::{self, ACCOUNTS, COUNTERS};

/// Runs the writer until killed (or until `limit` commands per thread, if given).
pub fn run(
    dir: &Path,
    prefix: &str,
    seed: u64,
    threads: usize,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let depot = Arc::new(
        Depot::open(dir).with_context(|| format!("writer could not open {}", dir.display()))?,
    );
    let engine = Engine::new(depot, domain::manifest()?);
    let session = format!("torture-{prefix}");
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for t in 0..threads.max(1) {
        let engine = engine.clone();
        let session = session.clone();
        let stdout = Arc::clone(&stdout);
        let prefix = prefix.to_owned();
        let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x51_7cc1_b727_220a));
        handles.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while n < limit.unwrap_or(u64::MAX) {
                n += 1;
                let cid = format!("{prefix}.{t}.{n}");
                let payload = if rng.chance(0.5) {
                    let counter = COUNTERS[rng.index(COUNTERS.len())];
                    serde_json::json!({"path": counter, "name": "inc", "params": {"cid": cid}})
                } else {
                    let account = ACCOUNTS[rng.index(ACCOUNTS.len())];
                    let amount = rng.range(1, 100);
                    serde_json::json!({"path": account, "name": "deposit",
                        "params": {"amount": amount, "cid": cid}})
                };
                match engine.apply(&session, payload.to_string().as_bytes()) {
                    Ok(applied) => {
                        let line = format!("ACK {} {cid}\n", applied.checkpoint);
                        let mut out = stdout.lock().unwrap_or_else(|e| e.into_inner());
                        if out
                            .write_all(line.as_bytes())
                            .and_then(|_| out.flush())
                            .is_err()
                        {
                            // The driver is gone: nothing left to report to.
                            std::process::exit(0);
                        }
                    }
                    Err(e) if e.is_conflict() => eprintln!("CONFLICT {cid}: {e}"),
                    Err(e) => eprintln!("ERR {cid}: {e}"),
                }
            }
        }));
    }
    for handle in handles {
        if handle.join().is_err() {
            anyhow::bail!("a writer thread panicked");
        }
    }
    Ok(())
}

//! One round: K writers (library processes and CLI drivers) on one depot, SIGKILLs at random
//! moments, random ref moves; returns what was acknowledged.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use depot::{Depot, Expected, LogInfo, RefEdit, RefName};
use engine::Engine;

use benchkit::Rng;

use crate::check::Ack;
use crate::domain::{self, ACCOUNTS};

/// The binaries a run drives.
pub struct Setup {
    /// This executable (for `writer` subprocesses).
    pub me: PathBuf,
    /// The `retro` binary.
    pub retro: PathBuf,
}

/// Things that went wrong while the round ran (panics, unexpected exit codes, writer errors).
#[derive(Default)]
struct Anomalies(Mutex<Vec<String>>);

impl Anomalies {
    fn push(&self, what: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a round did.
#[derive(Debug, Default)]
pub struct RoundStats {
    /// Library writer processes started (including replacements).
    pub lib_writers: u64,
    /// CLI drivers started (including replacements).
    pub cli_writers: u64,
    /// SIGKILLs that hit a live process.
    pub kills: u64,
    /// Ref moves that took effect.
    pub ref_moves: u64,
    /// Ref moves refused (compare-and-swap lost, or nothing to move).
    pub ref_refused: u64,
    /// `retro apply` conflicts (exit 3).
    pub cli_conflicts: u64,
    /// `retro apply` rejections by the domain (exit 4).
    pub cli_rejected: u64,
    /// `retro apply` exit codes other than 0, 3, 4 (or death by our signal).
    pub cli_errors: u64,
}

/// `retro --depot DIR` with a clean environment.
pub fn retro(setup: &Setup, dir: &Path) -> Command {
    let mut cmd = Command::new(&setup.retro);
    cmd.arg("--depot")
        .arg(dir)
        .env_remove("RETRO_DEPOT")
        .env_remove("RETRO_SESSION")
        .env_remove("RETRO_MANIFEST")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

pub fn shows_panic(stderr: &str) -> bool {
    stderr.contains("panicked at") || stderr.contains("stack backtrace")
}

/// Initializes a depot and opens the accounts the writers deposit into.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    let depot = Arc::new(Depot::init(dir)?);
    let engine = Engine::new(depot, domain::manifest()?);
    for account in ACCOUNTS {
        let payload =
            serde_json::json!({"path": account, "name": "open", "params": {"owner": account}});
        engine.apply("torture-setup", payload.to_string().as_bytes())?;
    }
    Ok(())
}

enum Writer {
    Lib {
        child: Child,
        readers: Vec<JoinHandle<()>>,
    },
    Cli {
        stop: Arc<AtomicBool>,
        current: Arc<Mutex<Option<Child>>>,
        handle: JoinHandle<()>,
    },
}

impl Writer {
    /// SIGKILLs it (a CLI driver: its running `retro`); true when a live process got the signal.
    fn kill(self) -> bool {
        match self {
            Writer::Lib { mut child, readers } => {
                let alive = matches!(child.try_wait(), Ok(None));
                let _ = child.kill();
                let _ = child.wait();
                for reader in readers {
                    let _ = reader.join();
                }
                alive
            }
            Writer::Cli {
                stop,
                current,
                handle,
            } => {
                stop.store(true, Ordering::SeqCst);
                let killed = {
                    let mut guard = current.lock().unwrap_or_else(|e| e.into_inner());
                    match guard.as_mut() {
                        Some(child) => matches!(child.try_wait(), Ok(None)) && child.kill().is_ok(),
                        None => false,
                    }
                };
                let _ = handle.join();
                killed
            }
        }
    }
}

struct Round<'a> {
    setup: &'a Setup,
    dir: PathBuf,
    acks: Arc<Mutex<Vec<Ack>>>,
    anomalies: Arc<Anomalies>,
    stats: Arc<Mutex<RoundStats>>,
    next_writer: AtomicU64,
    tag: String,
}

impl Round<'_> {
    fn spawn_lib(&self, rng: &mut Rng) -> anyhow::Result<Writer> {
        let n = self.next_writer.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{}w{n}", self.tag);
        let threads = rng.range(1, 4);
        let mut child = Command::new(&self.setup.me)
            .arg("writer")
            .arg("--depot")
            .arg(&self.dir)
            .arg("--prefix")
            .arg(&prefix)
            .arg("--seed")
            .arg(rng.next_u64().to_string())
            .arg("--threads")
            .arg(threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", self.setup.me.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let acks = Arc::clone(&self.acks);
        let out_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A line cut short by SIGKILL has no newline: it was never acknowledged.
                let Some(text) = line.strip_suffix('\n') else {
                    break;
                };
                let mut parts = text.split(' ');
                if let (Some("ACK"), Some(checkpoint), Some(cid), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                {
                    acks.lock().unwrap_or_else(|e| e.into_inner()).push(Ack {
                        cid: cid.to_owned(),
                        checkpoint: checkpoint.to_owned(),
                        via: "lib",
                    });
                }
            }
        });
        let anomalies = Arc::clone(&self.anomalies);
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            for line in text.lines() {
                if !line.starts_with("CONFLICT ") {
                    anomalies.push(format!("library writer {prefix}: {line}"));
                }
            }
        });
        self.stats.lock().unwrap().lib_writers += 1;
        Ok(Writer::Lib {
            child,
            readers: vec![out_reader, err_reader],
        })
    }

    fn spawn_cli(&self, rng: &mut Rng) -> Writer {
        let n = self.next_writer.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{}c{n}", self.tag);
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let mut rng = Rng::new(rng.next_u64());
        let setup = Setup {
            me: self.setup.me.clone(),
            retro: self.setup.retro.clone(),
        };
        let dir = self.dir.clone();
        let acks = Arc::clone(&self.acks);
        let anomalies = Arc::clone(&self.anomalies);
        let stats = Arc::clone(&self.stats);
        let (stop2, current2) = (Arc::clone(&stop), Arc::clone(&current));
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                i += 1;
                let cid = format!("{prefix}.{i}");
                let account = ACCOUNTS[rng.index(ACCOUNTS.len())];
                let payload = if rng.chance(0.15) {
                    // Often rejected (insufficient funds): exercises the failure log.
                    serde_json::json!({"path": account, "name": "withdraw",
                        "params": {"amount": rng.range(1, 20_000), "cid": cid}})
                } else {
                    serde_json::json!({"path": account, "name": "deposit",
                        "params": {"amount": rng.range(1, 100), "cid": cid}})
                };
                let spawned = retro(&setup, &dir)
                    .args(["apply", "--json"])
                    .arg(payload.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn();
                let mut child = match spawned {
                    Ok(child) => child,
                    Err(e) => {
                        anomalies.push(format!("could not run retro: {e}"));
                        return;
                    }
                };
                let mut stdout = child.stdout.take().expect("piped stdout");
                let mut stderr = child.stderr.take().expect("piped stderr");
                {
                    let mut guard = current2.lock().unwrap_or_else(|e| e.into_inner());
                    if stop2.load(Ordering::SeqCst) {
                        let _ = child.kill();
                    }
                    *guard = Some(child);
                }
                let mut out = String::new();
                let mut err = String::new();
                let _ = stdout.read_to_string(&mut out);
                let _ = stderr.read_to_string(&mut err);
                let status = {
                    let mut guard = current2.lock().unwrap_or_else(|e| e.into_inner());
                    let mut child = guard.take().expect("the child is ours");
                    child.wait()
                };
                let Ok(status) = status else { return };
                if shows_panic(&err) {
                    anomalies.push(format!("retro apply panicked ({cid}): {}", err.trim()));
                }
                match status.code() {
                    Some(0) => {
                        let checkpoint = serde_json::from_str::<serde_json::Value>(out.trim())
                            .ok()
                            .and_then(|v| v["checkpoint"].as_str().map(str::to_owned));
                        match checkpoint {
                            Some(checkpoint) => {
                                acks.lock().unwrap_or_else(|e| e.into_inner()).push(Ack {
                                    cid,
                                    checkpoint,
                                    via: "cli",
                                })
                            }
                            None => anomalies.push(format!(
                                "retro apply --json exited 0 without a checkpoint ({cid}): {out:?}"
                            )),
                        }
                    }
                    Some(3) => stats.lock().unwrap().cli_conflicts += 1,
                    Some(4) => stats.lock().unwrap().cli_rejected += 1,
                    Some(code) => {
                        stats.lock().unwrap().cli_errors += 1;
                        anomalies
                            .push(format!("retro apply exited {code} ({cid}): {}", err.trim()));
                    }
                    None => {} // our SIGKILL
                }
            }
        });
        self.stats.lock().unwrap().cli_writers += 1;
        Writer::Cli {
            stop,
            current,
            handle,
        }
    }

    fn spawn_any(&self, rng: &mut Rng) -> anyhow::Result<Writer> {
        if rng.chance(0.5) {
            self.spawn_lib(rng)
        } else {
            Ok(self.spawn_cli(rng))
        }
    }

    fn count_move(&self, moved: bool) {
        let mut stats = self.stats.lock().unwrap();
        if moved {
            stats.ref_moves += 1;
        } else {
            stats.ref_refused += 1;
        }
    }

    /// Runs `retro ARGS`, SIGKILLing it after `kill_after` if given; judges the exit code
    /// (`refused`: codes that mean "not moved", fine). True when it was killed alive.
    fn retro_ref(&self, args: &[String], kill_after: Option<Duration>, refused: &[i32]) -> bool {
        let spawned = retro(self.setup, &self.dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.anomalies
                    .push(format!("could not run retro {args:?}: {e}"));
                return false;
            }
        };
        let mut killed = false;
        if let Some(delay) = kill_after {
            std::thread::sleep(delay);
            killed = matches!(child.try_wait(), Ok(None)) && child.kill().is_ok();
        }
        let Ok(output) = child.wait_with_output() else {
            return killed;
        };
        let err = String::from_utf8_lossy(&output.stderr);
        if shows_panic(&err) {
            self.anomalies
                .push(format!("retro {args:?} panicked: {}", err.trim()));
        }
        match output.status.code() {
            Some(0) => self.count_move(true),
            Some(code) if refused.contains(&code) => self.count_move(false),
            Some(code) => self
                .anomalies
                .push(format!("retro {args:?} exited {code}: {}", err.trim())),
            None => {}
        }
        killed
    }

    /// One random ref move (never `refs/heads/master`); true when a process was SIGKILLed.
    fn move_a_ref(&self, depot: &Depot, rng: &mut Rng, serial: u64) -> bool {
        let tag = format!("refs/tags/t{}", rng.range(0, 4));
        let consumer = format!("refs/consumers/k{}", rng.range(0, 3));
        let log = LogInfo {
            session: "torture".into(),
            message: format!("torture move {serial}"),
        };
        match rng.range(0, 6) {
            0 => {
                // A tag to HEAD~k, no expectation (exit 1 when history is too short), sometimes
                // SIGKILLed a few milliseconds in.
                let args = vec![
                    "update-ref".to_owned(),
                    tag,
                    format!("HEAD~{}", rng.range(0, 5)),
                ];
                let kill = rng
                    .chance(0.2)
                    .then(|| Duration::from_millis(rng.range(0, 8)));
                self.retro_ref(&args, kill, &[1])
            }
            1 => {
                // Compare-and-swap a tag from the value read a moment ago (0: must not exist).
                let old = depot
                    .read_ref(&RefName::new(&tag).expect("a valid ref name"))
                    .ok()
                    .flatten()
                    .and_then(|v| v.id())
                    .map_or_else(|| "0".to_owned(), |id| id.to_string());
                let args = vec!["update-ref".to_owned(), tag, "HEAD".to_owned(), old];
                self.retro_ref(&args, None, &[3])
            }
            2 => {
                let args = vec!["update-ref".to_owned(), "-d".to_owned(), tag];
                self.retro_ref(&args, None, &[1, 3])
            }
            3 | 4 => {
                // A consumer ref to HEAD through the library, by CAS.
                let name = RefName::new(&consumer).expect("a valid ref name");
                let old = depot.read_ref(&name).ok().flatten().and_then(|v| v.id());
                let Ok(Some(head)) = depot.head() else {
                    return false;
                };
                match depot.update_refs(&[RefEdit::cas(name, old, head, log)]) {
                    Ok(()) => self.count_move(true),
                    Err(e) if e.is_conflict() => self.count_move(false),
                    Err(e) => self
                        .anomalies
                        .push(format!("update_refs({consumer}) failed: {e}")),
                }
                false
            }
            _ => {
                let edit = RefEdit {
                    name: RefName::new(&consumer).expect("a valid ref name"),
                    expected: Expected::Any,
                    new: None,
                    log,
                };
                match depot.update_refs(&[edit]) {
                    Ok(()) => self.count_move(true),
                    Err(e) if e.is_conflict() => self.count_move(false),
                    Err(e) => self
                        .anomalies
                        .push(format!("deleting {consumer} failed: {e}")),
                }
                false
            }
        }
    }
}

/// What a round produced.
pub struct Outcome {
    /// Every acknowledged command.
    pub acks: Vec<Ack>,
    /// Counters.
    pub stats: RoundStats,
    /// Anything abnormal seen while running (each one a failure).
    pub anomalies: Vec<String>,
}

/// Runs 2 to 5 writers on `dir` for `duration`, kills and moves refs at random, then SIGKILLs
/// every writer still running.
pub fn run(
    setup: &Setup,
    dir: &Path,
    tag: &str,
    duration: Duration,
    rng: &mut Rng,
) -> anyhow::Result<Outcome> {
    let round = Round {
        setup,
        dir: dir.to_path_buf(),
        acks: Arc::new(Mutex::new(Vec::new())),
        anomalies: Arc::new(Anomalies::default()),
        stats: Arc::new(Mutex::new(RoundStats::default())),
        next_writer: AtomicU64::new(0),
        tag: tag.to_owned(),
    };
    let depot = Depot::open(dir).with_context(|| format!("could not open {}", dir.display()))?;
    let k = rng.range(2, 6) as usize;
    // At least one of each kind in every round.
    let mut writers: Vec<Writer> = vec![round.spawn_lib(rng)?, round.spawn_cli(rng)];
    while writers.len() < k {
        writers.push(round.spawn_any(rng)?);
    }
    let start = Instant::now();
    let mut kills = 0u64;
    let mut serial = 0u64;
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(rng.range(10, 300)));
        let roll = rng.range(0, 100);
        if roll < 30 {
            let victim = writers.swap_remove(rng.index(writers.len()));
            if victim.kill() {
                kills += 1;
            }
            writers.push(round.spawn_any(rng)?);
        } else if roll < 85 {
            serial += 1;
            if round.move_a_ref(&depot, rng, serial) {
                kills += 1;
            }
        }
    }
    if kills == 0 && writers.swap_remove(rng.index(writers.len())).kill() {
        kills += 1;
    }
    // The end of the round is a SIGKILL too: no writer ever stops cleanly.
    for writer in writers.drain(..) {
        if writer.kill() {
            kills += 1;
        }
    }
    drop(depot);
    let mut stats = std::mem::take(&mut *round.stats.lock().unwrap());
    stats.kills = kills;
    let acks = std::mem::take(&mut *round.acks.lock().unwrap());
    Ok(Outcome {
        acks,
        stats,
        anomalies: round.anomalies.take(),
    })
}

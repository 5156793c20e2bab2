//! `retro-torture`: crash-and-concurrency torture for retro (`make torture`).
//!
//! Each round makes (or reuses) a native depot in a temporary directory and starts 2 to 5 writers:
//! `retro-torture writer` processes applying commands through the library (`engine::Engine`, the
//! example bank plus a counter aggregate, 1 to 3 threads each), and drivers running
//! `retro apply --json` once per command. At random moments it SIGKILLs a writer (at least once a
//! round; a CLI driver is killed by killing its running `retro`) and starts another, and moves
//! refs at random (tags through `retro update-ref`, sometimes SIGKILLed; consumer refs through the
//! library, by CAS), never `refs/heads/master`. Every command carries a unique id in
//! `params.cid`; a writer acknowledges a command only after its apply returned Ok.
//!
//! After each round, with every writer dead: `Depot::fsck` is clean and compared the partition
//! index with a replay; `retro fsck` exits 0; every acknowledged command is in HEAD's history
//! exactly once, in the checkpoint it was acknowledged with; no command id appears twice;
//! `Depot::partition_events` agrees with a replay built by walking history; counters lost no
//! update. A failure keeps the depot, prints its path and exits 1.
//!
//! That is the `writers` class. Rounds of the other classes are mixed in (the first six rounds go
//! through every class once, then a weighted draw; `--only CLASS` runs one), each followed by the
//! same checks:
//!
//! - `syskill`: every command that writes (`apply`, `gc`, `import`, `sync` to a second depot,
//!   `update-ref`, a consumer move through `retro watch --consumer`) runs under
//!   `strace -f -e inject=SYSCALL:signal=KILL:when=N`, dying on entering its N-th `write`,
//!   `pwrite64`, `fdatasync`, `fsync`, `rename`, `renameat2` or `openat`, N drawn from what a traced
//!   run of the same command just counted. After each kill the depot opens, fsck is clean, every
//!   acknowledged command is there once, the command's own state is the old or the new one, no
//!   `.tmp-*` file survives the next command, and a following apply succeeds. Kill points are
//!   tallied per command and syscall.
//! - `serve`: a long-lived `retro serve` (free port, ready line) and `retro watch` while library
//!   writers apply and `retro gc` runs several times: every `POST /apply` (a small HTTP/1.1 client
//!   over `TcpStream`) is 2xx and in history, `GET /checkpoints/HEAD` is 200, the watcher prints all
//!   of HEAD's history since it started, in order, and SIGTERM stops the server with exit 0.
//! - `refs`: names from a few segments so that `x`, `x/y`, `x/y/z` clash, plus invalid names,
//!   through `retro update-ref`, `retro watch --consumer` and the library (one or two edits per
//!   transaction): a clash is refused with an error before anything is journaled (refs and packs
//!   unchanged), any other move succeeds; then `retro log`, `fsck`, `gc`, `reindex` still work.
//! - `flips`: 1 to 3 bit flips at random offsets in a copy of the depot (packs, indexes, refs,
//!   reflogs, journal, index.sqlite); `retro fsck` exits 0 or 5, `retro gc` fails cleanly or keeps
//!   every object that was intact before and after the flips, `retro repair` exits 0 or 5 and loses
//!   nothing intact either.
//! - `diskfull`: a depot on a small tmpfs (skipped, with a line saying why, when mount fails),
//!   filled close to full; apply, gc and import until ENOSPC, each failure a clean `retro: error:`;
//!   once space is back the next apply succeeds, no `.tmp-*` file is left, nothing acknowledged is
//!   lost and fsck is clean.

mod check;
mod class;
mod diskfull;
mod domain;
mod flips;
mod proc;
mod refnames;
mod round;
mod serve;
mod syskill;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use benchkit::Rng;

use check::Ack;
use class::{Ctx, Tally};
use round::Setup;

#[derive(Parser)]
#[command(
    name = "retro-torture",
    version,
    about = "Crash-and-concurrency torture for retro: concurrent writers (library and CLI), \
             SIGKILL at random moments, random ref moves; fsck and replay checks after every round"
)]
struct Args {
    /// How long to run, in seconds (the last round may overrun by a few seconds).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// The random seed (default: from the clock); printed, so that a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep every round's depot (default: only a failing one).
    #[arg(long)]
    keep: bool,
    /// The `retro` binary (default: `retro` next to this executable).
    #[arg(long)]
    retro: Option<PathBuf>,
    /// Where to make the depots (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// After a failing round, keep its depot and go on with a fresh one (default: stop).
    #[arg(long)]
    keep_going: bool,
    /// Run only this class of round (default: all of them, mixed).
    #[arg(long, value_enum)]
    only: Option<Class>,
    #[command(subcommand)]
    command: Option<Sub>,
}

/// The kinds of round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Class {
    /// Concurrent library and CLI writers, SIGKILLed at random moments, random ref moves.
    Writers,
    /// Every writing command SIGKILLed on entering its N-th write/fsync/rename/openat (strace).
    Syskill,
    /// A long-lived `retro serve` and `retro watch` across other processes' applies and gc.
    Serve,
    /// Ref-name clashes (`x` vs `x/y`) and random ref names, through the CLI and the library.
    Refs,
    /// Bit flips at random offsets in a copy of the depot, then fsck, gc and repair.
    Flips,
    /// A depot on a small tmpfs filled up, then apply, gc and import until ENOSPC.
    Diskfull,
}

impl Class {
    const ALL: [Class; 6] = [
        Class::Writers,
        Class::Syskill,
        Class::Serve,
        Class::Refs,
        Class::Flips,
        Class::Diskfull,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Writers => "writers",
            Class::Syskill => "syskill",
            Class::Serve => "serve",
            Class::Refs => "refs",
            Class::Flips => "flips",
            Class::Diskfull => "diskfull",
        }
    }
}

#[derive(Subcommand)]
enum Sub {
    /// (internal) A library writer: applies commands until killed, printing
    /// `ACK <checkpoint> <cid>` after each one that returned Ok.
    #[command(hide = true)]
    Writer {
        #[arg(long)]
        depot: PathBuf,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Stop after this many commands per thread (default: never).
        #[arg(long)]
        limit: Option<u64>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Writer {
        depot,
        prefix,
        seed,
        threads,
        limit,
    }) = &args.command
    {
        return match writer::run(depot, prefix, *seed, *threads, *limit) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writer error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match torture(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("retro-torture: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The depot rounds run on, with every acknowledgement it has had so far.
struct Current {
    tmp: tempfile::TempDir,
    acks: Vec<Ack>,
    rounds: u32,
}

impl Current {
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("depot")
    }
}

#[derive(Default)]
struct Totals {
    rounds: u64,
    kills: u64,
    commits: u64,
    moves: u64,
    failures: u64,
    acks: u64,
}

fn torture(args: &Args) -> anyhow::Result<bool> {
    let me = std::env::current_exe().context("cannot find this executable")?;
    let retro = match &args.retro {
        Some(path) => path.clone(),
        None => me.with_file_name("retro"),
    };
    anyhow::ensure!(
        retro.is_file(),
        "no retro binary at {} (build it with `cargo build --release -p retro-cli`, or pass --retro)",
        retro.display()
    );
    let setup = Setup { me, retro };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let budget = Duration::from_secs(args.seconds);
    println!(
        "retro-torture: seed {seed}, {}s, retro {}",
        args.seconds,
        setup.retro.display()
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut tally = Tally::default();
    if let Err(reason) = syskill::available() {
        // `make torture` installs strace; without it this class cannot run.
        println!("syskill class skipped: {reason}");
        tally.syskill_skipped = Some(reason);
    }
    let mut current: Option<Current> = None;
    while totals.rounds == 0 || started.elapsed() < budget {
        totals.rounds += 1;
        let n = totals.rounds;
        // Reuse the last round's depot now and then (reopened after kills, with its history),
        // but not forever: a fresh depot exercises the first commits and the first pack.
        let reuse = current.as_ref().is_some_and(|c| c.rounds < 4) && rng.chance(0.4);
        if !reuse {
            if let Some(old) = current.take() {
                finish(old, args.keep);
            }
            let mut builder = tempfile::Builder::new();
            builder.prefix("retro-torture-");
            let tmp = match &args.dir {
                Some(dir) => builder.tempdir_in(dir),
                None => builder.tempdir(),
            }
            .context("could not make a temporary directory")?;
            let fresh = Current {
                tmp,
                acks: Vec::new(),
                rounds: 0,
            };
            round::prepare(&fresh.dir()).context("could not prepare a depot")?;
            current = Some(fresh);
        }
        let state = current.as_mut().expect("a depot");
        state.rounds += 1;
        let class = pick_class(args.only, n, &mut rng, &tally);
        let remaining = budget.saturating_sub(started.elapsed());
        let duration =
            Duration::from_millis(rng.range(1500, 6000)).min(remaining.max(Duration::from_secs(1)));
        let dir = state.dir();
        let tag = format!("r{n}");
        let round_started = Instant::now();
        let mut problems = Vec::new();
        let mut line;
        let mut class_acks = Vec::new();
        match class {
            Class::Writers | Class::Flips => {
                let duration = if class == Class::Flips {
                    duration.min(Duration::from_millis(rng.range(1000, 2500)))
                } else {
                    duration
                };
                let outcome = round::run(&setup, &dir, &tag, duration, &mut rng)?;
                let stats = outcome.stats;
                let lib_acks = outcome.acks.iter().filter(|a| a.via == "lib").count();
                line = format!(
                    "{} lib + {} cli writers, {:.1}s, {} kills; acks {} (lib {lib_acks}, cli {}), \
                     cli conflicts {}, rejected {}, errors {}; ref moves {} (refused {})",
                    stats.lib_writers,
                    stats.cli_writers,
                    duration.as_secs_f64(),
                    stats.kills,
                    outcome.acks.len(),
                    outcome.acks.len() - lib_acks,
                    stats.cli_conflicts,
                    stats.cli_rejected,
                    stats.cli_errors,
                    stats.ref_moves,
                    stats.ref_refused,
                );
                totals.kills += stats.kills;
                totals.moves += stats.ref_moves;
                class_acks = outcome.acks;
                problems.extend(outcome.anomalies);
            }
            Class::Syskill | Class::Serve | Class::Refs => {
                let ctx = Ctx {
                    setup: &setup,
                    dir: &dir,
                    tmp: state.tmp.path(),
                    tag: &tag,
                    prior: &state.acks,
                };
                let before = tally
                    .kill_points
                    .values()
                    .flat_map(|m| m.values())
                    .sum::<u64>();
                let ran = match class {
                    Class::Syskill => syskill::run(&ctx, &mut rng, &mut tally),
                    Class::Serve => serve::run(&ctx, &mut rng, &mut tally),
                    _ => refnames::run(&ctx, &mut rng, &mut tally),
                };
                // An error here (the depot no longer opens, say) is a finding, not the end.
                let (acks, found) = ran.unwrap_or_else(|e| {
                    (
                        Vec::new(),
                        vec![format!(
                            "the {} round stopped: {e:#} (depot {})",
                            class.name(),
                            dir.display()
                        )],
                    )
                });
                let after = tally
                    .kill_points
                    .values()
                    .flat_map(|m| m.values())
                    .sum::<u64>();
                if class == Class::Syskill {
                    totals.kills += after - before;
                    line = format!(
                        "{} syscall kill points; acks {}",
                        after - before,
                        acks.len()
                    );
                } else {
                    line = format!("acks {}", acks.len());
                }
                class_acks = acks;
                problems.extend(found);
            }
            Class::Diskfull => {
                let ctx = Ctx {
                    setup: &setup,
                    dir: &dir,
                    tmp: state.tmp.path(),
                    tag: &tag,
                    prior: &state.acks,
                };
                let enospc = tally.enospc;
                match diskfull::run(&ctx, &mut rng, &mut tally) {
                    Ok(found) => problems.extend(found),
                    Err(e) => problems.push(format!("the disk-full run stopped: {e:#}")),
                }
                line = format!(
                    "a depot on a small tmpfs: {} commands failed for want of space",
                    tally.enospc - enospc
                );
            }
        }
        state.acks.extend(class_acks.iter().cloned());
        if class != Class::Diskfull {
            let checked = check::check(&dir, &state.acks, &mut rng);
            problems.extend(checked.problems);
            // The command line's fsck must agree.
            let cli_fsck = round::retro(&setup, &dir)
                .arg("fsck")
                .output()
                .context("could not run retro fsck")?;
            if !cli_fsck.status.success() {
                problems.push(format!(
                    "retro fsck exited {:?}: {} {}",
                    cli_fsck.status.code(),
                    String::from_utf8_lossy(&cli_fsck.stdout).trim(),
                    String::from_utf8_lossy(&cli_fsck.stderr).trim()
                ));
            }
            totals.commits += checked.checkpoints;
            totals.acks += state.acks.len() as u64;
            line = format!(
                "{line}; history {} checkpoints, {} acks checked, {} partitions replayed, \
                 fsck {} partitions, {} failed commands, {} unreachable",
                checked.checkpoints,
                state.acks.len(),
                checked.partitions,
                checked.fsck_partitions,
                checked.failed_commands,
                checked.unreachable,
            );
        }
        if class == Class::Flips && problems.is_empty() {
            let ctx = Ctx {
                setup: &setup,
                dir: &dir,
                tmp: state.tmp.path(),
                tag: &tag,
                prior: &state.acks,
            };
            let flips_before = tally.flips;
            match flips::run(&ctx, &mut rng, &mut tally) {
                Ok(found) => problems.extend(found),
                Err(e) => problems.push(format!("the flips stopped: {e:#}")),
            }
            line = format!(
                "{line}; then {} bits flipped in a copy",
                tally.flips - flips_before
            );
        }
        println!(
            "round {n} {}: {} depot (round {} on it), {:.1}s; {line}: {}",
            class.name(),
            if reuse { "reused" } else { "fresh" },
            state.rounds,
            round_started.elapsed().as_secs_f64(),
            if problems.is_empty() { "ok" } else { "FAILED" }
        );
        if !problems.is_empty() {
            totals.failures += 1;
            for problem in problems.iter().take(40) {
                println!(
                    "  problem (seed {seed}, round {n} {}): {problem}",
                    class.name()
                );
            }
            if problems.len() > 40 {
                println!("  … and {} more", problems.len() - 40);
            }
            let state = current.take().expect("a depot");
            let kept = state.tmp.keep();
            println!(
                "  kept the failing depot: {} (seed {seed})",
                kept.join("depot").display()
            );
            if !args.keep_going {
                break;
            }
        }
    }
    if let Some(old) = current.take() {
        finish(old, args.keep);
    }
    println!(
        "rounds {}, kills {}, commits checked {}, ref moves {}, failures {}",
        totals.rounds, totals.kills, totals.commits, totals.moves, totals.failures
    );
    let points: u64 = tally.kill_points.values().flat_map(|m| m.values()).sum();
    match &tally.syskill_skipped {
        Some(reason) => println!("syscall kill points: skipped: {reason}"),
        None => println!(
            "syscall kill points {points} (injections the command outran: {})",
            tally.kill_missed
        ),
    }
    for (command, by_syscall) in &tally.kill_points {
        println!(
            "  {command}: {} ({})",
            by_syscall.values().sum::<u64>(),
            syskill::show(by_syscall)
        );
    }
    println!(
        "serve: {} POSTs answered 2xx, {} gc runs beside the server, {} checkpoints watched",
        tally.posts, tally.serve_gcs, tally.watched
    );
    println!(
        "refs: {} moves, {} clashes refused, {} invalid names refused",
        tally.ref_moves, tally.ref_clashes, tally.ref_invalid
    );
    println!(
        "flips: {} bits in {} runs (gc succeeded after {} of them)",
        tally.flips, tally.flip_runs, tally.flip_gc_ok
    );
    match &tally.diskfull_skipped {
        Some(reason) => println!("disk-full: skipped: {reason}"),
        None => println!(
            "disk-full: {} runs, {} commands failed cleanly for want of space",
            tally.diskfull_runs, tally.enospc
        ),
    }
    println!(
        "({} acknowledgements checked over all rounds, {:.0}s, seed {seed})",
        totals.acks,
        started.elapsed().as_secs_f64()
    );
    Ok(totals.failures == 0)
}

/// The class of round `n`: the first rounds go through every class once, then a weighted draw.
fn pick_class(only: Option<Class>, n: u64, rng: &mut Rng, tally: &Tally) -> Class {
    if let Some(class) = only {
        return class;
    }
    let class = if n as usize <= Class::ALL.len() {
        Class::ALL[n as usize - 1]
    } else {
        match rng.range(0, 100) {
            0..=29 => Class::Writers,
            30..=49 => Class::Syskill,
            50..=64 => Class::Serve,
            65..=79 => Class::Refs,
            80..=89 => Class::Flips,
            _ => Class::Diskfull,
        }
    };
    if (class == Class::Diskfull && tally.diskfull_skipped.is_some())
        || (class == Class::Syskill && tally.syskill_skipped.is_some())
    {
        return Class::Writers;
    }
    class
}

fn finish(state: Current, keep: bool) {
    if keep {
        let kept = state.tmp.keep();
        println!("  kept {}", kept.join("depot").display());
    }
}

//! `retro-bench`: measures retro's depot on retro's workload and holds it against the issue's
//! targets and against its peers (the disk, SQLite, Git) measured by `retro-peers` in the same run.
//!
//! `make bench` runs it after building it and `retro-peers` in release. It prints a table (or,
//! with `--json`, JSON lines) on stdout, progress on stderr, and writes `docs/benchmarks.md`.
//!
//! - [`workload`]: the commands, as depot commit requests;
//! - [`depot_bench`]: retro's depot measurements;
//! - [`engine_bench`]: retro's engine: durable applies with a Rust handler, one writer and four,
//!   and one apply in a small and a large depot;
//! - [`verify_bench`]: `retro verify`'s replay of a bank history, in events/s;
//! - [`memory`]: max RSS of the `retro` commands on a 1,000,000-event depot;
//! - [`postgres_bench`]: a PostgreSQL depot on a throw-away local server: durable applies with 1
//!   and 8 writers, partition reads in 1,000,000 events;
//! - [`eventsourcing_bench`]: the Python `eventsourcing` library (SQLite and PostgreSQL) on the
//!   same workloads, installed into a venv by the bench and driven as a subprocess;
//! - [`peers`]: running `retro-peers` and reading its figures;
//! - [`figures`]: every figure of a run (the [`benchkit::Figure`] type, percentiles, rates, the
//!   RNG and finding sibling binaries are `retro-benchkit`'s, shared with the other tools);
//! - [`machine`]: the machine description;
//! - [`report`]: the comparison table and the Markdown document.
//!
//! The modules form a graph without cycles: `figures`, `machine` and `workload` use nothing in
//! the crate; the measurement modules use those (and `depot_bench`'s bulk loader); `report` uses
//! `figures`, `machine` and `memory`'s command list; only `main` uses `report`.

/// The same allocator as the `retro` binary, so that in-process figures match what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod depot_bench;
mod engine_bench;
mod eventsourcing_bench;
mod figures;
mod http_bench;
mod machine;
mod memory;
mod peers;
mod postgres_bench;
mod redact_bench;
mod report;
mod snapshot_bench;
mod upcast_bench;
mod verify_bench;
mod workload;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use benchkit::Figure;

use crate::figures::Figures;
use crate::machine::Machine;

/// Benchmarks retro's depot on retro's workload against its targets and its peers.
#[derive(Debug, Parser)]
#[command(name = "retro-bench", version, about)]
struct Cli {
    /// Small sizes (about 30 s): a 20,000-event read depot, a 100,000-event disk figure, 10,000
    /// bulk commands, 500 durable commits; peers with --quick too.
    #[arg(long)]
    quick: bool,
    /// Do not run retro-peers (the table then has no peer figures).
    #[arg(long)]
    no_peers: bool,
    /// Where to write the Markdown report.
    #[arg(long, value_name = "PATH", default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Print every figure and comparison as JSON lines instead of the table.
    #[arg(long)]
    json: bool,
    /// Directory in which the scratch directory is made (default: the current directory; fsync
    /// costs depend on its filesystem).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Run only these measurements, e.g. `--only bulk,read`, `--only engine,engine-scale` or
    /// `--only memory` (max RSS of the `retro` commands on 1,000,000 events: about 2.5 minutes;
    /// it needs `retro` built next to retro-bench and GNU /usr/bin/time).
    #[arg(long, value_name = "PHASE", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(PHASES))]
    only: Vec<String>,
}

/// Every measurement `--only` can name: the depot's, then the engine's, then the memory one.
const PHASES: [&str; 17] = [
    "bulk",
    "walk",
    "fsync",
    "durable",
    "group",
    "read",
    "disk",
    "engine",
    "engine-scale",
    "memory",
    "http",
    "postgres",
    "eventsourcing",
    "verify",
    "snapshot",
    "upcast",
    "redact",
];
/// Whether `phase` runs, given `--only`.
fn wanted(only: &[String], phase: &str) -> bool {
    only.is_empty() || only.iter().any(|o| o == phase)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("retro-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let machine = Machine::describe(&cli.dir);
    let (sizes, engine_sizes, memory_sizes) = if cli.quick {
        (
            depot_bench::Sizes::quick(),
            engine_bench::Sizes::quick(),
            memory::Sizes::quick(),
        )
    } else {
        (
            depot_bench::Sizes::full(),
            engine_bench::Sizes::full(),
            memory::Sizes::full(),
        )
    };
    let mut figures = Figures::default();
    let mut warnings = Vec::new();

    // The peers first: retro's design creates few files, so it is the less disturbed by a
    // filesystem that has just freed many inodes.
    if cli.no_peers {
        warnings.push("run with --no-peers: no peer figures".to_owned());
    } else if let Err(err) = peers::run(cli.quick, &cli.dir, &mut figures) {
        eprintln!("retro-bench: warning: {err:#}");
        warnings.push(format!("retro-peers: {err:#}"));
    }

    let scratch = tempfile::Builder::new()
        .prefix(".retro-bench-")
        .tempdir_in(&cli.dir)
        .with_context(|| format!("creating a scratch directory in {}", cli.dir.display()))?;
    // Those of `--only` that are the depot's (empty: all of them, when `--only` is not given).
    let depot_phases: Vec<String> = cli
        .only
        .iter()
        .filter(|o| depot_bench::PHASES.contains(&o.as_str()))
        .cloned()
        .collect();
    let run_depot = cli.only.is_empty() || !depot_phases.is_empty();
    let measured = (|| -> Result<()> {
        if run_depot {
            depot_bench::run(&sizes, &depot_phases, scratch.path(), &mut figures)?;
        }
        let (one_and_group, scale) = (
            wanted(&cli.only, "engine"),
            wanted(&cli.only, "engine-scale"),
        );
        if one_and_group || scale {
            engine_bench::run(
                &engine_sizes,
                one_and_group,
                scale,
                scratch.path(),
                &mut figures,
            )?;
        }
        if wanted(&cli.only, "http") {
            let http_sizes = if cli.quick {
                http_bench::Sizes::quick()
            } else {
                http_bench::Sizes::full()
            };
            if let Err(err) = http_bench::run(&http_sizes, scratch.path(), &mut figures) {
                if !cli.only.is_empty() {
                    return Err(err);
                }
                eprintln!("retro-bench: warning: http: {err:#}");
                warnings.push(format!("http phase skipped: {err:#}"));
            }
        }
        if wanted(&cli.only, "postgres") {
            let pg_sizes = if cli.quick {
                postgres_bench::Sizes::quick()
            } else {
                postgres_bench::Sizes::full()
            };
            if let Err(err) = postgres_bench::run(&pg_sizes, &mut figures) {
                if !cli.only.is_empty() {
                    return Err(err);
                }
                eprintln!("retro-bench: warning: postgres: {err:#}");
                warnings.push(format!("postgres phase skipped: {err:#}"));
            }
        }
        if wanted(&cli.only, "eventsourcing") {
            let es_sizes = if cli.quick {
                eventsourcing_bench::Sizes::quick()
            } else {
                eventsourcing_bench::Sizes::full()
            };
            let started = Instant::now();
            // Set-up problems (no Python, no PyPI) are skips recorded in `figures`; a driver
            // that runs and fails, or prints something else than its figures, fails the run.
            eventsourcing_bench::run(&es_sizes, scratch.path(), &mut figures)?;
            eprintln!(
                "retro-bench: eventsourcing: {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        if wanted(&cli.only, "verify") {
            let verify_sizes = if cli.quick {
                verify_bench::Sizes::quick()
            } else {
                verify_bench::Sizes::full()
            };
            verify_bench::run(&verify_sizes, scratch.path(), &mut figures)?;
        }
        if wanted(&cli.only, "snapshot") {
            let snapshot_sizes = if cli.quick {
                snapshot_bench::Sizes::quick()
            } else {
                snapshot_bench::Sizes::full()
            };
            snapshot_bench::run(&snapshot_sizes, scratch.path(), &mut figures)?;
        }
        if wanted(&cli.only, "upcast") {
            let upcast_sizes = if cli.quick {
                upcast_bench::Sizes::quick()
            } else {
                upcast_bench::Sizes::full()
            };
            upcast_bench::run(&upcast_sizes, scratch.path(), &mut figures)?;
        }
        if wanted(&cli.only, "redact") {
            let redact_sizes = if cli.quick {
                redact_bench::Sizes::quick()
            } else {
                redact_bench::Sizes::full()
            };
            redact_bench::run(&redact_sizes, scratch.path(), &mut figures)?;
        }
        if wanted(&cli.only, "memory") {
            if let Err(err) = memory::run(&memory_sizes, scratch.path(), &mut figures) {
                // Named with --only, it must work; in the default run, the rest still counts.
                if !cli.only.is_empty() {
                    return Err(err);
                }
                eprintln!("retro-bench: warning: memory: {err:#}");
                warnings.push(format!("memory phase skipped: {err:#}"));
            }
        }
        Ok(())
    })();
    let closed = scratch.close();
    measured?;
    closed.context("removing the scratch directory")?;

    for (peer, reason) in figures.all_skipped() {
        warnings.push(format!("{peer} not run: {reason}"));
    }
    let rss_mib = max_rss_kib() as f64 / 1024.0;
    figures.push(Figure::new("retro", "max_rss", "MiB", rss_mib, 1).note("getrusage(RUSAGE_SELF)"));
    let rows = report::rows(&figures, rss_mib);
    let elapsed = started.elapsed();

    let document = report::Document {
        machine: &machine,
        date,
        command: reproduce(&cli),
        elapsed,
        quick: cli.quick,
        rows: &rows,
        figures: &figures,
        warnings: &warnings,
    };
    if let Some(parent) = cli.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&cli.out, document.render())
        .with_context(|| format!("writing {}", cli.out.display()))?;

    let mut stdout = std::io::stdout().lock();
    if cli.json {
        for figure in figures.all() {
            writeln!(stdout, "{}", serde_json::to_string(figure)?)?;
        }
        for row in &rows {
            writeln!(stdout, "{}", serde_json::to_string(row)?)?;
        }
    } else {
        write!(stdout, "{}", report::text_table(&rows))?;
        writeln!(
            stdout,
            "\n{} CPUs, {}; {}; run took {:.0} s; written to {}",
            machine.nproc,
            machine.cpu,
            machine.filesystem,
            elapsed.as_secs_f64(),
            cli.out.display()
        )?;
    }
    stdout.flush()?;
    Ok(())
}

/// The `make` command that reproduces this run.
fn reproduce(cli: &Cli) -> String {
    let mut args = Vec::new();
    if cli.quick {
        args.push("--quick".to_owned());
    }
    if cli.no_peers {
        args.push("--no-peers".to_owned());
    }
    if cli.json {
        args.push("--json".to_owned());
    }
    if cli.out.as_path() != Path::new("docs/benchmarks.md") {
        args.push(format!("--out {}", cli.out.display()));
    }
    if !cli.only.is_empty() {
        args.push(format!("--only {}", cli.only.join(",")));
    }
    if cli.dir.as_path() != Path::new(".") {
        args.push(format!("--dir {}", cli.dir.display()));
    }
    if args.is_empty() {
        "make bench".to_owned()
    } else {
        format!("make bench BENCH_ARGS='{}'", args.join(" "))
    }
}

/// The process's maximum resident set size so far, in KiB (0 if unknown).
#[allow(unsafe_code)]
fn max_rss_kib() -> u64 {
    // SAFETY: `getrusage` only writes the `rusage` we own; all-zero bytes are a valid `rusage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc == 0 {
        u64::try_from(usage.ru_maxrss).unwrap_or(0)
    } else {
        0
    }
}

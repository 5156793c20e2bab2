//! The Python `eventsourcing` library (PyPI, pinned to [`VERSION`]) as a peer, on its SQLite and
//! its PostgreSQL persistence, running retro's workloads in the same run.
//!
//! The bench installs it itself: a venv under `target/bench-venv` (`python3 -m venv`), reused
//! when it already holds the pinned versions with the binary psycopg build, else (re)made and
//! filled by `pip install` ([`REQUIREMENTS`]). The driver is a Python script
//! (`crates/tools/peers/python/eventsourcing_peer.py`, compiled into the bench and written into
//! the scratch directory) run once per backend with the sizes on its command line; it prints one
//! JSON object on stdout ([`Output`]) and its progress on stderr (passed through). PostgreSQL is
//! a throw-away server of its own (`pgtest`, as the `postgres` phase).
//!
//! What cannot be set up (no Python, no venv module, PyPI unreachable, no PostgreSQL) is
//! [`PeerError::Unavailable`]: the peer's rows then say n/a with the reason and the run goes on.
//! A driver that runs and then fails or prints anything but the expected object is an error of
//! the run, naming the figure.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use serde::Deserialize;

use benchkit::Figure;

use crate::figures::Figures;
use crate::{engine_bench, http_bench};

/// The pinned release of the library.
pub const VERSION: &str = "9.5.6";
/// What `pip install` is given (the binary psycopg build: the pure-Python one is 3-6x slower).
pub const REQUIREMENTS: [&str; 2] = ["eventsourcing[postgres]==9.5.6", "psycopg[binary]"];
/// Where the figures on SQLite are filed.
pub const SQLITE: &str = "eventsourcing-sqlite";
/// Where the figures on PostgreSQL are filed.
pub const POSTGRES: &str = "eventsourcing-postgres";
/// The figures the driver must print, per backend.
pub const FIGURES: [&str; 9] = [
    "identity_1",
    "identity_1_p50",
    "identity_1_p99",
    "identity_writers",
    "bank_1",
    "bulk_load",
    "bytes_per_event",
    "read_stream_p50",
    "read_stream_p99",
];

/// The driver, compiled in so that the bench does not depend on where the sources are.
const DRIVER: &str = include_str!("../../peers/python/eventsourcing_peer.py");
/// Checks a venv: prints the versions and fails unless they are the pinned ones.
const CHECK: &str = "import importlib.metadata as m, psycopg, sys\n\
    v = m.version('eventsourcing')\n\
    assert v == sys.argv[1], f'eventsourcing {v}'\n\
    assert psycopg.pq.__impl__ == 'binary', f'psycopg {psycopg.pq.__impl__}'\n\
    print(sys.version.split()[0], v, psycopg.__version__)";

/// Why the peer did not run, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Python, its venv module, pip's packages or PostgreSQL are missing: the rows say n/a.
    #[error("{0}")]
    Unavailable(String),
    /// The driver could not be started or read.
    #[error("running the eventsourcing driver on {backend}: {source}")]
    Io {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What failed.
        source: std::io::Error,
    },
    /// The driver exited with a failure.
    #[error("the eventsourcing driver on {backend} failed ({status}); its stderr is above")]
    Failed {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Its stdout is not the one JSON object expected.
    #[error(
        "the eventsourcing driver on {backend} printed {stdout:?}, not its JSON object: {source}"
    )]
    BadOutput {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What it printed (its start).
        stdout: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The object lacks a figure, or holds one that is not a finite number of the right unit.
    #[error("the eventsourcing driver on {backend}: figure {figure}: {problem}")]
    BadFigure {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The figure's name.
        figure: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The driver's stdout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Python's, the library's and psycopg's versions.
    pub versions: BTreeMap<String, String>,
    /// The store's durability settings, read back from it (journal mode, synchronous, fsync).
    pub settings: BTreeMap<String, String>,
    /// The measurements.
    pub figures: Vec<DriverFigure>,
}

/// One measurement of the driver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverFigure {
    /// One of [`FIGURES`].
    pub figure: String,
    /// `commands/s`, `us`, `events/s` or `B/event`.
    pub unit: String,
    /// The value.
    pub value: f64,
    /// Commands, samples, or the store's events (read and disk figures).
    pub n: u64,
    /// How it was measured.
    pub note: String,
}

/// The sizes, taken from the retro measurements each figure is compared with.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Identity commands by the one writer (the engine's one-writer applies).
    pub commands: u64,
    /// Writer processes (the engine's writer threads).
    pub writers: u64,
    /// Commands per writer (the engine's, per writer).
    pub writer_commands: u64,
    /// Accounts the bank's deposits go round (the HTTP bench's, per client).
    pub accounts: u64,
    /// Deposits (the HTTP bench's single client's applies).
    pub bank_commands: u64,
    /// Events in the read store (the large read depot's size).
    pub read_events: u64,
    /// Reads measured (as many again first).
    pub reads: u64,
}

impl Sizes {
    /// The full run: the store of 1,000,000 events.
    pub fn full() -> Self {
        Self::of(
            &engine_bench::Sizes::full(),
            &http_bench::Sizes::full(),
            1_000_000,
            5000,
        )
    }

    /// `--quick`: a store of 10,000 events.
    pub fn quick() -> Self {
        Self::of(
            &engine_bench::Sizes::quick(),
            &http_bench::Sizes::quick(),
            10_000,
            1000,
        )
    }

    fn of(engine: &engine_bench::Sizes, http: &http_bench::Sizes, events: u64, reads: u64) -> Self {
        Self {
            commands: engine.applies,
            writers: engine.writers,
            writer_commands: engine.applies,
            accounts: http_bench::ACCOUNTS,
            bank_commands: http.one_client,
            read_events: events,
            reads,
        }
    }
}

/// Runs the driver on SQLite (in `scratch`) and on a throw-away PostgreSQL server, adding their
/// figures to `figures`; what cannot be set up is recorded with [`Figures::skip`].
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<(), PeerError> {
    let python = match venv() {
        Ok(python) => python,
        Err(PeerError::Unavailable(reason)) => {
            eprintln!("retro-bench: eventsourcing: not run: {reason}");
            figures.skip(SQLITE, &reason);
            figures.skip(POSTGRES, &reason);
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let dir = scratch.join("eventsourcing");
    let io = |source| PeerError::Io {
        backend: "sqlite",
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let driver = dir.join("eventsourcing_peer.py");
    std::fs::write(&driver, DRIVER).map_err(io)?;

    drive(&python, &driver, "sqlite", &dir, None, sizes, figures)?;

    // PostgreSQL panics on a missing installation: that is a reason to skip, not to fail.
    eprintln!("retro-bench: eventsourcing: starting a throw-away PostgreSQL server");
    let server = match std::panic::catch_unwind(pgtest::PgServer::start) {
        Ok(server) => server,
        Err(_) => {
            let reason = "PostgreSQL did not start (is Debian's postgresql installed? \
                          `bash tests/postgres/install.sh`)";
            figures.skip(POSTGRES, reason);
            return Ok(());
        }
    };
    let url = server.url("postgres");
    drive(
        &python,
        &driver,
        "postgres",
        &dir,
        Some(&url),
        sizes,
        figures,
    )
}

/// The venv's Python, made (or repaired) first when it does not hold the pinned versions.
fn venv() -> Result<PathBuf, PeerError> {
    let unavailable = PeerError::Unavailable;
    let exe = std::env::current_exe()
        .map_err(|e| unavailable(format!("finding retro-bench's own path: {e}")))?;
    // target/release/retro-bench -> target/bench-venv
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| unavailable("retro-bench is not in a target/<profile> directory".into()))?;
    let venv = target.join("bench-venv");
    let python = venv.join("bin").join("python");
    if let Ok(versions) = check(&python) {
        eprintln!(
            "retro-bench: eventsourcing: reusing {} ({versions})",
            venv.display()
        );
        return Ok(python);
    }
    eprintln!(
        "retro-bench: eventsourcing: creating {} and installing {}",
        venv.display(),
        REQUIREMENTS.join(" ")
    );
    let made = quiet(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .map_err(|e| unavailable(format!("`python3 -m venv` failed: {e}")))?;
    drop(made);
    quiet(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--retries", "1", "--timeout", "20"])
            .args(REQUIREMENTS),
    )
    .map_err(|e| {
        unavailable(format!(
            "pip install {} failed: {e}",
            REQUIREMENTS.join(" ")
        ))
    })?;
    let versions =
        check(&python).map_err(|e| unavailable(format!("the new venv is not as pinned: {e}")))?;
    eprintln!("retro-bench: eventsourcing: installed ({versions})");
    Ok(python)
}

/// Whether the venv's Python has the pinned packages: their versions, or why not.
fn check(python: &Path) -> Result<String, String> {
    if !python.is_file() {
        return Err(format!("{} does not exist", python.display()));
    }
    quiet(Command::new(python).args(["-c", CHECK, VERSION])).map(|out| out.trim().to_owned())
}

/// Runs `command` to its end, its stdout captured; the end of its stderr is the error.
fn quiet(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", command.get_program()))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    Err(format!(
        "{} ({})",
        last.unwrap_or("no message").trim(),
        output.status
    ))
}

/// Runs the driver on one backend and files its figures.
fn drive(
    python: &Path,
    driver: &Path,
    backend: &'static str,
    dir: &Path,
    url: Option<&str>,
    sizes: &Sizes,
    figures: &mut Figures,
) -> Result<(), PeerError> {
    let peer = if backend == "sqlite" {
        SQLITE
    } else {
        POSTGRES
    };
    let mut command = Command::new(python);
    command
        .arg(driver)
        .args(["--backend", backend, "--scratch"])
        .arg(dir);
    if let Some(url) = url {
        command.args(["--url", url]);
    }
    for (flag, value) in [
        ("--commands", sizes.commands),
        ("--writers", sizes.writers),
        ("--writer-commands", sizes.writer_commands),
        ("--accounts", sizes.accounts),
        ("--bank-commands", sizes.bank_commands),
        ("--read-events", sizes.read_events),
        ("--reads", sizes.reads),
    ] {
        command.args([flag, &value.to_string()]);
    }
    eprintln!("retro-bench: eventsourcing: running the driver on {backend}");
    let started = Instant::now();
    let io = |source| PeerError::Io { backend, source };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io)?;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .ok_or_else(|| io(std::io::Error::other("no stdout")))?
        .read_to_string(&mut stdout)
        .map_err(io)?;
    let status = child.wait().map_err(io)?;
    if !status.success() {
        return Err(PeerError::Failed { backend, status });
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = parse(backend, &stdout)?;
    let about = describe(&output);
    for f in output.figures {
        let note = if f.figure == "identity_1" {
            format!("{}; {about}", f.note)
        } else {
            f.note
        };
        figures.push(Figure::new(peer, &f.figure, &f.unit, f.value, f.n).note(note));
    }
    figures
        .push(Figure::new(peer, "wall", "s", seconds, 1).note(
            "the driver's run on this backend, every measurement and the bulk load included",
        ));
    Ok(())
}

/// The driver's stdout as an [`Output`], every one of [`FIGURES`] present once with a finite
/// value in its unit.
pub fn parse(backend: &'static str, stdout: &str) -> Result<Output, PeerError> {
    let output: Output =
        serde_json::from_str(stdout.trim()).map_err(|source| PeerError::BadOutput {
            backend,
            stdout: stdout.chars().take(200).collect(),
            source,
        })?;
    let bad = |figure: &str, problem: String| PeerError::BadFigure {
        backend,
        figure: figure.to_owned(),
        problem,
    };
    if output.backend != backend {
        return Err(bad("backend", format!("is {:?}", output.backend)));
    }
    for name in FIGURES {
        let found: Vec<&DriverFigure> =
            output.figures.iter().filter(|f| f.figure == name).collect();
        let [figure] = found.as_slice() else {
            return Err(bad(
                name,
                format!("printed {} times, not once", found.len()),
            ));
        };
        let unit = expected_unit(name);
        if figure.unit != unit {
            return Err(bad(name, format!("unit {:?}, not {unit:?}", figure.unit)));
        }
        if !figure.value.is_finite() || figure.value <= 0.0 {
            return Err(bad(name, format!("value {}", figure.value)));
        }
    }
    if let Some(extra) = output
        .figures
        .iter()
        .find(|f| !FIGURES.contains(&f.figure.as_str()))
    {
        return Err(bad(&extra.figure, "is not one the bench knows".to_owned()));
    }
    Ok(output)
}

fn expected_unit(figure: &str) -> &'static str {
    match figure {
        "bulk_load" => "events/s",
        "bytes_per_event" => "B/event",
        f if f.ends_with("_p50") || f.ends_with("_p99") => "us",
        _ => "commands/s",
    }
}

/// The versions and settings, for a figure's note.
fn describe(output: &Output) -> String {
    let join = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{}; {}", join(&output.versions), join(&output.settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(figures: &[(&str, &str)]) -> String {
        let list: Vec<String> = figures
            .iter()
            .map(|(name, unit)| {
                format!(r#"{{"figure":"{name}","unit":"{unit}","value":1.5,"n":10,"note":"x"}}"#)
            })
            .collect();
        format!(
            r#"{{"backend":"sqlite","versions":{{"eventsourcing":"9.5.6"}},"settings":{{}},"figures":[{}]}}"#,
            list.join(",")
        )
    }

    #[test]
    fn every_figure_must_be_there_once() {
        let all: Vec<(&str, &str)> = FIGURES.iter().map(|f| (*f, expected_unit(f))).collect();
        assert_eq!(parse("sqlite", &line(&all)).unwrap().figures.len(), 9);
        let err = parse("sqlite", &line(&all[1..])).unwrap_err();
        assert!(err.to_string().contains("identity_1"), "{err}");
        let mut wrong = all.clone();
        wrong[4] = ("bank_1", "us");
        assert!(parse("sqlite", &line(&wrong))
            .unwrap_err()
            .to_string()
            .contains("bank_1"));
        assert!(matches!(
            parse("sqlite", "Traceback (most recent call last):"),
            Err(PeerError::BadOutput { .. })
        ));
        assert!(matches!(
            parse("postgres", &line(&all)),
            Err(PeerError::BadFigure { .. })
        ));
    }

    #[test]
    fn sizes_follow_the_retro_measurements() {
        let full = Sizes::full();
        assert_eq!(full.commands, engine_bench::Sizes::full().applies);
        assert_eq!(full.bank_commands, http_bench::Sizes::full().one_client);
        assert_eq!(full.read_events, 1_000_000);
        assert_eq!(Sizes::quick().read_events, 10_000);
    }
}

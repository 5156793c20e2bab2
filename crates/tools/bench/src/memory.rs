//! Memory of the `retro` command line on a large depot: builds a depot of about 1,000,000 events
//! through `retro import` of a generated JSON-lines file, then runs `retro log`, `retro events`,
//! `retro export`, `retro fsck` and `retro gc` on it, each under GNU `/usr/bin/time -v`, and files
//! each command's maximum resident set size and wall time.
//!
//! Why `/usr/bin/time` and not `wait4` here: Linux carries a process's peak RSS across `execve`
//! (the high-water mark of the memory it had before), and Rust spawns children with
//! `posix_spawn`/`vfork`, whose memory before `execve` is this bench's own: `wait4` would report
//! the bench's peak (hundreds of MiB after the read depots) for every child. GNU time forks from a
//! small process, so what it reports is the command's own.
//!
//! It records into `figures` and uses `depot_bench`'s `Stage` and `workload`; `report` reads its
//! [`COMMANDS`] and [`LIMIT_MIB`], and nothing here uses `report` (no module cycle).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use depot::Base;

use benchkit::Figure;

use crate::depot_bench::Stage;
use crate::figures::Figures;
use crate::workload::{self, Shape, EVENTS_PER_COMMAND};

/// Where retro's own figures are filed.
const RETRO: &str = "retro";
/// The issue's limit for every command on a 1,000,000-event depot.
pub const LIMIT_MIB: f64 = 256.0;
/// GNU time.
const TIME: &str = "/usr/bin/time";
/// The commands measured, in the order run (`import` builds the depot).
pub const COMMANDS: [&str; 6] = ["import", "log", "events", "export", "fsck", "gc"];

/// The sizes of the memory measurement.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Events (about) in the imported depot.
    pub events: u64,
}

impl Sizes {
    /// The full run: the issue's 1,000,000 events.
    pub fn full() -> Self {
        Self { events: 1_000_000 }
    }

    /// The quick run.
    pub fn quick() -> Self {
        Self { events: 100_000 }
    }
}

/// `retro` next to the running executable.
pub fn retro_binary() -> Result<PathBuf> {
    benchkit::sibling_binary("retro", "`cargo build --release -p retro-cli`")
}

/// Checks that GNU time is installed.
fn time_binary() -> Result<PathBuf> {
    let time = PathBuf::from(TIME);
    let works = Command::new(&time)
        .args(["-v", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        bail!("{TIME} (GNU time) is missing: install it with `apt-get install time`");
    }
    Ok(time)
}

/// One JSON line of `retro import` per workload command, as `retro export` writes them (without
/// ids, so the import assigns them).
pub fn write_history(path: &Path, commands: u64, shape: Shape) -> Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut events = 0;
    for i in 0..commands {
        let request = workload::request(i, shape, Base::Tip)?;
        let date = request
            .date
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        write!(
            out,
            r#"{{"session":{},"date":"{date}","message":{},"events":["#,
            serde_json::to_string(&request.session)?,
            std::str::from_utf8(&request.message)?
        )?;
        for (n, (partition, event)) in request.events.iter().enumerate() {
            if n > 0 {
                out.write_all(b",")?;
            }
            write!(
                out,
                r#"{{"partition":{},"name":{},"data":{}}}"#,
                serde_json::to_string(partition.as_str())?,
                serde_json::to_string(event.name().as_str())?,
                std::str::from_utf8(event.data())?
            )?;
            events += 1;
        }
        out.write_all(b"]}\n")?;
    }
    out.flush()?;
    Ok(events)
}

/// What GNU time said about one command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Maximum resident set size, KiB.
    pub max_rss_kib: u64,
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// Major page faults.
    pub major_faults: u64,
}

/// Parses the output of `time -v`.
pub fn parse_time_v(text: &str) -> Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.trim().rsplit_once(": ") else {
            continue;
        };
        let value = value.trim();
        match key {
            "Maximum resident set size (kbytes)" => {
                usage.max_rss_kib = value.parse()?;
                seen = true;
            }
            "User time (seconds)" => usage.user_s = value.parse()?,
            "System time (seconds)" => usage.system_s = value.parse()?,
            "Major (requiring I/O) page faults" => usage.major_faults = value.parse()?,
            _ => {}
        }
    }
    ensure!(seen, "no maximum resident set size in {text:?}");
    Ok(usage)
}

/// Where one measured command's stdout goes.
enum Output<'a> {
    Null,
    File(&'a Path),
}

/// Runs `retro <args>` under `time -v`; fails when it fails.
fn measure(
    time: &Path,
    retro: &Path,
    args: &[OsString],
    stdout: Output<'_>,
    work: &Path,
) -> Result<(Usage, Duration)> {
    let usage_file = work.join("time.txt");
    let stderr_file = work.join("stderr.txt");
    let mut command = Command::new(time);
    command
        .arg("-v")
        .arg("-o")
        .arg(&usage_file)
        .arg(retro)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RETRO_DEPOT")
        .env_remove("RETRO_MANIFEST")
        .stdin(Stdio::null())
        .stderr(File::create(&stderr_file)?);
    match stdout {
        Output::Null => command.stdout(Stdio::null()),
        Output::File(path) => command.stdout(File::create(path)?),
    };
    let shown = format!(
        "retro {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("retro-bench: memory: {shown}");
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("starting {TIME} {}", retro.display()))?;
    let wall = start.elapsed();
    if !status.success() {
        let stderr = fs::read_to_string(&stderr_file).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("`{shown}` failed ({status}): {}", tail.join("\n"));
    }
    let usage = parse_time_v(&fs::read_to_string(&usage_file)?)
        .with_context(|| format!("reading {TIME}'s report on `{shown}`"))?;
    Ok((usage, wall))
}

/// Counts the lines of a file.
fn count_lines(path: &Path) -> Result<u64> {
    let mut reader = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let mut lines = 0;
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf)? > 0 {
        lines += 1;
        buf.clear();
    }
    Ok(lines)
}

/// Builds the depot through `retro import` and measures each of [`COMMANDS`] on it.
pub fn run(sizes: &Sizes, scratch: &Path, figures: &mut Figures) -> Result<()> {
    let retro = retro_binary()?;
    let time = time_binary()?;
    let stage = Stage::new(scratch);
    let work = stage.dir("memory")?;
    let commands = workload::read_commands(sizes.events);
    let history = work.join("history.jsonl");
    eprintln!(
        "retro-bench: memory: writing {commands} commands as JSON lines to {}",
        history.display()
    );
    let events = write_history(&history, commands, Shape::for_reads(sizes.events))?;
    ensure!(events == commands * EVENTS_PER_COMMAND);
    let input_bytes = fs::metadata(&history)?.len();
    let depot = work.join("depot");
    let init = Command::new(&retro)
        .arg("init")
        .arg(&depot)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("running retro init")?;
    ensure!(init.success(), "retro init {} failed", depot.display());
    let exported = work.join("export.jsonl");
    let output = work.join("stdout.txt");

    for name in COMMANDS {
        let mut args: Vec<OsString> = vec!["--depot".into(), depot.clone().into(), name.into()];
        let mut stdout = Output::Null;
        match name {
            "import" => {
                args.push(history.clone().into());
                args.push("--json".into());
                stdout = Output::File(&output);
            }
            "export" => {
                args.push("-o".into());
                args.push(exported.clone().into());
            }
            "fsck" | "gc" => stdout = Output::File(&output),
            _ => {}
        }
        let (usage, wall) = measure(&time, &retro, &args, stdout, &work)?;
        let mut detail = String::new();
        match name {
            "import" => {
                let text = fs::read_to_string(&output)?;
                let report: serde_json::Value = serde_json::from_str(text.trim())
                    .with_context(|| format!("retro import printed {text:?}"))?;
                ensure!(
                    report["events"].as_u64() == Some(events)
                        && report["imported"].as_u64() == Some(commands),
                    "retro import imported {report}, not {commands} checkpoints of {events} events"
                );
                detail = format!(
                    "; {commands} checkpoints from a {:.0} MB JSON-lines file, --batch 1000",
                    input_bytes as f64 / 1e6
                );
            }
            "export" => {
                let lines = count_lines(&exported)?;
                ensure!(
                    lines == commands,
                    "retro export wrote {lines} lines, not {commands}"
                );
                detail = format!(
                    "; {:.0} MB written",
                    fs::metadata(&exported)?.len() as f64 / 1e6
                );
                fs::remove_file(&exported)?;
            }
            "fsck" | "gc" => {
                let text = fs::read_to_string(&output)?;
                detail = format!("; it said: {}", text.trim().replace('\n', " / "));
            }
            "log" | "events" => detail = "; stdout to /dev/null".to_owned(),
            _ => {}
        }
        let mib = usage.max_rss_kib as f64 / 1024.0;
        let note = format!(
            "`retro {name}` on a depot of {events} events built by retro import, under \
             {TIME} -v: wall {:.1} s, user {:.1} s, sys {:.1} s, {} major faults{detail}",
            wall.as_secs_f64(),
            usage.user_s,
            usage.system_s,
            usage.major_faults
        );
        figures
            .push(Figure::new(RETRO, format!("cli_{name}_max_rss"), "MiB", mib, events).note(note));
        figures.push(
            Figure::new(
                RETRO,
                format!("cli_{name}_wall"),
                "s",
                wall.as_secs_f64(),
                events,
            )
            .note(format!(
                "wall time of `retro {name}` (see cli_{name}_max_rss)"
            )),
        );
    }
    stage.remove(&work)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_v_parses() {
        let text = "\tCommand being timed: \"true\"\n\tUser time (seconds): 1.25\n\tSystem time (seconds): 0.50\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 0:00.00\n\tMajor (requiring I/O) page faults: 3\n\tMaximum resident set size (kbytes): 262144\n\tExit status: 0\n";
        let usage = parse_time_v(text).unwrap();
        assert_eq!(
            usage,
            Usage {
                max_rss_kib: 262_144,
                user_s: 1.25,
                system_s: 0.5,
                major_faults: 3
            }
        );
        assert!(parse_time_v("nothing").is_err());
    }

    #[test]
    fn history_lines_are_import_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let events = write_history(&path, 20, Shape::for_reads(300)).unwrap();
        assert_eq!(events, 60);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 20);
        let first = &lines[7];
        assert_eq!(first["session"], "s1");
        assert_eq!(first["date"], "2026-01-01T00:00:07Z");
        assert_eq!(first["message"]["command"], "createIdentity");
        assert_eq!(first["events"][0]["partition"], "identity/7");
        assert_eq!(first["events"][0]["name"], "IdentityCreated");
        assert_eq!(first["events"][2]["partition"], "session/s1");
        assert_eq!(first["events"][1]["data"]["identity"], "id-00000007");
    }
}

//! Git used as an event store: a sha256 repository where one command is a commit.
//!
//! Each command becomes 3 blobs (the events), one flat tree listing them (the affix; entries
//! are named `<partition with '/' as ':'>:<seq>`, e.g. `identity:42:0`) and a commit on
//! `refs/heads/master` whose message is the command's JSON (the checkpoint).
//!
//! Two ways in are measured: `git fast-import` fed a stream generated in-process (bulk import,
//! no per-command durability), and a per-command loop of plumbing with `core.fsync=all`, either
//! through long-lived processes or spawning one process per step. With `core.fsync=all` a
//! command costs 6 fsyncs (5 loose objects and the ref's lock file); git does not sync the
//! reflog, nor the directories. Trees are written with `hash-object -t tree`, not `mktree`,
//! which ignores `core.fsync`.

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use benchkit::{per_second, Figure, Percentiles};

use crate::report::Report;
use crate::workload::{Command, Workload, EVENTS_PER_COMMAND};

const PEER: &str = "git";
const IDENT: &str = "retro <retro@example.org>";

/// Repository configuration: `(key, value)` pairs.
type Config<'a> = &'a [(&'a str, &'a str)];

/// Options of `retro-peers git-bulk`.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkArgs {
    /// Commands imported.
    #[arg(long, default_value_t = BulkArgs::DEFAULT_N)]
    pub n: u64,
}

impl BulkArgs {
    const DEFAULT_N: u64 = 100_000;

    /// The sizes `retro-peers all --quick` uses.
    pub fn quick() -> Self {
        Self { n: 10_000 }
    }
}

impl Default for BulkArgs {
    fn default() -> Self {
        Self { n: Self::DEFAULT_N }
    }
}

/// Options of `retro-peers git-durable`.
#[derive(Debug, Clone, clap::Args)]
pub struct DurableArgs {
    /// Commands committed through long-lived plumbing processes (per fsync setting).
    #[arg(long, default_value_t = DurableArgs::DEFAULT_N)]
    pub n: u64,
    /// Commands committed spawning one process per plumbing step.
    #[arg(long, default_value_t = DurableArgs::DEFAULT_SPAWN_N)]
    pub spawn_n: u64,
}

impl DurableArgs {
    const DEFAULT_N: u64 = 300;
    const DEFAULT_SPAWN_N: u64 = 100;

    /// The sizes `retro-peers all --quick` uses.
    pub fn quick() -> Self {
        Self {
            n: 200,
            spawn_n: 60,
        }
    }
}

impl Default for DurableArgs {
    fn default() -> Self {
        Self {
            n: Self::DEFAULT_N,
            spawn_n: Self::DEFAULT_SPAWN_N,
        }
    }
}

/// A `git` invocation on `repo`, isolated from the user's and the system's configuration.
fn git(repo: &Path) -> Process {
    let mut process = Process::new("git");
    process
        .arg("-C")
        .arg(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "retro")
        .env("GIT_AUTHOR_EMAIL", "retro@example.org")
        .env("GIT_COMMITTER_NAME", "retro")
        .env("GIT_COMMITTER_EMAIL", "retro@example.org")
        .env("GIT_FLUSH", "1")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    process
}

/// Runs `git args` on `repo` with `input` on its stdin; returns its trimmed stdout.
fn run_git(repo: &Path, args: &[&str], input: &[u8]) -> Result<String> {
    let mut child = git(repo)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting git {}", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .with_context(|| format!("writing to git {}", args.join(" ")))?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "git {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)
        .context("git printed non-UTF-8")?
        .trim()
        .to_owned())
}

/// `git --version`, e.g. `git version 2.47.3`.
fn version() -> Result<String> {
    run_git(Path::new("."), &["--version"], b"").context("is git installed?")
}

/// Creates an empty sha256 repository at `repo` with automatic gc off and `config` set.
fn init(repo: &Path, config: Config) -> Result<()> {
    fs::create_dir_all(repo).with_context(|| format!("creating {}", repo.display()))?;
    run_git(
        repo,
        &["init", "-q", "--object-format=sha256", "-b", "master"],
        b"",
    )
    .context("git init --object-format=sha256 (needs git >= 2.29)")?;
    let format = run_git(repo, &["rev-parse", "--show-object-format"], b"")?;
    ensure!(
        format == "sha256",
        "the repository's object format is {format}"
    );
    run_git(repo, &["config", "gc.auto", "0"], b"")?;
    for (key, value) in config {
        run_git(repo, &["config", key, value], b"")?;
    }
    Ok(())
}

/// The tree entry name of an event: its partition with `/` as `:`, then `:<seq>`.
fn entry_name(partition: &str, seq: u64) -> String {
    format!("{}:{seq}", partition.replace('/', ":"))
}

/// Appends `command` to a fast-import stream as one commit on `refs/heads/master` whose tree
/// holds only the command's 3 events (inline blobs).
fn write_fast_import(out: &mut impl Write, command: &Command) -> std::io::Result<()> {
    writeln!(out, "commit refs/heads/master")?;
    writeln!(out, "committer {IDENT} {} +0000", command.timestamp)?;
    // The trailing newline makes the commit the one `git commit-tree -m` would write.
    writeln!(
        out,
        "data {}\n{}",
        command.message.len() + 1,
        command.message
    )?;
    writeln!(out)?;
    writeln!(out, "deleteall")?;
    for event in &command.events {
        writeln!(
            out,
            "M 100644 inline {}",
            entry_name(&event.partition, event.seq)
        )?;
        writeln!(out, "data {}\n{}", event.data.len(), event.data)?;
    }
    writeln!(out)
}

/// Sum of the sizes of the files under `dir` whose name ends with `suffix` ("" for all).
fn bytes_under(dir: &Path, suffix: &str) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += bytes_under(&entry.path(), suffix)?;
        } else if kind.is_file() && entry.file_name().to_string_lossy().ends_with(suffix) {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Runs `git args` on `repo` and counts the lines it prints, as a walk of the history does.
fn time_walk(repo: &Path, args: &[&str]) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let mut child = git(repo)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting git {}", args.join(" ")))?;
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .context("no stdout")?
        .read_to_end(&mut out)?;
    let status = child.wait()?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "git {} failed: {status}", args.join(" "));
    let lines = out.iter().filter(|&&b| b == b'\n').count() as u64;
    Ok((lines, elapsed))
}

/// Measures a bulk import of the workload with `git fast-import`, the repository's size before
/// and after `git gc`, and walks of its history.
pub fn run_bulk(args: &BulkArgs, dir: &Path, report: &mut Report) -> Result<()> {
    let n = args.n.max(1);
    let events = n * EVENTS_PER_COMMAND;
    let version = version()?;
    let repo = dir.join("bulk.git");
    init(&repo, &[])?;
    eprintln!("git-bulk: fast-import of {n} commands ({version})");

    let start = Instant::now();
    let mut child = git(&repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting git fast-import")?;
    {
        let stdin = child.stdin.take().context("no stdin")?;
        let mut out = BufWriter::with_capacity(1 << 20, stdin);
        for command in Workload::new().take(usize::try_from(n)?) {
            write_fast_import(&mut out, &command).context("feeding git fast-import")?;
        }
        writeln!(out, "done")?;
        out.flush().context("feeding git fast-import")?;
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "git fast-import failed: {status}");
    let count = run_git(&repo, &["rev-list", "--count", "master"], b"")?;
    ensure!(count == n.to_string(), "{count} commits imported, not {n}");

    let note = format!("{version}, sha256, 3 blobs + 1 tree + 1 commit per command");
    report.push(
        Figure::new(PEER, "fast_import", "commands/s", per_second(n, elapsed), n)
            .note(note.clone()),
    )?;
    report.push(
        Figure::new(
            PEER,
            "fast_import_events",
            "events/s",
            per_second(events, elapsed),
            events,
        )
        .note(note),
    )?;
    let objects = repo.join(".git").join("objects");
    let pack = bytes_under(&objects, ".pack")?;
    report.push(
        Figure::new(
            PEER,
            "fast_import_pack_bytes_per_event",
            "B/event",
            pack as f64 / events as f64,
            events,
        )
        .note("the .pack files fast-import wrote"),
    )?;

    walks(&repo, n, "packed, no commit-graph", "", report)?;

    eprintln!("git-bulk: git gc");
    let start = Instant::now();
    run_git(&repo, &["gc", "--quiet"], b"")?;
    let gc = start.elapsed();
    report.push(Figure::new(PEER, "gc", "s", gc.as_secs_f64(), n).note("plain git gc"))?;
    let pack = bytes_under(&objects, ".pack")?;
    report.push(
        Figure::new(
            PEER,
            "gc_pack_bytes_per_event",
            "B/event",
            pack as f64 / events as f64,
            events,
        )
        .note("the .pack files after git gc"),
    )?;
    let all = bytes_under(&objects, "")?;
    report.push(
        Figure::new(
            PEER,
            "gc_objects_bytes_per_event",
            "B/event",
            all as f64 / events as f64,
            events,
        )
        .note("everything under .git/objects after git gc (pack, idx, rev, commit-graph)"),
    )?;

    run_git(&repo, &["commit-graph", "write", "--reachable"], b"")?;
    walks(
        &repo,
        n,
        "after git gc, with commit-graph",
        "_commit_graph",
        report,
    )
}

/// Times `git rev-list HEAD` and `git log --format=%H` over the `n` commits of `repo`.
fn walks(repo: &Path, n: u64, how: &str, suffix: &str, report: &mut Report) -> Result<()> {
    for (name, args) in [
        ("rev_list_walk", &["rev-list", "HEAD"][..]),
        ("log_walk", &["log", "--format=%H"][..]),
    ] {
        eprintln!("git-bulk: git {} ({how})", args.join(" "));
        let (lines, elapsed) = time_walk(repo, args)?;
        ensure!(
            lines == n,
            "git {} printed {lines} commits, not {n}",
            args.join(" ")
        );
        report.push(
            Figure::new(
                PEER,
                format!("{name}{suffix}"),
                "checkpoints/s",
                per_second(n, elapsed),
                n,
            )
            .note(format!("git {}, {how}", args.join(" "))),
        )?;
    }
    Ok(())
}

/// A long-lived git process spoken to line by line.
struct Coprocess {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Coprocess {
    fn spawn(repo: &Path, name: &'static str, args: &[&str]) -> Result<Self> {
        let mut child = git(repo)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Self {
            name,
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    /// Sends `input` and reads `lines` lines of answer.
    fn ask(&mut self, input: &str, lines: usize) -> Result<Vec<String>> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin
            .write_all(input.as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to {}", self.name))?;
        let mut answer = Vec::with_capacity(lines);
        for _ in 0..lines {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("{} exited", self.name);
            }
            answer.push(line.trim_end().to_owned());
        }
        Ok(answer)
    }

    /// Closes stdin and waits for a clean exit.
    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "{} failed: {status}", self.name);
        Ok(())
    }
}

impl Drop for Coprocess {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The long-lived processes of the per-command loop.
struct Plumbing {
    blobs: Coprocess,
    trees: Coprocess,
    commits: Coprocess,
    refs: Coprocess,
    inbox: PathBuf,
}

impl Plumbing {
    fn start(repo: &Path, inbox: PathBuf) -> Result<Self> {
        fs::create_dir_all(&inbox)?;
        Ok(Self {
            blobs: Coprocess::spawn(
                repo,
                "git hash-object -w --stdin-paths",
                &["hash-object", "-w", "--no-filters", "--stdin-paths"],
            )?,
            trees: Coprocess::spawn(
                repo,
                "git hash-object -t tree -w --stdin-paths",
                &["hash-object", "-t", "tree", "-w", "--stdin-paths"],
            )?,
            commits: Coprocess::spawn(
                repo,
                "git hash-object -t commit -w --stdin-paths",
                &["hash-object", "-t", "commit", "-w", "--stdin-paths"],
            )?,
            refs: Coprocess::spawn(repo, "git update-ref --stdin", &["update-ref", "--stdin"])?,
            inbox,
        })
    }

    /// Writes `command` as 3 blobs, a tree and a commit whose parent is `parent`, then moves
    /// `refs/heads/master` from `parent` to it; returns the commit's id.
    fn commit(&mut self, command: &Command, parent: Option<&str>, zero: &str) -> Result<String> {
        let mut paths = String::new();
        for (i, event) in command.events.iter().enumerate() {
            let path = self.inbox.join(format!("event{i}"));
            fs::write(&path, &event.data)?;
            paths.push_str(path.to_str().context("non-UTF-8 scratch path")?);
            paths.push('\n');
        }
        let blobs = self.blobs.ask(&paths, command.events.len())?;
        let tree = tree_object(command, &blobs)?;
        let tree = write_object(&mut self.trees, &self.inbox.join("tree"), &tree)?;
        let commit = commit_object(command, &tree, parent);
        let commit = write_object(
            &mut self.commits,
            &self.inbox.join("commit"),
            commit.as_bytes(),
        )?;
        let old = parent.unwrap_or(zero);
        let answer = self.refs.ask(
            &format!("start\nupdate refs/heads/master {commit} {old}\nprepare\ncommit\n"),
            3,
        )?;
        ensure!(
            answer == ["start: ok", "prepare: ok", "commit: ok"],
            "git update-ref answered {answer:?}"
        );
        Ok(commit)
    }

    fn finish(self) -> Result<()> {
        self.blobs.finish()?;
        self.trees.finish()?;
        self.commits.finish()?;
        self.refs.finish()
    }
}

/// Writes `bytes` to `path` and has `writer` (a `hash-object --stdin-paths`) store it.
fn write_object(writer: &mut Coprocess, path: &Path, bytes: &[u8]) -> Result<String> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    let path = path.to_str().context("non-UTF-8 scratch path")?;
    Ok(writer.ask(&format!("{path}\n"), 1)?.remove(0))
}

/// The binary tree object listing the events of `command`, whose blob ids are `blobs`: the
/// format `git mktree` would write (`<mode> <name>\0<raw id>`, sorted by name).
///
/// The tree is not made with `git mktree`: mktree does not read `core.fsync` (git 2.47), so the
/// trees it writes are never synced, and the durable figures would not be durable.
fn tree_object(command: &Command, blobs: &[String]) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Vec<u8>)> = command
        .events
        .iter()
        .zip(blobs)
        .map(|(event, blob)| Ok((entry_name(&event.partition, event.seq), hex::decode(blob)?)))
        .collect::<Result<_>>()?;
    entries.sort();
    let mut tree = Vec::new();
    for (name, id) in entries {
        tree.extend_from_slice(b"100644 ");
        tree.extend_from_slice(name.as_bytes());
        tree.push(0);
        tree.extend_from_slice(&id);
    }
    Ok(tree)
}

/// The text of the commit object of `command`.
fn commit_object(command: &Command, tree: &str, parent: Option<&str>) -> String {
    let parent = parent.map(|p| format!("parent {p}\n")).unwrap_or_default();
    let ts = command.timestamp;
    format!(
        "tree {tree}\n{parent}author {IDENT} {ts} +0000\ncommitter {IDENT} {ts} +0000\n\n{}\n",
        command.message
    )
}

/// Commits `n` commands in a fresh repository through long-lived processes; returns the total
/// time and each command's latency.
fn long_lived_loop(
    repo: &Path,
    inbox: PathBuf,
    n: u64,
    config: Config,
) -> Result<(Duration, Vec<Duration>)> {
    init(repo, config)?;
    let zero = "0".repeat(64);
    let mut plumbing = Plumbing::start(repo, inbox)?;
    let mut parent: Option<String> = None;
    let mut samples = Vec::new();
    let start = Instant::now();
    for command in Workload::new().take(usize::try_from(n)?) {
        let began = Instant::now();
        parent = Some(plumbing.commit(&command, parent.as_deref(), &zero)?);
        samples.push(began.elapsed());
    }
    let elapsed = start.elapsed();
    plumbing.finish()?;
    let count = run_git(repo, &["rev-list", "--count", "master"], b"")?;
    ensure!(count == n.to_string(), "{count} commits, not {n}");
    Ok((elapsed, samples))
}

/// Commits `n` commands in a fresh repository, spawning one git process per step:
/// `hash-object` x3, `hash-object -t tree` (see [`tree_object`]), `commit-tree`, `update-ref`.
fn spawn_per_step_loop(repo: &Path, n: u64, config: Config) -> Result<Duration> {
    init(repo, config)?;
    let mut parent: Option<String> = None;
    let start = Instant::now();
    for command in Workload::new().take(usize::try_from(n)?) {
        let blobs = command
            .events
            .iter()
            .map(|event| {
                run_git(
                    repo,
                    &["hash-object", "-w", "--stdin"],
                    event.data.as_bytes(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let tree = tree_object(&command, &blobs)?;
        let tree = run_git(repo, &["hash-object", "-t", "tree", "-w", "--stdin"], &tree)?;
        let date = format!("{} +0000", command.timestamp);
        let mut commit_tree = git(repo);
        commit_tree
            .args(["commit-tree", &tree])
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        if let Some(parent) = &parent {
            commit_tree.args(["-p", parent]);
        }
        let output = commit_tree
            .args(["-m", &command.message])
            .output()
            .context("running git commit-tree")?;
        ensure!(
            output.status.success(),
            "git commit-tree failed: {}",
            output.status
        );
        let commit = String::from_utf8(output.stdout)?.trim().to_owned();
        let mut update = vec!["update-ref", "refs/heads/master", &commit];
        if let Some(parent) = &parent {
            update.push(parent);
        }
        run_git(repo, &update, b"")?;
        parent = Some(commit);
    }
    Ok(start.elapsed())
}

/// Measures the per-command loop of plumbing, durable (`core.fsync=all`) and not.
pub fn run_durable(args: &DurableArgs, dir: &Path, report: &mut Report) -> Result<()> {
    let version = version()?;
    let fsync_all = [("core.fsync", "all")];
    let variants: [(&str, Config, &str); 2] = [
        ("durable_commit", &fsync_all, "core.fsync=all"),
        (
            "commit_no_fsync",
            &[],
            "default settings (no fsync of loose objects or refs)",
        ),
    ];
    for (name, config, how) in variants {
        let n = args.n.max(1);
        eprintln!("git-durable: {n} commands through long-lived processes, {how}");
        let (elapsed, mut samples) = long_lived_loop(
            &dir.join(format!("{name}.git")),
            dir.join(format!("{name}.inbox")),
            n,
            config,
        )?;
        let p = Percentiles::of(&mut samples);
        let note = format!(
            "{version}, sha256, {how}; long-lived hash-object --stdin-paths \
             (blobs, trees, commits), update-ref --stdin"
        );
        report.push(Figure::new(PEER, name, "commands/s", per_second(n, elapsed), n).note(note))?;
        report.push(Figure::new(PEER, format!("{name}_p50"), "us", p.p50_us, n))?;
    }
    let n = args.spawn_n.max(1);
    eprintln!("git-durable: {n} commands spawning one process per step, core.fsync=all");
    let elapsed = spawn_per_step_loop(&dir.join("spawn.git"), n, &fsync_all)?;
    report.push(
        Figure::new(
            PEER,
            "durable_commit_spawn_per_step",
            "commands/s",
            per_second(n, elapsed),
            n,
        )
        .note(format!(
            "{version}, sha256, core.fsync=all; hash-object x3, hash-object -t tree, commit-tree, update-ref"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_one_commit_per_command() {
        let mut out = Vec::new();
        write_fast_import(&mut out, &Command::new(7)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("commit refs/heads/master\n"));
        assert_eq!(text.matches("M 100644 inline ").count(), 3);
        assert!(text.contains("M 100644 inline identity:7:1\n"));
        assert!(text.contains("M 100644 inline session:s1:7\n"));
    }

    fn git_available() -> bool {
        version().is_ok()
    }

    #[test]
    fn bulk_and_durable_agree() {
        if !git_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::collecting();
        run_bulk(&BulkArgs { n: 30 }, dir.path(), &mut report).unwrap();
        long_lived_loop(&dir.path().join("l.git"), dir.path().join("inbox"), 30, &[]).unwrap();
        spawn_per_step_loop(&dir.path().join("s.git"), 3, &[]).unwrap();
        // The three ways in write the same commits.
        let rev = |repo: &str, rev: &str| {
            run_git(&dir.path().join(repo), &["rev-parse", rev], b"").unwrap()
        };
        assert_eq!(rev("bulk.git", "master"), rev("l.git", "master"));
        assert_eq!(rev("l.git", "master~27"), rev("s.git", "master"));
    }
}

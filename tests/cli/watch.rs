//! `retro watch`: replay with `--all`, live delivery to a running child, durable consumers that
//! survive SIGKILL, non-fast-forward reports and a closed stdout. Also the child-process helpers
//! the `serve` tests share.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{bin, json, json_lines, TestDepot};

/// `retro --depot <dir> ARGS` as a std command (to spawn), with the clean test environment.
pub fn std_cmd(depot: &TestDepot, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(depot.tmp.path())
        .env_remove("RETRO_DEPOT")
        .env_remove("RETRO_SESSION")
        .env_remove("RETRO_MANIFEST")
        .env_remove("RETRO_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1")
        .arg("--depot")
        .arg(&depot.dir)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves none behind.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }

    /// Waits at most `limit` for the exit; panics (after killing it) when it is still running.
    pub fn wait_for(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                self.0 = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!("{what}: still running after {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The lines of a child's stream, read on a thread so that waits can time out.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(stream: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    // A last line without its newline was cut off by a kill: not delivered.
                    Ok(0) | Err(_) => return,
                    Ok(_) if !line.ends_with('\n') => return,
                    Ok(_) => {
                        line.pop();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Lines { rx }
    }

    /// The next line, or None at the end of the stream or after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next line, which must come within `timeout`.
    pub fn expect(&self, timeout: Duration, what: &str) -> String {
        self.next(timeout)
            .unwrap_or_else(|| panic!("no line within {timeout:?}: expected {what}"))
    }

    /// Every remaining line until the end of the stream (which must come within `timeout`).
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return out,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stream still open after {timeout:?}")
                }
            }
        }
    }
}

/// A pipe whose buffer is one page, so that a writer blocks after a few lines instead of
/// finishing a whole stream into the kernel's default 64 KiB before the reader looks.
fn small_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (reader, writer) = std::io::pipe().unwrap();
    #[cfg(target_os = "linux")]
    unsafe {
        // SAFETY: a valid descriptor; F_SETPIPE_SZ takes an int.
        assert!(libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) >= 0);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = writer.as_raw_fd();
    (reader, writer)
}

/// Spawns `retro watch ARGS` with its stdout on a pipe (a one-page one when `small`); returns the
/// process and its stdout lines.
fn spawn_watch(depot: &TestDepot, args: &[&str], small: bool) -> (Proc, Lines) {
    let mut full = vec!["watch"];
    full.extend_from_slice(args);
    let mut cmd = std_cmd(depot, &full);
    cmd.stderr(Stdio::null());
    if small {
        let (reader, writer) = small_pipe();
        cmd.stdout(writer);
        let child = cmd.spawn().unwrap();
        drop(cmd); // the parent's copy of the write end
        (Proc(Some(child)), Lines::new(reader))
    } else {
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        (Proc(Some(child)), Lines::new(stdout))
    }
}

/// The checkpoints of `retro log --json` (all of history), oldest first.
fn history(depot: &TestDepot) -> Vec<Value> {
    let mut log = json_lines(&depot.ok(&["log", "--json", "-n", "100000"]));
    log.reverse();
    log
}

fn ids(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["checkpoint"].as_str().unwrap().to_owned())
        .collect()
}

/// Applies probe commands until a freshly started live watcher prints one (it starts at the head
/// it finds, so a probe applied before it looked is not delivered); reads every probe after that
/// one too. A watcher that has printed is past its start-up, so later commands are all delivered.
fn sync_live(depot: &TestDepot, lines: &Lines) -> Vec<Value> {
    let mut probes = Vec::new();
    for i in 0..10 {
        probes.push(depot.apply(&format!(
            r#"{{"path":"accounts/probe{i}","name":"open","params":{{"owner":"P{i}"}}}}"#
        )));
        if let Some(line) = lines.next(Duration::from_secs(1)) {
            let first = json(&line);
            let at = probes
                .iter()
                .position(|p| first["checkpoint"] == p.as_str())
                .unwrap_or_else(|| panic!("the first live line is no probe: {line}"));
            let mut seen = vec![first];
            for probe in &probes[at + 1..] {
                let v = json(&lines.expect(Duration::from_secs(5), "a later probe"));
                assert_eq!(v["checkpoint"], probe.as_str());
                seen.push(v);
            }
            return seen;
        }
    }
    panic!("the live watcher printed none of 10 probes");
}

#[test]
fn watch_all_prints_each_checkpoints_matching_events_in_history_order() {
    let depot = TestDepot::with_history();
    // Returning at all is what --idle-exit promises (how soon is no functional test's concern).
    let run = depot.run(&["watch", "--all", "--json", "--idle-exit", "1", "accounts/*"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");

    // Expected: the checkpoints touching accounts/*, oldest first, each with exactly its
    // accounts/* events as `retro events --json` prints them.
    let log = history(&depot);
    let mut by_checkpoint: HashMap<String, Vec<Value>> = HashMap::new();
    for event in json_lines(&depot.ok(&["events", "--json", "accounts/*"])) {
        by_checkpoint
            .entry(event["checkpoint"].as_str().unwrap().to_owned())
            .or_default()
            .push(event);
    }
    let expected: Vec<&Value> = log
        .iter()
        .filter(|c| {
            c["partitions"]
                .as_object()
                .unwrap()
                .keys()
                .any(|p| p.starts_with("accounts/"))
        })
        .collect();
    assert!(expected.len() >= 5 && expected.len() < log.len(), "{log:?}");

    let lines = json_lines(&run.stdout);
    assert_eq!(
        ids(&lines),
        expected
            .iter()
            .map(|c| c["checkpoint"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        "the accounts/* checkpoints, oldest first"
    );
    for (line, checkpoint) in lines.iter().zip(&expected) {
        let id = checkpoint["checkpoint"].as_str().unwrap();
        assert_eq!(line["type"], "checkpoint");
        assert_eq!(line["parent"], checkpoint["parents"][0]);
        assert_eq!(line["date"], checkpoint["date"]);
        assert_eq!(line["session"], checkpoint["session"]);
        let events = line["events"].as_array().unwrap();
        assert_eq!(events, &by_checkpoint[id], "the events of {id}");
        assert!(events
            .iter()
            .all(|e| e["partition"].as_str().unwrap().starts_with("accounts/")));
    }
    // The opening checkpoints also wrote registry/accounts: those events are left out, the rest
    // of the checkpoint is not split across lines.
    let opening = &lines[0];
    assert_eq!(opening["events"].as_array().unwrap().len(), 1, "{opening}");
    let transfer = lines
        .iter()
        .find(|l| l["events"][0]["name"] == "TransferSent")
        .expect("the transfer checkpoint");
    assert_eq!(
        transfer["events"].as_array().unwrap().len(),
        2,
        "{transfer}"
    );

    // The text form: one header line per checkpoint, one indented line per event.
    let text = depot.ok(&["watch", "--all", "--idle-exit", "0.2", "accounts/bob"]);
    let bob: Vec<&str> = text.lines().collect();
    assert!(bob[0].len() > 12 && !bob[0].starts_with(' '), "{text}");
    assert!(
        bob.iter()
            .any(|l| l.starts_with("  accounts/bob#1 AccountOpened {")),
        "{text}"
    );
    assert!(bob
        .iter()
        .filter(|l| l.starts_with("  "))
        .all(|l| l.starts_with("  accounts/bob#")));
}

#[test]
fn watch_live_prints_new_checkpoints_as_they_land_in_order() {
    let depot = TestDepot::with_history();
    let old = ids(&history(&depot));
    let (mut proc, lines) = spawn_watch(&depot, &["--json"], false);
    let probes = sync_live(&depot, &lines);
    let mut previous = probes.last().unwrap()["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();

    let commands = [
        (
            r#"{"path":"accounts/alice","name":"deposit","params":{"amount":7}}"#,
            "Deposited",
        ),
        (
            r#"{"path":"accounts/carol","name":"open","params":{"owner":"Carol"}}"#,
            "AccountOpened",
        ),
        (
            r#"{"path":"accounts/alice","name":"transfer","params":{"to":"accounts/carol","amount":5}}"#,
            "TransferSent",
        ),
        (
            r#"{"path":"accounts/carol","name":"withdraw","params":{"amount":2}}"#,
            "Withdrawn",
        ),
    ];
    for (command, event) in commands {
        let id = depot.apply(command);
        // The deadline only bounds a failure; delivery latency is measured by `make bench`
        // (delivery_latency_p50/p99 in docs/benchmarks.md).
        let line = json(&lines.expect(Duration::from_secs(20), command));
        assert_eq!(line["type"], "checkpoint");
        assert_eq!(line["checkpoint"], id.as_str(), "{line}");
        assert_eq!(line["parent"], previous.as_str(), "{line}");
        assert_eq!(line["session"], "cli");
        assert_eq!(line["events"][0]["name"], event, "{line}");
        let path = json(command)["path"].clone();
        assert_eq!(line["events"][0]["partition"], path);
        previous = id;
    }
    // The transfer reached both accounts in one line; nothing of the old history came.
    let shown = depot.ok(&["show", "--json", "HEAD~1"]);
    assert_eq!(json(&shown)["events"].as_array().unwrap().len(), 2);
    assert!(probes
        .iter()
        .all(|p| !old.contains(&p["checkpoint"].as_str().unwrap().to_owned())));
    assert_eq!(
        lines.next(Duration::from_millis(300)),
        None,
        "an extra line"
    );
    proc.kill();
}

#[test]
fn watch_consumer_survives_sigkill_delivering_every_checkpoint_in_order() {
    let depot = TestDepot::with_bulk(100);
    let all = ids(&history(&depot));
    assert_eq!(all.len(), 100);
    let index: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();

    let consumer_ref = || {
        depot
            .refs()
            .into_iter()
            .find(|(name, _)| name == "refs/consumers/c1")
            .map(|(_, target)| target)
    };

    // Runs killed mid-stream: read 30 lines, SIGKILL, then collect what the pipe still held.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for _ in 0..2 {
        let (mut proc, lines) = spawn_watch(&depot, &["--consumer", "c1", "--json"], true);
        let mut got = Vec::new();
        for _ in 0..30 {
            got.push(lines.expect(Duration::from_secs(5), "a consumer line"));
        }
        proc.kill();
        got.extend(lines.rest(Duration::from_secs(5)));
        let position = consumer_ref().expect("refs/consumers/c1 after a kill");
        assert_ne!(position, all[99], "the kill was not mid-stream");
        runs.push(
            got.iter()
                .map(|l| index[json(l)["checkpoint"].as_str().unwrap()])
                .collect(),
        );
    }
    // Restarts until one finds nothing left.
    for attempt in 0.. {
        assert!(attempt < 5, "the consumer never went idle");
        let run = depot.run(&["watch", "--consumer", "c1", "--json", "--idle-exit", "1"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let got: Vec<usize> = json_lines(&run.stdout)
            .iter()
            .map(|l| index[l["checkpoint"].as_str().unwrap()])
            .collect();
        if got.is_empty() {
            break;
        }
        runs.push(got);
    }

    // Each run is consecutive; each restart resumes at most one checkpoint back (the one printed
    // but not acknowledged when killed) and never skips one; together they cover everything.
    assert_eq!(runs[0][0], 0, "{runs:?}");
    let mut redelivered = 0;
    for (k, run) in runs.iter().enumerate() {
        assert!(
            run.windows(2).all(|w| w[1] == w[0] + 1),
            "run {k} out of order: {run:?}"
        );
        if k > 0 {
            let last = *runs[k - 1].last().unwrap();
            assert!(
                run[0] <= last + 1,
                "run {k} skipped from {last} to {}",
                run[0]
            );
            assert!(
                run[0] + 1 >= last,
                "run {k} went back from {last} to {}",
                run[0]
            );
            redelivered += last + 1 - run[0];
        }
    }
    assert_eq!(*runs.last().unwrap().last().unwrap(), 99, "{runs:?}");
    assert!(runs.len() >= 3, "{runs:?}");
    eprintln!(
        "consumer runs: {:?}; redelivered {redelivered}",
        runs.iter()
            .map(|r| (r[0], *r.last().unwrap()))
            .collect::<Vec<_>>()
    );
    assert_eq!(consumer_ref().as_deref(), Some(all[99].as_str()));
    assert_eq!(depot.head().as_deref(), Some(all[99].as_str()));
}

#[test]
fn watch_reports_a_non_fast_forward_move_then_resumes_after_the_base() {
    let depot = TestDepot::with_history();
    let (mut proc, lines) = spawn_watch(&depot, &["--json"], false);
    let probes = sync_live(&depot, &lines);
    let from = probes.last().unwrap()["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = json(&depot.ok(&["show", "--json", "HEAD~3"]))["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();

    depot.ok(&["update-ref", "refs/heads/master", "HEAD~3"]);
    assert_eq!(depot.head().as_deref(), Some(base.as_str()));
    let id = depot.apply(r#"{"path":"accounts/dave","name":"open","params":{"owner":"Dave"}}"#);

    let nff = json(&lines.expect(Duration::from_secs(5), "a non_fast_forward line"));
    assert_eq!(nff["type"], "non_fast_forward", "{nff}");
    assert_eq!(nff["from"], from.as_str());
    assert_eq!(nff["base"], base.as_str());
    // The watcher may see the move alone or together with the apply on top of it.
    assert!(
        nff["head"] == base.as_str() || nff["head"] == id.as_str(),
        "{nff}"
    );
    let next = json(&lines.expect(Duration::from_secs(5), "the checkpoint after the move"));
    assert_eq!(next["type"], "checkpoint");
    assert_eq!(next["checkpoint"], id.as_str());
    assert_eq!(next["parent"], base.as_str());
    assert_eq!(
        lines.next(Duration::from_millis(300)),
        None,
        "an extra line"
    );
    proc.kill();
}

#[test]
fn watch_ends_quietly_with_exit_0_when_stdout_closes() {
    let depot = TestDepot::with_bulk(100);
    // Mid-stream: the reader goes after one line while the writer is blocked on a full pipe.
    // Idle: a live watcher with nothing (more) to print, plain and as a consumer. It starts after
    // the head taken here, so the one command applied once it runs is printed whenever it
    // subscribes: that line says it is up, and it is idle once it has printed it.
    let head = depot.head().unwrap();
    let cases: [(&[&str], bool); 3] = [
        (&["--all", "--json"], true),
        (&["--json", "--since", &head], false),
        (&["--consumer", "quiet", "--since", &head], false),
    ];
    for (n, (args, mid_stream)) in cases.into_iter().enumerate() {
        let mut full = vec!["watch"];
        full.extend_from_slice(args);
        let mut cmd = std_cmd(&depot, &full);
        let (reader, writer) = small_pipe();
        cmd.stdout(writer).stderr(Stdio::piped());
        let mut proc = Proc(Some(cmd.spawn().unwrap()));
        drop(cmd);
        let mut stderr = proc.child().stderr.take().unwrap();
        if !mid_stream {
            depot.apply(&format!(
                r#"{{"path":"accounts/idle{n}","name":"open","params":{{"owner":"I{n}"}}}}"#
            ));
        }
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // A whole line: JSON, or the consumer's plain form.
        assert!(line.ends_with('\n'), "{line:?}");
        assert!(
            !mid_stream || line.starts_with("{\"type\":\"checkpoint\""),
            "{line}"
        );
        drop(reader);
        let status = proc.wait_for(
            Duration::from_secs(20),
            &format!("watch {args:?} with stdout closed"),
        );
        let mut err = String::new();
        stderr.read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(0), "watch {args:?}: {err}");
        assert_eq!(err, "", "watch {args:?} was not quiet");
    }
}

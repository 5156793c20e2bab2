//! `retro apply --batch`: a stream of commands on stdin, one answer line each on stdout, driven
//! in lock-step over pipes (each answer read before the next command is written).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{assert_error, assert_no_panic, json, TestDepot};

/// How long a test waits for an answer before it calls the stream hung (a net, not a sync).
const HUNG: Duration = Duration::from_secs(120);

const OPEN_ALICE: &str = r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#;
const DEPOSIT_ALICE: &str = r#"{"path":"accounts/alice","name":"deposit","params":{"amount":50}}"#;
const OVERDRAW_ALICE: &str =
    r#"{"path":"accounts/alice","name":"withdraw","params":{"amount":999999}}"#;

/// What the test asks of the thread that reads the stream's stdout.
enum Want {
    /// The next line.
    Line,
    /// Close stdout (the reader goes away).
    Close,
}

/// A running `retro apply --batch`, its stdin, and a thread reading its stdout a line at a time
/// on request (so a hung stream fails the test instead of hanging it).
struct Stream {
    child: Child,
    stdin: Option<ChildStdin>,
    want: Option<mpsc::Sender<Want>>,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(depot: &TestDepot, args: &[&str], env: &[(&str, &str)]) -> Stream {
        let mut cmd = Command::new(crate::common::bin());
        cmd.current_dir(depot.tmp.path())
            .env_remove("RETRO_DEPOT")
            .env_remove("RETRO_SESSION")
            .env_remove("RETRO_MANIFEST")
            .env_remove("RETRO_LOCK_TIMEOUT")
            .env("NO_COLOR", "1")
            .arg("--depot")
            .arg(&depot.dir)
            .args(["apply", "--batch"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("retro apply --batch starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (want, wants) = mpsc::channel();
        let (send, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut read = move || {
                let mut line = String::new();
                match stdout.read_line(&mut line) {
                    Ok(n) if n > 0 => Some(line.trim_end_matches('\n').to_owned()),
                    _ => None,
                }
            };
            loop {
                match wants.recv() {
                    Ok(Want::Line) => match read() {
                        Some(line) => {
                            let _ = send.send(line);
                        }
                        None => return,
                    },
                    Ok(Want::Close) => return,
                    // The test is done: pass on whatever is left, to EOF.
                    Err(_) => {
                        while let Some(line) = read() {
                            let _ = send.send(line);
                        }
                        return;
                    }
                }
            }
        });
        Stream {
            stdin: child.stdin.take(),
            child,
            want: Some(want),
            lines,
            reader: Some(reader),
        }
    }

    /// Writes one line (and flushes it).
    fn send(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next answer line; fails if none comes while stdin is still open.
    fn answer(&mut self) -> String {
        self.want
            .as_ref()
            .expect("stdout open")
            .send(Want::Line)
            .unwrap();
        self.lines
            .recv_timeout(HUNG)
            .expect("an answer line while stdin is still open")
    }

    /// Writes a line and reads its answer.
    fn ask(&mut self, line: &str) -> String {
        self.send(line.as_bytes());
        self.answer()
    }

    /// Closes the read end of stdout, as a reader that goes away does.
    fn close_stdout(&mut self) {
        self.want.take().unwrap().send(Want::Close).unwrap();
        self.reader.take().unwrap().join().unwrap();
    }

    /// Closes stdin, waits for the exit; returns the code, the answers not read yet, stderr.
    fn finish(mut self) -> (i32, Vec<String>, String) {
        drop(self.stdin.take());
        drop(self.want.take());
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let rest = self.lines.try_iter().collect();
        assert_no_panic(&stderr);
        (status.code().unwrap_or(-1), rest, stderr)
    }
}

/// The number of checkpoints `retro log` lists (of `rev`, default HEAD).
fn log_count(depot: &TestDepot, rev: Option<&str>) -> usize {
    let mut args = vec!["log", "--oneline"];
    args.extend(rev);
    depot.ok(&args).lines().count()
}

fn error_of(answer: &str) -> (String, u64) {
    let value: Value = json(answer);
    (
        value["error"]["code"].as_str().expect(answer).to_owned(),
        value["line"].as_u64().expect(answer),
    )
}

#[test]
fn batch_answers_each_command_in_lock_step_before_the_next_is_written() {
    let depot = TestDepot::new();
    let mut stream = Stream::start(&depot, &["--json"], &[]);
    let mut applied = Vec::new();
    for command in [OPEN_ALICE, DEPOSIT_ALICE, DEPOSIT_ALICE] {
        let answer = stream.ask(command);
        let body = json(&answer);
        let checkpoint = body["checkpoint"].as_str().expect(&answer).to_owned();
        assert_eq!(body["path"], "accounts/alice", "{answer}");
        assert_eq!(body["parent"].as_str(), applied.last().map(String::as_str));
        applied.push(checkpoint.clone());
        // The answer came while the stream is still open, and its checkpoint is already durable
        // and visible to another process: HEAD is it.
        assert_eq!(depot.head().as_deref(), Some(checkpoint.as_str()));
        assert_eq!(log_count(&depot, None), applied.len());
    }
    let (code, rest, stderr) = stream.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn batch_goes_on_after_bad_and_rejected_lines_numbering_every_input_line() {
    let depot = TestDepot::new();
    let mut too_long = br#"{"path":"accounts/alice","name":"deposit","params":{"pad":""#.to_vec();
    too_long.resize(2 << 20, b'x');
    too_long.extend_from_slice(br#""}}"#);
    let lines: Vec<Vec<u8>> = vec![
        OPEN_ALICE.into(),                                          // 1 ok
        b"".to_vec(),                                               // 2 blank
        OVERDRAW_ALICE.into(),                                      // 3 rejected
        br#"{"path":"accounts/alice","name":"#.to_vec(),            // 4 malformed JSON
        DEPOSIT_ALICE.into(),                                       // 5 ok
        br#"{"path":"accounts/../x","name":"open"}"#.to_vec(),      // 6 bad path
        br#"{"path":"accounts/alice","name":"fly"}"#.to_vec(),      // 7 unknown command
        b"{\"path\":\"accounts/\xff\",\"name\":\"open\"}".to_vec(), // 8 invalid UTF-8
        b" \t\r".to_vec(),                                          // 9 blank
        too_long,                                                   // 10 too long
        br#"{"path":"nowhere/1","name":"open"}"#.to_vec(),          // 11 no such kind
        DEPOSIT_ALICE.into(),                                       // 12 ok
    ];
    let mut stream = Stream::start(&depot, &["--json"], &[]);
    let mut answers = Vec::new();
    for line in &lines {
        stream.send(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            answers.push(stream.answer());
        }
    }
    let (code, rest, stderr) = stream.finish();
    assert!(rest.is_empty(), "{rest:?}");
    // The first failure (line 3) was a rejection: exit 4.
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("7 of 10 command(s) failed; the first on line 3"),
        "{stderr}"
    );
    assert_eq!(answers.len(), 10, "{answers:?}");
    let ok = |i: usize| {
        assert!(
            json(&answers[i])["checkpoint"].is_string(),
            "{}",
            answers[i]
        )
    };
    ok(0);
    assert_eq!(error_of(&answers[1]), ("insufficient_funds".into(), 3));
    assert_eq!(error_of(&answers[2]), ("bad_command".into(), 4));
    ok(3);
    assert_eq!(error_of(&answers[4]), ("bad_command".into(), 6));
    assert_eq!(error_of(&answers[5]), ("unknown_command".into(), 7));
    assert_eq!(error_of(&answers[6]), ("bad_command".into(), 8));
    assert_eq!(error_of(&answers[7]), ("bad_command".into(), 10));
    assert!(
        json(&answers[7])["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 1048576"),
        "{}",
        answers[7]
    );
    assert_eq!(error_of(&answers[8]), ("unknown_command".into(), 11));
    ok(9);
    for answer in &answers[1..3] {
        let keys: Vec<String> = json(answer).as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["error", "line"], "{answer}");
    }
    // Exactly the three applied commands are checkpoints; the rejection is recorded as failed.
    assert_eq!(log_count(&depot, None), 3);
    let failed = depot.ok(&["failed", "--json"]);
    assert_eq!(failed.lines().count(), 1, "{failed}");
}

#[test]
fn batch_without_json_answers_in_one_line_human_forms_and_exits_with_the_first_failures_class() {
    let depot = TestDepot::new();
    let input = format!("not json\n{OPEN_ALICE}\n\n{OVERDRAW_ALICE}\n");
    let run = depot.run_stdin(&["apply", "--batch"], &input);
    // The first failure is an invalid line: exit 1, though a rejection (4) follows.
    assert_error(&run, 1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[0].starts_with("error 1 bad_command: command is not valid JSON"),
        "{}",
        lines[0]
    );
    let head = depot.head().unwrap();
    assert_eq!(lines[1], format!("ok {head}"));
    assert!(
        lines[2].starts_with("error 4 insufficient_funds: command rejected"),
        "{}",
        lines[2]
    );
    assert_eq!(log_count(&depot, None), 1);
}

#[test]
fn batch_on_empty_or_blank_stdin_prints_nothing_and_exits_0() {
    let depot = TestDepot::new();
    for input in ["", "\n", "\n  \n\t\n"] {
        let run = depot.run_stdin(&["apply", "--batch", "--json"], input);
        assert_eq!(run.code, 0, "{input:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{input:?}");
        assert_no_panic(&run.stderr);
    }
    assert!(depot.head().is_none());
}

#[test]
fn batch_refuses_a_command_argument_as_a_usage_error_and_apply_still_needs_one() {
    let depot = TestDepot::new();
    for args in [
        vec!["apply", "--batch", OPEN_ALICE],
        vec!["apply", "--batch", "-"],
        vec!["apply"],
    ] {
        let run = depot.usage_unchanged(&args);
        assert!(
            run.stderr.contains("--batch") || run.stderr.contains("<COMMAND>"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(depot.head().is_none());
}

#[test]
fn batch_ends_cleanly_when_the_reader_closes_stdout() {
    let depot = TestDepot::new();
    let mut stream = Stream::start(&depot, &["--json"], &[]);
    let first = stream.ask(OVERDRAW_ALICE);
    assert_eq!(error_of(&first), ("not_open".into(), 1));
    // The reader goes away: the next answer meets EPIPE.
    stream.close_stdout();
    stream.send(OPEN_ALICE.as_bytes());
    // Not read: the stream stopped at the broken pipe (this write may itself meet a closed pipe).
    let _ = stream
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{DEPOSIT_ALICE}\n").as_bytes());
    let (code, _, stderr) = stream.finish();
    // The stream ended as at EOF, with the first failure's code (4), no panic.
    assert_eq!(code, 4, "{stderr}");
    // The command whose answer could not be written was applied; the next was never read.
    assert_eq!(log_count(&depot, None), 1);
}

#[test]
fn batch_with_a_depot_locked_mid_stream_answers_unavailable_and_goes_on() {
    let depot = TestDepot::new();
    let mut stream = Stream::start(&depot, &["--json"], &[("RETRO_LOCK_TIMEOUT", "0.2")]);
    assert!(json(&stream.ask(OPEN_ALICE))["checkpoint"].is_string());
    // Another process takes the depot lock, and says so once it holds it.
    let mut holder = Command::new("flock")
        .arg(depot.dir.join("lock"))
        .args(["sh", "-c", "echo locked; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock(1) runs");
    let mut said = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said, "locked\n");
    let answer = stream.ask(DEPOSIT_ALICE);
    assert_eq!(error_of(&answer), ("unavailable".into(), 2), "{answer}");
    // The lock is released; the stream goes on.
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert!(json(&stream.ask(DEPOSIT_ALICE))["checkpoint"].is_string());
    let (code, _, stderr) = stream.finish();
    assert_eq!(code, 6, "{stderr}");
    assert_eq!(log_count(&depot, None), 2);
}

#[test]
fn batch_takes_session_ref_and_manifest_like_apply() {
    let depot = TestDepot::new();
    let session = depot.ok(&["session", "start"]).trim().to_owned();
    let manifest = crate::common::manifest();
    let mut stream = Stream::start(
        &depot,
        &[
            "--session",
            &session,
            "--ref",
            "refs/heads/side",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &[],
    );
    let note = |n: u32| format!(r#"{{"path":"notes/{n}","name":"add","params":{{"text":"hi"}}}}"#);
    for n in 1..=2 {
        let answer = stream.ask(&note(n));
        assert!(answer.starts_with("ok sha256:"), "{answer}");
    }
    let (code, _, stderr) = stream.finish();
    assert_eq!(code, 0, "{stderr}");
    // Two checkpoints on the new side branch; HEAD keeps only the session's start.
    assert_eq!(log_count(&depot, Some("side")), 2);
    assert_eq!(log_count(&depot, None), 1);
    let shown = depot.ok(&["show", "--json", "side"]);
    assert!(shown.contains(&session), "{shown}");
}

#[test]
fn batch_with_a_bad_lock_timeout_fails_before_reading() {
    let depot = TestDepot::new();
    let run = crate::common::run(
        depot
            .cmd()
            .env("RETRO_LOCK_TIMEOUT", "soon")
            .args(["apply", "--batch"])
            .write_stdin(OPEN_ALICE),
    );
    assert_error(&run, 1);
    assert!(run.stderr.contains("RETRO_LOCK_TIMEOUT"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(depot.head().is_none());
}

#[test]
fn batch_answers_a_bad_session_id_on_every_line_as_invalid() {
    let depot = TestDepot::new();
    let run = depot.run_stdin(
        &[
            "apply",
            "--batch",
            "--json",
            "--session",
            "no such session!",
        ],
        &format!("{OPEN_ALICE}\n"),
    );
    assert_error(&run, 1);
    assert_eq!(error_of(run.stdout.trim()), ("bad_command".into(), 1));
}

#[test]
fn batch_answers_nothing_written_and_handler_failures_and_goes_on() {
    let depot = TestDepot::new();
    let manifest = depot.tmp.path().join("manifest.json");
    std::fs::write(
        &manifest,
        r#"{"aggregates":{"k":{"commands":{
            "none":{"exec":["sh","-c","cat >/dev/null; echo '{\"events\":{}}'"]},
            "crash":{"exec":["sh","-c","cat >/dev/null; exit 3"]},
            "one":{"exec":["sh","-c","cat >/dev/null; echo '{\"events\":{\"k/1\":[{\"name\":\"One\"}]}}'"]}}}}}"#,
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let input = [
        r#"{"path":"k/1","name":"none"}"#,
        r#"{"path":"k/1","name":"crash"}"#,
        r#"{"path":"k/1","name":"one"}"#,
    ]
    .join("\n");
    let run = depot.run_stdin(&["apply", "--batch", "--json", "--manifest", m], &input);
    // Nothing written is not a failure; the handler failure (line 2) is: exit 4.
    assert_error(&run, 4);
    let answers: Vec<Value> = run.stdout.lines().map(json).collect();
    assert_eq!(answers.len(), 3, "{}", run.stdout);
    assert_eq!(answers[0]["written"], false, "{}", answers[0]);
    assert_eq!(answers[0]["head"], Value::Null);
    assert_eq!(
        error_of(&answers[1].to_string()),
        ("handler_failed".into(), 2)
    );
    assert!(answers[2]["checkpoint"].is_string(), "{}", answers[2]);
    assert_eq!(log_count(&depot, None), 1);

    let run = depot.run_stdin(&["apply", "--batch", "--manifest", m], &input);
    assert_error(&run, 4);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(lines[0], "nothing-written k/1");
    assert!(
        lines[1].starts_with("error 2 handler_failed: "),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], format!("ok {}", depot.head().unwrap()));
}

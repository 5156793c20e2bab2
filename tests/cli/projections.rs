//! `retro project run | status | rebuild | retry` and `retro serve --projections`, end to end with
//! the fixture projections of `fixtures/projections/` (a notes log that can be made to fail,
//! crash or hang, and a process manager).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{assert_error, fixtures, run, Run, TestDepot};
use crate::watch::{std_cmd, Lines, Proc};

fn manifest() -> PathBuf {
    fixtures().join("projections/manifest.json")
}

/// `retro --depot D ARGS --manifest M` with the handlers' output in the test's directory.
fn retro(depot: &TestDepot, args: &[&str]) -> Run {
    let manifest = manifest();
    let mut cmd = depot.cmd();
    cmd.env("PROJECTION_OUT", depot.tmp.path())
        .args(args)
        .arg("--manifest")
        .arg(&manifest);
    run(&mut cmd)
}

fn ok(depot: &TestDepot, args: &[&str]) -> Run {
    let run = retro(depot, args);
    assert_eq!(
        run.code, 0,
        "retro {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// Adds a note; returns its checkpoint.
fn note(depot: &TestDepot, id: &str, text: &str) -> String {
    let command =
        serde_json::json!({"path": format!("notes/{id}"), "name": "add", "params": {"text": text}});
    ok(depot, &["apply", &command.to_string()])
        .stdout
        .trim()
        .to_owned()
}

/// The lines of the notes log, as (generation, mode, checkpoint, event, text) for event lines.
fn log_lines(depot: &TestDepot) -> Vec<String> {
    std::fs::read_to_string(depot.tmp.path().join("notes_log.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The checkpoints the handler saw, in order, for generation `generation`.
fn seen(depot: &TestDepot, generation: &str) -> Vec<String> {
    log_lines(depot)
        .iter()
        .filter_map(|line| {
            let parts: Vec<&str> = line.splitn(6, ' ').collect();
            (parts[0] == generation && parts[1] != "switch").then(|| parts[2].to_owned())
        })
        .collect()
}

fn status_json(depot: &TestDepot, name: &str) -> Value {
    let run = ok(depot, &["project", "status", "--json", name]);
    serde_json::from_str(run.stdout.trim()).unwrap()
}

#[test]
fn a_failing_handler_is_retried_then_parked_with_the_failing_event_shown_until_retry() {
    let depot = TestDepot::new();
    let first = note(&depot, "n1", "a");
    let failing = note(&depot, "n1", "fail me");
    let after = note(&depot, "n2", "b");

    let parked = retro(&depot, &["project", "run", "--once", "notes_log"]);
    assert_error(&parked, 4);
    assert!(
        parked.stderr.contains("attempt 1 of 3 failed"),
        "{}",
        parked.stderr
    );
    assert!(
        parked.stderr.contains("attempt 2 of 3 failed"),
        "{}",
        parked.stderr
    );
    assert!(
        parked.stderr.contains("parked after 3 attempt(s)"),
        "{}",
        parked.stderr
    );
    // Three attempts at the failing batch, nothing delivered after it.
    assert_eq!(
        seen(&depot, "1"),
        [
            first.as_str(),
            failing.as_str(),
            failing.as_str(),
            failing.as_str()
        ]
    );

    let status = status_json(&depot, "notes_log");
    assert_eq!(status["live"]["position"], first.as_str());
    assert_eq!(status["live"]["behind"], 2);
    let parked = &status["parked"][0];
    assert_eq!(parked["generation"], 1);
    assert_eq!(parked["checkpoint"], failing.as_str());
    assert_eq!(parked["attempts"], 3);
    assert!(
        parked["error"]
            .as_str()
            .unwrap()
            .contains("cannot project note: fail me"),
        "{parked}"
    );
    assert_eq!(parked["events"][0]["partition"], "notes/n1");
    assert_eq!(parked["events"][0]["version"], 2);
    assert_eq!(parked["events"][0]["name"], "NoteAdded");
    let text = ok(&depot, &["project", "status"]).stdout;
    assert!(
        text.contains("parked: generation 1 at checkpoint"),
        "{text}"
    );
    assert!(text.contains("notes/n1#2 NoteAdded sha256:"), "{text}");

    // Parked is durable: another run delivers nothing until retried.
    assert_error(
        &retro(&depot, &["project", "run", "--once", "notes_log"]),
        4,
    );
    assert_eq!(seen(&depot, "1").len(), 4);

    std::fs::write(depot.tmp.path().join("heal"), "").unwrap();
    let retried = depot.ok(&["project", "retry", "--json", "notes_log"]);
    assert_eq!(
        serde_json::from_str::<Value>(retried.trim()).unwrap()["retried"],
        serde_json::json!([1])
    );
    ok(&depot, &["project", "run", "--once", "notes_log"]);
    assert_eq!(
        seen(&depot, "1"),
        [
            first.as_str(),
            failing.as_str(),
            failing.as_str(),
            failing.as_str(),
            failing.as_str(),
            after.as_str()
        ]
    );
    let status = status_json(&depot, "notes_log");
    assert_eq!(status["live"]["position"], after.as_str());
    assert_eq!(status["live"]["behind"], 0);
    assert_eq!(status["parked"], serde_json::json!([]));
    let again = depot.ok(&["project", "retry", "notes_log"]);
    assert!(again.contains("nothing is parked"), "{again}");
}

#[test]
fn a_handler_that_crashes_is_restarted_for_each_attempt_then_parked() {
    let depot = TestDepot::new();
    note(&depot, "n1", "crash now");
    assert_error(
        &retro(&depot, &["project", "run", "--once", "notes_log"]),
        4,
    );
    let status = status_json(&depot, "notes_log");
    let error = status["parked"][0]["error"].as_str().unwrap();
    assert!(error.contains("closed its standard output"), "{error}");
    assert_eq!(status["parked"][0]["attempts"], 3);
    assert_eq!(status["parked"][0]["events"][0]["partition"], "notes/n1");
    let text = ok(&depot, &["project", "status", "notes_log"]).stdout;
    assert!(text.contains("notes/n1#1 NoteAdded sha256:"), "{text}");
    // Each attempt met a fresh program (the crashed one cannot answer): three lines.
    assert_eq!(seen(&depot, "1").len(), 3);
}

#[test]
fn a_killed_runner_resumes_from_its_ref_with_no_gap_no_reorder_and_only_the_unacked_batch_again() {
    let depot = TestDepot::new();
    let mut checkpoints = Vec::new();
    for (i, text) in ["one", "two", "hang here", "four"].iter().enumerate() {
        checkpoints.push(note(&depot, &format!("n{}", i % 2), text));
    }
    let manifest = manifest();
    let mut cmd = std_cmd(
        &depot,
        &[
            "project",
            "run",
            "notes_log",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    cmd.env("PROJECTION_OUT", depot.tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut runner = Proc(Some(cmd.spawn().unwrap()));
    let _stderr = Lines::new(runner.child().stderr.take().unwrap());
    // The handler writes its pid once it holds the third batch without answering.
    let pid_file = depot.tmp.path().join("hanging.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the handler never reached the third batch"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    runner.kill();
    let handler: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the orphaned handler this test made hang.
    unsafe {
        libc::kill(handler, libc::SIGKILL);
    }
    assert_eq!(seen(&depot, "1"), checkpoints[..3]);
    assert_eq!(
        status_json(&depot, "notes_log")["live"]["position"],
        checkpoints[1].as_str(),
        "the unanswered batch was not acknowledged"
    );

    std::fs::write(depot.tmp.path().join("heal"), "").unwrap();
    ok(&depot, &["project", "run", "--once", "notes_log"]);
    let mut expected = checkpoints[..3].to_vec();
    expected.extend_from_slice(&checkpoints[2..]);
    assert_eq!(seen(&depot, "1"), expected);
}

#[test]
fn rebuild_runs_a_new_generation_from_the_start_and_switches_when_it_has_caught_up() {
    let depot = TestDepot::new();
    let a = note(&depot, "n1", "a");
    let b = note(&depot, "n2", "b");
    ok(&depot, &["project", "run", "--once", "notes_log"]);
    assert_eq!(seen(&depot, "1"), [a.as_str(), b.as_str()]);

    let rebuilt = ok(&depot, &["project", "rebuild", "--json", "notes_log"]);
    assert_eq!(
        serde_json::from_str::<Value>(rebuilt.stdout.trim()).unwrap()["rebuilding"],
        2
    );
    let twice = retro(&depot, &["project", "rebuild", "notes_log"]);
    assert_error(&twice, 3);
    assert!(
        twice.stderr.contains("already rebuilding generation 2"),
        "{}",
        twice.stderr
    );
    let status = status_json(&depot, "notes_log");
    assert_eq!(status["live"]["generation"], 1);
    assert_eq!(status["rebuilding"]["generation"], 2);
    assert_eq!(status["rebuilding"]["position"], Value::Null);
    assert_eq!(status["rebuilding"]["behind"], 2);

    let c = note(&depot, "n1", "c");
    let ran = ok(&depot, &["project", "run", "--once", "notes_log"]);
    assert!(
        ran.stderr.contains("generation 2 caught up and is live"),
        "{}",
        ran.stderr
    );
    // The live generation kept going; the new one replayed everything, not live, then was told.
    assert_eq!(seen(&depot, "1"), [a.as_str(), b.as_str(), c.as_str()]);
    assert_eq!(seen(&depot, "2"), [a.as_str(), b.as_str(), c.as_str()]);
    let lines = log_lines(&depot);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("2 rebuild {a}"))),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "2 switch 1");
    let status = status_json(&depot, "notes_log");
    assert_eq!(status["live"]["generation"], 2);
    assert_eq!(status["live"]["position"], c.as_str());
    assert_eq!(status["rebuilding"], Value::Null);
    let refs = depot.ok(&["refs"]);
    assert!(!refs.contains("refs/projections/notes_log/gen-1"), "{refs}");

    let d = note(&depot, "n2", "d");
    ok(&depot, &["project", "run", "--once", "notes_log"]);
    assert!(log_lines(&depot)
        .last()
        .unwrap()
        .starts_with(&format!("2 live {d}")));
    // The records and positions are ordinary refs and objects: fsck finds nothing wrong.
    depot.ok(&["fsck"]);
}

#[test]
fn a_process_managers_command_is_caused_by_its_event_and_issued_once() {
    let depot = TestDepot::new();
    let ping = note(&depot, "n1", "ping me");
    ok(&depot, &["project", "run", "--once", "reactor"]);
    let head = depot.head().unwrap();
    assert_ne!(head, ping);
    let shown: Value = serde_json::from_str(&depot.ok(&["show", "--json", "HEAD"])).unwrap();
    assert_eq!(shown["message"]["path"], "notes/replies");
    assert_eq!(shown["message"]["params"]["text"], "pong notes/n1");
    assert_eq!(shown["session"], "projection-reactor");
    let events = depot.ok(&["events", "--json", "notes/n1"]);
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    let event_id = event["event"].as_str().unwrap().to_owned();
    assert_eq!(shown["causation-id"], event_id.as_str());
    assert_eq!(shown["correlation-id"], ping.as_str());
    let command_id = shown["command-id"].as_str().unwrap();
    assert!(
        command_id.starts_with("projection:reactor:"),
        "{command_id}"
    );

    // Delivered again (its position removed, as if the first run had crashed before any ack):
    // the command id makes the second issue a replay, not a second checkpoint.
    depot.ok(&["update-ref", "-d", "refs/projections/reactor/gen-1"]);
    ok(&depot, &["project", "run", "--once", "reactor"]);
    assert_eq!(depot.head().unwrap(), head);
}

#[test]
fn bad_names_unknown_projections_and_bad_declarations_are_clear_errors() {
    let depot = TestDepot::new();
    let unknown = retro(&depot, &["project", "run", "--once", "nope"]);
    assert_error(&unknown, 1);
    assert!(
        unknown.stderr.contains("declares no projection 'nope'"),
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains("notes_log, reactor"),
        "{}",
        unknown.stderr
    );
    let bad = retro(&depot, &["project", "status", "bad/name"]);
    assert_error(&bad, 1);
    assert!(
        bad.stderr.contains("must be 1 to 64 characters"),
        "{}",
        bad.stderr
    );
    assert_error(&retro(&depot, &["project", "rebuild", "nope"]), 1);

    let dir = depot.tmp.path();
    for (manifest, says) in [
        (
            r#"{"aggregates":{},"projections":{"p":{"partitions":[],"exec":["true"]}}}"#,
            "names no partition glob",
        ),
        (
            r#"{"aggregates":{},"projections":{"p":{"partitions":["a/*"],"exec":[]}}}"#,
            "\"exec\" is empty",
        ),
        (
            r#"{"aggregates":{},"projections":{"p q":{"partitions":["a/*"],"exec":["true"]}}}"#,
            "must be 1 to 64",
        ),
        (
            r#"{"aggregates":{},"projections":{"p":{"partitions":["a/*"],"exec":["true"],"retry":{"attempts":0}}}}"#,
            "retry.attempts",
        ),
        (
            r#"{"aggregates":{},"projections":{"p":{"partitions":["a/*"],"exec":["true"],"colour":1}}}"#,
            "unknown field",
        ),
        (
            r#"{"aggregates":{},"projections":{"p":{"partitions":["a/[","b"],"exec":["true"]}}}"#,
            "invalid",
        ),
    ] {
        let file = dir.join("bad.json");
        std::fs::write(&file, manifest).unwrap();
        let run = run(depot
            .cmd()
            .args(["project", "status", "--manifest"])
            .arg(&file));
        assert_error(&run, 1);
        assert!(run.stderr.contains(says), "{manifest}: {}", run.stderr);
    }
    let none = run(depot.cmd().args(["project", "run", "--once"]));
    assert_error(&none, 1);
    assert!(
        none.stderr.contains("declares no projection"),
        "{}",
        none.stderr
    );
}

#[test]
fn serve_with_projections_runs_them_and_get_projections_and_metrics_report_them() {
    let depot = TestDepot::new();
    let manifest = manifest();
    let mut cmd = std_cmd(
        &depot,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--projections",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    cmd.env("PROJECTION_OUT", depot.tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut server = Proc(Some(cmd.spawn().unwrap()));
    let stderr = Lines::new(server.child().stderr.take().unwrap());
    let addr = loop {
        let line = stderr.expect(Duration::from_secs(10), "the 'serving' line");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.trim_end_matches('/').to_owned();
        }
    };
    let last = note(&depot, "n1", "hello");
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let response = crate::serve::request(&addr, "GET", "/projections", &[], b"").unwrap();
        assert_eq!(response.status, 200);
        let views: Value = serde_json::from_slice(&response.body).unwrap();
        let log = views
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "notes_log")
            .cloned();
        if let Some(log) = log.filter(|l| l["live"]["position"] == last.as_str()) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "notes_log never reached {last}: {views}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(view["live"]["behind"], 0);
    assert_eq!(view["partitions"], serde_json::json!(["notes/*"]));
    assert_eq!(seen(&depot, "1"), [last.as_str()]);
    let metrics = crate::serve::request(&addr, "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"retro_projection_lag_checkpoints{projection="notes_log"} 0"#),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == r#"retro_projection_parked{projection="notes_log"} 0"#),
        "{text}"
    );
    // SIGTERM stops the runners with the server.
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(server.pid(), libc::SIGTERM);
    }
    let status = server.child().wait().unwrap();
    assert!(status.success(), "{status:?}");
}

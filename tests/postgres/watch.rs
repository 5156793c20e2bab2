//! `retro watch` on a PostgreSQL depot is woken by `LISTEN/NOTIFY` when another process applies.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{command, fresh_url, ok, retro};

#[test]
fn a_watcher_in_another_process_sees_an_apply_quickly() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = fresh_url();
    ok(w, &["init", &url]);
    ok(
        w,
        &[
            "--depot",
            &url,
            "apply",
            &command("accounts/a", "open", r#"{"owner":"A"}"#),
        ],
    );

    let mut watcher = retro(
        w,
        &[
            "--depot",
            &url,
            "watch",
            "--json",
            "--idle-exit",
            "20",
            "accounts/*",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send((Instant::now(), line));
        }
    });
    // Let it subscribe (it starts at the current head), then apply from another process.
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    let id = ok(
        w,
        &[
            "--depot",
            &url,
            "apply",
            &command("accounts/a", "deposit", r#"{"amount":2}"#),
        ],
    );
    let applied = Instant::now();
    let (got, line) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the watcher printed the checkpoint");
    let _ = watcher.kill();
    let _ = watcher.wait();
    let delivery: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(delivery["checkpoint"].as_str(), Some(id.trim()), "{line}");
    assert!(got >= sent);
    // LISTEN/NOTIFY wakes it at once; the bound is loose because other tests of this binary load
    // both cores meanwhile (the benchmark measures the latency: docs/benchmarks.md).
    assert!(
        got.duration_since(applied) < Duration::from_secs(2),
        "delivered {:?} after the apply returned",
        got.duration_since(applied)
    );
}

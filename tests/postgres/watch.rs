//! `retro watch` on a PostgreSQL depot delivers what another process applies (woken by
//! `LISTEN/NOTIFY`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{command, fresh_url, ok, retro};

#[test]
fn a_watcher_in_another_process_sees_applies() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = fresh_url();
    ok(w, &["init", &url]);
    let opened = ok(
        w,
        &[
            "--depot",
            &url,
            "apply",
            &command("accounts/a", "open", r#"{"owner":"A"}"#),
        ],
    );

    // From the checkpoint just made: whatever lands after it is delivered, however soon the
    // watcher subscribes, so nothing has to wait for it to start.
    let mut watcher = retro(
        w,
        &[
            "--depot",
            &url,
            "watch",
            "--json",
            "--idle-exit",
            "20",
            "--since",
            opened.trim(),
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
            let _ = tx.send(line);
        }
    });
    let deposit = |amount: u32| {
        ok(
            w,
            &[
                "--depot",
                &url,
                "apply",
                &command(
                    "accounts/a",
                    "deposit",
                    &format!(r#"{{"amount":{amount}}}"#),
                ),
            ],
        )
    };
    // The first deposit's line says the watcher is running; the second deposit lands while it
    // is subscribed, so it is delivered live (woken by LISTEN/NOTIFY). How fast is the
    // benchmark's concern (postgres_bench's delivery latency, docs/benchmarks.md), not this test's.
    for amount in [2, 3] {
        let id = deposit(amount);
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the watcher printed the checkpoint");
        let delivery: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(delivery["checkpoint"].as_str(), Some(id.trim()), "{line}");
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
}

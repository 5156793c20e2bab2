//! PostgreSQL killed (immediate shutdown, as in a crash) in the middle of a write loop: writers get
//! clear errors while it is down, carry on after it restarts, and nothing they were told was
//! committed is lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{command, json_lines, ok, run};

#[test]
fn killing_postgres_mid_write_loses_nothing_acknowledged() {
    let server = Arc::new(pgtest::PgServer::start());
    let url = server.create_database();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_path_buf();
    ok(&w, &["init", &url]);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let counter = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (w, url, stop, acked, errors, counter) = (
                w.clone(),
                url.clone(),
                stop.clone(),
                acked.clone(),
                errors.clone(),
                counter.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let payload =
                        command(&format!("accounts/w{t}-{n}"), "open", r#"{"owner":"W"}"#);
                    let out = run(&w, &["--depot", &url, "apply", &payload]);
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    assert!(!stderr.contains("panicked"), "{stderr}");
                    match out.status.code() {
                        Some(0) => acked
                            .lock()
                            .unwrap()
                            .push(String::from_utf8(out.stdout).unwrap().trim().to_owned()),
                        _ => errors.lock().unwrap().push(stderr),
                    }
                }
            })
        })
        .collect();

    let wait_for_acks = |n: usize| {
        benchkit::wait_until(
            &format!("{n} acknowledged applies"),
            Duration::from_secs(120),
            || acked.lock().unwrap().len() >= n,
        )
        .unwrap();
    };
    for round in 1..=3 {
        wait_for_acks(round * 20);
        let failed = errors.lock().unwrap().len();
        server.kill();
        // While it is down, writers fail with a clear error: wait for one to, then restart.
        benchkit::wait_until(
            "a writer failing while PostgreSQL is down",
            Duration::from_secs(120),
            || errors.lock().unwrap().len() > failed,
        )
        .unwrap();
        server.restart();
    }
    wait_for_acks(80);
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }

    let errors = errors.lock().unwrap();
    assert!(
        !errors.is_empty(),
        "the writers noticed the server going away"
    );
    for error in errors.iter() {
        assert!(
            error.starts_with("retro: error:") && error.contains("PostgreSQL"),
            "a clear error naming PostgreSQL: {error}"
        );
    }
    let log = json_lines(&ok(&w, &["--depot", &url, "log", "--json"]));
    let history: HashSet<String> = log
        .iter()
        .map(|e| e["checkpoint"].as_str().unwrap().to_owned())
        .collect();
    for id in acked.lock().unwrap().iter() {
        assert!(
            history.contains(id),
            "acknowledged {id} survived the crashes"
        );
    }
    let fsck = ok(&w, &["--depot", &url, "fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}

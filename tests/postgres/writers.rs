//! 8 writer processes (standing in for application servers) on one PostgreSQL depot, all on one
//! shared account, each retrying when its command loses the race: no lost update, one linear
//! history, fsck clean.

use std::collections::HashSet;

use crate::common::{command, fresh_url, json_lines, ok, run};

const WRITERS: usize = 8;
const DEPOSITS: usize = 15;

#[test]
fn eight_writer_processes_lose_no_update() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_path_buf();
    let url = fresh_url();
    ok(&w, &["init", &url]);
    ok(
        &w,
        &[
            "--depot",
            &url,
            "apply",
            &command("accounts/shared", "open", r#"{"owner":"All"}"#),
        ],
    );

    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (w, url) = (w.clone(), url.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut conflicts = 0;
                while acked.len() < DEPOSITS {
                    let payload = command(
                        "accounts/shared",
                        "deposit",
                        &format!(r#"{{"amount":1,"writer":{t},"n":{}}}"#, acked.len()),
                    );
                    let session = format!("w{t}");
                    let out = run(
                        &w,
                        &["--depot", &url, "apply", "--session", &session, &payload],
                    );
                    match out.status.code() {
                        Some(0) => {
                            acked.push(String::from_utf8(out.stdout).unwrap().trim().to_owned())
                        }
                        Some(3) => conflicts += 1,
                        other => panic!(
                            "writer {t}: exit {other:?}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ),
                    }
                }
                (acked, conflicts)
            })
        })
        .collect();
    let mut acked = HashSet::new();
    for writer in writers {
        let (ids, _conflicts) = writer.join().unwrap();
        acked.extend(ids);
    }
    assert_eq!(
        acked.len(),
        WRITERS * DEPOSITS,
        "every apply made its own checkpoint"
    );

    let log = json_lines(&ok(&w, &["--depot", &url, "log", "--json"]));
    assert_eq!(
        log.len(),
        WRITERS * DEPOSITS + 1,
        "one linear chain holds every checkpoint"
    );
    for entry in &log {
        let parents = entry["parents"].as_array().map_or(0, Vec::len);
        assert!(parents <= 1, "a linear history: {entry}");
    }
    let on_chain: HashSet<String> = log
        .iter()
        .map(|e| e["checkpoint"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        acked.is_subset(&on_chain),
        "every acknowledged apply is in history"
    );

    let events = json_lines(&ok(
        &w,
        &["--depot", &url, "events", "accounts/shared", "--json"],
    ));
    let deposits = events.iter().filter(|e| e["name"] == "Deposited").count();
    assert_eq!(deposits, WRITERS * DEPOSITS, "no lost update");
    let fsck = ok(&w, &["--depot", &url, "fsck"]);
    assert!(fsck.contains("no problems"), "{fsck}");
}

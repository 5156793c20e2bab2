//! `retro bisect run`: halving the first-parent line from good to bad with a check command that
//! reads the depot as of `RETRO_REV` (`retro events --at`), skips (125), crashes, and the errors
//! for revisions that do not exist, good not an ancestor of bad, and a CMD that cannot start.
//! Also `retro events --at` and `retro partitions --at`.

use std::fs;

use crate::common::{bin, TestDepot};

/// Alice opens, then deposits nine times: her partition holds 1..=10 events along the line.
fn deposits() -> (TestDepot, Vec<String>) {
    let depot = TestDepot::new();
    let mut ids =
        vec![depot.apply(r#"{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}"#)];
    for amount in 1..=9 {
        ids.push(depot.apply(&format!(
            r#"{{"path":"accounts/alice","name":"deposit","params":{{"amount":{amount}}}}}"#
        )));
    }
    (depot, ids)
}

/// A check script: good while alice has fewer than 5 events; `extra` runs first (with `$n` set).
fn check(depot: &TestDepot, extra: &str) -> String {
    let script = depot.tmp.path().join("check.sh");
    fs::write(
        &script,
        format!(
            "echo \"$RETRO_REV\" >> \"$RUNS\"\nn=$(\"$RETRO_BIN\" events --at \"$RETRO_REV\" accounts/alice | wc -l)\n{extra}\n[ \"$n\" -lt 5 ]\n"
        ),
    )
    .unwrap();
    script.to_str().unwrap().to_owned()
}

fn bisect(depot: &TestDepot, script: &str, good: &str, bad: &str) -> crate::common::Run {
    let runs = depot.tmp.path().join("runs.txt");
    let _ = fs::remove_file(&runs);
    crate::common::run(
        depot
            .cmd()
            .env("RETRO_BIN", bin())
            .env("RUNS", &runs)
            .args([
                "bisect", "run", "--good", good, "--bad", bad, "--", "sh", script,
            ]),
    )
}

fn runs(depot: &TestDepot) -> Vec<String> {
    fs::read_to_string(depot.tmp.path().join("runs.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bisect_finds_the_first_bad_checkpoint_in_log_n_runs() {
    let (depot, ids) = deposits();
    let script = check(&depot, "");
    let run = bisect(&depot, &script, "HEAD~9", "HEAD");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // The fifth event is the fourth deposit: ids[4].
    assert!(
        run.stdout
            .contains(&format!("{} is the first bad checkpoint", ids[4])),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(r#""amount":4"#), "{}", run.stdout);
    let runs = runs(&depot);
    assert!(runs.len() <= 4, "{runs:?}");
    assert!(runs
        .iter()
        .all(|r| r.starts_with("sha256:") && r.len() == 71));
    assert!(run.stdout.contains("step 1: "), "{}", run.stdout);
}

#[test]
fn skipped_and_crashing_checks_are_handled_as_git_does() {
    let (depot, ids) = deposits();
    // Skipping a checkpoint far from the answer still finds it.
    let script = check(&depot, "[ \"$n\" -eq 7 ] && exit 125");
    let run = bisect(&depot, &script, "HEAD~9", "HEAD");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{} is the first bad", ids[4])),
        "{}",
        run.stdout
    );
    // A check killed by a signal counts as bad.
    let script = check(&depot, "[ \"$n\" -ge 5 ] && kill -9 $$");
    let run = bisect(&depot, &script, "HEAD~9", "HEAD");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("killed by signal 9"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{} is the first bad", ids[4])),
        "{}",
        run.stdout
    );
    // Skipping the checkpoint right before the answer leaves two candidates.
    let script = check(&depot, "[ \"$n\" -eq 4 ] && exit 125");
    let run = bisect(&depot, &script, "HEAD~9", "HEAD");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("only skipped checkpoints are left"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("candidate {}", ids[3])),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("candidate {}", ids[4])),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_revisions_lines_and_commands_are_clear_errors() {
    let (depot, _) = deposits();
    let script = check(&depot, "");
    let run = bisect(&depot, &script, "nope", "HEAD");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--good nope"), "{}", run.stderr);
    let run = bisect(&depot, &script, "HEAD", "HEAD~3");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not an ancestor of --bad"),
        "{}",
        run.stderr
    );
    let run = bisect(&depot, &script, "HEAD", "HEAD");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run = depot.run(&[
        "bisect",
        "run",
        "--good",
        "HEAD~2",
        "--bad",
        "HEAD",
        "--",
        "/nonexistent/check",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("could not start '/nonexistent/check'"),
        "{}",
        run.stderr
    );
    depot.usage(&["bisect", "run", "--good", "HEAD~2", "--bad", "HEAD"]);
}

#[test]
fn events_and_partitions_read_the_depot_as_of_a_checkpoint() {
    let (depot, ids) = deposits();
    let out = depot.ok(&["events", "--at", "HEAD~7", "accounts/*"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("accounts/alice#3 Deposited"),
        "{out}"
    );
    let out = depot.ok(&[
        "events",
        "--at",
        &ids[3],
        "--since",
        &ids[1],
        "--json",
        "accounts/alice",
    ]);
    let versions: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, [3, 4]);
    let out = depot.ok(&["partitions", "--at", "HEAD~8"]);
    assert_eq!(
        out,
        "       2  accounts/alice\n       1  registry/accounts\n"
    );
    // Off HEAD's history (a side branch) the same answers come from a walk.
    depot.ok(&["update-ref", "refs/heads/side", &ids[2]]);
    depot.ok(&[
        "apply",
        "--ref",
        "refs/heads/side",
        r#"{"path":"accounts/alice","name":"deposit","params":{"amount":100}}"#,
    ]);
    let out = depot.ok(&[
        "events",
        "--at",
        "side",
        "--since",
        &ids[1],
        "accounts/alice",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains(r#"accounts/alice#4 Deposited {"amount":100}"#),
        "{out}"
    );
    let out = depot.ok(&["partitions", "--at", "side", "accounts/*"]);
    assert_eq!(out, "       4  accounts/alice\n");
    depot.fails(&["events", "--at", &ids[1], "--since", &ids[3]], 1);
    depot.fails(&["events", "--at", "side", "--since", &ids[5]], 1);
    depot.fails(&["events", "--at", "nope"], 1);
    depot.fails(&["partitions", "--at", "HEAD~10"], 1);
}

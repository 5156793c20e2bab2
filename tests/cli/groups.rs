//! `retro group`: several `retro group run` processes share a group's partitions, one of them is
//! killed with SIGKILL mid-stream, and the survivor takes its slots over at its last
//! acknowledgement: no event lost, none reordered within a partition, a redelivery with the same
//! checkpoint id and event index. Also `retro group status` and the errors.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{json, TestDepot};
use crate::watch::{std_cmd, Lines, Proc};

const SOON: Duration = Duration::from_secs(30);
const ACCOUNTS: usize = 10;

fn spawn_member(depot: &TestDepot, member: &str) -> (Proc, Lines) {
    let mut cmd = std_cmd(
        depot,
        &[
            "group",
            "run",
            "g",
            "accounts/*",
            "--member",
            member,
            "--lease-ms",
            "800",
            "--slots",
            "8",
            "--json",
        ],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    (Proc(Some(child)), Lines::new(stdout))
}

/// `retro apply --batch` fed `commands`, each answered before the next batch goes in.
fn apply_all(depot: &TestDepot, commands: &[String]) {
    let mut input = commands.join("\n");
    input.push('\n');
    let run = depot.run_stdin(&["apply", "--batch", "--json"], &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), commands.len());
}

fn deposits(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            format!(
                r#"{{"path":"accounts/a{}","name":"deposit","params":{{"amount":{}}}}}"#,
                i % ACCOUNTS,
                i + 1
            )
        })
        .collect()
}

/// A member's stream so far: its checkpoint lines' events and its slot changes.
#[derive(Default)]
struct Stream {
    /// (partition, version, checkpoint, index), in delivery order.
    events: Vec<(String, u64, String, u64)>,
    slots: Vec<Value>,
}

impl Stream {
    fn take(&mut self, line: &str) {
        let value = json(line);
        match value["type"].as_str().unwrap() {
            "checkpoint" => {
                for e in value["events"].as_array().unwrap() {
                    assert_eq!(e["checkpoint"], value["checkpoint"]);
                    self.events.push((
                        e["partition"].as_str().unwrap().to_owned(),
                        e["version"].as_u64().unwrap(),
                        e["checkpoint"].as_str().unwrap().to_owned(),
                        e["index"].as_u64().unwrap(),
                    ));
                }
            }
            "slots" => self.slots.push(value),
            other => panic!("unexpected line type {other}: {line}"),
        }
    }

    fn held(&self) -> usize {
        self.slots
            .last()
            .map_or(0, |s| s["held"].as_array().unwrap().len())
    }

    fn per_partition(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (partition, version, _, _) in &self.events {
            out.entry(partition.clone()).or_default().push(*version);
        }
        out
    }
}

/// Reads lines from each member until `done` holds.
fn pump_until(
    members: &mut [(&Lines, &mut Stream)],
    what: &str,
    mut done: impl FnMut(&[(&Lines, &mut Stream)]) -> bool,
) {
    let deadline = Instant::now() + SOON;
    while !done(members) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for (lines, stream) in members.iter_mut() {
            if let Some(line) = lines.next(Duration::from_millis(20)) {
                stream.take(&line);
            }
        }
    }
}

#[test]
fn a_member_killed_mid_stream_loses_nothing_and_its_slots_are_taken_over_in_order() {
    let depot = TestDepot::new();
    let opens: Vec<String> = (0..ACCOUNTS)
        .map(|i| format!(r#"{{"path":"accounts/a{i}","name":"open","params":{{"owner":"o{i}"}}}}"#))
        .collect();
    apply_all(&depot, &opens);
    let (mut proc_a, lines_a) = spawn_member(&depot, "a");
    let mut a = Stream::default();
    pump_until(&mut [(&lines_a, &mut a)], "a alone on 8 slots", |m| {
        m[0].1.held() == 8 && m[0].1.events.len() == ACCOUNTS
    });
    // b joins: a gives up 4 slots at its next batch boundary, b takes them.
    let (_proc_b, lines_b) = spawn_member(&depot, "b");
    let mut b = Stream::default();
    pump_until(
        &mut [(&lines_a, &mut a), (&lines_b, &mut b)],
        "4 slots each",
        |m| m[0].1.held() == 4 && m[1].1.held() == 4,
    );
    let status = json(&depot.ok(&["group", "status", "g", "--json"]));
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["unowned"], 0, "{status}");

    // A live stream; a is killed after it delivered some of it.
    apply_all(&depot, &deposits(0, 60));
    let a_before = a.events.len();
    pump_until(
        &mut [(&lines_a, &mut a), (&lines_b, &mut b)],
        "a delivering deposits",
        |m| m[0].1.events.len() >= a_before + 5,
    );
    proc_a.kill();
    for line in lines_a.rest(SOON) {
        a.take(&line);
    }
    apply_all(&depot, &deposits(60, 100));
    // b takes every slot once a's lease ran out, and delivers everything from a's last acks.
    let total_versions = ACCOUNTS * (1 + 100 / ACCOUNTS);
    pump_until(
        &mut [(&lines_b, &mut b)],
        "b owning all and caught up",
        |m| {
            let stream = &m[0].1;
            let mut union: HashMap<(String, u64), ()> = HashMap::new();
            for (p, v, _, _) in a.events.iter().chain(&stream.events) {
                union.insert((p.clone(), *v), ());
            }
            stream.held() == 8 && union.len() == total_versions
        },
    );
    let took_over = b.slots.last().unwrap();
    assert_eq!(
        took_over["taken"].as_array().unwrap().len(),
        4,
        "{took_over}"
    );

    // Within each member's stream, a partition's versions only go up.
    for stream in [&a, &b] {
        for (partition, versions) in stream.per_partition() {
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{partition}: {versions:?}"
            );
        }
    }
    // For a partition a had, b starts at most one checkpoint back from a's last delivery
    // (printed, never acknowledged) and never after a gap; a redelivery carries the same ids.
    let ids: HashMap<(String, u64), (String, u64)> = a
        .events
        .iter()
        .map(|(p, v, c, i)| ((p.clone(), *v), (c.clone(), *i)))
        .collect();
    let a_parts = a.per_partition();
    let b_parts = b.per_partition();
    for i in 0..ACCOUNTS {
        let partition = format!("accounts/a{i}");
        let from_a = a_parts.get(&partition).cloned().unwrap_or_default();
        let from_b = b_parts.get(&partition).cloned().unwrap_or_default();
        let mut all: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all,
            (1..=11).collect::<Vec<u64>>(),
            "{partition}: a {from_a:?} b {from_b:?}"
        );
        if let (Some(last_a), Some(first_b)) = (from_a.last(), from_b.first()) {
            if first_b <= last_a {
                assert!(
                    last_a - first_b <= 1,
                    "{partition}: a {from_a:?} b {from_b:?}"
                );
            }
        }
    }
    for (p, v, c, i) in &b.events {
        if let Some(seen) = ids.get(&(p.clone(), *v)) {
            assert_eq!(seen, &(c.clone(), *i), "{p}#{v} redelivered with other ids");
        }
    }
    // b acknowledges the checkpoints it skipped when idle: every slot reaches the head.
    benchkit::wait_until("every slot at the head", SOON, || {
        json(&depot.ok(&["group", "status", "g", "--json"]))["behind"] == 0
    })
    .unwrap();
}

#[test]
fn group_status_and_bad_arguments() {
    let depot = TestDepot::new();
    depot.apply(r#"{"path":"accounts/x","name":"open","params":{"owner":"X"}}"#);
    let out = depot.ok(&[
        "group",
        "run",
        "g",
        "accounts/*",
        "--member",
        "m1",
        "--slots",
        "2",
        "--idle-exit",
        "0.2",
        "--json",
    ]);
    let lines: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(lines[0]["type"], "slots");
    assert_eq!(lines[1]["type"], "checkpoint");
    assert_eq!(lines[1]["events"][0]["partition"], "accounts/x");
    assert_eq!(lines[1]["events"][0]["index"], 0);
    // The member left when idle: no members, the slot positions at the head.
    let status = json(&depot.ok(&["group", "status", "g", "--json"]));
    assert_eq!(status["members"].as_array().unwrap().len(), 0);
    assert_eq!(status["behind"], 0);
    assert_eq!(status["slots"].as_array().unwrap().len(), 2);
    let listing = depot.ok(&["group", "status"]);
    assert!(listing.starts_with("g  0 members  2 slots"), "{listing}");
    // Errors: another glob, an unknown group, a bad name, a lease too short.
    // (The group's lock file gets its holder's note; the state is what must not change.)
    let state = std::fs::read(depot.dir.join("groups/g")).unwrap();
    let run = depot.fails(&["group", "run", "g", "other/*", "--idle-exit", "0"], 1);
    assert!(
        run.stderr.contains("created with the glob"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(depot.dir.join("groups/g")).unwrap(), state);
    let run = depot.fails(&["group", "status", "nope"], 1);
    assert!(
        run.stderr.contains("no consumer group 'nope'"),
        "{}",
        run.stderr
    );
    let run = depot.fails_unchanged(&["group", "run", "../x"], 1);
    assert!(
        run.stderr.contains("invalid consumer group name"),
        "{}",
        run.stderr
    );
    let run = depot.fails_unchanged(&["group", "run", "h", "--lease-ms", "5"], 1);
    assert!(run.stderr.contains("too short"), "{}", run.stderr);
}

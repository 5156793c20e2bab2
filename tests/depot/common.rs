//! Helpers shared by the depot tests.

use depot::{Base, CommitRequest, Committed, Depot, Event, EventName, PartitionName};

pub fn p(name: &str) -> PartitionName {
    PartitionName::new(name).unwrap()
}

pub fn ev(name: &str, data: &str) -> Event {
    Event::new(EventName::new(name).unwrap(), data)
}

/// The benchmark workload's command: 2 events on `identity/<n>`, 1 on `session/<s>`.
pub fn workload(n: u64, session: &str) -> Vec<(PartitionName, Event)> {
    vec![
        (
            p(&format!("identity/{n}")),
            ev(
                "IdentityCreated",
                &format!(r#"{{"id":{n},"name":"user-{n}","visible":true}}"#),
            ),
        ),
        (
            p(&format!("identity/{n}")),
            ev(
                "DisplayNameSet",
                &format!(r#"{{"display":"User number {n}"}}"#),
            ),
        ),
        (
            p(&format!("session/{session}")),
            ev("IdentityUsed", &format!(r#"{{"identity":"identity/{n}"}}"#)),
        ),
    ]
}

/// Commits on top of whatever HEAD is, retrying on conflict.
pub fn commit_retrying(
    depot: &Depot,
    events: Vec<(PartitionName, Event)>,
    message: &str,
) -> Committed {
    loop {
        let base = depot.head().unwrap();
        let mut request = CommitRequest::new(base, events.clone(), "s1", message);
        request.base = Base::Expect(base);
        match depot.commit(request) {
            Ok(c) => return c,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
}

/// All files under a directory with their bytes, for "unchanged" assertions.
pub fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                // The derived index and the lock file may be touched by readers.
                if name.starts_with("index.sqlite") || name == "lock" || name == "packs/write.lock"
                {
                    continue;
                }
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A commit of `events` carrying the checkpoint field `command-id: <command_id>`, on top of
/// `HEAD` as it is now, rebasable (as the engine commits).
pub fn command_request(
    depot: &Depot,
    command_id: &str,
    events: Vec<(PartitionName, Event)>,
) -> CommitRequest {
    let base = depot.head().unwrap();
    let mut request = CommitRequest::new(base, events, "s1", format!("command {command_id}"));
    request.rebase = true;
    request.fields = vec![(
        depot::FieldKey::new(depot::COMMAND_ID_FIELD).unwrap(),
        depot::FieldValue::new(command_id).unwrap(),
    )];
    request
}

/// Two depot handles on one depot (what two processes or hosts have: their own commit queues
/// and index views, one lock or one database between them) commit one command id at the same
/// moment (a barrier, no sleeps), `rounds` times. Each writer's events go to a partition of its
/// own, so a rebase would let both land: only the command-id check keeps it to one. Each round
/// must leave exactly one checkpoint, and give the other writer that checkpoint, replayed.
pub fn race_one_command_id(a: &Depot, b: &Depot, rounds: usize) {
    let barrier = std::sync::Barrier::new(2);
    for round in 0..rounds {
        let command_id = format!("race-{round}");
        let go = |depot: &Depot, writer: &str| {
            let events = vec![(
                p(&format!("race/{writer}")),
                ev("Raced", &format!(r#"{{"round":{round}}}"#)),
            )];
            let request = command_request(depot, &command_id, events);
            barrier.wait();
            depot.commit(request)
        };
        let go = &go;
        let results = std::thread::scope(|s| {
            let first = s.spawn(move || go(a, "a"));
            let second = s.spawn(move || go(b, "b"));
            [first.join().unwrap(), second.join().unwrap()]
        });
        let [x, y] = results.map(|r| r.unwrap_or_else(|e| panic!("round {round}: {e}")));
        assert_eq!(x.checkpoint, y.checkpoint, "round {round}: one checkpoint");
        assert_eq!(
            u8::from(x.replayed) + u8::from(y.replayed),
            1,
            "round {round}: exactly one writer wrote"
        );
    }
    // History holds each command id exactly once, and nothing else.
    let mut seen = std::collections::HashMap::new();
    a.walk(
        a.head().unwrap().unwrap(),
        depot::HistoryOrder::FirstParent,
        |_, checkpoint| {
            let id = checkpoint
                .field(depot::COMMAND_ID_FIELD)
                .unwrap()
                .to_owned();
            *seen.entry(id).or_insert(0) += 1;
            Ok(true)
        },
    )
    .unwrap();
    assert_eq!(seen.len(), rounds);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    for round in 0..rounds {
        let id = format!("race-{round}");
        assert!(a.applied_command(&id).unwrap().is_some());
        assert!(b.applied_command(&id).unwrap().is_some());
    }
}

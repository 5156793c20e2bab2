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

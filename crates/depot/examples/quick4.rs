use depot::*;
use std::sync::Arc;
use std::time::Instant;
fn req(d: &Depot, t: u64, i: u64) -> CommitRequest {
    let base = d.head().unwrap();
    let ev = vec![
        (
            PartitionName::new(&format!("identity/{t}-{i}")).unwrap(),
            Event::new(
                EventName::new("IdentityCreated").unwrap(),
                format!(r#"{{"id":{i},"name":"user-{i}","visible":true}}"#),
            ),
        ),
        (
            PartitionName::new(&format!("session/t{t}")).unwrap(),
            Event::new(
                EventName::new("IdentityUsed").unwrap(),
                format!(r#"{{"identity":"identity/{i}"}}"#),
            ),
        ),
    ];
    let mut r = CommitRequest::new(
        base,
        ev,
        "s1",
        format!(r#"{{"path":"identity/{i}","name":"createIdentity"}}"#),
    );
    r.rebase = true;
    r
}
fn main() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let d = Arc::new(Depot::init(dir.path().join("d")).unwrap());
    let n = 1000u64;
    let t0 = Instant::now();
    for i in 0..n {
        d.commit(req(&d, 9, i)).unwrap();
    }
    let one = n as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    d.commit(req(&d, t, i)).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let four = 4.0 * n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "1 writer {one:.0}/s, 4 writers {four:.0}/s, ratio {:.2}",
        four / one
    );
}

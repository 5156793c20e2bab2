use depot::*;
use std::time::Instant;
fn main() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let d = Depot::init(dir.path().join("d")).unwrap();
    let n = 2000u64;
    let t = Instant::now();
    for i in 0..n {
        let base = d.head().unwrap();
        let ev = vec![
            (
                PartitionName::new(&format!("identity/{i}")).unwrap(),
                Event::new(
                    EventName::new("IdentityCreated").unwrap(),
                    format!(r#"{{"id":{i},"name":"user-{i}","visible":true}}"#),
                ),
            ),
            (
                PartitionName::new(&format!("identity/{i}")).unwrap(),
                Event::new(
                    EventName::new("DisplayNameSet").unwrap(),
                    format!(r#"{{"display":"User number {i}"}}"#),
                ),
            ),
            (
                PartitionName::new("session/s1").unwrap(),
                Event::new(
                    EventName::new("IdentityUsed").unwrap(),
                    format!(r#"{{"identity":"identity/{i}"}}"#),
                ),
            ),
        ];
        d.commit(CommitRequest::new(base, ev, "s1", format!(r#"{{"path":"identity/{i}","name":"createIdentity","params":{{"name":"user-{i}"}}}}"#))).unwrap();
    }
    let el = t.elapsed();
    println!("durable commits: {:.0}/s", n as f64 / el.as_secs_f64());
    let t = Instant::now();
    let mut k = 0;
    for i in 0..2000u64 {
        k += d
            .partition_events(&PartitionName::new(&format!("identity/{}", i % n)).unwrap())
            .unwrap()
            .len();
    }
    println!(
        "partition reads: {:.1} us each ({k})",
        t.elapsed().as_secs_f64() * 1e6 / 2000.0
    );
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use depot::*;
use std::time::Instant;
fn main() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let d = Depot::init(dir.path().join("d")).unwrap();
    let batches = 100u64;
    let t = Instant::now();
    for b in 0..batches {
        let reqs: Vec<_> = (0..1000u64).map(|j| {
            let i = b * 1000 + j;
            let ev = vec![
                (PartitionName::new(&format!("identity/{}", i % 100000)).unwrap(), Event::new(EventName::new("IdentityCreated").unwrap(), format!(r#"{{"id":{i},"name":"user-{i}","visible":true}}"#))),
                (PartitionName::new(&format!("identity/{}", i % 100000)).unwrap(), Event::new(EventName::new("DisplayNameSet").unwrap(), format!(r#"{{"display":"User number {i}"}}"#))),
                (PartitionName::new("session/s1").unwrap(), Event::new(EventName::new("IdentityUsed").unwrap(), format!(r#"{{"identity":"identity/{i}"}}"#))),
            ];
            let mut r = CommitRequest::new(None, ev, "s1", format!(r#"{{"path":"identity/{i}","name":"createIdentity","params":{{"name":"user-{i}"}}}}"#));
            r.base = Base::Tip;
            r
        }).collect();
        for r in d.commit_many(reqs) {
            r.unwrap();
        }
    }
    let el = t.elapsed().as_secs_f64();
    println!("bulk: {:.0} events/s", batches as f64 * 3000.0 / el);
}

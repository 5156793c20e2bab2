//! The checks after a round: fsck is clean and compared the partition index with a replay, every
//! acknowledged command is in HEAD's history exactly once (in the checkpoint it was acknowledged
//! with), no command id appears twice, the partition index agrees with a replay built here by
//! walking history, and each counter's events count 1, 2, 3 … (no lost update).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use depot::{Depot, HistoryOrder, ObjectId, PartitionName};

use benchkit::Rng;

use crate::domain::Incremented;

/// An acknowledged command.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Its command id (`params.cid`).
    pub cid: String,
    /// The checkpoint it was acknowledged with (empty: any; `retro import` does not name them).
    pub checkpoint: String,
    /// Who acknowledged it (`lib`, `cli`, `http`, `import`).
    pub via: &'static str,
}

/// What the checks looked at.
#[derive(Debug, Default)]
pub struct Checked {
    /// Checkpoints on HEAD's history.
    pub checkpoints: u64,
    /// Partitions compared with the replay.
    pub partitions: u64,
    /// Partitions fsck compared.
    pub fsck_partitions: u64,
    /// Failed commands fsck saw (fine).
    pub failed_commands: u64,
    /// Unreachable objects fsck listed (fine: left by killed writers).
    pub unreachable: usize,
    /// Everything wrong.
    pub problems: Vec<String>,
}

fn cid_of(message: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(message).ok()?;
    value.get("params")?.get("cid")?.as_str().map(str::to_owned)
}

/// Runs every check on the depot at `dir` (opened afresh, as after a crash).
pub fn check(dir: &Path, acks: &[Ack], rng: &mut Rng) -> Checked {
    let mut out = Checked::default();
    if let Err(e) = check_inner(dir, acks, rng, &mut out) {
        out.problems.push(format!("check aborted: {e}"));
    }
    out
}

fn check_inner(
    dir: &Path,
    acks: &[Ack],
    rng: &mut Rng,
    out: &mut Checked,
) -> Result<(), depot::Error> {
    let depot = Depot::open(dir)?;

    // 1. fsck (it also compares every partition of the index with a replay of history).
    let report = depot.fsck(|_| {})?;
    out.fsck_partitions = report.partitions_checked;
    out.failed_commands = report.failed_commands;
    out.unreachable = report.unreachable.len();
    for problem in &report.problems {
        match problem.id {
            Some(id) => out
                .problems
                .push(format!("fsck: {id}: {}", problem.message)),
            None => out.problems.push(format!("fsck: {}", problem.message)),
        }
    }
    if report.partitions_checked == 0 {
        out.problems
            .push("fsck compared no partition with the index (partitions_checked = 0)".into());
    }

    // 2. HEAD's history: linear, every command id at most once, every acknowledged one once.
    let Some(head) = depot.head()? else {
        out.problems.push("HEAD is unborn after the round".into());
        return Ok(());
    };
    let mut history: Vec<ObjectId> = Vec::new();
    let mut cids: HashMap<String, Vec<ObjectId>> = HashMap::new();
    let mut affixes: Vec<ObjectId> = Vec::new();
    let mut merges = Vec::new();
    depot.walk(head, HistoryOrder::Full, |id, checkpoint| {
        if checkpoint.parents().len() > 1 {
            merges.push(id);
        }
        history.push(id);
        affixes.push(checkpoint.affix());
        if let Some(cid) = cid_of(checkpoint.message()) {
            cids.entry(cid).or_default().push(id);
        }
        Ok(true)
    })?;
    for id in merges {
        out.problems
            .push(format!("{id} is a merge, and nothing here makes merges"));
    }
    out.checkpoints = history.len() as u64;
    for (cid, ids) in &cids {
        if ids.len() > 1 {
            out.problems.push(format!(
                "command {cid} is in HEAD's history {} times: {ids:?}",
                ids.len()
            ));
        }
    }
    for ack in acks {
        match cids.get(&ack.cid) {
            None => out.problems.push(format!(
                "acknowledged command {} ({}, {}) is not in HEAD's history",
                ack.cid, ack.via, ack.checkpoint
            )),
            Some(ids) => {
                if !ack.checkpoint.is_empty()
                    && !ids.iter().any(|id| id.to_string() == ack.checkpoint)
                {
                    out.problems.push(format!(
                        "command {} ({}) was acknowledged as {} but is in {ids:?}",
                        ack.cid, ack.via, ack.checkpoint
                    ));
                }
            }
        }
    }

    // 3. A replay: each partition's events, oldest first, by walking history.
    let mut replay: BTreeMap<PartitionName, Vec<(ObjectId, ObjectId)>> = BTreeMap::new();
    for (checkpoint, affix_id) in history.iter().zip(&affixes).rev() {
        let affix = depot.read_affix(affix_id)?;
        for (partition, events) in affix.partitions() {
            let list = replay.entry(partition.clone()).or_default();
            list.extend(events.iter().map(|event| (*event, *checkpoint)));
        }
    }
    let indexed = depot.partitions("**")?;
    let indexed_names: Vec<&PartitionName> = indexed.iter().map(|(p, _)| p).collect();
    let replayed_names: Vec<&PartitionName> = replay.keys().collect();
    if indexed_names != replayed_names {
        out.problems.push(format!(
            "the index lists partitions {indexed_names:?}, the replay {replayed_names:?}"
        ));
    }
    for (partition, count) in &indexed {
        let expected = replay.get(partition).map_or(0, Vec::len) as u64;
        if *count != expected {
            out.problems.push(format!(
                "the index counts {count} events in {partition}, the replay {expected}"
            ));
        }
    }
    // Every counter and account in full, and a few random others.
    let mut chosen: Vec<&PartitionName> = replay
        .keys()
        .filter(|p| p.as_str().starts_with("counters/") || p.as_str().starts_with("accounts/"))
        .collect();
    let others: Vec<&PartitionName> = replay.keys().filter(|p| !chosen.contains(p)).collect();
    for _ in 0..3.min(others.len()) {
        let pick = others[rng.index(others.len())];
        if !chosen.contains(&pick) {
            chosen.push(pick);
        }
    }
    for partition in chosen {
        out.partitions += 1;
        let expected = &replay[partition];
        let events = depot.partition_events(partition)?;
        let got: Vec<(ObjectId, ObjectId)> = events.iter().map(|r| (r.id, r.checkpoint)).collect();
        if &got != expected {
            let first = got
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            out.problems.push(format!(
                "partition_events({partition}) differs from the replay: {} events vs {}, first difference at version {}",
                got.len(),
                expected.len(),
                first + 1
            ));
        }
        for (i, record) in events.iter().enumerate() {
            if record.version != i as u64 + 1 {
                out.problems.push(format!(
                    "partition_events({partition}) numbers event {} as version {}",
                    i + 1,
                    record.version
                ));
                break;
            }
        }
        if partition.as_str().starts_with("counters/") {
            for record in &events {
                let n = serde_json::from_slice::<Incremented>(record.event.data())
                    .map(|e| e.n)
                    .unwrap_or(0);
                if n != record.version {
                    out.problems.push(format!(
                        "{partition}#{} says n = {n}: a counter update was lost or applied on stale state",
                        record.version
                    ));
                    break;
                }
            }
        }
    }
    Ok(())
}

//! fsck: every object reachable from every ref (and every recorded failure) exists, hashes right,
//! decodes, and points to objects of the right kind; the partition index agrees with a replay of
//! history. Unreachable objects are listed, not errors.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{Depot, Error};
use crate::hash::ObjectId;
use crate::name::PartitionName;
use crate::object::{Kind, Object};
use crate::refdb::RefName;

const FAILED_LOG: &str = "the failed-command log";

/// What kind of thing is wrong: what a caller (a dashboard, `retro repair`, a script) can act on
/// without parsing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsckKind {
    /// A ref file cannot be read (`retro repair` restores it from its reflog).
    UnreadableRef,
    /// The failed-command log has unreadable lines (`retro repair` drops them).
    FailedLog,
    /// A pack or its index is damaged, cut short, or missing its index (see
    /// [`crate::odb::PackProblem`]).
    Pack,
    /// A referenced object is not in the store.
    MissingObject,
    /// An object's bytes cannot be read or do not hash to its id.
    CorruptObject,
    /// An object's bytes do not decode.
    Undecodable,
    /// An object is of another kind than what references it needs.
    WrongKind,
    /// A checkpoint's date field does not parse.
    BadDate,
    /// The partition index disagrees with history (`retro reindex` rebuilds it).
    Index,
    /// A checkpoint's `log` field is not the head of the log over its first-parent chain.
    BadLog,
}

impl FsckKind {
    /// The name used in `retro fsck --json` (`missing_object`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FsckKind::UnreadableRef => "unreadable_ref",
            FsckKind::FailedLog => "failed_log",
            FsckKind::Pack => "pack",
            FsckKind::MissingObject => "missing_object",
            FsckKind::CorruptObject => "corrupt_object",
            FsckKind::Undecodable => "undecodable",
            FsckKind::WrongKind => "wrong_kind",
            FsckKind::BadDate => "bad_date",
            FsckKind::Index => "index",
            FsckKind::BadLog => "bad_log",
        }
    }
}

/// One thing fsck found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckProblem {
    /// What kind of problem.
    pub kind: FsckKind,
    /// The object concerned, if any.
    pub id: Option<ObjectId>,
    /// What is wrong, for people.
    pub message: String,
}

/// What fsck found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Refs checked.
    pub refs: usize,
    /// Checkpoints reachable from refs.
    pub checkpoints: u64,
    /// Affixes reachable.
    pub affixes: u64,
    /// Events reachable.
    pub events: u64,
    /// Data objects (of sealed events) reachable and present.
    pub data: u64,
    /// Data objects (a sealed event's data, a checkpoint's command) erased by a recorded
    /// redaction: valid, the ids that name them verified.
    pub redacted: u64,
    /// Plain (go-retro format) events erased by a recorded redaction: their bytes are gone, so
    /// their ids cannot be verified ("redacted, unverifiable"); not a problem.
    pub unverifiable: Vec<ObjectId>,
    /// Objects in the store that nothing reaches (failed commands excluded).
    pub unreachable: Vec<ObjectId>,
    /// Checkpoints of recorded failed commands (kept on purpose, not corruption).
    pub failed_commands: u64,
    /// Partitions whose index entries were compared with a replay.
    pub partitions_checked: u64,
    /// A partial clone's filter (its globs; `None`: the depot holds every partition).
    pub partial: Option<Vec<String>>,
    /// Events absent by design: of partitions outside a partial clone's filter, not in the
    /// store (those that are there are verified like any other).
    pub absent_by_filter: u64,
    /// Corruption and inconsistencies.
    pub problems: Vec<FsckProblem>,
    /// Things to look at that lose nothing: ref moves recovery could not write (their lines in
    /// `logs/skipped-ref-moves` hold what is needed to re-apply them by hand).
    pub warnings: Vec<String>,
}

impl FsckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Depot {
    /// Checks the whole depot; `progress` is called with the number of objects checked so far.
    pub fn fsck(&self, mut progress: impl FnMut(u64)) -> Result<FsckReport, Error> {
        let mut report = FsckReport::default();
        let partial = self.partial_filter();
        report.partial = partial.as_ref().map(|f| f.globs().to_vec());
        // 16 bytes of each id: half the memory of full ids, and a collision among SHA-256
        // prefixes of 128 bits is not a practical concern.
        // Sized once for every stored object (a cheap count from the pack indexes): grown by
        // doubling, the set would hold its old and new tables at once, half as much again at its
        // peak (about 35 MB more at 3 million objects).
        let stored = match &self.packs {
            Some(packs) => packs.stats()?.objects,
            None => 0,
        };
        let mut reachable: HashSet<u128> =
            HashSet::with_capacity(usize::try_from(stored).unwrap_or(0));
        let mut roots: Vec<(String, ObjectId)> = Vec::new();
        let (refs, unreadable) = self.refs.list_lenient("")?;
        for error in unreadable {
            report.problems.push(FsckProblem {
                kind: FsckKind::UnreadableRef,
                id: None,
                message: format!("{error} ('retro repair' restores it from its reflog)"),
            });
        }
        for (name, value) in refs {
            // Streamed: a reflog of millions of lines is counted, not held.
            let (mut bad, mut first_bad) = (0u64, Vec::new());
            let scanned = self.refs.for_each_reflog_line(&name, &mut |line| {
                if let Err(n) = line {
                    bad += 1;
                    if first_bad.len() < 5 {
                        first_bad.push(n.to_string());
                    }
                }
                Ok(())
            });
            match scanned {
                Err(e) => report.warnings.push(format!(
                    "the reflog of '{name}' cannot be read ({e}); the ref itself is intact"
                )),
                Ok(()) if bad > 0 => report.warnings.push(format!(
                    "the reflog of '{name}' has {bad} unreadable line(s) (line {}), skipped: a write torn by a power cut, or damage; the ref itself is intact",
                    first_bad.join(", ")
                )),
                Ok(()) => {}
            }
            report.refs += 1;
            if let Some(id) = value.id() {
                roots.push((name.to_string(), id));
            }
        }
        let (failures, bad_lines) = self.failures_checked()?;
        if !bad_lines.is_empty() {
            report.problems.push(FsckProblem {
                kind: FsckKind::FailedLog,
                id: None,
                message: format!(
                    "{FAILED_LOG} has {} unreadable line(s) (line {}); 'retro repair' drops them",
                    bad_lines.len(),
                    bad_lines
                        .iter()
                        .take(5)
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        report.failed_commands = failures.len() as u64;
        for line in self.skipped_ref_moves()? {
            report.warnings.push(format!(
                "a journaled ref move could not be written and was skipped (logs/skipped-ref-moves): {line}"
            ));
        }
        for id in &failures {
            roots.push((FAILED_LOG.to_owned(), *id));
        }
        if let Some(packs) = &self.packs {
            for problem in packs.check_indexes()? {
                report.problems.push(FsckProblem {
                    kind: FsckKind::Pack,
                    id: None,
                    message: problem,
                });
            }
        }
        let mut checked = 0u64;
        // Depth-first with a compact stack: each entry names its referrer by id, not by a
        // formatted string, and a checkpoint's affix is pushed last so that it (and its events)
        // is checked before the walk goes on to the parent: the stack stays small.
        let mut stack: Vec<(ObjectId, Kind, Referrer)> = roots
            .iter()
            .enumerate()
            .map(|(i, (_, id))| (*id, Kind::Checkpoint, Referrer::Root(i)))
            .collect();
        while let Some((id, expected, referrer)) = stack.pop() {
            if !reachable.insert(short_key(&id)) {
                continue;
            }
            checked += 1;
            if checked.is_multiple_of(10_000) {
                progress(checked);
            }
            let from = || referrer.describe(&roots);
            let problem = |kind: FsckKind, message: String| FsckProblem {
                kind,
                id: Some(id),
                message,
            };
            if self.is_erased(&id) {
                // Erased by a recorded redaction: a sealed event's data object (the event's id
                // was verified by reading it) or a plain event's own bytes (unverifiable).
                match expected {
                    Kind::Data => report.redacted += 1,
                    _ => {
                        report.events += 1;
                        report.unverifiable.push(id);
                    }
                }
                continue;
            }
            let encoded = match self.objects.read(&id) {
                Ok(Some(encoded)) => encoded,
                Ok(None) => {
                    report.problems.push(problem(
                        FsckKind::MissingObject,
                        format!("missing {expected} (referenced by {})", from()),
                    ));
                    continue;
                }
                Err(e) => {
                    report
                        .problems
                        .push(problem(FsckKind::CorruptObject, e.to_string()));
                    continue;
                }
            };
            let object = match encoded.decode() {
                Ok(object) => object,
                Err(e) => {
                    report.problems.push(problem(
                        FsckKind::Undecodable,
                        format!("does not decode: {e} (referenced by {})", from()),
                    ));
                    continue;
                }
            };
            if object.kind() != expected {
                report.problems.push(problem(
                    FsckKind::WrongKind,
                    format!(
                        "is {} {}, but {} needs {} {expected}",
                        article(object.kind()),
                        object.kind(),
                        from(),
                        article(expected)
                    ),
                ));
                continue;
            }
            let here = Referrer::Object(expected, id);
            match object {
                Object::Checkpoint(checkpoint) => {
                    if !matches!(referrer, Referrer::Root(i) if roots[i].0 == FAILED_LOG) {
                        report.checkpoints += 1;
                    }
                    if checkpoint.date().is_none() && checkpoint.field("date").is_some() {
                        report.problems.push(problem(
                            FsckKind::BadDate,
                            "has an unreadable date".to_owned(),
                        ));
                    }
                    for parent in checkpoint.parents() {
                        stack.push((*parent, Kind::Checkpoint, here));
                    }
                    if let Some(data) = checkpoint.message_data() {
                        stack.push((data, Kind::Data, here));
                    }
                    stack.push((checkpoint.affix(), Kind::Affix, here));
                }
                Object::Affix(affix) => {
                    report.affixes += 1;
                    for (partition, ids) in affix.partitions() {
                        if partial
                            .as_ref()
                            .is_some_and(|f| !f.holds(partition.as_str()))
                        {
                            self.fsck_filtered_events(ids, here, &mut stack, &mut report)?;
                            continue;
                        }
                        for event in ids {
                            stack.push((*event, Kind::Event, here));
                        }
                    }
                }
                Object::Event(event) => {
                    report.events += 1;
                    if let Some(data) = event.sealed_data() {
                        stack.push((data, Kind::Data, here));
                    }
                }
                Object::Data(_) => report.data += 1,
            }
        }
        progress(checked);
        let failed: HashSet<ObjectId> = failures.into_iter().collect();
        self.objects.for_each_id(&mut |id| {
            if !reachable.contains(&short_key(&id)) && !failed.contains(&id) {
                report.unreachable.push(id);
            }
            Ok(())
        })?;
        report.unreachable.sort();
        report.unreachable.dedup();
        drop(reachable);
        // The walk looked up every object: its index pages need not stay resident for the
        // history passes below (bounded memory at any depot size).
        let release = || {
            if let Some(packs) = &self.packs {
                packs.release_index_pages();
            }
        };
        release();
        self.check_index(&mut report)?;
        release();
        self.check_logs(&mut report)?;
        release();
        self.fsck_graph(&mut report.warnings);
        Ok(report)
    }

    /// A partial clone's events of a partition outside its filter: absent by design (counted,
    /// not a problem); any that is in the store is checked like every other.
    fn fsck_filtered_events(
        &self,
        ids: &[ObjectId],
        referrer: Referrer,
        stack: &mut Vec<(ObjectId, Kind, Referrer)>,
        report: &mut FsckReport,
    ) -> Result<(), Error> {
        for event in ids {
            if self.objects.contains(event)? || self.is_erased(event) {
                stack.push((*event, Kind::Event, referrer));
            } else {
                report.absent_by_filter += 1;
            }
        }
        Ok(())
    }

    /// Replays `HEAD`'s first-parent history and compares every partition's event list with the
    /// index (count and an order-sensitive digest of the ids).
    fn check_index(&self, report: &mut FsckReport) -> Result<(), Error> {
        if let Err(e) = self.catch_up_index() {
            report.problems.push(FsckProblem {
                kind: FsckKind::Index,
                id: None,
                message: format!("the partition index cannot catch up: {e}"),
            });
            return Ok(());
        }
        // An unreadable HEAD was reported with the refs above.
        let Ok((_, head)) = self.resolve_ref(&RefName::head()) else {
            return Ok(());
        };
        let mut chain = Vec::new();
        let mut cursor = head;
        while let Some(id) = cursor {
            chain.push(id);
            cursor = match self.read_checkpoint_unresolved(&id) {
                Ok(c) => c.first_parent(),
                Err(_) => return Ok(()), // already reported above
            };
        }
        // Keyed by a 64-bit hash of the name: 40 bytes a partition instead of a heap string.
        let mut replay: HashMap<u64, (u64, [u8; 32])> = HashMap::new();
        for id in chain.iter().rev() {
            let Ok(checkpoint) = self.read_checkpoint_unresolved(id) else {
                return Ok(());
            };
            let Ok(affix) = self.read_affix(&checkpoint.affix()) else {
                return Ok(());
            };
            for (partition, ids) in affix.partitions() {
                let entry = replay
                    .entry(name_key(partition.as_str()))
                    .or_insert((0, [0; 32]));
                for event in ids {
                    entry.0 += 1;
                    entry.1 = fold(&entry.1, event);
                }
            }
        }
        self.flush_index()?;
        let guard = self.index.lock().expect("index lock poisoned");
        let index = &guard.stored;
        let problems = &mut report.problems;
        let mut checked = 0u64;
        index.for_each_partition(|name, count| {
            let Ok(partition) = PartitionName::stored(name) else {
                problems.push(FsckProblem {
                    kind: FsckKind::Index,
                    id: None,
                    message: format!("partition index holds an invalid partition name '{name}'"),
                });
                return Ok(());
            };
            // Streamed: a partition of a million events is folded, not held.
            let (mut rows, mut digest) = (0u64, [0u8; 32]);
            index.for_each_partition_event(&partition, |row| {
                rows += 1;
                digest = fold(&digest, &row.event);
                Ok(true)
            })?;
            checked += 1;
            match replay.remove(&name_key(name)) {
                Some((n, d)) if n == count && n == rows && d == digest => {}
                Some((n, _)) => problems.push(FsckProblem {
                    kind: FsckKind::Index,
                    id: None,
                    message: format!(
                        "partition index disagrees with history for '{partition}' ({count} indexed, {n} in history); run 'retro reindex'"
                    ),
                }),
                None => problems.push(FsckProblem {
                    kind: FsckKind::Index,
                    id: None,
                    message: format!("partition index lists '{partition}', which history does not have; run 'retro reindex'"),
                }),
            }
            Ok(())
        })?;
        report.partitions_checked = checked;
        if !replay.is_empty() {
            let events: u64 = replay.values().map(|(n, _)| n).sum();
            report.problems.push(FsckProblem {
                kind: FsckKind::Index,
                id: None,
                message: format!(
                    "{} partition(s) of history ({events} events) are missing from the partition index; run 'retro reindex'",
                    replay.len()
                ),
            });
        }
        Ok(())
    }
}

/// Who referenced an object, for messages (formatted only when something is wrong).
#[derive(Clone, Copy)]
enum Referrer {
    /// The i-th root (a ref, or the failed-command log).
    Root(usize),
    /// Another object.
    Object(Kind, ObjectId),
}

impl Referrer {
    fn describe(&self, roots: &[(String, ObjectId)]) -> String {
        match self {
            Referrer::Root(i) => roots[*i].0.clone(),
            Referrer::Object(kind, id) => format!("{kind} {}", id.to_short_hex(12)),
        }
    }
}

fn name_key(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

fn short_key(id: &ObjectId) -> u128 {
    u128::from_be_bytes(id.as_bytes()[..16].try_into().expect("16 bytes"))
}

fn article(kind: Kind) -> &'static str {
    match kind {
        Kind::Event | Kind::Affix => "an",
        Kind::Checkpoint | Kind::Data => "a",
    }
}

fn fold(digest: &[u8; 32], id: &ObjectId) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(digest);
    hasher.update(id.as_bytes());
    hasher.finalize().into()
}

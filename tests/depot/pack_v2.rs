//! Version 2 packs (written by gc): a zstd dictionary trained on the depot's own objects, records
//! transcoded and compressed against it, no ids in the records. Every object reads back to its
//! exact bytes; a version 2 pack that lost its index, or its header, is still read and repaired;
//! damage is an error, never a wrong answer.

use std::path::{Path, PathBuf};

use depot::{Depot, GcOptions};

use crate::common::*;

const COMMANDS: u64 = 400;

fn packs_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn pack_bytes(dir: &Path) -> u64 {
    packs_with(dir, ".pack")
        .iter()
        .chain(&packs_with(dir, ".idx"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Every object the store lists, read (and so verified) with its bytes.
fn all_objects(depot: &Depot) -> Vec<(String, Vec<u8>)> {
    let mut ids = Vec::new();
    depot
        .objects()
        .for_each_id(&mut |id| {
            ids.push(id);
            Ok(())
        })
        .unwrap();
    ids.sort();
    ids.dedup();
    ids.iter()
        .map(|id| {
            let object = depot.read_object(id).unwrap();
            (id.to_string(), object.bytes().to_vec())
        })
        .collect()
}

fn built() -> (tempfile::TempDir, PathBuf, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let depot = Depot::init(&root).unwrap();
    for i in 0..COMMANDS {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    let objects = all_objects(&depot);
    (dir, root, objects)
}

fn gc(root: &Path) {
    let depot = Depot::open(root).unwrap();
    depot.gc(&GcOptions::default(), |_| {}).unwrap();
}

#[test]
fn gc_upgrades_version_1_packs_to_one_smaller_version_2_pack_with_the_same_objects() {
    let (_dir, root, objects) = built();
    let first = std::fs::read(&packs_with(&root, ".pack")[0]).unwrap();
    assert_eq!(&first[..8], b"RETROPK1", "commits write version 1 packs");
    let before = pack_bytes(&root);
    let master: depot::RefName = "refs/heads/master".parse().unwrap();
    let reflog_before = Depot::open(&root).unwrap().reflog(&master).unwrap();
    let reflog_path = root.join("logs/refs/heads/master");
    let reflog_bytes = std::fs::metadata(&reflog_path).unwrap().len();
    gc(&root);
    // The reflog is folded into a compressed frame, every line kept; commits append after it.
    let compacted = std::fs::read(&reflog_path).unwrap();
    assert_eq!(&compacted[..8], b"RETRORL1");
    assert!((compacted.len() as u64) * 2 < reflog_bytes);
    assert_eq!(
        Depot::open(&root).unwrap().reflog(&master).unwrap(),
        reflog_before
    );
    let packs = packs_with(&root, ".idx");
    assert_eq!(packs.len(), 1);
    let sealed = std::fs::read(packs[0].with_extension("pack")).unwrap();
    assert_eq!(&sealed[..8], b"RETROPK2");
    assert_eq!(sealed[8], 4, "the dictionary record comes first");
    let dictionary_len = u32::from_be_bytes(sealed[9..13].try_into().unwrap());
    assert!(
        dictionary_len > 0,
        "enough objects to train a dictionary on"
    );
    let after = pack_bytes(&root);
    assert!(
        after * 2 < before,
        "a version 2 pack is less than half the size: {before} -> {after} bytes"
    );
    let reopened = Depot::open(&root).unwrap();
    assert_eq!(all_objects(&reopened), objects);
    let report = reopened.fsck(|_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // A second gc reads version 2 and writes version 2: still the same objects.
    drop(reopened);
    gc(&root);
    assert_eq!(all_objects(&Depot::open(&root).unwrap()), objects);
}

#[test]
fn a_version_2_pack_without_its_index_is_scanned_then_reindexed() {
    let (_dir, root, objects) = built();
    gc(&root);
    // Commits after gc go to a new version 1 active pack, beside the version 2 one.
    let depot = Depot::open(&root).unwrap();
    commit_retrying(&depot, workload(COMMANDS, "s1"), "x");
    let objects_after = all_objects(&depot);
    assert!(objects_after.len() > objects.len());
    drop(depot);
    let idx = packs_with(&root, ".idx").remove(0);
    std::fs::remove_file(&idx).unwrap();
    let scanned = Depot::open(&root).unwrap();
    assert_eq!(
        all_objects(&scanned),
        objects_after,
        "ids derived by hashing"
    );
    let report = scanned.repair().unwrap();
    assert!(
        report.fixed.iter().any(|f| f.contains("rebuilt the index")),
        "{report:?}"
    );
    drop(scanned);
    assert!(idx.exists());
    assert_eq!(all_objects(&Depot::open(&root).unwrap()), objects_after);
}

#[test]
fn a_damaged_version_2_header_is_found_and_rewritten_as_version_2() {
    let (_dir, root, objects) = built();
    gc(&root);
    let pack = packs_with(&root, ".pack").remove(0);
    std::fs::remove_file(pack.with_extension("idx")).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[..8].copy_from_slice(b"XXXXXXXX");
    std::fs::write(&pack, &bytes).unwrap();
    let depot = Depot::open(&root).unwrap();
    assert_eq!(
        all_objects(&depot),
        objects,
        "still read by its dictionary record"
    );
    depot.repair().unwrap();
    drop(depot);
    assert_eq!(&std::fs::read(&pack).unwrap()[..8], b"RETROPK2");
    assert_eq!(all_objects(&Depot::open(&root).unwrap()), objects);
}

#[test]
fn damage_inside_a_version_2_pack_is_an_error_never_a_wrong_object() {
    let (_dir, root, objects) = built();
    gc(&root);
    let pack = packs_with(&root, ".pack").remove(0);
    let clean = std::fs::read(&pack).unwrap();
    // Flip one byte of a record past the dictionary, and (separately) one of the dictionary:
    // every read either returns the exact object or fails as corrupt; fsck names the damage.
    let dictionary_end = 8 + 9 + u32::from_be_bytes(clean[9..13].try_into().unwrap()) as usize;
    for at in [clean.len() / 2, dictionary_end + 20, 40] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x41;
        std::fs::write(&pack, &bytes).unwrap();
        let depot = Depot::open(&root).unwrap();
        let mut failed = 0;
        for (id, bytes) in &objects {
            match depot.read_object(&id.parse().unwrap()) {
                Ok(object) => assert_eq!(object.bytes(), &bytes[..]),
                Err(_) => failed += 1,
            }
        }
        assert!(failed > 0, "a flipped byte at {at} went unnoticed");
        let report = depot.fsck(|_| {}).unwrap();
        assert!(!report.problems.is_empty(), "fsck saw nothing at {at}");
    }
    std::fs::write(&pack, &clean).unwrap();
}

/// The index of the version 2 pack gc wrote: its bytes.
fn v2_index(root: &Path) -> (PathBuf, Vec<u8>) {
    let idx = packs_with(root, ".idx").remove(0);
    let bytes = std::fs::read(&idx).unwrap();
    (idx, bytes)
}

const IDX_HEADER: usize = 8 + 8 + 8 + 256 * 4;
const ENTRY: usize = 16;

fn entry_count(bytes: &[u8]) -> usize {
    u64::from_be_bytes(bytes[16..24].try_into().unwrap()) as usize
}

fn rewrite_crc(bytes: &mut [u8]) {
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn a_version_2_index_keeps_short_ids_and_still_finds_abbreviations() {
    let (_dir, root, objects) = built();
    gc(&root);
    let (_, bytes) = v2_index(&root);
    assert_eq!(&bytes[..8], b"RETROIX2");
    let count = entry_count(&bytes);
    assert_eq!(count, objects.len());
    assert_eq!(
        bytes.len(),
        IDX_HEADER + count * ENTRY + 4,
        "16 bytes an entry"
    );
    let depot = Depot::open(&root).unwrap();
    for (id, _) in objects.iter().step_by(97) {
        let hex = id.trim_start_matches("sha256:");
        for digits in [8, 20, 21, 64] {
            let prefix: depot::Prefix = hex[..digits].parse().unwrap();
            let found = depot.objects().find_prefix(&prefix, 5).unwrap();
            assert_eq!(
                found.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                std::slice::from_ref(id),
                "{digits} digits of {id}"
            );
        }
    }
    // An id that is not there, sharing nothing but a short prefix with one that is.
    let (first, _) = &objects[0];
    let hex = first.trim_start_matches("sha256:");
    let absent = format!("{}{}", &hex[..20], "0".repeat(44));
    if absent != hex {
        let absent: depot::ObjectId = format!("sha256:{absent}").parse().unwrap();
        assert!(!depot.objects().contains(&absent).unwrap());
        assert!(depot.objects().read(&absent).unwrap().is_none());
    }
}

#[test]
fn entries_that_share_a_prefix_are_told_apart_by_their_records() {
    let (_dir, root, objects) = built();
    gc(&root);
    let (idx, bytes) = v2_index(&root);
    collide_and_read(&root, &idx, bytes, &objects);
}

/// A depot whose commits rolled into several sealed version 1 packs (small roll size).
fn built_sealed() -> (
    tempfile::TempDir,
    PathBuf,
    Vec<(String, Vec<u8>)>,
    depot::Options,
) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let options = depot::Options {
        pack_roll_size: Some(16 << 10),
        ..Default::default()
    };
    let depot = Depot::init_with(&root, options.clone()).unwrap();
    for i in 0..COMMANDS {
        commit_retrying(&depot, workload(i, "s1"), "x");
    }
    let objects = all_objects(&depot);
    (dir, root, objects, options)
}

#[test]
fn sealed_version_1_packs_get_short_indexes_and_prefix_twins_are_told_apart() {
    let (_dir, root, objects, options) = built_sealed();
    let indexes = packs_with(&root, ".idx");
    assert!(indexes.len() > 2, "{indexes:?}");
    for idx in &indexes {
        let bytes = std::fs::read(idx).unwrap();
        assert_eq!(&bytes[..8], b"RETROIX2", "{}", idx.display());
        assert_eq!(bytes.len(), IDX_HEADER + entry_count(&bytes) * ENTRY + 4);
    }
    // Everything still reads, lists and checks, from a fresh open.
    let depot = Depot::open_with(&root, options).unwrap();
    assert_eq!(all_objects(&depot), objects);
    let report = depot.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    // An id that shares an object's indexed prefix (its first 10 bytes) but is not there: the
    // record says whose it is, so it is absent, not damage.
    for (id, _) in objects.iter().step_by(53) {
        let hex = id.trim_start_matches("sha256:");
        let tail = if hex.ends_with('0') { "1" } else { "0" };
        let absent: depot::ObjectId = format!("sha256:{}{}", &hex[..63], tail).parse().unwrap();
        assert!(!depot.objects().contains(&absent).unwrap(), "{absent}");
        assert!(depot.objects().read(&absent).unwrap().is_none(), "{absent}");
    }
    drop(depot);
    // The largest index, made to hold two entries with one prefix (its objects' ids differ).
    let idx = indexes
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let bytes = std::fs::read(&idx).unwrap();
    let mut in_pack: Vec<(String, Vec<u8>)> = objects
        .iter()
        .filter(|(id, _)| {
            let hex = id.trim_start_matches("sha256:");
            (0..entry_count(&bytes)).any(|i| {
                hex::encode(&bytes[IDX_HEADER + i * ENTRY..IDX_HEADER + i * ENTRY + 10])
                    == hex[..20]
            })
        })
        .cloned()
        .collect();
    in_pack.sort();
    collide_and_read(&root, &idx, bytes, &in_pack);
}

#[test]
fn gc_keeps_one_copy_of_an_object_held_by_two_packs() {
    let (_dir, root, objects, options) = built_sealed();
    // Copy the oldest sealed pack (and its index) under a new, higher number: each of its
    // objects is now in two packs.
    let pack = packs_with(&root, ".pack").remove(0);
    let idx = packs_with(&root, ".idx").remove(0);
    let twin = |p: &Path, ext: &str| p.with_file_name(format!("pack-0000000000009999.{ext}"));
    std::fs::copy(&pack, twin(&pack, "pack")).unwrap();
    std::fs::copy(&idx, twin(&idx, "idx")).unwrap();
    let depot = Depot::open_with(&root, options).unwrap();
    let report = depot.gc(&GcOptions::default(), |_| {}).unwrap();
    assert_eq!(report.kept as usize, objects.len(), "each object once");
    assert_eq!(all_objects(&depot), objects);
    let (_, bytes) = v2_index(&root);
    assert_eq!(entry_count(&bytes), objects.len());
    assert!(depot.fsck(|_| {}).unwrap().is_clean());
}

/// Makes entries i and i+1 of the index at `idx` share i's prefix (and swaps their offsets),
/// then checks that object i still reads right and object i+1 reads as missing, never as i.
/// `objects` are the index's objects, sorted by id as its entries are.
fn collide_and_read(root: &Path, idx: &Path, mut bytes: Vec<u8>, objects: &[(String, Vec<u8>)]) {
    // Entries i and i+1 (in one fan-out bucket) get the same prefix (i's), and swapped
    // offsets: the first candidate a lookup of object i finds now holds object i+1, and the
    // lookup must go on to the next.
    let at = |i: usize| IDX_HEADER + i * ENTRY;
    // Not entry 0: an open checks it against its record, and would read the pack by scanning.
    let i = (1..entry_count(&bytes) - 1)
        .find(|&i| bytes[at(i)] == bytes[at(i + 1)])
        .expect("two entries in one bucket");
    let prefix: Vec<u8> = bytes[at(i)..at(i) + 10].to_vec();
    let offset_i: Vec<u8> = bytes[at(i) + 10..at(i + 1)].to_vec();
    let offset_next: Vec<u8> = bytes[at(i + 1) + 10..at(i + 2)].to_vec();
    bytes[at(i + 1)..at(i + 1) + 10].copy_from_slice(&prefix);
    bytes[at(i) + 10..at(i + 1)].copy_from_slice(&offset_next);
    bytes[at(i + 1) + 10..at(i + 2)].copy_from_slice(&offset_i);
    rewrite_crc(&mut bytes);
    std::fs::write(idx, &bytes).unwrap();
    let depot = Depot::open(root).unwrap();
    let (id, object) = &objects[i];
    let read = depot.read_object(&id.parse().unwrap()).unwrap();
    assert_eq!(read.bytes(), &object[..]);
    // Object i+1's own prefix is gone from the index: it reads as missing, never as object i.
    let (next, _) = &objects[i + 1];
    assert!(depot.read_object(&next.parse().unwrap()).is_err());
}

//! The one test suite every object store must pass. Each backend's tests call [`run`] with a
//! factory for fresh stores.

use super::{Error, ObjectStore};
use crate::hash::{ObjectId, Prefix};
use crate::name::EventName;
use crate::object::{EncodedObject, Event, Object};

fn event(i: usize) -> EncodedObject {
    Object::Event(Event::new(
        EventName::new("Counted").unwrap(),
        format!("{{\"n\":{i}}}"),
    ))
    .to_encoded()
}

/// Runs every conformance check against stores made by `make`.
pub fn run(make: &dyn Fn() -> Box<dyn ObjectStore>) {
    reads_back_what_was_written(make());
    reads_many_in_order(make());
    missing_objects_are_none(make());
    writes_are_idempotent(make());
    prefixes_resolve_and_report_ambiguity(make());
    iterates_every_id_once(make());
}

fn reads_back_what_was_written(store: Box<dyn ObjectStore>) {
    let objects: Vec<_> = (0..50).map(event).collect();
    store.write(&objects).unwrap();
    store.sync().unwrap();
    for object in &objects {
        let read = store.read(&object.id()).unwrap().expect("written object");
        assert_eq!(read, *object, "{}", store.describe());
        assert!(store.contains(&object.id()).unwrap());
    }
}

fn reads_many_in_order(store: Box<dyn ObjectStore>) {
    let objects: Vec<_> = (0..20).map(event).collect();
    store.write(&objects).unwrap();
    store.sync().unwrap();
    let missing = ObjectId::of(b"never written");
    let mut ids: Vec<ObjectId> = objects.iter().rev().map(|o| o.id()).collect();
    ids.insert(3, missing);
    ids.push(objects[0].id());
    let read = store.read_many(&ids).unwrap();
    assert_eq!(read.len(), ids.len(), "{}", store.describe());
    for (id, object) in ids.iter().zip(&read) {
        match object {
            Some(object) => assert_eq!(object.id(), *id),
            None => assert_eq!(*id, missing),
        }
    }
    assert!(read[3].is_none());
}

fn missing_objects_are_none(store: Box<dyn ObjectStore>) {
    let id = ObjectId::of(b"never written");
    assert!(store.read(&id).unwrap().is_none());
    assert!(!store.contains(&id).unwrap());
}

fn writes_are_idempotent(store: Box<dyn ObjectStore>) {
    let object = event(7);
    store.write(std::slice::from_ref(&object)).unwrap();
    store.write(std::slice::from_ref(&object)).unwrap();
    store.sync().unwrap();
    let mut count = 0;
    store
        .for_each_id(&mut |id| {
            assert_eq!(id, object.id());
            count += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(count, 1);
}

fn prefixes_resolve_and_report_ambiguity(store: Box<dyn ObjectStore>) {
    let objects: Vec<_> = (0..300).map(event).collect();
    store.write(&objects).unwrap();
    let target = objects[42].id();
    let full: Prefix = target.to_hex().parse().unwrap();
    assert_eq!(store.find_prefix(&full, 2).unwrap(), vec![target]);
    // With 300 objects, some 4-digit... use 1 hex digit shared by many: take the first 4 digits of
    // the target and count how many objects share them; the store must agree.
    let short: Prefix = target.to_short_hex(4).parse().unwrap();
    let expected: Vec<ObjectId> = {
        let mut v: Vec<_> = objects
            .iter()
            .map(|o| o.id())
            .filter(|id| short.matches(id))
            .collect();
        v.sort();
        v
    };
    assert_eq!(store.find_prefix(&short, 10).unwrap(), expected);
    let none: Prefix = "ffffffffffffffff".parse().unwrap();
    let found = store.find_prefix(&none, 2).unwrap();
    assert!(found.iter().all(|id| none.matches(id)));
}

fn iterates_every_id_once(store: Box<dyn ObjectStore>) {
    let objects: Vec<_> = (0..120).map(event).collect();
    store.write(&objects[..60]).unwrap();
    store.write(&objects[60..]).unwrap();
    let mut seen = Vec::new();
    store
        .for_each_id(&mut |id| {
            seen.push(id);
            Ok::<(), Error>(())
        })
        .unwrap();
    seen.sort();
    let mut expected: Vec<_> = objects.iter().map(|o| o.id()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;
    use crate::odb::{LooseStore, MemoryStore, PackStore};

    #[test]
    fn memory_store_conforms() {
        run(&|| Box::new(MemoryStore::new()));
    }

    #[test]
    fn loose_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::cell::Cell::new(0);
        run(&|| {
            counter.set(counter.get() + 1);
            Box::new(LooseStore::new(dir.path().join(counter.get().to_string())))
        });
    }

    #[test]
    fn pack_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::cell::Cell::new(0);
        run(&|| {
            counter.set(counter.get() + 1);
            Box::new(PackStore::open(dir.path().join(counter.get().to_string()), None).unwrap())
        });
    }

    #[test]
    fn pack_store_with_tiny_packs_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::cell::Cell::new(0);
        run(&|| {
            counter.set(counter.get() + 1);
            Box::new(
                PackStore::open(dir.path().join(counter.get().to_string()), None)
                    .unwrap()
                    .with_roll_size(2048),
            )
        });
    }

    #[test]
    fn a_second_pack_handle_sees_objects_written_by_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = PackStore::open(dir.path(), None)
            .unwrap()
            .with_roll_size(4096);
        let b = PackStore::open(dir.path(), None).unwrap();
        let objects: Vec<_> = (0..200).map(event).collect();
        a.write(&objects).unwrap();
        for object in &objects {
            assert_eq!(b.read(&object.id()).unwrap().as_ref(), Some(object));
        }
    }

    #[test]
    fn a_torn_pack_tail_is_ignored_and_then_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackStore::open(dir.path(), None).unwrap();
        let objects: Vec<_> = (0..3).map(event).collect();
        store.write(&objects).unwrap();
        store.sync().unwrap();
        let pack = dir.path().join("pack-0000000000000001.pack");
        let good_len = std::fs::metadata(&pack).unwrap().len();
        // A crashed writer's half record: a plausible header and half a payload.
        let mut file = OpenOptions::new().append(true).open(&pack).unwrap();
        file.write_all(&[1, 0, 0, 0, 200, 7, 7, 7]).unwrap();
        drop(file);
        let reopened = PackStore::open(dir.path(), None).unwrap();
        for object in &objects {
            assert!(reopened.read(&object.id()).unwrap().is_some());
        }
        let extra = event(99);
        reopened.write(std::slice::from_ref(&extra)).unwrap();
        assert!(reopened.read(&extra.id()).unwrap().is_some());
        let fresh = PackStore::open(dir.path(), None).unwrap();
        assert!(fresh.read(&extra.id()).unwrap().is_some());
        assert!(std::fs::metadata(&pack).unwrap().len() > good_len);
    }

    #[test]
    fn a_flipped_byte_in_a_pack_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackStore::open(dir.path(), None).unwrap();
        let object = event(1);
        store.write(std::slice::from_ref(&object)).unwrap();
        store.seal().unwrap();
        let pack = dir.path().join("pack-0000000000000001.pack");
        let mut bytes = std::fs::read(&pack).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0x55;
        std::fs::write(&pack, bytes).unwrap();
        let reopened = PackStore::open(dir.path(), None).unwrap();
        let err = reopened.read(&object.id()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    /// Writes `n` objects in synced batches of ten, as commits do.
    fn write_synced(store: &PackStore, objects: &[EncodedObject]) {
        for batch in objects.chunks(10) {
            store.write(batch).unwrap();
            store.sync().unwrap();
        }
    }

    /// A pack store in a fresh directory holding `n` objects written in synced batches (its key
    /// log written as commits write it), closed again: (directory, the objects).
    fn synced_pack(n: usize) -> (tempfile::TempDir, Vec<EncodedObject>) {
        let dir = tempfile::tempdir().unwrap();
        let store = PackStore::open(dir.path(), None).unwrap();
        let objects: Vec<_> = (0..n).map(event).collect();
        write_synced(&store, &objects);
        (dir, objects)
    }

    fn keys_path(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("pack-0000000000000001.keys")
    }

    #[test]
    fn an_open_reads_the_key_log_and_scans_only_the_uncovered_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackStore::open(dir.path(), None).unwrap();
        let objects: Vec<_> = (0..3000).map(event).collect();
        write_synced(&store, &objects);
        let pack_len = std::fs::metadata(dir.path().join("pack-0000000000000001.pack"))
            .unwrap()
            .len();
        assert!(pack_len > 200_000, "a pack of {pack_len} bytes");
        drop(store);
        let reopened = PackStore::open(dir.path(), None).unwrap();
        let tail = reopened.scan_work();
        assert!(
            tail <= super::super::keys::CHUNK_EVERY + 4096,
            "an open scanned {tail} of {pack_len} bytes"
        );
        for object in &objects {
            assert_eq!(reopened.read(&object.id()).unwrap().as_ref(), Some(object));
        }
        // Without the key log the same open scans the whole pack, and serves the same.
        drop(reopened);
        std::fs::remove_file(keys_path(dir.path())).unwrap();
        let scanned = PackStore::open(dir.path(), None).unwrap();
        assert!(
            scanned.scan_work() + 8 >= pack_len,
            "{}",
            scanned.scan_work()
        );
        for object in &objects {
            assert_eq!(scanned.read(&object.id()).unwrap().as_ref(), Some(object));
        }
        // The next durable writes rebuild the log, so the open after them is short again.
        write_synced(&scanned, &(5000..5400).map(event).collect::<Vec<_>>());
        drop(scanned);
        let again = PackStore::open(dir.path(), None).unwrap();
        assert!(again.scan_work() <= super::super::keys::CHUNK_EVERY + 4096);
    }

    #[test]
    fn a_torn_or_damaged_key_log_is_never_trusted_past_the_damage() {
        let (dir, objects) = synced_pack(2000);
        let log = std::fs::read(keys_path(dir.path())).unwrap();
        let cuts = [0, 7, 8, 9, 100, log.len() / 2, log.len() - 1];
        let flips = [3, 8, 20, 60, log.len() / 3, log.len() - 2];
        let damaged = cuts
            .iter()
            .map(|&cut| log[..cut].to_vec())
            .chain(flips.iter().map(|&at| {
                let mut bytes = log.clone();
                bytes[at] ^= 0x40;
                bytes
            }));
        for bytes in damaged {
            std::fs::write(keys_path(dir.path()), &bytes).unwrap();
            let reopened = PackStore::open(dir.path(), None).unwrap();
            for object in &objects {
                assert_eq!(reopened.read(&object.id()).unwrap().as_ref(), Some(object));
            }
            // A writer after it extends a log readers can use again.
            let extra = event(90_000 + bytes.len());
            write_synced(&reopened, std::slice::from_ref(&extra));
            drop(reopened);
            let fresh = PackStore::open(dir.path(), None).unwrap();
            assert!(fresh.read(&extra.id()).unwrap().is_some());
        }
    }

    #[test]
    fn a_key_log_reaching_past_its_pack_is_refused() {
        let (dir, objects) = synced_pack(2000);
        // The pack loses its tail (as no crash can do to fsynced data, but a restored backup may).
        let pack = dir.path().join("pack-0000000000000001.pack");
        let len = std::fs::metadata(&pack).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let reopened = PackStore::open(dir.path(), None).unwrap();
        let mut present = 0;
        for object in &objects {
            match reopened.read(&object.id()) {
                Ok(Some(found)) => {
                    assert_eq!(&found, object);
                    present += 1;
                }
                Ok(None) => {}
                Err(e) => panic!("a key log entry past the end was trusted: {e}"),
            }
        }
        assert!(present > 100 && present < objects.len(), "{present}");
    }

    #[test]
    fn damage_in_the_part_an_open_skipped_is_still_found_by_fsck_and_stops_gc() {
        let (dir, objects) = synced_pack(2000);
        let pack = dir.path().join("pack-0000000000000001.pack");
        let mut bytes = std::fs::read(&pack).unwrap();
        let middle = bytes.len() / 3;
        bytes[middle] ^= 0x08;
        std::fs::write(&pack, bytes).unwrap();
        let reopened = PackStore::open(dir.path(), None).unwrap();
        assert!(reopened.scan_work() < 64 << 10, "the open used the key log");
        let found = reopened.check_indexes().unwrap();
        assert!(
            found.iter().any(|p| p.contains("is damaged between bytes")),
            "{found:?}"
        );
        let all: Vec<_> = objects.iter().cloned().map(Ok).collect();
        let err = reopened.repack(all, &[]).unwrap_err();
        assert!(err.to_string().contains("will not delete"), "{err}");
    }

    #[test]
    fn sealing_removes_the_key_log_and_leftover_logs_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackStore::open(dir.path(), None).unwrap();
        write_synced(&store, &(0..2000).map(event).collect::<Vec<_>>());
        assert!(keys_path(dir.path()).exists());
        store.seal().unwrap();
        assert!(
            !keys_path(dir.path()).exists(),
            "the index replaces the log"
        );
        // A log left behind beside a sealed pack (a seal killed after its index) is removed.
        std::fs::write(keys_path(dir.path()), b"RETROKY1").unwrap();
        drop(store);
        let _reopened = PackStore::open(dir.path(), None).unwrap();
        assert!(!keys_path(dir.path()).exists());
    }

    #[test]
    fn a_corrupt_loose_object_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = LooseStore::new(dir.path());
        let object = event(1);
        store.write(std::slice::from_ref(&object)).unwrap();
        std::fs::write(store.path_of(&object.id()), b"garbage").unwrap();
        let err = store.read(&object.id()).unwrap_err();
        assert!(err.to_string().contains("does not inflate"), "{err}");
    }

    #[test]
    fn repack_folds_packs_and_loose_objects_into_one_compressed_pack() {
        let dir = tempfile::tempdir().unwrap();
        let loose = LooseStore::new(dir.path().join("objects"));
        let loose_objects: Vec<_> = (1000..1010).map(event).collect();
        loose.write(&loose_objects).unwrap();
        let store = PackStore::open(
            dir.path().join("packs"),
            Some(LooseStore::new(dir.path().join("objects"))),
        )
        .unwrap()
        .with_roll_size(1024);
        let objects: Vec<_> = (0..100).map(event).collect();
        for chunk in objects.chunks(10) {
            store.write(chunk).unwrap();
        }
        assert!(store.stats().unwrap().packs > 2);
        let all: Vec<_> = objects
            .iter()
            .chain(&loose_objects)
            .cloned()
            .map(Ok)
            .collect();
        let ids: Vec<_> = loose_objects.iter().map(|o| o.id()).collect();
        let stats = store.repack(all, &ids).unwrap();
        assert_eq!(stats.packs, 2, "one sealed pack and a fresh active one");
        for object in objects.iter().chain(&loose_objects) {
            assert_eq!(store.read(&object.id()).unwrap().as_ref(), Some(object));
        }
        assert!(!loose.contains(&loose_objects[0].id()).unwrap());
        assert!(store.check_indexes().unwrap().is_empty());
    }
}

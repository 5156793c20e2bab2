//! The one test suite every ref store must pass.

use super::{Error, Expected, LogInfo, RefEdit, RefName, RefStore, RefValue};
use crate::hash::ObjectId;

fn id(n: u8) -> ObjectId {
    ObjectId::of(&[n])
}

fn master() -> RefName {
    RefName::master()
}

fn log(message: &str) -> LogInfo {
    LogInfo {
        session: "s1".to_owned(),
        message: message.to_owned(),
    }
}

/// Runs every check against a fresh store made by `make`.
pub fn run(make: &dyn Fn() -> Box<dyn RefStore>) {
    create_then_compare_and_swap(make());
    conflict_carries_the_actual_value(make());
    must_not_exist_refuses_an_existing_ref(make());
    symbolic_head_is_followed(make());
    a_failed_transaction_changes_nothing(make());
    delete_and_list(make());
    reflog_records_every_move(make());
    d1_ref_names_that_clash_are_refused_before_anything_changes(make());
}

fn create_then_compare_and_swap(store: Box<dyn RefStore>) {
    store
        .transaction(&[RefEdit::cas(master(), None, id(1), log("create"))])
        .unwrap();
    assert_eq!(
        store.read(&master()).unwrap(),
        Some(RefValue::Direct(id(1)))
    );
    store
        .transaction(&[RefEdit::cas(master(), Some(id(1)), id(2), log("move"))])
        .unwrap();
    assert_eq!(store.resolve(&master()).unwrap().1, Some(id(2)));
}

fn conflict_carries_the_actual_value(store: Box<dyn RefStore>) {
    store
        .transaction(&[RefEdit::cas(master(), None, id(1), log("create"))])
        .unwrap();
    let err = store
        .transaction(&[RefEdit::cas(master(), Some(id(9)), id(2), log("stale"))])
        .unwrap_err();
    match err {
        Error::Conflict { name, actual, .. } => {
            assert_eq!(name, master());
            assert_eq!(actual, Some(RefValue::Direct(id(1))));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(
        store.read(&master()).unwrap(),
        Some(RefValue::Direct(id(1)))
    );
}

fn must_not_exist_refuses_an_existing_ref(store: Box<dyn RefStore>) {
    store
        .transaction(&[RefEdit::cas(master(), None, id(1), log("create"))])
        .unwrap();
    let err = store
        .transaction(&[RefEdit::cas(master(), None, id(2), log("again"))])
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

fn symbolic_head_is_followed(store: Box<dyn RefStore>) {
    store
        .transaction(&[RefEdit {
            name: RefName::head(),
            expected: Expected::Any,
            new: Some(RefValue::Symbolic(master())),
            log: LogInfo::default(),
        }])
        .unwrap();
    assert_eq!(store.resolve(&RefName::head()).unwrap(), (master(), None));
    store
        .transaction(&[RefEdit::cas(RefName::head(), None, id(3), log("via HEAD"))])
        .unwrap();
    assert_eq!(
        store.read(&master()).unwrap(),
        Some(RefValue::Direct(id(3)))
    );
    assert_eq!(
        store.read(&RefName::head()).unwrap(),
        Some(RefValue::Symbolic(master()))
    );
}

fn a_failed_transaction_changes_nothing(store: Box<dyn RefStore>) {
    let other = RefName::new("refs/heads/other").unwrap();
    store
        .transaction(&[RefEdit::cas(other.clone(), None, id(1), log("create"))])
        .unwrap();
    let err = store
        .transaction(&[
            RefEdit::cas(master(), None, id(5), log("a")),
            RefEdit::cas(other.clone(), Some(id(7)), id(6), log("b")),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }));
    assert_eq!(store.read(&master()).unwrap(), None);
    assert_eq!(store.read(&other).unwrap(), Some(RefValue::Direct(id(1))));
    assert!(store.reflog(&master()).unwrap().is_empty());
}

fn delete_and_list(store: Box<dyn RefStore>) {
    let consumer = RefName::new("refs/consumers/c1").unwrap();
    store
        .transaction(&[
            RefEdit::cas(master(), None, id(1), log("a")),
            RefEdit::cas(consumer.clone(), None, id(2), log("b")),
        ])
        .unwrap();
    let names: Vec<_> = store
        .list("refs/")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec![consumer.clone(), master()]);
    store
        .transaction(&[RefEdit {
            name: consumer.clone(),
            expected: Expected::MustBe(id(2)),
            new: None,
            log: log("delete"),
        }])
        .unwrap();
    assert_eq!(store.read(&consumer).unwrap(), None);
    assert_eq!(store.list("refs/consumers/").unwrap(), vec![]);
}

fn reflog_records_every_move(store: Box<dyn RefStore>) {
    store
        .transaction(&[RefEdit::cas(master(), None, id(1), log("first"))])
        .unwrap();
    store
        .transaction(&[RefEdit::cas(master(), Some(id(1)), id(2), log("second"))])
        .unwrap();
    let entries = store.reflog(&master()).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].old, None);
    assert_eq!(entries[0].new, Some(id(1)));
    assert_eq!(entries[1].old, Some(id(1)));
    assert_eq!(entries[1].new, Some(id(2)));
    assert_eq!(entries[1].session, "s1");
    assert_eq!(entries[1].message, "second");
}

fn d1_ref_names_that_clash_are_refused_before_anything_changes(store: Box<dyn RefStore>) {
    let name = |t: &str| RefName::new(t).unwrap();
    let clash = |err: Error| match err {
        Error::NameClash {
            name,
            other,
            same_transaction,
        } => (name.to_string(), other.to_string(), same_transaction),
        other => panic!("expected a name clash, got {other}"),
    };
    // A directory of refs, then its name as a ref.
    store
        .transaction(&[RefEdit::cas(name("refs/tags/x/y"), None, id(1), log("x/y"))])
        .unwrap();
    let err = store
        .transaction(&[RefEdit::cas(name("refs/tags/x"), None, id(2), log("x"))])
        .unwrap_err();
    assert_eq!(
        clash(err),
        ("refs/tags/x".to_owned(), "refs/tags/x/y".to_owned(), false)
    );
    assert!(err_text_names_both(&*store));
    assert_eq!(store.read(&name("refs/tags/x")).unwrap(), None);
    assert!(store.reflog(&name("refs/tags/x")).unwrap().is_empty());
    // A ref, then a name below it, deeper too.
    store
        .transaction(&[RefEdit::cas(name("refs/tags/a"), None, id(1), log("a"))])
        .unwrap();
    for below in ["refs/tags/a/b", "refs/tags/a/b/c"] {
        let err = store
            .transaction(&[RefEdit::cas(name(below), None, id(2), log("below"))])
            .unwrap_err();
        assert_eq!(
            clash(err),
            (below.to_owned(), "refs/tags/a".to_owned(), false)
        );
        assert_eq!(store.read(&name(below)).unwrap(), None);
    }
    // Both in one transaction, in either order: neither is created.
    for pair in [
        ["refs/tags/p", "refs/tags/p/q"],
        ["refs/tags/r/s", "refs/tags/r"],
    ] {
        let err = store
            .transaction(&[
                RefEdit::cas(name(pair[0]), None, id(1), log("first")),
                RefEdit::cas(name(pair[1]), None, id(2), log("second")),
            ])
            .unwrap_err();
        assert_eq!(clash(err), (pair[1].to_owned(), pair[0].to_owned(), true));
        assert_eq!(store.read(&name(pair[0])).unwrap(), None);
        assert_eq!(store.read(&name(pair[1])).unwrap(), None);
    }
    // Names that only share a prefix do not clash; the existing refs still move.
    store
        .transaction(&[RefEdit::cas(name("refs/tags/xy"), None, id(3), log("xy"))])
        .unwrap();
    store
        .transaction(&[RefEdit::cas(
            name("refs/tags/x/y"),
            Some(id(1)),
            id(4),
            log("move"),
        )])
        .unwrap();
    let names: Vec<String> = store
        .list("refs/tags/")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, ["refs/tags/a", "refs/tags/x/y", "refs/tags/xy"]);
}

/// The clash message names both refs.
fn err_text_names_both(store: &dyn RefStore) -> bool {
    let err = store
        .transaction(&[RefEdit::cas(
            RefName::new("refs/tags/x").unwrap(),
            None,
            id(2),
            log("x"),
        )])
        .unwrap_err()
        .to_string();
    err.contains("'refs/tags/x'") && err.contains("'refs/tags/x/y'")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::refdb::{FilesRefStore, LockFile, MemoryRefStore};

    #[test]
    fn memory_refs_conform() {
        run(&|| Box::new(MemoryRefStore::new()));
    }

    #[test]
    fn files_refs_conform() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::cell::Cell::new(0);
        run(&|| {
            counter.set(counter.get() + 1);
            let root = dir.path().join(counter.get().to_string());
            std::fs::create_dir_all(&root).unwrap();
            Box::new(FilesRefStore::new(&root, root.join("lock")))
        });
    }

    #[test]
    fn a_stale_lock_file_of_a_dead_writer_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesRefStore::new(dir.path(), dir.path().join("lock"));
        std::fs::create_dir_all(dir.path().join("refs/heads")).unwrap();
        std::fs::write(dir.path().join("refs/heads/master.lock"), "half-written").unwrap();
        store
            .transaction(&[RefEdit::cas(master(), None, id(1), log("after crash"))])
            .unwrap();
        assert_eq!(
            store.read(&master()).unwrap(),
            Some(RefValue::Direct(id(1)))
        );
        assert!(!dir.path().join("refs/heads/master.lock").exists());
    }

    #[test]
    fn a_lock_held_by_a_live_writer_names_the_file_and_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join("lock");
        let holder = LockFile::new(&lock_path);
        let _held = holder.acquire(Duration::from_secs(1)).unwrap();
        let store = FilesRefStore::new(dir.path(), &lock_path)
            .with_lock_timeout(Duration::from_millis(100));
        let err = store
            .transaction(&[RefEdit::cas(master(), None, id(1), log("blocked"))])
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&lock_path.display().to_string()), "{text}");
    }

    #[test]
    fn d1_a_deleted_refs_directory_and_reflog_do_not_brick_a_new_ref() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesRefStore::new(dir.path(), dir.path().join("lock"));
        let below = RefName::new("refs/tags/x/y").unwrap();
        let x = RefName::new("refs/tags/x").unwrap();
        store
            .transaction(&[RefEdit::cas(below.clone(), None, id(1), log("x/y"))])
            .unwrap();
        store
            .transaction(&[RefEdit {
                name: below.clone(),
                expected: Expected::MustBe(id(1)),
                new: None,
                log: log("delete"),
            }])
            .unwrap();
        // The reflog of the deleted ref is kept, in the way of x's: it moves aside (its history
        // kept under logs/deleted/), and the directory the deleted ref left is no obstacle.
        assert!(dir.path().join("refs/tags/x").is_dir());
        store
            .transaction(&[RefEdit::cas(x.clone(), None, id(2), log("x"))])
            .unwrap();
        assert_eq!(store.read(&x).unwrap(), Some(RefValue::Direct(id(2))));
        assert_eq!(store.reflog(&x).unwrap().len(), 1);
        let aside: Vec<String> = std::fs::read_dir(dir.path().join("logs/deleted"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with("refs%2Ftags%2Fx%2Fy."), "{aside:?}");
        // And the other way: a deleted x's reflog is in the way of x/y's.
        store
            .transaction(&[RefEdit {
                name: x.clone(),
                expected: Expected::MustBe(id(2)),
                new: None,
                log: log("delete x"),
            }])
            .unwrap();
        store
            .transaction(&[RefEdit::cas(below.clone(), None, id(3), log("x/y again"))])
            .unwrap();
        assert_eq!(store.read(&below).unwrap(), Some(RefValue::Direct(id(3))));
    }

    #[test]
    fn ref_files_are_written_as_go_retro_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilesRefStore::new(dir.path(), dir.path().join("lock"));
        store
            .transaction(&[RefEdit::cas(master(), None, id(1), log("x"))])
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("refs/heads/master")).unwrap();
        assert_eq!(text, id(1).to_string());
    }
}

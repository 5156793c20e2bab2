//! Partial clones through the library: the filter is durable, two handles widening it in turn
//! both count, and the library refuses writes outside it.

use std::sync::Arc;

use depot::{CommitRequest, Depot, PartialFilter, SyncOptions};

use crate::common::{ev, p};

/// A source with events in `accounts/a`, `notes/n` and `tags/t`.
fn source() -> Depot {
    let source = Depot::in_memory().unwrap();
    for partition in ["accounts/a", "notes/n", "tags/t"] {
        source
            .commit(CommitRequest::new(
                source.head().unwrap(),
                // Distinct bytes: an event of the same bytes elsewhere would be the same object.
                vec![(
                    p(partition),
                    ev("Happened", &format!(r#"{{"in":"{partition}"}}"#)),
                )],
                "s",
                "c",
            ))
            .unwrap();
    }
    source
}

fn widen(depot: &Depot, source: &Depot, glob: &str) {
    let options = SyncOptions {
        partitions: Some(PartialFilter::new([glob]).unwrap()),
        ..SyncOptions::default()
    };
    depot.sync_from(source, &options, |_| {}).unwrap();
}

#[test]
fn two_handles_widening_in_turn_lose_neither_glob() {
    let tmp = tempfile::tempdir().unwrap();
    let source = source();
    let first = Depot::init(tmp.path()).unwrap();
    first
        .begin_partial_clone(&PartialFilter::new(["accounts/*"]).unwrap())
        .unwrap();
    first
        .sync_from(&source, &SyncOptions::default(), |_| {})
        .unwrap();
    // Both handles read the filter `accounts/*`; each widens by its own glob, one after the
    // other: the second must add to what the first wrote, not to what it read at open.
    let second = Arc::new(Depot::open(tmp.path()).unwrap());
    widen(&second, &source, "notes/*");
    widen(&first, &source, "tags/*");
    let reopened = Depot::open(tmp.path()).unwrap();
    assert_eq!(
        reopened.partial_filter().unwrap().globs(),
        ["accounts/*", "notes/*", "tags/*"]
    );
    for partition in ["accounts/a", "notes/n", "tags/t"] {
        assert_eq!(reopened.partition_events(&p(partition)).unwrap().len(), 1);
    }
    let report = reopened.fsck(|_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.absent_by_filter, 0);
    // A handle that read the old filter sees the widening when it reads a newly held partition.
    assert_eq!(first.partition_events(&p("notes/n")).unwrap().len(), 1);
}

#[test]
fn a_partial_clone_refuses_writes_outside_its_filter_and_is_set_only_when_empty() {
    let source = source();
    let clone = Depot::in_memory().unwrap();
    let filter = PartialFilter::new(["accounts/*"]).unwrap();
    clone.begin_partial_clone(&filter).unwrap();
    clone
        .sync_from(&source, &SyncOptions::default(), |_| {})
        .unwrap();
    let head = clone.head().unwrap();
    let outside = CommitRequest::new(
        head,
        vec![
            (p("accounts/a"), ev("Fine", "{}")),
            (p("notes/n"), ev("No", "{}")),
        ],
        "s",
        "c",
    );
    let err = clone.commit(outside).unwrap_err();
    assert!(
        matches!(err, depot::Error::OutsidePartialClone { ref partition, .. } if partition == "notes/n"),
        "{err}"
    );
    assert_eq!(err.class(), depot::ErrorClass::Invalid);
    assert_eq!(clone.head().unwrap(), head);
    // An event read by id, absent by design, says so.
    let affix = clone
        .read_affix(&clone.read_checkpoint(&head.unwrap()).unwrap().affix())
        .unwrap();
    let (_, ids) = affix.partitions().next().unwrap();
    let err = clone.read_event(&ids[0]).unwrap_err();
    assert!(
        matches!(err, depot::Error::AbsentFromPartialClone { .. }),
        "{err}"
    );
    // The filter is set when a clone begins, not on a depot with history.
    assert!(matches!(
        clone.begin_partial_clone(&filter),
        Err(depot::Error::Invalid(_))
    ));
    let full = Depot::in_memory().unwrap();
    full.sync_from(&source, &SyncOptions::default(), |_| {})
        .unwrap();
    assert!(matches!(
        full.begin_partial_clone(&filter),
        Err(depot::Error::Invalid(_))
    ));
}

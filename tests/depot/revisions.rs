//! Revision syntax resolved against a depot.

use depot::{Depot, Error, Prefix};

use crate::common::*;

#[test]
fn revisions_resolve_like_git() {
    let depot = Depot::in_memory().unwrap();
    let ids: Vec<_> = (0..4)
        .map(|n| commit_retrying(&depot, workload(n, "s"), "x").checkpoint)
        .collect();
    assert_eq!(depot.resolve_revision("HEAD").unwrap(), ids[3]);
    assert_eq!(depot.resolve_revision("master").unwrap(), ids[3]);
    assert_eq!(depot.resolve_revision("refs/heads/master").unwrap(), ids[3]);
    assert_eq!(depot.resolve_revision("HEAD~3").unwrap(), ids[0]);
    assert_eq!(depot.resolve_revision("HEAD^").unwrap(), ids[2]);
    assert_eq!(depot.resolve_revision("HEAD~1^1").unwrap(), ids[1]);
    assert_eq!(depot.resolve_revision("HEAD^0").unwrap(), ids[3]);
    assert_eq!(depot.resolve_revision(&ids[1].to_string()).unwrap(), ids[1]);
    assert_eq!(
        depot.resolve_revision(&ids[1].to_short_hex(12)).unwrap(),
        ids[1]
    );
    assert!(matches!(
        depot.resolve_revision("HEAD~9"),
        Err(Error::BadRevision { .. })
    ));
    assert!(matches!(
        depot.resolve_revision("HEAD^2"),
        Err(Error::BadRevision { .. })
    ));
    assert!(matches!(
        depot.resolve_revision("nosuchref"),
        Err(Error::UnknownRevision(_))
    ));
    assert!(matches!(
        depot.resolve_revision("dead"),
        Err(Error::UnknownRevision(_))
    ));
}

#[test]
fn an_ambiguous_prefix_is_a_clear_error() {
    let depot = Depot::in_memory().unwrap();
    // 600 events: some pair shares its first 4 hex digits... find one by brute force.
    let mut seen = std::collections::HashMap::new();
    let mut n = 0u64;
    let prefix = loop {
        let committed = commit_retrying(&depot, workload(n, "s"), "x");
        let mut found = None;
        for id in committed
            .events
            .iter()
            .chain([&committed.checkpoint, &committed.affix])
        {
            let short = id.to_short_hex(4);
            if seen
                .insert(short.clone(), *id)
                .is_some_and(|other| other != *id)
            {
                found = Some(short);
            }
        }
        if let Some(short) = found {
            break short;
        }
        n += 1;
    };
    let err = depot
        .resolve_prefix(&prefix.parse::<Prefix>().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::AmbiguousPrefix { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("prefix '{prefix}' is ambiguous")),
        "{err}"
    );
}

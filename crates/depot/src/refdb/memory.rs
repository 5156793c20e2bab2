//! Refs in memory, for tests and embedding. Transactions are atomic under one mutex.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{
    check_clashes, prepare_edits, Error, RefEdit, RefName, RefStore, RefValue, ReflogEntry,
};

fn under(refs: &BTreeMap<RefName, RefValue>, name: &RefName) -> Vec<RefName> {
    let prefix = format!("{name}/");
    refs.keys()
        .filter(|n| n.as_str().starts_with(&prefix))
        .cloned()
        .collect()
}

#[derive(Default)]
struct Inner {
    refs: BTreeMap<RefName, RefValue>,
    logs: BTreeMap<RefName, Vec<ReflogEntry>>,
}

/// A ref store that lives in a map.
#[derive(Default)]
pub struct MemoryRefStore {
    inner: Mutex<Inner>,
}

impl MemoryRefStore {
    /// An empty store.
    pub fn new() -> MemoryRefStore {
        MemoryRefStore::default()
    }
}

impl RefStore for MemoryRefStore {
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, Error> {
        Ok(self
            .inner
            .lock()
            .expect("memory ref store poisoned")
            .refs
            .get(name)
            .cloned())
    }

    fn transaction(&self, edits: &[RefEdit]) -> Result<(), Error> {
        let mut inner = self.inner.lock().expect("memory ref store poisoned");
        let prepared = prepare_edits(edits, |n| Ok(inner.refs.get(n).cloned()))?;
        check_clashes(
            &prepared,
            |n| Ok(inner.refs.get(n).cloned()),
            |n| Ok(under(&inner.refs, n)),
        )?;
        let date = chrono::Utc::now();
        for (edit, old) in prepared {
            match &edit.new {
                Some(value) => inner.refs.insert(edit.name.clone(), value.clone()),
                None => inner.refs.remove(&edit.name),
            };
            if !matches!(edit.new, Some(RefValue::Symbolic(_))) {
                inner
                    .logs
                    .entry(edit.name.clone())
                    .or_default()
                    .push(ReflogEntry {
                        old: old.as_ref().and_then(RefValue::id),
                        new: edit.new.as_ref().and_then(RefValue::id),
                        date,
                        session: edit.log.session.clone(),
                        message: edit.log.message.clone(),
                    });
            }
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, Error> {
        Ok(self
            .inner
            .lock()
            .expect("memory ref store poisoned")
            .refs
            .iter()
            .filter(|(n, _)| n.as_str().starts_with(prefix))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect())
    }

    fn list_under(&self, name: &RefName) -> Result<Vec<RefName>, Error> {
        Ok(under(
            &self.inner.lock().expect("memory ref store poisoned").refs,
            name,
        ))
    }

    fn reflog(&self, name: &RefName) -> Result<Vec<ReflogEntry>, Error> {
        Ok(self
            .inner
            .lock()
            .expect("memory ref store poisoned")
            .logs
            .get(name)
            .cloned()
            .unwrap_or_default())
    }
}

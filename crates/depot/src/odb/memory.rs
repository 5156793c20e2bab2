//! An object store in memory, for tests and for applications that embed a throw-away depot.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{Error, ObjectStore};
use crate::hash::{ObjectId, Prefix};
use crate::object::EncodedObject;

/// Objects in a sorted map; nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    objects: RwLock<BTreeMap<ObjectId, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Replaces the stored bytes of `id` (tests use it to simulate corruption).
    pub fn overwrite_for_test(&self, id: ObjectId, bytes: Vec<u8>) {
        self.objects
            .write()
            .expect("memory store lock poisoned")
            .insert(id, bytes);
    }
}

impl ObjectStore for MemoryStore {
    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, Error> {
        let bytes = self
            .objects
            .read()
            .expect("memory store lock poisoned")
            .get(id)
            .cloned();
        bytes.map(|b| super::verify(id, b)).transpose()
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Error> {
        Ok(self
            .objects
            .read()
            .expect("memory store lock poisoned")
            .contains_key(id))
    }

    fn write(&self, objects: &[EncodedObject]) -> Result<(), Error> {
        let mut map = self.objects.write().expect("memory store lock poisoned");
        for object in objects {
            map.entry(object.id())
                .or_insert_with(|| object.bytes().to_vec());
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn for_each_id(&self, f: &mut dyn FnMut(ObjectId) -> Result<(), Error>) -> Result<(), Error> {
        let ids: Vec<ObjectId> = self
            .objects
            .read()
            .expect("memory store lock poisoned")
            .keys()
            .copied()
            .collect();
        ids.into_iter().try_for_each(f)
    }

    fn find_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<ObjectId>, Error> {
        let map = self.objects.read().expect("memory store lock poisoned");
        Ok(map
            .range(prefix.lower_bound()..)
            .map(|(id, _)| *id)
            .take_while(|id| prefix.matches(id))
            .take(limit)
            .collect())
    }

    fn describe(&self) -> String {
        "memory store".to_owned()
    }
}

//! Objects in PostgreSQL: one row per object, keyed by the raw 32-byte id.

use crate::{PgConnection, PgError};
use depot::odb::{Error, ObjectStore};
use depot::EncodedObject;
use depot::{ObjectId, Prefix};

/// How many ids one page of [`ObjectStore::for_each_id`] fetches.
const ID_PAGE: i64 = 10_000;

/// Inserts `$1` ids with `$2` bodies (distinct ids: see [`object_arrays`]). An object already
/// there keeps its bytes but is marked written now, under a row lock: a gc prune deciding at
/// the same moment that the old row is unreachable either deletes it first (and this inserts it
/// again) or finds it young and keeps it. So a commit never ends up naming a pruned object.
pub(super) const INSERT_OBJECTS: &str = "INSERT INTO retro_objects (id, body)
     SELECT * FROM unnest($1::bytea[], $2::bytea[])
     ON CONFLICT (id) DO UPDATE SET written = EXCLUDED.written";

/// The id and body arrays for [`INSERT_OBJECTS`] and `retro_commit`, each id once (an upsert
/// may not touch a row twice in one statement).
pub(super) fn object_arrays(objects: &[EncodedObject]) -> (Vec<Vec<u8>>, Vec<&[u8]>) {
    let mut seen = std::collections::HashSet::new();
    objects
        .iter()
        .filter(|o| seen.insert(o.id()))
        .map(|o| (o.id().as_bytes().to_vec(), o.bytes()))
        .unzip()
}

/// Unreachable object rows deleted per statement by [`PgObjectStore::prune`].
const PRUNE_BATCH: usize = 1000;

/// The object store of a PostgreSQL depot.
pub struct PgObjectStore {
    connection: PgConnection,
}

impl PgObjectStore {
    /// A store over an open connection (the schema must exist: see [`crate::schema`]).
    pub fn new(connection: PgConnection) -> PgObjectStore {
        PgObjectStore { connection }
    }
}

impl PgObjectStore {
    /// Deletes the objects not in `keep` that were written more than `grace` ago by the server's
    /// clock (so hosts' clock skew does not matter); returns how many rows remain and how many
    /// were deleted. The caller holds the ref lock (see
    /// [`crate::RefLockGuard`]), so no commit can start referencing a doomed row meanwhile.
    pub fn prune(
        &self,
        keep: &std::collections::HashSet<ObjectId>,
        grace: std::time::Duration,
        mut progress: impl FnMut(u64),
    ) -> Result<(u64, u64), Error> {
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut seen = 0u64;
        self.for_each_id(&mut |id| {
            seen += 1;
            if seen.is_multiple_of(10_000) {
                progress(seen);
            }
            if !keep.contains(&id) {
                doomed.push(id.as_bytes().to_vec());
            }
            Ok(())
        })?;
        let grace = grace.as_secs_f64();
        let mut pruned = 0;
        for batch in doomed.chunks(PRUNE_BATCH) {
            pruned += self
                .connection
                .with("prune objects", |session| {
                    session.execute(
                        "DELETE FROM retro_objects
                         WHERE id = ANY($1) AND written < now() - make_interval(secs => $2)",
                        &[&batch, &grace],
                    )
                })
                .map_err(backend)?;
        }
        Ok((seen - pruned, pruned))
    }

    /// The bytes the object table takes on disk (with its index and TOAST).
    pub fn table_bytes(&self) -> Result<u64, Error> {
        let bytes: i64 = self
            .connection
            .with("measure the object table", |session| {
                session
                    .query_opt("SELECT pg_total_relation_size('retro_objects')", &[])?
                    .map_or(Ok(0), |r| r.try_get(0))
            })
            .map_err(backend)?;
        Ok(bytes.max(0) as u64)
    }
}

fn backend(err: PgError) -> Error {
    Error::Backend(crate::backend_error(err))
}

impl ObjectStore for PgObjectStore {
    fn read(&self, id: &ObjectId) -> Result<Option<EncodedObject>, Error> {
        let body: Option<Vec<u8>> = self
            .connection
            .with("read an object", |session| {
                let row = session.query_opt(
                    "SELECT body FROM retro_objects WHERE id = $1",
                    &[&&id.as_bytes()[..]],
                )?;
                row.map(|r| r.try_get(0)).transpose()
            })
            .map_err(backend)?;
        body.map(|bytes| depot::odb::verify(id, bytes)).transpose()
    }

    fn read_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<EncodedObject>>, Error> {
        if ids.len() < 2 {
            return ids.iter().map(|id| self.read(id)).collect();
        }
        let keys: Vec<&[u8]> = ids.iter().map(|id| &id.as_bytes()[..]).collect();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .connection
            .with("read objects", |session| {
                session
                    .query(
                        "SELECT id, body FROM retro_objects WHERE id = ANY($1)",
                        &[&keys],
                    )?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            })
            .map_err(backend)?;
        let mut found: std::collections::HashMap<ObjectId, Vec<u8>> = rows
            .into_iter()
            .map(|(id, body)| Ok((stored_id(&id)?, body)))
            .collect::<Result<_, Error>>()?;
        ids.iter()
            .map(|id| match found.remove(id) {
                Some(bytes) => depot::odb::verify(id, bytes).map(Some),
                // Asked twice: read it again.
                None => self.read(id),
            })
            .collect()
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Error> {
        self.connection
            .with("look up an object", |session| {
                let row = session.query_opt(
                    "SELECT 1 FROM retro_objects WHERE id = $1",
                    &[&&id.as_bytes()[..]],
                )?;
                Ok(row.is_some())
            })
            .map_err(backend)
    }

    /// Inserts the objects in one statement (one transaction): durable when it returns.
    fn write(&self, objects: &[EncodedObject]) -> Result<(), Error> {
        if objects.is_empty() {
            return Ok(());
        }
        let (ids, bodies) = object_arrays(objects);
        self.connection
            .with("write objects", |session| {
                session.execute(INSERT_OBJECTS, &[&ids, &bodies])
            })
            .map_err(backend)?;
        Ok(())
    }

    /// Every write is committed before it returns: nothing to do.
    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn for_each_id(&self, f: &mut dyn FnMut(ObjectId) -> Result<(), Error>) -> Result<(), Error> {
        let mut after: Vec<u8> = Vec::new();
        loop {
            // Keyset pages: the connection is not held while `f` runs.
            let page: Vec<Vec<u8>> = self
                .connection
                .with("list objects", |session| {
                    session
                        .query(
                            "SELECT id FROM retro_objects WHERE id > $1 ORDER BY id LIMIT $2",
                            &[&after, &ID_PAGE],
                        )?
                        .iter()
                        .map(|r| r.try_get(0))
                        .collect()
                })
                .map_err(backend)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.clone();
            for raw in page {
                f(stored_id(&raw)?)?;
            }
        }
    }

    fn find_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<ObjectId>, Error> {
        let lower = prefix.lower_bound();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Vec<u8>> = self
            .connection
            .with("look up an id prefix", |session| {
                session
                    .query(
                        "SELECT id FROM retro_objects WHERE id >= $1 ORDER BY id LIMIT $2",
                        &[&&lower.as_bytes()[..], &limit],
                    )?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect()
            })
            .map_err(backend)?;
        let mut found = Vec::new();
        for raw in rows {
            let id = stored_id(&raw)?;
            if !prefix.matches(&id) {
                break;
            }
            found.push(id);
        }
        Ok(found)
    }

    fn describe(&self) -> String {
        format!("PostgreSQL object store at {}", self.connection.shown_url())
    }
}

fn stored_id(raw: &[u8]) -> Result<ObjectId, Error> {
    ObjectId::from_slice(raw).ok_or_else(|| {
        Error::Backend(depot::BackendError::new(
            depot::ErrorClass::Corrupt,
            format!("retro_objects holds an id of {} bytes, not 32", raw.len()),
        ))
    })
}

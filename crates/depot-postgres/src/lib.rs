//! The PostgreSQL backend: a depot whose objects, refs, reflogs and failed-command records live
//! in one PostgreSQL database, so that any number of hosts apply commands to one history with the
//! same guarantees as a files depot.
//!
//! - [`PgObjectStore`]: `retro_objects(id, body)`, every read verified by hash;
//! - [`PgRefStore`]: `retro_refs(name, value)` moved by compare-and-swap inside one transaction
//!   that also appends `retro_reflog` rows and sends `NOTIFY retro_refs` (cross-host watch);
//! - [`PgIndex`]: the partition index as tables of the same database, appended by the commit's
//!   own transaction;
//! - [`PgGroupStore`]: consumer groups, one `retro_groups` row each, updated under an advisory
//!   lock with the server's clock;
//! - [`schema`]: the versioned schema and its migrations.
//!
//! Writes are durable when PostgreSQL commits them (its WAL is fsynced at commit). Objects are
//! committed before the ref transaction that references them, as in every other layout.

mod connection;
mod groups;
mod index;
mod objects;
mod refs;
pub mod schema;

use std::sync::Arc;

use depot::index::PartitionIndex;
use depot::{Backend, BackendError, Depot, ErrorClass, FailureStore, Maintenance, ObjectId};

pub use connection::{PgConnection, PgSession, CA_FILE_VAR};
pub use groups::PgGroupStore;
pub use index::{PgIndex, PgIndexWriter};
pub use objects::PgObjectStore;
pub use refs::{PgListener, PgRefStore, RefLockGuard};

/// The backend's name, in messages and [`depot::Layout::Backend`].
pub const NAME: &str = "PostgreSQL";

/// Creates a depot in the PostgreSQL database at `url` (which must not hold one yet): the
/// schema, then `HEAD` pointing at `refs/heads/master`.
pub fn init(url: &str) -> Result<Depot, depot::Error> {
    let connection = PgConnection::connect(url)?;
    schema::create(&connection)?;
    open(url)
}

/// Opens the depot in the PostgreSQL database at `url`, migrating its schema if it is older
/// than this build's. The partition index lives in the same database, appended by each
/// commit's own transaction.
pub fn open(url: &str) -> Result<Depot, depot::Error> {
    let connection = PgConnection::connect(url)?;
    schema::open(&connection)?;
    let objects = Arc::new(PgObjectStore::new(connection));
    let refs = Arc::new(PgRefStore::new(PgConnection::connect(url)?));
    let index = PartitionIndex::new(PgIndex::new(PgConnection::connect(url)?));
    Depot::from_backend(Backend {
        name: NAME,
        objects: objects.clone(),
        refs: refs.clone(),
        index,
        failures: refs,
        maintenance: Some(Arc::new(PgMaintenance {
            objects,
            url: url.to_owned(),
        })),
        groups: Some(Arc::new(PgGroupStore::new(PgConnection::connect(url)?))),
    })
}

/// gc on PostgreSQL: prune under the ref lock (every commit on every host waits).
struct PgMaintenance {
    objects: Arc<PgObjectStore>,
    url: String,
}

impl Maintenance for PgMaintenance {
    fn lock_commits(&self) -> Result<Box<dyn std::any::Any>, depot::Error> {
        Ok(Box::new(RefLockGuard::acquire(&self.url)?))
    }

    fn prune(
        &self,
        keep: &std::collections::HashSet<ObjectId>,
        grace: std::time::Duration,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u64, u64), depot::Error> {
        Ok(self.objects.prune(keep, grace, progress)?)
    }

    fn bytes(&self) -> Result<u64, depot::Error> {
        Ok(self.objects.table_bytes()?)
    }
}

impl FailureStore for PgRefStore {
    fn append_failure(&self, id: &ObjectId) -> Result<(), depot::Error> {
        Ok(PgRefStore::append_failure(self, id)?)
    }

    fn failures(&self) -> Result<Vec<ObjectId>, depot::Error> {
        Ok(PgRefStore::failures(self)?)
    }
}

impl From<PgError> for depot::Error {
    fn from(err: PgError) -> Self {
        depot::Error::Backend(backend_error(err))
    }
}

/// A PostgreSQL failure as the depot carries it: with its class.
pub(crate) fn backend_error(err: PgError) -> BackendError {
    BackendError::new(err.class(), err)
}

impl PgError {
    /// What a caller should do about it: a missing depot, one already there, a schema too new,
    /// bad TLS settings, or an authentication failure are to fix; a server that cannot be
    /// reached, is shutting down or short of connections is retryable.
    pub fn class(&self) -> ErrorClass {
        match self {
            PgError::NotADepot(_) => ErrorClass::NotFound,
            PgError::AlreadyExists(_) => ErrorClass::Invalid,
            PgError::SchemaTooNew { .. } => ErrorClass::Invalid,
            PgError::Corrupt { .. } => ErrorClass::Corrupt,
            // A certificate that does not verify is a setting to fix, not a wait.
            PgError::Tls(_) => ErrorClass::Invalid,
            PgError::Connect { source, .. } | PgError::Query { source, .. } => pg_class(source),
        }
    }
}

/// The class of a PostgreSQL failure: the server's SQLSTATE when it answered (authentication,
/// a missing database: fix the settings; too many connections, shutting down, a lost connection:
/// retry), a TLS failure is a setting to fix, anything else on the way there is retryable.
pub(crate) fn pg_class(err: &postgres::Error) -> ErrorClass {
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        return match &code[..2] {
            "08" | "40" | "53" | "55" | "57" | "58" => ErrorClass::Unavailable,
            "23" => ErrorClass::Conflict,
            "XX" => ErrorClass::Corrupt,
            _ => ErrorClass::Invalid,
        };
    }
    if is_tls_failure(err) {
        ErrorClass::Invalid
    } else {
        ErrorClass::Unavailable
    }
}

/// True when a connection failed in TLS (a certificate, a protocol), not in reaching the server.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// Whether `location` names a PostgreSQL depot (`postgres://…` or `postgresql://…`).
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The server could not be reached or refused the connection.
    #[error("could not connect to PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The cause.
        source: postgres::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL at {url}: could not {what}: {source}")]
    Query {
        /// The URL, password redacted.
        url: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: postgres::Error,
    },
    /// The TLS set-up failed (an unreadable `RETRO_PG_CA_FILE`, say).
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    /// The database has no retro schema.
    #[error("{0} holds no retro depot (create one with 'retro init {0}')")]
    NotADepot(String),
    /// `init` found a retro schema already there.
    #[error("{0} already holds a retro depot")]
    AlreadyExists(String),
    /// The schema is newer than this build understands.
    #[error("{url} has schema version {found}; this retro knows versions up to {known}")]
    SchemaTooNew {
        /// The URL, password redacted.
        url: String,
        /// The database's version.
        found: i32,
        /// The newest version this build knows.
        known: i32,
    },
    /// A stored value does not parse.
    #[error("PostgreSQL at {url}: {what} is corrupt: {reason}")]
    Corrupt {
        /// The URL, password redacted.
        url: String,
        /// The row.
        what: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use depot::odb::ObjectStore;
    use depot::refdb::{Expected, LogInfo, RefEdit, RefName, RefStore, RefValue};
    use depot::EventName;
    use depot::ObjectId;
    use depot::{Event, Object};

    /// A fresh database with the retro schema, on the shared throw-away server.
    fn fresh() -> String {
        let url = pgtest::PgServer::shared().create_database();
        schema::create(&PgConnection::connect(&url).unwrap()).unwrap();
        url
    }

    fn event(i: usize) -> depot::EncodedObject {
        Object::Event(Event::new(
            EventName::new("Counted").unwrap(),
            format!("{{\"n\":{i}}}"),
        ))
        .to_encoded()
    }

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(is_url("postgres://u@h/db"));
        assert!(is_url("postgresql://u@h/db"));
        assert!(!is_url("./postgres"));
        assert_eq!(
            redact("postgres://ada:secret@db.example:5432/retro"),
            "postgres://ada:***@db.example:5432/retro"
        );
        assert_eq!(redact("postgres://ada@h/db"), "postgres://ada@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn postgres_object_store_conforms() {
        depot::odb::conformance::run(&|| {
            Box::new(PgObjectStore::new(PgConnection::connect(&fresh()).unwrap()))
        });
    }

    #[test]
    fn postgres_ref_store_conforms() {
        depot::refdb::conformance::run(&|| {
            Box::new(PgRefStore::new(PgConnection::connect(&fresh()).unwrap()))
        });
    }

    #[test]
    fn a_corrupt_row_is_reported_not_served() {
        let url = fresh();
        let store = PgObjectStore::new(PgConnection::connect(&url).unwrap());
        let object = event(1);
        store.write(std::slice::from_ref(&object)).unwrap();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .execute("UPDATE retro_objects SET body = 'garbage'::bytea", &[])
            .unwrap();
        let err = store.read(&object.id()).unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[test]
    fn the_schema_is_created_once_and_checked_on_open() {
        let url = pgtest::PgServer::shared().create_database();
        let connection = PgConnection::connect(&url).unwrap();
        assert!(matches!(
            schema::open(&connection),
            Err(PgError::NotADepot(_))
        ));
        let id = schema::create(&connection).unwrap();
        assert_eq!(schema::open(&connection).unwrap(), id);
        assert!(matches!(
            schema::create(&connection),
            Err(PgError::AlreadyExists(_))
        ));
        assert_eq!(
            schema::read_version(&connection).unwrap(),
            Some(schema::CURRENT_VERSION)
        );
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .execute(
                "UPDATE retro_meta SET value = '999' WHERE key = 'schema_version'",
                &[],
            )
            .unwrap();
        let err = schema::open(&connection).unwrap_err();
        assert!(
            matches!(err, PgError::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_server_is_a_clear_error() {
        let err = PgConnection::connect("postgres://postgres@127.0.0.1:1/none")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "could not connect to PostgreSQL at postgres://postgres@127.0.0.1:1/none"
            ),
            "{text}"
        );
    }

    #[test]
    fn concurrent_compare_and_swaps_lose_no_update() {
        let url = fresh();
        let master = RefName::master();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let url = url.clone();
                let master = master.clone();
                std::thread::spawn(move || {
                    let store = PgRefStore::new(PgConnection::connect(&url).unwrap());
                    let mut won = 0;
                    while won < 25 {
                        let old = store.read(&master).unwrap().and_then(|v| v.id());
                        let new = ObjectId::of(format!("{t}-{won}").as_bytes());
                        let edit = RefEdit::cas(master.clone(), old, new, LogInfo::default());
                        match store.transaction(&[edit]) {
                            Ok(()) => won += 1,
                            Err(depot::refdb::Error::Conflict { .. }) => {}
                            Err(other) => panic!("{other}"),
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let store = PgRefStore::new(PgConnection::connect(&url).unwrap());
        let log = store.reflog(&master).unwrap();
        assert_eq!(log.len(), 100);
        for pair in log.windows(2) {
            assert_eq!(
                pair[0].new, pair[1].old,
                "every move starts where the last ended"
            );
        }
    }

    #[test]
    fn a_listener_wakes_when_a_ref_moves() {
        let url = fresh();
        let store = Arc::new(PgRefStore::new(PgConnection::connect(&url).unwrap()));
        let mut listener = store.listener().expect("PostgreSQL listens");
        assert!(
            !listener.wait(Duration::from_millis(50)),
            "nothing moved yet"
        );
        let mover = store.clone();
        let start = Instant::now();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            mover
                .transaction(&[RefEdit {
                    name: RefName::master(),
                    expected: Expected::MustNotExist,
                    new: Some(RefValue::Direct(ObjectId::of(b"x"))),
                    log: LogInfo::default(),
                }])
                .unwrap();
        });
        assert!(listener.wait(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(5));
        handle.join().unwrap();
    }

    #[test]
    fn failed_commands_are_listed_in_order() {
        let url = fresh();
        let store = PgRefStore::new(PgConnection::connect(&url).unwrap());
        let ids: Vec<_> = (0..3).map(|i: u8| ObjectId::of(&[i])).collect();
        for id in &ids {
            store.append_failure(id).unwrap();
        }
        assert_eq!(store.failures().unwrap(), ids);
    }
}

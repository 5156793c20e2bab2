//! Refs in PostgreSQL: `retro_refs(name, value)` moved by compare-and-swap.
//!
//! A transaction takes a transaction-scoped advisory lock (the ref database's writer lock: it is
//! released by the server when the transaction ends or the client dies), reads the current values,
//! checks every expectation, writes the refs and their reflog rows, and sends
//! `NOTIFY retro_refs` — all in one PostgreSQL transaction, so it applies whole or not at all,
//! and listeners on every host wake only once it has committed.

use std::path::PathBuf;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;

use crate::index::CheckpointArrays;
use crate::{PgConnection, PgError, PgSession};
use depot::index::IndexedCheckpoint;
use depot::refdb::{
    check_clashes, prepare_edits, Error, Expected, RefEdit, RefListener, RefName, RefStore,
    RefValue, ReflogEntry,
};
use depot::EncodedObject;
use depot::ObjectId;

/// The advisory lock key of ref transactions (the same in `retro_commit`).
pub(super) const REF_LOCK: i64 = 0x7265_7472_6f5f_7266; // "retro_rf"

/// The channel ref moves are announced on.
pub const CHANNEL: &str = "retro_refs";

const READ_REF: &str = "SELECT value FROM retro_refs WHERE name = $1";
const UPSERT_REF: &str = "INSERT INTO retro_refs (name, value) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value";
const DELETE_REF: &str = "DELETE FROM retro_refs WHERE name = $1";
const INSERT_REFLOG: &str = "INSERT INTO retro_reflog (name, old, new, date, session, message)
     VALUES ($1, $2, $3, $4, $5, $6)";
const LOCK_REFS: &str = "SELECT pg_advisory_xact_lock($1)";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
const COMMIT_FUNCTION: &str = "SELECT retro_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
     $12, $13, $14, $15, $16, $17)";

/// The ref store of a PostgreSQL depot (it also keeps the failed-command records).
pub struct PgRefStore {
    connection: PgConnection,
}

fn backend(err: PgError) -> Error {
    Error::Backend(crate::backend_error(err))
}

fn corrupt(connection: &PgConnection, name: &str, reason: String) -> Error {
    Error::Corrupt {
        path: PathBuf::from(format!("{} retro_refs '{name}'", connection.shown_url())),
        reason,
    }
}

/// How an expectation travels to `retro_commit`: a kind and an id.
fn expectation(expected: &Expected) -> (&'static str, Option<String>) {
    match expected {
        Expected::Any => ("any", None),
        Expected::MustExist => ("exists", None),
        Expected::MustNotExist | Expected::MustBeOrAbsent(None) => ("absent", None),
        Expected::MustBe(id) | Expected::MustBeOrAbsent(Some(id)) => ("is", Some(id.to_string())),
    }
}

/// What the one-statement commit reports instead of committing.
enum Refused {
    /// The ref holds something else: its name and value.
    Conflict(String, Option<String>),
    /// A ref involved is symbolic: the general path must follow it.
    Symbolic,
    /// A new ref clashes with an existing one (`a` and `a/b`): both names.
    Clash(String, String),
}

/// The names in a `retro_ref_clash` raised by the `retro_refs` trigger (schema version 3).
fn clash_in(err: &postgres::Error) -> Option<(String, String)> {
    let db = err.as_db_error()?;
    if *db.code() != SqlState::RAISE_EXCEPTION || db.message() != "retro_ref_clash" {
        return None;
    }
    let (name, other) = db.detail()?.split_once('\t')?;
    Some((name.to_owned(), other.to_owned()))
}

fn clash_error(connection: &PgConnection, name: &str, other: &str) -> Error {
    match (RefName::new(name), RefName::new(other)) {
        (Ok(name), Ok(other)) => Error::NameClash {
            name,
            other,
            same_transaction: false,
        },
        _ => corrupt(
            connection,
            name,
            format!("retro_ref_clash names '{name}' and '{other}'"),
        ),
    }
}

/// Refs strictly below `name/`: one range scan of the primary key.
const LIST_UNDER: &str = "SELECT name FROM retro_refs WHERE starts_with(name, $1) ORDER BY name";

impl PgRefStore {
    /// A store over an open connection (the schema must exist: see [`crate::schema`]).
    pub fn new(connection: PgConnection) -> PgRefStore {
        PgRefStore { connection }
    }

    fn parse(&self, name: &str, text: &str) -> Result<RefValue, Error> {
        RefValue::parse_file_text(text).ok_or_else(|| {
            corrupt(
                &self.connection,
                name,
                format!("'{text}' is not a ref value"),
            )
        })
    }

    /// Writes `objects` and applies `edits` atomically: in one statement (`retro_commit`, one
    /// round trip and one WAL flush) when every edit moves a direct ref, else in one transaction
    /// that follows symbolic refs.
    fn transact(
        &self,
        objects: &[EncodedObject],
        edits: &[RefEdit],
        checkpoints: &CheckpointArrays,
    ) -> Result<(), Error> {
        if edits.is_empty() && objects.is_empty() {
            return Ok(());
        }
        let direct = edits
            .iter()
            .all(|e| !matches!(e.new, Some(RefValue::Symbolic(_))));
        let distinct = edits
            .iter()
            .map(|e| &e.name)
            .collect::<std::collections::HashSet<_>>()
            .len()
            == edits.len();
        if direct && distinct {
            match self.commit_function(objects, edits, checkpoints)? {
                None => return Ok(()),
                Some(Refused::Conflict(name, actual)) => {
                    let actual = actual.map(|t| self.parse(&name, &t)).transpose()?;
                    let edit = edits
                        .iter()
                        .find(|e| e.name.as_str() == name)
                        .ok_or_else(|| {
                            Error::Backend(depot::BackendError::new(
                                depot::ErrorClass::Internal,
                                format!(
                                    "retro_commit named '{name}', which the commit did not move"
                                ),
                            ))
                        })?;
                    return Err(Error::Conflict {
                        name: edit.name.clone(),
                        expected: edit.expected.clone(),
                        actual,
                    });
                }
                Some(Refused::Clash(name, other)) => {
                    let mut err = clash_error(&self.connection, &name, &other);
                    if let Error::NameClash {
                        same_transaction, ..
                    } = &mut err
                    {
                        *same_transaction = edits
                            .iter()
                            .any(|e| e.name.as_str() == other && e.new.is_some());
                    }
                    return Err(err);
                }
                Some(Refused::Symbolic) => {}
            }
        }
        self.general_transaction(objects, edits)
    }

    /// `retro_commit(...)`: `None` when committed.
    fn commit_function(
        &self,
        objects: &[EncodedObject],
        edits: &[RefEdit],
        cp: &CheckpointArrays,
    ) -> Result<Option<Refused>, Error> {
        let (ids, bodies) = crate::objects::object_arrays(objects);
        let names: Vec<&str> = edits.iter().map(|e| e.name.as_str()).collect();
        let (kinds, expected): (Vec<&str>, Vec<Option<String>>) =
            edits.iter().map(|e| expectation(&e.expected)).unzip();
        let new: Vec<Option<String>> = edits
            .iter()
            .map(|e| e.new.as_ref().map(RefValue::to_file_text))
            .collect();
        let date = depot::format_date(chrono::Utc::now());
        let sessions: Vec<&str> = edits.iter().map(|e| e.log.session.as_str()).collect();
        let messages: Vec<&str> = edits.iter().map(|e| e.log.message.as_str()).collect();
        let result = self.connection.with("commit", |session| {
            let outcome = session.execute(
                COMMIT_FUNCTION,
                &[
                    &ids,
                    &bodies,
                    &names,
                    &kinds,
                    &expected,
                    &new,
                    &date,
                    &sessions,
                    &messages,
                    &cp.refs,
                    &cp.ids,
                    &cp.parents,
                    &cp.dates,
                    &cp.sessions,
                    &cp.event_checkpoints,
                    &cp.event_partitions,
                    &cp.event_ids,
                ],
            );
            match outcome {
                Ok(_) => Ok(None),
                Err(e) => match e.as_db_error() {
                    Some(db) if *db.code() == SqlState::RAISE_EXCEPTION => match db.message() {
                        "retro_conflict" => {
                            let detail = db.detail().unwrap_or_default();
                            let (name, actual) = detail.split_once('\t').unwrap_or((detail, ""));
                            let actual = (!actual.is_empty()).then(|| actual.to_owned());
                            Ok(Some(Refused::Conflict(name.to_owned(), actual)))
                        }
                        "retro_symbolic" => Ok(Some(Refused::Symbolic)),
                        "retro_ref_clash" => match clash_in(&e) {
                            Some((name, other)) => Ok(Some(Refused::Clash(name, other))),
                            None => Err(e),
                        },
                        _ => Err(e),
                    },
                    _ => Err(e),
                },
            }
        });
        result.map_err(backend)
    }

    /// The general path: one transaction, symbolic refs followed by [`prepare_edits`].
    fn general_transaction(
        &self,
        objects: &[EncodedObject],
        edits: &[RefEdit],
    ) -> Result<(), Error> {
        // Expectation failures are found inside the PostgreSQL transaction; they travel out of
        // the closure here, and the transaction is rolled back (dropped without commit).
        let mut outcome: Result<(), Error> = Ok(());
        let (ids, bodies) = crate::objects::object_arrays(objects);
        self.connection
            .with("move refs", |session| {
                let insert = session.prepare(crate::objects::INSERT_OBJECTS)?;
                let read = session.prepare(READ_REF)?;
                let upsert = session.prepare(UPSERT_REF)?;
                let delete = session.prepare(DELETE_REF)?;
                let reflog = session.prepare(INSERT_REFLOG)?;
                let lock = session.prepare(LOCK_REFS)?;
                let notify = session.prepare(NOTIFY)?;
                let under = session.prepare(LIST_UNDER)?;
                let mut tx = session.client().transaction()?;
                // The ref lock before any row lock, as in retro_commit.
                if !edits.is_empty() {
                    tx.execute(&lock, &[&REF_LOCK])?;
                }
                if !objects.is_empty() {
                    tx.execute(&insert, &[&ids, &bodies])?;
                }
                if edits.is_empty() {
                    return tx.commit();
                }
                let mut db_error = None;
                let prepared = prepare_edits(edits, |n| {
                    let row = tx.query_opt(&read, &[&n.as_str()]);
                    match row.and_then(|r| r.map(|r| r.try_get::<_, String>(0)).transpose()) {
                        Ok(text) => text.map(|t| self.parse(n.as_str(), &t)).transpose(),
                        Err(e) => {
                            let class = crate::pg_class(&e);
                            let message = e.to_string();
                            db_error = Some(e);
                            Err(Error::Backend(depot::BackendError::new(class, message)))
                        }
                    }
                });
                if let Some(e) = db_error {
                    return Err(e);
                }
                let prepared = match prepared {
                    Ok(prepared) => prepared,
                    Err(err) => {
                        outcome = Err(err);
                        return Ok(());
                    }
                };
                // Git's ref-name rule, checked under the ref lock (the trigger of schema version 3
                // is the backstop): a typed error, and the transaction rolled back.
                let clashes = {
                    let cell = std::cell::RefCell::new(&mut tx);
                    let failed = std::cell::RefCell::new(None);
                    let keep = |e: postgres::Error| {
                        let class = crate::pg_class(&e);
                        let message = e.to_string();
                        *failed.borrow_mut() = Some(e);
                        Error::Backend(depot::BackendError::new(class, message))
                    };
                    let result = check_clashes(
                        &prepared,
                        |n| {
                            let row = cell.borrow_mut().query_opt(&read, &[&n.as_str()]);
                            match row.and_then(|r| r.map(|r| r.try_get::<_, String>(0)).transpose())
                            {
                                Ok(text) => text.map(|t| self.parse(n.as_str(), &t)).transpose(),
                                Err(e) => Err(keep(e)),
                            }
                        },
                        |n| {
                            let prefix = format!("{n}/");
                            let rows = cell.borrow_mut().query(&under, &[&prefix]);
                            match rows.and_then(|rows| {
                                rows.iter()
                                    .map(|r| r.try_get::<_, String>(0))
                                    .collect::<Result<Vec<_>, _>>()
                            }) {
                                Ok(names) => Ok(names
                                    .into_iter()
                                    .filter_map(|t| RefName::new(&t).ok())
                                    .collect()),
                                Err(e) => Err(keep(e)),
                            }
                        },
                    );
                    if let Some(e) = failed.into_inner() {
                        return Err(e);
                    }
                    result
                };
                if let Err(err) = clashes {
                    outcome = Err(err);
                    return Ok(());
                }
                let date = depot::format_date(chrono::Utc::now());
                for (edit, old) in &prepared {
                    match &edit.new {
                        Some(value) => {
                            tx.execute(&upsert, &[&edit.name.as_str(), &value.to_file_text()])?
                        }
                        None => tx.execute(&delete, &[&edit.name.as_str()])?,
                    };
                    if matches!(edit.new, Some(RefValue::Symbolic(_))) {
                        continue;
                    }
                    let old = old.as_ref().and_then(RefValue::id).map(|id| id.to_string());
                    let new = edit
                        .new
                        .as_ref()
                        .and_then(RefValue::id)
                        .map(|id| id.to_string());
                    tx.execute(
                        &reflog,
                        &[
                            &edit.name.as_str(),
                            &old,
                            &new,
                            &date,
                            &edit.log.session,
                            &edit.log.message,
                        ],
                    )?;
                }
                let names: Vec<&str> = prepared.iter().map(|(e, _)| e.name.as_str()).collect();
                tx.execute(&notify, &[&CHANNEL, &names.join(" ")])?;
                tx.commit()
            })
            .map_err(|e| match &e {
                PgError::Query { source, .. } => match clash_in(source) {
                    Some((name, other)) => clash_error(&self.connection, &name, &other),
                    None => backend(e),
                },
                _ => backend(e),
            })?;
        outcome
    }

    /// The database URL (for a [`RefLockGuard`]).
    pub fn url(&self) -> &str {
        self.connection.url()
    }

    /// Records a failed command's checkpoint (already written to the object store).
    pub fn append_failure(&self, id: &ObjectId) -> Result<(), PgError> {
        self.connection.with("record a failed command", |session| {
            session.execute(
                "INSERT INTO retro_failures (id) VALUES ($1)",
                &[&&id.as_bytes()[..]],
            )?;
            Ok(())
        })
    }

    /// The failed commands' checkpoints, oldest first.
    pub fn failures(&self) -> Result<Vec<ObjectId>, PgError> {
        let rows: Vec<Vec<u8>> = self.connection.with("list failed commands", |session| {
            session
                .query("SELECT id FROM retro_failures ORDER BY seq", &[])?
                .iter()
                .map(|r| r.try_get(0))
                .collect()
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| ObjectId::from_slice(r))
            .collect())
    }
}

fn read_in(session: &mut PgSession, name: &RefName) -> Result<Option<String>, postgres::Error> {
    session
        .query_opt(READ_REF, &[&name.as_str()])?
        .map(|r| r.try_get(0))
        .transpose()
}

impl RefStore for PgRefStore {
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, Error> {
        let text = self
            .connection
            .with("read a ref", |session| read_in(session, name))
            .map_err(backend)?;
        text.map(|t| self.parse(name.as_str(), &t)).transpose()
    }

    fn transaction(&self, edits: &[RefEdit]) -> Result<(), Error> {
        self.transact(&[], edits, &CheckpointArrays::default())
    }

    fn transaction_with_objects(
        &self,
        objects: &[EncodedObject],
        edits: &[RefEdit],
        checkpoints: &[(RefName, &IndexedCheckpoint)],
    ) -> Option<Result<(), Error>> {
        let mut arrays = CheckpointArrays::default();
        for (target, checkpoint) in checkpoints {
            arrays.push(target.as_str(), checkpoint);
        }
        // Command ids first, in a statement of their own: a row names a checkpoint by its
        // content, so it is true whether or not this commit wins, and it is there before the
        // checkpoint can be indexed (the lookup joins the two).
        let (ids, command_ids) =
            crate::index::command_id_arrays(checkpoints.iter().map(|(_, c)| *c));
        if !ids.is_empty() {
            let written = self.connection.with("record command ids", |session| {
                session.execute(crate::index::INSERT_COMMAND_IDS, &[&ids, &command_ids])
            });
            if let Err(err) = written {
                return Some(Err(backend(err)));
            }
        }
        Some(self.transact(objects, edits, &arrays))
    }

    fn resolve(&self, name: &RefName) -> Result<(RefName, Option<ObjectId>), Error> {
        // The whole symbolic chain in one round trip, then the shared resolution rules.
        let rows: Vec<(String, String)> = self
            .connection
            .with("resolve a ref", |session| {
                session
                    .query(
                        "WITH RECURSIVE chain(name, value, depth) AS (
                             SELECT name, value, 0 FROM retro_refs WHERE name = $1
                             UNION ALL
                             SELECT r.name, r.value, c.depth + 1
                             FROM chain c JOIN retro_refs r ON r.name = substr(c.value, 6)
                             WHERE c.value LIKE 'ref: %' AND c.depth < 6
                         )
                         SELECT name, value FROM chain",
                        &[&name.as_str()],
                    )?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            })
            .map_err(backend)?;
        let chain: std::collections::HashMap<String, String> = rows.into_iter().collect();
        depot::refdb::resolve_with(name, |n| {
            chain
                .get(n.as_str())
                .map(|text| self.parse(n.as_str(), text))
                .transpose()
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, Error> {
        let rows: Vec<(String, String)> = self
            .connection
            .with("list refs", |session| {
                session
                    .query(
                        "SELECT name, value FROM retro_refs WHERE starts_with(name, $1) ORDER BY name",
                        &[&prefix],
                    )?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            })
            .map_err(backend)?;
        rows.into_iter()
            .map(|(name, value)| {
                let parsed = RefName::new(&name)
                    .map_err(|e| corrupt(&self.connection, &name, e.to_string()))?;
                Ok((parsed, self.parse(&name, &value)?))
            })
            .collect()
    }

    fn reflog(&self, name: &RefName) -> Result<Vec<ReflogEntry>, Error> {
        type Row = (Option<String>, Option<String>, String, String, String);
        let rows: Vec<Row> = self
            .connection
            .with("read a reflog", |session| {
                session
                    .query(
                        "SELECT old, new, date, session, message FROM retro_reflog
                         WHERE name = $1 ORDER BY seq",
                        &[&name.as_str()],
                    )?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            r.try_get(4)?,
                        ))
                    })
                    .collect()
            })
            .map_err(backend)?;
        let id = |text: Option<String>| -> Result<Option<ObjectId>, Error> {
            text.map(|t| {
                t.parse().map_err(|_| {
                    corrupt(&self.connection, name.as_str(), format!("reflog id '{t}'"))
                })
            })
            .transpose()
        };
        rows.into_iter()
            .map(|(old, new, date, session, message)| {
                Ok(ReflogEntry {
                    old: id(old)?,
                    new: id(new)?,
                    date: depot::parse_date(&date).map_err(|_| {
                        corrupt(
                            &self.connection,
                            name.as_str(),
                            format!("reflog date '{date}'"),
                        )
                    })?,
                    session,
                    message,
                })
            })
            .collect()
    }

    fn listener(&self) -> Option<Box<dyn RefListener>> {
        PgListener::connect(self.connection.url())
            .ok()
            .map(|l| Box::new(l) as Box<dyn RefListener>)
    }
}

/// The ref lock held by a connection of its own for as long as the guard lives: every commit,
/// on every host, waits meanwhile (gc's prune holds it, as a files depot's gc holds the depot
/// lock). Dropping the guard closes the connection, which releases the lock.
pub struct RefLockGuard {
    _client: postgres::Client,
}

impl RefLockGuard {
    /// Waits for the ref lock and takes it.
    pub fn acquire(url: &str) -> Result<RefLockGuard, PgError> {
        let mut client = PgConnection::new_client(url)?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&REF_LOCK])
            .map_err(|source| PgError::Query {
                url: crate::redact(url),
                what: "take the ref lock",
                source,
            })?;
        Ok(RefLockGuard { _client: client })
    }
}

/// Wakes on `NOTIFY retro_refs` from any host.
pub struct PgListener {
    client: postgres::Client,
}

impl PgListener {
    /// A dedicated connection listening on the ref channel.
    pub fn connect(url: &str) -> Result<PgListener, PgError> {
        let mut client = PgConnection::new_client(url)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|source| PgError::Query {
                url: crate::redact(url),
                what: "listen for ref moves",
                source,
            })?;
        Ok(PgListener { client })
    }
}

impl RefListener for PgListener {
    fn wait(&mut self, timeout: Duration) -> bool {
        let mut notifications = self.client.notifications();
        let first = notifications.timeout_iter(timeout).next();
        match first {
            Ok(Some(_)) => {
                // Drain whatever else arrived: one wake-up is enough.
                while let Ok(Some(_)) = notifications.iter().next() {}
                true
            }
            Ok(None) => false,
            Err(_) => {
                // The connection broke: fall back to sleeping out the timeout.
                std::thread::sleep(timeout);
                false
            }
        }
    }
}

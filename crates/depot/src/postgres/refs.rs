//! Refs in PostgreSQL: `retro_refs(name, value)` moved by compare-and-swap.
//!
//! A transaction takes a transaction-scoped advisory lock (the ref database's writer lock: it is
//! released by the server when the transaction ends or the client dies), reads the current values,
//! checks every expectation, writes the refs and their reflog rows, and sends
//! `NOTIFY retro_refs` — all in one PostgreSQL transaction, so it applies whole or not at all,
//! and listeners on every host wake only once it has committed.

use std::path::PathBuf;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::GenericClient;

use super::{PgConnection, PgError};
use crate::hash::ObjectId;
use crate::refdb::{
    prepare_edits, Error, RefEdit, RefListener, RefName, RefStore, RefValue, ReflogEntry,
};

/// The advisory lock key of ref transactions.
const REF_LOCK: i64 = 0x7265_7472_6f5f_7266; // "retro_rf"

/// The channel ref moves are announced on.
pub const CHANNEL: &str = "retro_refs";

/// The ref store of a PostgreSQL depot (it also keeps the failed-command records).
pub struct PgRefStore {
    connection: PgConnection,
}

fn backend(err: PgError) -> Error {
    Error::Backend(err.to_string())
}

fn corrupt(connection: &PgConnection, name: &str, reason: String) -> Error {
    Error::Corrupt {
        path: PathBuf::from(format!("{} retro_refs '{name}'", connection.shown_url())),
        reason,
    }
}

fn read_in(
    client: &mut impl GenericClient,
    name: &RefName,
) -> Result<Option<String>, postgres::Error> {
    client
        .query_opt(
            "SELECT value FROM retro_refs WHERE name = $1",
            &[&name.as_str()],
        )?
        .map(|r| r.try_get(0))
        .transpose()
}

impl PgRefStore {
    /// A store over an open connection (the schema must exist: see [`super::schema`]).
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

    /// Records a failed command's checkpoint (already written to the object store).
    pub fn append_failure(&self, id: &ObjectId) -> Result<(), PgError> {
        self.connection.with("record a failed command", |client| {
            client.execute(
                "INSERT INTO retro_failures (id) VALUES ($1)",
                &[&&id.as_bytes()[..]],
            )?;
            Ok(())
        })
    }

    /// The failed commands' checkpoints, oldest first.
    pub fn failures(&self) -> Result<Vec<ObjectId>, PgError> {
        let rows: Vec<Vec<u8>> = self.connection.with("list failed commands", |client| {
            client
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

impl RefStore for PgRefStore {
    fn read(&self, name: &RefName) -> Result<Option<RefValue>, Error> {
        let text = self
            .connection
            .with("read a ref", |client| read_in(client, name))
            .map_err(backend)?;
        text.map(|t| self.parse(name.as_str(), &t)).transpose()
    }

    fn transaction(&self, edits: &[RefEdit]) -> Result<(), Error> {
        if edits.is_empty() {
            return Ok(());
        }
        // Expectation failures are found inside the PostgreSQL transaction; they travel out of
        // the closure here, and the transaction is rolled back (dropped without commit).
        let mut outcome: Result<(), Error> = Ok(());
        self.connection
            .with("move refs", |client| {
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REF_LOCK])?;
                let mut db_error = None;
                let prepared = prepare_edits(edits, |n| match read_in(&mut tx, n) {
                    Ok(text) => text.map(|t| self.parse(n.as_str(), &t)).transpose(),
                    Err(e) => {
                        let message = e.to_string();
                        db_error = Some(e);
                        Err(Error::Backend(message))
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
                let date = crate::object::format_date(chrono::Utc::now());
                for (edit, old) in &prepared {
                    match &edit.new {
                        Some(value) => tx.execute(
                            "INSERT INTO retro_refs (name, value) VALUES ($1, $2)
                             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                            &[&edit.name.as_str(), &value.to_file_text()],
                        )?,
                        None => tx.execute(
                            "DELETE FROM retro_refs WHERE name = $1",
                            &[&edit.name.as_str()],
                        )?,
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
                        "INSERT INTO retro_reflog (name, old, new, date, session, message)
                         VALUES ($1, $2, $3, $4, $5, $6)",
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
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &names.join(" ")])?;
                tx.commit()
            })
            .map_err(backend)?;
        outcome
    }

    fn list(&self, prefix: &str) -> Result<Vec<(RefName, RefValue)>, Error> {
        let rows: Vec<(String, String)> = self
            .connection
            .with("list refs", |client| {
                client
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
            .with("read a reflog", |client| {
                client
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
                    date: crate::object::parse_date(&date).map_err(|_| {
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
                url: super::redact(url),
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

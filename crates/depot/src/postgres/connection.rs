//! One PostgreSQL connection shared by a store's callers, reconnected after the server went away.

use std::sync::Mutex;

use postgres::{Client, NoTls};

use super::{redact, PgError};

/// A lazily (re)connected client behind a mutex.
pub struct PgConnection {
    url: String,
    client: Mutex<Option<Client>>,
}

impl PgConnection {
    /// Connects to `url` now, so that a wrong URL fails at open.
    pub fn connect(url: &str) -> Result<PgConnection, PgError> {
        let client = Self::new_client(url)?;
        Ok(PgConnection {
            url: url.to_owned(),
            client: Mutex::new(Some(client)),
        })
    }

    /// A separate client to the same database (for `LISTEN`).
    pub(crate) fn new_client(url: &str) -> Result<Client, PgError> {
        Client::connect(url, NoTls).map_err(|source| PgError::Connect {
            url: redact(url),
            source,
        })
    }

    /// The URL, password redacted.
    pub fn shown_url(&self) -> String {
        redact(&self.url)
    }

    /// The URL as given.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` with the client, connecting first if the last one broke. A failed statement on a
    /// closed connection drops it, so the next call reconnects (after a server restart, say).
    pub fn with<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, PgError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(Self::new_client(&self.url)?);
        }
        let client = guard.as_mut().expect("connected above");
        let result = f(client);
        if result.is_err() && client.is_closed() {
            *guard = None;
        }
        result.map_err(|source| PgError::Query {
            url: redact(&self.url),
            what,
            source,
        })
    }
}

//! One PostgreSQL connection shared by a store's callers, with its prepared statements, reconnected
//! after the server went away; and the TLS every connection is made with.
//!
//! TLS is rustls (no system OpenSSL), with the web PKI's roots plus, when `RETRO_PG_CA_FILE`
//! names a PEM file, its certificates (a private CA). The URL's `sslmode` decides as with libpq:
//! `prefer` (the default) uses TLS when the server offers it, `require` insists, `disable` never
//! tries; a certificate that does not verify is an error, never a silent downgrade.

use std::collections::HashMap;
use std::sync::Mutex;

use std::sync::OnceLock;

use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{redact, PgError};

/// A client and the statements prepared on it (each SQL text is parsed once per connection, which
/// halves the round trips of a query).
pub struct PgSession {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl PgSession {
    /// The statement for `sql`, prepared on first use.
    pub fn prepare(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs a cached statement and returns its rows.
    pub fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.query(&statement, params)
    }

    /// Runs a cached statement that returns at most one row.
    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.query_opt(&statement, params)
    }

    /// Runs a cached statement and returns the rows it changed.
    pub fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.execute(&statement, params)
    }

    /// The client, for transactions and one-off statements.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// A lazily (re)connected session behind a mutex.
pub struct PgConnection {
    url: String,
    session: Mutex<Option<PgSession>>,
}

impl PgConnection {
    /// Connects to `url` now, so that a wrong URL fails at open.
    pub fn connect(url: &str) -> Result<PgConnection, PgError> {
        let session = Self::new_session(url)?;
        Ok(PgConnection {
            url: url.to_owned(),
            session: Mutex::new(Some(session)),
        })
    }

    fn new_session(url: &str) -> Result<PgSession, PgError> {
        Ok(PgSession {
            client: Self::new_client(url)?,
            statements: HashMap::new(),
        })
    }

    /// A separate client to the same database (for `LISTEN`).
    pub(crate) fn new_client(url: &str) -> Result<Client, PgError> {
        Client::connect(url, tls()?).map_err(|source| PgError::Connect {
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

    /// Runs `f` with the session, connecting first if the last one broke. A failed statement on a
    /// closed connection drops it, so the next call reconnects (after a server restart, say).
    pub fn with<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut PgSession) -> Result<T, postgres::Error>,
    ) -> Result<T, PgError> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|s| s.client.is_closed()) {
            *guard = Some(Self::new_session(&self.url)?);
        }
        let session = guard.as_mut().expect("connected above");
        let result = f(session);
        if result.is_err() && session.client.is_closed() {
            *guard = None;
        }
        result.map_err(|source| PgError::Query {
            url: redact(&self.url),
            what,
            source,
        })
    }
}

/// The environment variable naming extra trusted certificates (PEM).
pub const CA_FILE_VAR: &str = "RETRO_PG_CA_FILE";

/// The TLS connector, built once per process.
fn tls() -> Result<MakeRustlsConnect, PgError> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = std::env::var_os(CA_FILE_VAR).filter(|p| !p.is_empty()) {
            use rustls::pki_types::pem::PemObject;
            let shown = std::path::Path::new(&path).display().to_string();
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("{CA_FILE_VAR}='{shown}': {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{CA_FILE_VAR}='{shown}': {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{CA_FILE_VAR}='{shown}': {e}"))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .map_err(|e| e.to_string())
    });
    match config {
        Ok(config) => Ok(MakeRustlsConnect::new(config.clone())),
        Err(reason) => Err(PgError::Tls(reason.clone())),
    }
}

//! Consumer groups in PostgreSQL: one row per group in `retro_groups`, holding the same
//! checksummed state a files depot keeps in `groups/NAME` (`depot::group::GroupState`). An update
//! is one transaction under a transaction-scoped advisory lock keyed by the group's name (so two
//! members creating a group at once create it once), with the server's clock
//! (`clock_timestamp()`, read after the lock): every host judges lease expiry by that one clock.

use depot::group::{Change, GroupError, GroupName, GroupState, GroupStore};

use crate::{backend_error, PgConnection, PgError};

/// The first key of the advisory lock a group update takes ("grup"); the second is the hash of
/// the group's name.
const GROUP_LOCK: i32 = 0x6772_7570;

/// The consumer-group store of a PostgreSQL depot.
pub struct PgGroupStore {
    connection: PgConnection,
}

impl PgGroupStore {
    /// The store over `connection`.
    pub fn new(connection: PgConnection) -> PgGroupStore {
        PgGroupStore { connection }
    }
}

fn pg(err: PgError) -> GroupError {
    GroupError::Backend(backend_error(err))
}

fn decode(bytes: &[u8]) -> Result<GroupState, GroupError> {
    GroupState::decode(bytes).map_err(|e| match e {
        GroupError::Corrupt { reason } => GroupError::Corrupt {
            reason: format!("row of retro_groups: {reason}"),
        },
        other => other,
    })
}

impl GroupStore for PgGroupStore {
    fn update(&self, group: &GroupName, change: &mut Change<'_>) -> Result<(), GroupError> {
        let name = group.as_str();
        let outcome = self
            .connection
            .with("update a consumer group", |session| {
                let mut tx = session.client().transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    &[&GROUP_LOCK, &name],
                )?;
                let now: i64 = tx
                    .query_one(
                        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8",
                        &[],
                    )?
                    .get(0);
                let row =
                    tx.query_opt("SELECT state FROM retro_groups WHERE name = $1", &[&name])?;
                let mut state = match row.map(|r| decode(r.get::<_, &[u8]>(0))).transpose() {
                    Ok(state) => state,
                    Err(e) => return Ok(Err(e)),
                };
                match change(&mut state, now) {
                    Ok(true) => {}
                    Ok(false) => return Ok(Ok(())),
                    Err(e) => return Ok(Err(e)),
                }
                match state {
                    Some(state) => {
                        tx.execute(
                            "INSERT INTO retro_groups (name, state) VALUES ($1, $2)
                             ON CONFLICT (name) DO UPDATE SET state = $2, updated = now()",
                            &[&name, &state.encode()],
                        )?;
                    }
                    None => {
                        tx.execute("DELETE FROM retro_groups WHERE name = $1", &[&name])?;
                    }
                }
                tx.commit()?;
                Ok(Ok(()))
            })
            .map_err(pg)?;
        outcome
    }

    fn read(&self, group: &GroupName) -> Result<(Option<GroupState>, i64), GroupError> {
        let name = group.as_str();
        let (bytes, now) = self
            .connection
            .with("read a consumer group", |session| {
                let row = session.query_one_now(name)?;
                Ok(row)
            })
            .map_err(pg)?;
        Ok((bytes.as_deref().map(decode).transpose()?, now))
    }

    fn list(&self) -> Result<Vec<GroupName>, GroupError> {
        let names: Vec<String> = self
            .connection
            .with("list consumer groups", |session| {
                Ok(session
                    .query("SELECT name FROM retro_groups ORDER BY name", &[])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect())
            })
            .map_err(pg)?;
        names.iter().map(|n| GroupName::new(n)).collect()
    }
}

trait ReadWithClock {
    fn query_one_now(&mut self, name: &str) -> Result<(Option<Vec<u8>>, i64), postgres::Error>;
}

impl ReadWithClock for crate::PgSession {
    /// The group's row (if any) and the server's clock, in one statement.
    fn query_one_now(&mut self, name: &str) -> Result<(Option<Vec<u8>>, i64), postgres::Error> {
        let row = self.query_opt(
            "SELECT (SELECT state FROM retro_groups WHERE name = $1),
                    (extract(epoch FROM clock_timestamp()) * 1000)::int8",
            &[&name],
        )?;
        Ok(match row {
            Some(row) => (row.get(0), row.get(1)),
            None => (None, 0),
        })
    }
}

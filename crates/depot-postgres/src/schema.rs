//! The versioned schema of a PostgreSQL depot and its migrations.
//!
//! Version `n` is reached by applying `MIGRATIONS[..n]` in order; the version reached is kept in
//! `retro_meta` under `schema_version`, beside a random `depot_id` that names the depot (hosts key
//! their local partition-index cache by it). Migrations run in one transaction under an advisory
//! lock, so two hosts opening an old depot at once migrate it once.

use crate::{PgConnection, PgError};

/// Each entry takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: objects, refs, reflogs, failed commands.
    // `written` is when a row was last written or re-written (an identical object committed
    // again): gc prunes only unreachable rows older than its grace period.
    "CREATE TABLE retro_objects (
         id bytea PRIMARY KEY,
         body bytea NOT NULL,
         written timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE retro_refs (
         name text COLLATE \"C\" PRIMARY KEY,
         value text NOT NULL
     );
     CREATE TABLE retro_reflog (
         seq bigserial PRIMARY KEY,
         name text NOT NULL,
         old text,
         new text,
         date text NOT NULL,
         session text NOT NULL,
         message text NOT NULL
     );
     CREATE INDEX retro_reflog_by_name ON retro_reflog (name, seq);
     CREATE TABLE retro_failures (
         seq bigserial PRIMARY KEY,
         id bytea NOT NULL
     );",
    // 2: the partition index in the database (see `index.rs`), and retro_commit: a commit's
    // objects, ref moves, reflog rows and index rows in one statement (one round trip, one WAL
    // flush). Expectations are checked under the ref lock (`refs::REF_LOCK`); a mismatch raises
    // 'retro_conflict' (DETAIL: name TAB actual value) and a symbolic ref 'retro_symbolic', both
    // rolling everything back. Index rows are appended under `index::INDEX_LOCK` when the commit
    // moves the branch HEAD names and continues what is indexed.
    "CREATE TABLE retro_index_checkpoints (
         seq bigint PRIMARY KEY,
         id bytea NOT NULL UNIQUE,
         date bigint,
         session text NOT NULL
     );
     CREATE TABLE retro_index_partitions (
         name text COLLATE \"C\" PRIMARY KEY,
         events bigint NOT NULL,
         last_seq bigint NOT NULL
     );
     CREATE TABLE retro_index_events (
         partition text COLLATE \"C\" NOT NULL,
         n bigint NOT NULL,
         cseq bigint NOT NULL,
         event bytea NOT NULL,
         checkpoint bytea NOT NULL,
         date bigint,
         session text NOT NULL,
         PRIMARY KEY (partition, n)
     );
     CREATE FUNCTION retro_index_append(
         only_ref text, cp_refs text[], cp_ids bytea[], cp_parents bytea[], cp_dates bigint[],
         cp_sessions text[], ev_cps int[], ev_partitions text[], ev_ids bytea[]
     ) RETURNS bigint LANGUAGE plpgsql AS $$
     DECLARE
         k int;
         j int := 1;
         m int := coalesce(array_length(ev_ids, 1), 0);
         tip bytea;
         head_seq bigint;
         version bigint;
         appended bigint := 0;
         accepted int[] := '{}';
         seqs bigint[] := '{}';
     BEGIN
         SELECT c.id, c.seq INTO tip, head_seq
         FROM retro_index_checkpoints c ORDER BY c.seq DESC LIMIT 1;
         head_seq := coalesce(head_seq, 0);
         -- A few events (one command): row by row is cheapest, and holds the locks shortest.
         IF m <= 64 THEN
             FOR k IN 1 .. coalesce(array_length(cp_ids, 1), 0) LOOP
                 WHILE j <= m AND ev_cps[j] < k LOOP
                     j := j + 1;
                 END LOOP;
                 IF (only_ref IS NULL OR cp_refs[k] = only_ref)
                    AND cp_parents[k] IS NOT DISTINCT FROM tip THEN
                     head_seq := head_seq + 1;
                     INSERT INTO retro_index_checkpoints (seq, id, date, session)
                     VALUES (head_seq, cp_ids[k], cp_dates[k], cp_sessions[k]);
                     WHILE j <= m AND ev_cps[j] = k LOOP
                         INSERT INTO retro_index_partitions AS p (name, events, last_seq)
                         VALUES (ev_partitions[j], 1, head_seq)
                         ON CONFLICT (name) DO UPDATE
                             SET events = p.events + 1, last_seq = EXCLUDED.last_seq
                         RETURNING p.events INTO version;
                         INSERT INTO retro_index_events
                             (partition, n, cseq, event, checkpoint, date, session)
                         VALUES (ev_partitions[j], version, head_seq, ev_ids[j], cp_ids[k],
                                 cp_dates[k], cp_sessions[k]);
                         j := j + 1;
                     END LOOP;
                     tip := cp_ids[k];
                     appended := appended + 1;
                 END IF;
             END LOOP;
             RETURN appended;
         END IF;
         -- Many (a bulk import, a sync): set-based.
         -- The checkpoints that continue the indexed chain, in order, and their sequence numbers.
         FOR k IN 1 .. coalesce(array_length(cp_ids, 1), 0) LOOP
             IF (only_ref IS NULL OR cp_refs[k] = only_ref)
                AND cp_parents[k] IS NOT DISTINCT FROM tip THEN
                 head_seq := head_seq + 1;
                 accepted := accepted || k;
                 seqs := seqs || head_seq;
                 tip := cp_ids[k];
             END IF;
         END LOOP;
         IF coalesce(array_length(accepted, 1), 0) = 0 THEN
             RETURN 0;
         END IF;
         INSERT INTO retro_index_checkpoints (seq, id, date, session)
         SELECT a.s, cp_ids[a.k], cp_dates[a.k], cp_sessions[a.k]
         FROM unnest(accepted, seqs) AS a(k, s);
         -- Their events, numbered per partition after what each partition holds: set-based.
         WITH ev AS (
             SELECT e.ord, e.cp, e.part, e.id, a.s
             FROM unnest(ev_cps, ev_partitions, ev_ids) WITH ORDINALITY AS e(cp, part, id, ord)
             JOIN unnest(accepted, seqs) AS a(k, s) ON a.k = e.cp
         ), numbered AS (
             SELECT ev.*, coalesce(p.events, 0)
                 + row_number() OVER (PARTITION BY ev.part ORDER BY ev.ord) AS n
             FROM ev LEFT JOIN retro_index_partitions p ON p.name = ev.part
         ), inserted AS (
             INSERT INTO retro_index_events
                 (partition, n, cseq, event, checkpoint, date, session)
             SELECT part, n, s, id, cp_ids[cp], cp_dates[cp], cp_sessions[cp] FROM numbered
         )
         INSERT INTO retro_index_partitions AS p (name, events, last_seq)
         SELECT part, max(n), max(s) FROM numbered GROUP BY part
         ON CONFLICT (name) DO UPDATE
             SET events = EXCLUDED.events, last_seq = EXCLUDED.last_seq;
         RETURN array_length(accepted, 1);
     END;
     $$;
     CREATE FUNCTION retro_commit(
         object_ids bytea[], object_bodies bytea[],
         ref_names text[], expected_kinds text[], expected_values text[], new_values text[],
         log_date text, log_sessions text[], log_messages text[],
         cp_refs text[], cp_ids bytea[], cp_parents bytea[], cp_dates bigint[],
         cp_sessions text[], ev_cps int[], ev_partitions text[], ev_ids bytea[]
     ) RETURNS void LANGUAGE plpgsql AS $$
     DECLARE
         i int;
         current text;
         ok boolean;
         index_ref text;
     BEGIN
         -- The ref lock first: a commit waiting for it (while gc prunes, say) holds no row lock
         -- that the lock's holder could be waiting for.
         IF coalesce(array_length(ref_names, 1), 0) > 0 THEN
             PERFORM pg_advisory_xact_lock(8243122727815180902);
         END IF;
         IF coalesce(array_length(object_ids, 1), 0) > 0 THEN
             INSERT INTO retro_objects (id, body)
             SELECT * FROM unnest(object_ids, object_bodies)
             ON CONFLICT (id) DO UPDATE SET written = EXCLUDED.written;
         END IF;
         IF coalesce(array_length(ref_names, 1), 0) = 0 THEN
             RETURN;
         END IF;
         FOR i IN 1 .. array_length(ref_names, 1) LOOP
             SELECT value INTO current FROM retro_refs WHERE name = ref_names[i];
             IF current LIKE 'ref: %' THEN
                 RAISE EXCEPTION 'retro_symbolic';
             END IF;
             ok := CASE expected_kinds[i]
                 WHEN 'any' THEN true
                 WHEN 'exists' THEN current IS NOT NULL
                 WHEN 'absent' THEN current IS NULL
                 WHEN 'is' THEN current IS NOT NULL AND current = expected_values[i]
                 ELSE false
             END;
             IF NOT ok THEN
                 RAISE EXCEPTION 'retro_conflict'
                     USING DETAIL = ref_names[i] || E'\\t' || coalesce(current, '');
             END IF;
             IF new_values[i] IS NULL THEN
                 DELETE FROM retro_refs WHERE name = ref_names[i];
             ELSE
                 INSERT INTO retro_refs (name, value) VALUES (ref_names[i], new_values[i])
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value;
             END IF;
             INSERT INTO retro_reflog (name, old, new, date, session, message)
             VALUES (ref_names[i], current, new_values[i], log_date, log_sessions[i],
                     log_messages[i]);
         END LOOP;
         SELECT substr(value, 6) INTO index_ref FROM retro_refs
         WHERE name = 'HEAD' AND value LIKE 'ref: %';
         IF index_ref IS NOT NULL AND index_ref = ANY (ref_names)
            AND coalesce(array_length(cp_ids, 1), 0) > 0 THEN
             PERFORM pg_advisory_xact_lock(8243122727815178616);
             PERFORM retro_index_append(index_ref, cp_refs, cp_ids, cp_parents, cp_dates,
                                        cp_sessions, ev_cps, ev_partitions, ev_ids);
         END IF;
         PERFORM pg_notify('retro_refs', array_to_string(ref_names, ' '));
     END;
     $$;",
    // 3: the ref-name rule every ref store keeps (Git's): a ref 'a/b' cannot coexist with a ref
    // 'a'. Checked by a trigger on every insert into retro_refs (retro_commit's and the general
    // transaction's), under the ref lock both take, so no writer on any host can slip a clash in.
    // A clash raises 'retro_ref_clash' (DETAIL: new name TAB existing name). Moving an existing
    // ref costs one primary-key lookup; creating one, a lookup per ancestor and one range scan.
    "CREATE FUNCTION retro_refs_no_clash() RETURNS trigger LANGUAGE plpgsql AS $$
     DECLARE
         parts text[] := string_to_array(NEW.name, '/');
         prefixes text[] := '{}';
         k int;
         other text;
     BEGIN
         IF EXISTS (SELECT 1 FROM retro_refs WHERE name = NEW.name) THEN
             RETURN NEW;
         END IF;
         FOR k IN 1 .. coalesce(array_length(parts, 1), 0) - 1 LOOP
             prefixes := prefixes || array_to_string(parts[1:k], '/');
         END LOOP;
         SELECT name INTO other FROM retro_refs
         WHERE name = ANY (prefixes)
            OR (name > (NEW.name || '/') COLLATE \"C\" AND name < (NEW.name || '0') COLLATE \"C\")
         LIMIT 1;
         IF other IS NOT NULL THEN
             RAISE EXCEPTION 'retro_ref_clash' USING DETAIL = NEW.name || E'\\t' || other;
         END IF;
         RETURN NEW;
     END;
     $$;
     CREATE TRIGGER retro_refs_no_clash BEFORE INSERT ON retro_refs
         FOR EACH ROW EXECUTE FUNCTION retro_refs_no_clash();",
    // 4: command ids, for idempotent commits (see `index.rs`): the `command-id` field of each
    // checkpoint that has one, keyed by the checkpoint (a function of its content, so a row is
    // true whether or not its commit won), written before the commit's own statement. Which of
    // them are applied is the join with retro_index_checkpoints (HEAD's branch, first parents).
    "CREATE TABLE retro_command_ids (
         checkpoint bytea PRIMARY KEY,
         command_id text NOT NULL
     );
     CREATE INDEX retro_command_ids_by_id ON retro_command_ids (command_id);",
    // 5: consumer groups (`groups.rs`): one row per group, its state in the encoding a files
    // depot keeps in groups/NAME (checksummed; leases, members, a position per slot).
    "CREATE TABLE retro_groups (
         name text PRIMARY KEY,
         state bytea NOT NULL,
         updated timestamptz NOT NULL DEFAULT now()
     );",
];

/// The newest schema version this build knows.
pub const CURRENT_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock key that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7265_7472_6f5f_6d69; // "retro_mi"

/// Creates the schema in an empty database; returns the new depot id.
pub fn create(connection: &PgConnection) -> Result<String, PgError> {
    if read_version(connection)?.is_some() {
        return Err(PgError::AlreadyExists(connection.shown_url()));
    }
    let depot_id = new_depot_id();
    connection.with("create the retro schema", |session| {
        let mut tx = session.client().transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS retro_meta (key text PRIMARY KEY, value text NOT NULL)",
        )?;
        tx.execute(
            "INSERT INTO retro_meta (key, value) VALUES ('depot_id', $1)",
            &[&depot_id],
        )?;
        tx.execute(
            "INSERT INTO retro_meta (key, value) VALUES ('schema_version', '0')",
            &[],
        )?;
        migrate_locked(&mut tx, 0)?;
        tx.commit()
    })?;
    Ok(depot_id)
}

/// Checks that the database holds a depot, migrates it to the current version, and returns its
/// depot id.
pub fn open(connection: &PgConnection) -> Result<String, PgError> {
    let Some(version) = read_version(connection)? else {
        return Err(PgError::NotADepot(connection.shown_url()));
    };
    if version > CURRENT_VERSION {
        return Err(PgError::SchemaTooNew {
            url: connection.shown_url(),
            found: version,
            known: CURRENT_VERSION,
        });
    }
    if version < CURRENT_VERSION {
        connection.with("migrate the retro schema", |session| {
            let mut tx = session.client().transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            let version = version_in(&mut tx)?;
            migrate_locked(&mut tx, version)?;
            tx.commit()
        })?;
    }
    connection.with("read the depot id", |session| {
        let row = session
            .client()
            .query_one("SELECT value FROM retro_meta WHERE key = 'depot_id'", &[])?;
        row.try_get(0)
    })
}

/// The schema version, or `None` when the database has no retro schema.
pub fn read_version(connection: &PgConnection) -> Result<Option<i32>, PgError> {
    connection.with("read the schema version", |session| {
        let client = session.client();
        let exists: bool = client
            .query_one("SELECT to_regclass('retro_meta') IS NOT NULL", &[])?
            .try_get(0)?;
        if !exists {
            return Ok(None);
        }
        version_in(client).map(Some)
    })
}

fn version_in(client: &mut impl postgres::GenericClient) -> Result<i32, postgres::Error> {
    let row = client.query_opt(
        "SELECT value FROM retro_meta WHERE key = 'schema_version'",
        &[],
    )?;
    Ok(row
        .and_then(|r| r.try_get::<_, String>(0).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn migrate_locked(tx: &mut postgres::Transaction<'_>, from: i32) -> Result<(), postgres::Error> {
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        tx.batch_execute(migration)?;
        tx.execute(
            "UPDATE retro_meta SET value = $1 WHERE key = 'schema_version'",
            &[&(i + 1).to_string()],
        )?;
    }
    Ok(())
}

/// 128 random bits as hex, from the kernel.
fn new_depot_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let from_kernel =
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_kernel.is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&depot::ObjectId::of(seed.as_bytes()).as_bytes()[..16]);
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_commit_functions_take_the_locks_rust_takes() {
        let refs = format!("pg_advisory_xact_lock({})", crate::refs::REF_LOCK);
        let index = format!("pg_advisory_xact_lock({})", crate::index::INDEX_LOCK);
        assert!(super::MIGRATIONS[1].contains(&refs));
        assert!(super::MIGRATIONS[1].contains(&index));
    }

    #[test]
    fn a_version_1_depot_is_migrated_when_opened() {
        let url = pgtest::PgServer::shared().create_database();
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .batch_execute(
                "CREATE TABLE retro_meta (key text PRIMARY KEY, value text NOT NULL);
                 INSERT INTO retro_meta VALUES ('depot_id', 'old'), ('schema_version', '1');",
            )
            .unwrap();
        client.batch_execute(super::MIGRATIONS[0]).unwrap();
        client
            .batch_execute("INSERT INTO retro_refs VALUES ('HEAD', 'ref: refs/heads/master')")
            .unwrap();
        let connection = super::PgConnection::connect(&url).unwrap();
        assert_eq!(super::read_version(&connection).unwrap(), Some(1));
        assert_eq!(super::open(&connection).unwrap(), "old");
        assert_eq!(
            super::read_version(&connection).unwrap(),
            Some(super::CURRENT_VERSION)
        );
        // The migrated depot commits through retro_commit and keeps its index.
        let depot = crate::open(&url).unwrap();
        let partition = depot::PartitionName::new("accounts/a").unwrap();
        let event = depot::Event::new(depot::EventName::new("Opened").unwrap(), "{}");
        depot
            .commit(depot::CommitRequest::new(
                None,
                vec![(partition.clone(), event)],
                "s1",
                "open",
            ))
            .unwrap();
        assert_eq!(depot.partition_events(&partition).unwrap().len(), 1);
    }
}

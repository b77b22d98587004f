//! Schema migrations: a database of an older version is moved forward to
//! [`crate::SCHEMA_VERSION`] inside one transaction, so a failed migration leaves it as it was.
//! The steps are written once for both backends where their SQL agrees.

use crate::StoreError;
use crate::db::{Dialect, Sql, SqlExt, params};

/// Version 3: a sequence's Agent Lightning rollout link (`rollout_id`, `attempt_id`). Version 4
/// adds the indexes of retention (`sequences_last`, and the role and task links by sequence),
/// which the schema's own `CREATE INDEX IF NOT EXISTS` makes.
fn add_rollout_columns(conn: &dyn Sql) -> Result<(), StoreError> {
    let text = if conn.dialect() == Dialect::Postgres { "TEXT COLLATE \"C\"" } else { "TEXT" };
    conn.batch(&format!("ALTER TABLE sequences ADD COLUMN rollout_id {text}; ALTER TABLE sequences ADD COLUMN attempt_id {text};"))
}

/// Version 5: the span's links, trace state, flags and scope version (`spans.extras`), and the
/// forwarding cursors (`forward_cursors`, made by the schema's `CREATE TABLE IF NOT EXISTS`).
fn add_extras_column(conn: &dyn Sql) -> Result<(), StoreError> {
    conn.batch("ALTER TABLE spans ADD COLUMN extras TEXT;")
}

/// Version 6 (PostgreSQL): a role's triplets in posting rows (`role_spans`, made by the
/// schema) instead of the index `spans_role`, filled from the stored rows (rows of one role in
/// chunks of disjoint id ranges, so they do not overlap). SQLite's schema is unchanged.
fn role_posting_rows(conn: &dyn Sql) -> Result<(), StoreError> {
    conn.batch(&format!(
        "INSERT INTO role_spans(role, last_id, ids)
           SELECT role, max(id), array_agg(id ORDER BY id) FROM spans WHERE seq_ref IS NOT NULL AND role IS NOT NULL
           GROUP BY role, id / {};
         DROP INDEX IF EXISTS spans_role;",
        crate::pg_ingest::ROLE_CHUNK
    ))
}

/// Version 1 to 2: per-sequence counts of the events that decide completeness and rewards (only
/// sequence-targeted terminal rewards complete a sequence), the rewarded count of every sequence
/// and of the store, role and task indexes, and the ledger position of immediate rewards.
fn v1_to_v2(conn: &dyn Sql) -> Result<(), StoreError> {
    conn.batch(
        "ALTER TABLE counters ADD COLUMN rewarded_triplets INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE sequences ADD COLUMN covering_events INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE sequences ADD COLUMN hitl_events INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE sequences ADD COLUMN task_events INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE sequences ADD COLUMN rewarded_count INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE spans ADD COLUMN ledger_after INTEGER;",
    )?;
    conn.batch(crate::schema::SCHEMA)?;
    conn.batch(
        "INSERT OR IGNORE INTO sequence_roles(role, seq_ref) SELECT role, seq_ref FROM spans WHERE seq_ref IS NOT NULL AND role IS NOT NULL;
         INSERT OR IGNORE INTO task_sequences(task_id, seq_ref) SELECT task_id, seq_ref FROM spans WHERE seq_ref IS NOT NULL AND task_id IS NOT NULL;
         DROP TABLE IF EXISTS tasks;",
    )?;
    let ids: Vec<i64> = conn.prepare_cached("SELECT id FROM sequences")?.query_map(params![], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let tasks: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT target_task FROM reward_events WHERE target_task IS NOT NULL")?
        .query_map(params![], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for task in &tasks {
        crate::ledger::mark_task_reach(conn, task, &mut |_| {})?;
    }
    for id in ids {
        crate::ledger::recount_sequence_events(conn, id)?;
    }
    crate::rewarded::recount_all(conn)?;
    Ok(())
}

/// Run `steps` in one transaction opened with `begin`, then record the current version.
fn migrate(conn: &dyn Sql, begin: &str, from: i64, steps: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
    let to = crate::SCHEMA_VERSION;
    conn.batch(begin)?;
    let r = steps().and_then(|()| conn.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", params![to.to_string()]).map(|_| ()));
    match r {
        Ok(()) => {
            conn.batch("COMMIT")?;
            tracing::info!("migrated the database from schema version {from} to {to}");
            Ok(())
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(StoreError::Version(format!("migrating the database from schema version {from} to {to} failed, nothing was changed: {e}")))
        }
    }
}

/// Move a SQLite database forward from version `from`.
pub(crate) fn sqlite(conn: &dyn Sql, from: i64) -> Result<(), StoreError> {
    migrate(conn, "BEGIN IMMEDIATE", from, || {
        if from < 5 {
            add_extras_column(conn)?;
        }
        // The columns of version 3 first: the version 2 step reads sequences as they are now.
        if from < 3 {
            add_rollout_columns(conn)?;
        }
        if from < 2 {
            v1_to_v2(conn)?;
        }
        conn.batch(crate::schema::SCHEMA)
    })
}

/// Move a PostgreSQL database forward from version `from` (2 is the first schema PostgreSQL
/// databases had).
pub(crate) fn postgres(conn: &crate::pg::PgConn, from: i64) -> Result<(), StoreError> {
    if from < 2 {
        return Err(StoreError::Version(format!("the database has schema version {from}, older than any rltrace PostgreSQL schema: it was not made by rltrace")));
    }
    let db: &dyn Sql = conn;
    // A migration reads whole tables (version 6 every triplet row's role): it is not held to the
    // sessions' statement timeout, which is for ingest and reads (2,200,000 spans took longer than
    // its 30 s from a cold cache).
    tracing::info!("migrating the database from schema version {from} to {}: this reads whole tables and may take minutes", crate::SCHEMA_VERSION);
    migrate(db, "BEGIN; SET LOCAL statement_timeout = 0", from, || {
        if from < 5 {
            add_extras_column(db)?;
        }
        if from < 3 {
            add_rollout_columns(db)?;
        }
        db.batch(crate::pg::SCHEMA)?;
        if from < 6 {
            role_posting_rows(db)?;
        }
        if from < 7 {
            // Version 7 (PostgreSQL): the role links lose their index by sequence (retention
            // deletes them by role and sequence instead). SQLite's schema is unchanged.
            db.batch("DROP INDEX IF EXISTS sequence_roles_seq;")?;
        }
        Ok(())
    })
}

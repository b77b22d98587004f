//! Schema migrations: each step moves a database one version forward inside one transaction, so a
//! failed migration leaves the database as it was.

use crate::db::{Sql, SqlExt, params};

use crate::StoreError;

/// Version 1 to 2: per-sequence counts of the events that decide completeness and rewards (only
/// sequence-targeted terminal rewards complete a sequence), the rewarded count of every sequence
/// and of the store, role and task indexes, and the ledger position of immediate rewards.
pub(crate) fn v1_to_v2(conn: &dyn Sql) -> Result<(), StoreError> {
    conn.batch("BEGIN IMMEDIATE")?;
    let r = (|| -> Result<(), StoreError> {
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
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", params![])?;
        Ok(())
    })();
    match r {
        Ok(()) => {
            conn.batch("COMMIT")?;
            tracing::info!("migrated the database from schema version 1 to 2");
            Ok(())
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(StoreError::Version(format!("migrating the database from schema version 1 to 2 failed, nothing was changed: {e}")))
        }
    }
}

/// Move a PostgreSQL database forward from version `from`. Version 2 is the first schema
/// PostgreSQL databases had, so there is nothing older to migrate yet.
pub(crate) fn postgres(_conn: &crate::pg::PgConn, from: i64) -> Result<(), StoreError> {
    Err(StoreError::Version(format!("the database has schema version {from}, older than any rltrace PostgreSQL schema: it was not made by rltrace")))
}

//! The raw SQLite baseline of the ingest benchmark: the same rows the writer stores, inserted with
//! one prepared statement in batched transactions into a table with no index but its rowid, on the
//! same connection settings. `rltrace loadgen --baseline` reports the collector's rate against it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::{PreparedSpan, StoreError};

/// A raw table in a scratch database.
pub struct RawBaseline {
    conn: Connection,
    elapsed: Duration,
    rows: u64,
}

impl RawBaseline {
    /// Create the scratch database at `path` (which must not exist), synced as the store is by
    /// default (`synchronous = FULL`).
    pub fn create(path: &Path) -> Result<RawBaseline, StoreError> {
        RawBaseline::create_with(path, true)
    }

    /// [`RawBaseline::create`] with `synchronous = FULL` or `NORMAL`.
    pub fn create_with(path: &Path, synchronous_full: bool) -> Result<RawBaseline, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if synchronous_full { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.execute_batch(
            "CREATE TABLE raw(id INTEGER PRIMARY KEY, trace_id BLOB, span_id INTEGER, parent_span_id INTEGER, name TEXT,
               kind INTEGER, start_ns INTEGER, end_ns INTEGER, status_code INTEGER, status_message TEXT, attributes TEXT,
               events TEXT, resource TEXT, scope TEXT, sequence_id TEXT, triplet_id TEXT, seq_index INTEGER, ts_us INTEGER,
               state TEXT, action TEXT, role TEXT, reward REAL, reward_components TEXT)",
        )?;
        Ok(RawBaseline { conn, elapsed: Duration::ZERO, rows: 0 })
    }

    /// Insert one batch in one transaction; only this is timed.
    pub fn insert_batch(&mut self, spans: &[PreparedSpan]) -> Result<(), StoreError> {
        let started = Instant::now();
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO raw(trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message,
                   attributes, events, resource, scope, sequence_id, triplet_id, seq_index, ts_us, state, action, role, reward,
                   reward_components) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )?;
            for s in spans {
                let t = s.triplet.as_ref();
                stmt.execute(params![
                    &s.trace_id[..],
                    i64::from_be_bytes(s.span_id),
                    s.parent_span_id,
                    s.name,
                    s.kind,
                    s.start_ns,
                    s.end_ns,
                    s.status_code,
                    s.status_message,
                    s.attributes,
                    s.events,
                    &*s.resource,
                    s.scope,
                    t.map(|t| t.sequence_id.as_str()),
                    t.map(|t| t.triplet_id.as_str()),
                    t.and_then(|t| t.seq_index),
                    t.map(|t| t.ts_us),
                    t.map(|t| t.state.as_str()),
                    t.map(|t| t.action.as_str()),
                    t.and_then(|t| t.role.as_deref()),
                    t.and_then(|t| t.reward),
                    t.and_then(|t| t.reward_components.as_deref()),
                ])?;
            }
        }
        tx.commit()?;
        self.elapsed += started.elapsed();
        self.rows += spans.len() as u64;
        Ok(())
    }

    /// Rows inserted per second of insert time.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Rows inserted.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// The raw PostgreSQL baseline of the ingest benchmark: the same rows the writer stores, written
/// with binary `COPY` (one statement and one transaction per batch) into a table with no index,
/// in the collector's database. `rltrace loadgen --baseline --baseline-store postgres://...`
/// reports the collector's rate against it. The table is dropped at the end.
pub struct PgBaseline {
    client: postgres::Client,
    table: String,
    elapsed: Duration,
    rows: u64,
}

const PG_RAW_COLUMNS: &str = "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, attributes,
    events, resource, scope, sequence_id, triplet_id, seq_index, ts_us, state, action, role, reward, reward_components";

impl PgBaseline {
    /// Create the scratch table `rltrace_baseline_{tag}` in the database at `pg`.
    pub fn create(pg: &crate::PgConfig, tag: u64) -> Result<PgBaseline, StoreError> {
        let mut client = pg.client_config(false)?.client().map_err(crate::pg::pg_error)?;
        let table = format!("rltrace_baseline_{tag:x}");
        client
            .batch_execute(&format!(
                "CREATE TABLE {table}(trace_id BYTEA, span_id BIGINT, parent_span_id BIGINT, name TEXT, kind BIGINT, start_ns BIGINT,
                   end_ns BIGINT, status_code BIGINT, status_message TEXT, attributes TEXT, events TEXT, resource TEXT, scope TEXT,
                   sequence_id TEXT, triplet_id TEXT, seq_index BIGINT, ts_us BIGINT, state TEXT, action TEXT, role TEXT,
                   reward DOUBLE PRECISION, reward_components TEXT)"
            ))
            .map_err(crate::pg::pg_error)?;
        Ok(PgBaseline { client, table, elapsed: Duration::ZERO, rows: 0 })
    }

    /// COPY one batch; only this is timed.
    pub fn insert_batch(&mut self, spans: &[PreparedSpan]) -> Result<(), StoreError> {
        use postgres::types::{ToSql, Type};
        let started = Instant::now();
        let types = [
            Type::BYTEA, Type::INT8, Type::INT8, Type::TEXT, Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT,
            Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT,
            Type::FLOAT8, Type::TEXT,
        ];
        let sql = format!("COPY {} ({PG_RAW_COLUMNS}) FROM STDIN BINARY", self.table);
        crate::pg::copy_binary(&mut self.client, &sql, &types, |w| {
            for s in spans {
                let t = s.triplet.as_ref();
                let row: [&(dyn ToSql + Sync); 22] = [
                    &&s.trace_id[..],
                    &i64::from_be_bytes(s.span_id),
                    &s.parent_span_id,
                    &s.name,
                    &i64::from(s.kind),
                    &s.start_ns,
                    &s.end_ns,
                    &i64::from(s.status_code),
                    &s.status_message,
                    &s.attributes,
                    &s.events,
                    &&*s.resource,
                    &s.scope,
                    &t.map(|t| t.sequence_id.as_str()),
                    &t.map(|t| t.triplet_id.as_str()),
                    &t.and_then(|t| t.seq_index),
                    &t.map(|t| t.ts_us),
                    &t.map(|t| t.state.as_str()),
                    &t.map(|t| t.action.as_str()),
                    &t.and_then(|t| t.role.as_deref()),
                    &t.and_then(|t| t.reward),
                    &t.and_then(|t| t.reward_components.as_deref()),
                ];
                w.write(&row)?;
            }
            Ok(())
        })?;
        self.elapsed += started.elapsed();
        self.rows += spans.len() as u64;
        Ok(())
    }

    /// Rows copied per second of copy time.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Drop for PgBaseline {
    fn drop(&mut self) {
        let _ = self.client.batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table));
    }
}

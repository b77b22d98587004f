//! The SQLite schema, its versions and migrations, and connection settings.
//!
//! Ingest speed comes from monotonic keys: a trace gets a rowid on first sight (`traces`), and a
//! span's identity index is `(trace_ref, span_id)`, so inserts land near the end of the index
//! instead of at random pages. Triplet columns live on the span row (no second row per triplet).

use rusqlite::{Connection, OptionalExtension};

use crate::StoreError;

/// Schema version written to `meta`. A database of an older version is migrated forward at
/// start; a newer one is refused.
pub const SCHEMA_VERSION: i64 = 7;

/// The tables and indexes.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  spans INTEGER NOT NULL,
  triplets INTEGER NOT NULL,
  sequences INTEGER NOT NULL,
  reward_events INTEGER NOT NULL,
  task_events INTEGER NOT NULL,
  rewarded_triplets INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO counters(id, spans, triplets, sequences, reward_events, task_events) VALUES (1, 0, 0, 0, 0, 0);
CREATE TABLE IF NOT EXISTS traces(id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS resources(id INTEGER PRIMARY KEY, attributes TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS sequences(
  id INTEGER PRIMARY KEY,
  sequence_id TEXT NOT NULL UNIQUE,
  triplet_count INTEGER NOT NULL DEFAULT 0,
  indexed_count INTEGER NOT NULL DEFAULT 0,
  first_us INTEGER,
  last_us INTEGER,
  ended INTEGER NOT NULL DEFAULT 0,
  local_rewards INTEGER NOT NULL DEFAULT 0,
  reward_events INTEGER NOT NULL DEFAULT 0,
  terminal_events INTEGER NOT NULL DEFAULT 0,
  settled INTEGER NOT NULL DEFAULT 0,
  covering_events INTEGER NOT NULL DEFAULT 0,
  hitl_events INTEGER NOT NULL DEFAULT 0,
  task_events INTEGER NOT NULL DEFAULT 0,
  rewarded_count INTEGER NOT NULL DEFAULT 0,
  rollout_id TEXT,
  attempt_id TEXT
);
CREATE TABLE IF NOT EXISTS spans(
  id INTEGER PRIMARY KEY,
  trace_ref INTEGER NOT NULL,
  span_id INTEGER NOT NULL,
  parent_span_id INTEGER,
  name TEXT NOT NULL,
  kind INTEGER NOT NULL,
  start_ns INTEGER NOT NULL,
  end_ns INTEGER NOT NULL,
  status_code INTEGER NOT NULL,
  status_message TEXT NOT NULL,
  attributes TEXT NOT NULL,
  events TEXT NOT NULL,
  resource_ref INTEGER,
  scope TEXT NOT NULL,
  seq_ref INTEGER,
  triplet_id TEXT,
  seq_index INTEGER,
  ts_us INTEGER,
  state TEXT,
  action TEXT,
  role TEXT,
  task_id TEXT,
  phase TEXT,
  reward REAL,
  reward_source TEXT,
  reward_components TEXT,
  propensity REAL,
  sampling_probability REAL,
  seq_end INTEGER,
  llm INTEGER,
  ledger_after INTEGER,
  extras TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_identity ON spans(trace_ref, span_id);
CREATE UNIQUE INDEX IF NOT EXISTS spans_triplet_id ON spans(triplet_id) WHERE triplet_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_sequence ON spans(seq_ref) WHERE seq_ref IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_role ON spans(role, id) WHERE seq_ref IS NOT NULL AND role IS NOT NULL;
CREATE TABLE IF NOT EXISTS sequence_roles(role TEXT NOT NULL, seq_ref INTEGER NOT NULL, PRIMARY KEY(role, seq_ref)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_sequences(task_id TEXT NOT NULL, seq_ref INTEGER NOT NULL, PRIMARY KEY(task_id, seq_ref)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sequences_rollout ON sequences(rollout_id, attempt_id) WHERE rollout_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS sequences_due ON sequences(last_us) WHERE terminal_events = 0 AND settled = 0;
CREATE INDEX IF NOT EXISTS sequences_last ON sequences(last_us, id);
CREATE INDEX IF NOT EXISTS sequence_roles_seq ON sequence_roles(seq_ref);
CREATE INDEX IF NOT EXISTS task_sequences_seq ON task_sequences(seq_ref);
CREATE TABLE IF NOT EXISTS forward_cursors(
  target TEXT PRIMARY KEY,
  after_id INTEGER NOT NULL,
  owner TEXT,
  lease_until_us INTEGER NOT NULL DEFAULT 0,
  updated_us INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agl_outbox(
  id INTEGER PRIMARY KEY,
  bridge TEXT NOT NULL,
  seq_ref INTEGER NOT NULL,
  rollout_id TEXT NOT NULL,
  attempt_id TEXT NOT NULL,
  value REAL NOT NULL,
  trace_id BLOB NOT NULL,
  start_ns INTEGER NOT NULL,
  state INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  created_us INTEGER NOT NULL,
  done_us INTEGER,
  reason TEXT
);
CREATE INDEX IF NOT EXISTS agl_outbox_seq ON agl_outbox(bridge, seq_ref);
CREATE INDEX IF NOT EXISTS agl_outbox_pending ON agl_outbox(bridge, id) WHERE state = 0;
CREATE TABLE IF NOT EXISTS reward_events(
  id INTEGER PRIMARY KEY,
  reward_id TEXT NOT NULL UNIQUE,
  target_triplet TEXT,
  target_sequence TEXT,
  strategy TEXT,
  gamma REAL,
  role TEXT,
  seq_key TEXT,
  value REAL,
  source TEXT NOT NULL,
  reason TEXT,
  created_us INTEGER NOT NULL,
  idempotency_key TEXT UNIQUE,
  body_hash TEXT,
  metadata TEXT,
  target_task TEXT,
  valuation TEXT
);
CREATE INDEX IF NOT EXISTS reward_events_seq ON reward_events(seq_key);
CREATE INDEX IF NOT EXISTS reward_events_pending ON reward_events(target_triplet) WHERE seq_key IS NULL;
CREATE INDEX IF NOT EXISTS reward_events_task ON reward_events(target_task) WHERE target_task IS NOT NULL;
"#;

/// Settings of the writer connection. `synchronous_full` trades speed for durability against
/// power loss; WAL with `NORMAL` is durable against a crash of the process.
pub fn configure_writer(conn: &Connection, synchronous_full: bool, max_pages: Option<u64>) -> Result<Migration, StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if synchronous_full { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if let Some(pages) = max_pages {
        conn.pragma_update(None, "max_page_count", i64::try_from(pages).unwrap_or(i64::MAX))?;
    }
    let migration = decide(stored_version(conn)?, |from| crate::migrate::sqlite(conn, from), || {
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('schema_version', ?1) ON CONFLICT(key) DO NOTHING",
            [SCHEMA_VERSION.to_string()],
        )?;
        Ok(())
    })?;
    if migration == Migration::None {
        // Indexes a database of this version may still lack.
        conn.execute_batch(SCHEMA)?;
    }
    Ok(migration)
}

/// What opening the store did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// A new database.
    Created,
    /// Already at this version.
    None,
    /// Migrated forward from the given version.
    From(i64),
}

/// The schema version recorded in the database, `None` for a new database.
pub fn stored_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let has_meta: bool = conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get::<_, i64>(0))? > 0;
    if !has_meta {
        return Ok(None);
    }
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()?;
    match v {
        None => Ok(None),
        Some(t) => t.parse::<i64>().map(Some).map_err(|_| StoreError::Corrupt(format!("schema version {t:?}"))),
    }
}

/// Refuse a database this binary cannot read (read-only users; the writer migrates instead).
pub fn check_readable(conn: &Connection) -> Result<(), StoreError> {
    check_version(stored_version(conn)?)
}

/// What a writer does with a database of version `found`: refuse a newer one, migrate an older
/// one forward (`migrate(from)`), create a new one (`create`). Both backends decide here.
pub(crate) fn decide(
    found: Option<i64>,
    migrate: impl FnOnce(i64) -> Result<(), StoreError>,
    create: impl FnOnce() -> Result<(), StoreError>,
) -> Result<Migration, StoreError> {
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::Version(format!(
            "the database has schema version {v}, newer than this rltrace's {SCHEMA_VERSION}: use a newer rltrace (nothing was changed)"
        ))),
        Some(SCHEMA_VERSION) => Ok(Migration::None),
        Some(v) => {
            migrate(v)?;
            Ok(Migration::From(v))
        }
        None => {
            create()?;
            Ok(Migration::Created)
        }
    }
}

/// Whether a database of version `found` can be read as it is.
pub(crate) fn check_version(found: Option<i64>) -> Result<(), StoreError> {
    match found {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::Version(format!(
            "the database has schema version {v}, newer than this rltrace's {SCHEMA_VERSION}: use a newer rltrace"
        ))),
        Some(v) => Err(StoreError::Version(format!(
            "the database has schema version {v}; open it once with `rltrace serve` (or any writing command) to migrate it to {SCHEMA_VERSION}"
        ))),
        None => Err(StoreError::Version("not an rltrace database (no schema version)".into())),
    }
}

/// Settings of a reader connection.
pub fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

//! The PostgreSQL backend: connections that run the store's SQL ([`crate::db::Sql`]) translated
//! from SQLite's dialect once per statement and prepared with the parameters' types, the schema,
//! the bounded pool of reader connections, and the advisory locks that let several collectors
//! share one database (one write group at a time, one settling process at a time).

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::Type;
use postgres::{Client, Statement};

use crate::StoreError;
use crate::db::{Dialect, P, Row, Sql, Value};

/// Advisory lock key held by each write group for its transaction: write groups of every
/// collector on the database run one at a time, so row ids grow in commit order (watermarks stay
/// consistent) and what a writer remembers can be checked against what others committed.
pub(crate) const WRITE_LOCK: i64 = 0x726c_7472_0001;
/// Advisory lock key held for its session by the one process that settles fallbacks.
pub(crate) const SETTLE_LOCK: i64 = 0x726c_7472_0002;
/// Advisory lock key held while a process creates or migrates the schema.
pub(crate) const SCHEMA_LOCK: i64 = 0x726c_7472_0003;

/// Statements prepared and kept per connection at most; past it the cache starts over.
const STATEMENT_CACHE: usize = 256;

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PgConfig {
    /// The URL as given (`postgres://USER:PASSWORD@HOST:PORT/DB`).
    pub url: String,
    /// Reader connections at most (the pool's size).
    pub pool_size: u32,
    /// Longest wait for a connection (connecting, or a free one from the pool).
    pub connect_timeout: Duration,
    /// Longest run of one statement (`statement_timeout`).
    pub statement_timeout: Duration,
}

impl PgConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig { url: url.into(), pool_size: 8, connect_timeout: Duration::from_secs(5), statement_timeout: Duration::from_secs(30) }
    }

    /// The client configuration: the URL, the password from `PGPASSWORD` when the URL has none,
    /// the timeouts.
    pub(crate) fn client_config(&self, read_only: bool) -> Result<PgConnect, StoreError> {
        let (url, mut tls) = crate::pg_tls::split_url(&self.url)?;
        let mut c = postgres::Config::from_str(&url).map_err(|e| StoreError::Config(format!("store URL: {e}")))?;
        if c.get_ssl_mode() != postgres::config::SslMode::Prefer {
            // The client library read an `sslmode` that was not taken out above.
            return Err(StoreError::Config("store URL: sslmode is given in a form this collector does not read; write it as sslmode=MODE".into()));
        }
        if !c.get_hosts().is_empty() && c.get_hosts().iter().all(|h| !matches!(h, postgres::config::Host::Tcp(_))) {
            // Unix sockets carry no TLS; libpq ignores sslmode there.
            tls.mode = crate::pg_tls::SslMode::Disable;
        } else if c.get_hosts().is_empty() && !c.get_hostaddrs().is_empty() && tls.mode != crate::pg_tls::SslMode::Disable {
            // Only addresses: the certificate is checked against them (the client library would
            // have no name for the handshake).
            for a in c.get_hostaddrs().to_vec() {
                c.host(&a.to_string());
            }
        }
        c.ssl_mode(tls.client_mode());
        if c.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
        {
            c.password(p);
        }
        c.connect_timeout(self.connect_timeout);
        c.application_name("rltrace");
        // Every statement of the store is keyed (it walks an index, as on SQLite); a young table's
        // statistics (the first minutes of a collector, before autovacuum analyses it) made the
        // planner scan whole tables for each batch, cost that grew with the table. With
        // sequential scans disabled it takes the index unless there is none.
        let mut options = format!(
            "-c statement_timeout={0} -c idle_in_transaction_session_timeout={0} -c enable_seqscan=off",
            self.statement_timeout.as_millis()
        );
        if read_only {
            options.push_str(" -c default_transaction_read_only=on");
        }
        c.options(&options);
        Ok(PgConnect { config: c, tls: tls.connector()? })
    }

    /// The URL without its password (wherever the URL gave it), for messages: rebuilt from the
    /// parsed user, host, port and database.
    pub fn display_url(&self) -> String {
        let Ok(c) = postgres::Config::from_str(&crate::pg_tls::without_tls_options(&self.url)) else {
            return "postgres://(a URL that does not parse)".into();
        };
        let host = match c.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        format!("postgres://{}@{host}:{port}/{}", c.get_user().unwrap_or_default(), c.get_dbname().unwrap_or_default())
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.display_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// How to connect: the client configuration and the TLS connector (`sslmode`, `sslrootcert`).
#[derive(Clone)]
pub(crate) struct PgConnect {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl PgConnect {
    /// A client connection.
    pub(crate) fn client(&self) -> Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }

    /// The same connection under another `application_name` (as `pg_stat_activity` shows it).
    fn named(&self, name: &str) -> PgConnect {
        let mut c = self.clone();
        c.config.application_name(name);
        c
    }
}

/// One PostgreSQL connection with its prepared statements.
pub(crate) struct PgConn {
    client: RefCell<Client>,
    stmts: RefCell<HashMap<String, (Vec<Type>, Statement)>>,
    /// The writer's log flusher (the writer's session only).
    flusher: Option<Arc<LogFlusher>>,
}

impl PgConn {
    /// Connect.
    pub(crate) fn connect(config: &PgConnect) -> Result<PgConn, StoreError> {
        let client = config.client().map_err(pg_error)?;
        Ok(PgConn { client: RefCell::new(client), stmts: RefCell::new(HashMap::new()), flusher: None })
    }

    /// Have the log this session wrote so far flushed to disk from another session, without
    /// waiting (see [`LogFlusher`]); nothing on a session without a flusher.
    pub(crate) fn flush_log_soon(&self) {
        if let Some(f) = &self.flusher {
            f.nudge();
        }
    }

    /// Whether the connection is gone (the server closed it or the socket broke).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.try_borrow().map(|c| c.is_closed()).unwrap_or(false)
    }

    fn statement(&self, sql: &str, params: &[P<'_>]) -> Result<Statement, StoreError> {
        let types: Vec<Type> = params.iter().map(param_type).collect();
        if let Some((t, s)) = self.stmts.borrow().get(sql)
            && *t == types
        {
            return Ok(s.clone());
        }
        let translated = translate(sql);
        let stmt = self.client.borrow_mut().prepare_typed(&translated, &types).map_err(|e| {
            let e = pg_error(e);
            tracing::debug!(sql = %translated, error = %e, "statement not prepared");
            e
        })?;
        let mut cache = self.stmts.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_string(), (types, stmt.clone()));
        Ok(stmt)
    }
}

fn param_type(p: &P<'_>) -> Type {
    match p {
        P::I(_) => Type::INT8,
        P::F(_) => Type::FLOAT8,
        P::T(_) => Type::TEXT,
        P::B(_) => Type::BYTEA,
        P::IA(_) => Type::INT8_ARRAY,
        P::TA(_) => Type::TEXT_ARRAY,
        P::BA(_) => Type::BYTEA_ARRAY,
    }
}

fn to_sql<'a>(params: &'a [P<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| -> &(dyn postgres::types::ToSql + Sync) {
            match p {
                P::I(v) => v,
                P::F(v) => v,
                P::T(v) => v,
                P::B(v) => v,
                P::IA(v) => v,
                P::TA(v) => v,
                P::BA(v) => v,
            }
        })
        .collect()
}

impl Sql for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn rows(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql, params)?;
        let rows = self.client.borrow_mut().query(&stmt, &to_sql(params)).map_err(pg_error)?;
        rows.iter().map(convert_row).collect()
    }

    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql, params)?;
        self.client.borrow_mut().execute(&stmt, &to_sql(params)).map_err(pg_error)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.client.borrow_mut().batch_execute(sql).map_err(pg_error)
    }

    fn postgres(&self) -> Option<&PgConn> {
        Some(self)
    }
}

impl PgConn {
    /// Run `sql` (statements without parameters) as one simple query and read the last row it
    /// returns as `N` integers.
    pub(crate) fn simple_ints<const N: usize>(&self, sql: &str) -> Result<[i64; N], StoreError> {
        let messages = self.client.borrow_mut().simple_query(sql).map_err(pg_error)?;
        let row = messages
            .iter()
            .rev()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| StoreError::Corrupt("a query returned no row".into()))?;
        let mut out = [0i64; N];
        for (i, v) in out.iter_mut().enumerate() {
            *v = row
                .get(i)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("column {i} of {sql:?} is not an integer")))?;
        }
        Ok(out)
    }
}

impl PgConn {
    /// `COPY ... FROM STDIN BINARY` of rows of the given column types, each written by `rows`.
    pub(crate) fn copy_in(&self, sql: &str, types: &[Type], rows: impl FnOnce(&mut CopyRows<'_, '_>) -> Result<(), StoreError>) -> Result<u64, StoreError> {
        copy_binary(&mut self.client.borrow_mut(), sql, types, rows)
    }
}

/// Bytes of encoded rows handed to the server as one `CopyData` message: large enough that a
/// batch's rows cost a few writes to the socket (not one per 4 KiB, which cost the writer more
/// than encoding the rows), small enough that the server parses one message while the next is
/// encoded.
const COPY_CHUNK: usize = 256 * 1024;

/// The binary `COPY` format's header: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The first message of a `COPY`: smaller, so that the server starts on the rows while the
/// writer encodes the rest (with a whole [`COPY_CHUNK`] first it waited for all of it).
const COPY_FIRST_CHUNK: usize = 32 * 1024;

/// The rows of one binary `COPY`, encoded by the column types' own `ToSql` straight into a buffer
/// that is sent in [`COPY_CHUNK`] messages.
pub(crate) struct CopyRows<'c, 't> {
    out: postgres::CopyInWriter<'c>,
    types: &'t [Type],
    buf: bytes::BytesMut,
    /// Bytes to reach before the next message is sent.
    chunk: usize,
}

impl CopyRows<'_, '_> {
    /// Encode one row (its values in the order of the column types).
    pub(crate) fn write(&mut self, values: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<(), StoreError> {
        if values.len() != self.types.len() {
            return Err(StoreError::Failed(format!("a COPY row of {} values for {} columns", values.len(), self.types.len())));
        }
        self.buf.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for (v, ty) in values.iter().zip(self.types) {
            // The value after a length written once it is known (no copy of the value).
            let at = self.buf.len();
            self.buf.extend_from_slice(&[0; 4]);
            let n = match v.to_sql_checked(ty, &mut self.buf).map_err(|e| StoreError::Failed(format!("a COPY value of type {ty}: {e}")))? {
                postgres::types::IsNull::Yes => {
                    self.buf.truncate(at + 4);
                    -1
                }
                postgres::types::IsNull::No => i32::try_from(self.buf.len() - at - 4).map_err(|_| StoreError::Failed("a COPY value over 2 GiB".into()))?,
            };
            self.buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
        }
        if self.buf.len() >= self.chunk {
            self.send()?;
            self.chunk = COPY_CHUNK;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), StoreError> {
        use std::io::Write;
        self.out.write_all(&self.buf).and_then(|()| self.out.flush()).map_err(|e| {
            // The writer wraps the client's error: unwrapped, it is judged as any other.
            let text = e.to_string();
            match e.into_inner().map(|inner| inner.downcast::<postgres::Error>()) {
                Some(Ok(pg)) => pg_error(*pg),
                _ => StoreError::Postgres(text),
            }
        })?;
        self.buf.clear();
        Ok(())
    }
}

/// Run a binary `COPY ... FROM STDIN` on `client` with the rows `rows` writes; returns the rows
/// the server counted.
pub(crate) fn copy_binary(
    client: &mut Client,
    sql: &str,
    types: &[Type],
    rows: impl FnOnce(&mut CopyRows<'_, '_>) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let out = client.copy_in(sql).map_err(pg_error)?;
    let mut c = CopyRows { out, types, buf: bytes::BytesMut::with_capacity(COPY_CHUNK + 64 * 1024), chunk: COPY_FIRST_CHUNK };
    c.buf.extend_from_slice(COPY_HEADER);
    // On an error the writer is dropped unfinished, which aborts the COPY.
    rows(&mut c)?;
    c.buf.extend_from_slice(&(-1i16).to_be_bytes());
    c.send()?;
    c.out.finish().map_err(pg_error)
}

fn convert_row(r: &postgres::Row) -> Result<Row, StoreError> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let bad = |e: postgres::Error| StoreError::Corrupt(format!("column {}: {e}", col.name()));
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i).map_err(bad)?.map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i).map_err(bad)?.map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i).map_err(bad)?.map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Value::Real)
        } else if *t == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i).map_err(bad)?.map(|v| Value::Real(f64::from(v)))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?.map(Value::Blob)
        } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME || *t == Type::BPCHAR {
            r.try_get::<_, Option<String>>(i).map_err(bad)?.map(Value::Text)
        } else {
            return Err(StoreError::Corrupt(format!("column {} has type {t}, which the store does not read", col.name())));
        };
        vals.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(vals))
}

/// A PostgreSQL error as the store's: refused data (SQLSTATE classes 22, 23, 54) fails the
/// operation only; anything else is a failure of the store. Connection failures keep their cause
/// readable.
pub(crate) fn pg_error(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error()
        && matches!(&db.code().code()[..2], "22" | "23" | "54")
    {
        // The data was refused (a bad value, a constraint, a value too large for an index): the
        // operation fails, the store does not.
        return StoreError::Failed(format!("postgres refused the data: {} ({})", db.message(), db.code().code()));
    }
    StoreError::Postgres(match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    })
}

/// The store's SQL (SQLite's dialect) in PostgreSQL's: `$N` parameters, `ON CONFLICT DO NOTHING`
/// for `INSERT OR IGNORE`, `GREATEST`/`LEAST` for two-argument `max`/`min`, and JSON arrays
/// walked by `json_array_elements_text`.
pub(crate) fn translate(sql: &str) -> String {
    let sql = &in_list_as_array(sql);
    let mut s = sql.replace("json_each(?", "json_array_elements_text(CAST(?");
    if s.len() != sql.len() {
        // Close the CAST opened above: `json_array_elements_text(CAST(?N)` → `...(CAST(?N AS json))`.
        let mut out = String::with_capacity(s.len() + 16);
        let mut rest = s.as_str();
        while let Some(i) = rest.find("json_array_elements_text(CAST(?") {
            let start = i + "json_array_elements_text(CAST(?".len();
            out.push_str(&rest[..start]);
            let digits = rest[start..].bytes().take_while(u8::is_ascii_digit).count();
            out.push_str(&rest[start..start + digits]);
            out.push_str(" AS json)");
            rest = &rest[start + digits..];
        }
        out.push_str(rest);
        s = out;
    }
    let ignore = s.contains("INSERT OR IGNORE INTO");
    if ignore {
        s = s.replace("INSERT OR IGNORE INTO", "INSERT INTO");
        match s.rfind(" RETURNING ") {
            Some(i) => s.insert_str(i, " ON CONFLICT DO NOTHING"),
            None => s.push_str(" ON CONFLICT DO NOTHING"),
        }
    }
    let s = two_argument(&s, "max", "GREATEST");
    let s = two_argument(&s, "min", "LEAST");
    // Parameters: `?N` → `$N`.
    let mut out = String::with_capacity(s.len());
    let mut in_string = false;
    for c in s.chars() {
        if c == '\'' {
            in_string = !in_string;
        }
        out.push(if c == '?' && !in_string { '$' } else { c });
    }
    out
}

/// `x IN (SELECT value FROM json_each(?N))` (or `CAST(value AS BIGINT)`) → `x = ANY(ARRAY(...))`:
/// the list becomes one array computed first, which an index on `x` is searched with. As a
/// semi-join against a function, a table whose statistics are not gathered yet (after a bulk
/// load, before autovacuum analyses it) was read whole: 0.4 s for the 64 rows of four
/// sequences out of 300,000.
fn in_list_as_array(sql: &str) -> String {
    const FORMS: [&str; 2] = [" IN (SELECT CAST(value AS BIGINT) FROM json_each(?", " IN (SELECT value FROM json_each(?"];
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some((i, form)) = FORMS.iter().filter_map(|f| rest.find(f).map(|i| (i, *f))).min_by_key(|(i, _)| *i) {
        let tail = &rest[i + form.len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let end = i + form.len() + digits;
        // (`NOT IN` stays: `NOT = ANY` is not its meaning.)
        if digits == 0 || !rest[end..].starts_with("))") || rest[..i].to_ascii_uppercase().ends_with("NOT") {
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        out.push_str(&rest[..i]);
        out.push_str(" = ANY(ARRAY(SELECT ");
        out.push_str(&form[" IN (SELECT ".len()..]);
        out.push_str(&tail[..digits]);
        out.push_str(")))");
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `name(a, b)` (a scalar call with a comma at its top level) → `to(a, b)`; aggregates
/// `name(x)` stay.
fn two_argument(sql: &str, name: &str, to: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let pat = format!("{name}(");
    while i < sql.len() {
        let at = sql[i..].to_ascii_lowercase().find(&pat).map(|p| p + i);
        let Some(at) = at else {
            out.push_str(&sql[i..]);
            break;
        };
        let word_start = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        out.push_str(&sql[i..at]);
        let open = at + name.len();
        let mut depth = 0i32;
        let mut comma = false;
        for &b in &bytes[open..] {
            match b {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                b',' if depth == 1 => comma = true,
                _ => {}
            }
        }
        out.push_str(if word_start && comma { to } else { &sql[at..open] });
        i = open;
    }
    out
}

/// The schema, version [`crate::SCHEMA_VERSION`]: the SQLite schema's tables with PostgreSQL's
/// types (text compared byte by byte, `COLLATE "C"`, as SQLite does).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta(key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters(
  id BIGINT PRIMARY KEY CHECK (id = 1),
  spans BIGINT NOT NULL,
  triplets BIGINT NOT NULL,
  sequences BIGINT NOT NULL,
  reward_events BIGINT NOT NULL,
  task_events BIGINT NOT NULL,
  rewarded_triplets BIGINT NOT NULL DEFAULT 0
);
INSERT INTO counters(id, spans, triplets, sequences, reward_events, task_events) VALUES (1, 0, 0, 0, 0, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS traces(id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, trace_id BYTEA NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS resources(id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, attributes TEXT COLLATE "C" NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS sequences(
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  sequence_id TEXT COLLATE "C" NOT NULL UNIQUE,
  triplet_count BIGINT NOT NULL DEFAULT 0,
  indexed_count BIGINT NOT NULL DEFAULT 0,
  first_us BIGINT,
  last_us BIGINT,
  ended BIGINT NOT NULL DEFAULT 0,
  local_rewards BIGINT NOT NULL DEFAULT 0,
  reward_events BIGINT NOT NULL DEFAULT 0,
  terminal_events BIGINT NOT NULL DEFAULT 0,
  settled BIGINT NOT NULL DEFAULT 0,
  covering_events BIGINT NOT NULL DEFAULT 0,
  hitl_events BIGINT NOT NULL DEFAULT 0,
  task_events BIGINT NOT NULL DEFAULT 0,
  rewarded_count BIGINT NOT NULL DEFAULT 0,
  rollout_id TEXT COLLATE "C",
  attempt_id TEXT COLLATE "C"
);
CREATE TABLE IF NOT EXISTS spans(
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  trace_ref BIGINT NOT NULL,
  span_id BIGINT NOT NULL,
  parent_span_id BIGINT,
  name TEXT COLLATE "C" NOT NULL,
  kind BIGINT NOT NULL,
  start_ns BIGINT NOT NULL,
  end_ns BIGINT NOT NULL,
  status_code BIGINT NOT NULL,
  status_message TEXT NOT NULL,
  attributes TEXT NOT NULL,
  events TEXT NOT NULL,
  resource_ref BIGINT,
  scope TEXT NOT NULL,
  seq_ref BIGINT,
  triplet_id TEXT COLLATE "C",
  seq_index BIGINT,
  ts_us BIGINT,
  state TEXT,
  action TEXT,
  role TEXT COLLATE "C",
  task_id TEXT COLLATE "C",
  phase TEXT COLLATE "C",
  reward DOUBLE PRECISION,
  reward_source TEXT,
  reward_components TEXT,
  propensity DOUBLE PRECISION,
  sampling_probability DOUBLE PRECISION,
  seq_end BIGINT,
  llm BIGINT,
  ledger_after BIGINT,
  extras TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_identity ON spans(trace_ref, span_id);
CREATE UNIQUE INDEX IF NOT EXISTS spans_triplet_id ON spans(triplet_id) WHERE triplet_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_sequence ON spans(seq_ref) WHERE seq_ref IS NOT NULL;
-- The triplets of each role in arrival order, as posting rows: each `COPY` of span rows adds one
-- row per role (at most ROLE_CHUNK ids, in order) instead of an index entry per span (an index on
-- (role, id) costs every insert a descent of its tree). Groups write one at a time, so the rows
-- of one role never overlap and their order by last_id is the order of their ids.
CREATE TABLE IF NOT EXISTS role_spans(role TEXT COLLATE "C" NOT NULL, last_id BIGINT NOT NULL, ids BIGINT[] NOT NULL, PRIMARY KEY(role, last_id));
-- Without an index by sequence (SQLite's sequence_roles_seq): retention deletes a sequence's links
-- by (role, sequence), from the roles of the span rows it deletes.
CREATE TABLE IF NOT EXISTS sequence_roles(role TEXT COLLATE "C" NOT NULL, seq_ref BIGINT NOT NULL, PRIMARY KEY(role, seq_ref));
CREATE TABLE IF NOT EXISTS task_sequences(task_id TEXT COLLATE "C" NOT NULL, seq_ref BIGINT NOT NULL, PRIMARY KEY(task_id, seq_ref));
CREATE INDEX IF NOT EXISTS sequences_rollout ON sequences(rollout_id, attempt_id) WHERE rollout_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS sequences_due ON sequences(last_us) WHERE terminal_events = 0 AND settled = 0;
CREATE INDEX IF NOT EXISTS sequences_last ON sequences(last_us, id);
CREATE INDEX IF NOT EXISTS task_sequences_seq ON task_sequences(seq_ref);
CREATE TABLE IF NOT EXISTS forward_cursors(
  target TEXT COLLATE "C" PRIMARY KEY,
  after_id BIGINT NOT NULL,
  owner TEXT,
  lease_until_us BIGINT NOT NULL DEFAULT 0,
  updated_us BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agl_outbox(
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  bridge TEXT COLLATE "C" NOT NULL,
  seq_ref BIGINT NOT NULL,
  rollout_id TEXT COLLATE "C" NOT NULL,
  attempt_id TEXT COLLATE "C" NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  trace_id BYTEA NOT NULL,
  start_ns BIGINT NOT NULL,
  state BIGINT NOT NULL DEFAULT 0,
  attempts BIGINT NOT NULL DEFAULT 0,
  last_error TEXT,
  created_us BIGINT NOT NULL,
  done_us BIGINT,
  reason TEXT
);
CREATE INDEX IF NOT EXISTS agl_outbox_seq ON agl_outbox(bridge, seq_ref);
CREATE INDEX IF NOT EXISTS agl_outbox_pending ON agl_outbox(bridge, id) WHERE state = 0;
CREATE TABLE IF NOT EXISTS reward_events(
  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  reward_id TEXT COLLATE "C" NOT NULL UNIQUE,
  target_triplet TEXT COLLATE "C",
  target_sequence TEXT COLLATE "C",
  strategy TEXT,
  gamma DOUBLE PRECISION,
  role TEXT COLLATE "C",
  seq_key TEXT COLLATE "C",
  value DOUBLE PRECISION,
  source TEXT COLLATE "C" NOT NULL,
  reason TEXT,
  created_us BIGINT NOT NULL,
  idempotency_key TEXT COLLATE "C" UNIQUE,
  body_hash TEXT,
  metadata TEXT,
  target_task TEXT COLLATE "C",
  valuation TEXT
);
CREATE INDEX IF NOT EXISTS reward_events_seq ON reward_events(seq_key);
CREATE INDEX IF NOT EXISTS reward_events_pending ON reward_events(target_triplet) WHERE seq_key IS NULL;
CREATE INDEX IF NOT EXISTS reward_events_task ON reward_events(target_task) WHERE target_task IS NOT NULL;
"#;

/// The version recorded in the database, `None` for an empty one.
pub(crate) fn stored_version(conn: &PgConn) -> Result<Option<i64>, StoreError> {
    use crate::db::SqlExt;
    let db: &dyn Sql = conn;
    let has_meta: i64 = db.query_row("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'meta'", &[], |r| r.get(0))?;
    if has_meta == 0 {
        return Ok(None);
    }
    let v: Option<String> = db.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[], |r| r.get(0))?;
    match v {
        None => Ok(None),
        Some(t) => t.parse::<i64>().map(Some).map_err(|_| StoreError::Corrupt(format!("schema version {t:?}"))),
    }
}

/// Create the schema, or check and migrate it, while holding the schema lock (collectors started
/// together do it one after another).
pub(crate) fn prepare_schema(conn: &PgConn) -> Result<crate::Migration, StoreError> {
    conn.batch(&format!("SELECT pg_advisory_lock({SCHEMA_LOCK})"))?;
    let r = (|| {
        let found = stored_version(conn)?;
        crate::schema::decide(found, |from| crate::migrate::postgres(conn, from), || {
            conn.batch(&format!("BEGIN; {SCHEMA} INSERT INTO meta(key, value) VALUES('schema_version', '{}') ON CONFLICT DO NOTHING; COMMIT", crate::SCHEMA_VERSION))
        })
    })();
    let _ = conn.batch(&format!("SELECT pg_advisory_unlock({SCHEMA_LOCK})"));
    r
}

/// Check that a database can be read by this binary (read-only users).
pub(crate) fn check_readable(conn: &PgConn) -> Result<(), StoreError> {
    crate::schema::check_version(stored_version(conn)?)
}

/// A pool of reader connections (r2d2): at most `pool_size`, each with its prepared statements;
/// a broken one is dropped and replaced.
pub(crate) struct Manager {
    pub(crate) config: PgConnect,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = StoreError;

    fn connect(&self) -> Result<PgConn, StoreError> {
        PgConn::connect(&self.config)
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), StoreError> {
        conn.batch("")
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_closed()
    }
}

/// The pool of reader connections.
pub(crate) fn reader_pool(config: &PgConfig, read_only: bool) -> Result<r2d2::Pool<Manager>, StoreError> {
    Ok(r2d2::Pool::builder()
        .max_size(config.pool_size.max(1))
        .min_idle(Some(0))
        .connection_timeout(config.connect_timeout)
        .test_on_check_out(false)
        .build_unchecked(Manager { config: config.client_config(read_only)? }))
}


/// The writer's PostgreSQL session: connected at start, reconnected when the connection is
/// gone (at most one attempt a second, so a stopped database is answered with errors at once
/// instead of with a queue that waits), holding the write lock for each group and, once it got
/// it, the settle lock for as long as the session lives.
pub(crate) struct PgWriter {
    config: PgConnect,
    flusher: Option<Arc<LogFlusher>>,
    conn: Option<PgConn>,
    last_attempt: Option<std::time::Instant>,
    last_error: String,
    settle_leader: bool,
}

/// Least time between two connection attempts of the writer.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

impl PgWriter {
    pub(crate) fn new(config: PgConnect, mut conn: PgConn) -> PgWriter {
        let flusher = LogFlusher::start(config.named(LogFlusher::APPLICATION_NAME)).map(Arc::new);
        conn.flusher.clone_from(&flusher);
        PgWriter { config, flusher, conn: Some(conn), last_attempt: None, last_error: String::new(), settle_leader: false }
    }

    /// The connection, if it is up.
    pub(crate) fn conn(&self) -> Result<&dyn Sql, StoreError> {
        match &self.conn {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Err(StoreError::Unreachable(format!("the database is unreachable: {}", self.last_error))),
        }
    }

    /// Reconnect when the connection is gone; `true` when a new one was made.
    fn ensure(&mut self) -> Result<bool, StoreError> {
        if self.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(false);
        }
        if self.conn.take().is_some() {
            self.settle_leader = false;
            tracing::warn!("the connection to PostgreSQL is gone; reconnecting");
        }
        if self.last_attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return Err(StoreError::Unreachable(format!("the database is unreachable: {}", self.last_error)));
        }
        self.last_attempt = Some(std::time::Instant::now());
        match PgConn::connect(&self.config) {
            Ok(mut c) => {
                tracing::info!("connected to PostgreSQL again");
                c.flusher.clone_from(&self.flusher);
                self.conn = Some(c);
                Ok(true)
            }
            Err(e) => {
                self.last_error = e.to_string();
                Err(StoreError::Unreachable(format!("the database is unreachable: {e}")))
            }
        }
    }

    /// Reconnect if need be and check that the database answers.
    pub(crate) fn probe(&mut self) -> Result<(), StoreError> {
        self.ensure()?;
        let conn = self.conn()?;
        // A session left in a failed transaction is cleared first.
        let _ = conn.batch("ROLLBACK");
        let r = conn.batch("SELECT 1");
        if let Err(e) = &r {
            self.last_error = e.to_string();
        }
        r
    }

    /// Open a group's transaction and take the write lock, and say what of the writer's caches
    /// must be reloaded: everything when the session is new, what they know of the ledger when its
    /// newest event is not `last_event` (another collector appended since).
    pub(crate) fn begin(&mut self, last_event: i64, gc_generation: i64) -> Result<crate::writer::Reload, StoreError> {
        let fresh = self.ensure()?;
        let conn = self.conn()?;
        let r = (|| -> Result<crate::writer::Reload, StoreError> {
            // One round trip; each statement of it has its own snapshot, so what is read is
            // read with the lock held.
            let pg = conn.postgres().ok_or_else(|| StoreError::Failed("the writer's session is not PostgreSQL".into()))?;
            let [newest, generation] = pg.simple_ints(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK});
                 SELECT (SELECT coalesce(max(id), 0) FROM reward_events),
                        coalesce((SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'gc_generation'), 0)"
            ))?;
            Ok(if fresh || generation != gc_generation {
                // Retention deleted sequences (here or elsewhere): cached rows may be gone.
                crate::writer::Reload::All
            } else if newest != last_event {
                crate::writer::Reload::Ledger
            } else {
                crate::writer::Reload::Nothing
            })
        })();
        if let Err(e) = &r {
            // Never leave the session inside a failed transaction (which would hold the write lock).
            let _ = conn.batch("ROLLBACK");
            self.last_error = e.to_string();
        }
        r
    }

    /// Whether this session holds the settle lock (trying to take it when it does not).
    pub(crate) fn may_settle(&mut self) -> Result<bool, StoreError> {
        if !self.settle_leader {
            use crate::db::SqlExt;
            let got: bool = self.conn()?.query_row(&format!("SELECT pg_try_advisory_lock({SETTLE_LOCK})"), &[], |r| r.get(0))?;
            if got {
                tracing::info!("this collector settles fallbacks (it holds the settle lock)");
            }
            self.settle_leader = got;
        }
        Ok(self.settle_leader)
    }
}

/// Flushes the log of the writer's open transaction from a session of its own while the writer
/// goes on with the rest of its group.
///
/// A group's `COPY` of span rows writes nearly all of its log, and its `COMMIT` waited for that
/// log to be written and synced to disk, a wait in which the writer did nothing. The commit of any
/// transaction that has an id flushes the whole log up to its own commit record, the records of
/// other sessions before it included; so a tiny transaction committed here just after the `COPY`
/// has the server write and sync the group's log in this session's backend, while the writer's
/// backend runs the group's remaining statements, and the group's own `COMMIT` then finds little
/// or nothing left to flush. Nothing depends on it: a nudge that finds the flusher busy is
/// dropped (one slot), a flusher whose session is gone reconnects at most once a second, and
/// what the writer acknowledges is still only what its own `COMMIT` made durable.
pub(crate) struct LogFlusher {
    nudge: std::sync::mpsc::SyncSender<()>,
}

/// The flusher's transaction: it takes a transaction id, so its commit writes a commit record
/// and flushes the log up to it (with the server's `synchronous_commit` on).
const FLUSH_LOG: &str = "BEGIN; SELECT txid_current(); COMMIT";

impl LogFlusher {
    /// Its sessions' `application_name`.
    pub(crate) const APPLICATION_NAME: &'static str = "rltrace log flusher";

    /// Start the flusher's thread (`None` when the thread cannot start: the writer then works
    /// as before); it connects on its first nudge.
    fn start(config: PgConnect) -> Option<LogFlusher> {
        let (nudge, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("rltrace-store-flush".into())
            .spawn(move || {
                let mut client: Option<Client> = None;
                let mut last_attempt: Option<std::time::Instant> = None;
                while rx.recv().is_ok() {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = None;
                        if last_attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                            continue;
                        }
                        last_attempt = Some(std::time::Instant::now());
                        match config.client() {
                            Ok(c) => client = Some(c),
                            Err(e) => {
                                tracing::debug!(error = %e, "the log flusher cannot connect");
                                continue;
                            }
                        }
                    }
                    if let Some(c) = client.as_mut()
                        && let Err(e) = c.batch_execute(FLUSH_LOG)
                    {
                        tracing::debug!(error = %e, "the log flusher's transaction failed");
                        client = None;
                    }
                }
            })
            .ok()?;
        Some(LogFlusher { nudge })
    }

    fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn statements_are_translated_once_for_postgres() {
        assert_eq!(translate("SELECT id FROM t WHERE a = ?1 AND b = ?12"), "SELECT id FROM t WHERE a = $1 AND b = $12");
        assert_eq!(translate("INSERT OR IGNORE INTO t(a) VALUES (?1)"), "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING");
        assert_eq!(
            translate("INSERT OR IGNORE INTO t(a) VALUES (?1) RETURNING id"),
            "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"
        );
        assert_eq!(
            translate("UPDATE s SET a = max(a, ?1), b = min(coalesce(b, ?2), ?2), c = (SELECT max(id) FROM x)"),
            "UPDATE s SET a = GREATEST(a, $1), b = LEAST(coalesce(b, $2), $2), c = (SELECT max(id) FROM x)"
        );
        assert_eq!(
            translate("WHERE s IN (SELECT CAST(value AS BIGINT) FROM json_each(?1)) AND k IN (SELECT value FROM json_each(?2))"),
            "WHERE s = ANY(ARRAY(SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST($1 AS json)))) AND k = ANY(ARRAY(SELECT value FROM json_array_elements_text(CAST($2 AS json))))"
        );
        assert_eq!(
            translate("SELECT a FROM json_each(?3) WHERE b IN (SELECT value FROM json_each(?12)) OR c IN (SELECT value FROM json_each(?1) WHERE d) OR e NOT IN (SELECT value FROM json_each(?2))"),
            "SELECT a FROM json_array_elements_text(CAST($3 AS json)) WHERE b = ANY(ARRAY(SELECT value FROM json_array_elements_text(CAST($12 AS json)))) OR c IN (SELECT value FROM json_array_elements_text(CAST($1 AS json)) WHERE d) OR e NOT IN (SELECT value FROM json_array_elements_text(CAST($2 AS json)))"
        );
        assert_eq!(translate("SELECT '?' || ?1"), "SELECT '?' || $1");
        assert_eq!(translate("SELECT idmax(a, b), max(x)"), "SELECT idmax(a, b), max(x)");
    }
}

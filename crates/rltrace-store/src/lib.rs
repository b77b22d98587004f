//! The storage of rltrace: an embedded SQLite file in WAL mode, one writer thread fed by a bounded
//! queue, a small pool of reader connections.
//!
//! Invariants: this is the only crate that knows SQL. Nothing is acknowledged before its
//! transaction committed; the queue in front of the writer is bounded in operations and in bytes
//! and answers [`StoreError::Overloaded`] when full instead of growing. The reward ledger is
//! append-only: rows of `reward_events` are never changed except to record which sequence a
//! pending triplet reward joined.

pub mod bench;
mod agl;
mod db;
mod export;
mod forward;
mod gc;
mod ingest;
mod ledger;
mod migrate;
mod pg;
mod pg_ingest;
mod pg_tls;
mod prepare;
mod read;
mod recent;
mod rewarded;
mod rows;
mod schema;
mod sequences;
mod spans;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use rltrace_core::reward::{RewardEvent, RewardTarget};
#[cfg(test)]
use rltrace_core::Policy;
use rusqlite::Connection;

pub use gc::GcCounts;
pub use agl::{Deliveries, LinkedScan, LinkedSequence, Outcome, OutboxCounts, OutboxOp, OutboxRow};
pub use forward::{CursorOp, ForwardBatch, ForwardCursor, ForwardSpan};
pub use prepare::{PreparedSpan, prepare_spans};
pub use export::{AsOf, ExportCounts, SEQUENCES_PER_READ};
pub use recent::RecentSample;
pub use read::{Counts, Page, ReadTx, SequenceDetail, SequenceFilter, SequenceSummary, Stats, TripletDetail, TripletFilter};
pub use schema::{Migration, SCHEMA_VERSION};
pub use spans::SpanOut;
pub use pg::PgConfig;

use writer::{Op, Reply, Writer};

/// Default bound of the queue in front of the writer, in operations (batches or rewards).
pub const DEFAULT_QUEUE_OPS: usize = 64;
/// Default bound of the queue in front of the writer, in bytes of prepared rows.
pub const DEFAULT_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Reader connections kept open for reuse.
const IDLE_READERS: usize = 8;
/// Default bound of the triplet ids that pending rewards may wait for at once.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// Sequences settled (given the fallback) in one transaction at most.
pub const SETTLE_BATCH: usize = 500;

/// The newest span row and ledger event an export reads: the rows at or below them are a
/// consistent snapshot however much arrives later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermarks {
    /// Newest span row.
    pub span: i64,
    /// Newest ledger event.
    pub event: i64,
}

impl Watermarks {
    /// Everything.
    pub const ALL: Watermarks = Watermarks { span: i64::MAX, event: i64::MAX };
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The writer's queue is full; retry later.
    #[error("store queue is full")]
    Overloaded,
    /// The writer is gone (shut down, or stopped by a failure).
    #[error("store writer is not running")]
    Closed,
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// The database's schema version cannot be used by this binary.
    #[error("{0}")]
    Version(String),
    /// A transaction failed; nothing of it was stored.
    #[error("store transaction failed: {0}")]
    Failed(String),
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The database cannot be reached (PostgreSQL stopped, the network down).
    #[error("{0}")]
    Unreachable(String),
    /// The store's configuration cannot be used (its URL, the files it names).
    #[error("{0}")]
    Config(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Path of the SQLite file.
    pub path: PathBuf,
    /// Bound of the writer queue in operations.
    pub queue_ops: usize,
    /// Bound of the writer queue in bytes.
    pub queue_bytes: usize,
    /// `PRAGMA synchronous = FULL` (the default: acknowledged means synced to disk) instead of
    /// `NORMAL` (durable against a crash of the process, not against power loss).
    pub synchronous_full: bool,
    /// Triplet ids that pending rewards may wait for at once.
    pub max_pending: usize,
    /// Largest size of the database file in bytes (writes beyond fail as on a full disk).
    pub max_db_bytes: Option<u64>,
    /// PostgreSQL instead of the SQLite file at `path`.
    pub postgres: Option<PgConfig>,
}

impl StoreConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            queue_ops: DEFAULT_QUEUE_OPS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            synchronous_full: true,
            max_pending: DEFAULT_MAX_PENDING,
            max_db_bytes: None,
            postgres: None,
        }
    }

    /// Defaults for a PostgreSQL database.
    pub fn postgres(pg: PgConfig) -> StoreConfig {
        StoreConfig { postgres: Some(pg), ..StoreConfig::new("") }
    }
}

/// What happened to the spans of one batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestOutcome {
    /// Spans newly stored.
    pub stored: usize,
    /// Spans already stored (an exporter retry); not an error.
    pub duplicates: usize,
    /// Spans refused by the store, with a message each.
    pub rejected: Vec<String>,
}

/// A reward to append to the ledger.
#[derive(Debug, Clone)]
pub struct NewReward {
    /// What it rewards.
    pub target: RewardTarget,
    /// Value in [0, 1] (already validated), or `None` for a decision with no reward.
    pub value: Option<f64>,
    /// Source name (already validated).
    pub source: String,
    /// Reason.
    pub reason: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Metadata as JSON object text.
    pub metadata: Option<String>,
    /// Accept an unknown target and join the reward when it arrives.
    pub allow_pending: bool,
    /// Hash of the request body, to tell a replay from a conflicting reuse of a key.
    pub body_hash: String,
    /// How the value is found at read time (fixed, HITL decision, defect severity).
    pub valuation: rltrace_core::reward::Valuation,
}

/// Result of appending a reward.
#[derive(Debug, Clone)]
pub enum RewardAppend {
    /// Appended now.
    Created(RewardEvent),
    /// The same idempotency key and body were appended before: the stored event.
    Existing(RewardEvent),
    /// The idempotency key was used with another body: the stored event.
    Conflict(RewardEvent),
    /// The target is unknown and pending was not allowed.
    NotFound(String),
    /// The target is unknown and as many triplet ids as the bound allows already wait for
    /// pending rewards.
    PendingLimit(usize),
}

pub(crate) struct Inner {
    path: PathBuf,
    queue_ops: usize,
    queue_bytes: usize,
    queued_bytes: AtomicUsize,
    queue_depth: AtomicUsize,
    readers: Mutex<Vec<Connection>>,
    /// PostgreSQL's reader pool (`None` for SQLite).
    pg: Option<r2d2::Pool<pg::Manager>>,
    closed: AtomicBool,
    read_only: bool,
    pub(crate) max_pending: usize,
    pub(crate) writer_alive: AtomicBool,
    /// Why the store is failing (the last transaction failed for a reason of the store's own),
    /// `None` while it works.
    failure: Mutex<Option<String>>,
}

impl Inner {
    pub(crate) fn set_failure(&self, why: String) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(why);
        }
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    pub(crate) fn clear_failure(&self) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_some()
        {
            tracing::info!("the store works again");
            *f = None;
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    tx: Option<SyncSender<Op>>,
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open (creating if needed) the store and start its writer thread.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        if let Some(pg) = &config.postgres {
            return Store::open_postgres(&config, pg);
        }
        if let Some(dir) = config.path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            return Err(StoreError::Failed(format!("directory {} does not exist", dir.display())));
        }
        let conn = Connection::open(&config.path)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let max_pages = config.max_db_bytes.map(|b| (b / page_size.max(512) as u64).max(1));
        schema::configure_writer(&conn, config.synchronous_full, max_pages)?;
        let inner = Arc::new(Inner::new(&config.path, config.queue_ops, config.queue_bytes, config.max_pending, false));
        Store::start(inner, writer::WriteConn::Sqlite(conn))
    }

    /// Open (creating or migrating the schema if need be) a PostgreSQL database.
    fn open_postgres(config: &StoreConfig, pg: &PgConfig) -> Result<Store, StoreError> {
        let client = pg.client_config(false)?;
        let conn = pg::PgConn::connect(&client).map_err(|e| StoreError::Unreachable(format!("cannot connect to {}: {e}", pg.display_url())))?;
        pg::prepare_schema(&conn)?;
        let mut inner = Inner::new(Path::new(""), config.queue_ops, config.queue_bytes, config.max_pending, false);
        inner.pg = Some(pg::reader_pool(pg, false)?);
        Store::start(Arc::new(inner), writer::WriteConn::Postgres(pg::PgWriter::new(client, conn)))
    }

    /// Open a PostgreSQL database for reading only (exports, explanations) beside live
    /// collectors: every session read-only, no schema change.
    pub fn open_read_only_postgres(pg: &PgConfig) -> Result<Store, StoreError> {
        let conn = pg::PgConn::connect(&pg.client_config(true)?).map_err(|e| StoreError::Unreachable(format!("cannot connect to {}: {e}", pg.display_url())))?;
        pg::check_readable(&conn)?;
        let mut inner = Inner::new(Path::new(""), 1, 1, 0, true);
        inner.pg = Some(pg::reader_pool(pg, true)?);
        Ok(Store { inner: Arc::new(inner), tx: None })
    }

    fn start(inner: Arc<Inner>, conn: writer::WriteConn) -> Result<Store, StoreError> {
        let writer = Writer::new(conn, Arc::clone(&inner))?;
        let (tx, rx) = sync_channel(inner.queue_ops);
        inner.writer_alive.store(true, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("rltrace-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Failed(format!("cannot start writer thread: {e}")))?;
        Ok(Store { inner, tx: Some(tx) })
    }

    /// Open an existing store for reading only (exports, explanations), beside a live collector
    /// if need be: no writer, no schema change, every connection read-only.
    pub fn open_read_only(path: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let path = path.into();
        if !path.exists() {
            return Err(StoreError::Failed(format!("database {} does not exist", path.display())));
        }
        let conn = open_reader(&path)?;
        schema::check_readable(&conn)?;
        let inner = Arc::new(Inner::new(&path, 1, 1, 0, true));
        if let Ok(mut idle) = inner.readers.lock() {
            idle.push(conn);
        }
        Ok(Store { inner, tx: None })
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Whether the store can take writes now: its writer runs and its last transaction did not
    /// fail for a reason of the store's own (disk full, I/O error, database gone). `Err` says why.
    pub fn health(&self) -> Result<(), String> {
        if self.inner.read_only {
            return Err("the store is open read-only".into());
        }
        if !self.inner.writer_alive.load(Ordering::SeqCst) {
            return Err("the store writer is not running".into());
        }
        match self.inner.failure.lock() {
            Ok(f) => match &*f {
                Some(why) => Err(why.clone()),
                None => Ok(()),
            },
            Err(_) => Err("store state poisoned".into()),
        }
    }

    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.inner.pg.is_some()
    }

    /// Path of the database file (empty for PostgreSQL).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Operations waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.inner.queue_depth.load(Ordering::Relaxed)
    }

    /// Bytes of prepared rows waiting for the writer.
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued_bytes.load(Ordering::Relaxed)
    }

    fn enqueue(&self, op: Op, bytes: usize) -> Result<(), StoreError> {
        self.try_enqueue(op, bytes).map_err(|(e, _)| e)
    }

    /// Queue an operation; when it cannot be queued, the error and the operation back.
    #[allow(clippy::result_large_err, reason = "the operation goes back whole to the caller, who answers it")]
    fn try_enqueue(&self, op: Op, bytes: usize) -> Result<(), (StoreError, Op)> {
        let Some(tx) = &self.tx else { return Err((StoreError::ReadOnly, op)) };
        if self.inner.closed.load(Ordering::Relaxed) || !self.inner.writer_alive.load(Ordering::SeqCst) {
            return Err((StoreError::Closed, op));
        }
        let before = self.inner.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before > 0 && before + bytes > self.inner.queue_bytes {
            self.inner.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err((StoreError::Overloaded, op));
        }
        self.inner.queue_depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(op) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.inner.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(op) => (StoreError::Overloaded, op),
                    TrySendError::Disconnected(op) => (StoreError::Closed, op),
                })
            }
        }
    }

    /// Queue spans for storage. `reply` is called once, after the transaction holding them
    /// committed (or failed). Returns [`StoreError::Overloaded`] at once when the queue is full.
    pub fn submit_spans(
        &self,
        spans: Vec<PreparedSpan>,
        reply: impl FnOnce(Result<IngestOutcome, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let bytes: usize = spans.iter().map(PreparedSpan::approx_bytes).sum();
        let reply: Reply<IngestOutcome> = Box::new(reply);
        self.enqueue(Op::Spans { spans, bytes, reply }, bytes)
    }

    /// [`Store::submit_spans`] that waits up to `wait` for room in a full queue instead of
    /// answering [`StoreError::Overloaded`] at once: for the later parts of a request already
    /// admitted, whose first part found room. Blocking (call it off the async runtime).
    pub fn submit_spans_within(
        &self,
        spans: Vec<PreparedSpan>,
        reply: impl FnOnce(Result<IngestOutcome, StoreError>) + Send + 'static,
        wait: std::time::Duration,
    ) -> Result<(), StoreError> {
        let bytes: usize = spans.iter().map(PreparedSpan::approx_bytes).sum();
        let reply: Reply<IngestOutcome> = Box::new(reply);
        self.enqueue_waiting(Op::Spans { spans, bytes, reply }, bytes, Some(std::time::Instant::now() + wait))
    }

    /// Queue an operation, waiting while the queue is full (until `deadline`, then
    /// [`StoreError::Overloaded`]; without one, for as long as it takes). A full queue hands the
    /// operation back, and the same one is queued again.
    fn enqueue_waiting(&self, mut op: Op, bytes: usize, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        loop {
            match self.try_enqueue(op, bytes) {
                Ok(()) => return Ok(()),
                Err((StoreError::Overloaded, back)) if deadline.is_none_or(|d| std::time::Instant::now() < d) => {
                    op = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Queue a reward for the ledger; `reply` is called after commit.
    pub fn submit_reward(
        &self,
        req: NewReward,
        reply: impl FnOnce(Result<RewardAppend, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let reply: Reply<RewardAppend> = Box::new(reply);
        // Rewards are small and count against the operation bound only: the byte bound is given
        // back for span batches alone.
        self.enqueue(Op::Reward { req: Box::new(req), reply }, 0)
    }

    /// Call `reply` once everything queued before it is committed.
    pub fn submit_barrier(&self, reply: impl FnOnce(Result<(), StoreError>) + Send + 'static) -> Result<(), StoreError> {
        let reply: Reply<()> = Box::new(reply);
        self.enqueue(Op::Barrier { reply }, 0)
    }

    /// Append the policy's fallback reward (source `fallback`) to at most [`SETTLE_BATCH`]
    /// sequences that are due under `policy` (no terminal-type reward `reward_wait` after their
    /// last triplet); `reply` gets how many were settled (fewer than the batch: none is left).
    /// A policy without a fallback settles nothing.
    pub fn submit_settle(&self, policy: &rltrace_core::Policy, reply: impl FnOnce(Result<usize, StoreError>) + Send + 'static) -> Result<(), StoreError> {
        let now = now_micros();
        let Some((value, due_before)) = rltrace_core::sequence::fallback_due_before(policy, now) else {
            reply(Ok(0));
            return Ok(());
        };
        let reply: Reply<usize> = Box::new(reply);
        self.enqueue(Op::Settle { value, due_before, now, batch: SETTLE_BATCH, reply }, 0)
    }

    /// One retention pass (one transaction: at most `cut.batch` plain spans, and sequences holding
    /// at most `cut.batch` triplets); `reply` gets what it deleted, whether more may be due, and
    /// the cursor to give the next pass of the same run (`after`; `None` starts a run).
    /// `keep_unsettled` keeps sequences the policy's fallback has not settled yet.
    pub fn submit_gc(
        &self,
        cut: rltrace_core::retention::Cutoffs,
        keep_unsettled: bool,
        after: Option<(i64, i64)>,
        reply: impl FnOnce(Result<GcCounts, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let reply: Reply<GcCounts> = Box::new(reply);
        self.enqueue(Op::Gc { cut, keep_unsettled, after, reply }, 0)
    }

    /// Change forwarding target `target`'s cursor for collector `owner` (lease `lease_us`);
    /// `reply` gets, after commit, the cursor when the lease is `owner`'s, `None` when another
    /// collector holds it (or, for [`CursorOp::Advance`], the cursor was moved by another).
    pub fn submit_cursor(
        &self,
        target: &str,
        owner: &str,
        lease_us: i64,
        op: CursorOp,
        reply: impl FnOnce(Result<Option<i64>, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let reply: Reply<Option<i64>> = Box::new(reply);
        self.enqueue(Op::Cursor { target: target.to_string(), owner: owner.to_string(), lease_us, op, reply }, 0)
    }

    /// Change the Agent Lightning bridge's outbox; `reply` gets, after commit, the row's id (`None`:
    /// a delivery for the sequence existed, or the row was no longer pending).
    pub fn submit_outbox(&self, op: OutboxOp, reply: impl FnOnce(Result<Option<i64>, StoreError>) + Send + 'static) -> Result<(), StoreError> {
        let reply: Reply<Option<i64>> = Box::new(reply);
        self.enqueue(Op::Outbox { op, reply }, 0)
    }

    /// [`Store::submit_outbox`], waiting for the commit (waits while the queue is full).
    pub fn outbox_blocking(&self, op: OutboxOp) -> Result<Option<i64>, StoreError> {
        self.waiting_for_id(|reply| Op::Outbox { op, reply })
    }

    /// [`Store::submit_cursor`], waiting for the commit (waits while the queue is full).
    pub fn cursor_blocking(&self, target: &str, owner: &str, lease_us: i64, op: CursorOp) -> Result<Option<i64>, StoreError> {
        self.waiting_for_id(|reply| Op::Cursor { target: target.to_string(), owner: owner.to_string(), lease_us, op, reply })
    }

    /// Queue the operation `make` builds around its reply (waiting while the queue is full) and
    /// wait for its commit.
    fn waiting_for_id(&self, make: impl FnOnce(Reply<Option<i64>>) -> Op) -> Result<Option<i64>, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let reply: Reply<Option<i64>> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.enqueue_waiting(make(reply), 0, None)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Apply `retention` now: one run of passes until nothing due is left, waiting for each
    /// commit; `on_pass` sees each pass's counts. `keep_unsettled`: keep sequences not yet
    /// settled (the collector's policy has a fallback reward). What was deleted.
    pub fn gc_blocking(
        &self,
        retention: &rltrace_core::retention::Retention,
        keep_unsettled: bool,
        mut on_pass: impl FnMut(&GcCounts),
    ) -> Result<GcCounts, StoreError> {
        let cut = retention.cutoffs(now_micros());
        let keep = keep_unsettled;
        let mut total = GcCounts::default();
        loop {
            let (tx, rx) = std::sync::mpsc::channel();
            self.submit_gc(cut, keep, total.cursor, move |r| {
                let _ = tx.send(r);
            })?;
            let n = rx.recv().map_err(|_| StoreError::Closed)??;
            on_pass(&n);
            total.add(&n);
            if !n.more {
                return Ok(total);
            }
            // Room between passes for another writer of the same file (a live collector).
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Settle every due sequence, one batch per transaction, waiting for each commit; returns how
    /// many were settled.
    pub fn settle_blocking(&self, policy: &rltrace_core::Policy) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let (tx, rx) = std::sync::mpsc::channel();
            self.submit_settle(policy, move |r| {
                let _ = tx.send(r);
            })?;
            let n = rx.recv().map_err(|_| StoreError::Closed)??;
            total += n;
            if n < SETTLE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Store spans and wait for the commit (for the CLI and tests; servers use [`Store::submit_spans`]).
    /// Waits while the queue is full.
    pub fn ingest_blocking(&self, spans: Vec<PreparedSpan>) -> Result<IngestOutcome, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let bytes: usize = spans.iter().map(PreparedSpan::approx_bytes).sum();
        let reply: Reply<IngestOutcome> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.enqueue_waiting(Op::Spans { spans, bytes, reply }, bytes, None)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Append a reward and wait for the commit.
    pub fn append_reward_blocking(&self, req: NewReward) -> Result<RewardAppend, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit_reward(req, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Stop accepting work; the writer ends after finishing what was queued.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }

    /// Run `f` on a reader connection inside one read transaction (a consistent snapshot).
    /// Blocking: call from a blocking thread.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(pool) = &self.inner.pg {
            let conn = pool.get().map_err(|e| StoreError::Unreachable(format!("no PostgreSQL connection: {e}")))?;
            let sql: &dyn db::Sql = &*conn;
            sql.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let out = f(&ReadTx::new(sql, now_micros()));
            let end = sql.batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
            return match (out, end) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            };
        }
        let conn = {
            let mut idle = self.inner.readers.lock().map_err(|_| StoreError::Failed("reader pool poisoned".into()))?;
            idle.pop()
        };
        let mut conn = match conn {
            Some(c) => c,
            None => open_reader(&self.inner.path)?,
        };
        let result = {
            let tx = conn.transaction()?;
            let out = f(&ReadTx::new(&*tx, now_micros()));
            drop(tx);
            out
        };
        if let Ok(mut idle) = self.inner.readers.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
        result
    }

    /// Store `spans` in a transaction that then fails, and wait for the answer (tests).
    #[cfg(test)]
    pub(crate) fn ingest_then_fail(&self, spans: Vec<PreparedSpan>) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.enqueue(
            Op::Fail {
                spans,
                reply: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            },
            0,
        )?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Store several batches in one group (the writer waits until all are queued); each
    /// batch's answer, in order (tests).
    #[cfg(test)]
    pub(crate) fn ingest_in_one_group(&self, batches: Vec<Vec<PreparedSpan>>) -> Vec<Result<IngestOutcome, StoreError>> {
        let (hold, until) = std::sync::mpsc::channel();
        if let Err(e) = self.enqueue(Op::Hold { until }, 0) {
            return vec![Err(e)];
        }
        let mut answers = Vec::new();
        for spans in batches {
            let (tx, rx) = std::sync::mpsc::channel();
            let bytes: usize = spans.iter().map(PreparedSpan::approx_bytes).sum();
            let reply: Reply<IngestOutcome> = Box::new(move |r| {
                let _ = tx.send(r);
            });
            match self.enqueue(Op::Spans { spans, bytes, reply }, bytes) {
                Ok(()) => answers.push(rx),
                Err(e) => {
                    let _ = hold.send(());
                    return vec![Err(e)];
                }
            }
        }
        let _ = hold.send(());
        answers.into_iter().map(|rx| rx.recv().map_err(|_| StoreError::Closed).and_then(|r| r)).collect()
    }

    /// End the writer thread as a crash would (tests).
    #[cfg(test)]
    pub(crate) fn crash_writer(&self) -> Result<(), StoreError> {
        self.enqueue(Op::Crash, 0)
    }

    /// Copy what the WAL holds into the database file as far as no reader needs it (a passive
    /// checkpoint: it waits for nobody), so the WAL can start over. Long readers call it between
    /// their read transactions.
    pub(crate) fn checkpoint(&self) {
        if self.inner.pg.is_some() {
            return;
        }
        let conn = self.inner.readers.lock().ok().and_then(|mut idle| idle.pop());
        let Some(conn) = conn.or_else(|| open_reader(&self.inner.path).ok()) else { return };
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "passive checkpoint failed");
        }
        if let Ok(mut idle) = self.inner.readers.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
    }

    /// Check that the database file answers a query on a new connection (read-only, never
    /// creating the file), so a file that disappeared or became unreadable is noticed.
    pub fn ping(&self) -> Result<(), StoreError> {
        if let Some(pool) = &self.inner.pg {
            let conn = pool
                .get_timeout(std::time::Duration::from_secs(2))
                .map_err(|e| StoreError::Unreachable(format!("no PostgreSQL connection: {e}")))?;
            let sql: &dyn db::Sql = &*conn;
            return sql.batch("SELECT spans FROM counters WHERE id = 1");
        }
        let conn = Connection::open_with_flags(&self.inner.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.query_row("SELECT spans FROM counters WHERE id = 1", [], |_| Ok(()))?;
        Ok(())
    }
}

impl Inner {
    fn new(path: &Path, queue_ops: usize, queue_bytes: usize, max_pending: usize, read_only: bool) -> Inner {
        Inner {
            path: path.to_path_buf(),
            queue_ops: queue_ops.max(1),
            queue_bytes: queue_bytes.max(1),
            queued_bytes: AtomicUsize::new(0),
            queue_depth: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            pg: None,
            closed: AtomicBool::new(false),
            read_only,
            max_pending,
            writer_alive: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }
}

/// A reader connection: it never creates the file and never changes a row (`query_only`); it may
/// checkpoint the WAL, which changes no content.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    schema::configure_reader(&c)?;
    Ok(c)
}

#[cfg(test)]
extern crate self as rltrace_store;

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use super::common::*;
    use super::*;

    /// A task id learnt in a transaction that rolled back is forgotten: a defect by that task id
    /// after the span is stored again finds it (it answered 404 when the writer kept the id).
    #[test]
    fn task_ids_learnt_in_a_rolled_back_group_are_forgotten() {
        let (_dir, store) = temp_store();
        let span = || prepare(vec![triplet_span(1, 1, "seq-x", &[("rl.state.task_id", s("task-9")), ("rl.state.agent_role", s("Code"))])]);
        assert!(store.ingest_then_fail(span()).is_err());
        // Nothing of the failed group is stored.
        assert_eq!(store.read(|tx| tx.counts()).expect("counts").spans, 0);
        let out = store.ingest_blocking(span()).expect("stored");
        assert_eq!(out.stored, 1);
        let r = store.append_reward_blocking(defect("task-9", "Code")).expect("append");
        assert!(matches!(r, RewardAppend::Created(_)), "{r:?}");
        let t = store.read(|tx| tx.triplets(&TripletFilter::default(), None, 10, &Policy::default())).expect("read");
        assert_eq!(t.items[0].effective.reward, Some(0.5));
    }

    conformance! {
        /// Batches queued together are stored in one group as they would be one by one: each
        /// gets its own answer; a span is a duplicate of a copy in an earlier batch of the group;
        /// an explicit triplet id taken earlier in the group is refused; a sequence made for
        /// refused spans alone is not kept; role and task links of sequences made in the group
        /// are stored once, and links added later to them as well.
        fn batches_of_one_group_are_answered_as_one_by_one(b) {
            let (_d, store) = temp_store_on(b);
            let code = || ("rl.state.agent_role", s("Code"));
            let task = || ("rl.state.task_id", s("task-1"));
            let mut nul = triplet_span(4, 9, "s", &[]);
            nul.name = "bad\0name".into();
            let answers = store.ingest_in_one_group(vec![
                prepare(vec![
                    triplet_span(1, 1, "s", &[("rl.triplet_id", s("tid-1")), code(), task()]),
                    triplet_span(1, 2, "s", &[code(), task()]),
                ]),
                prepare(vec![
                    triplet_span(1, 2, "s", &[code()]),
                    triplet_span(1, 3, "s", &[code(), task()]),
                    triplet_span(2, 4, "lonely", &[("rl.triplet_id", s("tid-1"))]),
                    nul,
                ]),
                prepare(vec![triplet_span(1, 3, "s", &[]), triplet_span(3, 5, "t", &[code()])]),
            ]);
            let got: Vec<(usize, usize, usize)> =
                answers.iter().map(|a| a.as_ref().map(|o| (o.stored, o.duplicates, o.rejected.len())).expect("answered")).collect();
            assert_eq!(got, vec![(2, 0, 0), (1, 1, 2), (1, 1, 0)]);
            let rejected = &answers[1].as_ref().expect("answered").rejected;
            assert!(rejected.iter().any(|m| m.contains("is already used by another span")), "{rejected:?}");
            assert!(rejected.iter().any(|m| m.contains("name contains a NUL character")), "{rejected:?}");
            let c = store.read(|tx| tx.counts()).expect("counts");
            assert_eq!((c.spans, c.triplets, c.sequences), (4, 4, 2));
            let by_role = |role: &str| {
                let f = SequenceFilter { role: Some(role.into()), ..SequenceFilter::default() };
                let page = store.read(|tx| tx.sequences(&f, None, 10, &policy())).expect("list");
                let mut ids: Vec<String> = page.items.into_iter().map(|s| s.sequence_id).collect();
                ids.sort();
                ids
            };
            assert_eq!(by_role("Code"), vec!["s".to_string(), "t".to_string()]);
            // A later group adds a role to a sequence made before, and repeats an old link.
            let out = store
                .ingest_blocking(prepare(vec![
                    triplet_span(1, 6, "s", &[("rl.state.agent_role", s("Test")), task()]),
                    triplet_span(1, 7, "s", &[code()]),
                ]))
                .expect("later");
            assert_eq!(out.stored, 2);
            assert_eq!(by_role("Test"), vec!["s".to_string()]);
            assert_eq!(by_role("Code"), vec!["s".to_string(), "t".to_string()]);
            // The task link was stored once: a defect by the task reaches the sequence's
            // triplets of that role that carry the task (not the last, which does not).
            assert!(matches!(store.append_reward_blocking(defect("task-1", "Code")), Ok(RewardAppend::Created(_))));
            let t = store.read(|tx| tx.triplets(&TripletFilter::default(), None, 100, &policy())).expect("read");
            let rewarded = t.items.iter().filter(|t| t.sequence_id == "s" && t.effective.reward == Some(0.5)).count();
            assert_eq!(rewarded, 3, "{:?}", t.items.iter().map(|t| (&t.sequence_id, &t.role, t.effective.reward)).collect::<Vec<_>>());
        }
    }

    /// A writer that is gone is a failure, not overload: submissions answer `Closed` and the
    /// health check says why.
    #[test]
    fn a_dead_writer_is_not_overload() {
        let (_dir, store) = temp_store();
        assert!(store.health().is_ok());
        store.crash_writer().expect("queued");
        for _ in 0..200 {
            if store.health().is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(store.health().expect_err("dead").contains("not running"));
        let err = store.ingest_blocking(prepare(vec![triplet_span(1, 1, "s", &[])])).expect_err("refused");
        assert!(matches!(err, StoreError::Closed), "{err:?}");
        // Reads still work.
        assert_eq!(store.read(|tx| tx.counts()).expect("counts").spans, 0);
    }
}

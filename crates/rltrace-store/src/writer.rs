//! The single writer: one thread owns the write connection, takes operations from a bounded queue,
//! groups them into one transaction, commits, and only then answers each caller. A group is all
//! or nothing: when one operation fails the whole transaction rolls back, every caller is told,
//! and the writer's caches are reloaded from what is committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use crate::db::{Sql, SqlExt, params};
use crate::ingest::{Caches, SeqAgg, ingest_batches};
#[cfg(test)]
use crate::ingest::ingest;
use crate::prepare::PreparedSpan;
use crate::{Inner, IngestOutcome, NewReward, RewardAppend, StoreError};

/// A callback that receives the result of an operation after its transaction committed.
pub(crate) type Reply<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

pub(crate) enum Op {
    Spans { spans: Vec<PreparedSpan>, bytes: usize, reply: Reply<IngestOutcome> },
    Reward { req: Box<NewReward>, reply: Reply<RewardAppend> },
    Barrier { reply: Reply<()> },
    Settle { value: f64, due_before: i64, now: i64, batch: usize, reply: Reply<usize> },
    /// One retention pass ([`crate::gc`]).
    Gc { cut: rltrace_core::retention::Cutoffs, keep_unsettled: bool, after: Option<(i64, i64)>, reply: Reply<crate::gc::GcCounts> },
    /// A change to a forwarding target's cursor ([`crate::forward`]).
    Cursor { target: String, owner: String, lease_us: i64, op: crate::forward::CursorOp, reply: Reply<Option<i64>> },
    /// A change to the Agent Lightning bridge's outbox ([`crate::agl`]).
    Outbox { op: crate::agl::OutboxOp, reply: Reply<Option<i64>> },
    /// Stores its spans, then fails inside the same transaction (tests of the all-or-nothing
    /// group).
    #[cfg(test)]
    Fail { spans: Vec<PreparedSpan>, reply: Reply<()> },
    /// Ends the writer thread as a crash would (tests of a dead writer).
    #[cfg(test)]
    Crash,
    /// Keeps the writer waiting, outside any group, until told (tests that need the operations
    /// queued meanwhile in one group).
    #[cfg(test)]
    Hold { until: Receiver<()> },
}

/// Most spans grouped into one transaction.
const GROUP_MAX_SPANS: usize = 16_384;
/// Most operations grouped into one transaction.
const GROUP_MAX_OPS: usize = 256;

/// What one transaction changes besides rows: counts for the `counters` row, per-sequence
/// aggregates, the sequences whose rewarded count may have changed, pending ids added.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) counts: Counts,
    pub(crate) aggs: HashMap<i64, SeqAgg>,
    pub(crate) dirty: HashSet<i64>,
    pub(crate) pending_added: Vec<String>,
    /// Sequences this transaction created: nothing links to them yet.
    pub(crate) new_sequences: HashSet<i64>,
}

/// Row counts added by a transaction, added to the `counters` row in the same transaction.
#[derive(Default, Debug)]
pub(crate) struct Counts {
    pub(crate) spans: u64,
    pub(crate) triplets: u64,
    pub(crate) sequences: u64,
    pub(crate) reward_events: u64,
    pub(crate) task_events: u64,
}

enum Done {
    Spans(Reply<IngestOutcome>, Result<IngestOutcome, StoreError>),
    Reward(Reply<RewardAppend>, Result<RewardAppend, StoreError>),
    Barrier(Reply<()>),
    Settle(Reply<usize>, Result<usize, StoreError>),
    Gc(Reply<crate::gc::GcCounts>, Result<crate::gc::GcCounts, StoreError>),
    Cursor(Reply<Option<i64>>, Result<Option<i64>, StoreError>),
}

impl Done {
    fn answer(self, failure: Option<&str>) {
        let fail = |m: &str| StoreError::Failed(m.to_string());
        match (self, failure) {
            (Done::Spans(reply, r), None) => reply(r),
            (Done::Reward(reply, r), None) => reply(r),
            (Done::Barrier(reply), None) => reply(Ok(())),
            (Done::Settle(reply, r), None) => reply(r),
            (Done::Spans(reply, _), Some(m)) => reply(Err(fail(m))),
            (Done::Reward(reply, _), Some(m)) => reply(Err(fail(m))),
            (Done::Barrier(reply), Some(m)) => reply(Err(fail(m))),
            (Done::Settle(reply, _), Some(m)) => reply(Err(fail(m))),
            (Done::Gc(reply, r), None) => reply(r),
            (Done::Gc(reply, _), Some(m)) => reply(Err(fail(m))),
            (Done::Cursor(reply, r), None) => reply(r),
            (Done::Cursor(reply, _), Some(m)) => reply(Err(fail(m))),
        }
    }
}

/// The writer's connection: SQLite's file, or a PostgreSQL session that reconnects by itself.
#[allow(clippy::large_enum_variant, reason = "one per writer thread, never moved about")]
pub(crate) enum WriteConn {
    Sqlite(rusqlite::Connection),
    Postgres(crate::pg::PgWriter),
}

impl WriteConn {
    fn sql(&self) -> Result<&dyn Sql, StoreError> {
        match self {
            WriteConn::Sqlite(c) => Ok(c),
            WriteConn::Postgres(p) => p.conn(),
        }
    }

    /// Open the group's transaction; says what of the caches must be reloaded first (the
    /// connection is new, or another process appended to the ledger since this one's last group).
    fn begin(&mut self, c: &Caches) -> Result<Reload, StoreError> {
        match self {
            WriteConn::Sqlite(conn) => {
                // IMMEDIATE: another process writing the file (`rltrace gc` beside the collector)
                // waits for the lock instead of failing the group on a stale snapshot.
                conn.execute_batch("BEGIN IMMEDIATE")?;
                // Retention run by another process deleted sequences: cached rows may be gone.
                let generation = crate::ingest::gc_generation(&*conn);
                match generation {
                    Ok(g) if g == c.gc_generation => Ok(Reload::Nothing),
                    Ok(_) => Ok(Reload::All),
                    Err(e) => Err(e),
                }
            }
            WriteConn::Postgres(p) => p.begin(c.last_event, c.gc_generation),
        }
    }

    /// Add to the `counters` row (spans, triplets, sequences, reward events, task events,
    /// rewarded triplets) and commit (PostgreSQL: in one round trip).
    fn commit(&mut self, add: Option<[i64; 6]>) -> Result<(), StoreError> {
        const COUNTERS: &str = "UPDATE counters SET spans = spans + ?1, triplets = triplets + ?2, sequences = sequences + ?3,
               reward_events = reward_events + ?4, task_events = task_events + ?5, rewarded_triplets = rewarded_triplets + ?6
             WHERE id = 1";
        let sql = self.sql()?;
        match (add, sql.dialect()) {
            (None, _) => sql.batch("COMMIT"),
            (Some(a), crate::db::Dialect::Postgres) => {
                // Integers only, so they are written into the statement.
                let mut update = crate::pg::translate(COUNTERS);
                for (i, n) in a.iter().enumerate().rev() {
                    update = update.replace(&format!("${}", i + 1), &format!("({n})"));
                }
                sql.batch(&format!("{update}; COMMIT"))
            }
            (Some(a), crate::db::Dialect::Sqlite) => {
                sql.prepare_cached(COUNTERS)?.execute(params![a[0], a[1], a[2], a[3], a[4], a[5]])?;
                sql.batch("COMMIT")
            }
        }
    }

    fn rollback(&mut self) {
        if let Ok(sql) = self.sql() {
            let _ = sql.batch("ROLLBACK");
        }
    }

    /// Whether this process may settle fallbacks now (PostgreSQL: it holds the settle lock).
    fn may_settle(&mut self) -> Result<bool, StoreError> {
        match self {
            WriteConn::Sqlite(_) => Ok(true),
            WriteConn::Postgres(p) => p.may_settle(),
        }
    }
}

/// What of the writer's caches a new group reloads before it starts.
pub(crate) enum Reload {
    Nothing,
    /// Pending ids, the newest event, the task events: another process appended to the ledger.
    Ledger,
    /// Everything: a new connection.
    All,
}

pub(crate) struct Writer {
    conn: WriteConn,
    inner: Arc<Inner>,
    caches: Caches,
    reclaim: Option<std::sync::mpsc::SyncSender<Vec<Vec<PreparedSpan>>>>,
}

/// Groups of consumed batches waiting for the reclaimer thread (one: it holds at most about the
/// writer queue's byte bound more).
const RECLAIM_QUEUE: usize = 1;

/// Marks the store's writer as gone when the writer thread ends for any reason, a panic included.
struct AliveGuard(Arc<Inner>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.writer_alive.store(false, Ordering::SeqCst);
        if !self.0.closed.load(Ordering::SeqCst) {
            self.0.set_failure("the store writer stopped unexpectedly".into());
            tracing::error!("the store writer stopped unexpectedly; writes are refused until restart");
        }
    }
}

impl Writer {
    pub(crate) fn new(conn: WriteConn, inner: Arc<Inner>) -> Result<Writer, StoreError> {
        let mut caches = Caches::default();
        caches.reload(conn.sql()?)?;
        let mut w = Writer { conn, inner, caches, reclaim: None };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<PreparedSpan>>>(RECLAIM_QUEUE);
        if std::thread::Builder::new().name("rltrace-store-reclaim".into()).spawn(move || while rx.recv().is_ok() {}).is_ok() {
            w.reclaim = Some(tx);
        }
        Ok(w)
    }

    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        let _alive = AliveGuard(Arc::clone(&self.inner));
        loop {
            // A PostgreSQL store that failed is probed every second while idle, so readiness
            // comes back when the database does, before any write arrives.
            let first = if matches!(self.conn, WriteConn::Postgres(_)) && self.inner.is_failing() {
                match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                    Ok(op) => op,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        self.probe();
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            };
            #[cfg(test)]
            let first = match first {
                Op::Crash => return,
                Op::Hold { until } => {
                    let _ = until.recv();
                    self.inner.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                op => op,
            };
            let mut ops = vec![first];
            let mut spans = op_spans(&ops[0]);
            while ops.len() < GROUP_MAX_OPS && spans < GROUP_MAX_SPANS {
                match rx.try_recv() {
                    Ok(op) => {
                        spans += op_spans(&op);
                        ops.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.run_group(ops);
        }
        tracing::debug!("store writer stopped");
    }

    /// Check a failed PostgreSQL store: reconnect if need be, reload the caches, and clear the
    /// failure when the database answers.
    fn probe(&mut self) {
        let WriteConn::Postgres(p) = &mut self.conn else { return };
        let r = p.probe().and_then(|_| self.caches.reload(p.conn()?));
        match r {
            Ok(()) => self.inner.clear_failure(),
            Err(e) => tracing::debug!(error = %e, "the database still does not answer"),
        }
    }

    fn run_group(&mut self, ops: Vec<Op>) {
        let mut released = 0usize;
        let mut done = Vec::with_capacity(ops.len());
        let mut trash: Vec<Vec<PreparedSpan>> = Vec::new();
        let max_pending = self.inner.max_pending;
        let mut began = false;
        let outcome = (|| -> Result<(), StoreError> {
            // A failed start may have opened the transaction: it is rolled back below either way.
            began = true;
            match self.conn.begin(&self.caches)? {
                Reload::Nothing => {}
                Reload::Ledger => self.caches.catch_up_ledger(self.conn.sql()?)?,
                Reload::All => self.caches.reload(self.conn.sql()?)?,
            }
            let may_settle = ops.iter().any(|o| matches!(o, Op::Settle { .. })) && self.conn.may_settle()?;
            let tx = self.conn.sql()?;
            let mut g = Group::default();
            let mut ops: std::collections::VecDeque<Op> = ops.into();
            while let Some(op) = ops.pop_front() {
                let failed = match op {
                    Op::Spans { mut spans, bytes, reply } => {
                        // This batch and the batches right after it are stored as one.
                        released += bytes;
                        let mut lens = vec![spans.len()];
                        let mut replies = vec![reply];
                        while let Some(Op::Spans { .. }) = ops.front() {
                            let Some(Op::Spans { spans: mut more, bytes, reply }) = ops.pop_front() else { break };
                            released += bytes;
                            lens.push(more.len());
                            replies.push(reply);
                            spans.append(&mut more);
                        }
                        let r = ingest_batches(tx, &mut self.caches, &mut spans, &lens, &mut g);
                        trash.push(spans);
                        match r {
                            Ok(outs) => {
                                for (reply, out) in replies.into_iter().zip(outs) {
                                    done.push(Done::Spans(reply, Ok(out)));
                                }
                                false
                            }
                            Err(e) => {
                                let mut e = Some(e);
                                for reply in replies {
                                    let r = Err(e.take().unwrap_or_else(|| StoreError::Failed("rolled back".into())));
                                    done.push(Done::Spans(reply, r));
                                }
                                true
                            }
                        }
                    }
                    Op::Reward { req, reply } => {
                        let r = crate::ledger::append_reward(tx, &mut self.caches, &mut g, *req, max_pending);
                        let failed = r.is_err();
                        done.push(Done::Reward(reply, r));
                        failed
                    }
                    Op::Barrier { reply } => {
                        done.push(Done::Barrier(reply));
                        false
                    }
                    Op::Settle { value, due_before, now, batch, reply } => {
                        let r = if may_settle { crate::ledger::settle(tx, &mut self.caches, &mut g, value, due_before, now, batch) } else { Ok(0) };
                        let failed = r.is_err();
                        done.push(Done::Settle(reply, r));
                        failed
                    }
                    Op::Gc { cut, keep_unsettled, after, reply } => {
                        let busy = |id: i64| g.aggs.contains_key(&id) || g.dirty.contains(&id);
                        let r = crate::gc::pass(tx, &mut self.caches, &cut, keep_unsettled, after, &busy);
                        let failed = r.is_err();
                        done.push(Done::Gc(reply, r));
                        failed
                    }
                    Op::Cursor { target, owner, lease_us, op, reply } => {
                        let r = crate::forward::apply(tx, &target, &owner, lease_us, crate::now_micros(), &op);
                        let failed = r.is_err();
                        done.push(Done::Cursor(reply, r));
                        failed
                    }
                    Op::Outbox { op, reply } => {
                        let r = crate::agl::apply(tx, crate::now_micros(), &op);
                        let failed = r.is_err();
                        done.push(Done::Cursor(reply, r));
                        failed
                    }
                    #[cfg(test)]
                    Op::Fail { mut spans, reply } => {
                        let _ = ingest(tx, &mut self.caches, &mut spans, &mut g);
                        done.push(Done::Barrier(reply));
                        true
                    }
                    #[cfg(test)]
                    Op::Crash | Op::Hold { .. } => false,
                };
                if failed {
                    // No partial writes: the whole group is rolled back and every caller told.
                    for rest in ops.drain(..) {
                        match rest {
                            Op::Spans { bytes, reply, .. } => {
                                released += bytes;
                                done.push(Done::Spans(reply, Err(StoreError::Failed("rolled back".into()))));
                            }
                            Op::Reward { reply, .. } => done.push(Done::Reward(reply, Err(StoreError::Failed("rolled back".into())))),
                            Op::Barrier { reply } => done.push(Done::Barrier(reply)),
                            Op::Settle { reply, .. } => done.push(Done::Settle(reply, Err(StoreError::Failed("rolled back".into())))),
                            Op::Gc { reply, .. } => done.push(Done::Gc(reply, Err(StoreError::Failed("rolled back".into())))),
                            Op::Cursor { reply, .. } | Op::Outbox { reply, .. } => done.push(Done::Cursor(reply, Err(StoreError::Failed("rolled back".into())))),
                            #[cfg(test)]
                            Op::Fail { reply, .. } => done.push(Done::Barrier(reply)),
                            #[cfg(test)]
                            Op::Crash | Op::Hold { .. } => {}
                        }
                    }
                    let first_error = done.iter().find_map(|d| match d {
                        Done::Spans(_, Err(e)) => Some(e.to_string()),
                        Done::Reward(_, Err(e)) => Some(e.to_string()),
                        Done::Settle(_, Err(e)) => Some(e.to_string()),
                        Done::Gc(_, Err(e)) => Some(e.to_string()),
                        Done::Cursor(_, Err(e)) => Some(e.to_string()),
                        _ => None,
                    });
                    return Err(StoreError::Failed(format!(
                        "an operation of the transaction failed ({}); nothing of it was stored",
                        first_error.unwrap_or_else(|| "test failure".into())
                    )));
                }
            }
            let rewarded_delta = if tx.dialect() == crate::db::Dialect::Postgres {
                crate::pg_ingest::flush_group(tx, &g.aggs, &g.dirty)?
            } else {
                crate::ingest::flush_group(tx, &g.aggs, &g.dirty)?
            };
            let c = &g.counts;
            let add = [c.spans as i64, c.triplets as i64, c.sequences as i64, c.reward_events as i64, c.task_events as i64, rewarded_delta];
            self.conn.commit(add.iter().any(|n| *n != 0).then_some(add))?;
            Ok(())
        })();
        // Freeing the batches (allocated on other threads) is left to the reclaimer, off the
        // writer's path; when it lags behind, they are freed here.
        if !trash.is_empty()
            && let Some(tx) = &self.reclaim
            && let Err(std::sync::mpsc::TrySendError::Full(t) | std::sync::mpsc::TrySendError::Disconnected(t)) = tx.try_send(trash)
        {
            drop(t);
        }
        self.inner.queued_bytes.fetch_sub(released, Ordering::Relaxed);
        self.inner.queue_depth.fetch_sub(done.len(), Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.inner.clear_failure();
                for d in done {
                    d.answer(None);
                }
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, "store transaction failed; its operations are not acknowledged");
                if began {
                    self.conn.rollback();
                }
                // Whatever the caches learnt in the rolled-back transaction is forgotten.
                match self.conn.sql().and_then(|sql| self.caches.reload(sql)) {
                    Ok(()) => {
                        if is_store_failure(&e) {
                            self.inner.set_failure(message.clone());
                        }
                    }
                    Err(e2) => {
                        tracing::error!(error = %e2, "the database does not answer after a failed transaction");
                        self.inner.set_failure(format!("the database does not answer: {e2}"));
                    }
                }
                for d in done {
                    d.answer(Some(&message));
                }
            }
        }
    }
}

/// Whether a failed transaction means the store itself is failing (disk full, I/O error, the
/// database gone), as opposed to one bad operation.
fn is_store_failure(e: &StoreError) -> bool {
    let text = e.to_string();
    matches!(e, StoreError::Sqlite(_) | StoreError::Postgres(_) | StoreError::Unreachable(_))
        || ["disk is full", "disk I/O error", "unable to open", "readonly database", "database is locked", "no such table", "postgres: ", "unreachable"]
            .iter()
            .any(|m| text.contains(m))
}

fn op_spans(op: &Op) -> usize {
    match op {
        Op::Spans { spans, .. } => spans.len(),
        _ => 1,
    }
}

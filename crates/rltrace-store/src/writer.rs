//! The single writer: one thread owns the write connection, takes operations from a bounded queue,
//! groups them into one transaction, commits, and only then answers each caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use rltrace_core::reward::{RewardEvent, RewardTarget, Strategy};
use rltrace_core::triplet::SpanRewardTarget;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::prepare::PreparedSpan;
use crate::{Inner, IngestOutcome, NewReward, RewardAppend, StoreError, now_micros};

/// A callback that receives the result of an operation after its transaction committed.
pub(crate) type Reply<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

pub(crate) enum Op {
    Spans { spans: Vec<PreparedSpan>, bytes: usize, reply: Reply<IngestOutcome> },
    Reward { req: Box<NewReward>, reply: Reply<RewardAppend> },
    Barrier { reply: Reply<()> },
    Settle { value: f64, wait_us: i64, now: i64, reply: Reply<usize> },
}

/// Most spans grouped into one transaction.
const GROUP_MAX_SPANS: usize = 16_384;
/// Most operations grouped into one transaction.
const GROUP_MAX_OPS: usize = 256;
/// Agent Lightning reward spans that found no LLM-call triplet to reward (for rate-limited logs).
static UNJOINED_ANNOTATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bound of each id cache; cleared when full.
const CACHE_MAX: usize = 200_000;

enum Done {
    Spans(Reply<IngestOutcome>, Result<IngestOutcome, StoreError>),
    Reward(Reply<RewardAppend>, Result<RewardAppend, StoreError>),
    Barrier(Reply<()>),
    Settle(Reply<usize>, Result<usize, StoreError>),
}

#[derive(Default)]
struct SeqAgg {
    count: i64,
    indexed: i64,
    first: i64,
    last: i64,
    ended: bool,
    local: i64,
}

pub(crate) struct Writer {
    conn: Connection,
    inner: Arc<Inner>,
    traces: HashMap<[u8; 16], i64>,
    sequences: HashMap<String, i64>,
    resources: HashMap<Arc<str>, i64>,
    pending_triplets: HashSet<String>,
    tasks: HashSet<String>,
    reclaim: Option<std::sync::mpsc::SyncSender<Vec<Vec<PreparedSpan>>>>,
}

/// Groups of consumed batches waiting for the reclaimer thread (one: it holds at most about the
/// writer queue's byte bound more).
const RECLAIM_QUEUE: usize = 1;

impl Writer {
    pub(crate) fn new(conn: Connection, inner: Arc<Inner>) -> Result<Writer, StoreError> {
        let mut w = Writer {
            conn,
            inner,
            traces: HashMap::new(),
            sequences: HashMap::new(),
            resources: HashMap::new(),
            pending_triplets: HashSet::new(),
            tasks: HashSet::new(),
            reclaim: None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<PreparedSpan>>>(RECLAIM_QUEUE);
        if std::thread::Builder::new().name("rltrace-store-reclaim".into()).spawn(move || while rx.recv().is_ok() {}).is_ok() {
            w.reclaim = Some(tx);
        }
        w.load_pending()?;
        Ok(w)
    }

    fn load_pending(&mut self) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("SELECT target_triplet FROM reward_events WHERE seq_key IS NULL AND target_triplet IS NOT NULL")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<HashSet<_>, _>>()?;
        drop(stmt);
        self.pending_triplets = ids;
        Ok(())
    }

    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        while let Ok(first) = rx.recv() {
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

    fn run_group(&mut self, ops: Vec<Op>) {
        let mut released = 0usize;
        let mut done = Vec::with_capacity(ops.len());
        let mut trash: Vec<Vec<PreparedSpan>> = Vec::new();
        let outcome = (|| -> Result<(), StoreError> {
            let tx = self.conn.transaction()?;
            let mut aggs: HashMap<i64, SeqAgg> = HashMap::new();
            let mut counts = Counts::default();
            let mut pending = PendingWork::default();
            let mut ops = ops.into_iter();
            while let Some(op) = ops.next() {
                let failed = match op {
                    Op::Spans { spans, bytes, reply } => {
                        released += bytes;
                        let mut spans = spans;
                        let r = ingest(&tx, &mut Caches { traces: &mut self.traces, sequences: &mut self.sequences, resources: &mut self.resources, pending: &mut self.pending_triplets, tasks: &mut self.tasks }, &mut spans, &mut aggs, &mut counts, &mut pending);
                        trash.push(spans);
                        let failed = r.is_err();
                        done.push(Done::Spans(reply, r));
                        failed
                    }
                    Op::Reward { req, reply } => {
                        let r = append_reward(&tx, &mut self.pending_triplets, *req, &mut counts);
                        let failed = r.is_err();
                        done.push(Done::Reward(reply, r));
                        failed
                    }
                    Op::Barrier { reply } => {
                        done.push(Done::Barrier(reply));
                        false
                    }
                    Op::Settle { value, wait_us, now, reply } => {
                        let r = settle(&tx, value, wait_us, now, &mut counts);
                        let failed = r.is_err();
                        done.push(Done::Settle(reply, r));
                        failed
                    }
                };
                if failed {
                    // No partial writes: the whole group is rolled back and every caller told.
                    for rest in ops.by_ref() {
                        match rest {
                            Op::Spans { bytes, reply, .. } => {
                                released += bytes;
                                done.push(Done::Spans(reply, Err(StoreError::Failed("rolled back".into()))));
                            }
                            Op::Reward { reply, .. } => done.push(Done::Reward(reply, Err(StoreError::Failed("rolled back".into())))),
                            Op::Barrier { reply } => done.push(Done::Barrier(reply)),
                            Op::Settle { reply, .. } => done.push(Done::Settle(reply, Err(StoreError::Failed("rolled back".into())))),
                        }
                    }
                    return Err(StoreError::Failed("an operation of the transaction failed; nothing of it was stored".into()));
                }
            }
            flush_aggs(&tx, &aggs)?;
            if counts.spans + counts.sequences + counts.reward_events > 0 {
                tx.prepare_cached(
                    "UPDATE counters SET spans = spans + ?1, triplets = triplets + ?2, sequences = sequences + ?3,
                       reward_events = reward_events + ?4, task_events = task_events + ?5 WHERE id = 1",
                )?
                .execute(params![
                    counts.spans as i64,
                    counts.triplets as i64,
                    counts.sequences as i64,
                    counts.reward_events as i64,
                    counts.task_events as i64
                ])?;
            }
            tx.commit()?;
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
                for d in done {
                    match d {
                        Done::Spans(reply, r) => reply(r),
                        Done::Reward(reply, r) => reply(r),
                        Done::Barrier(reply) => reply(Ok(())),
                        Done::Settle(reply, r) => reply(r),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed; its operations are not acknowledged");
                self.traces.clear();
                self.sequences.clear();
                self.resources.clear();
                if let Err(e2) = self.load_pending() {
                    tracing::error!(error = %e2, "reloading pending rewards failed");
                }
                for d in done {
                    match d {
                        Done::Spans(reply, _) => reply(Err(StoreError::Failed(e.to_string()))),
                        Done::Reward(reply, _) => reply(Err(StoreError::Failed(e.to_string()))),
                        Done::Barrier(reply) => reply(Err(StoreError::Failed(e.to_string()))),
                        Done::Settle(reply, _) => reply(Err(StoreError::Failed(e.to_string()))),
                    }
                }
            }
        }
    }
}

fn op_spans(op: &Op) -> usize {
    match op {
        Op::Spans { spans, .. } => spans.len(),
        _ => 1,
    }
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

#[derive(Default)]
struct PendingWork {
    annotations: Vec<(i64, [u8; 16], rltrace_core::triplet::AnnotationReward, String)>,
}

struct Caches<'a> {
    traces: &'a mut HashMap<[u8; 16], i64>,
    sequences: &'a mut HashMap<String, i64>,
    resources: &'a mut HashMap<Arc<str>, i64>,
    pending: &'a mut HashSet<String>,
    tasks: &'a mut HashSet<String>,
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: V) {
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(k, v);
}

fn bounded_set_insert(set: &mut HashSet<String>, k: String) {
    if set.len() >= CACHE_MAX {
        set.clear();
    }
    set.insert(k);
}

fn trace_ref(tx: &Transaction<'_>, c: &mut Caches<'_>, trace_id: &[u8; 16]) -> rusqlite::Result<i64> {
    if let Some(id) = c.traces.get(trace_id) {
        return Ok(*id);
    }
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM traces WHERE trace_id = ?1")?
        .query_row([&trace_id[..]], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached("INSERT INTO traces(trace_id) VALUES (?1)")?.execute([&trace_id[..]])?;
            tx.last_insert_rowid()
        }
    };
    bounded_insert(c.traces, *trace_id, id);
    Ok(id)
}

fn resource_ref(tx: &Transaction<'_>, c: &mut Caches<'_>, resource: &Arc<str>) -> rusqlite::Result<i64> {
    if let Some(id) = c.resources.get(resource) {
        return Ok(*id);
    }
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM resources WHERE attributes = ?1")?
        .query_row([&**resource], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached("INSERT INTO resources(attributes) VALUES (?1)")?.execute([&**resource])?;
            tx.last_insert_rowid()
        }
    };
    bounded_insert(c.resources, Arc::clone(resource), id);
    Ok(id)
}

/// The rowid of a sequence, creating it if new; `true` when created now.
fn sequence_ref(tx: &Transaction<'_>, c: &mut Caches<'_>, sequence_id: &str, counts: &mut Counts) -> rusqlite::Result<(i64, bool)> {
    if let Some(id) = c.sequences.get(sequence_id) {
        return Ok((*id, false));
    }
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM sequences WHERE sequence_id = ?1")?
        .query_row([sequence_id], |r| r.get(0))
        .optional()?;
    let (id, created) = match found {
        Some(id) => (id, false),
        None => {
            // Sequence rewards appended as pending before the sequence existed are joined here.
            tx.prepare_cached("INSERT INTO sequences(sequence_id) VALUES (?1)")?.execute([sequence_id])?;
            let id = tx.last_insert_rowid();
            recount_sequence(tx, id, sequence_id)?;
            counts.sequences += 1;
            (id, true)
        }
    };
    bounded_insert(c.sequences, sequence_id.to_string(), id);
    Ok((id, created))
}

const INSERT_SPAN: &str = "INSERT OR IGNORE INTO spans(
    trace_ref, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message,
    attributes, events, resource_ref, scope,
    seq_ref, triplet_id, seq_index, ts_us, state, action, role, task_id, phase,
    reward, reward_source, reward_components, propensity, seq_end, llm, sampling_probability)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)";

fn ingest(
    tx: &Transaction<'_>,
    c: &mut Caches<'_>,
    spans: &mut [PreparedSpan],
    aggs: &mut HashMap<i64, SeqAgg>,
    counts: &mut Counts,
    pending: &mut PendingWork,
) -> Result<IngestOutcome, StoreError> {
    let mut out = IngestOutcome::default();
    let mut insert = tx.prepare_cached(INSERT_SPAN)?;
    for s in spans.iter_mut() {
        let tref = trace_ref(tx, c, &s.trace_id)?;
        let rref = resource_ref(tx, c, &s.resource)?;
        let span_id = i64::from_be_bytes(s.span_id);
        let (seq_ref, seq_created) = match &s.triplet {
            Some(t) => {
                let (id, created) = sequence_ref(tx, c, &t.sequence_id, counts)?;
                (Some(id), created)
            }
            None => (None, false),
        };
        let t = s.triplet.as_ref();
        let changed = insert.execute(params![
            tref,
            span_id,
            s.parent_span_id,
            s.name,
            s.kind,
            s.start_ns,
            s.end_ns,
            s.status_code,
            s.status_message,
            s.attributes,
            s.events,
            rref,
            s.scope,
            seq_ref,
            t.filter(|t| t.explicit_id).map(|t| t.triplet_id.as_str()),
            t.and_then(|t| t.seq_index),
            t.map(|t| t.ts_us),
            t.map(|t| t.state.as_str()),
            t.map(|t| t.action.as_str()),
            t.and_then(|t| t.role.as_deref()),
            t.and_then(|t| t.task_id.as_deref()),
            t.and_then(|t| t.phase.as_deref()),
            t.and_then(|t| t.reward),
            t.filter(|t| t.has_immediate).map(|t| t.reward_source.as_str()),
            t.and_then(|t| t.reward_components.as_deref()),
            t.and_then(|t| t.propensity),
            t.map(|t| t.seq_end),
            t.map(|t| t.llm),
            t.and_then(|t| t.sampling_probability),
        ])?;
        if changed == 0 {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM spans WHERE trace_ref = ?1 AND span_id = ?2")?
                .query_row(params![tref, span_id], |r| r.get(0))
                .optional()?;
            if exists.is_some() {
                out.duplicates += 1;
            } else {
                // A sequence made for this refused span alone is not kept.
                if let (true, Some(seq), Some(t)) = (seq_created, seq_ref, t) {
                    tx.prepare_cached("DELETE FROM sequences WHERE id = ?1 AND triplet_count = 0")?.execute([seq])?;
                    c.sequences.remove(&t.sequence_id);
                    counts.sequences = counts.sequences.saturating_sub(1);
                }
                out.rejected.push(format!(
                    "span {}/{}: attribute rl.triplet_id: triplet id {:?} is already used by another span",
                    rltrace_core::ids::to_hex(&s.trace_id),
                    rltrace_core::ids::to_hex(&s.span_id),
                    t.map(|t| t.triplet_id.as_str()).unwrap_or_default()
                ));
            }
            continue;
        }
        out.stored += 1;
        counts.spans += 1;
        if let (Some(t), Some(seq)) = (t, seq_ref) {
            counts.triplets += 1;
            let a = aggs.entry(seq).or_insert_with(|| SeqAgg { first: i64::MAX, last: i64::MIN, ..SeqAgg::default() });
            a.count += 1;
            a.indexed += i64::from(t.seq_index.is_some());
            a.first = a.first.min(t.ts_us);
            a.last = a.last.max(t.ts_us);
            a.ended |= t.seq_end;
            a.local += i64::from(t.has_immediate);
            if let Some(task) = &t.task_id
                && !c.tasks.contains(task)
            {
                tx.prepare_cached("INSERT OR IGNORE INTO tasks(task_id) VALUES (?1)")?.execute([task])?;
                bounded_set_insert(c.tasks, task.clone());
            }
            if !c.pending.is_empty() && c.pending.remove(&t.triplet_id) {
                tx.prepare_cached("UPDATE reward_events SET seq_key = ?1 WHERE target_triplet = ?2 AND seq_key IS NULL")?
                    .execute(params![t.sequence_id, t.triplet_id])?;
                recount_sequence(tx, seq, &t.sequence_id)?;
            }
            for r in &s.rewards {
                let (target_triplet, target_sequence, strategy) = match &r.target {
                    SpanRewardTarget::Triplet => (Some(t.triplet_id.as_str()), None, None),
                    SpanRewardTarget::Sequence(st) => (None, Some(t.sequence_id.as_str()), Some(st)),
                };
                let reward_id = format!("span:{}{}:{}", rltrace_core::ids::to_hex(&s.trace_id), rltrace_core::ids::to_hex(&s.span_id), r.ordinal);
                insert_event(tx, &EventRow {
                    target_triplet,
                    target_sequence,
                    strategy,
                    ..EventRow::carried(&reward_id, &t.sequence_id, r.value, &r.source, r.reason.as_deref(), r.at)
                })?;
                counts.reward_events += 1;
                count_event(tx, &t.sequence_id, &r.source, true)?;
            }
        }
        if let Some(a) = s.annotation.take() {
            let id = format!("span:{}{}:annotation", rltrace_core::ids::to_hex(&s.trace_id), rltrace_core::ids::to_hex(&s.span_id));
            pending.annotations.push((tref, s.trace_id, a, id));
        }
    }
    drop(insert);
    for (tref, trace_id, a, reward_id) in std::mem::take(&mut pending.annotations) {
        // The latest LLM-call triplet of the trace that ended at or before the reward span started.
        let target: Option<(Option<String>, i64, String)> = tx
            .prepare_cached(
                "SELECT s.triplet_id, s.span_id, q.sequence_id FROM spans s JOIN sequences q ON q.id = s.seq_ref
                 WHERE s.trace_ref = ?1 AND s.llm = 1 AND s.end_ns <= ?2 ORDER BY s.end_ns DESC, s.id DESC LIMIT 1",
            )?
            .query_row(params![tref, a.start_time_unix_nano as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((explicit, span_id, sequence_id)) = target else {
            // Rate-limited: the first ten, then one in a thousand.
            let n = UNJOINED_ANNOTATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < 10 || n % 1000 == 0 {
                tracing::warn!(trace_id = %rltrace_core::ids::to_hex(&trace_id), unjoined_total = n + 1,
                    "agentlightning reward span has no earlier LLM-call triplet in its trace; the span is stored, no reward event is made");
            }
            continue;
        };
        let triplet_id = explicit.unwrap_or_else(|| rltrace_core::ids::default_triplet_id(&trace_id, &span_id.to_be_bytes()));
        let at = rltrace_core::time::nanos_to_micros(a.start_time_unix_nano);
        insert_event(tx, &EventRow {
            target_triplet: Some(&triplet_id),
            ..EventRow::carried(&reward_id, &sequence_id, a.value, "agentlightning", a.name.as_deref(), at)
        })?;
        counts.reward_events += 1;
        count_event(tx, &sequence_id, "agentlightning", true)?;
    }
    Ok(out)
}

/// Recount the ledger events that reach a sequence through its key (after a join).
fn recount_sequence(tx: &Transaction<'_>, seq: i64, sequence_id: &str) -> rusqlite::Result<()> {
    let (all, terminal): (i64, i64) = tx
        .prepare_cached(
            "SELECT count(*), coalesce(sum(value IS NOT NULL AND source IN ('terminal', 'hitl', 'tests', 'judge')), 0)
             FROM reward_events WHERE seq_key = ?1",
        )?
        .query_row([sequence_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    tx.prepare_cached("UPDATE sequences SET reward_events = ?1, terminal_events = ?2 WHERE id = ?3")?.execute(params![all, terminal, seq])?;
    Ok(())
}

fn flush_aggs(tx: &Transaction<'_>, aggs: &HashMap<i64, SeqAgg>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE sequences SET triplet_count = triplet_count + ?1, indexed_count = indexed_count + ?2,
           first_us = min(coalesce(first_us, ?3), ?3), last_us = max(coalesce(last_us, ?4), ?4),
           ended = max(ended, ?5), local_rewards = local_rewards + ?6 WHERE id = ?7",
    )?;
    for (id, a) in aggs {
        stmt.execute(params![a.count, a.indexed, a.first, a.last, a.ended, a.local, id])?;
    }
    Ok(())
}

pub(crate) struct EventRow<'a> {
    pub(crate) reward_id: &'a str,
    pub(crate) target_triplet: Option<&'a str>,
    pub(crate) target_sequence: Option<&'a str>,
    pub(crate) strategy: Option<&'a Strategy>,
    pub(crate) seq_key: Option<&'a str>,
    pub(crate) value: Option<f64>,
    pub(crate) source: &'a str,
    pub(crate) reason: Option<&'a str>,
    pub(crate) created_us: i64,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) body_hash: Option<&'a str>,
    pub(crate) metadata: Option<&'a str>,
    pub(crate) target_task: Option<&'a str>,
    pub(crate) valuation: Option<String>,
}

impl<'a> EventRow<'a> {
    /// An event the collector makes itself (carried by a span, or the fallback): a fixed value
    /// reaching `seq_key`, no request fields; the caller sets the target.
    fn carried(reward_id: &'a str, seq_key: &'a str, value: f64, source: &'a str, reason: Option<&'a str>, created_us: i64) -> EventRow<'a> {
        EventRow {
            reward_id,
            target_triplet: None,
            target_sequence: None,
            strategy: None,
            seq_key: Some(seq_key),
            value: Some(value),
            source,
            reason,
            created_us,
            idempotency_key: None,
            body_hash: None,
            metadata: None,
            target_task: None,
            valuation: None,
        }
    }
}

fn insert_event(tx: &Transaction<'_>, e: &EventRow<'_>) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO reward_events(reward_id, target_triplet, target_sequence, strategy, gamma, role, seq_key,
            value, source, reason, created_us, idempotency_key, body_hash, metadata, target_task, valuation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        e.reward_id,
        e.target_triplet,
        e.target_sequence,
        e.strategy.map(Strategy::name),
        e.strategy.and_then(Strategy::gamma),
        e.strategy.and_then(Strategy::role),
        e.seq_key,
        e.value,
        e.source,
        e.reason,
        e.created_us,
        e.idempotency_key,
        e.body_hash,
        e.metadata,
        e.target_task,
        e.valuation,
    ])
}

/// Count a new event on the sequence it reaches: every event, and terminal-type ones with a value.
fn count_event(tx: &Transaction<'_>, sequence_id: &str, source: &str, has_value: bool) -> rusqlite::Result<()> {
    let terminal = i64::from(has_value && rltrace_core::reward::TERMINAL_SOURCES.contains(&source));
    tx.prepare_cached("UPDATE sequences SET reward_events = reward_events + 1, terminal_events = terminal_events + ?2 WHERE sequence_id = ?1")?
        .execute(params![sequence_id, terminal])?;
    Ok(())
}

/// The id under which a reward for `triplet_id` is kept: a default id (`{trace_id}{span_id}` hex)
/// in lowercase, as triplets report it, anything else as given.
pub(crate) fn canonical_triplet_id(triplet_id: &str) -> String {
    match rltrace_core::ids::parse_default_triplet_id(triplet_id) {
        Some(_) => triplet_id.to_ascii_lowercase(),
        None => triplet_id.to_string(),
    }
}

/// A triplet found by id: its span row, its sequence id, and whether the id was its explicit
/// `rl.triplet_id` (rather than the default `{trace_id}{span_id}`).
pub(crate) struct FoundTriplet {
    pub(crate) rowid: i64,
    pub(crate) sequence_id: String,
    pub(crate) explicit: bool,
}

/// Find a triplet by triplet id (explicit, or the default `{trace_id}{span_id}` in either case).
pub(crate) fn triplet_sequence(conn: &Connection, triplet_id: &str) -> rusqlite::Result<Option<FoundTriplet>> {
    let explicit = conn
        .prepare_cached("SELECT s.id, q.sequence_id FROM spans s JOIN sequences q ON q.id = s.seq_ref WHERE s.triplet_id = ?1")?
        .query_row([triplet_id], |r| Ok(FoundTriplet { rowid: r.get(0)?, sequence_id: r.get(1)?, explicit: true }))
        .optional()?;
    if explicit.is_some() {
        return Ok(explicit);
    }
    let Some((trace_id, span_id)) = rltrace_core::ids::parse_default_triplet_id(triplet_id) else { return Ok(None) };
    conn.prepare_cached(
        "SELECT s.id, q.sequence_id FROM traces t JOIN spans s ON s.trace_ref = t.id JOIN sequences q ON q.id = s.seq_ref
         WHERE t.trace_id = ?1 AND s.span_id = ?2 AND s.triplet_id IS NULL",
    )?
    .query_row(params![&trace_id[..], i64::from_be_bytes(span_id)], |r| {
        Ok(FoundTriplet { rowid: r.get(0)?, sequence_id: r.get(1)?, explicit: false })
    })
    .optional()
}

/// Whether a task id reaches any stored triplet: a sequence named after it (`T` or `T:...`), or a
/// triplet whose `state.task_id` is `T` (kept in `tasks`).
pub(crate) fn task_known(conn: &Connection, task_id: &str) -> rusqlite::Result<bool> {
    let by_sequence: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM sequences WHERE triplet_count > 0 AND (sequence_id = ?1 OR (sequence_id >= ?1 || ':' AND sequence_id < ?1 || ';')) LIMIT 1",
        )?
        .query_row([task_id], |r| r.get(0))
        .optional()?;
    if by_sequence.is_some() {
        return Ok(true);
    }
    Ok(conn.prepare_cached("SELECT 1 FROM tasks WHERE task_id = ?1")?.query_row([task_id], |r| r.get::<_, i64>(0)).optional()?.is_some())
}

fn append_reward(
    tx: &Transaction<'_>,
    pending_set: &mut HashSet<String>,
    req: NewReward,
    counts: &mut Counts,
) -> Result<RewardAppend, StoreError> {
    if let Some(key) = &req.idempotency_key {
        let existing: Option<(i64, Option<String>)> = tx
            .prepare_cached("SELECT id, body_hash FROM reward_events WHERE idempotency_key = ?1")?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, hash)) = existing {
            let ev = crate::read::event_by_rowid(tx, id)?;
            return Ok(if hash.as_deref() == Some(req.body_hash.as_str()) {
                RewardAppend::Existing(ev)
            } else {
                RewardAppend::Conflict(ev)
            });
        }
    }
    let mut target_task = None;
    let canonical: String;
    let (seq_key, target_triplet, target_sequence, strategy) = match &req.target {
        RewardTarget::Triplet { triplet_id } => {
            let found = triplet_sequence(tx, triplet_id)?;
            if found.is_none() && !req.allow_pending {
                return Ok(RewardAppend::NotFound(format!("triplet {triplet_id:?} not found")));
            }
            // An explicit id as given; a default id in the lowercase the triplet reports.
            canonical = if found.as_ref().is_some_and(|f| f.explicit) { triplet_id.clone() } else { canonical_triplet_id(triplet_id) };
            (found.map(|f| f.sequence_id), Some(canonical.as_str()), None, None)
        }
        RewardTarget::Sequence { sequence_id, strategy } => {
            let known: Option<i64> = tx
                .prepare_cached("SELECT id FROM sequences WHERE sequence_id = ?1")?
                .query_row([sequence_id], |r| r.get(0))
                .optional()?;
            if known.is_none() && !req.allow_pending {
                return Ok(RewardAppend::NotFound(format!("sequence {sequence_id:?} not found")));
            }
            (Some(sequence_id.clone()), None, Some(sequence_id.as_str()), Some(strategy.clone()))
        }
        RewardTarget::Task { task_id, phase } => {
            if !req.allow_pending && !task_known(tx, task_id)? {
                return Ok(RewardAppend::NotFound(format!("task {task_id:?} not found")));
            }
            target_task = Some(task_id.as_str());
            (None, None, None, Some(Strategy::Phase { phase: phase.clone() }))
        }
    };
    let reward_id = uuid::Uuid::new_v4().to_string();
    let created_us = now_micros();
    insert_event(tx, &EventRow {
        reward_id: &reward_id,
        target_triplet,
        target_sequence,
        strategy: strategy.as_ref(),
        seq_key: seq_key.as_deref(),
        value: req.value,
        source: &req.source,
        reason: req.reason.as_deref(),
        created_us,
        idempotency_key: req.idempotency_key.as_deref(),
        body_hash: Some(&req.body_hash),
        metadata: req.metadata.as_deref(),
        target_task,
        valuation: req.valuation.encode(),
    })?;
    let rowid = tx.last_insert_rowid();
    counts.reward_events += 1;
    match (&seq_key, target_task) {
        (Some(s), _) => count_event(tx, s, &req.source, req.value.is_some())?,
        (None, Some(_)) => counts.task_events += 1,
        (None, None) => {
            if let Some(t) = target_triplet {
                pending_set.insert(t.to_string());
            }
        }
    }
    let ev: RewardEvent = crate::read::event_by_rowid(tx, rowid)?;
    Ok(RewardAppend::Created(ev))
}

/// Append the fallback reward to every sequence that has no terminal-type reward `wait_us` after its
/// last triplet and no fallback yet. Returns how many sequences were settled.
pub(crate) fn settle(tx: &Transaction<'_>, value: f64, wait_us: i64, now: i64, counts: &mut Counts) -> Result<usize, StoreError> {
    let due: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT id, sequence_id FROM sequences WHERE triplet_count > 0 AND terminal_events = 0 AND settled = 0 AND last_us <= ?1",
        )?
        .query_map([now - wait_us], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let uniform = Strategy::Uniform;
    for (id, sequence_id) in &due {
        let reward_id = uuid::Uuid::new_v4().to_string();
        insert_event(tx, &EventRow {
            target_sequence: Some(sequence_id),
            strategy: Some(&uniform),
            ..EventRow::carried(&reward_id, sequence_id, value, "fallback", Some("no terminal-type reward within reward_wait"), now)
        })?;
        counts.reward_events += 1;
        tx.prepare_cached("UPDATE sequences SET reward_events = reward_events + 1, settled = 1 WHERE id = ?1")?.execute([id])?;
    }
    Ok(due.len())
}

//! Span rows: a batch of prepared spans becomes span rows (triplet columns on the span row), the
//! traces, resources and sequences they refer to, the per-sequence aggregates, the role and task
//! links, the rewards the spans carry, and the joins of pending rewards their triplets complete.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rltrace_core::ids::{canonical_triplet_id, to_hex};
use rltrace_core::triplet::SpanRewardTarget;
use crate::db::{Dialect, Sql, SqlExt, params};

use crate::ledger::{self, EventRow};
use crate::prepare::PreparedSpan;
use crate::writer::Group;
use crate::{IngestOutcome, StoreError};

/// Agent Lightning reward spans that found no LLM-call triplet to reward (for rate-limited logs).
static UNJOINED_ANNOTATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bound of each id cache of the writer; a full cache is cleared.
const CACHE_MAX: usize = 200_000;

/// What the writer remembers between transactions. Every cache is bounded, and all of it is
/// dropped or reloaded when a transaction rolls back, so nothing refers to rows that were never
/// committed.
#[derive(Default)]
pub(crate) struct Caches {
    pub(crate) traces: HashMap<[u8; 16], i64>,
    pub(crate) sequences: HashMap<String, i64>,
    pub(crate) resources: HashMap<Arc<str>, i64>,
    /// Task ids known to be linked to each sequence row (looked up by row, no key to build).
    pub(crate) task_links: HashMap<i64, Vec<String>>,
    /// Roles known to be linked to each sequence row.
    pub(crate) role_links: HashMap<i64, Vec<String>>,
    /// Canonical triplet ids that pending rewards wait for (bounded by the store's pending limit).
    pub(crate) pending: HashSet<String>,
    /// Rowid of the newest ledger event.
    pub(crate) last_event: i64,
    /// Ledger events that target a task (defects by task id).
    pub(crate) task_events: i64,
    /// Deletions of sequences by retention seen (`gc_generation` in `meta`): another
    /// collector's deletion makes this one drop its cached rows.
    pub(crate) gc_generation: i64,
    /// Sequences the batch being stored created while fetching its rows ahead (PostgreSQL).
    pub(crate) created: HashSet<i64>,
    /// Traces the batch being stored created while fetching its rows ahead (PostgreSQL).
    pub(crate) new_traces: HashSet<i64>,
}

impl Caches {
    /// Drop what may refer to rolled-back rows and reload what the database says.
    pub(crate) fn reload(&mut self, conn: &dyn Sql) -> Result<(), StoreError> {
        self.traces.clear();
        self.sequences.clear();
        self.resources.clear();
        self.task_links.clear();
        self.role_links.clear();
        self.created.clear();
        self.new_traces.clear();
        self.reload_ledger(conn)
    }

    /// Catch up with events another process appended since `last_event`: the pending triplet ids
    /// they added, the newest event, the task events. (Ids another process joined stay listed:
    /// a join of an id already joined changes nothing, and the pending bound asks the database
    /// before it refuses.)
    pub(crate) fn catch_up_ledger(&mut self, conn: &dyn Sql) -> Result<(), StoreError> {
        let added = conn
            .prepare_cached("SELECT target_triplet FROM reward_events WHERE id > ?1 AND seq_key IS NULL AND target_triplet IS NOT NULL")?
            .query_map(params![self.last_event], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        self.pending.extend(added);
        self.last_event = conn.query_row("SELECT coalesce(max(id), 0) FROM reward_events", params![], |r| r.get(0))?;
        self.task_events = conn.query_row("SELECT task_events FROM counters WHERE id = 1", params![], |r| r.get(0))?;
        self.gc_generation = gc_generation(conn)?;
        Ok(())
    }

    /// Reload what the caches know of the ledger (another process may have appended to it).
    pub(crate) fn reload_ledger(&mut self, conn: &dyn Sql) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached("SELECT target_triplet FROM reward_events WHERE seq_key IS NULL AND target_triplet IS NOT NULL")?;
        self.pending = stmt.query_map(params![], |r| r.get::<_, String>(0))?.collect::<Result<HashSet<_>, _>>()?;
        self.last_event = conn.query_row("SELECT coalesce(max(id), 0) FROM reward_events", params![], |r| r.get(0))?;
        self.task_events = conn.query_row("SELECT task_events FROM counters WHERE id = 1", params![], |r| r.get(0))?;
        self.gc_generation = gc_generation(conn)?;
        Ok(())
    }
}

/// The number of retention passes that deleted sequences, as `meta` records it.
pub(crate) fn gc_generation(conn: &dyn Sql) -> Result<i64, StoreError> {
    conn.query_row("SELECT coalesce((SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'gc_generation'), 0)", params![], |r| r.get(0))
}

pub(crate) fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: V) {
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(k, v);
}

/// Whether `value` is known under `key`; if not, remember it (the map is bounded like the other
/// caches) and return `false`.
fn known_link(map: &mut HashMap<i64, Vec<String>>, key: i64, value: &str) -> bool {
    if map.get(&key).is_some_and(|v| v.iter().any(|x| x == value)) {
        return true;
    }
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.entry(key).or_default().push(value.to_string());
    false
}

fn trace_ref(tx: &dyn Sql, c: &mut Caches, trace_id: &[u8; 16]) -> Result<i64, StoreError> {
    if let Some(id) = c.traces.get(trace_id) {
        return Ok(*id);
    }
    let found: Option<i64> =
        tx.prepare_cached("SELECT id FROM traces WHERE trace_id = ?1")?.query_opt(params![&trace_id[..]], |r| r.get(0))?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.query_row("INSERT INTO traces(trace_id) VALUES (?1) RETURNING id", params![&trace_id[..]], |r| r.get(0))?
        }
    };
    bounded_insert(&mut c.traces, *trace_id, id);
    Ok(id)
}

fn resource_ref(tx: &dyn Sql, c: &mut Caches, resource: &Arc<str>) -> Result<i64, StoreError> {
    if let Some(id) = c.resources.get(resource) {
        return Ok(*id);
    }
    let found: Option<i64> =
        tx.prepare_cached("SELECT id FROM resources WHERE attributes = ?1")?.query_opt(params![&**resource], |r| r.get(0))?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.query_row("INSERT INTO resources(attributes) VALUES (?1) RETURNING id", params![&**resource], |r| r.get(0))?
        }
    };
    bounded_insert(&mut c.resources, Arc::clone(resource), id);
    Ok(id)
}

/// The rowid of a sequence, creating it if new; `true` when created now. A new sequence joins the
/// sequence rewards appended as pending before it existed, and defects by task id that reach it
/// by its id.
fn sequence_ref(tx: &dyn Sql, c: &mut Caches, sequence_id: &str, g: &mut Group) -> Result<(i64, bool), StoreError> {
    if let Some(id) = c.sequences.get(sequence_id) {
        return Ok((*id, false));
    }
    let found: Option<i64> =
        tx.prepare_cached("SELECT id FROM sequences WHERE sequence_id = ?1")?.query_opt(params![sequence_id], |r| r.get(0))?;
    let (id, created) = match found {
        Some(id) => (id, false),
        None => {
            let id: i64 = tx.query_row("INSERT INTO sequences(sequence_id) VALUES (?1) RETURNING id", params![sequence_id], |r| r.get(0))?;
            ledger::count_pending_for_new_sequence(tx, id, sequence_id)?;
            on_new_sequence(tx, c, g, id, sequence_id)?;
            (id, true)
        }
    };
    bounded_insert(&mut c.sequences, sequence_id.to_string(), id);
    Ok((id, created))
}

/// What a sequence created now takes from the ledger: defects by task id that reach it by its
/// name; it is counted. (Pending sequence rewards are counted by the caller.)
pub(crate) fn on_new_sequence(tx: &dyn Sql, c: &Caches, g: &mut Group, id: i64, sequence_id: &str) -> Result<(), StoreError> {
    if c.task_events > 0 {
        for task in rltrace_core::reward::candidate_tasks(sequence_id, std::iter::empty()) {
            if ledger::task_has_events(tx, task)? {
                tx.prepare_cached("UPDATE sequences SET task_events = 1 WHERE id = ?1")?.execute(params![id])?;
                break;
            }
        }
    }
    g.counts.sequences += 1;
    g.new_sequences.insert(id);
    Ok(())
}

pub(crate) const INSERT_SPAN: &str = "INSERT OR IGNORE INTO spans(
    trace_ref, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message,
    attributes, events, resource_ref, scope,
    seq_ref, triplet_id, seq_index, ts_us, state, action, role, task_id, phase,
    reward, reward_source, reward_components, propensity, seq_end, llm, sampling_probability, ledger_after, extras)
  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)";

/// Role and task links a batch adds.
#[derive(Default)]
pub(crate) struct Links {
    pub(crate) roles: Vec<(String, i64)>,
    pub(crate) tasks: Vec<(String, i64)>,
}

/// Insert the links (SQLite: one prepared statement a row); returns the task links that were new.
fn insert_links(tx: &dyn Sql, links: &Links) -> Result<Vec<(String, i64)>, StoreError> {
    for (role, seq) in &links.roles {
        tx.prepare_cached("INSERT OR IGNORE INTO sequence_roles(role, seq_ref) VALUES (?1, ?2)")?.execute(params![role, seq])?;
    }
    let mut added = Vec::new();
    for (task, seq) in &links.tasks {
        if tx.prepare_cached("INSERT OR IGNORE INTO task_sequences(task_id, seq_ref) VALUES (?1, ?2)")?.execute(params![task, seq])? > 0 {
            added.push((task.clone(), *seq));
        }
    }
    Ok(added)
}

/// Insert the span rows (SQLite: one prepared statement a row, in process); what became of each.
fn insert_rows(tx: &dyn Sql, c: &Caches, spans: &[PreparedSpan], refs: &[Option<Refs>]) -> Result<Vec<Fate>, StoreError> {
    let mut insert = tx.prepare_cached(INSERT_SPAN)?;
    let mut fates = Vec::with_capacity(spans.len());
    for (s, r) in spans.iter().zip(refs) {
        let Some(r) = r else {
            fates.push(Fate::Refused(String::new()));
            continue;
        };
        let t = s.triplet.as_ref();
        let span_id = i64::from_be_bytes(s.span_id);
        let changed = insert.execute(params![
            r.trace,
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
            r.resource,
            s.scope,
            r.sequence,
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
            t.filter(|t| t.has_immediate).map(|_| c.last_event),
            s.extras.as_deref(),
        ])?;
        if changed > 0 {
            fates.push(Fate::Stored);
            continue;
        }
        let exists: Option<i64> =
            tx.prepare_cached("SELECT 1 FROM spans WHERE trace_ref = ?1 AND span_id = ?2")?.query_opt(params![r.trace, span_id], |r| r.get(0))?;
        fates.push(if exists.is_some() { Fate::Duplicate } else { Fate::Refused(triplet_id_taken(s)) });
    }
    Ok(fates)
}

/// The refusal of a span whose explicit triplet id another span holds.
pub(crate) fn triplet_id_taken(s: &PreparedSpan) -> String {
    format!(
        "span {}/{}: attribute rl.triplet_id: triplet id {:?} is already used by another span",
        to_hex(&s.trace_id),
        to_hex(&s.span_id),
        s.triplet.as_ref().map(|t| t.triplet_id.as_str()).unwrap_or_default()
    )
}

/// Aggregates of the triplets a transaction adds to one sequence.
pub(crate) struct SeqAgg {
    pub(crate) count: i64,
    pub(crate) indexed: i64,
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) ended: bool,
    pub(crate) local: i64,
    /// The first rollout link among the triplets (kept when the sequence has none yet).
    pub(crate) rollout: Option<rltrace_core::triplet::RolloutLink>,
}

impl Default for SeqAgg {
    fn default() -> SeqAgg {
        SeqAgg { count: 0, indexed: 0, first: i64::MAX, last: i64::MIN, ended: false, local: 0, rollout: None }
    }
}

/// What became of one span of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    Stored,
    Duplicate,
    /// Refused, with the message for the exporter.
    Refused(String),
}

/// The rows a span refers to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refs {
    pub(crate) trace: i64,
    pub(crate) resource: i64,
    pub(crate) sequence: Option<i64>,
}

/// A text PostgreSQL cannot hold (and SQLite is not asked to): a NUL character in a span's own
/// strings. JSON texts escape it, so only the raw strings are looked at.
fn nul_field(s: &PreparedSpan) -> Option<&'static str> {
    let t = s.triplet.as_ref();
    let fields: [(&'static str, Option<&str>); 8] = [
        ("name", Some(s.name.as_str())),
        ("status message", Some(s.status_message.as_str())),
        ("scope name", Some(s.scope.as_str())),
        ("rl.sequence_id", t.map(|t| t.sequence_id.as_str())),
        ("rl.triplet_id", t.map(|t| t.triplet_id.as_str())),
        ("state.agent_role", t.and_then(|t| t.role.as_deref())),
        ("state.task_id", t.and_then(|t| t.task_id.as_deref())),
        ("phase", t.and_then(|t| t.phase.as_deref())),
    ];
    fields.into_iter().find(|(_, v)| v.is_some_and(|v| v.contains('\0'))).map(|(k, _)| k)
}

/// Store one batch of spans inside the group's transaction (the tests' single batch).
#[cfg(test)]
pub(crate) fn ingest(tx: &dyn Sql, c: &mut Caches, spans: &mut [PreparedSpan], g: &mut Group) -> Result<IngestOutcome, StoreError> {
    let n = spans.len();
    Ok(ingest_batches(tx, c, spans, &[n], g)?.pop().unwrap_or_default())
}

/// Store consecutive batches of spans inside the group's transaction as one: `spans` holds them
/// one after the other, `lens` says how many spans each has, and each gets its own outcome. What
/// becomes of each span is what it would be with the batches stored one by one in that order (a
/// span is a duplicate of an earlier copy in any of them); the statements are made once for all.
pub(crate) fn ingest_batches(
    tx: &dyn Sql,
    c: &mut Caches,
    spans: &mut [PreparedSpan],
    lens: &[usize],
    g: &mut Group,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut outs: Vec<IngestOutcome> = lens.iter().map(|_| IngestOutcome::default()).collect();
    // Which batch each span came in.
    let owner: Vec<usize> = lens.iter().enumerate().flat_map(|(i, n)| std::iter::repeat_n(i, *n)).collect();
    if owner.len() != spans.len() {
        return Err(StoreError::Failed(format!("{} spans for batches of {} in all", spans.len(), owner.len())));
    }
    let mut annotations = Vec::new();
    let postgres = tx.dialect() == Dialect::Postgres;
    // Spans refused before anything of them is looked up or created.
    let nul: Vec<Option<&'static str>> = spans.iter().map(nul_field).collect();
    if postgres {
        // The rows spans refer to, looked up and created in a few statements for the batch.
        c.created.clear();
        c.new_traces.clear();
        crate::pg_ingest::prefetch(tx, c, spans, &nul, g)?;
    }
    // Sequences created by this batch, and whether a span of the batch was stored into each.
    let mut created: HashMap<i64, bool> = HashMap::new();
    let mut refs: Vec<Option<Refs>> = Vec::with_capacity(spans.len());
    // The spans of one trace, resource or sequence mostly come one after another: such a span
    // takes the row of the span before it without its key being looked up again.
    let mut last: Option<(&PreparedSpan, Refs)> = None;
    for ((s, refused), &b) in spans.iter().zip(&nul).zip(&owner) {
        if let Some(field) = refused {
            refs.push(None);
            outs[b].rejected.push(format!("span {}/{}: {field} contains a NUL character", to_hex(&s.trace_id), to_hex(&s.span_id)));
            continue;
        }
        let trace = match last {
            Some((p, r)) if p.same_trace(s) => r.trace,
            _ => trace_ref(tx, c, &s.trace_id)?,
        };
        let resource = match last {
            Some((p, r)) if p.same_resource(s) => r.resource,
            _ => resource_ref(tx, c, &s.resource)?,
        };
        let sequence = match &s.triplet {
            Some(t) => {
                let (id, new) = match last {
                    Some((p, Refs { sequence: Some(q), .. })) if p.same_sequence(s) => (q, false),
                    _ => sequence_ref(tx, c, &t.sequence_id, g)?,
                };
                if new || c.created.contains(&id) {
                    created.entry(id).or_insert(false);
                }
                Some(id)
            }
            None => None,
        };
        let r = Refs { trace, resource, sequence };
        refs.push(Some(r));
        last = Some((s, r));
    }
    c.created.clear();
    let fates = if postgres { crate::pg_ingest::insert_rows(tx, c, spans, &refs)? } else { insert_rows(tx, c, spans, &refs)? };
    let mut links = Links::default();
    // The ledger position the rows were stored with; a span after events carried by earlier spans
    // of the batch gets the position it has in the batch, as when rows went in one by one.
    let stored_at = c.last_event;
    let mut positions: Vec<(i64, i64, i64)> = Vec::new();
    for (((s, r), fate), &b) in spans.iter_mut().zip(&refs).zip(fates).zip(&owner) {
        let Some(r) = r else { continue };
        let out = &mut outs[b];
        match fate {
            Fate::Stored => {}
            Fate::Duplicate => {
                out.duplicates += 1;
                continue;
            }
            Fate::Refused(why) => {
                out.rejected.push(why);
                continue;
            }
        }
        out.stored += 1;
        g.counts.spans += 1;
        let t = s.triplet.as_ref();
        if let (Some(t), Some(seq)) = (t, r.sequence) {
            if t.has_immediate && c.last_event != stored_at {
                positions.push((c.last_event, r.trace, i64::from_be_bytes(s.span_id)));
            }
            if let Some(stored) = created.get_mut(&seq) {
                *stored = true;
            }
            g.counts.triplets += 1;
            g.dirty.insert(seq);
            let a = g.aggs.entry(seq).or_default();
            a.count += 1;
            a.indexed += i64::from(t.seq_index.is_some());
            a.first = a.first.min(t.ts_us);
            a.last = a.last.max(t.ts_us);
            a.ended |= t.seq_end;
            a.local += i64::from(t.has_immediate);
            if a.rollout.is_none() {
                a.rollout.clone_from(&t.rollout);
            }
            if let Some(role) = &t.role
                && !known_link(&mut c.role_links, seq, role)
            {
                links.roles.push((role.clone(), seq));
            }
            if let Some(task) = &t.task_id
                && !known_link(&mut c.task_links, seq, task)
            {
                links.tasks.push((task.clone(), seq));
            }
            if !c.pending.is_empty() {
                let key = canonical_triplet_id(&t.triplet_id);
                if c.pending.remove(key.as_ref()) {
                    tx.prepare_cached("UPDATE reward_events SET seq_key = ?1 WHERE target_triplet = ?2 AND seq_key IS NULL")?
                        .execute(params![t.sequence_id, key.as_ref()])?;
                    ledger::recount_sequence_events(tx, seq)?;
                }
            }
            for rw in &s.rewards {
                let (target_triplet, target_sequence, strategy) = match &rw.target {
                    SpanRewardTarget::Triplet => (Some(t.triplet_id.as_str()), None, None),
                    SpanRewardTarget::Sequence(st) => (None, Some(t.sequence_id.as_str()), Some(st)),
                };
                let reward_id = format!("span:{}{}:{}", to_hex(&s.trace_id), to_hex(&s.span_id), rw.ordinal);
                let row = EventRow {
                    target_triplet,
                    target_sequence,
                    strategy,
                    ..EventRow::carried(&reward_id, &t.sequence_id, rw.value, &rw.source, rw.reason.as_deref(), rw.at)
                };
                ledger::append_event(tx, c, g, &row)?;
            }
        }
        if let Some(a) = s.annotation.take() {
            let id = format!("span:{}{}:annotation", to_hex(&s.trace_id), to_hex(&s.span_id));
            annotations.push((r.trace, s.trace_id, a, id));
        }
    }
    for (at, trace, span_id) in positions {
        tx.prepare_cached("UPDATE spans SET ledger_after = ?1 WHERE trace_ref = ?2 AND span_id = ?3")?.execute(params![at, trace, span_id])?;
    }
    // A sequence made for refused spans alone is not kept.
    for (seq, stored) in created {
        if !stored {
            tx.prepare_cached("DELETE FROM sequences WHERE id = ?1 AND triplet_count = 0")?.execute(params![seq])?;
            c.sequences.retain(|_, id| *id != seq);
            g.counts.sequences = g.counts.sequences.saturating_sub(1);
        }
    }
    let added = if postgres { crate::pg_ingest::insert_links(tx, &links, &g.new_sequences)? } else { insert_links(tx, &links)? };
    if c.task_events > 0 {
        for (task, seq) in added {
            if ledger::task_has_events(tx, &task)? {
                tx.prepare_cached("UPDATE sequences SET task_events = 1 WHERE id = ?1")?.execute(params![seq])?;
            }
        }
    }
    for (tref, trace_id, a, reward_id) in annotations {
        // The latest LLM-call triplet of the trace that ended at or before the reward span started.
        let target: Option<(Option<String>, i64, String)> = tx
            .prepare_cached(
                "SELECT s.triplet_id, s.span_id, q.sequence_id FROM spans s JOIN sequences q ON q.id = s.seq_ref
                 WHERE s.trace_ref = ?1 AND s.llm = 1 AND s.end_ns <= ?2 ORDER BY s.end_ns DESC, s.id DESC LIMIT 1",
            )?
            .query_opt(params![tref, a.start_time_unix_nano as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let Some((explicit, span_id, sequence_id)) = target else {
            // Rate-limited: the first ten, then one in a thousand.
            let n = UNJOINED_ANNOTATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < 10 || n % 1000 == 0 {
                tracing::warn!(trace_id = %to_hex(&trace_id), unjoined_total = n + 1,
                    "agentlightning reward span has no earlier LLM-call triplet in its trace; the span is stored, no reward event is made");
            }
            continue;
        };
        let triplet_id = explicit.unwrap_or_else(|| rltrace_core::ids::default_triplet_id(&trace_id, &span_id.to_be_bytes()));
        let at = rltrace_core::time::nanos_to_micros(a.start_time_unix_nano);
        let row = EventRow {
            target_triplet: Some(&triplet_id),
            ..EventRow::carried(&reward_id, &sequence_id, a.value, "agentlightning", a.name.as_deref(), at)
        };
        ledger::append_event(tx, c, g, &row)?;
    }
    Ok(outs)
}

/// The end of a group's writes to its sequences (SQLite; PostgreSQL's is
/// `pg_ingest::flush_group`): the aggregates, then the rewarded counts of the sequences it
/// changed; returns the change of the store's rewarded total.
pub(crate) fn flush_group(tx: &dyn Sql, aggs: &HashMap<i64, SeqAgg>, dirty: &HashSet<i64>) -> Result<i64, StoreError> {
    let mut flushed = flush_aggs(tx, aggs)?;
    let mut delta = 0i64;
    let mut ids: Vec<i64> = dirty.iter().copied().collect();
    ids.sort_unstable();
    let mut changed = Vec::new();
    for seq in ids {
        let (counts, stored) = match flushed.remove(&seq) {
            Some(c) => c,
            None => crate::rewarded::stored_counts(tx, seq)?,
        };
        let now = crate::rewarded::count_now(tx, seq, &counts)?;
        if now != stored {
            changed.push((seq, now));
            delta += now - stored;
        }
    }
    crate::rewarded::set_counts(tx, &changed)?;
    Ok(delta)
}

/// Write the group's per-sequence aggregates; returns each sequence's counts as they are then
/// (with its stored rewarded count), so recounting needs no second read.
fn flush_aggs(
    tx: &dyn Sql,
    aggs: &HashMap<i64, SeqAgg>,
) -> Result<HashMap<i64, (rltrace_core::sequence::SequenceCounts, i64)>, StoreError> {
    let mut stmt = tx.prepare_cached(format!(
        "UPDATE sequences SET triplet_count = triplet_count + ?1, indexed_count = indexed_count + ?2,
           first_us = min(coalesce(first_us, ?3), ?3), last_us = max(coalesce(last_us, ?4), ?4),
           ended = max(ended, ?5), local_rewards = local_rewards + ?6,
           attempt_id = CASE WHEN rollout_id IS NULL THEN ?9 ELSE attempt_id END, rollout_id = coalesce(rollout_id, ?8)
         WHERE id = ?7 RETURNING {}",
        crate::rows::COUNT_COLS
    ))?;
    let mut out = HashMap::with_capacity(aggs.len());
    for (id, a) in aggs {
        let link = a.rollout.as_ref();
        let counts = stmt.query_row(
            params![a.count, a.indexed, a.first, a.last, a.ended, a.local, id, link.map(|l| l.rollout_id.as_str()), link.map(|l| l.attempt_id.as_str())],
            |r| crate::rows::seq_counts(r, 0),
        )?;
        out.insert(*id, counts);
    }
    Ok(out)
}

//! Decoding stored rows into the core's types: sequence rows, triplet rows, ledger events.

use std::collections::BTreeMap;

use rltrace_core::ids::default_triplet_id;
use rltrace_core::reward::{RewardEvent, RewardTarget, Strategy, Valuation};
use rltrace_core::sequence::{SequenceCounts, StoredTriplet};
use crate::db::{Row, Sql, SqlExt, params};

use crate::StoreError;

/// A sequence row.
#[derive(Debug, Clone)]
pub(crate) struct SeqInfo {
    pub(crate) id: i64,
    pub(crate) sequence_id: String,
    pub(crate) last_us: Option<i64>,
    pub(crate) ended: bool,
    pub(crate) reward_events: i64,
    pub(crate) terminal_events: i64,
    pub(crate) task_events: bool,
    pub(crate) triplet_count: i64,
    pub(crate) rollout: Option<rltrace_core::triplet::RolloutLink>,
}

impl SeqInfo {
    /// Whether defects by task id may reach the sequence or events reach it through its id.
    pub(crate) fn has_events(&self) -> bool {
        self.reward_events > 0 || self.task_events
    }
}

pub(crate) const SEQ_COLS: &str = "id, sequence_id, last_us, ended, reward_events, terminal_events, task_events, triplet_count, rollout_id, attempt_id";

pub(crate) fn seq_info(r: &Row) -> Result<SeqInfo, StoreError> {
    Ok(SeqInfo {
        id: r.get(0)?,
        sequence_id: r.get(1)?,
        last_us: r.get(2)?,
        ended: r.get::<_, i64>(3)? != 0,
        reward_events: r.get(4)?,
        terminal_events: r.get(5)?,
        task_events: r.get::<_, i64>(6)? != 0,
        triplet_count: r.get(7)?,
        rollout: match (r.get::<_, Option<String>>(8)?, r.get::<_, Option<String>>(9)?) {
            (Some(rollout_id), Some(attempt_id)) => Some(rltrace_core::triplet::RolloutLink { rollout_id, attempt_id }),
            _ => None,
        },
    })
}

/// The counts of [`rltrace_core::sequence::rewarded_from_counts`], as stored.
pub(crate) const COUNT_COLS: &str = "triplet_count, local_rewards, reward_events, covering_events, terminal_events, settled, task_events, rewarded_count";

pub(crate) fn seq_counts(r: &Row, offset: usize) -> Result<(SequenceCounts, i64), StoreError> {
    Ok((
        SequenceCounts {
            triplets: r.get(offset)?,
            immediate: r.get(offset + 1)?,
            events: r.get(offset + 2)?,
            covering: r.get(offset + 3)?,
            terminal: r.get(offset + 4)?,
            fallback: r.get::<_, i64>(offset + 5)? != 0,
            task_events: r.get::<_, i64>(offset + 6)? != 0,
        },
        r.get(offset + 7)?,
    ))
}

/// Columns of a triplet row of `spans s`; `{full}` adds state and action. The row's trace comes
/// as its key, and [`with_trace_ids`] looks the distinct keys up once: a lookup for each row in
/// the statement (a subquery per row) was half of reading a 10,000-triplet sequence on
/// PostgreSQL, whose triplets mostly share a few traces (and a join with `traces` was planned as
/// a hash of the whole table before its statistics were gathered).
pub(crate) fn row_cols(full: bool) -> String {
    let payload = if full { "s.state, s.action" } else { "'', ''" };
    format!(
        "s.id, s.trace_ref, s.span_id, s.triplet_id, s.seq_index, s.ts_us, s.start_ns, {payload}, s.role,
         s.reward, s.reward_source, s.reward_components, s.propensity, s.seq_end, s.task_id, s.phase, s.sampling_probability,
         s.ledger_after"
    )
}

/// A triplet row as read, before its trace id is known.
pub(crate) struct RowRead {
    trace_ref: i64,
    /// The explicit triplet id, or none for the default one (made from the trace and span ids).
    explicit: bool,
    triplet: StoredTriplet,
}

pub(crate) fn stored_triplet(r: &mut Row, offset: usize) -> Result<RowRead, StoreError> {
    let explicit: Option<String> = r.take_text(offset + 3)?;
    let components = match r.take_text(offset + 12)? {
        Some(c) => serde_json::from_str(&c).map_err(|e| StoreError::Corrupt(format!("reward components: {e}")))?,
        None => BTreeMap::new(),
    };
    Ok(RowRead {
        trace_ref: r.get(offset + 1)?,
        explicit: explicit.is_some(),
        triplet: StoredTriplet {
            row: r.get(offset)?,
            triplet_id: explicit.unwrap_or_default(),
            trace_id: [0; 16],
            span_id: r.get::<_, i64>(offset + 2)?.to_be_bytes(),
            seq_index: r.get(offset + 4)?,
            ts_us: r.get(offset + 5)?,
            start_ns: r.get(offset + 6)?,
            state: r.take_text(offset + 7)?.unwrap_or_default(),
            action: r.take_text(offset + 8)?.unwrap_or_default(),
            role: r.take_text(offset + 9)?,
            reward: r.get(offset + 10)?,
            reward_source: r.take_text(offset + 11)?,
            components,
            propensity: r.get(offset + 13)?,
            seq_end: r.get::<_, Option<i64>>(offset + 14)?.unwrap_or(0) != 0,
            task_id: r.take_text(offset + 15)?,
            phase: r.take_text(offset + 16)?,
            sampling_probability: r.get(offset + 17)?,
            ledger_after: r.get::<_, Option<i64>>(offset + 18)?.unwrap_or(0),
        },
    })
}

/// The rows' trace ids, each distinct trace looked up once in one statement, and the default
/// triplet ids made from them; `key` is carried through (a row's sequence, or nothing).
pub(crate) fn with_trace_ids<K>(conn: &dyn Sql, rows: Vec<(K, RowRead)>) -> Result<Vec<(K, StoredTriplet)>, StoreError> {
    let mut refs: Vec<i64> = rows.iter().map(|(_, r)| r.trace_ref).collect();
    refs.sort_unstable();
    refs.dedup();
    let mut ids: std::collections::HashMap<i64, [u8; 16]> = std::collections::HashMap::with_capacity(refs.len());
    if !refs.is_empty() {
        let json = serde_json::to_string(&refs).map_err(|e| StoreError::Failed(e.to_string()))?;
        let mut stmt = conn.prepare_cached("SELECT id, trace_id FROM traces WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?1))")?;
        let mut q = stmt.query(params![json])?;
        while let Some(r) = q.next()? {
            let trace_id: [u8; 16] = r.blob(1).and_then(|b| b.try_into().ok()).ok_or_else(|| StoreError::Corrupt("trace id".into()))?;
            ids.insert(r.get(0)?, trace_id);
        }
    }
    rows.into_iter()
        .map(|(k, RowRead { trace_ref, explicit, mut triplet })| {
            triplet.trace_id = *ids.get(&trace_ref).ok_or_else(|| StoreError::Corrupt(format!("trace row {trace_ref} of span row {} is gone", triplet.row)))?;
            if !explicit {
                triplet.triplet_id = default_triplet_id(&triplet.trace_id, &triplet.span_id);
            }
            Ok((k, triplet))
        })
        .collect()
}

/// ` AND {column} <= {max}` as SQL text, nothing for no bound (`i64::MAX`).
fn bound(column: &str, max: i64) -> String {
    if max == i64::MAX { String::new() } else { format!(" AND {column} <= {max}") }
}

/// The rows of one sequence, in storage order, up to the span watermark `max_row`.
pub(crate) fn rows_of(conn: &dyn Sql, seq_ref: i64, full: bool, max_row: i64) -> Result<Vec<StoredTriplet>, StoreError> {
    // The watermark is written into the statement, not bound: SQLite (built with STAT4)
    // re-prepares a statement whenever a parameter compared with an indexed column is bound
    // again, which cost an export more than its reads.
    let mut stmt = conn.prepare_cached(format!(
        "SELECT {} FROM spans s WHERE s.seq_ref = ?1{}",
        row_cols(full),
        bound("s.id", max_row)
    ))?;
    let mut rows = stmt.query(params![seq_ref])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(((), stored_triplet(r, 0)?));
    }
    Ok(with_trace_ids(conn, out)?.into_iter().map(|(_, t)| t).collect())
}

pub(crate) const EVENT_SQL: &str = "SELECT e.id, e.reward_id, e.target_triplet, e.target_sequence, e.strategy, e.gamma, e.role, e.value,
    e.source, e.reason, e.created_us, e.idempotency_key, e.metadata,
    CASE WHEN e.target_triplet IS NOT NULL THEN (CASE WHEN e.seq_key IS NULL THEN 1 ELSE 0 END)
         WHEN e.target_task IS NOT NULL THEN 0
         WHEN EXISTS (SELECT 1 FROM sequences q WHERE q.sequence_id = e.target_sequence AND q.triplet_count > 0) THEN 0
         ELSE 1 END,
    e.target_task, e.valuation
  FROM reward_events e";

pub(crate) fn event_row(r: &Row) -> Result<RewardEvent, StoreError> {
    event_row_at(r, 0)
}

/// A ledger event whose columns start at `o`.
pub(crate) fn event_row_at(r: &Row, o: usize) -> Result<RewardEvent, StoreError> {
    let target_triplet: Option<String> = r.get(o + 2)?;
    let target_sequence: Option<String> = r.get(o + 3)?;
    let target_task: Option<String> = r.get(o + 14)?;
    let role: Option<String> = r.get(o + 6)?;
    let target = match (target_triplet, target_sequence, target_task) {
        (Some(triplet_id), _, _) => RewardTarget::Triplet { triplet_id },
        (None, Some(sequence_id), _) => {
            let name: Option<String> = r.get(o + 4)?;
            let strategy = Strategy::parse_stored(name.as_deref().unwrap_or("uniform"), r.get(o + 5)?, role.as_deref())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            RewardTarget::Sequence { sequence_id, strategy }
        }
        (None, None, Some(task_id)) => RewardTarget::Task { task_id, phase: role.unwrap_or_default() },
        (None, None, None) => return Err(StoreError::Corrupt("reward event without target".into())),
    };
    let valuation_text: Option<String> = r.get(o + 15)?;
    let valuation =
        Valuation::decode(valuation_text.as_deref()).ok_or_else(|| StoreError::Corrupt(format!("unknown valuation {valuation_text:?}")))?;
    let metadata: Option<String> = r.get(o + 12)?;
    Ok(RewardEvent {
        seq_no: r.get(o)?,
        reward_id: r.get(o + 1)?,
        target,
        value: r.get(o + 7)?,
        source: r.get(o + 8)?,
        reason: r.get(o + 9)?,
        created_at: r.get(o + 10)?,
        idempotency_key: r.get(o + 11)?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        pending: r.get::<_, i64>(o + 13)? != 0,
        valuation,
    })
}

/// One ledger event by its rowid.
pub(crate) fn event_by_rowid(conn: &dyn Sql, rowid: i64) -> Result<RewardEvent, StoreError> {
    let mut stmt = conn.prepare_cached(format!("{EVENT_SQL} WHERE e.id = ?1"))?;
    let mut rows = stmt.query(params![rowid])?;
    match rows.next()? {
        Some(r) => event_row(r),
        None => Err(StoreError::Corrupt(format!("reward event {rowid} vanished"))),
    }
}

/// The rows of several sequences (one query: SQLite re-prepares a statement each time a parameter
/// compared with an indexed column is bound again, so per-sequence queries cost more than their
/// reads), grouped by sequence row, up to the span watermark `max_row`.
pub(crate) fn rows_of_many(conn: &dyn Sql, seq_refs: &[i64], full: bool, max_row: i64) -> Result<std::collections::HashMap<i64, Vec<StoredTriplet>>, StoreError> {
    let ids = serde_json::to_string(seq_refs).map_err(|e| StoreError::Failed(e.to_string()))?;
    let mut stmt = conn.prepare_cached(format!(
        "SELECT s.seq_ref, {} FROM spans s
         WHERE s.seq_ref IN (SELECT CAST(value AS BIGINT) FROM json_each(?1)){}",
        row_cols(full),
        bound("s.id", max_row)
    ))?;
    let mut rows = stmt.query(params![ids])?;
    let mut read = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        read.push((seq, stored_triplet(r, 1)?));
    }
    let mut out: std::collections::HashMap<i64, Vec<StoredTriplet>> = std::collections::HashMap::new();
    for (seq, t) in with_trace_ids(conn, read)? {
        out.entry(seq).or_default().push(t);
    }
    Ok(out)
}

/// The ledger events keyed to several sequences (by name), in ledger order, grouped by sequence,
/// up to the ledger watermark `max_event`.
pub(crate) fn keyed_events_of_many(conn: &dyn Sql, names: &[&str], max_event: i64) -> Result<std::collections::HashMap<String, Vec<RewardEvent>>, StoreError> {
    let keys = serde_json::to_string(names).map_err(|e| StoreError::Failed(e.to_string()))?;
    let sql = EVENT_SQL.replacen("SELECT e.id,", "SELECT e.seq_key, e.id,", 1);
    let mut stmt = conn.prepare_cached(format!(
        "SELECT * FROM ({sql} WHERE e.seq_key IN (SELECT value FROM json_each(?1)){}) AS keyed ORDER BY 2",
        bound("e.id", max_event)
    ))?;
    let mut rows = stmt.query(params![keys])?;
    let mut out: std::collections::HashMap<String, Vec<RewardEvent>> = std::collections::HashMap::new();
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        out.entry(key).or_default().push(event_row_at(r, 1)?);
    }
    Ok(out)
}

/// Defects by task id that may reach a sequence (when any may), merged into `events` in ledger
/// order.
pub(crate) fn add_task_events(conn: &dyn Sql, info: &SeqInfo, rows: &[StoredTriplet], max_event: i64, events: &mut Vec<RewardEvent>) -> Result<(), StoreError> {
    if !info.task_events {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(format!("{EVENT_SQL} WHERE e.target_task = ?1{} ORDER BY e.id", bound("e.id", max_event)))?;
    for task in rltrace_core::reward::candidate_tasks(&info.sequence_id, rows.iter().map(|r| r.task_id.as_deref())) {
        let mut q = stmt.query(params![task])?;
        while let Some(r) = q.next()? {
            events.push(event_row(r)?);
        }
    }
    events.sort_by_key(|e| e.seq_no);
    events.dedup_by_key(|e| e.seq_no);
    Ok(())
}

/// The ledger events that may reach a sequence, in ledger order, up to the ledger watermark
/// `max_event`: those keyed to it, and defects by task id when some may reach it.
pub(crate) fn events_for(conn: &dyn Sql, info: &SeqInfo, rows: &[StoredTriplet], max_event: i64) -> Result<Vec<RewardEvent>, StoreError> {
    let mut events = Vec::new();
    if info.reward_events > 0 {
        let mut stmt = conn.prepare_cached(format!("{EVENT_SQL} WHERE e.seq_key = ?1{} ORDER BY e.id", bound("e.id", max_event)))?;
        let mut q = stmt.query(params![&info.sequence_id])?;
        while let Some(r) = q.next()? {
            events.push(event_row(r)?);
        }
    }
    add_task_events(conn, info, rows, max_event, &mut events)?;
    Ok(events)
}

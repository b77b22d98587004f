//! Decoding stored rows into the core's types: sequence rows, triplet rows, ledger events.

use std::collections::BTreeMap;

use rltrace_core::ids::default_triplet_id;
use rltrace_core::reward::{RewardEvent, RewardTarget, Strategy, Valuation};
use rltrace_core::sequence::{SequenceCounts, StoredTriplet};
use rusqlite::{Connection, Row};

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
}

impl SeqInfo {
    /// Whether defects by task id may reach the sequence or events reach it through its id.
    pub(crate) fn has_events(&self) -> bool {
        self.reward_events > 0 || self.task_events
    }
}

pub(crate) const SEQ_COLS: &str = "id, sequence_id, last_us, ended, reward_events, terminal_events, task_events";

pub(crate) fn seq_info(r: &Row<'_>) -> rusqlite::Result<SeqInfo> {
    Ok(SeqInfo {
        id: r.get(0)?,
        sequence_id: r.get(1)?,
        last_us: r.get(2)?,
        ended: r.get::<_, i64>(3)? != 0,
        reward_events: r.get(4)?,
        terminal_events: r.get(5)?,
        task_events: r.get::<_, i64>(6)? != 0,
    })
}

/// The counts of [`rltrace_core::sequence::rewarded_from_counts`], as stored.
pub(crate) const COUNT_COLS: &str = "triplet_count, local_rewards, reward_events, covering_events, terminal_events, settled, task_events, rewarded_count";

pub(crate) fn seq_counts(r: &Row<'_>, offset: usize) -> rusqlite::Result<(SequenceCounts, i64)> {
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

/// Columns of a triplet row; `{full}` adds state and action.
pub(crate) fn row_cols(full: bool) -> String {
    let payload = if full { "s.state, s.action" } else { "'', ''" };
    format!(
        "s.id, t.trace_id, s.span_id, s.triplet_id, s.seq_index, s.ts_us, s.start_ns, {payload}, s.role,
         s.reward, s.reward_source, s.reward_components, s.propensity, s.seq_end, s.task_id, s.phase, s.sampling_probability,
         s.ledger_after"
    )
}

pub(crate) fn stored_triplet(r: &Row<'_>, offset: usize) -> Result<StoredTriplet, StoreError> {
    let trace_blob: Vec<u8> = r.get(offset + 1)?;
    let trace_id: [u8; 16] = trace_blob.as_slice().try_into().map_err(|_| StoreError::Corrupt("trace id".into()))?;
    let span_id = r.get::<_, i64>(offset + 2)?.to_be_bytes();
    let explicit: Option<String> = r.get(offset + 3)?;
    let components: Option<String> = r.get(offset + 12)?;
    let components = match components {
        Some(c) => serde_json::from_str(&c).map_err(|e| StoreError::Corrupt(format!("reward components: {e}")))?,
        None => BTreeMap::new(),
    };
    Ok(StoredTriplet {
        row: r.get(offset)?,
        triplet_id: explicit.unwrap_or_else(|| default_triplet_id(&trace_id, &span_id)),
        trace_id,
        span_id,
        seq_index: r.get(offset + 4)?,
        ts_us: r.get(offset + 5)?,
        start_ns: r.get(offset + 6)?,
        state: r.get(offset + 7)?,
        action: r.get(offset + 8)?,
        role: r.get(offset + 9)?,
        reward: r.get(offset + 10)?,
        reward_source: r.get(offset + 11)?,
        components,
        propensity: r.get(offset + 13)?,
        seq_end: r.get::<_, Option<i64>>(offset + 14)?.unwrap_or(0) != 0,
        task_id: r.get(offset + 15)?,
        phase: r.get(offset + 16)?,
        sampling_probability: r.get(offset + 17)?,
        ledger_after: r.get::<_, Option<i64>>(offset + 18)?.unwrap_or(0),
    })
}

/// The rows of one sequence, in storage order, up to the span watermark `max_row`.
pub(crate) fn rows_of(conn: &Connection, seq_ref: i64, full: bool, max_row: i64) -> Result<Vec<StoredTriplet>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM spans s JOIN traces t ON t.id = s.trace_ref WHERE s.seq_ref = ?1 AND s.id <= ?2",
        row_cols(full)
    ))?;
    let mut rows = stmt.query(rusqlite::params![seq_ref, max_row])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(stored_triplet(r, 0)?);
    }
    Ok(out)
}

pub(crate) const EVENT_SQL: &str = "SELECT e.id, e.reward_id, e.target_triplet, e.target_sequence, e.strategy, e.gamma, e.role, e.value,
    e.source, e.reason, e.created_us, e.idempotency_key, e.metadata,
    CASE WHEN e.target_triplet IS NOT NULL THEN e.seq_key IS NULL
         WHEN e.target_task IS NOT NULL THEN 0
         ELSE NOT EXISTS (SELECT 1 FROM sequences q WHERE q.sequence_id = e.target_sequence AND q.triplet_count > 0) END,
    e.target_task, e.valuation
  FROM reward_events e";

pub(crate) fn event_row(r: &Row<'_>) -> Result<RewardEvent, StoreError> {
    let target_triplet: Option<String> = r.get(2)?;
    let target_sequence: Option<String> = r.get(3)?;
    let target_task: Option<String> = r.get(14)?;
    let role: Option<String> = r.get(6)?;
    let target = match (target_triplet, target_sequence, target_task) {
        (Some(triplet_id), _, _) => RewardTarget::Triplet { triplet_id },
        (None, Some(sequence_id), _) => {
            let name: Option<String> = r.get(4)?;
            let strategy = Strategy::parse_stored(name.as_deref().unwrap_or("uniform"), r.get(5)?, role.as_deref())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            RewardTarget::Sequence { sequence_id, strategy }
        }
        (None, None, Some(task_id)) => RewardTarget::Task { task_id, phase: role.unwrap_or_default() },
        (None, None, None) => return Err(StoreError::Corrupt("reward event without target".into())),
    };
    let valuation_text: Option<String> = r.get(15)?;
    let valuation =
        Valuation::decode(valuation_text.as_deref()).ok_or_else(|| StoreError::Corrupt(format!("unknown valuation {valuation_text:?}")))?;
    let metadata: Option<String> = r.get(12)?;
    Ok(RewardEvent {
        seq_no: r.get(0)?,
        reward_id: r.get(1)?,
        target,
        value: r.get(7)?,
        source: r.get(8)?,
        reason: r.get(9)?,
        created_at: r.get(10)?,
        idempotency_key: r.get(11)?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        pending: r.get::<_, i64>(13)? != 0,
        valuation,
    })
}

/// One ledger event by its rowid.
pub(crate) fn event_by_rowid(conn: &Connection, rowid: i64) -> Result<RewardEvent, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{EVENT_SQL} WHERE e.id = ?1"))?;
    let mut rows = stmt.query([rowid])?;
    match rows.next()? {
        Some(r) => event_row(r),
        None => Err(StoreError::Corrupt(format!("reward event {rowid} vanished"))),
    }
}

/// The ledger events that may reach a sequence, in ledger order, up to the ledger watermark
/// `max_event`: those keyed to it, and defects by task id when some may reach it.
pub(crate) fn events_for(conn: &Connection, info: &SeqInfo, rows: &[StoredTriplet], max_event: i64) -> Result<Vec<RewardEvent>, StoreError> {
    let mut events = Vec::new();
    if info.reward_events > 0 {
        let mut stmt = conn.prepare_cached(&format!("{EVENT_SQL} WHERE e.seq_key = ?1 AND e.id <= ?2 ORDER BY e.id"))?;
        let mut q = stmt.query(rusqlite::params![info.sequence_id, max_event])?;
        while let Some(r) = q.next()? {
            events.push(event_row(r)?);
        }
    }
    if info.task_events {
        let mut stmt = conn.prepare_cached(&format!("{EVENT_SQL} WHERE e.target_task = ?1 AND e.id <= ?2 ORDER BY e.id"))?;
        for task in rltrace_core::reward::candidate_tasks(&info.sequence_id, rows.iter().map(|r| r.task_id.as_deref())) {
            let mut q = stmt.query(rusqlite::params![task, max_event])?;
            while let Some(r) = q.next()? {
                events.push(event_row(r)?);
            }
        }
        events.sort_by_key(|e| e.seq_no);
        events.dedup_by_key(|e| e.seq_no);
    }
    Ok(events)
}

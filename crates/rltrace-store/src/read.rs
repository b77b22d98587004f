//! Reads: sequences and triplets with their effective rewards, traces in tree order, statistics,
//! and the streamed export. Effective rewards are derived here from the ledger at read time, one
//! sequence at a time, so a changed policy applies to everything already stored.

use std::collections::{BTreeMap, HashMap};

use rltrace_core::Policy;
use rltrace_core::export::TripletView;
use rltrace_core::ids::{default_triplet_id, to_hex};
use rltrace_core::reward::{Immediate, RewardEvent, RewardInput, RewardTarget, Strategy, Valuation, candidate_tasks, effective_rewards, reaches};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::StoreError;

/// Rows scanned at most by one list request that filters on derived values.
const SCAN_BUDGET: usize = 20_000;

/// Row counts kept by the writer in the same transactions as the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Spans stored.
    pub spans: u64,
    /// Triplets stored.
    pub triplets: u64,
    /// Sequences with at least one triplet.
    pub sequences: u64,
    /// Reward events in the ledger.
    pub reward_events: u64,
    /// Ledger events targeting a task (defects by task id).
    pub task_events: u64,
}

/// Store-wide counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Spans stored.
    pub spans: u64,
    /// Triplets stored.
    pub triplets: u64,
    /// Sequences with at least one triplet.
    pub sequences: u64,
    /// Triplets with an effective reward under the policy.
    pub rewarded_triplets: u64,
    /// Reward events in the ledger (including rewards carried by spans).
    pub reward_events: u64,
}

/// One page of a list; `next` is the position to continue from.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there may be one.
    pub next: Option<i64>,
}

/// Filters of the sequence list.
#[derive(Debug, Clone, Default)]
pub struct SequenceFilter {
    /// Some triplet's `state.agent_role`.
    pub role: Option<String>,
    /// Last triplet at or after (microseconds).
    pub since: Option<i64>,
    /// First triplet at or before (microseconds).
    pub until: Option<i64>,
    /// Some triplet has an effective reward.
    pub rewarded: Option<bool>,
    /// The sequence is complete.
    pub complete: Option<bool>,
}

/// Filters of the triplet list and the export.
#[derive(Debug, Clone, Default)]
pub struct TripletFilter {
    /// Only this sequence.
    pub sequence_id: Option<String>,
    /// `state.agent_role`.
    pub role: Option<String>,
    /// Has an effective reward (or not).
    pub rewarded: Option<bool>,
    /// Timestamp at or after (microseconds).
    pub since: Option<i64>,
    /// Timestamp at or before (microseconds).
    pub until: Option<i64>,
    /// Its sequence is complete (or not).
    pub complete: Option<bool>,
}

impl TripletFilter {
    fn keeps(&self, t: &TripletView, complete: bool) -> bool {
        self.role.as_deref().is_none_or(|r| t.role.as_deref() == Some(r))
            && self.since.is_none_or(|s| t.timestamp >= s)
            && self.until.is_none_or(|u| t.timestamp <= u)
            && self.rewarded.is_none_or(|r| t.effective.reward.is_some() == r)
            && self.complete.is_none_or(|c| c == complete)
    }
}

/// A sequence in a list.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceSummary {
    /// Sequence id.
    pub sequence_id: String,
    /// Number of triplets.
    pub triplet_count: i64,
    /// Earliest triplet timestamp (microseconds).
    pub first_at: Option<i64>,
    /// Latest triplet timestamp (microseconds).
    pub last_at: Option<i64>,
    /// Some triplet has an effective reward.
    pub rewarded: bool,
    /// Ended by `rl.sequence_end` or by a terminal-type reward.
    pub complete: bool,
}

/// A sequence with its triplets in order and its ledger.
#[derive(Debug, Clone)]
pub struct SequenceDetail {
    /// The summary.
    pub summary: SequenceSummary,
    /// Triplets in sequence order.
    pub triplets: Vec<TripletView>,
    /// Every ledger event of the sequence and its triplets.
    pub ledger: Vec<RewardEvent>,
}

/// A triplet with the ledger events that reach it.
#[derive(Debug, Clone)]
pub struct TripletDetail {
    /// The triplet.
    pub triplet: TripletView,
    /// Events reaching it.
    pub ledger: Vec<RewardEvent>,
}

/// A span of a trace, as stored.
#[derive(Debug, Clone)]
pub struct SpanOut {
    /// Trace id (hex).
    pub trace_id: String,
    /// Span id (hex).
    pub span_id: String,
    /// Parent span id (hex).
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// OTLP kind number.
    pub kind: i32,
    /// Start (ns since epoch).
    pub start_ns: i64,
    /// End (ns since epoch).
    pub end_ns: i64,
    /// OTLP status code number.
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// Attributes, JSON object text.
    pub attributes: String,
    /// Events, JSON array text.
    pub events: String,
    /// Resource attributes, JSON object text.
    pub resource: String,
    /// Depth in the tree (0 for roots).
    pub depth: usize,
    /// Triplet id, when the span is a triplet.
    pub triplet_id: Option<String>,
}

/// Counts of an export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportCounts {
    /// Triplets written.
    pub triplets: u64,
    /// Sequences with at least one triplet written.
    pub sequences: u64,
    /// Triplets written with an effective reward.
    pub rewarded: u64,
}

#[derive(Debug, Clone)]
struct SeqInfo {
    id: i64,
    sequence_id: String,
    triplet_count: i64,
    first_us: Option<i64>,
    last_us: Option<i64>,
    ended: bool,
    local_rewards: i64,
    reward_events: i64,
}

impl SeqInfo {
    fn may_be_rewarded(&self, task_events: bool) -> bool {
        self.local_rewards > 0 || self.reward_events > 0 || task_events
    }
}

#[derive(Debug)]
struct SeqRow {
    rowid: i64,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    triplet_id: String,
    seq_index: Option<i64>,
    ts_us: i64,
    start_ns: i64,
    state: String,
    action: String,
    role: Option<String>,
    task_id: Option<String>,
    phase: Option<String>,
    reward: Option<f64>,
    reward_source: Option<String>,
    components: BTreeMap<String, f64>,
    propensity: Option<f64>,
    sampling_probability: Option<f64>,
    seq_end: bool,
}

/// A sequence with effective rewards computed.
struct Computed {
    info: SeqInfo,
    rowids: Vec<i64>,
    views: Vec<TripletView>,
    events: Vec<RewardEvent>,
    /// For each event, the positions of the triplets it reaches (when loaded with reach).
    reach: Vec<Vec<usize>>,
    complete: bool,
}

impl Computed {
    fn rewarded(&self) -> bool {
        self.views.iter().any(|v| v.effective.reward.is_some())
    }

    fn summary(&self) -> SequenceSummary {
        summary(&self.info, self.rewarded(), self.complete)
    }
}

fn summary(info: &SeqInfo, rewarded: bool, complete: bool) -> SequenceSummary {
    SequenceSummary {
        sequence_id: info.sequence_id.clone(),
        triplet_count: info.triplet_count,
        first_at: info.first_us,
        last_at: info.last_us,
        rewarded,
        complete,
    }
}

const SEQ_COLS: &str = "id, sequence_id, triplet_count, first_us, last_us, ended, local_rewards, reward_events";

fn seq_info(r: &Row<'_>) -> rusqlite::Result<SeqInfo> {
    Ok(SeqInfo {
        id: r.get(0)?,
        sequence_id: r.get(1)?,
        triplet_count: r.get(2)?,
        first_us: r.get(3)?,
        last_us: r.get(4)?,
        ended: r.get::<_, i64>(5)? != 0,
        local_rewards: r.get(6)?,
        reward_events: r.get(7)?,
    })
}

const ROW_COLS: &str = "s.id, t.trace_id, s.span_id, s.triplet_id, s.seq_index, s.ts_us, s.start_ns, s.state, s.action, s.role,
    s.reward, s.reward_source, s.reward_components, s.propensity, s.seq_end, s.task_id, s.phase, s.sampling_probability";

fn seq_row(r: &Row<'_>, offset: usize) -> Result<SeqRow, StoreError> {
    let trace_blob: Vec<u8> = r.get(offset + 1)?;
    let trace_id: [u8; 16] = trace_blob.as_slice().try_into().map_err(|_| StoreError::Corrupt("trace id".into()))?;
    let span_id = r.get::<_, i64>(offset + 2)?.to_be_bytes();
    let explicit: Option<String> = r.get(offset + 3)?;
    let components: Option<String> = r.get(offset + 12)?;
    let components = match components {
        Some(c) => serde_json::from_str(&c).map_err(|e| StoreError::Corrupt(format!("reward components: {e}")))?,
        None => BTreeMap::new(),
    };
    Ok(SeqRow {
        rowid: r.get(offset)?,
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
    })
}

const EVENT_SQL: &str = "SELECT e.id, e.reward_id, e.target_triplet, e.target_sequence, e.strategy, e.gamma, e.role, e.value,
    e.source, e.reason, e.created_us, e.idempotency_key, e.metadata,
    CASE WHEN e.target_triplet IS NOT NULL THEN e.seq_key IS NULL
         WHEN e.target_task IS NOT NULL THEN 0
         ELSE NOT EXISTS (SELECT 1 FROM sequences q WHERE q.sequence_id = e.target_sequence AND q.triplet_count > 0) END,
    e.target_task, e.valuation
  FROM reward_events e";

fn event_row(r: &Row<'_>) -> Result<RewardEvent, StoreError> {
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
    let valuation = Valuation::decode(valuation_text.as_deref())
        .ok_or_else(|| StoreError::Corrupt(format!("unknown valuation {valuation_text:?}")))?;
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

/// Read one ledger event by its rowid.
pub(crate) fn event_by_rowid(conn: &rusqlite::Connection, rowid: i64) -> Result<RewardEvent, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{EVENT_SQL} WHERE e.id = ?1"))?;
    let mut rows = stmt.query([rowid])?;
    match rows.next()? {
        Some(r) => event_row(r),
        None => Err(StoreError::Corrupt(format!("reward event {rowid} vanished"))),
    }
}

/// A read transaction: a consistent snapshot of the store.
pub struct ReadTx<'a> {
    tx: &'a Transaction<'a>,
    now: i64,
    task_events: std::cell::OnceCell<bool>,
}

impl<'a> ReadTx<'a> {
    pub(crate) fn new(tx: &'a Transaction<'a>, now: i64) -> ReadTx<'a> {
        ReadTx { tx, now, task_events: std::cell::OnceCell::new() }
    }

    /// Whether any ledger event targets a task (then every sequence may be reached by one).
    fn has_task_events(&self) -> Result<bool, StoreError> {
        if let Some(v) = self.task_events.get() {
            return Ok(*v);
        }
        let v = self.counts()?.task_events > 0;
        let _ = self.task_events.set(v);
        Ok(v)
    }

    /// Row counts (cheap: one row kept by the writer).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        Ok(self.tx.query_row("SELECT spans, triplets, sequences, reward_events, task_events FROM counters WHERE id = 1", [], |r| {
            Ok(Counts {
                spans: r.get::<_, i64>(0)? as u64,
                triplets: r.get::<_, i64>(1)? as u64,
                sequences: r.get::<_, i64>(2)? as u64,
                reward_events: r.get::<_, i64>(3)? as u64,
                task_events: r.get::<_, i64>(4)? as u64,
            })
        })?)
    }


    fn events_of(&self, sequence_id: &str) -> Result<Vec<RewardEvent>, StoreError> {
        let mut stmt = self.tx.prepare_cached(&format!("{EVENT_SQL} WHERE e.seq_key = ?1 ORDER BY e.id"))?;
        let mut rows = stmt.query([sequence_id])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(event_row(r)?);
        }
        Ok(out)
    }

    /// The ledger events that may reach a sequence: through its key, and defects by task id.
    fn events_for(&self, info: &SeqInfo, rows: &[SeqRow]) -> Result<Vec<RewardEvent>, StoreError> {
        let mut events = if info.reward_events > 0 { self.events_of(&info.sequence_id)? } else { Vec::new() };
        if self.has_task_events()? {
            let mut stmt = self.tx.prepare_cached(&format!("{EVENT_SQL} WHERE e.target_task = ?1 ORDER BY e.id"))?;
            for task in candidate_tasks(&info.sequence_id, rows.iter().map(|r| r.task_id.as_deref())) {
                let mut q = stmt.query([task])?;
                while let Some(r) = q.next()? {
                    events.push(event_row(r)?);
                }
            }
            events.sort_by_key(|e| e.seq_no);
        }
        Ok(events)
    }

    fn info_by_id(&self, id: i64) -> Result<Option<SeqInfo>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(&format!("SELECT {SEQ_COLS} FROM sequences WHERE id = ?1"))?
            .query_row([id], seq_info)
            .optional()?)
    }

    fn info_by_name(&self, sequence_id: &str) -> Result<Option<SeqInfo>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(&format!("SELECT {SEQ_COLS} FROM sequences WHERE sequence_id = ?1 AND triplet_count > 0"))?
            .query_row([sequence_id], seq_info)
            .optional()?)
    }

    fn rows_of(&self, seq_ref: i64) -> Result<Vec<SeqRow>, StoreError> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {ROW_COLS} FROM spans s JOIN traces t ON t.id = s.trace_ref WHERE s.seq_ref = ?1"
        ))?;
        let mut rows = stmt.query([seq_ref])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(seq_row(r, 0)?);
        }
        Ok(out)
    }

    fn load(&self, info: SeqInfo, policy: &Policy) -> Result<Computed, StoreError> {
        self.load_with(info, policy, false)
    }

    /// Load and compute a sequence; `with_reach` also records which triplets each event reaches
    /// (only a triplet's own ledger needs it).
    fn load_with(&self, info: SeqInfo, policy: &Policy, with_reach: bool) -> Result<Computed, StoreError> {
        let rows = self.rows_of(info.id)?;
        let events = self.events_for(&info, &rows)?;
        Ok(compute(info, rows, events, policy, self.now, with_reach))
    }

    /// Store-wide counts; `rewarded_triplets` is computed under `policy`: exactly, sequence by
    /// sequence, where ledger events reach a sequence; from the count of immediate rewards where
    /// none do (exact too, as long as the policy gives no source or component a zero weight).
    pub fn stats(&self, policy: &Policy) -> Result<Stats, StoreError> {
        let zero_weights = policy.has_zero_weights();
        let mut rewarded = 0u64;
        let condition = if self.has_task_events()? {
            "1"
        } else if zero_weights {
            "local_rewards > 0 OR reward_events > 0"
        } else {
            "reward_events > 0"
        };
        let mut stmt = self.tx.prepare(&format!("SELECT {SEQ_COLS} FROM sequences WHERE {condition}"))?;
        let infos = stmt.query_map([], seq_info)?.collect::<Result<Vec<_>, _>>()?;
        for info in infos {
            let c = self.load(info, policy)?;
            rewarded += c.views.iter().filter(|v| v.effective.reward.is_some()).count() as u64;
        }
        if !zero_weights && condition != "1" {
            let local: i64 = self.tx.query_row("SELECT coalesce(sum(local_rewards), 0) FROM sequences WHERE reward_events = 0", [], |r| r.get(0))?;
            rewarded += local as u64;
        }
        let c = self.counts()?;
        Ok(Stats { spans: c.spans, triplets: c.triplets, sequences: c.sequences, rewarded_triplets: rewarded, reward_events: c.reward_events })
    }

    /// A page of sequences in creation order, after `cursor`.
    pub fn sequences(&self, f: &SequenceFilter, cursor: Option<i64>, limit: usize, policy: &Policy) -> Result<Page<SequenceSummary>, StoreError> {
        let mut sql = format!("SELECT {SEQ_COLS} FROM sequences WHERE triplet_count > 0 AND id > ?1");
        if f.since.is_some() {
            sql.push_str(" AND last_us >= ?2");
        }
        if f.until.is_some() {
            sql.push_str(" AND first_us <= ?3");
        }
        if f.role.is_some() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM spans s WHERE s.seq_ref = sequences.id AND s.role = ?4)");
        }
        sql.push_str(" ORDER BY id LIMIT ?5");
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let mut items = Vec::new();
        let mut after = cursor.unwrap_or(0);
        let mut scanned = 0usize;
        let batch = (limit + 1).max(64);
        loop {
            let infos = stmt
                .query_map(params![after, f.since, f.until, f.role, batch as i64], seq_info)?
                .collect::<Result<Vec<_>, _>>()?;
            let exhausted = infos.len() < batch;
            for info in infos {
                after = info.id;
                scanned += 1;
                let s = if info.may_be_rewarded(self.has_task_events()?) {
                    self.load(info, policy)?.summary()
                } else {
                    let complete = info.ended || idle(&info, policy, self.now);
                    summary(&info, false, complete)
                };
                if f.rewarded.is_none_or(|r| r == s.rewarded) && f.complete.is_none_or(|c| c == s.complete) {
                    items.push(s);
                    if items.len() == limit {
                        return Ok(Page { items, next: Some(after) });
                    }
                }
            }
            if exhausted {
                return Ok(Page { items, next: None });
            }
            if scanned >= SCAN_BUDGET {
                return Ok(Page { items, next: Some(after) });
            }
        }
    }

    /// One sequence with its triplets in order and its ledger.
    pub fn sequence(&self, sequence_id: &str, policy: &Policy) -> Result<Option<SequenceDetail>, StoreError> {
        let Some(info) = self.info_by_name(sequence_id)? else { return Ok(None) };
        let c = self.load(info, policy)?;
        let summary = c.summary();
        Ok(Some(SequenceDetail { summary, triplets: c.views, ledger: c.events }))
    }

    /// A page of triplets. With a `sequence_id` filter they come in sequence order, otherwise in
    /// arrival order; either way the cursor is the row of the last triplet returned.
    pub fn triplets(&self, f: &TripletFilter, cursor: Option<i64>, limit: usize, policy: &Policy) -> Result<Page<TripletView>, StoreError> {
        if let Some(seq) = &f.sequence_id {
            let Some(info) = self.info_by_name(seq)? else { return Ok(Page { items: Vec::new(), next: None }) };
            let c = self.load(info, policy)?;
            let complete = c.complete;
            // The cursor is the row of the last triplet returned: the next page starts after it in
            // the sequence's order as it is now, so a triplet arriving meanwhile earlier in the
            // order does not make the page repeat one.
            let start = match cursor {
                None => 0,
                Some(row) => c.rowids.iter().position(|r| *r == row).map_or(c.rowids.len(), |p| p + 1),
            };
            let rowids = c.rowids;
            let mut items = Vec::new();
            for (pos, v) in c.views.into_iter().enumerate().skip(start) {
                if f.keeps(&v, complete) {
                    items.push(v);
                    if items.len() == limit {
                        return Ok(Page { items, next: Some(rowids[pos]) });
                    }
                }
            }
            return Ok(Page { items, next: None });
        }
        let mut sql = String::from("SELECT id, seq_ref FROM spans WHERE seq_ref IS NOT NULL AND id > ?1");
        if f.role.is_some() {
            sql.push_str(" AND role = ?2");
        }
        if f.since.is_some() {
            sql.push_str(" AND ts_us >= ?3");
        }
        if f.until.is_some() {
            sql.push_str(" AND ts_us <= ?4");
        }
        sql.push_str(" ORDER BY id LIMIT ?5");
        let mut stmt = self.tx.prepare_cached(&sql)?;
        let mut cache: HashMap<i64, Computed> = HashMap::new();
        let mut items = Vec::new();
        let mut after = cursor.unwrap_or(0);
        let mut scanned = 0usize;
        let batch = (limit + 1).max(64);
        loop {
            let ids = stmt
                .query_map(params![after, f.role, f.since, f.until, batch as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let exhausted = ids.len() < batch;
            for (rowid, seq_ref) in ids {
                after = rowid;
                scanned += 1;
                if !cache.contains_key(&seq_ref) {
                    if cache.len() > 256 {
                        cache.clear();
                    }
                    let Some(info) = self.info_by_id(seq_ref)? else { continue };
                    cache.insert(seq_ref, self.load(info, policy)?);
                }
                let Some(c) = cache.get(&seq_ref) else { continue };
                let Some(pos) = c.rowids.iter().position(|r| *r == rowid) else { continue };
                let v = &c.views[pos];
                if f.keeps(v, c.complete) {
                    items.push(v.clone());
                    if items.len() == limit {
                        return Ok(Page { items, next: Some(after) });
                    }
                }
            }
            if exhausted {
                return Ok(Page { items, next: None });
            }
            if scanned >= SCAN_BUDGET {
                return Ok(Page { items, next: Some(after) });
            }
        }
    }

    /// One triplet and the ledger events that reach it.
    pub fn triplet(&self, triplet_id: &str, policy: &Policy) -> Result<Option<TripletDetail>, StoreError> {
        let Some(crate::writer::FoundTriplet { rowid, sequence_id, .. }) = crate::writer::triplet_sequence(self.tx, triplet_id)? else {
            return Ok(None);
        };
        let Some(info) = self.info_by_name(&sequence_id)? else { return Ok(None) };
        let c = self.load_with(info, policy, true)?;
        let Some(pos) = c.rowids.iter().position(|r| *r == rowid) else { return Ok(None) };
        let view = c.views[pos].clone();
        let ledger = c.events.into_iter().zip(c.reach).filter(|(_, r)| r.contains(&pos)).map(|(e, _)| e).collect();
        Ok(Some(TripletDetail { triplet: view, ledger }))
    }

    /// The spans of a trace in tree order (parents before children, siblings by start time).
    pub fn trace(&self, trace_id: &[u8; 16]) -> Result<Option<Vec<SpanOut>>, StoreError> {
        let tref: Option<i64> = self
            .tx
            .prepare_cached("SELECT id FROM traces WHERE trace_id = ?1")?
            .query_row([&trace_id[..]], |r| r.get(0))
            .optional()?;
        let Some(tref) = tref else { return Ok(None) };
        let mut stmt = self.tx.prepare_cached(
            "SELECT s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, s.status_code, s.status_message,
                    s.attributes, s.events, coalesce(r.attributes, '{}'), s.seq_ref, s.triplet_id
             FROM spans s LEFT JOIN resources r ON r.id = s.resource_ref WHERE s.trace_ref = ?1",
        )?;
        struct Raw {
            span_id: i64,
            parent: Option<i64>,
            out: SpanOut,
        }
        let trace_hex = to_hex(trace_id);
        let raws = stmt
            .query_map([tref], |r| {
                let span_id: i64 = r.get(0)?;
                let parent: Option<i64> = r.get(1)?;
                let seq_ref: Option<i64> = r.get(11)?;
                let explicit: Option<String> = r.get(12)?;
                Ok(Raw {
                    span_id,
                    parent,
                    out: SpanOut {
                        trace_id: trace_hex.clone(),
                        span_id: to_hex(&span_id.to_be_bytes()),
                        parent_span_id: parent.map(|p| to_hex(&p.to_be_bytes())),
                        name: r.get(2)?,
                        kind: r.get(3)?,
                        start_ns: r.get(4)?,
                        end_ns: r.get(5)?,
                        status_code: r.get(6)?,
                        status_message: r.get(7)?,
                        attributes: r.get(8)?,
                        events: r.get(9)?,
                        resource: r.get(10)?,
                        depth: 0,
                        triplet_id: seq_ref.map(|_| explicit.unwrap_or_else(|| default_triplet_id(trace_id, &span_id.to_be_bytes()))),
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let present: std::collections::HashSet<i64> = raws.iter().map(|r| r.span_id).collect();
        let mut children: HashMap<Option<i64>, Vec<usize>> = HashMap::new();
        for (i, r) in raws.iter().enumerate() {
            let parent = r.parent.filter(|p| present.contains(p));
            children.entry(parent).or_default().push(i);
        }
        for list in children.values_mut() {
            list.sort_by_key(|&i| (raws[i].out.start_ns, raws[i].span_id));
        }
        let mut order = Vec::with_capacity(raws.len());
        let mut stack: Vec<(usize, usize)> = children.get(&None).map(|v| v.iter().rev().map(|&i| (i, 0)).collect()).unwrap_or_default();
        let mut seen = vec![false; raws.len()];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            order.push((i, depth));
            if let Some(kids) = children.get(&Some(raws[i].span_id)) {
                for &k in kids.iter().rev() {
                    stack.push((k, depth + 1));
                }
            }
        }
        // Spans caught in a parent cycle have no root; list them after the tree.
        for (i, s) in seen.iter().enumerate() {
            if !s {
                order.push((i, 0));
            }
        }
        let mut slots: Vec<Option<SpanOut>> = raws.into_iter().map(|r| Some(r.out)).collect();
        Ok(Some(
            order
                .into_iter()
                .filter_map(|(i, depth)| {
                    let mut s = slots[i].take()?;
                    s.depth = depth;
                    Some(s)
                })
                .collect(),
        ))
    }

    /// Stream every triplet that passes `f`, sequence by sequence, in sequence order, to `sink`
    /// (which returns `false` to stop). Holds one sequence in memory at a time.
    pub fn export(&self, f: &TripletFilter, policy: &Policy, sink: &mut dyn FnMut(&TripletView) -> Result<bool, StoreError>) -> Result<ExportCounts, StoreError> {
        let mut counts = ExportCounts::default();
        let only: Option<i64> = match &f.sequence_id {
            Some(s) => match self.info_by_name(s)? {
                Some(info) => Some(info.id),
                None => return Ok(counts),
            },
            None => None,
        };
        let sql = format!(
            "SELECT s.seq_ref, {ROW_COLS} FROM spans s JOIN traces t ON t.id = s.trace_ref
             WHERE s.seq_ref IS NOT NULL AND (?1 IS NULL OR s.seq_ref = ?1) ORDER BY s.seq_ref"
        );
        let mut stmt = self.tx.prepare(&sql)?;
        let mut rows = stmt.query([only])?;
        let mut current: Option<i64> = None;
        let mut group: Vec<SeqRow> = Vec::new();
        let mut flush = |seq_ref: i64, group: Vec<SeqRow>, counts: &mut ExportCounts| -> Result<bool, StoreError> {
            let Some(info) = self.info_by_id(seq_ref)? else { return Ok(true) };
            let events = self.events_for(&info, &group)?;
            let c = compute(info, group, events, policy, self.now, false);
            let mut any = false;
            for v in &c.views {
                if f.keeps(v, c.complete) {
                    any = true;
                    counts.triplets += 1;
                    counts.rewarded += u64::from(v.effective.reward.is_some());
                    if !sink(v)? {
                        return Ok(false);
                    }
                }
            }
            counts.sequences += u64::from(any);
            Ok(true)
        };
        while let Some(r) = rows.next()? {
            let seq_ref: i64 = r.get(0)?;
            if current.is_some_and(|c| c != seq_ref) {
                let done = std::mem::take(&mut group);
                if let Some(c) = current
                    && !flush(c, done, &mut counts)?
                {
                    return Ok(counts);
                }
            }
            current = Some(seq_ref);
            group.push(seq_row(r, 1)?);
        }
        if let Some(c) = current {
            flush(c, group, &mut counts)?;
        }
        Ok(counts)
    }
}

/// Whether the policy's idle time has passed since the sequence's last triplet.
fn idle(info: &SeqInfo, policy: &Policy, now: i64) -> bool {
    match (policy.sequence_idle, info.last_us) {
        (Some(secs), Some(last)) => now.saturating_sub(last) >= i64::try_from(secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        _ => false,
    }
}

fn compute(info: SeqInfo, mut rows: Vec<SeqRow>, events: Vec<RewardEvent>, policy: &Policy, now: i64, with_reach: bool) -> Computed {
    let all_indexed = rows.iter().all(|r| r.seq_index.is_some());
    if all_indexed {
        rows.sort_by_key(|r| (r.seq_index, r.start_ns, r.span_id));
    } else {
        rows.sort_by_key(|r| (r.start_ns, r.span_id));
    }
    let terminal = events.iter().any(RewardEvent::is_terminal);
    let (effective, reach) = {
        let inputs: Vec<RewardInput<'_>> = rows
            .iter()
            .map(|r| RewardInput {
                triplet_id: &r.triplet_id,
                role: r.role.as_deref(),
                task_id: r.task_id.as_deref(),
                phase: r.phase.as_deref(),
                immediate: (r.reward.is_some() || !r.components.is_empty()).then(|| Immediate {
                    value: r.reward,
                    components: &r.components,
                    source: r.reward_source.as_deref().unwrap_or("local"),
                    at: r.ts_us,
                }),
            })
            .collect();
        let reach: Vec<Vec<usize>> = if !with_reach {
            Vec::new()
        } else {
            events
                .iter()
                .map(|e| (0..inputs.len()).filter(|&i| reaches(e, 1.0, &info.sequence_id, &inputs, i).is_some()).collect())
                .collect()
        };
        // The fallback stands in for a terminal-type reward only until one arrives: it stays in the
        // ledger but no longer counts.
        let effective = if terminal {
            let counted: Vec<RewardEvent> = events.iter().filter(|e| e.source != "fallback").cloned().collect();
            effective_rewards(&info.sequence_id, &inputs, &counted, policy)
        } else {
            effective_rewards(&info.sequence_id, &inputs, &events, policy)
        };
        (effective, reach)
    };
    let complete = info.ended || terminal || idle(&info, policy, now);
    let mut rowids = Vec::with_capacity(rows.len());
    let views = rows
        .into_iter()
        .zip(effective)
        .enumerate()
        .map(|(rank, (r, effective))| {
            rowids.push(r.rowid);
            TripletView {
                sequence_index: r.seq_index.unwrap_or(rank as i64),
                sequence_id: info.sequence_id.clone(),
                timestamp: r.ts_us,
                trace_id: to_hex(&r.trace_id),
                span_id: to_hex(&r.span_id),
                triplet_id: r.triplet_id,
                state: r.state,
                action: r.action,
                effective,
                propensity: r.propensity,
                sampling_probability: r.sampling_probability,
                role: r.role,
                sequence_end: r.seq_end,
            }
        })
        .collect();
    Computed { info, rowids, views, events, reach, complete }
}

//! The read side's types and one read transaction ([`ReadTx`]): a consistent snapshot in which
//! sequences are loaded and evaluated by the core (`rltrace_core::sequence`), one at a time.

use rltrace_core::Policy;
use rltrace_core::export::TripletView;
use rltrace_core::reward::RewardEvent;
use rltrace_core::sequence::{SequenceEval, evaluate, is_complete};
use crate::db::{Sql, SqlExt, params};

use crate::StoreError;
use crate::rows::{SEQ_COLS, SeqInfo, events_for, rows_of, seq_info};

/// Rows scanned at most by one list request that filters on derived values; past it the page
/// ends early with a cursor, so no request's work grows with the store.
pub(crate) const SCAN_BUDGET: usize = 20_000;

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
    /// Triplets with an effective reward under default weights.
    pub rewarded_triplets: u64,
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
    /// Only sequences waiting for a human review: complete, no `hitl` event yet.
    pub review_pending: bool,
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
    pub(crate) fn keeps(&self, t: &TripletView, complete: bool) -> bool {
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
    /// Ended by `rl.sequence_end`, a terminal-type reward for the sequence, or idle time.
    pub complete: bool,
    /// Mean effective reward over its rewarded triplets.
    pub reward_mean: Option<f64>,
    /// The agent roles of its triplets, in order of first appearance.
    pub roles: Vec<String>,
    /// The Agent Lightning rollout attempt it is linked to.
    pub rollout: Option<rltrace_core::triplet::RolloutLink>,
    /// Its episode reward (last, mean, min of the effective rewards).
    pub episode: rltrace_core::sequence::EpisodeRewards,
}

/// A sequence with one page of its triplets in order, and its ledger.
#[derive(Debug, Clone)]
pub struct SequenceDetail {
    /// The summary.
    pub summary: SequenceSummary,
    /// Triplets in sequence order (one page).
    pub triplets: Vec<TripletView>,
    /// Every ledger event of the sequence and its triplets.
    pub ledger: Vec<RewardEvent>,
    /// Where the next page of triplets starts.
    pub next: Option<i64>,
}

/// A triplet with the ledger events that reach it.
#[derive(Debug, Clone)]
pub struct TripletDetail {
    /// The triplet.
    pub triplet: TripletView,
    /// Events reaching it.
    pub ledger: Vec<RewardEvent>,
    /// How its effective reward was formed, source by source.
    pub explain: Vec<rltrace_core::reward::SourceExplanation>,
}

/// A sequence loaded and evaluated.
pub(crate) struct Loaded {
    pub(crate) info: SeqInfo,
    pub(crate) eval: SequenceEval,
    pub(crate) events: Vec<RewardEvent>,
}

impl Loaded {
    pub(crate) fn summary(&self) -> SequenceSummary {
        SequenceSummary {
            sequence_id: self.info.sequence_id.clone(),
            triplet_count: self.eval.triplets.len() as i64,
            first_at: self.eval.first_at,
            last_at: self.eval.last_at,
            rewarded: self.eval.rewarded(),
            complete: self.eval.complete,
            reward_mean: self.eval.reward_mean(),
            roles: self.eval.roles(),
            rollout: self.info.rollout.clone(),
            episode: self.eval.episode_rewards(),
        }
    }
}

/// A read transaction: a consistent snapshot of the store.
pub struct ReadTx<'a> {
    pub(crate) tx: &'a dyn Sql,
    pub(crate) now: i64,
}

impl<'a> ReadTx<'a> {
    /// What `retention` would delete now (`rltrace gc --dry-run`; it counts by scanning).
    /// `keep_unsettled` as for [`crate::Store::gc_blocking`].
    pub fn gc_due(&self, retention: &rltrace_core::retention::Retention, keep_unsettled: bool) -> Result<crate::GcCounts, StoreError> {
        crate::gc::due(self.tx, &retention.cutoffs(self.now), keep_unsettled)
    }

    pub(crate) fn new(tx: &'a dyn Sql, now: i64) -> ReadTx<'a> {
        ReadTx { tx, now }
    }

    /// Row counts (cheap: one row kept by the writer).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        self.tx.query_row(
            "SELECT spans, triplets, sequences, reward_events, task_events, rewarded_triplets FROM counters WHERE id = 1",
            params![],
            |r| {
                Ok(Counts {
                    spans: r.get::<_, i64>(0)? as u64,
                    triplets: r.get::<_, i64>(1)? as u64,
                    sequences: r.get::<_, i64>(2)? as u64,
                    reward_events: r.get::<_, i64>(3)? as u64,
                    task_events: r.get::<_, i64>(4)? as u64,
                    rewarded_triplets: r.get::<_, i64>(5)?.max(0) as u64,
                })
            },
        )
    }

    /// The newest span row and ledger event: what an export reads at most.
    pub fn watermarks(&self) -> Result<crate::Watermarks, StoreError> {
        self.tx.query_row("SELECT (SELECT coalesce(max(id), 0) FROM spans), (SELECT coalesce(max(id), 0) FROM reward_events)", params![], |r| {
            Ok(crate::Watermarks { span: r.get(0)?, event: r.get(1)? })
        })
    }

    pub(crate) fn info_by_id(&self, id: i64) -> Result<Option<SeqInfo>, StoreError> {
        self.tx.prepare_cached(format!("SELECT {SEQ_COLS} FROM sequences WHERE id = ?1"))?.query_opt(params![id], seq_info)
    }

    pub(crate) fn info_by_name(&self, sequence_id: &str) -> Result<Option<SeqInfo>, StoreError> {
        self
            .tx
            .prepare_cached(format!("SELECT {SEQ_COLS} FROM sequences WHERE sequence_id = ?1 AND triplet_count > 0"))?
            .query_opt(params![sequence_id], seq_info)
    }

    /// Whether a sequence is complete, from its row alone.
    pub(crate) fn complete_from_info(&self, info: &SeqInfo, policy: &Policy) -> bool {
        is_complete(info.ended, info.terminal_events > 0, info.last_us, policy, self.now)
    }

    /// Load a sequence (up to the watermarks) and evaluate it in the core.
    pub(crate) fn load(&self, info: SeqInfo, policy: &Policy, full: bool, marks: crate::Watermarks, now: i64) -> Result<Loaded, StoreError> {
        let rows = rows_of(self.tx, info.id, full, marks.span)?;
        let events = if info.has_events() { events_for(self.tx, &info, &rows, marks.event)? } else { Vec::new() };
        let eval = evaluate(&info.sequence_id, rows, &events, policy, now);
        Ok(Loaded { info, eval, events })
    }


    /// Several sequences by row, now, without their state and action texts: a few statements for
    /// all of them (for PostgreSQL, where a round trip per sequence costs more than its rows).
    pub(crate) fn load_many(&self, ids: &[i64], policy: &Policy) -> Result<Vec<Loaded>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let json = serde_json::to_string(ids).map_err(|e| StoreError::Failed(e.to_string()))?;
        let infos: Vec<SeqInfo> = self
            .tx
            .rows(&format!("SELECT {SEQ_COLS} FROM sequences WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?1))"), params![json])?
            .iter()
            .map(seq_info)
            .collect::<Result<_, _>>()?;
        let mut rows = crate::rows::rows_of_many(self.tx, ids, false, i64::MAX)?;
        let names: Vec<&str> = infos.iter().filter(|i| i.reward_events > 0).map(|i| i.sequence_id.as_str()).collect();
        let mut keyed = if names.is_empty() { Default::default() } else { crate::rows::keyed_events_of_many(self.tx, &names, i64::MAX)? };
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            let seq_rows = rows.remove(&info.id).unwrap_or_default();
            let mut events = keyed.remove(&info.sequence_id).unwrap_or_default();
            crate::rows::add_task_events(self.tx, &info, &seq_rows, i64::MAX, &mut events)?;
            let eval = evaluate(&info.sequence_id, seq_rows, &events, policy, self.now);
            out.push(Loaded { info, eval, events });
        }
        Ok(out)
    }
}

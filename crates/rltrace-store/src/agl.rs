//! The Agent Lightning bridge's side of the store: the linked sequences a bridge still watches,
//! evaluated by the core, and a durable outbox of deliveries (one row per reward to hand over,
//! with its state), so that a restart between "reward known" and "delivered" still delivers it.
//! A LightningStore bridge delivers once per sequence ([`Deliveries::Once`]); a gateway bridge
//! each time the episode reward changes, until the gateway no longer has the rollout
//! ([`Deliveries::OnChange`]).


use rltrace_core::Policy;
use rltrace_core::sequence::SequenceEval;
use rltrace_core::triplet::RolloutLink;

use crate::StoreError;
use crate::db::{Sql, SqlExt, params};
use crate::read::ReadTx;
use crate::rows::{SEQ_COLS, seq_info};

/// Which deliveries a bridge makes for a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliveries {
    /// One: a sequence with a delivery (in any state) is not watched any more.
    Once,
    /// One per change of value: a sequence is watched until a delivery of it was skipped (the
    /// rollout is gone).
    OnChange,
}

/// A linked sequence a bridge watches, as it is now.
#[derive(Debug, Clone)]
pub struct LinkedSequence {
    /// Its row id.
    pub seq_ref: i64,
    /// Its id.
    pub sequence_id: String,
    /// The rollout attempt it is linked to.
    pub rollout: RolloutLink,
    /// Its evaluation (order, completeness, effective rewards).
    pub eval: SequenceEval,
    /// Where a reward span goes: the trace of its last-ending LLM-call triplet (of its last-ending
    /// triplet when none is an LLM call) and that span's end (nanoseconds).
    pub anchor: Option<([u8; 16], i64)>,
    /// The value of its newest delivery for this bridge, if any.
    pub last_value: Option<f64>,
}

/// One read of linked sequences.
#[derive(Debug, Clone, Default)]
pub struct LinkedScan {
    /// The sequences found.
    pub sequences: Vec<LinkedSequence>,
    /// The sequence row id the next read starts after.
    pub scanned_to: i64,
    /// The newest sequence row id when read (a scan past it starts again at 0).
    pub last_id: i64,
}

/// A delivery of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Its id (the order deliveries are made in).
    pub id: i64,
    /// The sequence.
    pub seq_ref: i64,
    /// Its rollout attempt.
    pub rollout: RolloutLink,
    /// The reward to deliver.
    pub value: f64,
    /// The trace the reward span goes into.
    pub trace_id: [u8; 16],
    /// When the reward span starts (nanoseconds).
    pub start_ns: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// When it was written (microseconds since the epoch).
    pub created_us: i64,
    /// Why: which sequence, which episode reward.
    pub reason: String,
}

/// How many deliveries of a bridge are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting to be delivered.
    pub pending: i64,
    /// Delivered.
    pub delivered: i64,
    /// Given up: the rollout unknown to Agent Lightning, or the delivery refused.
    pub skipped: i64,
    /// When the oldest pending one was written (microseconds since the epoch).
    pub oldest_pending_us: Option<i64>,
}

const PENDING: i64 = 0;
const DELIVERED: i64 = 1;
const SKIPPED: i64 = 2;

/// Sequence rows looked at per read.
const WINDOW: i64 = 4_096;

impl ReadTx<'_> {
    /// Up to `limit` sequences linked to a rollout attempt, after row `after` (at most 4,096 rows
    /// looked at), that `bridge` still watches under `deliveries`, evaluated under `policy` now.
    pub fn linked_sequences(&self, bridge: &str, deliveries: Deliveries, after: i64, limit: usize, policy: &Policy) -> Result<LinkedScan, StoreError> {
        let limit = limit.clamp(1, 1_024);
        let last_id: i64 = self.tx.query_row("SELECT coalesce(max(id), 0) FROM sequences", params![], |r| r.get(0))?;
        let window_end = after.saturating_add(WINDOW);
        let sql = format!(
            "SELECT {SEQ_COLS}, (SELECT o.value FROM agl_outbox o WHERE o.bridge = ?3 AND o.seq_ref = q.id ORDER BY o.id DESC LIMIT 1)
             FROM sequences q WHERE id > ?1 AND id <= ?2 AND rollout_id IS NOT NULL AND triplet_count > 0
             AND NOT EXISTS (SELECT 1 FROM agl_outbox o WHERE o.bridge = ?3 AND o.seq_ref = q.id{}) ORDER BY id LIMIT ?4",
            match deliveries {
                Deliveries::Once => "",
                Deliveries::OnChange => " AND o.state = 2",
            }
        );
        let infos = self
            .tx
            .prepare_cached(sql)?
            .query_map(params![after, window_end, bridge, limit as i64], |r| Ok((seq_info(r)?, r.get::<_, Option<f64>>(10)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let full = infos.len() == limit;
        let scanned_to = if full { infos.last().map_or(after, |i| i.0.id) } else { window_end.min(last_id) };
        let mut sequences = Vec::with_capacity(infos.len());
        for (info, last_value) in infos {
            let Some(rollout) = info.rollout.clone() else { continue };
            let (seq_ref, sequence_id) = (info.id, info.sequence_id.clone());
            let anchor = self.tx.query_opt(
                "SELECT t.trace_id, s.end_ns FROM spans s JOIN traces t ON t.id = s.trace_ref
                 WHERE s.seq_ref = ?1 ORDER BY s.llm DESC, s.end_ns DESC, s.id DESC LIMIT 1",
                params![seq_ref],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
            )?;
            let anchor = match anchor {
                Some((trace, end)) => Some((trace.as_slice().try_into().map_err(|_| StoreError::Corrupt(format!("sequence {seq_ref}: trace id")))?, end)),
                None => None,
            };
            let eval = self.load(info, policy, false, crate::Watermarks::ALL, self.now)?.eval;
            sequences.push(LinkedSequence { seq_ref, sequence_id, rollout, eval, anchor, last_value });
        }
        Ok(LinkedScan { sequences, scanned_to, last_id })
    }

    /// The oldest `limit` pending deliveries of `bridge`.
    pub fn outbox_pending(&self, bridge: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut out = Vec::new();
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, seq_ref, rollout_id, attempt_id, value, trace_id, start_ns, attempts, created_us, reason FROM agl_outbox
             WHERE bridge = ?1 AND state = 0 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![bridge, limit.clamp(1, 1_024) as i64])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let trace: Vec<u8> = r.get(5)?;
            out.push(OutboxRow {
                id,
                seq_ref: r.get(1)?,
                rollout: RolloutLink { rollout_id: r.get(2)?, attempt_id: r.get(3)? },
                value: r.get(4)?,
                trace_id: trace.as_slice().try_into().map_err(|_| StoreError::Corrupt(format!("outbox row {id}: trace id")))?,
                start_ns: r.get(6)?,
                attempts: r.get(7)?,
                created_us: r.get(8)?,
                reason: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// How many deliveries of `bridge` are pending, delivered and skipped.
    pub fn outbox_counts(&self, bridge: &str) -> Result<OutboxCounts, StoreError> {
        let mut c = OutboxCounts::default();
        let mut stmt = self.tx.prepare_cached("SELECT state, count(*), min(created_us) FROM agl_outbox WHERE bridge = ?1 GROUP BY state")?;
        let mut rows = stmt.query(params![bridge])?;
        while let Some(r) = rows.next()? {
            let (state, n, oldest): (i64, i64, Option<i64>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            match state {
                PENDING => {
                    c.pending = n;
                    c.oldest_pending_us = oldest;
                }
                DELIVERED => c.delivered = n,
                _ => c.skipped += n,
            }
        }
        Ok(c)
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Agent Lightning has it.
    Delivered,
    /// Given up for good (the reason is kept).
    Skipped(String),
    /// Not delivered this time; it stays pending (the error is kept).
    Failed(String),
}

/// A change to the outbox, made by the writer.
#[derive(Debug, Clone)]
pub enum OutboxOp {
    /// Write a delivery for a sequence: the new row's id. `None` when there is nothing to do:
    /// under [`Deliveries::Once`] the bridge has a delivery for it already; under
    /// [`Deliveries::OnChange`] its newest delivery has this value, or one was skipped.
    Enqueue {
        /// Once, or on each change.
        deliveries: Deliveries,
        /// Which sequence and episode reward (sent as the reward's reason).
        reason: String,
        /// The bridge.
        bridge: String,
        /// The sequence.
        seq_ref: i64,
        /// Its rollout attempt.
        rollout: RolloutLink,
        /// The reward.
        value: f64,
        /// The trace its span goes into.
        trace_id: [u8; 16],
        /// Its span's start (nanoseconds).
        start_ns: i64,
    },
    /// Record an attempt: the row's id when it exists.
    Attempted {
        /// The row.
        id: i64,
        /// What happened.
        outcome: Outcome,
    },
}

/// Apply `op` inside the writer's transaction.
pub(crate) fn apply(tx: &dyn Sql, now: i64, op: &OutboxOp) -> Result<Option<i64>, StoreError> {
    match op {
        OutboxOp::Enqueue { deliveries, reason, bridge, seq_ref, rollout, value, trace_id, start_ns } => {
            let newest: Option<(i64, f64, i64)> = tx.query_opt(
                "SELECT id, value, state FROM agl_outbox WHERE bridge = ?1 AND seq_ref = ?2 ORDER BY id DESC LIMIT 1",
                params![bridge.as_str(), *seq_ref],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let ended: bool = match deliveries {
                Deliveries::Once => newest.is_some(),
                Deliveries::OnChange => {
                    newest.is_some_and(|(_, v, _)| v == *value)
                        || tx
                            .query_opt("SELECT 1 FROM agl_outbox WHERE bridge = ?1 AND seq_ref = ?2 AND state = 2 LIMIT 1", params![bridge.as_str(), *seq_ref], |r| {
                                r.get::<_, i64>(0)
                            })?
                            .is_some()
                }
            };
            if ended {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO agl_outbox(bridge, seq_ref, rollout_id, attempt_id, value, trace_id, start_ns, state, attempts, created_us, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, ?8, ?9)",
                params![bridge.as_str(), *seq_ref, rollout.rollout_id.as_str(), rollout.attempt_id.as_str(), *value, *trace_id, *start_ns, now, reason.as_str()],
            )?;
            Ok(tx.query_opt(
                "SELECT id FROM agl_outbox WHERE bridge = ?1 AND seq_ref = ?2 ORDER BY id DESC LIMIT 1",
                params![bridge.as_str(), *seq_ref],
                |r| r.get(0),
            )?)
        }
        OutboxOp::Attempted { id, outcome } => {
            let (state, error): (i64, Option<&str>) = match outcome {
                Outcome::Delivered => (DELIVERED, None),
                Outcome::Skipped(why) => (SKIPPED, Some(why.as_str())),
                Outcome::Failed(why) => (PENDING, Some(why.as_str())),
            };
            let done: Option<i64> = (state != PENDING).then_some(now);
            let n = tx.execute(
                "UPDATE agl_outbox SET state = ?2, attempts = attempts + 1, last_error = coalesce(?3, last_error), done_us = ?4 WHERE id = ?1 AND state = 0",
                params![*id, state, error, done],
            )?;
            Ok((n == 1).then_some(*id))
        }
    }
}

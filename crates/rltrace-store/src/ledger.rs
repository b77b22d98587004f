//! The reward ledger on the write side: appending events (requests, rewards carried by spans, the
//! fallback), idempotency, pending targets and their bound, defects by task id, the per-sequence
//! event counts, and which triplet or task a target names.

use rltrace_core::ids::canonical_triplet_id;
use rltrace_core::reward::{RewardTarget, Strategy, is_terminal};
use rltrace_core::sequence::{FALLBACK_SOURCE, covers_every_triplet};
use crate::db::{Sql, SqlExt, params};

use crate::ingest::Caches;
use crate::rows::event_by_rowid;
use crate::writer::Group;
use crate::{NewReward, RewardAppend, StoreError, now_micros};

/// A ledger row to insert.
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
    pub(crate) fn carried(reward_id: &'a str, seq_key: &'a str, value: f64, source: &'a str, reason: Option<&'a str>, created_us: i64) -> EventRow<'a> {
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

/// Insert one event; returns its rowid, or `None` when its reward id was already stored.
fn insert_event(tx: &dyn Sql, e: &EventRow<'_>) -> Result<Option<i64>, StoreError> {
    tx
        .prepare_cached(
            "INSERT OR IGNORE INTO reward_events(reward_id, target_triplet, target_sequence, strategy, gamma, role, seq_key,
            value, source, reason, created_us, idempotency_key, body_hash, metadata, target_task, valuation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) RETURNING id",
        )?
        .query_opt(params![
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
        ], |r| r.get(0))
}

/// Append an event and count it where it reaches: on its sequence, or on every sequence a task
/// reaches. Returns its rowid (`None` when the reward id was already stored).
pub(crate) fn append_event(tx: &dyn Sql, c: &mut Caches, g: &mut Group, e: &EventRow<'_>) -> Result<Option<i64>, StoreError> {
    let Some(rowid) = insert_event(tx, e)? else { return Ok(None) };
    c.last_event = rowid;
    g.counts.reward_events += 1;
    if let Some(seq) = e.seq_key {
        let covering = e.target_sequence.is_some()
            && e.source != FALLBACK_SOURCE
            && e.strategy.is_some_and(|s| covers_every_triplet(s, e.value.is_some()));
        let terminal = is_terminal(e.source, e.value.is_some(), e.target_sequence.is_some());
        let id: Option<i64> = tx
            .prepare_cached(
                "UPDATE sequences SET reward_events = reward_events + 1, terminal_events = terminal_events + ?2,
                   covering_events = covering_events + ?3, hitl_events = hitl_events + ?4, settled = max(settled, ?5)
                 WHERE sequence_id = ?1 RETURNING id",
            )?
            .query_opt(
                params![seq, i64::from(terminal), i64::from(covering), i64::from(e.source == "hitl"), i64::from(e.source == FALLBACK_SOURCE)],
                |r| r.get(0),
            )?;
        if let Some(id) = id {
            g.dirty.insert(id);
        }
    } else if let Some(task) = e.target_task {
        g.counts.task_events += 1;
        c.task_events += 1;
        mark_task_reach(tx, task, &mut |id| {
            g.dirty.insert(id);
        })?;
    }
    Ok(Some(rowid))
}

/// Recount the ledger events keyed to a sequence (after a join, in migrations).
pub(crate) fn recount_sequence_events(conn: &dyn Sql, seq: i64) -> Result<(), StoreError> {
    let sequence_id: String = conn.prepare_cached("SELECT sequence_id FROM sequences WHERE id = ?1")?.query_row(params![seq], |r| r.get(0))?;
    recount_named(conn, seq, &sequence_id, false)
}

/// Count, on a sequence created now, the rewards appended as pending before it existed.
pub(crate) fn count_pending_for_new_sequence(conn: &dyn Sql, seq: i64, sequence_id: &str) -> Result<(), StoreError> {
    recount_named(conn, seq, sequence_id, true)
}

fn recount_named(conn: &dyn Sql, seq: i64, sequence_id: &str, skip_when_none: bool) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT source, value IS NOT NULL, target_sequence IS NOT NULL, strategy FROM reward_events WHERE seq_key = ?1",
    )?;
    let mut rows = stmt.query(params![sequence_id])?;
    let (mut all, mut terminal, mut covering, mut hitl, mut fallback) = (0i64, 0i64, 0i64, 0i64, false);
    while let Some(r) = rows.next()? {
        let source: String = r.get(0)?;
        let has_value: bool = r.get(1)?;
        let on_sequence: bool = r.get(2)?;
        let strategy: Option<String> = r.get(3)?;
        all += 1;
        terminal += i64::from(is_terminal(&source, has_value, on_sequence));
        let covers = matches!(strategy.as_deref(), None | Some("uniform") | Some("discounted"));
        covering += i64::from(on_sequence && has_value && covers && source != FALLBACK_SOURCE);
        hitl += i64::from(source == "hitl");
        fallback |= source == FALLBACK_SOURCE;
    }
    if skip_when_none && all == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "UPDATE sequences SET reward_events = ?1, terminal_events = ?2, covering_events = ?3, hitl_events = ?4, settled = max(settled, ?5)
         WHERE id = ?6",
    )?
    .execute(params![all, terminal, covering, hitl, i64::from(fallback), seq])?;
    Ok(())
}

/// Whether some ledger event targets task `task_id`.
pub(crate) fn task_has_events(conn: &dyn Sql, task_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM reward_events WHERE target_task = ?1 LIMIT 1")?
        .query_opt(params![task_id], |r| r.get::<_, i64>(0))?
        .is_some())
}

/// The sequences a task id reaches: named after it (`T`, `T:...`) or holding a triplet whose
/// `state.task_id` is `T`.
fn task_sequences(conn: &dyn Sql, task_id: &str) -> Result<Vec<i64>, StoreError> {
    let mut out: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM sequences WHERE sequence_id = ?1 OR (sequence_id >= ?1 || ':' AND sequence_id < ?1 || ';')
             UNION SELECT seq_ref FROM task_sequences WHERE task_id = ?1",
        )?
        .query_map(params![task_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Mark every sequence task `task_id` reaches as reached by defects by task id; `on_seq` is told
/// each one.
pub(crate) fn mark_task_reach(conn: &dyn Sql, task_id: &str, on_seq: &mut dyn FnMut(i64)) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("UPDATE sequences SET task_events = 1 WHERE id = ?1")?;
    for id in task_sequences(conn, task_id)? {
        stmt.execute(params![id])?;
        on_seq(id);
    }
    Ok(())
}

/// A triplet found by id: its span row, its sequence id, and whether the id was its explicit
/// `rl.triplet_id` (rather than the default `{trace_id}{span_id}`).
pub(crate) struct FoundTriplet {
    pub(crate) rowid: i64,
    pub(crate) sequence_id: String,
    pub(crate) explicit: bool,
}

/// Find a triplet by triplet id (explicit, or the default `{trace_id}{span_id}` in either case).
pub(crate) fn triplet_sequence(conn: &dyn Sql, triplet_id: &str) -> Result<Option<FoundTriplet>, StoreError> {
    let explicit = conn
        .prepare_cached("SELECT s.id, q.sequence_id FROM spans s JOIN sequences q ON q.id = s.seq_ref WHERE s.triplet_id = ?1")?
        .query_opt(params![triplet_id], |r| Ok(FoundTriplet { rowid: r.get(0)?, sequence_id: r.get(1)?, explicit: true }))?;
    if explicit.is_some() {
        return Ok(explicit);
    }
    let Some((trace_id, span_id)) = rltrace_core::ids::parse_default_triplet_id(triplet_id) else { return Ok(None) };
    conn.prepare_cached(
        "SELECT s.id, q.sequence_id FROM traces t JOIN spans s ON s.trace_ref = t.id JOIN sequences q ON q.id = s.seq_ref
         WHERE t.trace_id = ?1 AND s.span_id = ?2 AND s.triplet_id IS NULL",
    )?
    .query_opt(params![&trace_id[..], i64::from_be_bytes(span_id)], |r| {
        Ok(FoundTriplet { rowid: r.get(0)?, sequence_id: r.get(1)?, explicit: false })
    })
}

/// Whether a task id reaches any stored triplet.
pub(crate) fn task_known(conn: &dyn Sql, task_id: &str) -> Result<bool, StoreError> {
    let by_sequence: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM sequences WHERE triplet_count > 0 AND (sequence_id = ?1 OR (sequence_id >= ?1 || ':' AND sequence_id < ?1 || ';')) LIMIT 1",
        )?
        .query_opt(params![task_id], |r| r.get(0))?;
    if by_sequence.is_some() {
        return Ok(true);
    }
    Ok(conn
        .prepare_cached("SELECT 1 FROM task_sequences WHERE task_id = ?1 LIMIT 1")?
        .query_opt(params![task_id], |r| r.get::<_, i64>(0))?
        .is_some())
}

/// Append a reward request to the ledger.
pub(crate) fn append_reward(tx: &dyn Sql, c: &mut Caches, g: &mut Group, req: NewReward, max_pending: usize) -> Result<RewardAppend, StoreError> {
    if let Some(key) = &req.idempotency_key {
        let existing: Option<(i64, Option<String>)> = tx
            .prepare_cached("SELECT id, body_hash FROM reward_events WHERE idempotency_key = ?1")?
            .query_opt(params![key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some((id, hash)) = existing {
            let ev = event_by_rowid(tx, id)?;
            return Ok(if hash.as_deref() == Some(req.body_hash.as_str()) { RewardAppend::Existing(ev) } else { RewardAppend::Conflict(ev) });
        }
    }
    let mut target_task = None;
    let canonical: String;
    let mut pending_triplet = false;
    let (seq_key, target_triplet, target_sequence, strategy) = match &req.target {
        RewardTarget::Triplet { triplet_id } => {
            let found = triplet_sequence(tx, triplet_id)?;
            if found.is_none() && !req.allow_pending {
                return Ok(RewardAppend::NotFound(format!("triplet {triplet_id:?} not found")));
            }
            // An explicit id as given; a default id in the lowercase the triplet reports.
            canonical = if found.as_ref().is_some_and(|f| f.explicit) { triplet_id.clone() } else { canonical_triplet_id(triplet_id).into_owned() };
            if found.is_none() {
                if c.pending.len() >= max_pending && !c.pending.contains(&canonical) {
                    // Another collector may have joined some of them since: ask the database.
                    c.reload_ledger(tx)?;
                    if c.pending.len() >= max_pending && !c.pending.contains(&canonical) {
                        return Ok(RewardAppend::PendingLimit(max_pending));
                    }
                }
                pending_triplet = true;
            }
            (found.map(|f| f.sequence_id), Some(canonical.as_str()), None, None)
        }
        RewardTarget::Sequence { sequence_id, strategy } => {
            let known: Option<i64> =
                tx.prepare_cached("SELECT id FROM sequences WHERE sequence_id = ?1")?.query_opt(params![sequence_id], |r| r.get(0))?;
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
    let row = EventRow {
        reward_id: &reward_id,
        target_triplet,
        target_sequence,
        strategy: strategy.as_ref(),
        seq_key: seq_key.as_deref(),
        value: req.value,
        source: &req.source,
        reason: req.reason.as_deref(),
        created_us: now_micros(),
        idempotency_key: req.idempotency_key.as_deref(),
        body_hash: Some(&req.body_hash),
        metadata: req.metadata.as_deref(),
        target_task,
        valuation: req.valuation.encode(),
    };
    let Some(rowid) = append_event(tx, c, g, &row)? else {
        return Err(StoreError::Failed(format!("reward id {reward_id} already stored")));
    };
    if pending_triplet && let Some(t) = target_triplet {
        c.pending.insert(t.to_string());
        g.pending_added.push(t.to_string());
    }
    Ok(RewardAppend::Created(event_by_rowid(tx, rowid)?))
}

/// Append the fallback reward (`value`, source `fallback`, uniform) to at most `batch` sequences
/// that have no terminal-type reward, no fallback yet, and a last triplet at or before
/// `due_before`. Returns how many were settled.
pub(crate) fn settle(tx: &dyn Sql, c: &mut Caches, g: &mut Group, value: f64, due_before: i64, now: i64, batch: usize) -> Result<usize, StoreError> {
    let due: Vec<String> = tx
        .prepare_cached(
            "SELECT sequence_id FROM sequences WHERE terminal_events = 0 AND settled = 0 AND last_us <= ?1 AND triplet_count > 0
             ORDER BY last_us LIMIT ?2",
        )?
        .query_map(params![due_before, i64::try_from(batch).unwrap_or(i64::MAX)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let uniform = Strategy::Uniform;
    for sequence_id in &due {
        let reward_id = uuid::Uuid::new_v4().to_string();
        let row = EventRow {
            target_sequence: Some(sequence_id),
            strategy: Some(&uniform),
            ..EventRow::carried(&reward_id, sequence_id, value, FALLBACK_SOURCE, Some("no terminal-type reward within reward_wait"), now)
        };
        append_event(tx, c, g, &row)?;
    }
    Ok(due.len())
}

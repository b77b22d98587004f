//! Retention: deleting spans that are not triplets and whole sequences once they are due
//! ([`rltrace_core::retention`] says what is due). Each pass is one small transaction of the
//! writer (at most `batch` plain spans and sequences holding at most `batch` triplets, a longer
//! sequence alone), so deletion never holds ingest up for
//! long; [`crate::Store::gc_blocking`] runs passes until nothing due is left.
//!
//! Spans are walked in arrival order from a cursor kept in `meta` (`gc_span_cursor`): a pass
//! deletes the spans that are not triplets and ended before the cutoff, steps over triplets, and
//! stops at the first young span (everything after it arrived later). Sequences are taken oldest
//! last triplet first (index `sequences_last`), with the conditions in SQL: no reward event
//! reaching them (directly, through their triplets, or through their tasks) at or after the
//! cutoff, and, when the policy has a fallback, settled or with a terminal-type reward. A deleted
//! sequence takes its triplets, its ledger events, its role and task index rows, and its share
//! of the counters with it. Task-targeted events (defects by task id) stay: they may reach other
//! sequences. `gc_generation` in `meta` grows with every deletion of sequences, so other
//! collectors on the same PostgreSQL database drop their cached sequence rows.

use rltrace_core::retention::Cutoffs;

use crate::StoreError;
use crate::db::{Sql, SqlExt, params};
use crate::ingest::Caches;

/// What one pass (or a whole run) deleted, or with `dry_run` would delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcCounts {
    /// Spans that are not triplets.
    pub spans: u64,
    /// Whole sequences.
    pub sequences: u64,
    /// Triplets of those sequences.
    pub triplets: u64,
    /// Ledger events of those sequences.
    pub reward_events: u64,
    /// Whether a pass stopped at its batch bound (more may be due).
    pub more: bool,
    /// Where the next pass of the same run goes on in the sequences (`(last_us, id)` of the
    /// last one looked at): a run looks at each old sequence once, the kept ones included.
    pub cursor: Option<(i64, i64)>,
}

impl GcCounts {
    /// Add another pass's counts.
    pub fn add(&mut self, o: &GcCounts) {
        self.spans += o.spans;
        self.sequences += o.sequences;
        self.triplets += o.triplets;
        self.reward_events += o.reward_events;
        self.more = o.more;
        self.cursor = o.cursor;
    }
}

/// How far in the future a span may end and still stop the walk (clock skew).
const FUTURE_SLACK_NS: u64 = 3600 * 1_000_000_000;

/// Rows scanned for spans per deleted span at most (triplets are stepped over).
const SCAN_FACTOR: usize = 4;

/// The conditions that keep an old sequence (`s`): a reward event reaching it at or after the
/// cutoff `?1`, or (`?2` = 1) a fallback it still waits for.
const KEPT_NOT: &str = "(?2 = 0 OR s.settled > 0 OR s.terminal_events > 0)
           AND NOT EXISTS (SELECT 1 FROM reward_events e WHERE e.seq_key = s.sequence_id AND e.created_us >= ?1)
           AND NOT EXISTS (SELECT 1 FROM task_sequences ts JOIN reward_events e ON e.target_task = ts.task_id
                           WHERE ts.seq_ref = s.id AND e.created_us >= ?1)";

/// Every sequence due at `before_us`: `(row id, sequence id, triplet count, rewarded count)`.
fn all_due_sequences(tx: &dyn Sql, before_us: i64, keep_unsettled: bool) -> Result<Vec<(i64, String, i64, i64)>, StoreError> {
    let rows = tx.rows(
        &format!("SELECT s.id, s.sequence_id, s.triplet_count, s.rewarded_count, s.task_events FROM sequences s WHERE s.last_us < ?1 AND {KEPT_NOT}"),
        params![before_us, i64::from(keep_unsettled)],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, key, tc, rc, te): (i64, String, i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        if te > 0 && recent_task_event(tx, &key, before_us)? {
            continue;
        }
        out.push((id, key, tc, rc));
    }
    Ok(out)
}

/// A due sequence: `(row id, sequence id, triplet count, rewarded count, last_us)`.
type DueSequence = (i64, String, i64, i64, i64);

/// A page of due sequences, how many were looked at, and where the page ended.
type DuePage = (Vec<DueSequence>, usize, Option<(i64, i64)>);

/// A page of the old sequences after `after` (at most `limit` looked at, oldest first): the due
/// ones `(row id, sequence id, triplet count, rewarded count, last_us)`, how many were looked
/// at, and the position of the last one looked at.
fn due_page(
    tx: &dyn Sql,
    before_us: i64,
    keep_unsettled: bool,
    after: (i64, i64),
    limit: usize,
) -> Result<DuePage, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let page = tx.rows(
        "SELECT id, last_us FROM sequences WHERE last_us < ?1 AND (last_us > ?2 OR (last_us = ?2 AND id > ?3))
         ORDER BY last_us, id LIMIT ?4",
        params![before_us, after.0, after.1, limit],
    )?;
    let looked = page.len();
    let last = match page.last() {
        Some(r) => Some((r.get::<_, i64>(1)?, r.get::<_, i64>(0)?)),
        None => None,
    };
    let Some(end) = last else { return Ok((Vec::new(), 0, None)) };
    let rows = tx.rows(
        &format!(
            "SELECT s.id, s.sequence_id, s.triplet_count, s.rewarded_count, s.last_us, s.task_events FROM sequences s
             WHERE s.last_us < ?1 AND (s.last_us > ?3 OR (s.last_us = ?3 AND s.id > ?4))
               AND (s.last_us < ?5 OR (s.last_us = ?5 AND s.id <= ?6)) AND {KEPT_NOT}
             ORDER BY s.last_us, s.id"
        ),
        params![before_us, i64::from(keep_unsettled), after.0, after.1, end.0, end.1],
    )?;
    let mut due = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, key, tc, rc, last_us, te): (i64, String, i64, i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
        if te > 0 && recent_task_event(tx, &key, before_us)? {
            continue;
        }
        due.push((id, key, tc, rc, last_us));
    }
    Ok((due, looked, last))
}

/// Task ids whose defects reach sequence `id` by its name: the id itself, and each part of it
/// before a `:` (`task-7:review` is reached by `task-7`), as `ledger::task_sequences` matches.
fn tasks_by_name(id: &str) -> Vec<&str> {
    let mut out = vec![id];
    out.extend(id.match_indices(':').map(|(i, _)| &id[..i]));
    out
}

/// Whether a ledger event targeting a task reaches sequence `id` by name at or after `before_us`.
fn recent_task_event(tx: &dyn Sql, id: &str, before_us: i64) -> Result<bool, StoreError> {
    let tasks = serde_json::to_string(&tasks_by_name(id)).map_err(|e| StoreError::Failed(e.to_string()))?;
    Ok(tx
        .query_opt(
            "SELECT 1 FROM reward_events WHERE target_task IN (SELECT value FROM json_each(?1)) AND created_us >= ?2 LIMIT 1",
            params![tasks.as_str(), before_us],
            |r| r.get::<_, i64>(0),
        )?
        .is_some())
}

/// Count what is due without deleting anything (`rltrace gc --dry-run`). Scans: for the CLI,
/// not for the collector's background passes.
pub(crate) fn due(tx: &dyn Sql, cut: &Cutoffs, keep_unsettled: bool) -> Result<GcCounts, StoreError> {
    let mut out = GcCounts::default();
    if let Some(before) = cut.spans_before_ns {
        out.spans = tx.query_row("SELECT count(*) FROM spans WHERE seq_ref IS NULL AND end_ns < ?1", params![i64::try_from(before).unwrap_or(i64::MAX)], |r| r.get::<_, i64>(0))?
            as u64;
    }
    if let Some(before) = cut.sequences_before_us {
        let seqs = all_due_sequences(tx, before, keep_unsettled)?;
        out.sequences = seqs.len() as u64;
        out.triplets = seqs.iter().map(|s| s.2.max(0) as u64).sum();
        for (_, id, _, _) in &seqs {
            out.reward_events += tx.query_row("SELECT count(*) FROM reward_events WHERE seq_key = ?1", params![id.as_str()], |r| r.get::<_, i64>(0))? as u64;
        }
    }
    Ok(out)
}

/// One pass inside the writer's transaction.
/// `busy`: sequences the same transaction wrote to (their new rows are not yet in their
/// aggregates): never deleted by this pass.
pub(crate) fn pass(
    tx: &dyn Sql,
    c: &mut Caches,
    cut: &Cutoffs,
    keep_unsettled: bool,
    after: Option<(i64, i64)>,
    busy: &dyn Fn(i64) -> bool,
) -> Result<GcCounts, StoreError> {
    let batch = cut.batch.max(1);
    let mut out = GcCounts::default();
    if let Some(before) = cut.spans_before_ns {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let cursor: i64 = tx
            .query_opt("SELECT value FROM meta WHERE key = 'gc_span_cursor'", params![], |r| r.get::<_, String>(0))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let window = batch * SCAN_FACTOR;
        let rows = tx.rows(
            "SELECT id, CASE WHEN seq_ref IS NULL THEN 1 ELSE 0 END, end_ns FROM spans WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![cursor, i64::try_from(window).unwrap_or(i64::MAX)],
        )?;
        let scanned = rows.len();
        let mut next = cursor;
        let mut doomed: Vec<i64> = Vec::new();
        let mut stopped = false;
        for r in rows {
            let (id, plain, end): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if plain == 1 {
                if end >= before {
                    // A span that ends in the future (a client's clock, or a bad value) would
                    // hold the cursor for good: it is stepped over and kept instead.
                    if end > i64::try_from(cut.now_ns.saturating_add(FUTURE_SLACK_NS)).unwrap_or(i64::MAX) {
                        next = id;
                        continue;
                    }
                    stopped = true;
                    break;
                }
                doomed.push(id);
            }
            next = id;
            if doomed.len() == batch {
                break;
            }
        }
        if !doomed.is_empty() {
            let json = serde_json::to_string(&doomed).map_err(|e| StoreError::Failed(e.to_string()))?;
            let n = tx.exec("DELETE FROM spans WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?1)) AND seq_ref IS NULL", params![json])?;
            out.spans = n;
        }
        // SQLite hands out max(id) + 1 again when the newest rows are gone: the cursor never passes
        // the newest row left, so spans stored later are walked too.
        if !doomed.is_empty() {
            let newest: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM spans", params![], |r| r.get(0))?;
            next = next.min(newest);
            rewind_cursors(tx)?;
        }
        if next != cursor {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES('gc_span_cursor', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![next.to_string()],
            )?;
        }
        out.more |= !stopped && (doomed.len() == batch || scanned == window);
    }
    if let Some(before) = cut.sequences_before_us {
        let (mut seqs, looked, last) = due_page(tx, before, keep_unsettled, after.unwrap_or((i64::MIN, i64::MIN)), batch)?;
        seqs.retain(|s| !busy(s.0));
        // A pass deletes at most `batch` triplet rows (a longer sequence alone in its pass), so
        // one transaction stays short whatever the sequences' lengths.
        let due = seqs.len();
        let mut rows = 0i64;
        let keep = seqs
            .iter()
            .position(|s| {
                rows += s.2.max(1);
                rows > batch as i64
            })
            .unwrap_or(seqs.len())
            .max(1)
            .min(due);
        seqs.truncate(keep);
        out.cursor = if keep < due { seqs.last().map(|s| (s.4, s.0)) } else { last.or(after) };
        out.more |= keep < due || looked == batch;
        if !seqs.is_empty() {
            let ids: Vec<i64> = seqs.iter().map(|s| s.0).collect();
            let keys: Vec<&str> = seqs.iter().map(|s| s.1.as_str()).collect();
            let ids_json = serde_json::to_string(&ids).map_err(|e| StoreError::Failed(e.to_string()))?;
            let keys_json = serde_json::to_string(&keys).map_err(|e| StoreError::Failed(e.to_string()))?;
            const IDS: &str = "(SELECT CAST(value AS BIGINT) FROM json_each(?1))";
            let triplet_rows = if tx.dialect() == crate::db::Dialect::Postgres {
                // PostgreSQL's role posting rows lose the deleted ids with them, and its role
                // links go by the roles of the deleted rows.
                crate::pg_ingest::delete_sequence_spans(tx, &ids)?
            } else {
                tx.exec(&format!("DELETE FROM sequence_roles WHERE seq_ref IN {IDS}"), params![ids_json.as_str()])?;
                tx.exec(&format!("DELETE FROM spans WHERE seq_ref IN {IDS}"), params![ids_json.as_str()])?
            };
            let events = tx.exec("DELETE FROM reward_events WHERE seq_key IN (SELECT value FROM json_each(?1))", params![keys_json.as_str()])?;
            tx.exec(&format!("DELETE FROM task_sequences WHERE seq_ref IN {IDS}"), params![ids_json.as_str()])?;
            // The bridge's finished deliveries go with the sequence; a pending one carries what it
            // needs and is still delivered, detached (a negative reference) so that a sequence
            // given the same row id later is not taken for it.
            tx.exec(&format!("DELETE FROM agl_outbox WHERE seq_ref IN {IDS} AND state <> 0"), params![ids_json.as_str()])?;
            tx.exec(&format!("UPDATE agl_outbox SET seq_ref = -seq_ref WHERE seq_ref IN {IDS}"), params![ids_json.as_str()])?;
            tx.exec(&format!("DELETE FROM sequences WHERE id IN {IDS}"), params![ids_json.as_str()])?;
            rewind_cursors(tx)?;
            let triplets: i64 = seqs.iter().map(|s| s.2.max(0)).sum();
            let rewarded: i64 = seqs.iter().map(|s| s.3.max(0)).sum();
            out.sequences = seqs.len() as u64;
            out.triplets = triplets as u64;
            out.reward_events = events;
            tx.execute(
                "UPDATE counters SET spans = spans - ?1, triplets = triplets - ?2, sequences = sequences - ?3,
                   reward_events = reward_events - ?4, rewarded_triplets = rewarded_triplets - ?5 WHERE id = 1",
                params![i64::try_from(triplet_rows).unwrap_or(0), triplets, seqs.len() as i64, i64::try_from(events).unwrap_or(0), rewarded],
            )?;
            let generation: i64 = tx
                .query_opt("SELECT value FROM meta WHERE key = 'gc_generation'", params![], |r| r.get::<_, String>(0))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
                + 1;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES('gc_generation', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![generation.to_string()],
            )?;
            c.gc_generation = generation;
            for (id, key, _, _, _) in &seqs {
                c.sequences.remove(key);
                c.role_links.remove(id);
                c.task_links.remove(id);
            }
        }
    }
    if out.spans > 0 {
        tx.execute("UPDATE counters SET spans = spans - ?1 WHERE id = 1", params![i64::try_from(out.spans).unwrap_or(0)])?;
    }
    Ok(out)
}

/// SQLite hands out `max(id) + 1` again once the newest span rows are deleted: a forwarding
/// cursor past the newest row left is moved back to it in the same transaction, so the spans
/// stored later (which may get ids at or below where it was) are forwarded too. (No row the
/// cursor steps back over exists, so nothing is sent twice; on PostgreSQL ids never come back.)
fn rewind_cursors(tx: &dyn Sql) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE forward_cursors SET after_id = (SELECT coalesce(max(id), 0) FROM spans) WHERE after_id > (SELECT coalesce(max(id), 0) FROM spans)",
        params![],
    )?;
    Ok(())
}

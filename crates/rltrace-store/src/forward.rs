//! Forwarding's side of the store: spans in arrival order (the span row id: rows get ids in commit
//! order on both backends) rebuilt as they were received, and one durable cursor per target with a
//! lease, so that of several collectors on one database one at a time sends a target's spans.

use std::collections::HashMap;
use std::sync::Arc;

use rltrace_core::span::{Origin, SpanExtras, SpanRecord, attributes_from_json, events_from_json};

use crate::StoreError;
use crate::db::{Sql, SqlExt, params};
use crate::read::ReadTx;

/// A stored span with its row id.
#[derive(Debug, Clone)]
pub struct ForwardSpan {
    /// Row id: the position in arrival order.
    pub id: i64,
    /// The span as received (after redaction).
    pub span: SpanRecord,
}

/// One read of spans after a cursor.
#[derive(Debug, Clone, Default)]
pub struct ForwardBatch {
    /// The spans, by row id.
    pub spans: Vec<ForwardSpan>,
    /// The cursor after this batch: the last row id looked at (a run of rows a `triplets` target
    /// does not take is stepped over without being sent).
    pub scanned_to: i64,
    /// The newest row id stored when the batch was read.
    pub last_id: i64,
}

/// A target's cursor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardCursor {
    /// Spans up to this row id were delivered (or skipped).
    pub after_id: i64,
    /// The collector holding the lease.
    pub owner: Option<String>,
    /// The lease ends (microseconds since the epoch).
    pub lease_until_us: i64,
    /// The cursor last moved (microseconds since the epoch; 0 never).
    pub updated_us: i64,
}

/// Rows a `triplets` target looks at per read, in multiples of its batch (a long run of plain
/// spans is stepped over in reads of bounded work).
const SCAN_FACTOR: i64 = 16;

impl ReadTx<'_> {
    /// Up to `limit` spans stored after row `after`, oldest first; only triplet spans when
    /// `triplets_only`. At most `limit * 16` rows are looked at.
    pub fn forward_batch(&self, after: i64, limit: usize, triplets_only: bool) -> Result<ForwardBatch, StoreError> {
        let limit = limit.clamp(1, 100_000);
        let last_id: i64 = self.tx.query_row("SELECT coalesce(max(id), 0) FROM spans", params![], |r| r.get(0))?;
        if last_id <= after {
            return Ok(ForwardBatch { spans: Vec::new(), scanned_to: after, last_id });
        }
        let window_end = if triplets_only { after.saturating_add(limit as i64 * SCAN_FACTOR) } else { i64::MAX };
        let sql = format!(
            "SELECT s.id, t.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, s.status_code,
                    s.status_message, s.attributes, s.events, s.resource_ref, r.attributes, s.scope, s.extras
             FROM spans s JOIN traces t ON t.id = s.trace_ref LEFT JOIN resources r ON r.id = s.resource_ref
             WHERE s.id > ?1 AND s.id <= ?2{} ORDER BY s.id LIMIT ?3",
            if triplets_only { " AND s.seq_ref IS NOT NULL" } else { "" }
        );
        let mut origins: HashMap<(Option<i64>, String, String), Arc<Origin>> = HashMap::new();
        let mut spans = Vec::new();
        let mut stmt = self.tx.prepare_cached(sql)?;
        let mut rows = stmt.query(params![after, window_end, limit as i64])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let bad = |what: String| StoreError::Corrupt(format!("span row {id}: {what}"));
            let trace: Vec<u8> = r.get(1)?;
            let trace_id: [u8; 16] = trace.as_slice().try_into().map_err(|_| bad("trace id".into()))?;
            let span_id: i64 = r.get(2)?;
            let parent: Option<i64> = r.get(3)?;
            let extras_text: Option<String> = r.get(15)?;
            let (extras, scope_version, bytes_keys) = match extras_text {
                Some(t) => SpanExtras::from_stored_json(&t).map_err(bad)?,
                None => (SpanExtras::default(), String::new(), Vec::new()),
            };
            let resource_ref: Option<i64> = r.get(12)?;
            let resource_text: Option<String> = r.get(13)?;
            let scope_name: String = r.get(14)?;
            let origin = match origins.get(&(resource_ref, scope_name.clone(), scope_version.clone())) {
                Some(o) => Arc::clone(o),
                None => {
                    let resource = match resource_text {
                        Some(t) => attributes_from_json(&t).map_err(bad)?,
                        None => Vec::new(),
                    };
                    let o = Arc::new(Origin { resource, scope_name: scope_name.clone(), scope_version: scope_version.clone() });
                    origins.insert((resource_ref, scope_name, scope_version), Arc::clone(&o));
                    o
                }
            };
            let attributes: String = r.get(10)?;
            let mut attributes = attributes_from_json(&attributes).map_err(bad)?;
            rltrace_core::span::restore_bytes(&mut attributes, &bytes_keys);
            let events: String = r.get(11)?;
            let span = SpanRecord {
                trace_id,
                span_id: span_id.to_be_bytes(),
                parent_span_id: parent.map(i64::to_be_bytes),
                name: r.get(4)?,
                kind: r.get(5)?,
                start_time_unix_nano: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                end_time_unix_nano: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                status_code: r.get(8)?,
                status_message: r.get(9)?,
                attributes,
                events: events_from_json(&events, &extras.event_times).map_err(bad)?,
                origin,
                extras,
            };
            spans.push(ForwardSpan { id, span });
        }
        let scanned_to = if spans.len() == limit { spans.last().map_or(after, |s| s.id) } else { window_end.min(last_id) };
        Ok(ForwardBatch { spans, scanned_to, last_id })
    }

    /// The newest span row id (0 for an empty store).
    pub fn last_span_id(&self) -> Result<i64, StoreError> {
        self.tx.query_row("SELECT coalesce(max(id), 0) FROM spans", params![], |r| r.get(0))
    }

    /// Every target's stored cursor, by name.
    pub fn forward_cursors(&self) -> Result<Vec<(String, ForwardCursor)>, StoreError> {
        self.tx
            .prepare_cached("SELECT target, after_id, owner, lease_until_us, updated_us FROM forward_cursors ORDER BY target")?
            .query_map(params![], |r| {
                Ok((r.get(0)?, ForwardCursor { after_id: r.get(1)?, owner: r.get(2)?, lease_until_us: r.get(3)?, updated_us: r.get(4)? }))
            })?
            .collect()
    }
}

/// A change to a target's cursor, made by the writer.
#[derive(Debug, Clone)]
pub enum CursorOp {
    /// Take (or keep) the lease of `target` for `lease_us`; a new target starts at the beginning
    /// of the store, or at its newest span when `from_now`.
    Claim {
        /// Whether a new target starts at the newest span instead of the first.
        from_now: bool,
    },
    /// Move the cursor from `from` to `to` and renew the lease, if the lease is still ours and
    /// the cursor is where we left it.
    Advance {
        /// Where the cursor was.
        from: i64,
        /// Where it goes.
        to: i64,
    },
    /// Give the lease up (a collector stopping).
    Release,
}

/// Apply `op` to `target`'s cursor for `owner`: the cursor when the lease is ours after it, `None`
/// when another collector holds it.
pub(crate) fn apply(tx: &dyn Sql, target: &str, owner: &str, lease_us: i64, now: i64, op: &CursorOp) -> Result<Option<i64>, StoreError> {
    let current = |tx: &dyn Sql| -> Result<Option<(i64, Option<String>, i64)>, StoreError> {
        tx.query_opt("SELECT after_id, owner, lease_until_us FROM forward_cursors WHERE target = ?1", params![target], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
    };
    match op {
        CursorOp::Claim { from_now } => {
            let start: i64 = if *from_now { tx.query_row("SELECT coalesce(max(id), 0) FROM spans", params![], |r| r.get(0))? } else { 0 };
            tx.execute(
                "INSERT INTO forward_cursors(target, after_id, owner, lease_until_us, updated_us) VALUES (?1, ?2, NULL, 0, 0)
                 ON CONFLICT(target) DO NOTHING",
                params![target, start],
            )?;
            let Some((after, holder, until)) = current(tx)? else { return Err(StoreError::Failed(format!("no cursor for {target}"))) };
            if holder.as_deref().is_some_and(|h| h != owner) && until > now {
                return Ok(None);
            }
            tx.execute(
                "UPDATE forward_cursors SET owner = ?2, lease_until_us = ?3 WHERE target = ?1",
                params![target, owner, now.saturating_add(lease_us)],
            )?;
            Ok(Some(after))
        }
        CursorOp::Advance { from, to } => {
            let n = tx.execute(
                "UPDATE forward_cursors SET after_id = ?4, lease_until_us = ?5, updated_us = ?6
                 WHERE target = ?1 AND owner = ?2 AND after_id = ?3",
                params![target, owner, *from, *to, now.saturating_add(lease_us), now],
            )?;
            Ok((n == 1).then_some(*to))
        }
        CursorOp::Release => {
            tx.execute("UPDATE forward_cursors SET owner = NULL, lease_until_us = 0 WHERE target = ?1 AND owner = ?2", params![target, owner])?;
            Ok(current(tx)?.map(|c| c.0))
        }
    }
}

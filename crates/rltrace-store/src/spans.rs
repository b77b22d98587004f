//! Reads of raw spans: a trace in tree order.

use std::collections::HashMap;

use rltrace_core::ids::{default_triplet_id, to_hex};
use crate::db::{SqlExt, params};

use crate::StoreError;
use crate::read::ReadTx;

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

impl ReadTx<'_> {
    /// The spans of a trace in tree order (parents before children, siblings by start time).
    pub fn trace(&self, trace_id: &[u8; 16]) -> Result<Option<Vec<SpanOut>>, StoreError> {
        let tref: Option<i64> =
            self.tx.prepare_cached("SELECT id FROM traces WHERE trace_id = ?1")?.query_opt(params![&trace_id[..]], |r| r.get(0))?;
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
            .query_map(params![tref], |r| {
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
}

//! The triplet JSON object of export format v1 (DESIGN section 7), written without re-parsing the
//! stored state and action.

use crate::reward::Effective;
use crate::time::{Micros, format_micros};

/// Version of the triplets JSONL format.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// One triplet as read back: the stored JSON text of state and action plus its effective reward.
#[derive(Debug, Clone)]
pub struct TripletView {
    /// Triplet id.
    pub triplet_id: String,
    /// Sequence id.
    pub sequence_id: String,
    /// Position in the sequence.
    pub sequence_index: i64,
    /// `rl.timestamp_utc` or span start.
    pub timestamp: Micros,
    /// State as JSON object text.
    pub state: String,
    /// Action as JSON object text.
    pub action: String,
    /// Effective reward and its sources.
    pub effective: Effective,
    /// Trace id (hex).
    pub trace_id: String,
    /// Span id (hex).
    pub span_id: String,
    /// `rl.propensity`.
    pub propensity: Option<f64>,
    /// `rl.sampling.probability`.
    pub sampling_probability: Option<f64>,
    /// `state.agent_role`.
    pub role: Option<String>,
    /// `rl.sequence_end`.
    pub sequence_end: bool,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_f64(out: &mut Vec<u8>, v: f64) {
    match serde_json::Number::from_f64(v) {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// Append the triplet's JSON object (no newline) to `out`.
pub fn write_triplet_json(out: &mut Vec<u8>, t: &TripletView) {
    out.extend_from_slice(b"{\"triplet_id\":");
    push_str(out, &t.triplet_id);
    out.extend_from_slice(b",\"sequence_id\":");
    push_str(out, &t.sequence_id);
    out.extend_from_slice(b",\"sequence_index\":");
    out.extend_from_slice(t.sequence_index.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp_utc\":\"");
    out.extend_from_slice(format_micros(t.timestamp).as_bytes());
    out.extend_from_slice(b"\",\"state\":");
    out.extend_from_slice(t.state.as_bytes());
    out.extend_from_slice(b",\"action\":");
    out.extend_from_slice(t.action.as_bytes());
    out.extend_from_slice(b",\"reward\":");
    match t.effective.reward {
        Some(r) => push_f64(out, r),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reward_sources\":{");
    for (i, (name, sv)) in t.effective.sources.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, name);
        out.push(b':');
        push_f64(out, sv.value);
    }
    out.extend_from_slice(b"},\"reward_source\":");
    match &t.effective.newest_source {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reward_assigned_at\":");
    match t.effective.newest_at {
        Some(at) => {
            out.push(b'"');
            out.extend_from_slice(format_micros(at).as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"propensity\":");
    match t.propensity {
        Some(p) => push_f64(out, p),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"sampling_probability\":");
    match t.sampling_probability {
        Some(p) => push_f64(out, p),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"trace_id\":\"");
    out.extend_from_slice(t.trace_id.as_bytes());
    out.extend_from_slice(b"\",\"span_id\":\"");
    out.extend_from_slice(t.span_id.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// The triplet as a `serde_json::Value` (for API bodies that embed it).
pub fn triplet_value(t: &TripletView) -> serde_json::Value {
    let mut buf = Vec::with_capacity(t.state.len() + t.action.len() + 256);
    write_triplet_json(&mut buf, t);
    serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::SourceValue;

    #[test]
    fn line_is_valid_json_with_every_field() {
        let mut effective = Effective { reward: Some(0.5), ..Effective::default() };
        effective.sources.insert("hitl".into(), SourceValue { value: 0.5, at: 1, seq_no: 1, events: 1, aggregation: crate::policy::Aggregation::Latest, weight: 1.0 });
        effective.newest_source = Some("hitl".into());
        effective.newest_at = Some(1_700_000_000_000_000);
        let t = TripletView {
            triplet_id: "t\"1".into(),
            sequence_id: "s".into(),
            sequence_index: 2,
            timestamp: 0,
            state: r#"{"agent_role":"Code"}"#.into(),
            action: "{}".into(),
            effective,
            trace_id: "ab".into(),
            span_id: "cd".into(),
            propensity: None,
            sampling_probability: Some(0.25),
            role: None,
            sequence_end: false,
        };
        let v = triplet_value(&t);
        assert_eq!(v["triplet_id"], "t\"1");
        assert_eq!(v["state"]["agent_role"], "Code");
        assert_eq!(v["reward"], 0.5);
        assert_eq!(v["reward_sources"]["hitl"], 0.5);
        assert_eq!(v["reward_assigned_at"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["timestamp_utc"], "1970-01-01T00:00:00.000000Z");
        assert!(v["propensity"].is_null());
        assert_eq!(v["sampling_probability"], 0.25);
    }
}

/// Counts recorded in a manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ManifestCounts {
    /// Triplets exported.
    pub triplets: u64,
    /// Sequences with at least one triplet exported.
    pub sequences: u64,
    /// Exported triplets with an effective reward.
    pub rewarded_triplets: u64,
}

/// The export manifest: format, filters, the reward policy and its hash, counts and time of export.
pub fn manifest(filters: serde_json::Value, policy: &crate::Policy, counts: ManifestCounts, exported_at: Micros) -> serde_json::Value {
    serde_json::json!({
        "format": "triplets-jsonl",
        "format_version": EXPORT_FORMAT_VERSION,
        "exported_at": format_micros(exported_at),
        "filters": filters,
        "reward_policy": policy.to_json(),
        "reward_policy_hash": policy.hash(),
        "counts": {
            "triplets": counts.triplets,
            "sequences": counts.sequences,
            "rewarded_triplets": counts.rewarded_triplets,
        },
    })
}

//! The triplet JSON object of export format v1 (DESIGN section 7), serialised with serde; the
//! stored state and action are written as raw JSON, never turned into a value tree.

use crate::reward::Effective;
use crate::time::{Micros, format_micros, micros_text};

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

/// The export line of one triplet (format v1): borrowed fields, the stored state and action
/// written as they are (`RawValue`), never parsed into a value tree.
#[derive(serde::Serialize)]
struct Line<'a> {
    triplet_id: &'a str,
    sequence_id: &'a str,
    sequence_index: i64,
    #[serde(serialize_with = "time_utc")]
    timestamp_utc: Micros,
    #[serde(serialize_with = "raw_json")]
    state: &'a str,
    #[serde(serialize_with = "raw_json")]
    action: &'a str,
    reward: Option<f64>,
    #[serde(serialize_with = "source_values")]
    reward_sources: &'a std::collections::BTreeMap<String, crate::reward::SourceValue>,
    reward_source: Option<&'a str>,
    #[serde(serialize_with = "opt_time_utc")]
    reward_assigned_at: Option<Micros>,
    propensity: Option<f64>,
    sampling_probability: Option<f64>,
    trace_id: &'a str,
    span_id: &'a str,
}

fn raw_json<S: serde::Serializer>(text: &&str, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(text).map_err(|e| serde::ser::Error::custom(format!("stored JSON is not valid: {e}")))?;
    raw.serialize(s)
}

fn time_utc<S: serde::Serializer>(at: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(micros_text(*at).as_str())
}

fn opt_time_utc<S: serde::Serializer>(at: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(micros_text(*at).as_str()),
        None => s.serialize_none(),
    }
}

fn source_values<S: serde::Serializer>(m: &&std::collections::BTreeMap<String, crate::reward::SourceValue>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k, v.value)))
}

impl<'a> From<&'a TripletView> for Line<'a> {
    fn from(t: &'a TripletView) -> Line<'a> {
        Line {
            triplet_id: &t.triplet_id,
            sequence_id: &t.sequence_id,
            sequence_index: t.sequence_index,
            timestamp_utc: t.timestamp,
            state: &t.state,
            action: &t.action,
            reward: t.effective.reward,
            reward_sources: &t.effective.sources,
            reward_source: t.effective.newest_source.as_deref(),
            reward_assigned_at: t.effective.newest_at,
            propensity: t.propensity,
            sampling_probability: t.sampling_probability,
            trace_id: &t.trace_id,
            span_id: &t.span_id,
        }
    }
}

/// Write the triplet's JSON object (no newline) to `out`. Fails only when a stored state or
/// action is not valid JSON.
pub fn write_triplet_json(out: &mut Vec<u8>, t: &TripletView) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, &Line::from(t))
}

/// The triplet as a `serde_json::Value` (for API bodies that embed it).
pub fn triplet_value(t: &TripletView) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(Line::from(t))
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
        let v = triplet_value(&t).expect("valid");
        let mut line = Vec::new();
        write_triplet_json(&mut line, &t).expect("valid");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&line).expect("json"), v);
        // The stored text is written as it is.
        assert!(String::from_utf8(line).expect("utf8").contains(r#""state":{"agent_role":"Code"}"#));
        let broken = TripletView { state: "{not json".into(), ..t.clone() };
        assert!(write_triplet_json(&mut Vec::new(), &broken).is_err());
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

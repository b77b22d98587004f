//! The reward what-if (`POST /api/v1/whatif` and the web UI's what-if page): a proposed policy
//! is read and checked (a bad field is 422 with its path, `policy.sources.hitl.weight: ...`), the
//! store hands over the most recent sequences matching the filters as rows (bounded:
//! [`MAX_SEQUENCES`] sequences, [`MAX_TRIPLETS`] triplets), and `rltrace_core::whatif` evaluates
//! them under both policies. Nothing is written: the store is only read.

use rltrace_core::Policy;
use rltrace_core::time::{Micros, parse_rfc3339_micros};
use rltrace_store::SequenceFilter;
use serde_json::Value;

use crate::AppState;
use crate::dto::{WhatIfRequest, WhatIfResponse};
use crate::error::ApiError;

/// Sequences evaluated by default.
pub const DEFAULT_SEQUENCES: usize = 1000;
/// Most sequences one what-if evaluates.
pub const MAX_SEQUENCES: usize = 10_000;
/// Most triplets one what-if reads (a longer sequence is passed over and counted).
pub const MAX_TRIPLETS: usize = 100_000;
/// Histogram bins by default.
pub const DEFAULT_BINS: usize = 10;
/// Most-changed sequences listed by default.
pub const DEFAULT_TOP: usize = 20;

/// A checked what-if request.
#[derive(Debug, Clone)]
pub struct WhatIfParams {
    /// The proposed policy.
    pub policy: Policy,
    /// Only this sequence.
    pub sequence_id: Option<String>,
    /// Role filter.
    pub role: Option<String>,
    /// Triplets at or after.
    pub since: Option<Micros>,
    /// Triplets at or before.
    pub until: Option<Micros>,
    /// Completeness filter.
    pub complete: Option<bool>,
    /// Sequences to evaluate.
    pub sequences: usize,
    /// Histogram bins.
    pub bins: usize,
    /// Most-changed entries.
    pub top: usize,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::Validation(m.into())
}

/// Read a policy given as JSON: the structure of the TOML file, or `{"toml": "..."}`. Errors
/// name the bad field's path under `policy`.
pub fn parse_policy(v: &Value) -> Result<Policy, ApiError> {
    let Some(o) = v.as_object() else { return Err(invalid("policy: must be an object (the policy's fields, or {\"toml\": \"...\"})")) };
    if let Some(t) = o.get("toml") {
        if o.len() > 1 {
            return Err(invalid("policy: give either the policy's fields or \"toml\", not both"));
        }
        let Some(text) = t.as_str() else { return Err(invalid("policy.toml: must be a string holding the policy file's text")) };
        Policy::from_toml_with_paths(text).map_err(|e| match e.path() {
            Some(_) => invalid(format!("policy.{e}")),
            None => invalid(format!("policy.toml: {e}")),
        })
    } else {
        Policy::from_json_value(v).map_err(|e| match e.path() {
            Some(_) => invalid(format!("policy.{e}")),
            None => invalid(format!("policy: {e}")),
        })
    }
}

fn bounded(field: &str, v: Option<u64>, default: usize, min: usize, max: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| invalid(format!("{field}: must be an integer in [{min}, {max}], got {n}"))),
    }
}

fn time(field: &str, v: Option<String>) -> Result<Option<Micros>, ApiError> {
    v.map(|t| parse_rfc3339_micros(&t).ok_or_else(|| invalid(format!("{field}: must be an RFC 3339 timestamp, got {t:?}")))).transpose()
}

fn text(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(t) if t.is_empty() => Err(invalid(format!("{field}: must not be empty"))),
        other => Ok(other),
    }
}

/// Check a request body (422 for the wrong shape or a bad value, with the field's path).
pub fn parse_request(body: &Value) -> Result<WhatIfParams, ApiError> {
    let WhatIfRequest { policy, sequence_id, role, since, until, complete, sequences, bins, top } = crate::api::typed(body)?;
    Ok(WhatIfParams {
        policy: parse_policy(&policy)?,
        sequence_id: text("sequence_id", sequence_id)?,
        role: text("role", role)?,
        since: time("since", since)?,
        until: time("until", until)?,
        complete,
        sequences: bounded("sequences", sequences, DEFAULT_SEQUENCES, 1, MAX_SEQUENCES)?,
        bins: bounded("bins", bins, DEFAULT_BINS, 1, rltrace_core::whatif::MAX_BINS)?,
        top: bounded("top", top, DEFAULT_TOP, 0, rltrace_core::whatif::MAX_TOP)?,
    })
}

/// Evaluate the sample under the current and the proposed policy (on a blocking thread).
pub async fn run(st: &AppState, p: WhatIfParams) -> Result<WhatIfResponse, ApiError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let filter = SequenceFilter { role: p.role.clone(), since: p.since, until: p.until, ..SequenceFilter::default() };
        let (sample, now) = st.store.read(|tx| Ok((tx.recent_sequences(&filter, p.sequence_id.as_deref(), p.sequences, MAX_TRIPLETS)?, tx.now())))?;
        let keep = |t: &rltrace_core::export::TripletView, complete: bool| {
            p.role.as_deref().is_none_or(|r| t.role.as_deref() == Some(r))
                && p.since.is_none_or(|s| t.timestamp >= s)
                && p.until.is_none_or(|u| t.timestamp <= u)
                && p.complete.is_none_or(|c| c == complete)
        };
        let w = rltrace_core::whatif::what_if(&sample.sequences, &st.policy, &p.policy, now, p.bins, p.top, keep);
        let policy_toml = p.policy.to_toml().map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(WhatIfResponse {
            bounded: sample.bounded,
            changed_triplets: w.changed_triplets as u64,
            current: w.current.into(),
            current_policy_hash: st.policy.hash(),
            evaluated_sequences: w.sequences as u64,
            evaluated_triplets: w.triplets as u64,
            max_sequences: p.sequences as u64,
            most_changed: w.most_changed.into_iter().map(Into::into).collect(),
            policy: p.policy.to_json(),
            policy_hash: p.policy.hash(),
            policy_toml,
            proposed: w.proposed.into(),
            skipped_long_sequences: sample.skipped_long as u64,
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(r: Result<WhatIfParams, ApiError>) -> String {
        match r {
            Err(ApiError::Validation(m)) => m,
            Err(e) => panic!("not a validation error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn bad_policies_name_the_field() {
        let m = message(parse_request(&json!({"policy": {"sources": {"hitl": {"weight": "heavy"}}}})));
        assert!(m.starts_with("policy.sources.hitl.weight:"), "{m}");
        let m = message(parse_request(&json!({"policy": {"sources": {"hitl": {"weight": -2}}}})));
        assert!(m.starts_with("policy.sources.hitl.weight:"), "{m}");
        let m = message(parse_request(&json!({"policy": {"toml": "[hitl]\napproved = 3.0\n"}})));
        assert!(m.starts_with("policy.hitl.approved:"), "{m}");
        let m = message(parse_request(&json!({"policy": {"toml": "[hitl"}})));
        assert!(m.starts_with("policy.toml:"), "{m}");
        let m = message(parse_request(&json!({"policy": {"toml": "", "hitl": {}}})));
        assert!(m.contains("not both"), "{m}");
        let m = message(parse_request(&json!({"policy": {}, "sequences": 0})));
        assert!(m.starts_with("sequences:"), "{m}");
        let m = message(parse_request(&json!({"policy": {}, "since": "yesterday"})));
        assert!(m.starts_with("since:"), "{m}");
        let m = message(parse_request(&json!({"policy": {}, "colour": "red"})));
        assert!(m.contains("colour"), "{m}");
        let ok = parse_request(&json!({"policy": {"toml": "[sources.hitl]\nweight = 2.5\n"}, "role": "Code", "bins": 20})).expect("valid");
        assert_eq!(ok.policy.source_weight("hitl"), 2.5);
        assert_eq!((ok.bins, ok.top, ok.sequences), (20, DEFAULT_TOP, DEFAULT_SEQUENCES));
    }
}

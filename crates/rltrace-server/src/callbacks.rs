//! The delayed-reward callbacks of DESIGN section 5: a human decision (`hitl`), test results
//! (`tests`) and a defect found later (`defects`). Each becomes one ledger event that keeps its
//! inputs in `metadata`; HITL and defect values are derived from the policy at read time.
//!
//! Each body is read in two steps: its shape, by the typed request of [`crate::dto`] (unknown
//! fields, wrong types and missing fields are reported with their path), then its values, by the
//! domain rules below and in `rltrace_core`. Both fail with 422.

use rltrace_core::Policy;
use rltrace_core::reward::{HitlDecision, PSP_DEFECT_TYPES, RewardTarget, Severity, Strategy, Valuation};
use rltrace_store::NewReward;
use serde_json::{Value, json};

use crate::api::{body_hash, merge_idempotency_key, typed};
use crate::dto::{DefectCallback, HitlCallback, TestsCallback};
use crate::error::ApiError;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::Validation(m.into())
}

/// A text field that must not be blank.
fn text(field: &str, v: String) -> Result<String, ApiError> {
    if v.trim().is_empty() { Err(invalid(format!("{field} must not be empty"))) } else { Ok(v) }
}

/// An optional text field that, when given, must not be blank.
fn opt_text(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|v| text(field, v)).transpose()
}

/// Validate a HITL callback: `{sequence_id, decision, reviewer, justification}`.
pub fn parse_hitl(body: &Value, header_key: Option<String>, policy: &Policy) -> Result<NewReward, ApiError> {
    let HitlCallback { sequence_id, decision, reviewer, justification, idempotency_key, pending } = typed(body)?;
    let sequence_id = text("sequence_id", sequence_id)?;
    let decision = HitlDecision::parse(&decision).ok_or_else(|| {
        invalid(format!("decision must be one of approved, approved_with_changes, rejected, deferred, got {decision:?}"))
    })?;
    let reviewer = text("reviewer", reviewer)?;
    if justification.trim().is_empty() {
        return Err(invalid("justification is required: a review decision must say why"));
    }
    let valuation = Valuation::Hitl(decision);
    Ok(NewReward {
        target: RewardTarget::Sequence { sequence_id, strategy: Strategy::Uniform },
        value: valuation.value(None, policy),
        source: "hitl".into(),
        reason: Some(format!("{} by {reviewer}: {justification}", decision.name())),
        idempotency_key: merge_idempotency_key(opt_text("idempotency_key", idempotency_key)?, header_key)?,
        metadata: Some(json!({"callback": "hitl", "decision": decision.name(), "reviewer": reviewer, "justification": justification}).to_string()),
        allow_pending: pending.unwrap_or(false),
        body_hash: body_hash(body),
        valuation,
    })
}

/// Validate a tests callback: `{sequence_id, passed, failed, skipped?}`; value `passed / (passed + failed)`.
pub fn parse_tests(body: &Value, header_key: Option<String>) -> Result<NewReward, ApiError> {
    let TestsCallback { sequence_id, passed, failed, skipped, idempotency_key, pending } = typed(body)?;
    let sequence_id = text("sequence_id", sequence_id)?;
    let (passed, failed, skipped) = (passed.0, failed.0, skipped.map(|s| s.0));
    let total = passed.checked_add(failed).ok_or_else(|| invalid("passed + failed is too large"))?;
    if total == 0 {
        return Err(invalid("passed and failed are both 0: no test result to reward"));
    }
    let value = passed as f64 / total as f64;
    let mut reason = format!("{passed} passed, {failed} failed");
    if let Some(s) = skipped {
        reason.push_str(&format!(", {s} skipped"));
    }
    Ok(NewReward {
        target: RewardTarget::Sequence { sequence_id, strategy: Strategy::Uniform },
        value: Some(value),
        source: "tests".into(),
        reason: Some(reason),
        idempotency_key: merge_idempotency_key(opt_text("idempotency_key", idempotency_key)?, header_key)?,
        metadata: Some(json!({"callback": "tests", "passed": passed, "failed": failed, "skipped": skipped}).to_string()),
        allow_pending: pending.unwrap_or(false),
        body_hash: body_hash(body),
        valuation: Valuation::Fixed,
    })
}

/// Validate a defect callback: `{task_id | sequence_id, defect_type, severity, phase_injected,
/// phase_removed, description}`.
pub fn parse_defect(body: &Value, header_key: Option<String>, policy: &Policy) -> Result<NewReward, ApiError> {
    let DefectCallback { task_id, sequence_id, defect_type, severity, phase_injected, phase_removed, description, idempotency_key, pending } =
        typed(body)?;
    let task_id = opt_text("task_id", task_id)?;
    let sequence_id = opt_text("sequence_id", sequence_id)?;
    let defect_type = text("defect_type", defect_type)?;
    if !PSP_DEFECT_TYPES.contains(&defect_type.as_str()) {
        return Err(invalid(format!("defect_type must be one of the PSP types {}, got {defect_type:?}", PSP_DEFECT_TYPES.join(", "))));
    }
    let severity_name = text("severity", severity)?;
    let severity = Severity::parse(&severity_name)
        .ok_or_else(|| invalid(format!("severity must be one of Low, Medium, High, Critical, got {severity_name:?}")))?;
    let phase_injected = text("phase_injected", phase_injected)?;
    let phase_removed = text("phase_removed", phase_removed)?;
    if phase_injected == phase_removed {
        return Err(invalid(format!("phase_injected and phase_removed are both {phase_injected:?}: a defect is removed in a later phase than it was injected")));
    }
    let description = text("description", description)?;
    let target = match (task_id.clone(), sequence_id.clone()) {
        (Some(task_id), None) => RewardTarget::Task { task_id, phase: phase_injected.clone() },
        (None, Some(sequence_id)) => RewardTarget::Sequence { sequence_id, strategy: Strategy::Phase { phase: phase_injected.clone() } },
        (Some(_), Some(_)) => return Err(invalid("give task_id or sequence_id, not both")),
        (None, None) => return Err(invalid("task_id or sequence_id is required")),
    };
    let valuation = Valuation::Defect(severity);
    Ok(NewReward {
        target,
        value: valuation.value(None, policy),
        source: "defect".into(),
        reason: Some(format!("{defect_type} ({}) injected in {phase_injected}, removed in {phase_removed}: {description}", severity.name())),
        idempotency_key: merge_idempotency_key(opt_text("idempotency_key", idempotency_key)?, header_key)?,
        metadata: Some(
            json!({
                "callback": "defects",
                "task_id": task_id,
                "sequence_id": sequence_id,
                "defect_type": defect_type,
                "severity": severity.name(),
                "phase_injected": phase_injected,
                "phase_removed": phase_removed,
                "description": description,
            })
            .to_string(),
        ),
        allow_pending: pending.unwrap_or(false),
        body_hash: body_hash(body),
        valuation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<NewReward, ApiError>) -> String {
        match r {
            Err(ApiError::Validation(m)) => m,
            Err(other) => panic!("not a validation error: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn hitl_values_follow_the_policy() {
        let p = Policy::default();
        let ok = |d: &str| parse_hitl(&json!({"sequence_id": "s", "decision": d, "reviewer": "ann", "justification": "ok"}), None, &p).expect(d);
        assert_eq!(ok("approved").value, Some(1.0));
        assert_eq!(ok("approved_with_changes").value, Some(0.7));
        assert_eq!(ok("rejected").value, Some(0.0));
        assert_eq!(ok("deferred").value, None);
        assert!(err(parse_hitl(&json!({"sequence_id": "s", "decision": "approved", "reviewer": "ann", "justification": "  "}), None, &p)).contains("justification"));
        assert!(err(parse_hitl(&json!({"sequence_id": "s", "decision": "maybe", "reviewer": "ann", "justification": "x"}), None, &p)).contains("decision"));
    }

    #[test]
    fn tests_and_defects_are_validated() {
        let p = Policy::default();
        let t = parse_tests(&json!({"sequence_id": "s", "passed": 3, "failed": 1, "skipped": 2}), None).expect("valid");
        assert_eq!(t.value, Some(0.75));
        assert!(err(parse_tests(&json!({"sequence_id": "s", "passed": 0, "failed": 0}), None)).contains("both 0"));
        assert!(err(parse_tests(&json!({"sequence_id": "s", "passed": -1, "failed": 0}), None)).contains("non-negative"));
        assert!(err(parse_tests(&json!({"sequence_id": "s", "passed": u64::MAX, "failed": u64::MAX}), None)).contains("too large"));
        let big = parse_tests(&json!({"sequence_id": "s", "passed": u64::MAX / 2, "failed": u64::MAX / 2}), None).expect("large but valid");
        assert!(big.value.is_some_and(|v| (v - 0.5).abs() < 1e-9));
        let d = json!({"task_id": "T", "defect_type": "80_Function", "severity": "High", "phase_injected": "Code", "phase_removed": "Test", "description": "off by one"});
        assert_eq!(parse_defect(&d, None, &p).expect("valid").value, Some(0.5));
        let mut same = d.clone();
        same["phase_removed"] = json!("Code");
        assert!(err(parse_defect(&same, None, &p)).contains("phase_injected"));
        let mut bad = d.clone();
        bad["defect_type"] = json!("85_Other");
        assert!(err(parse_defect(&bad, None, &p)).contains("PSP"));
        let mut sev = d;
        sev["severity"] = json!("Huge");
        assert!(err(parse_defect(&sev, None, &p)).contains("severity"));
    }
}

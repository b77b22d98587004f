//! Builders shared by the store's tests: spans as the OTLP edge hands them over, prepared the way
//! the collector prepares them, and reward requests as the API builds them.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;

use rltrace_core::reward::{RewardTarget, Severity, Strategy, Valuation};
use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanRecord};
use rltrace_core::{Limits, Policy};

use rltrace_store::{NewReward, PreparedSpan, Store, StoreConfig, prepare_spans};

pub fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.to_string())
}

pub fn f(v: f64) -> AttrValue {
    AttrValue::Double(v)
}

pub fn i(v: i64) -> AttrValue {
    AttrValue::Int(v)
}

/// A span of trace `trace` (a small number), span `span`, with `attrs`; start `span` ms.
pub fn span(trace: u32, span: u32, attrs: &[(&str, AttrValue)]) -> SpanRecord {
    let mut trace_id = [0u8; 16];
    trace_id[12..].copy_from_slice(&(trace + 1).to_be_bytes());
    let mut span_id = [0u8; 8];
    span_id[4..].copy_from_slice(&(span + 1).to_be_bytes());
    let start = 1_700_000_000_000_000_000u64 + u64::from(span) * 1_000_000;
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id: None,
        name: format!("span-{span}"),
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 500_000,
        status_code: 0,
        status_message: String::new(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        events: Vec::new(),
        origin: Arc::new(Origin { resource: vec![("service.name".into(), s("agents"))], ..Origin::default() }),
    }
}

/// A triplet span in sequence `seq`.
pub fn triplet_span(trace: u32, n: u32, seq: &str, attrs: &[(&str, AttrValue)]) -> SpanRecord {
    let mut all: Vec<(&str, AttrValue)> = vec![("rl.sequence_id", s(seq)), ("rl.state", s("{\"k\":1}")), ("rl.action", s("{\"ok\":true}"))];
    all.extend(attrs.iter().cloned());
    span(trace, n, &all)
}

/// An `rl.reward` span event.
pub fn reward_event(value: f64, source: &str, target: &str, strategy: &str, at_ns: u64) -> SpanEvent {
    SpanEvent {
        name: "rl.reward".into(),
        time_unix_nano: at_ns,
        attributes: vec![
            ("rl.reward.value".into(), f(value)),
            ("rl.reward.source".into(), s(source)),
            ("rl.reward.target".into(), s(target)),
            ("rl.reward.strategy".into(), s(strategy)),
        ],
    }
}

/// Analyse and prepare spans as the collector does; panics on a span the mapping rejects.
pub fn prepare(spans: Vec<SpanRecord>) -> Vec<PreparedSpan> {
    let limits = Limits { max_attribute_value_bytes: 1 << 20 };
    prepare_spans(spans.into_iter().map(|sp| rltrace_core::triplet::analyze(sp, &limits).expect("valid span")).collect())
}

pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path().join("rltrace.db"))).expect("open");
    (dir, store)
}

pub fn reward(target: RewardTarget, value: Option<f64>, source: &str) -> NewReward {
    NewReward {
        target,
        value,
        source: source.into(),
        reason: None,
        idempotency_key: None,
        metadata: None,
        allow_pending: false,
        body_hash: "h".into(),
        valuation: Valuation::Fixed,
    }
}

pub fn on_triplet(id: &str, value: f64, source: &str) -> NewReward {
    reward(RewardTarget::Triplet { triplet_id: id.into() }, Some(value), source)
}

pub fn on_sequence(seq: &str, strategy: Strategy, value: Option<f64>, source: &str) -> NewReward {
    reward(RewardTarget::Sequence { sequence_id: seq.into(), strategy }, value, source)
}

/// A High defect (value 0.5 under the default policy) by task id, injected in `phase`.
pub fn defect(task: &str, phase: &str) -> NewReward {
    NewReward {
        valuation: Valuation::Defect(Severity::High),
        ..reward(RewardTarget::Task { task_id: task.into(), phase: phase.into() }, Some(0.5), "defect")
    }
}

pub fn policy() -> Policy {
    Policy::default()
}

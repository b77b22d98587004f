//! Hot functions of the core: the span-to-triplet mapping of a loadgen-shaped span (about 1 KB,
//! 10 attributes with a 500-byte JSON state), and the effective rewards of a 10,000-triplet
//! sequence with a sequence reward and per-triplet rewards.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rltrace_core::reward::{Immediate, RewardEvent, RewardInput, RewardTarget, Strategy, Valuation, effective_rewards};
use rltrace_core::span::{AttrValue, Origin, SpanRecord};
use rltrace_core::{Limits, Policy};

fn span() -> SpanRecord {
    let state = format!(r#"{{"task_id":"task-1","agent_role":"Code","iteration":3,"budget_remaining":997,"pending_approvals":2,"prompt_summary":"{}"}}"#, "x".repeat(300));
    let s = |v: &str| AttrValue::Str(v.to_string());
    SpanRecord {
        trace_id: [1; 16],
        span_id: [2; 8],
        parent_span_id: None,
        name: "agent.Code.execute".into(),
        kind: 1,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        status_code: 1,
        status_message: String::new(),
        attributes: vec![
            ("rl.sequence_id".into(), s("task-1")),
            ("rl.sequence_index".into(), AttrValue::Int(3)),
            ("rl.sequence_scope".into(), s("pipeline")),
            ("rl.state".into(), AttrValue::Str(state)),
            ("rl.action".into(), s(r#"{"success":true,"duration_ms":13,"output_size":300}"#)),
            ("rl.state.agent_role".into(), s("Code")),
            ("rl.reward.success".into(), AttrValue::Double(1.0)),
            ("rl.reward.latency".into(), AttrValue::Double(0.8)),
            ("code.function".into(), s("execute")),
            ("rl.sequence_end".into(), AttrValue::Bool(false)),
        ],
        events: Vec::new(),
        origin: Arc::new(Origin::default()),
        extras: Default::default(),
    }
}

fn bench_analyze(c: &mut Criterion) {
    let limits = Limits::default();
    let s = span();
    c.bench_function("analyze loadgen span (1 KB, 10 attributes)", |b| {
        b.iter(|| rltrace_core::triplet::analyze(black_box(s.clone()), &limits))
    });
}

fn bench_effective(c: &mut Criterion) {
    let n = 10_000;
    let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let comps: BTreeMap<String, f64> = [("success".to_string(), 1.0), ("latency".to_string(), 0.5)].into();
    let inputs: Vec<RewardInput<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| RewardInput {
            triplet_id: id,
            role: Some(if i % 2 == 0 { "Code" } else { "Test" }),
            task_id: Some("task-1"),
            phase: None,
            immediate: Some(Immediate { value: None, components: &comps, source: "local", at: i as i64, order: rltrace_core::reward::immediate_order(0) }),
        })
        .collect();
    let mut events: Vec<RewardEvent> = vec![RewardEvent {
        reward_id: "seq".into(),
        target: RewardTarget::Sequence { sequence_id: "s".into(), strategy: Strategy::Discounted { gamma: 0.99 } },
        value: Some(1.0),
        source: "tests".into(),
        reason: None,
        created_at: 1,
        idempotency_key: None,
        metadata: None,
        pending: false,
        seq_no: 1,
        valuation: Valuation::Fixed,
    }];
    for i in 0..100 {
        events.push(RewardEvent {
            reward_id: format!("r{i}"),
            target: RewardTarget::Triplet { triplet_id: format!("t{}", i * 97) },
            value: Some(0.5),
            source: "hitl".into(),
            reason: None,
            created_at: 2,
            idempotency_key: None,
            metadata: None,
            pending: false,
            seq_no: 2 + i,
            valuation: Valuation::Fixed,
        });
    }
    let policy = Policy::default();
    c.bench_function("effective rewards of a 10,000-triplet sequence", |b| {
        b.iter(|| effective_rewards("s", black_box(&inputs), black_box(&events), &policy))
    });
}

criterion_group!(benches, bench_analyze, bench_effective);
criterion_main!(benches);

//! Property tests: the span-to-triplet mapping never panics on untrusted input, and whatever it
//! accepts satisfies the contract (state and action are objects, rewards and probabilities are in
//! range, the sequence id is never empty); the effective reward is always in [0, 1].

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rltrace_core::reward::{RewardEvent, RewardInput, RewardTarget, Strategy as SeqStrategy, Valuation, effective_rewards};
use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanRecord};
use rltrace_core::{Limits, Policy};

fn value() -> impl Strategy<Value = AttrValue> {
    let leaf = prop_oneof![
        Just(AttrValue::Empty),
        any::<String>().prop_map(AttrValue::Str),
        prop_oneof![Just("{}"), Just("[1]"), Just("null"), Just("0.5"), Just("1.5"), Just("{\"a\":1}"), Just("{"), Just("3"), Just("-1")]
            .prop_map(|s| AttrValue::Str(s.to_string())),
        any::<bool>().prop_map(AttrValue::Bool),
        any::<i64>().prop_map(AttrValue::Int),
        prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(0.0), Just(1.0), Just(0.5), Just(-0.1)].prop_map(AttrValue::Double),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(AttrValue::Bytes),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(AttrValue::Array),
            proptest::collection::vec(("[a-z.]{1,8}", inner), 0..4).prop_map(AttrValue::Map),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("rl.triplet_id"), Just("rl.sequence_id"), Just("rl.sequence_index"), Just("rl.timestamp_utc"), Just("rl.state"),
        Just("rl.action"), Just("rl.reward"), Just("rl.reward.success"), Just("rl.reward_source"), Just("rl.propensity"),
        Just("rl.sequence_end"), Just("rl.state.agent_role"), Just("rl.action.x.y"), Just("rl.sampling.probability"),
        Just("gen_ai.operation.name"), Just("gen_ai.input.messages"), Just("gen_ai.prompt.0.content"), Just("gen_ai.usage.input_tokens"),
        Just("llm.input_messages.0.message.role"), Just("openinference.span.kind"), Just("session.id"), Just("agentlightning.reward.0.value"),
    ]
    .prop_map(str::to_string)
}

fn span() -> impl Strategy<Value = SpanRecord> {
    (
        proptest::collection::vec((key(), value()), 0..10),
        proptest::collection::vec(("(rl\\.reward|gen_ai\\.evaluation\\.result|x)", proptest::collection::vec((key(), value()), 0..4)), 0..3),
        prop_oneof![Just("agentlightning.annotation".to_string()), Just("openai.chat.completion".to_string()), "[a-z]{0,6}"],
        any::<u64>(),
        any::<u64>(),
        0i32..4,
    )
        .prop_map(|(attributes, events, name, start, end, status)| SpanRecord {
            trace_id: [7; 16],
            span_id: [9; 8],
            parent_span_id: None,
            name,
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            status_code: status,
            status_message: String::new(),
            attributes,
            events: events
                .into_iter()
                .map(|(name, mut attributes)| {
                    attributes.push(("rl.reward.value".into(), AttrValue::Double(0.5)));
                    SpanEvent { name, time_unix_nano: 1, attributes }
                })
                .collect(),
            origin: Arc::new(Origin::default()),
            extras: Default::default(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn analyze_never_panics_and_keeps_its_contract(s in span()) {
        if let Ok(a) = rltrace_core::triplet::analyze(s, &Limits { max_attribute_value_bytes: 64 }) {
            if let Some(t) = a.triplet {
                prop_assert!(!t.sequence_id.is_empty());
                prop_assert!(!t.triplet_id.is_empty());
                prop_assert!(t.reward.is_none_or(|r| (0.0..=1.0).contains(&r)));
                prop_assert!(t.reward_components.values().all(|r| (0.0..=1.0).contains(r)));
                prop_assert!(t.propensity.is_none_or(|p| p > 0.0 && p <= 1.0));
                prop_assert!(t.sampling_probability.is_none_or(|p| p > 0.0 && p <= 1.0));
                prop_assert!(serde_json::to_string(&t.state).is_ok());
            }
            for r in &a.rewards {
                prop_assert!((0.0..=1.0).contains(&r.value));
            }
            if let Some(n) = a.annotation {
                prop_assert!((0.0..=1.0).contains(&n.value));
            }
        }
    }

    #[test]
    fn effective_rewards_stay_in_unit_interval(
        values in proptest::collection::vec((0.0f64..=1.0, 0usize..4, 0usize..6, 0i64..100), 0..20),
        weights in proptest::collection::vec(0.0f64..5.0, 4),
        n in 1usize..12,
    ) {
        let sources = ["hitl", "tests", "defect", "judge"];
        let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let inputs: Vec<RewardInput<'_>> = ids.iter().map(|id| RewardInput { triplet_id: id, role: Some("Code"), task_id: Some("T"), phase: None, immediate: None }).collect();
        let events: Vec<RewardEvent> = values.iter().enumerate().map(|(i, (v, s, t, at))| RewardEvent {
            reward_id: format!("r{i}"),
            target: match t {
                0 => RewardTarget::Sequence { sequence_id: "T".into(), strategy: SeqStrategy::Uniform },
                1 => RewardTarget::Sequence { sequence_id: "T".into(), strategy: SeqStrategy::Discounted { gamma: 0.5 } },
                2 => RewardTarget::Sequence { sequence_id: "T".into(), strategy: SeqStrategy::Last },
                3 => RewardTarget::Task { task_id: "T".into(), phase: "Code".into() },
                _ => RewardTarget::Triplet { triplet_id: format!("t{}", i % n) },
            },
            value: Some(*v),
            source: sources[*s].into(),
            reason: None,
            created_at: *at,
            idempotency_key: None,
            metadata: None,
            pending: false,
            seq_no: i as i64,
            valuation: Valuation::Fixed,
        }).collect();
        let mut text = String::new();
        for (s, w) in sources.iter().zip(&weights) {
            text.push_str(&format!("[sources.{s}]\nweight = {w}\n"));
        }
        let policy = Policy::from_toml(&text).expect("valid policy");
        let out = effective_rewards("T", &inputs, &events, &policy);
        prop_assert_eq!(out.len(), n);
        for e in out {
            prop_assert!(e.reward.is_none_or(|r| (0.0..=1.0).contains(&r)));
            let _: BTreeMap<String, f64> = e.sources.iter().map(|(k, v)| (k.clone(), v.value)).collect();
        }
    }
}

//! Snapshot tests of the span-to-triplet mapping (DESIGN section 3, wire conventions).
//!
//! Each test builds `SpanRecord`s by hand with fixed ids and times, runs
//! [`rltrace_core::triplet::analyze`] and snapshots a readable JSON view of the outcome: the
//! triplet (or `null`), the rewards carried by span events, the Agent Lightning annotation, or the
//! rejection message. Snapshots live in `tests/snapshots/`; every value in them was checked by hand
//! against DESIGN section 3, so a changed snapshot is a changed contract, not noise.

use std::sync::Arc;

use rltrace_core::span::Origin;
use rltrace_core::time::{format_micros, nanos_to_micros};
use rltrace_core::triplet::{
    AnnotationReward, Limits, SpanReward, SpanRewardTarget, TripletData, analyze,
};
use rltrace_core::{AttrValue, Policy, SpanAnalysis, SpanEvent, SpanRecord};
use serde_json::{Value, json};

/// Trace id of every span (the W3C trace-context example id).
const TRACE_ID: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];
/// Span id of every span.
const SPAN_ID: [u8; 8] = [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31];
/// 2026-01-02T03:04:05Z in nanoseconds since the epoch.
const START_NS: u64 = 1_767_323_045_000_000_000;
/// Span duration: 1.5 s.
const DURATION_NS: u64 = 1_500_000_000;

// ----- building spans -----

fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.to_string())
}

/// Attributes from `(key, value)` pairs, in the given (wire) order.
fn attrs(pairs: Vec<(&str, AttrValue)>) -> Vec<(String, AttrValue)> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A span with fixed ids and times, status error (code 2), no events.
fn failed(mut sp: SpanRecord) -> SpanRecord {
    sp.status_code = 2;
    sp.status_message = "Error code: 500 - upstream exploded".into();
    sp
}

/// The span with these resource attributes.
fn with_resource(mut sp: SpanRecord, resource: Vec<(&str, AttrValue)>) -> SpanRecord {
    sp.origin = Arc::new(Origin { resource: attrs(resource), scope_name: "test".into(), scope_version: "1".into() });
    sp
}

/// Only the given fields of the outcome's triplet (`null` when it is none).
fn pick(out: &Value, state_keys: &[&str], action_keys: &[&str]) -> Value {
    let t = &out["triplet"];
    if t.is_null() {
        return out.clone();
    }
    let state: serde_json::Map<String, Value> =
        state_keys.iter().map(|k| (k.to_string(), t["state"][*k].clone())).collect();
    let action: serde_json::Map<String, Value> =
        action_keys.iter().map(|k| (k.to_string(), t["action"][*k].clone())).collect();
    json!({ "sequence_id": t["sequence_id"], "state": state, "action": action })
}

/// A span with fixed ids and times, status unset, no events.
fn span(name: &str, attributes: Vec<(&str, AttrValue)>) -> SpanRecord {
    SpanRecord {
        trace_id: TRACE_ID,
        span_id: SPAN_ID,
        parent_span_id: None,
        name: name.to_string(),
        kind: 1,
        start_time_unix_nano: START_NS,
        end_time_unix_nano: START_NS + DURATION_NS,
        status_code: 0,
        status_message: String::new(),
        attributes: attrs(attributes),
        events: Vec::new(),
        origin: Arc::new(Origin::default()),
        extras: Default::default(),
    }
}

/// A span event at `offset_ns` after the span start.
fn event(name: &str, offset_ns: u64, attributes: Vec<(&str, AttrValue)>) -> SpanEvent {
    SpanEvent {
        name: name.to_string(),
        time_unix_nano: START_NS + offset_ns,
        attributes: attrs(attributes),
    }
}

fn run(span: SpanRecord) -> Value {
    render(analyze(span, &Limits::default()))
}

// ----- rendering the outcome -----

/// The outcome as JSON: `{"rejected": message}` or `{triplet, rewards, annotation}`.
fn render(result: SpanAnalysis) -> Value {
    match result {
        Err(message) => json!({ "rejected": message }),
        Ok(a) => json!({
            "triplet": a.triplet.as_ref().map(triplet_json),
            "rewards": a.rewards.iter().map(reward_json).collect::<Vec<_>>(),
            "annotation": a.annotation.as_ref().map(annotation_json),
        }),
    }
}

fn triplet_json(t: &TripletData) -> Value {
    json!({
        "triplet_id": t.triplet_id,
        "explicit_id": t.explicit_id,
        "sequence_id": t.sequence_id,
        "sequence_scope": t.sequence_scope,
        "sequence_index": t.sequence_index,
        "timestamp": format_micros(t.timestamp),
        "state": t.state,
        "action": t.action,
        "reward": t.reward,
        "reward_components": t.reward_components,
        "reward_source": t.reward_source,
        "propensity": t.propensity,
        "sequence_end": t.sequence_end,
        "llm_call": t.llm_call,
        "tool_call": t.tool_call,
    })
}

fn reward_json(r: &SpanReward) -> Value {
    let target = match &r.target {
        SpanRewardTarget::Triplet => json!("triplet"),
        SpanRewardTarget::Sequence(strategy) => json!({
            "sequence": {
                "strategy": strategy.name(),
                "gamma": strategy.gamma(),
                "role": strategy.role(),
            }
        }),
    };
    json!({
        "ordinal": r.ordinal,
        "target": target,
        "value": r.value,
        "source": r.source,
        "reason": r.reason,
        "at": format_micros(r.at),
    })
}

fn annotation_json(a: &AnnotationReward) -> Value {
    json!({
        "value": a.value,
        "name": a.name,
        "start_time": format_micros(nanos_to_micros(a.start_time_unix_nano)),
    })
}

/// Named cases in order, as `[{case, outcome}]`.
fn cases(items: Vec<(&str, Value)>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|(case, outcome)| json!({ "case": case, "outcome": outcome }))
            .collect(),
    )
}

// ----- 1. state and action -----

#[test]
fn state_and_action_json_merged_with_flat_keys() {
    let sp = span(
        "plan",
        vec![
            ("rl.triplet_id", s("t-plan-1")),
            (
                "rl.state",
                s(r#"{"task_id":"T-42","agent_role":"Plan","phase":"design","nested":{"a":1}}"#),
            ),
            ("rl.state.phase", s("planning")),
            ("rl.state.llm.model", s("gpt-4o")),
            ("rl.state.attempt", AttrValue::Int(2)),
            ("rl.action", s(r#"{"success":false,"output":"draft"}"#)),
            ("rl.action.success", AttrValue::Bool(true)),
            ("rl.action.duration_ms", AttrValue::Double(12.5)),
            (
                "rl.action.files",
                AttrValue::Array(vec![s("a.rs"), s("b.rs")]),
            ),
        ],
    );
    insta::assert_json_snapshot!(run(sp));
}

// ----- 2. defaults -----

#[test]
fn defaults_and_sequence_index_as_string() {
    let sp = span(
        "step",
        vec![
            ("rl.state.agent_role", s("Code")),
            ("rl.sequence_index", s("3")),
        ],
    );
    let out = run(sp);
    // The defaults, spelled out independently of the snapshot.
    assert_eq!(
        out["triplet"]["triplet_id"],
        "0af7651916cd43dd8448eb211c80319cb7ad6b7169203331"
    );
    assert_eq!(
        out["triplet"]["sequence_id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(out["triplet"]["timestamp"], "2026-01-02T03:04:05.000000Z");
    assert_eq!(out["triplet"]["sequence_index"], 3);
    insta::assert_json_snapshot!(out);
}

// ----- 3. timestamp without offset -----

#[test]
fn timestamp_without_offset_is_utc() {
    let naive = run(span(
        "step",
        vec![
            ("rl.state.agent_role", s("Code")),
            ("rl.timestamp_utc", s("2026-01-02T03:04:05.123456")),
        ],
    ));
    let zulu = run(span(
        "step",
        vec![
            ("rl.state.agent_role", s("Code")),
            ("rl.timestamp_utc", s("2026-01-02T03:04:05.123456Z")),
        ],
    ));
    assert_eq!(naive["triplet"]["timestamp"], zulu["triplet"]["timestamp"]);
    assert_eq!(naive["triplet"]["timestamp"], "2026-01-02T03:04:05.123456Z");
    insta::assert_json_snapshot!(naive);
}

// ----- 4. immediate rewards -----

#[test]
fn immediate_reward_forms() {
    let with_reward = |v: AttrValue| {
        run(span(
            "step",
            vec![("rl.state.agent_role", s("Test")), ("rl.reward", v)],
        ))["triplet"]
            .clone()
    };
    let only = |t: Value| json!({ "reward": t["reward"], "reward_components": t["reward_components"], "reward_source": t["reward_source"] });
    let components = run(span(
        "step",
        vec![
            ("rl.state.agent_role", s("Test")),
            ("rl.reward.success", AttrValue::Double(1.0)),
            ("rl.reward.latency", AttrValue::Double(0.5)),
            ("rl.reward.cost", s("0.25")),
            ("rl.reward_source", s("tests")),
        ],
    ))["triplet"]
        .clone();
    // What the components combine to under the default policy (equal weights).
    let comps: std::collections::BTreeMap<String, f64> =
        serde_json::from_value(components["reward_components"].clone())
            .expect("components are numbers");
    let combined = Policy::default().combine_components(&comps);
    let out = cases(vec![
        ("double 0.25", only(with_reward(AttrValue::Double(0.25)))),
        ("int 1", only(with_reward(AttrValue::Int(1)))),
        ("string \"0.5\"", only(with_reward(s("0.5")))),
        ("string \"null\"", only(with_reward(s("null")))),
        (
            "components, no rl.reward",
            json!({
                "reward": components["reward"],
                "reward_components": components["reward_components"],
                "reward_source": components["reward_source"],
                "combined_default_policy": combined,
            }),
        ),
    ]);
    insta::assert_json_snapshot!(out);
}

// ----- 5. rejections -----

#[test]
fn malformed_values_are_rejected() {
    let claim = ("rl.state.agent_role", s("Code"));
    let one = |pair: (&str, AttrValue)| run(span("step", vec![claim.clone(), pair]));
    let sized = |value: String| {
        render(analyze(
            span("step", vec![("rl.state.note", AttrValue::Str(value))]),
            &Limits {
                max_attribute_value_bytes: 16,
            },
        ))
    };
    let accepted_16 = sized("x".repeat(16));
    assert!(
        accepted_16.get("rejected").is_none(),
        "16 bytes is within a 16-byte limit"
    );
    let out = cases(vec![
        (
            "rl.state \"[1,2]\"",
            run(span("step", vec![("rl.state", s("[1,2]"))])),
        ),
        (
            "rl.action not JSON",
            run(span("step", vec![("rl.action", s("{oops"))])),
        ),
        ("rl.reward 1.5", one(("rl.reward", AttrValue::Double(1.5)))),
        ("rl.reward \"abc\"", one(("rl.reward", s("abc")))),
        (
            "rl.sequence_index \"x\"",
            one(("rl.sequence_index", s("x"))),
        ),
        ("17 bytes, limit 16", sized("x".repeat(17))),
        (
            "9 two-byte chars (18 bytes), limit 16",
            sized("é".repeat(9)),
        ),
        ("16 bytes, limit 16", accepted_16),
    ]);
    insta::assert_json_snapshot!(out);
}

// ----- 6. reward span events -----

#[test]
fn reward_events_on_a_triplet_span() {
    let mut sp = span(
        "review",
        vec![
            ("rl.state.agent_role", s("Review")),
            ("rl.sequence_id", s("T-42")),
        ],
    );
    sp.events = vec![
        event(
            "rl.reward",
            100_000_000,
            vec![
                ("rl.reward.value", AttrValue::Double(0.6)),
                ("rl.reward.source", s("hitl")),
                ("rl.reward.target", s("sequence")),
                ("rl.reward.strategy", s("discounted")),
                ("rl.reward.gamma", AttrValue::Double(0.9)),
                ("rl.reward.reason", s("approved with changes")),
            ],
        ),
        event(
            "gen_ai.evaluation.result",
            200_000_000,
            vec![
                ("gen_ai.evaluation.name", s("relevance")),
                ("gen_ai.evaluation.score.value", AttrValue::Double(0.8)),
            ],
        ),
        // A score on another scale (1-5): not a reward.
        event(
            "gen_ai.evaluation.result",
            300_000_000,
            vec![
                ("gen_ai.evaluation.name", s("fluency")),
                ("gen_ai.evaluation.score.value", AttrValue::Double(4.0)),
            ],
        ),
    ];
    insta::assert_json_snapshot!(run(sp));
}

// ----- 7. Agent Lightning -----

#[test]
fn agent_lightning_annotation_span() {
    let sp = span(
        "agentlightning.annotation",
        vec![
            ("agentlightning.reward.0.value", AttrValue::Double(0.7)),
            ("agentlightning.reward.0.name", s("task_success")),
        ],
    );
    insta::assert_json_snapshot!(run(sp));
}

// ----- 8-10. LLM calls without an rltrace SDK -----

#[test]
fn llm_span_current_genai_conventions() {
    let mut sp = span(
        "chat gpt-4o",
        vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.provider.name", s("openai")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.request.temperature", AttrValue::Double(0.2)),
            ("gen_ai.request.max_tokens", AttrValue::Int(512)),
            (
                "gen_ai.input.messages",
                s(
                    r#"[{"role":"system","parts":[{"type":"text","content":"You are terse."}]},{"role":"user","parts":[{"type":"text","content":"Name a prime."}]}]"#,
                ),
            ),
            (
                "gen_ai.output.messages",
                s(
                    r#"[{"role":"assistant","parts":[{"type":"text","content":"7"}],"finish_reason":"stop"}]"#,
                ),
            ),
            (
                "gen_ai.response.finish_reasons",
                AttrValue::Array(vec![s("stop")]),
            ),
            ("gen_ai.usage.input_tokens", AttrValue::Int(21)),
            ("gen_ai.usage.output_tokens", AttrValue::Int(1)),
            ("gen_ai.conversation.id", s("conv-7")),
        ],
    );
    sp.status_code = 2;
    sp.status_message = "rate limited".into();
    insta::assert_json_snapshot!(run(sp));
}

#[test]
fn llm_span_older_flattened_genai() {
    let sp = span(
        "openai.chat",
        vec![
            ("llm.request.type", s("chat")),
            ("gen_ai.system", s("openai")),
            ("gen_ai.request.model", s("gpt-4o-mini")),
            ("gen_ai.prompt.0.role", s("system")),
            ("gen_ai.prompt.0.content", s("You are terse.")),
            ("gen_ai.prompt.1.role", s("user")),
            ("gen_ai.prompt.1.content", s("Name a prime.")),
            ("gen_ai.completion.0.role", s("assistant")),
            ("gen_ai.completion.0.content", s("7")),
            ("gen_ai.completion.0.finish_reason", s("stop")),
            ("gen_ai.usage.prompt_tokens", AttrValue::Int(21)),
            ("gen_ai.usage.completion_tokens", AttrValue::Int(1)),
            ("session.id", s("sess-9")),
        ],
    );
    insta::assert_json_snapshot!(run(sp));
}

#[test]
fn llm_span_openinference() {
    let sp = span(
        "ChatCompletion",
        vec![
            ("openinference.span.kind", s("LLM")),
            ("llm.model_name", s("gpt-4o")),
            ("llm.provider", s("openai")),
            (
                "llm.invocation_parameters",
                s(r#"{"temperature":0.0,"max_tokens":64}"#),
            ),
            ("llm.input_messages.0.message.role", s("user")),
            ("llm.input_messages.0.message.content", s("Name a prime.")),
            ("llm.output_messages.0.message.role", s("assistant")),
            ("llm.output_messages.0.message.content", s("7")),
            ("llm.token_count.prompt", AttrValue::Int(12)),
            ("llm.token_count.completion", AttrValue::Int(1)),
        ],
    );
    insta::assert_json_snapshot!(run(sp));
}

// ----- 11. explicit rl.* on an LLM span -----

#[test]
fn explicit_rl_wins_over_llm_fields() {
    let sp = span(
        "chat gpt-4o",
        vec![
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.conversation.id", s("conv-7")),
            ("gen_ai.usage.output_tokens", AttrValue::Int(1)),
            ("rl.sequence_id", s("T-42:Code")),
            ("rl.sequence_scope", s("agent")),
            ("rl.state.llm_model", s("router-model")),
            ("rl.state.agent_role", s("Code")),
            ("rl.action", s(r#"{"llm_tokens_out":99}"#)),
        ],
    );
    let out = run(sp);
    assert_eq!(out["triplet"]["sequence_id"], "T-42:Code");
    assert_eq!(out["triplet"]["state"]["llm_model"], "router-model");
    insta::assert_json_snapshot!(out);
}

// ----- 12. not a triplet -----

#[test]
fn plain_span_is_not_a_triplet() {
    let mut sp = span(
        "GET /healthz",
        vec![
            ("http.request.method", s("GET")),
            ("url.path", s("/healthz")),
            ("http.response.status_code", AttrValue::Int(200)),
            ("session.id", s("sess-9")),
        ],
    );
    // Evaluation events need a triplet to land on; on a plain span they are not rewards.
    sp.events = vec![event(
        "gen_ai.evaluation.result",
        0,
        vec![("gen_ai.evaluation.score.value", AttrValue::Double(0.8))],
    )];
    insta::assert_json_snapshot!(run(sp));
}

// ----- 13. the model: requested first, the response's kept apart -----

#[test]
fn llm_model_is_the_requested_one() {
    let keys_s = ["llm_model"];
    let keys_a = ["llm_response_model", "success"];
    let out = cases(vec![
        (
            "GenAI: request and response model",
            pick(
                &run(span(
                    "chat gpt-4o-mini",
                    vec![
                        ("gen_ai.operation.name", s("chat")),
                        ("gen_ai.request.model", s("gpt-4o-mini")),
                        ("gen_ai.response.model", s("gpt-4o-mini-2024-07-18")),
                    ],
                )),
                &keys_s,
                &keys_a,
            ),
        ),
        (
            "GenAI: only the response model",
            pick(
                &run(span(
                    "chat",
                    vec![("gen_ai.operation.name", s("chat")), ("gen_ai.response.model", s("gpt-4o-mini-2024-07-18"))],
                )),
                &keys_s,
                &keys_a,
            ),
        ),
        (
            "OpenInference OpenAI: llm.model_name is the response's, the request is in the invocation parameters",
            pick(
                &run(span(
                    "ChatCompletion",
                    vec![
                        ("openinference.span.kind", s("LLM")),
                        ("llm.invocation_parameters", s(r#"{"model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0.2}"#)),
                        ("llm.model_name", s("gpt-4o-mini-2024-07-18")),
                    ],
                )),
                &["llm_model", "max_tokens", "temperature", "model"],
                &keys_a,
            ),
        ),
        (
            "OpenInference OpenAI, failed call: no llm.model_name",
            pick(
                &run(failed(span(
                    "ChatCompletion",
                    vec![
                        ("openinference.span.kind", s("LLM")),
                        ("llm.invocation_parameters", s(r#"{"model": "gpt-4o-mini", "max_tokens": 8}"#)),
                    ],
                ))),
                &keys_s,
                &keys_a,
            ),
        ),
        (
            "OpenInference Anthropic: llm.request.model_name and llm.response.model_name",
            pick(
                &run(span(
                    "messages.create",
                    vec![
                        ("openinference.span.kind", s("LLM")),
                        ("llm.request.model_name", s("claude-haiku-4-5")),
                        ("llm.invocation_parameters", s(r#"{"max_tokens": 64}"#)),
                        ("llm.model_name", s("claude-haiku-4-5-20251001")),
                        ("llm.response.model_name", s("claude-haiku-4-5-20251001")),
                    ],
                )),
                &["llm_model", "max_tokens", "model_name"],
                &keys_a,
            ),
        ),
        (
            "OpenInference Anthropic, failed call: llm.model_name is the requested model, not a response's",
            pick(
                &run(failed(span(
                    "messages.create",
                    vec![
                        ("openinference.span.kind", s("LLM")),
                        ("llm.model_name", s("claude-haiku-4-5")),
                        ("llm.request.model_name", s("claude-haiku-4-5")),
                    ],
                ))),
                &keys_s,
                &keys_a,
            ),
        ),
        (
            "older OpenLLMetry: llm.request.model",
            pick(
                &run(span(
                    "openai.chat",
                    vec![("llm.request.type", s("chat")), ("llm.request.model", s("gpt-4")), ("llm.request.max_tokens", AttrValue::Int(16))],
                )),
                &["llm_model", "max_tokens"],
                &keys_a,
            ),
        ),
    ]);
    assert_eq!(out[0]["outcome"]["state"]["llm_model"], "gpt-4o-mini");
    assert_eq!(out[0]["outcome"]["action"]["llm_response_model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(out[2]["outcome"]["state"]["llm_model"], "gpt-4o-mini");
    assert_eq!(out[3]["outcome"]["state"]["llm_model"], "gpt-4o-mini");
    insta::assert_json_snapshot!(out);
}

// ----- 14. the stop reason, wherever the libraries put it -----

#[test]
fn llm_stop_reason_sources() {
    let llm = |extra: Vec<(&str, AttrValue)>| {
        let mut a = vec![("gen_ai.operation.name", s("chat")), ("gen_ai.request.model", s("m"))];
        a.extend(extra);
        pick(&run(span("chat m", a)), &[], &["llm_stop_reason", "llm_response"])
    };
    let oi = |extra: Vec<(&str, AttrValue)>| {
        let mut a = vec![("openinference.span.kind", s("LLM")), ("llm.model_name", s("m"))];
        a.extend(extra);
        pick(&run(span("ChatCompletion", a)), &[], &["llm_stop_reason", "llm_response"])
    };
    let out = cases(vec![
        ("gen_ai.response.finish_reasons array (first)", llm(vec![("gen_ai.response.finish_reasons", AttrValue::Array(vec![s("length"), s("stop")]))])),
        ("gen_ai.response.finish_reasons as a JSON string", llm(vec![("gen_ai.response.finish_reasons", s(r#"["tool_calls"]"#))])),
        ("gen_ai.response.finish_reasons plain string", llm(vec![("gen_ai.response.finish_reasons", s("stop"))])),
        ("older gen_ai.completion.0.finish_reason", llm(vec![("gen_ai.completion.0.finish_reason", s("stop"))])),
        ("OpenInference llm.finish_reason", oi(vec![("llm.finish_reason", s("end_turn"))])),
        (
            "only inside gen_ai.output.messages (streamed, contrib instrumentation)",
            llm(vec![(
                "gen_ai.output.messages",
                s(r#"[{"role":"assistant","parts":[{"content":"seven","type":"text"}],"finish_reason":"length"}]"#),
            )]),
        ),
        (
            "OpenInference output message finish_reason",
            oi(vec![
                ("llm.output_messages.0.message.role", s("assistant")),
                ("llm.output_messages.0.message.content", s("7")),
                ("llm.output_messages.0.message.finish_reason", s("stop")),
            ]),
        ),
        ("Anthropic client's own anthropic.message.stop_reason", llm(vec![("anthropic.message.stop_reason", s("end_turn"))])),
        (
            "only in OpenInference output.value (OpenAI body)",
            oi(vec![("output.value", s(r#"{"id":"c0","choices":[{"finish_reason":"content_filter","index":0}]}"#))]),
        ),
        (
            "only in OpenInference output.value (Anthropic body)",
            oi(vec![("output.value", s(r#"{"id":"msg_0","stop_reason":"max_tokens"}"#))]),
        ),
        (
            "the attribute wins over the output messages",
            llm(vec![
                ("gen_ai.response.finish_reasons", AttrValue::Array(vec![s("stop")])),
                ("gen_ai.output.messages", s(r#"[{"role":"assistant","content":"7","finish_reason":"length"}]"#)),
            ]),
        ),
        ("none", llm(vec![])),
    ]);
    let reasons: Vec<Value> = out.as_array().expect("cases").iter().map(|c| c["outcome"]["action"]["llm_stop_reason"].clone()).collect();
    assert_eq!(
        reasons,
        vec![
            json!("length"), json!("tool_calls"), json!("stop"), json!("stop"), json!("end_turn"), json!("length"),
            json!("stop"), json!("end_turn"), json!("content_filter"), json!("max_tokens"), json!("stop"), Value::Null
        ]
    );
    insta::assert_json_snapshot!(out);
}

// ----- 15. token counts of every attribute family -----

#[test]
fn llm_token_count_families() {
    let tokens = |name: &str, a: Vec<(&str, AttrValue)>| pick(&run(span(name, a)), &[], &["llm_tokens_in", "llm_tokens_out"]);
    let out = cases(vec![
        (
            "GenAI gen_ai.usage.input_tokens / output_tokens",
            tokens("chat", vec![("gen_ai.operation.name", s("chat")), ("gen_ai.usage.input_tokens", AttrValue::Int(21)), ("gen_ai.usage.output_tokens", AttrValue::Int(1))]),
        ),
        (
            "older GenAI gen_ai.usage.prompt_tokens / completion_tokens",
            tokens("openai.chat", vec![("llm.request.type", s("chat")), ("gen_ai.usage.prompt_tokens", AttrValue::Int(22)), ("gen_ai.usage.completion_tokens", AttrValue::Int(2))]),
        ),
        (
            "OpenLLMetry llm.usage.prompt_tokens / completion_tokens",
            tokens("openai.chat", vec![("llm.request.type", s("completion")), ("llm.usage.prompt_tokens", AttrValue::Int(23)), ("llm.usage.completion_tokens", s("3"))]),
        ),
        (
            "OpenInference llm.token_count.prompt / completion",
            tokens("ChatCompletion", vec![("openinference.span.kind", s("LLM")), ("llm.token_count.prompt", AttrValue::Int(24)), ("llm.token_count.completion", AttrValue::Int(4)), ("llm.token_count.total", AttrValue::Int(28))]),
        ),
    ]);
    insta::assert_json_snapshot!(out);
}

// ----- 16. the sequence: conversation, session, association property, resource, trace -----

#[test]
fn llm_and_tool_sequence_sources() {
    let chat = |a: Vec<(&str, AttrValue)>| {
        let mut all = vec![("gen_ai.operation.name", s("chat"))];
        all.extend(a);
        span("chat m", all)
    };
    let seq = |sp: SpanRecord| run(sp)["triplet"]["sequence_id"].clone();
    let out = json!({
        "gen_ai.conversation.id": seq(chat(vec![("gen_ai.conversation.id", s("conv-1")), ("session.id", s("sess-1"))])),
        "session.id on the span (OpenInference using_session, baggage copied to spans)": seq(chat(vec![("session.id", s("sess-1")), ("traceloop.association.properties.session_id", s("assoc-1"))])),
        "traceloop.association.properties.session_id (OpenLLMetry)": seq(chat(vec![("traceloop.association.properties.session_id", s("assoc-1"))])),
        "an integer session id": seq(chat(vec![("session.id", AttrValue::Int(42))])),
        "session.id on the resource": seq(with_resource(chat(vec![]), vec![("service.name", s("agents")), ("session.id", s("res-1"))])),
        "the span's association property over the resource": seq(with_resource(chat(vec![("traceloop.association.properties.session_id", s("assoc-1"))]), vec![("session.id", s("res-1"))])),
        "OpenInference TOOL span with session.id": seq(span("lookup", vec![("openinference.span.kind", s("TOOL")), ("session.id", s("sess-1"))])),
        "execute_tool span with session.id on the resource": seq(with_resource(span("execute_tool lookup", vec![("gen_ai.operation.name", s("execute_tool"))]), vec![("session.id", s("res-1"))])),
        "none: the trace": seq(chat(vec![("session.id", s(""))])),
    });
    assert_eq!(out["none: the trace"], "0af7651916cd43dd8448eb211c80319c");
    insta::assert_json_snapshot!(out);
}

// ----- 17. what the instrumentations write, whole -----

#[test]
fn llm_span_openinference_anthropic() {
    let sp = span(
        "messages.create",
        vec![
            ("llm.provider", s("anthropic")),
            ("llm.system", s("anthropic")),
            ("input.value", s(r#"{"model": "claude-haiku-4-5", "system": "You are terse.", "messages": [{"role": "user", "content": "Name a prime."}], "max_tokens": 64}"#)),
            ("input.mime_type", s("application/json")),
            ("llm.request.model_name", s("claude-haiku-4-5")),
            ("llm.input_messages.0.message.role", s("system")),
            ("llm.input_messages.0.message.content", s("You are terse.")),
            ("llm.input_messages.1.message.role", s("user")),
            ("llm.input_messages.1.message.content", s("Name a prime.")),
            ("llm.invocation_parameters", s(r#"{"max_tokens": 64, "stream": true}"#)),
            ("llm.model_name", s("claude-haiku-4-5-20251001")),
            ("llm.response.model_name", s("claude-haiku-4-5-20251001")),
            ("llm.output_messages.0.message.role", s("assistant")),
            ("llm.finish_reason", s("max_tokens")),
            ("llm.output_messages.0.message.contents.0.message_content.type", s("text")),
            ("llm.output_messages.0.message.contents.0.message_content.text", s("sev")),
            ("llm.output_messages.0.message.contents.1.message_content.type", s("text")),
            ("llm.output_messages.0.message.contents.1.message_content.text", s("en")),
            ("llm.token_count.prompt", AttrValue::Int(25)),
            ("llm.token_count.completion", AttrValue::Int(3)),
            ("llm.token_count.total", AttrValue::Int(28)),
            ("openinference.span.kind", s("LLM")),
            ("session.id", s("sess-anthropic")),
        ],
    );
    let out = run(sp);
    assert_eq!(out["triplet"]["action"]["llm_response"], json!([{"role": "assistant", "content": "seven"}]));
    insta::assert_json_snapshot!(out);
}

#[test]
fn llm_span_system_instructions_apart() {
    // OpenLLMetry's Anthropic instrumentation and the Anthropic client's own spans keep the system
    // prompt in gen_ai.system_instructions, apart from gen_ai.input.messages.
    let sp = span(
        "anthropic.chat",
        vec![
            ("gen_ai.provider.name", s("anthropic")),
            ("gen_ai.operation.name", s("chat")),
            ("gen_ai.request.model", s("claude-haiku-4-5")),
            ("gen_ai.request.max_tokens", AttrValue::Int(64)),
            ("gen_ai.system_instructions", s(r#"[{"type": "text", "content": "You are terse."}]"#)),
            ("gen_ai.input.messages", s(r#"[{"role": "user", "parts": [{"type": "text", "content": "Name a prime."}]}]"#)),
            ("gen_ai.response.model", s("claude-haiku-4-5-20251001")),
            ("gen_ai.output.messages", s(r#"[{"role": "assistant", "parts": [{"type": "text", "content": "7"}], "finish_reason": "stop"}]"#)),
            ("gen_ai.usage.input_tokens", AttrValue::Int(20)),
            ("gen_ai.usage.output_tokens", AttrValue::Int(1)),
            ("traceloop.association.properties.session_id", s("sess-openllmetry")),
        ],
    );
    let out = run(sp);
    assert_eq!(
        out["triplet"]["state"]["prompt"],
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."}])
    );
    assert_eq!(out["triplet"]["sequence_id"], "sess-openllmetry");
    insta::assert_json_snapshot!(out);
}

// ----- 18. tool calls -----

#[test]
fn tool_call_genai_execute_tool() {
    let sp = span(
        "execute_tool get_weather",
        vec![
            ("gen_ai.operation.name", s("execute_tool")),
            ("gen_ai.tool.name", s("get_weather")),
            ("gen_ai.tool.type", s("function")),
            ("gen_ai.tool.call.id", s("call_7")),
            ("gen_ai.tool.call.arguments", s(r#"{"city": "Paris"}"#)),
            ("gen_ai.tool.call.result", s(r#"{"temperature_c": 21}"#)),
            ("gen_ai.conversation.id", s("conv-7")),
        ],
    );
    let out = run(sp);
    assert_eq!(out["triplet"]["state"]["tool_arguments"], json!({"city": "Paris"}));
    assert_eq!(out["triplet"]["tool_call"], true);
    insta::assert_json_snapshot!(out);
}

#[test]
fn tool_call_openinference_and_failures() {
    let oi = span(
        "lookup_order",
        vec![
            ("openinference.span.kind", s("TOOL")),
            ("tool.name", s("lookup_order")),
            ("tool.description", s("Finds an order.")),
            (
                "tool.parameters",
                s(r#"{"type": "object", "title": "lookup_order", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}"#),
            ),
            ("input.value", s(r#"{"order_id": 42}"#)),
            ("input.mime_type", s("application/json")),
            ("output.value", s("shipped")),
            ("output.mime_type", s("text/plain")),
            ("session.id", s("sess-1")),
        ],
    );
    let only_input = span(
        "search",
        vec![("openinference.span.kind", s("tool")), ("input.value", s("rust borrow checker")), ("tool_call.id", s("call_9"))],
    );
    let mut failed_tool = failed(span(
        "execute_tool run_sql",
        vec![("gen_ai.operation.name", s("execute_tool")), ("gen_ai.tool.call.arguments", s("SELECT 1"))],
    ));
    failed_tool.status_message = "permission denied".into();
    let out = cases(vec![
        ("OpenInference TOOL span", run(oi)),
        ("OpenInference, arguments only in input.value, lower-case kind", run(only_input)),
        ("failed execute_tool span, name from the span name, plain-text arguments", run(failed_tool)),
    ]);
    assert_eq!(out[0]["outcome"]["triplet"]["state"]["tool_name"], "lookup_order");
    assert_eq!(out[0]["outcome"]["triplet"]["state"]["tool_arguments"], json!({"order_id": 42}));
    assert_eq!(out[1]["outcome"]["triplet"]["state"]["tool_name"], "search");
    assert_eq!(out[2]["outcome"]["triplet"]["state"]["tool_name"], "run_sql");
    assert_eq!(out[2]["outcome"]["triplet"]["action"]["success"], false);
    insta::assert_json_snapshot!(out);
}

#[test]
fn explicit_rl_wins_over_tool_fields() {
    let sp = span(
        "execute_tool get_weather",
        vec![
            ("gen_ai.operation.name", s("execute_tool")),
            ("gen_ai.tool.name", s("get_weather")),
            ("gen_ai.conversation.id", s("conv-7")),
            ("rl.sequence_id", s("T-42")),
            ("rl.state.tool_name", s("weather_v2")),
            ("rl.action.success", AttrValue::Bool(false)),
        ],
    );
    let out = run(sp);
    assert_eq!(out["triplet"]["sequence_id"], "T-42");
    assert_eq!(out["triplet"]["state"]["tool_name"], "weather_v2");
    assert_eq!(out["triplet"]["action"]["success"], false);
    insta::assert_json_snapshot!(out);
}

// ----- 19. the libraries' other spans stay plain spans -----

#[test]
fn library_spans_that_are_not_llm_or_tool_calls_stay_plain() {
    let plain = |sp: SpanRecord| run(sp)["triplet"].clone();
    let out = json!({
        "GenAI embeddings": plain(span("embeddings text-embedding-3-small", vec![("gen_ai.operation.name", s("embeddings")), ("gen_ai.request.model", s("text-embedding-3-small")), ("gen_ai.usage.input_tokens", AttrValue::Int(3))])),
        "GenAI invoke_agent": plain(span("invoke_agent planner", vec![("gen_ai.operation.name", s("invoke_agent")), ("gen_ai.agent.name", s("planner")), ("gen_ai.conversation.id", s("conv-7"))])),
        "OpenLLMetry embedding": plain(span("openai.embeddings", vec![("llm.request.type", s("embedding")), ("gen_ai.request.model", s("text-embedding-3-small"))])),
        "OpenInference CHAIN": plain(span("agent.run", vec![("openinference.span.kind", s("CHAIN")), ("input.value", s("hi")), ("session.id", s("sess-1"))])),
        "OpenInference EMBEDDING": plain(span("CreateEmbeddingResponse", vec![("openinference.span.kind", s("EMBEDDING")), ("embedding.model_name", s("text-embedding-3-small"))])),
        "OpenInference AGENT": plain(span("planner", vec![("openinference.span.kind", s("AGENT"))])),
        "Traceloop workflow": plain(span("plan.workflow", vec![("traceloop.span.kind", s("workflow")), ("traceloop.association.properties.session_id", s("assoc-1"))])),
        "HTTP client span of an LLM request": plain(span("POST", vec![("http.request.method", s("POST")), ("url.full", s("http://127.0.0.1:1/v1/chat/completions"))])),
    });
    for (case, triplet) in out.as_object().expect("cases") {
        assert!(triplet.is_null(), "{case} must not be a triplet: {triplet}");
    }
    insta::assert_json_snapshot!(out);
}

/// The rollout link: both ids on the span win, else both on the resource; one id alone links
/// nothing; an id that is not a non-empty string of at most 256 bytes rejects the span by name.
#[test]
fn rollout_links_from_the_span_or_its_resource() {
    let link = |sp: SpanRecord| match analyze(sp, &Limits::default()) {
        Ok(a) => Ok(a.triplet.and_then(|t| t.rollout).map(|l| (l.rollout_id, l.attempt_id))),
        Err(e) => Err(e),
    };
    let base = || vec![("rl.sequence_id", s("q")), ("rl.state.k", s("v")), ("rl.action.ok", AttrValue::Bool(true))];
    let with = |extra: Vec<(&'static str, AttrValue)>| {
        let mut a = base();
        a.extend(extra);
        span("agent.step", a)
    };
    let on_resource = vec![("agentlightning.rollout_id", s("ro-r")), ("agentlightning.attempt_id", s("at-r"))];
    assert_eq!(
        link(with(vec![("agentlightning.rollout_id", s("ro-s")), ("agentlightning.attempt_id", s("at-s"))])),
        Ok(Some(("ro-s".into(), "at-s".into())))
    );
    assert_eq!(link(with_resource(with(vec![]), on_resource.clone())), Ok(Some(("ro-r".into(), "at-r".into()))));
    assert_eq!(
        link(with_resource(with(vec![("agentlightning.rollout_id", s("ro-s"))]), on_resource)),
        Ok(Some(("ro-r".into(), "at-r".into()))),
        "a span with one id takes the resource's pair"
    );
    assert_eq!(link(with(vec![("agentlightning.rollout_id", s("ro-s"))])), Ok(None));
    let bad = link(with(vec![("agentlightning.rollout_id", AttrValue::Int(3)), ("agentlightning.attempt_id", s("a"))]));
    assert!(bad.as_ref().is_err_and(|e| e.contains("agentlightning.rollout_id")), "{bad:?}");
    let long = link(with(vec![("agentlightning.rollout_id", s(&"x".repeat(257))), ("agentlightning.attempt_id", s("a"))]));
    assert!(long.as_ref().is_err_and(|e| e.contains("256")), "{long:?}");
    assert!(link(with(vec![("agentlightning.rollout_id", s(&"x".repeat(256))), ("agentlightning.attempt_id", s("a"))])).is_ok_and(|l| l.is_some()));
}

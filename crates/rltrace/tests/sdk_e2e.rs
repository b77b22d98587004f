//! End to end with the Rust SDK: the SDK's example application (an axum API in front of a
//! three-agent pipeline, `crates/rltrace-sdk/examples/agent_api/app.rs`, included here as is)
//! exports over OTLP/HTTP to a real `rltrace serve`; the triplets read back through the REST API
//! have the right sequence ids, indexes, states, actions and rewards, and the API request and
//! the agent calls share one trace.

mod common;

#[path = "../../rltrace-sdk/examples/agent_api/app.rs"]
mod app;

use common::{Server, get_json, wait_until};
use rltrace_sdk::client::{NewReward, RewardClient};
use rltrace_sdk::{Protocol, Strategy};
use serde_json::Value;

fn find<'a>(items: &'a [Value], key: &str, value: &str) -> &'a Value {
    items.iter().find(|v| v[key] == value).unwrap_or_else(|| panic!("no item with {key} = {value} in {items:#?}"))
}

#[test]
fn sdk_example_pipeline_reaches_the_collector() {
    let server = Server::start(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let guard = rltrace_sdk::builder()
        .ignore_env()
        .service_name("agent-api-e2e")
        .endpoint(server.http.clone())
        .protocol(Protocol::HttpProtobuf)
        .install()
        .expect("install the sdk");
    let report = rt.block_on(app::run_once("e2e-task-1", "e2e-session-1")).expect("run the example");
    assert!(report.result.approved);
    assert_eq!(report.result.trace_id.as_deref(), Some(report.trace_id.as_str()), "the handler runs in the UI's trace");
    guard.flush().expect("flush");

    // A delayed reward for the whole task, through the SDK's reward client.
    let client = RewardClient::new(server.http.clone()).expect("client");
    let reward = NewReward::sequence("e2e-task-1", Strategy::Uniform, 1.0, "hitl").reason("merged").idempotency_key("e2e-hitl-1");
    let event = rt.block_on(client.post_reward(&reward)).expect("post reward");
    assert_eq!(event.source, "hitl");
    assert_eq!(event.target.sequence_id.as_deref(), Some("e2e-task-1"));
    let again = rt.block_on(client.post_reward(&reward)).expect("idempotent retry");
    assert_eq!(again.reward_id, event.reward_id);
    let bad = rt.block_on(client.post_reward(&NewReward::triplet("no-such-triplet", 0.5, "judge")));
    assert!(matches!(bad, Err(rltrace_sdk::Error::Api { status: 404, .. })), "{bad:?}");
    guard.shutdown().expect("shutdown");

    // The pipeline: one sequence of three triplets in order, closed by the review.
    let url = server.url("/api/v1/sequences/e2e-task-1");
    let mut seq = Value::Null;
    assert!(wait_until(20, || {
        seq = get_json(&url).1;
        seq["triplet_count"] == 3
    }), "sequence: {seq:#}");
    assert_eq!(seq["complete"], true, "review ended the sequence: {seq:#}");
    let t = seq["triplets"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = t.iter().filter_map(|x| x["state"]["agent_role"].as_str()).collect();
    assert_eq!(roles, ["Plan", "Code", "Review"]);
    for (i, x) in t.iter().enumerate() {
        assert_eq!(x["sequence_index"], i, "{x:#}");
        assert_eq!(x["action"]["success"], true, "{x:#}");
        assert_eq!(x["trace_id"], report.trace_id.as_str(), "{x:#}");
        assert_eq!(x["state"]["args"]["task"]["id"], "e2e-task-1");
        assert_eq!(x["triplet_id"].as_str().map(str::len), Some(36), "a uuid: {x:#}");
        assert_eq!(x["reward_sources"]["hitl"], 1.0, "the sequence reward reaches every triplet: {x:#}");
        assert_eq!(x["sampling_probability"], 1.0, "the SDK's rl.sampling.probability reaches the export: {x:#}");
    }
    assert_eq!(t[0]["action"]["output"], serde_json::json!(["design login page", "implement login page"]));
    assert_eq!(t[1]["state"]["phase"], "implementation");
    assert_eq!(t[1]["action"]["lines_changed"], 2);
    assert!(t[2]["state"]["args"].get("diff").is_none(), "skipped argument");
    assert_eq!(t[2]["action"]["output"], true);
    // Immediate rewards: success 1, latency 1 and the code agent's cost 0.8, combined with equal
    // weights by the collector into the `local` source; the review's judge event is its own source.
    let local = |x: &Value| x["reward_sources"]["local"].as_f64().unwrap_or(-1.0);
    assert!((local(&t[0]) - 1.0).abs() < 1e-9, "{:#}", t[0]);
    assert!((local(&t[1]) - 2.8 / 3.0).abs() < 1e-9, "{:#}", t[1]);
    assert_eq!(t[2]["reward_sources"]["judge"], 0.9);
    let effective = t[2]["reward"].as_f64().unwrap_or(-1.0);
    assert!((effective - (1.0 + 0.9 + 1.0) / 3.0).abs() < 1e-9, "mean over sources local, judge, hitl: {:#}", t[2]);

    // The API request: its own triplet in the session's sequence.
    let (_, sess) = get_json(&server.url("/api/v1/sequences/e2e-session-1"));
    assert_eq!(sess["triplet_count"], 1, "{sess:#}");
    let req = &sess["triplets"][0];
    assert_eq!(req["state"]["route"], "/api/tasks/{task_id}/run");
    assert_eq!(req["state"]["method"], "POST");
    assert_eq!(req["state"]["user_id"], "user-7");
    assert_eq!(req["state"]["agent_role"], "api");
    assert_eq!(req["action"]["status"], 200);
    assert_eq!(req["reward_sources"]["local"], 1.0);

    // One trace: the UI's trace holds the request span, and the agent spans are its children.
    let (status, trace) = get_json(&server.url(&format!("/api/v1/traces/{}", report.trace_id)));
    assert_eq!(status, 200, "{trace:#}");
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let http = find(&spans, "name", "POST /api/tasks/{task_id}/run");
    assert_eq!(http["kind"], "SPAN_KIND_SERVER");
    assert_eq!(http["triplet_id"], req["triplet_id"]);
    for name in ["plan", "code", "review"] {
        let s = find(&spans, "name", name);
        assert_eq!(s["parent_span_id"], http["span_id"], "{name} runs inside the request");
        assert_eq!(s["resource"]["service.name"], "agent-api-e2e", "{s:#}");
    }
}

//! The tower layer on an axum router, driven through `oneshot` (no socket): one triplet per
//! request with the route template, headers and query keys in its state, status and size in its
//! action, W3C trace context extracted from the request and injected into the response, and the
//! agent calls of the handler in the same trace.

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use common::*;
use http::{HeaderName, Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::trace::SpanKind;
use rltrace_sdk::{TripletLayer, rl_triplet};
use tower::ServiceExt;

#[rl_triplet(role = "Plan", task_id = id)]
async fn plan_task(id: String) -> String {
    format!("plan for {id}")
}

fn app() -> Router {
    Router::new()
        .route("/tasks/{id}", get(|Path(id): Path<String>| async move { plan_task(id).await }))
        .route("/boom", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .layer(
            TripletLayer::new()
                .role("api")
                .capture_header(HeaderName::from_static("x-user-id"), "user_id")
                .session_header(HeaderName::from_static("x-session-id")),
        )
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_request_is_a_triplet_in_the_callers_trace() {
    install(|b| b);
    let req = Request::get("/tasks/task-77?verbose=1&b=2&verbose=0")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("x-user-id", "u-5")
        .header("x-session-id", "layer-session-1")
        .body(Body::empty())
        .expect("request");
    let resp = app().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let tp = resp.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_default();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    assert_eq!(&body[..], b"plan for task-77");

    let s = only("layer-session-1");
    assert_eq!(s.name, "GET /tasks/{id}");
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(s.span_context.trace_id().to_string(), TRACE, "the caller's trace continues");
    assert_eq!(s.parent_span_id.to_string(), PARENT);
    assert_eq!(attr_str(&s, "rl.sequence_scope").as_deref(), Some("session"));
    let state = attr_json(&s, "rl.state");
    assert_eq!(state["agent_role"], "api");
    assert_eq!(state["method"], "GET");
    assert_eq!(state["route"], "/tasks/{id}", "the template, not the raw path");
    assert_eq!(state["query_keys"], serde_json::json!(["b", "verbose"]));
    assert_eq!(state["user_id"], "u-5");
    assert_eq!(state["session_id"], "layer-session-1");
    let action = attr_json(&s, "rl.action");
    assert_eq!(action["status"], 200);
    assert_eq!(action["success"], true);
    assert_eq!(action["response_size"], body.len());
    assert_eq!(attr_f64(&s, "rl.reward.success"), Some(1.0));
    assert_eq!(tp, format!("00-{TRACE}-{}-01", s.span_context.span_id()), "the response carries the request triplet's context");

    // The agent work behind the request: its own sequence, the same trace, a child span.
    let p = only("task-77");
    assert_eq!(p.span_context.trace_id().to_string(), TRACE);
    assert_eq!(p.parent_span_id, s.span_context.span_id());
    assert_eq!(attr_json(&p, "rl.state")["call_depth"], 1);
}

#[tokio::test]
async fn an_unsampled_traceparent_does_not_drop_the_triplet() {
    install(|b| b);
    let req = Request::get("/boom")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
        .header("x-session-id", "layer-session-3")
        .body(Body::empty())
        .expect("request");
    let _ = app().oneshot(req).await.expect("response");
    let s = only("layer-session-3");
    assert_eq!(s.span_context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
}

#[tokio::test]
async fn server_errors_are_failures() {
    install(|b| b);
    let req = Request::get("/boom").header("x-session-id", "layer-session-2").body(Body::empty()).expect("request");
    let resp = app().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let s = only("layer-session-2");
    assert_eq!(attr_json(&s, "rl.action")["success"], false);
    assert_eq!(attr_json(&s, "rl.action")["status"], 503);
    assert_eq!(attr_f64(&s, "rl.reward.success"), Some(0.0));
    assert_eq!(attr_i64(&s, "http.response.status_code"), Some(503));
}

#[tokio::test]
async fn without_session_a_request_is_its_own_trace_sequence() {
    install(|b| b);
    let req = Request::get("/boom?probe=keyless-layer").body(Body::empty()).expect("request");
    let resp = app().oneshot(req).await.expect("response");
    assert!(resp.headers().contains_key("traceparent"));
    let s = spans()
        .into_iter()
        .find(|s| attr_json(s, "rl.state")["query_keys"] == serde_json::json!(["probe"]))
        .expect("the request span");
    assert_eq!(attr_str(&s, "rl.sequence_id"), Some(s.span_context.trace_id().to_string()));
}

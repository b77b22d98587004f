//! Router tests of the collector's HTTP application over a real store in a temporary directory:
//! request bodies of the wrong shape (unknown fields, wrong types, missing fields: 422 with the
//! field's path), bodies that are not JSON (400), out-of-range values (422), query parameters,
//! the route table, and the bound on the latency histogram's label sets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rltrace_core::Policy;
use rltrace_server::{AppState, IngestLimits, app, routes};
use rltrace_store::{Store, StoreConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The application over a fresh store (the directory lives as long as the returned guard).
fn fresh() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(StoreConfig::new(dir.path().join("router.db"))).expect("open store");
    (app(AppState::new(store, Policy::default(), IngestLimits::default())), dir)
}

async fn call(app: &Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, String, Vec<u8>) {
    let req = Request::builder().method(method).uri(uri).header("content-type", "application/json").body(Body::from(body)).expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, ct, bytes)
}

/// POST a body; the answer's status and its JSON.
async fn post(app: &Router, path: &str, body: &[u8]) -> (StatusCode, Value) {
    let (status, _, bytes) = call(app, Method::POST, path, body.to_vec()).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)})))
}

async fn get(app: &Router, path: &str) -> (StatusCode, Value) {
    let (status, _, bytes) = call(app, Method::GET, path, Vec::new()).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)})))
}

/// The error's code and message, checking the shape `{"error": {"code", "message"}}` and nothing else.
fn error(v: &Value) -> (String, String) {
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only `error` at the top: {v}");
    let (code, message) = (v["error"]["code"].as_str(), v["error"]["message"].as_str());
    assert_eq!(v["error"].as_object().map(|o| o.len()), Some(2), "error has code and message: {v}");
    (code.expect("code").to_string(), message.expect("message").to_string())
}

#[track_caller]
fn assert_422(status: StatusCode, v: &Value, message: &str, what: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
    let (code, got) = error(v);
    assert_eq!(code, "validation_failed", "{what}: {v}");
    assert_eq!(got, message, "{what}");
}

const REWARDS: &str = "/api/v1/rewards";
const HITL: &str = "/api/v1/callbacks/hitl";
const TESTS: &str = "/api/v1/callbacks/tests";
const DEFECTS: &str = "/api/v1/callbacks/defects";

fn hitl() -> Value {
    json!({"sequence_id": "s", "decision": "approved", "reviewer": "ann", "justification": "meets the spec"})
}

fn tests_body() -> Value {
    json!({"sequence_id": "s", "passed": 3, "failed": 1})
}

fn defect() -> Value {
    json!({"task_id": "T", "defect_type": "80_Function", "severity": "High", "phase_injected": "Code", "phase_removed": "Test", "description": "off by one"})
}

fn with(mut v: Value, key: &str, value: Value) -> Vec<u8> {
    v[key] = value;
    v.to_string().into_bytes()
}

#[tokio::test]
async fn unknown_fields_are_422_and_named_with_their_path() {
    let (app, _dir) = fresh();
    let (s, v) = post(&app, REWARDS, br#"{"target":{"triplet_id":"t"},"value":0.5,"source":"hitl","bogus":1}"#).await;
    assert_422(s, &v, "bogus: unknown field `bogus`, expected one of `target`, `value`, `source`, `reason`, `idempotency_key`, `metadata`, `pending`", "top level");
    let (s, v) = post(&app, REWARDS, br#"{"target":{"sequence_id":"s","gama":0.5},"value":0.5,"source":"hitl"}"#).await;
    assert_422(s, &v, "target.gama: unknown field `gama`, expected one of `triplet_id`, `sequence_id`, `strategy`, `gamma`, `role`", "nested");
    let (s, v) = post(&app, HITL, &with(hitl(), "score", json!(1))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(error(&v).1.starts_with("score: unknown field `score`"), "{v}");
    let (s, v) = post(&app, TESTS, &with(tests_body(), "errors", json!(0))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(error(&v).1.starts_with("errors: unknown field `errors`"), "{v}");
    let (s, v) = post(&app, DEFECTS, &with(defect(), "severty", json!("High"))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(error(&v).1.starts_with("severty: unknown field `severty`"), "{v}");
}

#[tokio::test]
async fn wrong_types_and_missing_fields_are_422_with_the_path() {
    let (app, _dir) = fresh();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            REWARDS,
            br#"{"target":{"sequence_id":"s","strategy":"discounted","gamma":"x"},"value":0.5,"source":"tests"}"#.to_vec(),
            r#"target.gamma: invalid type: string "x", expected f64"#,
        ),
        (REWARDS, br#"{"target":{"triplet_id":"t"},"value":"0.5","source":"hitl"}"#.to_vec(), r#"value: invalid type: string "0.5", expected f64"#),
        (REWARDS, br#"{"target":{"triplet_id":"t"},"value":null,"source":"hitl"}"#.to_vec(), "value: invalid type: null, expected f64"),
        (REWARDS, br#"{"target":{"triplet_id":7},"value":0.5,"source":"hitl"}"#.to_vec(), "target.triplet_id: invalid type: integer `7`, expected a string"),
        (REWARDS, br#"{"target":{"triplet_id":"t"},"value":0.5,"source":"hitl","metadata":[1]}"#.to_vec(), "metadata: invalid type: sequence, expected a map"),
        (REWARDS, br#"{"target":{"triplet_id":"t"},"value":0.5,"source":"hitl","pending":"yes"}"#.to_vec(), r#"pending: invalid type: string "yes", expected a boolean"#),
        (REWARDS, br#"{"target":{"triplet_id":"t"},"source":"hitl"}"#.to_vec(), "missing field `value`"),
        (REWARDS, br#"{"target":{"triplet_id":"t","sequence_id":"s"},"value":0.5,"source":"hitl"}"#.to_vec(), "target: give either triplet_id or sequence_id, not both"),
        (REWARDS, br#"{"target":{},"value":0.5,"source":"hitl"}"#.to_vec(), "target: give triplet_id or sequence_id"),
        (REWARDS, b"[1, 2, 3]".to_vec(), "body must be a JSON object"),
        (HITL, with(hitl(), "sequence_id", json!(7)), "sequence_id: invalid type: integer `7`, expected a string"),
        (HITL, with(hitl(), "justification", Value::Null), "justification: invalid type: null, expected a string"),
        (TESTS, with(tests_body(), "passed", json!(1.5)), "passed: invalid type: floating point `1.5`, expected a non-negative integer"),
        (TESTS, with(tests_body(), "failed", json!(-2)), "failed: invalid value: integer `-2`, expected a non-negative integer"),
        (TESTS, with(tests_body(), "skipped", json!("3")), r#"skipped: invalid type: string "3", expected a non-negative integer"#),
        (TESTS, br#"{"sequence_id":"s","failed":1}"#.to_vec(), "missing field `passed`"),
        (DEFECTS, with(defect(), "phase_injected", Value::Null), "phase_injected: invalid type: null, expected a string"),
    ];
    for (path, body, want) in cases {
        let (s, v) = post(&app, path, &body).await;
        assert_422(s, &v, want, &format!("{path} {}", String::from_utf8_lossy(&body)));
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_on_every_post_route() {
    let (app, _dir) = fresh();
    for path in [REWARDS, HITL, TESTS, DEFECTS] {
        for raw in [&b"{not json"[..], b"", "héllo".as_bytes(), br#"{"sequence_id":"s","passed":1"#] {
            let (s, v) = post(&app, path, raw).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {:?}: {v}", String::from_utf8_lossy(raw));
            let (code, message) = error(&v);
            assert_eq!(code, "bad_request", "{v}");
            assert!(message.starts_with("request body is not valid JSON"), "{message}");
        }
    }
    // NaN is not JSON either, but it is a bad value: 422 as before.
    let (s, v) = post(&app, REWARDS, br#"{"target":{"triplet_id":"t"},"value":NaN,"source":"hitl"}"#).await;
    assert_422(s, &v, "value must be a finite number in [0, 1]", "NaN");
}

#[tokio::test]
async fn well_typed_values_out_of_range_are_422_from_the_domain_rules() {
    let (app, _dir) = fresh();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (REWARDS, br#"{"target":{"triplet_id":"t"},"value":1.5,"source":"hitl"}"#.to_vec(), "value must be a finite number in [0, 1], got 1.5"),
        (REWARDS, br#"{"target":{"sequence_id":"s","strategy":"discounted","gamma":0},"value":0.5,"source":"hitl"}"#.to_vec(), "gamma"),
        (REWARDS, br#"{"target":{"sequence_id":"s","strategy":"best"},"value":0.5,"source":"hitl"}"#.to_vec(), "best"),
        (REWARDS, br#"{"target":{"triplet_id":"t"},"value":0.5,"source":"HITL"}"#.to_vec(), "HITL"),
        (REWARDS, br#"{"target":{"triplet_id":""},"value":0.5,"source":"hitl"}"#.to_vec(), "target.triplet_id must be a non-empty string"),
        (HITL, with(hitl(), "justification", json!("  ")), "justification is required: a review decision must say why"),
        (HITL, with(hitl(), "decision", json!("maybe")), "decision must be one of approved, approved_with_changes, rejected, deferred, got \"maybe\""),
        (DEFECTS, with(defect(), "phase_removed", json!("Code")), "phase_injected and phase_removed are both \"Code\""),
        (DEFECTS, with(defect(), "defect_type", json!("85_Other")), "PSP"),
    ];
    for (path, body, needle) in cases {
        let (s, v) = post(&app, path, &body).await;
        let what = format!("{path} {}", String::from_utf8_lossy(&body));
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        let (code, message) = error(&v);
        assert_eq!(code, "validation_failed", "{what}");
        assert!(message.contains(needle), "{what}: {message:?} lacks {needle:?}");
    }
    let (s, v) = post(&app, TESTS, br#"{"sequence_id":"s","passed":0,"failed":0}"#).await;
    assert_422(s, &v, "passed and failed are both 0: no test result to reward", "both zero");
}

#[tokio::test]
async fn a_valid_body_is_appended() {
    let (app, _dir) = fresh();
    let body = br#"{"target":{"triplet_id":"later"},"value":0.5,"source":"judge","pending":true,"metadata":{"b":1,"a":2}}"#;
    let (s, v) = post(&app, REWARDS, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["target"], json!({"triplet_id": "later"}));
    assert_eq!(v["pending"], true);
    assert_eq!(v["metadata"], json!({"a": 2, "b": 1}));
    let (s, again) = post(&app, REWARDS, &with(serde_json::from_slice(body).expect("json"), "idempotency_key", json!("k"))).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    let (s, replay) = post(&app, REWARDS, &with(serde_json::from_slice(body).expect("json"), "idempotency_key", json!("k"))).await;
    assert_eq!(s, StatusCode::OK, "the same key and body again: {replay}");
    assert_eq!(replay["reward_id"], again["reward_id"]);
    let (s, conflict) = post(&app, REWARDS, br#"{"target":{"triplet_id":"later"},"value":0.6,"source":"judge","pending":true,"idempotency_key":"k"}"#).await;
    assert_eq!(s, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(error(&conflict).0, "conflict");
}

#[tokio::test]
async fn query_parameters_are_typed_and_named_in_errors() {
    let (app, _dir) = fresh();
    for (uri, needle) in [
        ("/api/v1/sequences?bogus=1", "bogus"),
        ("/api/v1/sequences?role=a&role=b", "duplicate field `role`"),
        ("/api/v1/triplets?rewarded=yes", "query parameter rewarded: must be true or false, got \"yes\""),
        ("/api/v1/triplets?limit=0", "query parameter limit: must be an integer in [1, 1000], got \"0\""),
        ("/api/v1/triplets?since=yesterday", "query parameter since: must be an RFC 3339 timestamp"),
        ("/api/v1/triplets?cursor=zz", "invalid cursor"),
        ("/api/v1/sequences?cursor=743a33", "invalid cursor"),
        ("/api/v1/export?format=csv", "query parameter format: unknown format \"csv\"; one of jsonl, parquet"),
        ("/api/v1/export?shape=trl-ppo", "query parameter shape: unknown shape \"trl-ppo\""),
        ("/api/v1/export?threshold=1.5", "query parameter threshold: must be a number in [0, 1], got 1.5"),
        ("/api/v1/export?prompt_field=state", "query parameter prompt_field: must be a JSON pointer"),
        ("/api/v1/export?limit=3", "limit"),
    ] {
        let (s, v) = get(&app, uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let (code, message) = error(&v);
        assert_eq!(code, "bad_request");
        assert!(message.contains(needle), "{uri}: {message:?} lacks {needle:?}");
    }
    let (s, v) = get(&app, "/api/v1/triplets?rewarded=false&limit=1000&since=2023-11-14T22:13:20Z&role=Code").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"items": [], "next_cursor": null}));
    let (s, v) = get(&app, "/api/v1/sequences").await;
    assert_eq!((s, v), (StatusCode::OK, json!({"items": [], "next_cursor": null})));
}

#[tokio::test]
async fn the_router_serves_exactly_the_route_table() {
    let (app, _dir) = fresh();
    for r in routes::table() {
        let uri = r.path.replace("{sequence_id}", "x").replace("{triplet_id}", "x").replace("{trace_id}", "x");
        let (status, _, body) = call(&app, r.method.clone(), &uri, Vec::new()).await;
        let text = String::from_utf8_lossy(&body);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{} {}", r.method, r.path);
        assert!(!text.contains("no such route"), "{} {} fell through to the fallback: {text}", r.method, r.path);
    }
    let (status, v) = get(&app, "/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&v), ("not_found".to_string(), "no such route".to_string()));
    let (status, ct, body) = call(&app, Method::GET, "/openapi.json", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(String::from_utf8_lossy(&body), rltrace_server::openapi::json());
}

/// Send one raw HTTP/1.1 request and read the whole answer.
fn raw(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_labels_stay_bounded_whatever_clients_send() {
    let (app, _dir) = fresh();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let metrics = tokio::task::spawn_blocking(move || {
        for i in 0..40 {
            let a = raw(addr, &format!("MADEUP{i}"), "/api/v1/stats");
            assert!(a.starts_with("HTTP/1.1 405"), "a made-up method on a route: {a}");
            let b = raw(addr, "GET", &format!("/no/such/path/{i}"));
            assert!(b.starts_with("HTTP/1.1 404"), "an unknown path: {b}");
            let c = raw(addr, &format!("BREW{i}"), &format!("/pot/{i}"));
            assert!(c.starts_with("HTTP/1.1 404"), "a made-up method on an unknown path: {c}");
        }
        assert!(raw(addr, "PATCH", "/api/v1/stats").starts_with("HTTP/1.1 405"));
        assert!(raw(addr, "GET", "/api/v1/stats").starts_with("HTTP/1.1 200"));
        raw(addr, "GET", "/metrics")
    })
    .await
    .expect("client");
    server.abort();
    let series: Vec<&str> = metrics.lines().filter(|l| l.starts_with("rltrace_http_request_duration_seconds_count{")).collect();
    for want in [
        r#"{method="other",route="/api/v1/stats",status="405"} 40"#,
        r#"{method="GET",route="unmatched",status="404"} 40"#,
        r#"{method="other",route="unmatched",status="404"} 40"#,
        r#"{method="PATCH",route="/api/v1/stats",status="405"} 1"#,
        r#"{method="GET",route="/api/v1/stats",status="200"} 1"#,
    ] {
        assert!(series.iter().any(|l| l.ends_with(want)), "no series {want} in:\n{}", series.join("\n"));
    }
    assert_eq!(series.len(), 5, "120 requests with made-up methods and paths make 5 series, not more:\n{}", series.join("\n"));
    assert!(!metrics.contains("MADEUP") && !metrics.contains("BREW") && !metrics.contains("/no/such"), "client strings leaked into labels");
}

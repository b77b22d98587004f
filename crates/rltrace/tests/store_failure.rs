//! A store that fails is not an overloaded one (DESIGN section 4): when the database cannot take
//! writes (here: it reached `--max-db-bytes`, as a full disk), OTLP and REST writes answer 500 /
//! an OTLP `Status` with no `Retry-After`, `/readyz` answers 503 and says why, the log says why,
//! and nothing acknowledged before is lost.

mod common;

use serde_json::{Value, json};

fn otlp_batch(batch: u32, spans: u32) -> Value {
    let spans: Vec<Value> = (0..spans)
        .map(|n| {
            json!({
                "traceId": format!("{:032x}", u64::from(batch) + 1),
                "spanId": format!("{:016x}", u64::from(batch) * 1000 + u64::from(n) + 1),
                "name": "code_agent.execute", "kind": 1,
                "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225601000000000",
                "attributes": [
                    {"key": "rl.sequence_id", "value": {"stringValue": format!("task-{batch}")}},
                    {"key": "rl.state.pad", "value": {"stringValue": "x".repeat(2000)}},
                    {"key": "rl.action", "value": {"stringValue": "{\"success\": true}"}}
                ]
            })
        })
        .collect();
    json!({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]})
}

#[test]
fn a_full_database_answers_500_and_readyz_503_not_overload() {
    let mut s = common::Server::start_logged(&["--max-db-bytes", "1500000"]);
    assert_eq!(common::get_json(&s.url("/readyz")).0, 200);
    let mut acknowledged = 0u64;
    let mut failure = None;
    for b in 0..400u32 {
        let body = serde_json::to_vec(&otlp_batch(b, 20)).expect("json");
        let (status, headers, bytes) = common::post_raw(&s.url("/v1/traces"), "application/json", &[], body);
        if status == 200 {
            acknowledged += 20;
            continue;
        }
        failure = Some((status, headers, bytes));
        break;
    }
    let (status, headers, bytes) = failure.expect("the database reached its bound");
    assert_eq!(status, 500, "a failing store is an internal error: {}", String::from_utf8_lossy(&bytes));
    assert!(headers.get("retry-after").is_none(), "no Retry-After: exporters must not retry forever");
    let st: Value = serde_json::from_slice(&bytes).expect("an OTLP Status in JSON");
    assert_eq!(st["code"], 13, "INTERNAL: {st}");
    assert!(st["message"].as_str().unwrap_or_default().contains("full"), "{st}");
    let (status, body) = common::get_json(&s.url("/readyz"));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("full"), "{body}");
    // A REST write fails the same way, with the JSON error shape.
    let (status, body) = common::post_json(
        &s.url("/api/v1/rewards"),
        &json!({"target": {"sequence_id": "task-0", "strategy": "uniform"}, "value": 1.0, "source": "hitl", "reason": "x".repeat(200_000)}),
    );
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal");
    // Reads go on.
    let (status, stats) = common::get_json(&s.url("/api/v1/stats"));
    assert_eq!(status, 200);
    assert_eq!(stats["spans"].as_u64(), Some(acknowledged));
    assert!(s.log().contains("full"), "the log says why: {}", s.log());
    // Restarted without the bound, everything acknowledged is there and the store is ready.
    let db = s.db.clone();
    let tmp = s.take_dir();
    s.stop();
    let s2 = common::Server::start_at(&db, &[]);
    assert_eq!(common::get_json(&s2.url("/readyz")).0, 200);
    assert_eq!(common::get_json(&s2.url("/api/v1/stats")).1["spans"].as_u64(), Some(acknowledged));
    let body = serde_json::to_vec(&otlp_batch(1000, 5)).expect("json");
    assert_eq!(common::post_raw(&s2.url("/v1/traces"), "application/json", &[], body).0, 200);
    drop(tmp);
}

//! Helpers shared by `tests/api.rs` and `tests/cli.rs`: OTLP/JSON spans built with `serde_json`
//! (hex ids, nanosecond times as strings, as the OTLP/JSON encoding writes them), sent to
//! `POST /v1/traces` like any OTLP/HTTP JSON client, and small REST helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::common;

/// 2023-11-14T22:13:20Z in nanoseconds: the base of every span time in these tests.
pub const BASE_NS: u64 = 1_700_000_000_000_000_000;
/// One second in nanoseconds.
pub const SEC: u64 = 1_000_000_000;

/// `BASE_NS + secs` seconds, as the API writes it (RFC 3339 UTC, microseconds, `Z`).
pub fn rfc3339(secs: u64) -> String {
    let total = 1_700_000_000 + secs;
    let (days, rem) = (total / 86_400, total % 86_400);
    // 1_700_000_000 s is 2023-11-14 (day 19675 since the epoch); the tests stay within that week.
    let day = 14 + (days - 19_675);
    format!("2023-11-{day:02}T{:02}:{:02}:{:02}.000000Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh non-zero number, unique in the process.
pub fn fresh() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed) + (u64::from(std::process::id()) << 32)
}

/// A fresh trace id (32 lowercase hex digits).
pub fn trace_id() -> String {
    format!("{:016x}{:016x}", 0xabcd_0000_0000_0000u64 | fresh(), fresh())
}

/// A fresh span id (16 lowercase hex digits).
pub fn span_id() -> String {
    format!("{:016x}", 0x5000_0000_0000_0000u64 | fresh())
}

/// An OTLP/JSON `AnyValue` from a JSON value: strings, booleans, integers (as strings, as the
/// OTLP/JSON encoding writes int64), doubles, arrays.
pub fn any_value(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n.as_f64()}),
        Value::Array(a) => json!({"arrayValue": {"values": a.iter().map(any_value).collect::<Vec<_>>()}}),
        Value::Null => json!({}),
        Value::Object(_) => json!({"stringValue": v.to_string()}),
    }
}

/// OTLP/JSON attributes (`[{key, value}]`) from pairs.
pub fn attributes(pairs: &[(&str, Value)]) -> Value {
    Value::Array(pairs.iter().map(|(k, v)| json!({"key": k, "value": any_value(v)})).collect())
}

/// Builder of one OTLP/JSON span.
#[derive(Clone)]
pub struct SpanB {
    v: Value,
}

/// A span with the given ids, name and start (nanoseconds since the epoch); it lasts 1 ms.
pub fn span(trace_id: &str, span_id: &str, name: &str, start_ns: u64) -> SpanB {
    SpanB {
        v: json!({
            "traceId": trace_id,
            "spanId": span_id,
            "name": name,
            "kind": 1,
            "startTimeUnixNano": start_ns.to_string(),
            "endTimeUnixNano": (start_ns + 1_000_000).to_string(),
            "attributes": [],
            "status": {},
        }),
    }
}

/// A triplet span in a fresh trace: `rl.sequence_id`, `rl.sequence_index`, `rl.state.agent_role`
/// and `rl.action.success`, starting `secs` seconds after [`BASE_NS`].
pub fn triplet(sequence_id: &str, index: i64, role: &str, secs: u64) -> SpanB {
    span(&trace_id(), &span_id(), &format!("agent.{role}"), BASE_NS + secs * SEC)
        .attr("rl.sequence_id", json!(sequence_id))
        .attr("rl.sequence_index", json!(index))
        .attr("rl.state.agent_role", json!(role))
        .attr("rl.action.success", json!(true))
}

impl SpanB {
    /// Add an attribute.
    pub fn attr(mut self, key: &str, value: Value) -> SpanB {
        if let Some(a) = self.v["attributes"].as_array_mut() {
            a.push(json!({"key": key, "value": any_value(&value)}));
        }
        self
    }

    /// Set the parent span id.
    pub fn parent(mut self, parent: &str) -> SpanB {
        self.v["parentSpanId"] = json!(parent);
        self
    }

    /// Set the end time.
    pub fn end(mut self, end_ns: u64) -> SpanB {
        self.v["endTimeUnixNano"] = json!(end_ns.to_string());
        self
    }

    /// Set the status.
    pub fn status(mut self, code: i64, message: &str) -> SpanB {
        self.v["status"] = json!({"code": code, "message": message});
        self
    }

    /// Set the kind (OTLP enum number).
    pub fn kind(mut self, kind: i64) -> SpanB {
        self.v["kind"] = json!(kind);
        self
    }

    /// Add a span event.
    pub fn event(mut self, name: &str, time_ns: u64, attrs: &[(&str, Value)]) -> SpanB {
        let ev = json!({"timeUnixNano": time_ns.to_string(), "name": name, "attributes": attributes(attrs)});
        match self.v.get_mut("events").and_then(Value::as_array_mut) {
            Some(a) => a.push(ev),
            None => self.v["events"] = json!([ev]),
        }
        self
    }

    /// The trace id.
    pub fn trace_id(&self) -> String {
        self.v["traceId"].as_str().unwrap_or_default().to_string()
    }

    /// The span id.
    pub fn span_id(&self) -> String {
        self.v["spanId"].as_str().unwrap_or_default().to_string()
    }

    /// The default triplet id `{trace_id}{span_id}` (lowercase).
    pub fn default_triplet_id(&self) -> String {
        format!("{}{}", self.trace_id(), self.span_id()).to_ascii_lowercase()
    }

    /// The span as OTLP/JSON.
    pub fn build(&self) -> Value {
        self.v.clone()
    }
}

/// An `ExportTraceServiceRequest` in OTLP/JSON holding `spans` under one resource and scope.
pub fn request(spans: &[SpanB]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {"attributes": attributes(&[("service.name", json!("rltrace-tests"))])},
            "scopeSpans": [{
                "scope": {"name": "rltrace.tests", "version": "1"},
                "spans": spans.iter().map(SpanB::build).collect::<Vec<_>>(),
            }],
        }],
    })
}

/// POST spans as OTLP/JSON to `/v1/traces`; asserts 200 and that no span was rejected.
pub fn send(s: &common::Server, spans: &[SpanB]) {
    let body = serde_json::to_vec(&request(spans)).expect("serialise request");
    let (status, headers, resp) = common::post_raw(&s.url("/v1/traces"), "application/json", &[], body);
    let text = String::from_utf8_lossy(&resp).into_owned();
    assert_eq!(status, 200, "OTLP/JSON export answered {status}: {text}");
    assert!(
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json")),
        "response to a JSON export must be JSON: {headers:?}"
    );
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let rejected = v["partialSuccess"]["rejectedSpans"].as_str().map(str::to_string).or_else(|| v["partialSuccess"]["rejectedSpans"].as_i64().map(|n| n.to_string()));
    assert!(rejected.as_deref().is_none_or(|r| r == "0"), "spans rejected: {text}");
}

/// POST a reward body to `/api/v1/rewards`.
pub fn reward(s: &common::Server, body: &Value) -> (u16, Value) {
    common::post_json(&s.url("/api/v1/rewards"), body)
}

/// POST a reward that must be created (201); returns the stored event.
pub fn reward_created(s: &common::Server, body: &Value) -> Value {
    let (status, ev) = reward(s, body);
    assert_eq!(status, 201, "reward {body} answered {status}: {ev}");
    ev
}

/// GET a URL as text: status, content type and body.
pub fn get_text(url: &str) -> (u16, String, String) {
    let resp = common::client().get(url).send().expect("GET");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, ct, resp.text().expect("body"))
}

/// GET a URL that must answer 200 with JSON.
pub fn get_ok(url: &str) -> Value {
    let (status, v) = common::get_json(url);
    assert_eq!(status, 200, "GET {url} answered {status}: {v}");
    v
}

/// `GET /api/v1/stats`.
pub fn stats(s: &common::Server) -> Value {
    get_ok(&s.url("/api/v1/stats"))
}

/// Percent-encode a path segment or query value (everything but unreserved characters).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Assert that a JSON value is a number within 1e-9 of `want`.
#[track_caller]
pub fn assert_close(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: expected a number near {want}, got {got}"));
    assert!((g - want).abs() < 1e-9, "{what}: expected {want}, got {g}");
}

/// Assert that a body is the REST error shape with this code and a non-empty message.
#[track_caller]
pub fn assert_error(body: &Value, code: &str, what: &str) {
    assert_eq!(body["error"]["code"], code, "{what}: error code in {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error message in {body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: only `error` at the top: {body}");
}

/// Whether `s` looks like `2023-11-14T22:13:20.123456Z`.
pub fn is_rfc3339_micros_z(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b.iter().enumerate().all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 26) || c.is_ascii_digit())
}

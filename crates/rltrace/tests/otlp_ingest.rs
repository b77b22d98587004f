//! End-to-end tests of OTLP ingest (DESIGN sections 3 and 4): the real `rltrace serve` binary on
//! loopback, fed by real clients over real sockets — the official Rust OpenTelemetry exporter
//! (`opentelemetry-otlp`, over gRPC, gRPC+gzip, HTTP protobuf and HTTP JSON), `curl` posting an OTLP
//! JSON fixture, the tonic `TraceServiceClient`, and raw TCP for the edge cases a well-behaved client
//! never produces (exact size limits, a body held half-sent, chunked bodies).
//!
//! What is checked through the REST API (`/api/v1/triplets`, `/api/v1/traces/{id}`,
//! `/api/v1/stats`) and `/metrics`: triplets arrive with the right state, action, reward and
//! sequence index; a batch sent twice is stored once; malformed `rl.*` values, oversized attributes
//! and invalid ids are counted in `partial_success` while the rest of the batch is kept; the body
//! and inflation limits answer 413 exactly one byte past the bound; undecodable bodies answer 400
//! with a `google.rpc.Status` in the request's encoding; overload answers 503 with `Retry-After`
//! (gRPC `UNAVAILABLE`) and recovers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{Server, get_json, post_raw};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue as OtelKeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use prost::Message;
use serde_json::{Value, json};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Status`, the body of OTLP/HTTP error responses in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

// gRPC status codes carried in OTLP/HTTP error bodies.
const GRPC_INVALID_ARGUMENT: i64 = 3;
const GRPC_RESOURCE_EXHAUSTED: i64 = 8;
const GRPC_UNAVAILABLE: i64 = 14;

// ---------------------------------------------------------------------------------------------
// Building OTLP requests by hand.

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn str_attr(key: &str, value: &str) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.to_string()))
}

fn f64_attr(key: &str, value: f64) -> KeyValue {
    attr(key, any_value::Value::DoubleValue(value))
}

/// A 16-byte trace id: `tag` repeated, never all zero for a non-zero tag.
fn trace_id(tag: u8) -> [u8; 16] {
    [tag; 16]
}

/// An 8-byte span id ending in `n`.
fn span_id(tag: u8, n: u8) -> [u8; 8] {
    [tag, 0, 0, 0, 0, 0, 0, n]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span starting `n` milliseconds after a fixed base time, lasting one millisecond.
fn span(trace: &[u8], span: &[u8], name: &str, attributes: Vec<KeyValue>) -> Span {
    let n = u64::from(span.last().copied().unwrap_or(0));
    let start = 1_700_000_000_000_000_000 + n * 1_000_000;
    Span {
        trace_id: trace.to_vec(),
        span_id: span.to_vec(),
        name: name.to_string(),
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        attributes,
        ..Default::default()
    }
}

/// Well-formed `rl.*` attributes of one triplet.
fn triplet_attrs(sequence_id: &str, step: i64, reward: f64) -> Vec<KeyValue> {
    vec![
        str_attr("rl.sequence_id", sequence_id),
        str_attr("rl.state", &json!({"step": step}).to_string()),
        str_attr("rl.state.agent_role", "tester"),
        str_attr("rl.action", r#"{"ok":true}"#),
        f64_attr("rl.reward", reward),
    ]
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![str_attr("service.name", "otlp-ingest-test")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A valid request of exactly `size` bytes in protobuf: one triplet span (span id `(tag, 1)`,
/// sequence `padded-{tag}`) with a padding attribute, plus when needed an empty second
/// `ResourceSpans` whose `schema_url` takes up the bytes the padding cannot (varint lengths jump).
fn protobuf_request_of_size(tag: u8, size: usize) -> ExportTraceServiceRequest {
    let build = |pad: usize| {
        let mut attrs = triplet_attrs(&format!("padded-{tag}"), 0, 0.5);
        attrs.push(str_attr("padding", &"p".repeat(pad)));
        request(vec![span(&trace_id(tag), &span_id(tag, 1), "padded", attrs)])
    };
    let base = build(0).encoded_len();
    assert!(base + 4 <= size, "a padded request cannot be as small as {size} bytes");
    let mut pad = size - base;
    for _ in 0..64 {
        let mut req = build(pad);
        let len = req.encoded_len();
        if len == size {
            return req;
        }
        if len < size && size - len >= 4 && size - len < 100 {
            // tag (1) + length (1) + schema_url tag (1) + its length (1) + k bytes.
            req.resource_spans.push(ResourceSpans { schema_url: "s".repeat(size - len - 4), ..Default::default() });
            assert_eq!(req.encoded_len(), size);
            return req;
        }
        pad -= 1;
    }
    panic!("could not build a protobuf request of exactly {size} bytes");
}

/// A valid OTLP/JSON body of exactly `size` bytes (JSON grows by one byte per padding byte).
fn json_body_of_size(tag: u8, size: usize) -> Vec<u8> {
    let build = |pad: usize| {
        let mut attrs = triplet_attrs(&format!("padded-{tag}"), 0, 0.5);
        attrs.push(str_attr("padding", &"p".repeat(pad)));
        serde_json::to_vec(&request(vec![span(&trace_id(tag), &span_id(tag, 1), "padded", attrs)])).expect("serialize")
    };
    let base = build(0).len();
    assert!(base <= size);
    let body = build(size - base);
    assert_eq!(body.len(), size);
    body
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip write");
    e.finish().expect("gzip finish")
}

// ---------------------------------------------------------------------------------------------
// Reading answers.

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn decode_status(body: &[u8]) -> RpcStatus {
    RpcStatus::decode(body).unwrap_or_else(|e| panic!("body is not a protobuf google.rpc.Status ({e}): {body:?}"))
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// An int64 of OTLP/JSON, which may be written as a number or a string.
fn json_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The value of an unlabelled Prometheus counter or gauge.
fn metric(s: &Server, name: &str) -> f64 {
    let text = common::client().get(s.url("/metrics")).send().expect("GET /metrics").text().expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().expect("metric value"))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

fn stats(s: &Server) -> Value {
    let (status, body) = get_json(&s.url("/api/v1/stats"));
    assert_eq!(status, 200, "{body}");
    body
}

/// The spans of a trace as the API reports them (empty when the trace is unknown).
fn trace_spans(s: &Server, trace_hex: &str) -> Vec<Value> {
    let (status, body) = get_json(&s.url(&format!("/api/v1/traces/{trace_hex}")));
    match status {
        200 => body["spans"].as_array().cloned().expect("spans array"),
        404 => Vec::new(),
        _ => panic!("GET trace {trace_hex}: {status} {body}"),
    }
}

/// The triplets of a sequence, by `sequence_index`.
fn sequence_triplets(s: &Server, sequence_id: &str) -> Vec<Value> {
    let (status, page) = get_json(&s.url(&format!("/api/v1/triplets?sequence_id={sequence_id}")));
    assert_eq!(status, 200, "{page}");
    let mut items = page["items"].as_array().cloned().expect("items array");
    items.sort_by_key(|t| t["sequence_index"].as_i64());
    items
}

fn post_protobuf(s: &Server, req: &ExportTraceServiceRequest) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    post_raw(&s.url("/v1/traces"), PROTOBUF, &[], req.encode_to_vec())
}

/// POST a protobuf request that must succeed; returns its `partial_success` (rejected, message).
fn export_ok(s: &Server, req: &ExportTraceServiceRequest) -> (i64, String) {
    let (status, headers, body) = post_protobuf(s, req);
    assert_eq!(status, 200, "export failed: {}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), PROTOBUF);
    let resp = ExportTraceServiceResponse::decode(body.as_slice()).expect("ExportTraceServiceResponse");
    resp.partial_success.map(|p| (p.rejected_spans, p.error_message)).unwrap_or_default()
}

/// A raw HTTP/1.1 exchange: write `head` and `body`, read until the server closes.
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn read_response(stream: &mut TcpStream) -> RawResponse {
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let mut raw = Vec::new();
    // The request says `Connection: close`, so the response ends at EOF.
    let _ = stream.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    RawResponse { status, head, body: raw[split + 4..].to_vec() }
}

fn raw_post(s: &Server, extra_head: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(s.http_addr()).expect("connect");
    let head = format!("POST /v1/traces HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra_head}\r\n", s.http_addr());
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) and close before reading everything; the answer is what counts.
    let _ = stream.write_all(body);
    read_response(&mut stream)
}

/// A chunked body: the data in chunks of at most 1000 bytes, then the last chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(1000) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// The official OpenTelemetry exporter.

/// Wraps an exporter to record what it reported: spans acknowledged, and export errors.
#[derive(Debug)]
struct Recorded<E> {
    inner: E,
    log: Arc<Mutex<ExportLog>>,
}

#[derive(Debug, Default)]
struct ExportLog {
    spans_ok: usize,
    errors: Vec<String>,
}

impl<E: SpanExporter> SpanExporter for Recorded<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        let mut log = self.log.lock().expect("export log");
        match &result {
            Ok(()) => log.spans_ok += n,
            Err(e) => log.errors.push(e.to_string()),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

const REWARDS: [f64; 3] = [0.25, 0.5, 1.0];
const SERVICE: &str = "rltrace-e2e";

/// What an episode produced: ids in lowercase hex.
struct Episode {
    trace_id: String,
    root_span_id: String,
    step_span_ids: Vec<String>,
}

/// One episode: a root span (not a triplet) with three triplet children at increasing start times.
fn emit_episode(provider: &SdkTracerProvider, sequence_id: &str) -> Episode {
    let tracer = provider.tracer("rltrace-e2e-tests");
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let root = tracer.span_builder("episode").with_kind(SpanKind::Server).with_start_time(t0).start(&tracer);
    let root_ctx = root.span_context().clone();
    let cx = Context::new().with_span(root);
    let mut step_span_ids = Vec::new();
    for (i, reward) in REWARDS.iter().enumerate() {
        let step = i as i64;
        let start = t0 + Duration::from_millis(100 * (step as u64 + 1));
        let mut span = tracer
            .span_builder(format!("step-{i}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([
                OtelKeyValue::new("rl.sequence_id", sequence_id.to_string()),
                OtelKeyValue::new("rl.state", json!({"task": sequence_id, "step": step}).to_string()),
                OtelKeyValue::new("rl.state.agent_role", "coder"),
                OtelKeyValue::new("rl.action", json!({"tool": "edit", "ok": i != 1}).to_string()),
                OtelKeyValue::new("rl.action.tokens", 100 * (step + 1)),
                OtelKeyValue::new("rl.reward", *reward),
            ])
            .start_with_context(&tracer, &cx);
        step_span_ids.push(span.span_context().span_id().to_string());
        span.end_with_timestamp(start + Duration::from_millis(50));
    }
    cx.span().end_with_timestamp(t0 + Duration::from_secs(1));
    Episode { trace_id: root_ctx.trace_id().to_string(), root_span_id: root_ctx.span_id().to_string(), step_span_ids }
}

fn provider_resource() -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder().with_service_name(SERVICE).build()
}

/// Flush and shut down; every export must have succeeded and acknowledged all four spans.
fn finish(provider: SdkTracerProvider, log: &Arc<Mutex<ExportLog>>) {
    provider.force_flush().expect("force_flush");
    provider.shutdown().expect("shutdown");
    let log = log.lock().expect("export log");
    assert!(log.errors.is_empty(), "export errors: {:?}", log.errors);
    assert_eq!(log.spans_ok, 4, "spans acknowledged by the collector");
}

/// The episode is stored: three triplets with the right fields, four spans in tree order.
fn check_episode(s: &Server, sequence_id: &str, ep: &Episode) {
    let triplets = sequence_triplets(s, sequence_id);
    assert_eq!(triplets.len(), 3, "{triplets:?}");
    for (i, t) in triplets.iter().enumerate() {
        let step = i as i64;
        assert_eq!(t["sequence_id"], sequence_id);
        assert_eq!(t["sequence_index"], step, "{t}");
        assert_eq!(t["trace_id"], ep.trace_id.as_str());
        assert_eq!(t["span_id"], ep.step_span_ids[i].as_str());
        assert_eq!(t["triplet_id"], format!("{}{}", ep.trace_id, ep.step_span_ids[i]));
        assert_eq!(t["state"], json!({"task": sequence_id, "step": step, "agent_role": "coder"}));
        assert_eq!(t["action"], json!({"tool": "edit", "ok": i != 1, "tokens": 100 * (step + 1)}));
        assert_eq!(t["reward"].as_f64(), Some(REWARDS[i]), "{t}");
        assert_eq!(t["reward_sources"], json!({"local": REWARDS[i]}), "{t}");
        assert_eq!(t["reward_source"], "local");
    }

    let spans = trace_spans(s, &ep.trace_id);
    assert_eq!(spans.len(), 4, "{spans:?}");
    let root = &spans[0];
    assert_eq!(root["span_id"], ep.root_span_id.as_str());
    assert_eq!(root["trace_id"], ep.trace_id.as_str());
    assert_eq!(root["name"], "episode");
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(root["depth"], 0);
    assert!(root["parent_span_id"].is_null(), "{root}");
    assert!(root["triplet_id"].is_null(), "a span without rl.* is not a triplet: {root}");
    assert!(root["resource"].to_string().contains(SERVICE), "resource kept: {}", root["resource"]);
    for (i, sp) in spans[1..].iter().enumerate() {
        assert_eq!(sp["name"], format!("step-{i}"));
        assert_eq!(sp["span_id"], ep.step_span_ids[i].as_str());
        assert_eq!(sp["parent_span_id"], ep.root_span_id.as_str());
        assert_eq!(sp["kind"], "SPAN_KIND_INTERNAL");
        assert_eq!(sp["depth"], 1);
        assert_eq!(sp["triplet_id"], format!("{}{}", ep.trace_id, ep.step_span_ids[i]));
        assert!(sp["attributes"].to_string().contains("rl.sequence_id"), "attributes kept: {sp}");
    }
}

/// The official exporter over gRPC with a batch span processor; the tonic channel is created
/// inside a Tokio runtime, spans are made and flushed from the test thread.
fn grpc_exporter_roundtrip(gzip: bool) {
    let s = Server::start(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let log = Arc::new(Mutex::new(ExportLog::default()));
    let provider = rt.block_on(async {
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(s.grpc.clone()).with_timeout(Duration::from_secs(20));
        if gzip {
            builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
        }
        let exporter = builder.build().expect("gRPC exporter");
        SdkTracerProvider::builder()
            .with_resource(provider_resource())
            .with_batch_exporter(Recorded { inner: exporter, log: Arc::clone(&log) })
            .build()
    });
    let sequence_id = if gzip { "otel-grpc-gzip" } else { "otel-grpc" };
    let ep = emit_episode(&provider, sequence_id);
    finish(provider, &log);
    check_episode(&s, sequence_id, &ep);
    drop(rt);
}

/// The official exporter over OTLP/HTTP with a simple span processor and the blocking reqwest
/// client (no Tokio runtime on this thread).
fn http_exporter_roundtrip(protocol: Protocol, sequence_id: &str) {
    let s = Server::start(&[]);
    let log = Arc::new(Mutex::new(ExportLog::default()));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(s.url("/v1/traces"))
        .with_timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP exporter");
    let provider = SdkTracerProvider::builder()
        .with_resource(provider_resource())
        .with_simple_exporter(Recorded { inner: exporter, log: Arc::clone(&log) })
        .build();
    let ep = emit_episode(&provider, sequence_id);
    finish(provider, &log);
    check_episode(&s, sequence_id, &ep);
}

#[test]
fn official_exporter_over_grpc() {
    grpc_exporter_roundtrip(false);
}

#[test]
fn official_exporter_over_grpc_with_gzip() {
    grpc_exporter_roundtrip(true);
}

#[test]
fn official_exporter_over_http_protobuf() {
    http_exporter_roundtrip(Protocol::HttpBinary, "otel-http-proto");
}

#[test]
fn official_exporter_over_http_json() {
    http_exporter_roundtrip(Protocol::HttpJson, "otel-http-json");
}

// ---------------------------------------------------------------------------------------------
// curl and an OTLP/JSON fixture.

const FIXTURE_TRACE: &str = "5B8EFFF798038103D269B633813FC60C";

/// POST a file with curl; returns status, content type and body.
fn curl_post(url: &str, file: &Path, headers: &[&str], out: &Path) -> (u16, String, Vec<u8>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-X", "POST", "--data-binary"]).arg(format!("@{}", file.display()));
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg("-o").arg(out).args(["-w", "%{http_code} %{content_type}", url]);
    let output = cmd.output().expect("run curl");
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (code, content_type) = written.split_once(' ').unwrap_or((&written, ""));
    (code.parse().expect("curl status"), content_type.to_string(), std::fs::read(out).expect("curl output"))
}

/// The fixture's trace is stored with lowercase ids, enum names and string integers understood.
fn check_fixture_trace(s: &Server, trace_upper: &str, sequence_id: &str) {
    let trace = trace_upper.to_ascii_lowercase();
    let spans = trace_spans(s, &trace);
    assert_eq!(spans.len(), 3, "{spans:?}");
    let (root, plan, code) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(root["trace_id"], trace.as_str());
    assert_eq!(root["span_id"], "eee19b7ec3c1b174");
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(root["status"]["code"], "STATUS_CODE_OK");
    assert!(root["triplet_id"].is_null());
    assert_eq!(plan["span_id"], "eee19b7ec3c1b175");
    assert_eq!(plan["parent_span_id"], "eee19b7ec3c1b174");
    assert_eq!(plan["kind"], "SPAN_KIND_INTERNAL");
    assert_eq!(code["span_id"], "eee19b7ec3c1b176");
    assert_eq!(code["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(code["status"], json!({"code": "STATUS_CODE_ERROR", "message": "lint failed"}));
    assert_eq!(root["start_time"], "2023-11-14T22:13:20.000000Z");
    assert!(root["attributes"].to_string().contains("POST"), "{root}");

    let triplets = sequence_triplets(s, sequence_id);
    assert_eq!(triplets.len(), 2, "{triplets:?}");
    let (t0, t1) = (&triplets[0], &triplets[1]);
    assert_eq!(t0["triplet_id"], format!("{trace}eee19b7ec3c1b175"));
    assert_eq!(t0["trace_id"], trace.as_str());
    assert_eq!(t0["span_id"], "eee19b7ec3c1b175");
    assert_eq!(t0["sequence_index"], 0);
    assert_eq!(t0["timestamp_utc"], "2023-11-14T22:13:21.000000Z");
    assert_eq!(t0["state"], json!({"task": "T-1", "files": 3, "agent_role": "planner"}));
    assert_eq!(t0["action"], json!({"plan": "split", "tokens": 128}));
    assert_eq!(t0["reward"].as_f64(), Some(0.75));
    assert_eq!(t1["span_id"], "eee19b7ec3c1b176");
    assert_eq!(t1["sequence_index"], 1);
    assert_eq!(t1["state"], json!({"task": "T-1", "files": 3, "agent_role": "coder"}));
    assert_eq!(t1["action"], json!({"diff_lines": 42, "success": false}));
    assert_eq!(t1["reward"].as_f64(), Some(0.25), "a numeric string reward is read as a number");
}

#[test]
fn curl_posts_otlp_json_fixture_plain_and_gzip() {
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp_upper_hex.json");
    let text = std::fs::read_to_string(&fixture).expect("fixture");
    assert!(text.contains(FIXTURE_TRACE) && text.contains("SPAN_KIND_SERVER") && text.contains(r#""intValue": "2""#));

    // As is.
    let out = tmp.path().join("out.json");
    let (status, content_type, body) = curl_post(&s.url("/v1/traces"), &fixture, &["Content-Type: application/json"], &out);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, JSON, "the response mirrors the request's encoding");
    let answer = json_of(&body);
    assert!(json_int(&answer["partialSuccess"]["rejectedSpans"]).unwrap_or(0) == 0, "{answer}");
    check_fixture_trace(&s, FIXTURE_TRACE, "curl-seq");

    // The same document with another trace and sequence, gzip-compressed.
    let other_trace = "0AF7651916CD43DD8448EB211C80319C";
    let gz = tmp.path().join("fixture.json.gz");
    std::fs::write(&gz, gzip(text.replace(FIXTURE_TRACE, other_trace).replace("curl-seq", "curl-seq-gz").as_bytes())).expect("write gz");
    let (status, content_type, body) = curl_post(&s.url("/v1/traces"), &gz, &["Content-Type: application/json", "Content-Encoding: gzip"], &out);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, JSON);
    let answer = json_of(&body);
    assert!(answer.is_object(), "{answer}");
    check_fixture_trace(&s, other_trace, "curl-seq-gz");

    let st = stats(&s);
    assert_eq!(st["spans"], 6, "{st}");
    assert_eq!(st["triplets"], 4, "{st}");
}

// ---------------------------------------------------------------------------------------------
// Dedup.

#[test]
fn a_batch_sent_twice_is_stored_once() {
    let s = Server::start(&[]);
    let t = trace_id(0x3d);
    let batch = |state_note: &str| {
        let mut a = triplet_attrs("dedup", 0, 0.5);
        a.push(str_attr("rl.state.note", state_note));
        let mut b = triplet_attrs("dedup", 1, 1.0);
        b.push(str_attr("rl.state.note", state_note));
        let mut root = span(&t, &span_id(0x3d, 1), "root", vec![]);
        root.attributes.push(str_attr("plain", "yes"));
        let mut child_a = span(&t, &span_id(0x3d, 2), "a", a);
        child_a.parent_span_id = span_id(0x3d, 1).to_vec();
        let mut child_b = span(&t, &span_id(0x3d, 3), "b", b);
        child_b.parent_span_id = span_id(0x3d, 1).to_vec();
        request(vec![root, child_a, child_b])
    };
    let first = batch("first");

    assert_eq!(export_ok(&s, &first), (0, String::new()));
    assert_eq!(export_ok(&s, &first), (0, String::new()), "a retried batch is a success, not a rejection");
    let st = stats(&s);
    assert_eq!((st["spans"].as_i64(), st["triplets"].as_i64(), st["sequences"].as_i64()), (Some(3), Some(2), Some(1)), "{st}");
    assert_eq!(metric(&s, "rltrace_spans_stored_total"), 3.0);
    assert_eq!(metric(&s, "rltrace_spans_duplicate_total"), 3.0);

    // The same identities with other content, and once more in JSON with upper-case hex ids: the
    // first copy stored wins.
    assert_eq!(export_ok(&s, &batch("second")), (0, String::new()));
    let json_body = serde_json::to_string(&batch("third")).expect("json").replace(&hex(&t), &hex(&t).to_ascii_uppercase());
    assert!(json_body.contains("3D3D3D3D"), "the JSON copy carries upper-case ids");
    let (status, _, body) = post_raw(&s.url("/v1/traces"), JSON, &[], json_body.into_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let st = stats(&s);
    assert_eq!((st["spans"].as_i64(), st["triplets"].as_i64()), (Some(3), Some(2)), "{st}");
    assert_eq!(metric(&s, "rltrace_spans_stored_total"), 3.0);
    assert_eq!(metric(&s, "rltrace_spans_duplicate_total"), 9.0);
    let triplets = sequence_triplets(&s, "dedup");
    assert_eq!(triplets.len(), 2);
    for t in &triplets {
        assert_eq!(t["state"]["note"], "first", "{t}");
    }
    assert_eq!(trace_spans(&s, &hex(&t)).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// partial_success.

/// One good span, one with an attribute of exactly the limit, four malformed ones.
fn malformed_batch(tag: u8) -> (ExportTraceServiceRequest, Vec<(String, &'static str)>) {
    let t = trace_id(tag);
    let seq = format!("partial-{tag}");
    let mut at_limit = triplet_attrs(&seq, 1, 0.5);
    at_limit.push(str_attr("payload", &"x".repeat(1024)));
    let mut bad_state = triplet_attrs(&seq, 2, 0.5);
    bad_state[1] = str_attr("rl.state", "[1]");
    let mut bad_reward = triplet_attrs(&seq, 3, 0.5);
    bad_reward[4] = f64_attr("rl.reward", 1.5);
    let mut bad_index = triplet_attrs(&seq, 4, 0.5);
    bad_index.push(str_attr("rl.sequence_index", "x"));
    let mut too_big = triplet_attrs(&seq, 5, 0.5);
    too_big.push(str_attr("payload", &"x".repeat(1025)));
    let spans = vec![
        span(&t, &span_id(tag, 1), "good", triplet_attrs(&seq, 0, 1.0)),
        span(&t, &span_id(tag, 2), "at-limit", at_limit),
        span(&t, &span_id(tag, 3), "bad-state", bad_state),
        span(&t, &span_id(tag, 4), "bad-reward", bad_reward),
        span(&t, &span_id(tag, 5), "bad-index", bad_index),
        span(&t, &span_id(tag, 6), "too-big", too_big),
    ];
    let expected = vec![
        (hex(&span_id(tag, 3)), "rl.state"),
        (hex(&span_id(tag, 4)), "rl.reward"),
        (hex(&span_id(tag, 5)), "rl.sequence_index"),
        (hex(&span_id(tag, 6)), "payload"),
    ];
    (request(spans), expected)
}

/// Four rejections, each named by span and attribute; the two good spans stored.
fn check_partial(s: &Server, tag: u8, rejected: i64, message: &str, expected: &[(String, &str)]) {
    assert_eq!(rejected, 4, "{message}");
    let parts: Vec<&str> = message.split("; ").collect();
    assert_eq!(parts.len(), 4, "{message}");
    for (span_hex, attribute) in expected {
        let part = parts.iter().find(|p| p.contains(span_hex.as_str())).unwrap_or_else(|| panic!("span {span_hex} not named in {message:?}"));
        assert!(part.contains(&hex(&trace_id(tag))), "trace id named: {part}");
        assert!(part.contains(&format!("attribute {attribute}:")), "attribute {attribute} named: {part}");
    }
    assert!(!message.contains(&hex(&span_id(tag, 1))) && !message.contains(&hex(&span_id(tag, 2))), "good spans are not rejected: {message}");
    let spans = trace_spans(s, &hex(&trace_id(tag)));
    let names: Vec<&str> = spans.iter().filter_map(|sp| sp["name"].as_str()).collect();
    assert_eq!(names, ["good", "at-limit"]);
    let triplets = sequence_triplets(s, &format!("partial-{tag}"));
    assert_eq!(triplets.len(), 2, "{triplets:?}");
    assert_eq!(triplets[1]["span_id"], hex(&span_id(tag, 2)));
}

#[test]
fn malformed_rl_values_and_oversized_attributes_are_partial_success() {
    let s = Server::start(&["--max-attribute-bytes", "1024"]);

    // OTLP/HTTP JSON.
    let (req, expected) = malformed_batch(0x41);
    let (status, headers, body) = post_raw(&s.url("/v1/traces"), JSON, &[], serde_json::to_vec(&req).expect("json"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), JSON);
    let answer = json_of(&body);
    let rejected = json_int(&answer["partialSuccess"]["rejectedSpans"]).unwrap_or_else(|| panic!("no partialSuccess.rejectedSpans: {answer}"));
    let message = answer["partialSuccess"]["errorMessage"].as_str().expect("errorMessage");
    check_partial(&s, 0x41, rejected, message, &expected);

    // OTLP/HTTP protobuf.
    let (req, expected) = malformed_batch(0x42);
    let (rejected, message) = export_ok(&s, &req);
    check_partial(&s, 0x42, rejected, &message, &expected);

    // OTLP/gRPC, gzip-compressed.
    let (req, expected) = malformed_batch(0x43);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let resp = rt.block_on(async {
        let client = TraceServiceClient::connect(s.grpc.clone()).await.expect("gRPC connect");
        let mut client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        client.export(req).await.expect("gRPC export").into_inner()
    });
    let partial = resp.partial_success.expect("partial_success");
    check_partial(&s, 0x43, partial.rejected_spans, &partial.error_message, &expected);

    assert_eq!(metric(&s, "rltrace_spans_rejected_total"), 12.0);
    assert_eq!(stats(&s)["spans"], 6);
}

// ---------------------------------------------------------------------------------------------
// Limits.

#[test]
fn body_and_inflation_limits_are_exact() {
    const N: usize = 4096;
    const M: usize = 8192;
    let s = Server::start(&["--max-body-bytes", &N.to_string(), "--max-inflated-bytes", &M.to_string()]);

    // Protobuf: exactly N bytes is accepted and stored, N + 1 is 413 with a protobuf Status.
    let at = protobuf_request_of_size(0x51, N);
    assert_eq!(at.encoded_len(), N);
    assert_eq!(export_ok(&s, &at), (0, String::new()));
    assert_eq!(trace_spans(&s, &hex(&trace_id(0x51))).len(), 1);
    let over = protobuf_request_of_size(0x52, N + 1);
    let (status, headers, body) = post_protobuf(&s, &over);
    assert_eq!(status, 413);
    assert_eq!(header(&headers, "content-type"), PROTOBUF);
    let st = decode_status(&body);
    assert_eq!(i64::from(st.code), GRPC_RESOURCE_EXHAUSTED);
    assert!(st.message.contains(&N.to_string()), "{}", st.message);

    // The same over chunked transfer (no Content-Length): the bound applies while reading.
    let r = raw_post(&s, &format!("Content-Type: {PROTOBUF}\r\nTransfer-Encoding: chunked\r\n"), &chunked(&over.encode_to_vec()));
    assert_eq!(r.status, 413, "{}", r.head);
    assert_eq!(r.header("content-type"), Some(PROTOBUF));
    assert_eq!(i64::from(decode_status(&r.body).code), GRPC_RESOURCE_EXHAUSTED);
    let at_chunked = protobuf_request_of_size(0x53, N);
    let r = raw_post(&s, &format!("Content-Type: {PROTOBUF}\r\nTransfer-Encoding: chunked\r\n"), &chunked(&at_chunked.encode_to_vec()));
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(trace_spans(&s, &hex(&trace_id(0x52))).len(), 0, "nothing of a 413 request is stored");

    // JSON: exactly N accepted, N + 1 is 413 with a JSON Status.
    let (status, _, body) = post_raw(&s.url("/v1/traces"), JSON, &[], json_body_of_size(0x54, N));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, headers, body) = post_raw(&s.url("/v1/traces"), JSON, &[], json_body_of_size(0x55, N + 1));
    assert_eq!(status, 413);
    assert_eq!(header(&headers, "content-type"), JSON);
    let answer = json_of(&body);
    assert_eq!(answer["code"], GRPC_RESOURCE_EXHAUSTED, "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("limit")), "{answer}");

    // gzip: a body inflating to exactly M bytes is accepted, M + 1 is 413.
    let inflates_to_m = gzip(&protobuf_request_of_size(0x56, M).encode_to_vec());
    assert!(inflates_to_m.len() <= N);
    let (status, _, body) = post_raw(&s.url("/v1/traces"), PROTOBUF, &[("content-encoding", "gzip")], inflates_to_m);
    assert_eq!(status, 200, "{:?}", decode_status(&body));
    assert_eq!(trace_spans(&s, &hex(&trace_id(0x56))).len(), 1);
    let inflates_past_m = gzip(&protobuf_request_of_size(0x57, M + 1).encode_to_vec());
    let (status, _, body) = post_raw(&s.url("/v1/traces"), PROTOBUF, &[("content-encoding", "gzip")], inflates_past_m);
    assert_eq!(status, 413);
    let st = decode_status(&body);
    assert_eq!(i64::from(st.code), GRPC_RESOURCE_EXHAUSTED);
    assert!(st.message.contains(&M.to_string()), "{}", st.message);
    let (status, headers, body) = post_raw(&s.url("/v1/traces"), JSON, &[("content-encoding", "gzip")], gzip(&vec![b' '; M + 1]));
    assert_eq!(status, 413);
    assert_eq!(header(&headers, "content-type"), JSON);
    assert_eq!(json_of(&body)["code"], GRPC_RESOURCE_EXHAUSTED);

    // gRPC: the message bound is the body bound, as sent and after gzip.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut plain = TraceServiceClient::connect(s.grpc.clone()).await.expect("gRPC connect");
        let mut gz = plain.clone().send_compressed(tonic::codec::CompressionEncoding::Gzip);
        plain.export(protobuf_request_of_size(0x58, N)).await.expect("a message of exactly N bytes is accepted");
        let err = plain.export(protobuf_request_of_size(0x59, N + 1)).await.expect_err("N + 1 bytes are refused");
        // RESOURCE_EXHAUSTED (final for OTLP exporters), never the retryable OUT_OF_RANGE.
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        gz.export(protobuf_request_of_size(0x5a, N)).await.expect("gzip inflating to exactly N bytes is accepted");
        let err = gz.export(protobuf_request_of_size(0x5b, N + 1)).await.expect_err("gzip inflating to N + 1 bytes is refused");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    });
    for (tag, stored) in [(0x58, 1), (0x59, 0), (0x5a, 1), (0x5b, 0)] {
        assert_eq!(trace_spans(&s, &hex(&trace_id(tag))).len(), stored, "gRPC request {tag:#x}");
    }

    assert_eq!(stats(&s)["spans"], 6, "the six requests at the bounds were stored");
}

/// `n` triplet spans of sequence `sequence_id` without explicit indexes (the collector numbers
/// them in arrival order), each with a 200-byte padding attribute; span ids `(tag, i)` over three
/// bytes; the spans at `invalid` get an all-zero trace id.
fn many_spans(tag: u8, sequence_id: &str, n: usize, invalid: &[usize]) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| {
            let id = [tag, 0, 0, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let trace = if invalid.contains(&i) { [0u8; 16] } else { trace_id(tag) };
            let start = 1_700_000_000_000_000_000 + i as u64 * 1_000_000;
            Span {
                trace_id: trace.to_vec(),
                span_id: id.to_vec(),
                name: format!("step-{i}"),
                kind: 1,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000,
                attributes: vec![
                    str_attr("rl.sequence_id", sequence_id),
                    str_attr("rl.state", &json!({"step": i}).to_string()),
                    str_attr("rl.action", r#"{"ok":true}"#),
                    str_attr("pad", &"p".repeat(200)),
                ],
                ..Default::default()
            }
        })
        .collect();
    request(spans)
}

#[test]
fn a_large_request_is_stored_in_parts_in_order_within_the_bytes_budget() {
    // A bytes budget of 1 MiB: the 5,000-span request below (about 1.6 MB) is larger than all of
    // it, so it takes the whole budget and goes through alone; its 5,000 spans reach the writer
    // in parts of 2,048.
    let s = Server::start(&["--max-inflight-bytes", "1048576"]);
    let req = many_spans(0x61, "in-parts", 5000, &[100, 2500, 4999]);
    assert!(req.encoded_len() > 1024 * 1024, "{}", req.encoded_len());
    let (rejected, message) = export_ok(&s, &req);
    assert_eq!(rejected, 3, "{message}");
    assert!(message.contains("span #2500"), "{message}");
    let (status, seq) = get_json(&s.url("/api/v1/sequences/in-parts?limit=5000"));
    assert_eq!(status, 200, "{seq}");
    assert_eq!(seq["triplet_count"], 4997);
    let triplets = seq["triplets"].as_array().expect("triplets");
    let steps: Vec<i64> = triplets.iter().map(|t| t["state"]["step"].as_i64().expect("step")).collect();
    let sent: Vec<i64> = (0..5000).filter(|i| ![100, 2500, 4999].contains(i)).collect();
    assert_eq!(steps, sent, "the default indexes follow the order sent, across parts");
    let indexes: Vec<i64> = triplets.iter().map(|t| t["sequence_index"].as_i64().expect("index")).collect();
    assert_eq!(indexes, (0..4997).collect::<Vec<_>>());
    // The same request again (an exporter's retry): every span is a duplicate, none stored twice.
    assert_eq!(export_ok(&s, &req).0, 3);
    assert_eq!(stats(&s)["spans"], 4997);

    // Three gzip bodies inflating to about 1.2 MB each, sent at once: each needs more than the
    // budget left by the others, and all of them are stored (a body never waits while holding
    // part of the budget, so they cannot block each other).
    let bodies: Vec<Vec<u8>> = (0..3u8).map(|k| gzip(&many_spans(0x70 + k, &format!("gz-{k}"), 3500, &[]).encode_to_vec())).collect();
    let answers: Vec<(u16, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| {
                let url = s.url("/v1/traces");
                scope.spawn(move || {
                    // A 503 (Retry-After) is retried, as exporters do, a bounded number of times.
                    for attempt in 1..=20 {
                        let (status, _, _) = post_raw(&url, PROTOBUF, &[("content-encoding", "gzip")], b.clone());
                        if status != 503 {
                            return (status, attempt);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    (503, 20)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for (k, (status, attempts)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "gzip body {k} after {attempts} attempts");
    }
    for k in 0..3 {
        assert_eq!(sequence_triplets_count(&s, &format!("gz-{k}")), 3500, "gz-{k}");
    }
}

#[test]
fn a_large_json_body_is_checked_whole_then_stored_in_parts() {
    let s = Server::start(&[]);
    // About 10 MB of OTLP/JSON: more than bodies decoded whole, so it is read twice, checked
    // first and then converted and stored part by part as it is read.
    let req = many_spans(0x62, "json-parts", 14_000, &[7000]);
    let body = serde_json::to_vec(&req).expect("serialize");
    assert!(body.len() > rltrace_otlp::DECODE_WHOLE_MAX, "{}", body.len());

    // Broken at its very end: 400, and none of the parts before the break is stored.
    let (status, _, answer) = post_raw(&s.url("/v1/traces"), "application/json", &[], body[..body.len() - 3].to_vec());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(stats(&s)["spans"], 0, "a body that cannot be decoded changes nothing");

    let (status, _, answer) = post_raw(&s.url("/v1/traces"), "application/json", &[], body.clone());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer = json_of(&answer);
    assert_eq!(json_int(&answer["partialSuccess"]["rejectedSpans"]), Some(1), "{answer}");
    let mut steps = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get_json(&s.url(&format!("/api/v1/sequences/json-parts?limit=10000{cursor}")));
        assert_eq!(status, 200, "{page}");
        steps.extend(page["triplets"].as_array().expect("triplets").iter().map(|t| t["state"]["step"].as_i64().expect("step")));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(steps, (0..14_000).filter(|i| *i != 7000).collect::<Vec<_>>(), "stored once each, in the order sent");
}

fn sequence_triplets_count(s: &Server, sequence_id: &str) -> i64 {
    let (status, seq) = get_json(&s.url(&format!("/api/v1/sequences/{sequence_id}?limit=1")));
    assert_eq!(status, 200, "{seq}");
    seq["triplet_count"].as_i64().expect("count")
}

#[test]
fn gzip_bombs_against_default_limits_are_stopped_quickly() {
    let s = Server::start(&[]);
    let one_mib = gzip(&vec![0u8; 1024 * 1024]);

    // 50 MiB of zeros is within the default 64 MiB inflation bound (DESIGN section 4), so it is
    // inflated and then refused as undecodable protobuf: 400, quickly.
    let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024);
    let started = Instant::now();
    let (status, _, body) = post_raw(&s.url("/v1/traces"), PROTOBUF, &[("content-encoding", "gzip")], bomb);
    assert_eq!(status, 400, "{:?}", decode_status(&body));
    assert!(decode_status(&body).message.contains("protobuf"));
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    // 4 GiB of zeros (4096 gzip members of 1 MiB each, ~4 MB sent) is far beyond the bound:
    // inflation stops at 64 MiB and the answer is 413, long before 4 GiB could be inflated.
    let mut bomb = Vec::with_capacity(one_mib.len() * 4096);
    for _ in 0..4096 {
        bomb.extend_from_slice(&one_mib);
    }
    assert!(bomb.len() < 16 * 1024 * 1024, "within the body limit as sent");
    let started = Instant::now();
    let (status, _, body) = post_raw(&s.url("/v1/traces"), PROTOBUF, &[("content-encoding", "gzip")], bomb);
    assert_eq!(status, 413, "{:?}", decode_status(&body));
    assert!(decode_status(&body).message.contains("67108864"), "{:?}", decode_status(&body));
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    // The collector is still serving.
    let (status, _) = get_json(&s.url("/healthz"));
    assert_eq!(status, 200);
    assert_eq!(stats(&s)["spans"], 0);
}

// ---------------------------------------------------------------------------------------------
// Malformed bodies.

#[test]
fn undecodable_bodies_are_rejected_with_an_otlp_status() {
    let s = Server::start(&[]);
    let url = s.url("/v1/traces");

    // Garbage protobuf: 400 with a protobuf google.rpc.Status.
    let (status, headers, body) = post_raw(&url, PROTOBUF, &[], vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "content-type"), PROTOBUF);
    let st = decode_status(&body);
    assert_eq!(i64::from(st.code), GRPC_INVALID_ARGUMENT);
    assert!(st.message.contains("protobuf"), "{}", st.message);

    // Invalid JSON, and JSON of the wrong shape: 400 with a JSON Status.
    for bad in [&b"{not json"[..], b"[]", br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#] {
        let (status, headers, body) = post_raw(&url, JSON, &[], bad.to_vec());
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(bad));
        assert_eq!(header(&headers, "content-type"), JSON);
        let answer = json_of(&body);
        assert_eq!(answer["code"], GRPC_INVALID_ARGUMENT, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| m.contains("JSON")), "{answer}");
    }

    // Unsupported content type and content encoding: 415.
    let (status, _, body) = post_raw(&url, "text/plain", &[], b"hello".to_vec());
    assert_eq!(status, 415);
    assert!(json_of(&body)["message"].as_str().is_some_and(|m| m.contains("text/plain")));
    let (status, _, _) = post_raw(&url, PROTOBUF, &[("content-encoding", "br")], vec![1, 2, 3]);
    assert_eq!(status, 415);

    // Invalid gzip: 400, in either encoding.
    let (status, _, body) = post_raw(&url, PROTOBUF, &[("content-encoding", "gzip")], b"definitely not gzip".to_vec());
    assert_eq!(status, 400);
    assert!(decode_status(&body).message.contains("gzip"));
    let (status, headers, body) = post_raw(&url, JSON, &[("content-encoding", "gzip")], b"definitely not gzip".to_vec());
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "content-type"), JSON);
    assert!(json_of(&body)["message"].as_str().is_some_and(|m| m.contains("gzip")));

    // A truncated gzip stream of a valid request is invalid too.
    let whole = gzip(&request(vec![span(&trace_id(0x61), &span_id(0x61, 1), "x", vec![])]).encode_to_vec());
    let (status, _, _) = post_raw(&url, PROTOBUF, &[("content-encoding", "gzip")], whole[..whole.len() / 2].to_vec());
    assert_eq!(status, 400);

    // Nothing was stored, and the collector still ingests.
    assert_eq!(stats(&s)["spans"], 0);
    assert_eq!(export_ok(&s, &request(vec![span(&trace_id(0x62), &span_id(0x62, 1), "ok", vec![])])), (0, String::new()));
    assert_eq!(stats(&s)["spans"], 1);
}

// ---------------------------------------------------------------------------------------------
// Overload.

/// A request that holds the one export permit: its head announces `body.len()` bytes and only the
/// first `sent` are written, so its handler waits for the rest. Returns the held connection and the
/// answer (headers, body) to another export refused because of it.
///
/// The held request and a probe race for the permit; when the held one loses (it is answered 503
/// and closed), it is sent again. Every wait is bounded.
fn hold_the_permit(s: &Server, body: &[u8], sent: usize, probe: impl Fn(u8) -> ExportTraceServiceRequest) -> (TcpStream, reqwest::header::HeaderMap, Vec<u8>) {
    let head = format!("POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", s.http_addr(), body.len());
    let mut n = 0u8;
    for _connection in 0..10 {
        let mut held = TcpStream::connect(s.http_addr()).expect("connect");
        held.write_all(head.as_bytes()).expect("write head");
        held.write_all(&body[..sent]).expect("write part of the body");
        held.flush().expect("flush");
        for _probe in 0..20 {
            n += 1;
            let (status, headers, answer) = post_protobuf(s, &probe(n));
            if status == 503 {
                return (held, headers, answer);
            }
            assert_eq!(status, 200, "{:?}", decode_status(&answer));
            // Was the held request the one refused? Then it has an answer waiting.
            held.set_nonblocking(true).expect("nonblocking");
            let answered = held.peek(&mut [0u8; 1]).is_ok();
            held.set_nonblocking(false).expect("blocking");
            if answered {
                let r = read_response(&mut held);
                assert_eq!(r.status, 503, "{}", r.head);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("a half-sent request never came to hold the export permit");
}

#[test]
fn overload_answers_503_with_retry_after_and_recovers() {
    let s = Server::start(&["--max-concurrent-exports", "1"]);
    let small = |tag: u8, n: u8| request(vec![span(&trace_id(tag), &span_id(tag, n), "small", triplet_attrs("overload", i64::from(n), 0.5))]);

    // Hold the only permit: a request head announcing 100000 bytes, and only the first 1000.
    let held_body = protobuf_request_of_size(0x71, 100_000).encode_to_vec();
    let (mut held, headers, body) = hold_the_permit(&s, &held_body, 1000, |n| small(0x72, n));
    let retry_after = header(&headers, "retry-after");
    assert!(retry_after.parse::<u64>().is_ok_and(|secs| secs >= 1), "Retry-After: {retry_after:?}");
    assert_eq!(header(&headers, "content-type"), PROTOBUF);
    let st = decode_status(&body);
    assert_eq!(i64::from(st.code), GRPC_UNAVAILABLE);
    assert!(st.message.contains("overloaded"), "{}", st.message);

    // In JSON the refusal is a JSON Status.
    let (status, headers, body) = post_raw(&s.url("/v1/traces"), JSON, &[], serde_json::to_vec(&small(0x73, 1)).expect("json"));
    assert_eq!(status, 503);
    assert!(header(&headers, "retry-after").parse::<u64>().is_ok());
    assert_eq!(header(&headers, "content-type"), JSON);
    assert_eq!(json_of(&body)["code"], GRPC_UNAVAILABLE);

    // gRPC: UNAVAILABLE.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let grpc_result = rt.block_on(async {
        let mut client = TraceServiceClient::connect(s.grpc.clone()).await.expect("gRPC connect");
        client.export(small(0x74, 1)).await
    });
    let err = grpc_result.expect_err("gRPC export must be refused while overloaded");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    // The REST API keeps answering meanwhile, and counts the refusals.
    assert!(metric(&s, "rltrace_requests_overloaded_total") >= 3.0);

    // Finish the held request: it completes and is stored.
    held.write_all(&held_body[1000..]).expect("write the rest of the body");
    let r = read_response(&mut held);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(trace_spans(&s, &hex(&trace_id(0x71))).len(), 1);

    // New requests succeed again (bounded retry: the permit is released as the handler returns).
    let mut recovered = false;
    for n in 1..=100u8 {
        let (status, _, _) = post_protobuf(&s, &small(0x75, n));
        if status == 200 {
            recovered = true;
            break;
        }
        assert_eq!(status, 503);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(recovered, "exports succeed again after the held request finished");
    let grpc_ok = rt.block_on(async {
        let mut client = TraceServiceClient::connect(s.grpc.clone()).await.expect("gRPC connect");
        client.export(small(0x76, 1)).await
    });
    assert!(grpc_ok.is_ok(), "{grpc_ok:?}");
    assert_eq!(trace_spans(&s, &hex(&trace_id(0x76))).len(), 1);
    assert!(trace_spans(&s, &hex(&trace_id(0x74))).is_empty(), "the refused gRPC batch was not stored");
    assert!(trace_spans(&s, &hex(&trace_id(0x73))).is_empty(), "the refused JSON batch was not stored");
}

#[test]
fn a_client_that_disconnects_mid_body_releases_its_permit() {
    let s = Server::start(&["--max-concurrent-exports", "1"]);
    let held_body = protobuf_request_of_size(0x78, 100_000).encode_to_vec();
    let (held, _, _) = hold_the_permit(&s, &held_body, 500, |_| request(vec![]));
    drop(held);
    let req = request(vec![span(&trace_id(0x79), &span_id(0x79, 1), "after", vec![])]);
    let mut status = 0;
    for _ in 0..100 {
        status = post_protobuf(&s, &req).0;
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status, 200, "the permit is released when the client goes away");
    assert_eq!(trace_spans(&s, &hex(&trace_id(0x79))).len(), 1);
    assert!(trace_spans(&s, &hex(&trace_id(0x78))).is_empty(), "nothing of the abandoned request is stored");
}

// ---------------------------------------------------------------------------------------------
// Span ids.

#[test]
fn spans_with_invalid_ids_are_rejected_and_the_rest_stored() {
    let s = Server::start(&[]);

    // Protobuf: all-zero trace id, all-zero span id, a 15-byte trace id; two good spans.
    let good = trace_id(0x81);
    let req = request(vec![
        span(&[0u8; 16], &span_id(0x81, 1), "zero-trace", triplet_attrs("ids", 0, 0.5)),
        span(&good, &span_id(0x81, 2), "good-1", triplet_attrs("ids", 1, 0.5)),
        span(&good, &[0u8; 8], "zero-span", vec![]),
        span(&good[..15], &span_id(0x81, 4), "short-trace", vec![]),
        span(&good, &span_id(0x81, 5), "good-2", vec![]),
    ]);
    let (rejected, message) = export_ok(&s, &req);
    assert_eq!(rejected, 3, "{message}");
    for name in ["zero-trace", "zero-span", "short-trace"] {
        assert!(message.contains(name), "{name} named in {message:?}");
    }
    assert!(message.contains("trace_id"), "{message}");
    let names: Vec<String> = trace_spans(&s, &hex(&good)).iter().filter_map(|sp| sp["name"].as_str().map(str::to_string)).collect();
    assert_eq!(names, ["good-1", "good-2"]);

    // OTLP/JSON: an all-zero trace id written in hex.
    let zero_trace = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "00000000000000000000000000000000", "spanId": "0102030405060708", "name": "zero-json",
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000"},
        {"traceId": "8282828282828282828282828282828A", "spanId": "0102030405060708", "name": "good-json",
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000"}
    ]}]}]});
    let (status, _, body) = post_raw(&s.url("/v1/traces"), JSON, &[], zero_trace.to_string().into_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = json_of(&body);
    assert_eq!(json_int(&answer["partialSuccess"]["rejectedSpans"]), Some(1), "{answer}");
    assert!(answer["partialSuccess"]["errorMessage"].as_str().is_some_and(|m| m.contains("zero-json")), "{answer}");
    let spans = trace_spans(&s, "8282828282828282828282828282828a");
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["span_id"], "0102030405060708");

    let st = stats(&s);
    assert_eq!(st["spans"], 3, "{st}");
    assert_eq!(st["triplets"], 1, "{st}");
}

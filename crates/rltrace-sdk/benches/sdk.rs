//! Cost of the SDK's hot paths (criterion), against the OpenTelemetry baseline each must be
//! compared with:
//! - `rl_triplet/*`: `#[rl_triplet]` on an empty function, a bare `opentelemetry` span with the
//!   same ten attributes as constants (target: at most 2x), that bare span made current while the
//!   function runs (as `Tracer::in_span` does), and the same span written by hand with its
//!   attribute values computed as an application would;
//! - `layer/*`: a request through a tower service with and without the layer, and a bare span
//!   with the layer span's attributes; the layer's cost beyond its span is
//!   `with_layer - inner_service - bare_span` (target: under 5 us).
//!
//! Spans go to a processor that drops them, so the figures are the SDK's own cost, not an
//! exporter's. Run: `cargo bench -p rltrace-sdk`; figures in `docs/BENCHMARKS.md`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderName, Request, Response};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SpanData, SpanProcessor};
use rltrace_sdk::{RouteTemplate, TripletLayer, rl_triplet};
use tower::{Service, ServiceExt};
use tower_layer::Layer;

/// Drops every span.
#[derive(Debug)]
struct Discard;

impl SpanProcessor for Discard {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}
    fn on_end(&self, span: SpanData) {
        black_box(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: std::time::Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[rl_triplet(role = "Bench", task_id = "bench-task")]
fn empty() {}

#[rl_triplet(role = "Bench", task_id = "bench-task")]
fn small(task: &str, n: u32) -> u32 {
    n + task.len() as u32
}

const STATE: &str = r#"{"agent_role":"Bench","function":"empty","call_depth":0,"task_id":"bench-task"}"#;
const ACTION: &str = r#"{"success":true,"duration_ms":0.000461}"#;

/// Start the span `#[rl_triplet]` emits for `empty()`, with its start attributes as constants.
fn start_bare(tracer: &SdkTracer) -> opentelemetry_sdk::trace::Span {
    tracer
        .span_builder("empty")
        .with_kind(SpanKind::Internal)
        .with_attributes([
            KeyValue::new("rl.triplet_id", "1b4e28ba-2fa1-41d2-883f-0016d3cca427"),
            KeyValue::new("rl.sequence_id", "bench-task"),
            KeyValue::new("rl.sequence_scope", "pipeline"),
            KeyValue::new("rl.sequence_index", 42_i64),
            KeyValue::new("rl.timestamp_utc", "2026-01-01T00:00:00.000000Z"),
            KeyValue::new("rl.sampling.probability", 1.0),
        ])
        .start_with_context(tracer, &Context::current())
}

/// The end attributes of that span, as constants.
fn end_attributes() -> [KeyValue; 4] {
    [
        KeyValue::new("rl.state", STATE),
        KeyValue::new("rl.action", ACTION),
        KeyValue::new("rl.reward.success", 1.0),
        KeyValue::new("rl.reward.latency", 1.0),
    ]
}

/// The span `#[rl_triplet]` emits for `empty()`, built directly with the same attributes.
fn bare_span(tracer: &SdkTracer) {
    let mut span = start_bare(tracer);
    span.set_attributes(end_attributes());
    span.end();
}

/// The same bare span (constant attributes) made current while the function runs, as manual
/// instrumentation does (`Tracer::in_span`), so that spans the function starts are its children.
fn bare_span_current(tracer: &SdkTracer) {
    let cx = Context::current_with_span(start_bare(tracer));
    {
        let _g = cx.clone().attach();
        black_box(());
    }
    let span = cx.span();
    span.set_attributes(end_attributes());
    span.end();
}

static INDEX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The same span written by hand as an application would without the SDK: the same attributes
/// with their values computed (a UUID v4, an RFC 3339 timestamp, the state and action as JSON,
/// an index, the duration), the span made current while the function runs.
fn hand_written_span(tracer: &SdkTracer) {
    let started = std::time::Instant::now();
    let ts = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let index = INDEX.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracer
        .span_builder("empty")
        .with_kind(SpanKind::Internal)
        .with_attributes([
            KeyValue::new("rl.triplet_id", uuid::Uuid::new_v4().to_string()),
            KeyValue::new("rl.sequence_id", "bench-task".to_string()),
            KeyValue::new("rl.sequence_scope", "pipeline"),
            KeyValue::new("rl.sequence_index", index as i64),
            KeyValue::new("rl.timestamp_utc", ts),
            KeyValue::new("rl.sampling.probability", 1.0),
        ])
        .start_with_context(tracer, &Context::current());
    let cx = Context::current_with_span(span);
    {
        let _g = cx.clone().attach();
        black_box(());
    }
    let state = serde_json::json!({"agent_role": "Bench", "function": "empty", "call_depth": 0, "task_id": "bench-task"});
    let action = serde_json::json!({"success": true, "duration_ms": started.elapsed().as_secs_f64() * 1000.0});
    let span = cx.span();
    span.set_attributes([
        KeyValue::new("rl.state", state.to_string()),
        KeyValue::new("rl.action", action.to_string()),
        KeyValue::new("rl.reward.success", 1.0),
        KeyValue::new("rl.reward.latency", 1.0),
    ]);
    span.end();
}

/// The span the layer emits for a request, built directly with the same attributes.
fn bare_http_span(tracer: &SdkTracer) {
    let mut span = tracer
        .span_builder("GET /tasks/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("rl.triplet_id", "1b4e28ba-2fa1-41d2-883f-0016d3cca427"),
            KeyValue::new("rl.sequence_id", "session-1"),
            KeyValue::new("rl.sequence_scope", "session"),
            KeyValue::new("rl.sequence_index", 42_i64),
            KeyValue::new("rl.timestamp_utc", "2026-01-01T00:00:00.000000Z"),
            KeyValue::new("rl.sampling.probability", 1.0),
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/tasks/{id}"),
        ])
        .start_with_context(tracer, &Context::current());
    span.set_attributes([
        KeyValue::new("http.response.status_code", 200_i64),
        KeyValue::new(
            "rl.state",
            r#"{"agent_role":"http","call_depth":0,"session_id":"session-1","method":"GET","route":"/tasks/{id}","query_keys":["verbose"],"user_id":"u-1"}"#,
        ),
        KeyValue::new("rl.action", r#"{"success":true,"duration_ms":0.0021,"status":200,"response_size":2}"#),
        KeyValue::new("rl.reward.success", 1.0),
        KeyValue::new("rl.reward.latency", 1.0),
    ]);
    span.end();
}

/// Poll a future that is ready at once (the benchmark services never wait).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = TaskContext::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmark future not ready"),
    }
}

fn request() -> Request<String> {
    let mut req = Request::get("/tasks/42?verbose=1")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("x-session-id", "session-1")
        .header("x-user-id", "u-1")
        .body(String::new())
        .unwrap_or_default();
    req.extensions_mut().insert(RouteTemplate("/tasks/{id}".into()));
    req
}

async fn handler(_: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".to_string()))
}

fn benches(c: &mut Criterion) {
    let guard = rltrace_sdk::builder().ignore_env().service_name("bench").with_span_processor(Discard).set_global(false).install();
    let guard = match guard {
        Ok(g) => g,
        Err(e) => panic!("install: {e}"),
    };
    let tracer = match guard.provider() {
        Some(p) => p.tracer("bench"),
        None => panic!("no provider"),
    };

    let mut g = c.benchmark_group("rl_triplet");
    g.bench_function("bare_span_same_attributes", |b| b.iter(|| bare_span(&tracer)));
    g.bench_function("bare_span_same_attributes_current", |b| b.iter(|| bare_span_current(&tracer)));
    g.bench_function("hand_written_span_same_attributes", |b| b.iter(|| hand_written_span(&tracer)));
    g.bench_function("empty_fn", |b| b.iter(empty));
    g.bench_function("fn_with_two_args", |b| b.iter(|| small(black_box("t-1"), black_box(7))));
    g.finish();

    let inner = tower::service_fn(handler);
    let layered = TripletLayer::new().capture_header(HeaderName::from_static("x-user-id"), "user_id").session_header(HeaderName::from_static("x-session-id")).layer(inner);
    let mut g = c.benchmark_group("layer");
    g.bench_function("inner_service", |b| {
        b.iter_batched(
            request,
            |req| {
                let mut svc = inner;
                ready(async move { svc.ready().await?.call(req).await })
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("with_layer", |b| {
        b.iter_batched(
            request,
            |req| {
                let mut svc = layered.clone();
                ready(async move { svc.ready().await?.call(req).await })
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("bare_span_same_attributes", |b| b.iter(|| bare_http_span(&tracer)));
    g.finish();
    drop(guard);
}

criterion_group!(sdk, benches);
criterion_main!(sdk);

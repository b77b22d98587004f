//! The collector's metrics, kept and written as OpenMetrics text by `prometheus-client`: spans
//! received, stored, duplicate and rejected; requests refused for overload; the writer queue; the
//! request latency histogram; and the recent ingest rate for `/api/v1/stats` (not a metric).
//!
//! Invariant: every label set is bounded whatever clients send. The latency histogram's labels
//! are typed: the method is one of seven HTTP methods, `GRPC` or `other`; the route is a route
//! template of the router (`&'static str`), `unmatched`, or the gRPC export; the status is a
//! status code.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Content type of OpenMetrics text, answered when the scraper's `Accept` asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type answered otherwise: the same text parses as the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Route label of requests that matched no route (the 404 fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Route label of OTLP/gRPC export requests.
pub const GRPC_EXPORT_ROUTE: &str = "TraceService/Export";

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Window of the ingest rate.
const RATE_WINDOW_S: u64 = 10;

/// The method label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodLabel {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `PATCH`.
    Patch,
    /// `HEAD`.
    Head,
    /// `OPTIONS`.
    Options,
    /// An OTLP/gRPC export (`GRPC`).
    Grpc,
    /// Any other method a client sent (`other`).
    Other,
}

impl MethodLabel {
    /// The label of an HTTP method: anything but the seven methods is `other`.
    pub fn from_http(m: &Method) -> MethodLabel {
        match *m {
            Method::GET => MethodLabel::Get,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::DELETE => MethodLabel::Delete,
            Method::PATCH => MethodLabel::Patch,
            Method::HEAD => MethodLabel::Head,
            Method::OPTIONS => MethodLabel::Options,
            _ => MethodLabel::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Head => "HEAD",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Grpc => "GRPC",
            MethodLabel::Other => "other",
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of the latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    route: &'static str,
    status: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The label of the retention counter: one of four fixed kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeletedLabels {
    kind: &'static str,
}

/// The label of the forwarding metrics: a target's name, from the config file (bounded by it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

/// The forwarding metrics, per target.
#[derive(Default)]
struct ForwardMetrics {
    sent_spans: Family<TargetLabels, Counter>,
    sent_requests: Family<TargetLabels, Counter>,
    retries: Family<TargetLabels, Counter>,
    failed_requests: Family<TargetLabels, Counter>,
    skipped_spans: Family<TargetLabels, Counter>,
    rejected_spans: Family<TargetLabels, Counter>,
    cursor: Family<TargetLabels, Gauge>,
    lag_spans: Family<TargetLabels, Gauge>,
    lag_seconds: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pending_rewards: Family<TargetLabels, Gauge>,
}

/// The collector's metrics.
pub struct Metrics {
    forward: ForwardMetrics,
    registry: Registry,
    spans_received: Counter,
    spans_stored: Counter,
    spans_duplicate: Counter,
    spans_rejected: Counter,
    requests_overloaded: Counter,
    requests_unauthenticated: Counter,
    requests_forbidden: Counter,
    retention_deleted: Family<DeletedLabels, Counter>,
    queue_depth: Gauge,
    queue_bytes: Gauge,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    rate: Mutex<[(u64, u64); RATE_WINDOW_S as usize]>,
}

impl Default for Metrics {
    fn default() -> Self {
        let (spans_received, spans_stored, spans_duplicate, spans_rejected, requests_overloaded) =
            (Counter::default(), Counter::default(), Counter::default(), Counter::default(), Counter::default());
        let (queue_depth, queue_bytes) = (Gauge::default(), Gauge::default());
        let latency: Family<RequestLabels, Histogram, fn() -> Histogram> = Family::new_with_constructor(latency_histogram);
        // The registry holds clones: each shares its value with the handle kept below.
        let mut registry = Registry::with_prefix("rltrace");
        registry.register("spans_received", "Spans received in OTLP export requests", spans_received.clone());
        registry.register("spans_stored", "Spans newly committed to the store", spans_stored.clone());
        registry.register("spans_duplicate", "Spans received again and already stored", spans_duplicate.clone());
        registry.register("spans_rejected", "Spans rejected (reported in partial_success)", spans_rejected.clone());
        registry.register("requests_overloaded", "Requests answered 503/UNAVAILABLE for overload", requests_overloaded.clone());
        let (requests_unauthenticated, requests_forbidden) = (Counter::default(), Counter::default());
        registry.register("requests_unauthenticated", "Requests refused 401/UNAUTHENTICATED (no valid key)", requests_unauthenticated.clone());
        registry.register("requests_forbidden", "Requests refused 403/PERMISSION_DENIED (a key without the scope)", requests_forbidden.clone());
        let retention_deleted: Family<DeletedLabels, Counter> = Family::default();
        registry.register("retention_deleted", "Rows deleted by retention, by kind (spans that are not triplets, sequences, their triplets and ledger events)", retention_deleted.clone());
        let forward = ForwardMetrics::default();
        registry.register("forward_sent_spans", "Spans a forwarding target acknowledged", forward.sent_spans.clone());
        registry.register("forward_sent_requests", "Requests a forwarding target acknowledged", forward.sent_requests.clone());
        registry.register("forward_retries", "Forwarding attempts that failed and were retried (429, 5xx, connection errors)", forward.retries.clone());
        registry.register("forward_failed_requests", "Forwarding requests refused for good (other 4xx) and skipped", forward.failed_requests.clone());
        registry.register("forward_skipped_spans", "Spans of the forwarding requests refused and skipped", forward.skipped_spans.clone());
        registry.register("forward_rejected_spans", "Spans a forwarding target acknowledged but reported rejected (partial success)", forward.rejected_spans.clone());
        registry.register("forward_cursor", "Span row id up to which a target has been forwarded", forward.cursor.clone());
        registry.register("forward_lag_spans", "Span rows stored after a target's cursor", forward.lag_spans.clone());
        registry.register_with_unit("forward_lag", "How long the oldest span not yet forwarded has waited", Unit::Seconds, forward.lag_seconds.clone());
        registry.register("forward_pending_rewards", "Agent Lightning rewards in the outbox waiting to be delivered", forward.pending_rewards.clone());
        registry.register("queue_depth", "Operations waiting for the store writer", queue_depth.clone());
        registry.register("queue_bytes", "Bytes of prepared rows waiting for the store writer", queue_bytes.clone());
        registry.register_with_unit("http_request_duration", "Request latency by method, route template and status", Unit::Seconds, latency.clone());
        Metrics {
            forward,
            registry,
            spans_received,
            spans_stored,
            spans_duplicate,
            spans_rejected,
            requests_overloaded,
            requests_unauthenticated,
            requests_forbidden,
            retention_deleted,
            queue_depth,
            queue_bytes,
            latency,
            rate: Mutex::new([(0, 0); RATE_WINDOW_S as usize]),
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Metrics {
    /// Count spans received in a request (before validation).
    pub fn received(&self, n: usize) {
        self.spans_received.inc_by(n as u64);
    }

    /// Count the outcome of a batch.
    pub fn outcome(&self, stored: usize, duplicates: usize, rejected: usize) {
        self.spans_stored.inc_by(stored as u64);
        self.spans_duplicate.inc_by(duplicates as u64);
        self.spans_rejected.inc_by(rejected as u64);
        if stored > 0 {
            let sec = now_s();
            if let Ok(mut r) = self.rate.lock() {
                let slot = &mut r[(sec % RATE_WINDOW_S) as usize];
                if slot.0 != sec {
                    *slot = (sec, 0);
                }
                slot.1 += stored as u64;
            }
        }
    }

    /// Count a request refused for overload.
    pub fn overloaded(&self) {
        self.requests_overloaded.inc();
    }

    /// Count a request refused for its key: `401` or `403`.
    pub fn auth_refused(&self, status: u16) {
        if status == 401 { self.requests_unauthenticated.inc() } else { self.requests_forbidden.inc() };
    }

    /// Count a forwarded request the target acknowledged.
    pub fn forward_sent(&self, target: &str, spans: u64, rejected: u64) {
        let l = TargetLabels { target: target.to_string() };
        self.forward.sent_spans.get_or_create(&l).inc_by(spans);
        self.forward.sent_requests.get_or_create(&l).inc();
        self.forward.rejected_spans.get_or_create(&l).inc_by(rejected);
    }

    /// Count a forwarded request refused for good.
    pub fn forward_failed(&self, target: &str, spans: u64) {
        let l = TargetLabels { target: target.to_string() };
        self.forward.failed_requests.get_or_create(&l).inc();
        self.forward.skipped_spans.get_or_create(&l).inc_by(spans);
    }

    /// Count spans skipped without a request (rollouts unknown to the LightningStore).
    pub fn forward_skipped(&self, target: &str, spans: u64) {
        self.forward.skipped_spans.get_or_create(&TargetLabels { target: target.to_string() }).inc_by(spans);
    }

    /// Set a bridge's pending rewards.
    pub fn forward_pending(&self, target: &str, pending: i64) {
        self.forward.pending_rewards.get_or_create(&TargetLabels { target: target.to_string() }).set(pending);
    }

    /// Count a forwarding attempt to be retried.
    pub fn forward_retried(&self, target: &str) {
        self.forward.retries.get_or_create(&TargetLabels { target: target.to_string() }).inc();
    }

    /// Set a target's cursor and lag.
    pub fn forward_lag(&self, target: &str, cursor: i64, spans: i64, seconds: f64) {
        let l = TargetLabels { target: target.to_string() };
        self.forward.cursor.get_or_create(&l).set(cursor);
        self.forward.lag_spans.get_or_create(&l).set(spans);
        self.forward.lag_seconds.get_or_create(&l).set(seconds);
    }

    /// Count what a retention pass deleted.
    pub fn deleted(&self, d: &rltrace_store::GcCounts) {
        for (kind, n) in [("spans", d.spans), ("sequences", d.sequences), ("triplets", d.triplets), ("reward_events", d.reward_events)] {
            self.retention_deleted.get_or_create(&DeletedLabels { kind }).inc_by(n);
        }
    }

    /// Spans stored per second over the last complete seconds of the window.
    pub fn ingest_rate(&self) -> f64 {
        let sec = now_s();
        let Ok(r) = self.rate.lock() else { return 0.0 };
        let total: u64 = r.iter().filter(|(s, _)| *s + RATE_WINDOW_S > sec && *s < sec).map(|(_, n)| n).sum();
        total as f64 / (RATE_WINDOW_S - 1) as f64
    }

    /// Record a request's latency. `route` is a route template of the router, [`UNMATCHED_ROUTE`]
    /// or [`GRPC_EXPORT_ROUTE`]: never a path a client chose.
    pub fn observe(&self, method: MethodLabel, route: &'static str, status: u16, elapsed: Duration) {
        self.latency.get_or_create(&RequestLabels { method, route, status }).observe(elapsed.as_secs_f64());
    }

    /// Render as OpenMetrics text, with the writer queue's current depth and bytes.
    pub fn render(&self, queue_depth: usize, queued_bytes: usize) -> String {
        self.queue_depth.set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        self.queue_bytes.set(i64::try_from(queued_bytes).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of an unlabelled sample.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' '))).and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn counters_gauges_and_histogram_keep_their_names() {
        let m = Metrics::default();
        m.received(5);
        m.outcome(3, 1, 1);
        m.overloaded();
        m.observe(MethodLabel::Get, "/api/v1/stats", 200, Duration::from_millis(3));
        m.observe(MethodLabel::Get, "/api/v1/stats", 200, Duration::from_millis(30));
        let text = m.render(7, 4096);
        assert_eq!(sample(&text, "rltrace_spans_received_total"), Some(5.0), "{text}");
        assert_eq!(sample(&text, "rltrace_spans_stored_total"), Some(3.0), "{text}");
        assert_eq!(sample(&text, "rltrace_spans_duplicate_total"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "rltrace_spans_rejected_total"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "rltrace_requests_overloaded_total"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "rltrace_queue_depth"), Some(7.0), "{text}");
        assert_eq!(sample(&text, "rltrace_queue_bytes"), Some(4096.0), "{text}");
        assert!(text.contains("# TYPE rltrace_http_request_duration_seconds histogram"), "{text}");
        let count = text
            .lines()
            .find(|l| l.starts_with("rltrace_http_request_duration_seconds_count{"))
            .unwrap_or_else(|| panic!("no histogram count in {text}"));
        assert!(count.contains(r#"method="GET""#) && count.contains(r#"route="/api/v1/stats""#) && count.contains(r#"status="200""#), "{count}");
        assert!(count.ends_with(" 2"), "{count}");
        let le_5ms = text.lines().find(|l| l.contains("_bucket{") && l.contains(r#"le="0.005""#)).unwrap_or_default();
        assert!(le_5ms.ends_with(" 1"), "one of two requests within 5 ms: {le_5ms}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
        assert!(m.ingest_rate() >= 0.0);
    }

    #[test]
    fn methods_outside_the_seven_are_other() {
        for (m, want) in [("GET", "GET"), ("OPTIONS", "OPTIONS"), ("PATCH", "PATCH"), ("CONNECT", "other"), ("TRACE", "other"), ("FOO", "other")] {
            let method = Method::from_bytes(m.as_bytes()).expect("method token");
            assert_eq!(MethodLabel::from_http(&method).as_str(), want, "{m}");
        }
    }
}

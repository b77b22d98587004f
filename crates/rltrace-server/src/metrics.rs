//! Prometheus text metrics: spans received, stored, duplicate and rejected; request latency
//! histograms by route; the writer queue depth; and the recent ingest rate for `/api/v1/stats`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Window of the ingest rate.
const RATE_WINDOW_S: u64 = 10;

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The collector's metrics.
#[derive(Default)]
pub struct Metrics {
    spans_received: AtomicU64,
    spans_stored: AtomicU64,
    spans_duplicate: AtomicU64,
    spans_rejected: AtomicU64,
    requests_overloaded: AtomicU64,
    latency: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    rate: Mutex<[(u64, u64); RATE_WINDOW_S as usize]>,
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Metrics {
    /// Count spans received in a request (before validation).
    pub fn received(&self, n: usize) {
        self.spans_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count the outcome of a batch.
    pub fn outcome(&self, stored: usize, duplicates: usize, rejected: usize) {
        self.spans_stored.fetch_add(stored as u64, Ordering::Relaxed);
        self.spans_duplicate.fetch_add(duplicates as u64, Ordering::Relaxed);
        self.spans_rejected.fetch_add(rejected as u64, Ordering::Relaxed);
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
        self.requests_overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Spans stored per second over the last complete seconds of the window.
    pub fn ingest_rate(&self) -> f64 {
        let sec = now_s();
        let Ok(r) = self.rate.lock() else { return 0.0 };
        let total: u64 = r.iter().filter(|(s, _)| *s + RATE_WINDOW_S > sec && *s < sec).map(|(_, n)| n).sum();
        total as f64 / (RATE_WINDOW_S - 1) as f64
    }

    /// Record a request's latency.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry((method.to_string(), route.to_string(), status)).or_default();
            h.count += 1;
            h.sum += secs;
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
        }
    }

    /// Render in the Prometheus text format.
    pub fn render(&self, queue_depth: usize, queued_bytes: usize) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(&mut out, "rltrace_spans_received_total", "Spans received in OTLP export requests.", self.spans_received.load(Ordering::Relaxed));
        counter(&mut out, "rltrace_spans_stored_total", "Spans newly committed to the store.", self.spans_stored.load(Ordering::Relaxed));
        counter(&mut out, "rltrace_spans_duplicate_total", "Spans received again and already stored.", self.spans_duplicate.load(Ordering::Relaxed));
        counter(&mut out, "rltrace_spans_rejected_total", "Spans rejected (reported in partial_success).", self.spans_rejected.load(Ordering::Relaxed));
        counter(&mut out, "rltrace_requests_overloaded_total", "Requests answered 503/UNAVAILABLE for overload.", self.requests_overloaded.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP rltrace_queue_depth Operations waiting for the store writer.\n# TYPE rltrace_queue_depth gauge\nrltrace_queue_depth {queue_depth}");
        let _ = writeln!(out, "# HELP rltrace_queue_bytes Bytes of prepared rows waiting for the store writer.\n# TYPE rltrace_queue_bytes gauge\nrltrace_queue_bytes {queued_bytes}");
        let _ = writeln!(out, "# HELP rltrace_http_request_duration_seconds Request latency.\n# TYPE rltrace_http_request_duration_seconds histogram");
        if let Ok(m) = self.latency.lock() {
            for ((method, route, status), h) in m.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(out, "rltrace_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}", h.counts[i]);
                }
                let _ = writeln!(out, "rltrace_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "rltrace_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "rltrace_http_request_duration_seconds_count{{{labels}}} {}", h.count);
            }
        }
        out
    }
}

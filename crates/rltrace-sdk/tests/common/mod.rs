//! Test support: one SDK installed per test binary with an in-memory exporter, and accessors for
//! the `rl.*` attributes of the spans it recorded. Tests use distinct sequence ids, so they can
//! run in parallel in one process.
#![allow(dead_code)]

use std::sync::OnceLock;

use opentelemetry::Value as OtelValue;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor, SpanData};
use rltrace_sdk::{Builder, Guard};
use serde_json::Value;

static INSTALLED: OnceLock<(InMemorySpanExporter, Guard)> = OnceLock::new();

/// Install the SDK (once) with `configure` applied to the builder; returns the exporter.
pub fn install(configure: fn(Builder) -> Builder) -> &'static InMemorySpanExporter {
    &INSTALLED
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let b = rltrace_sdk::builder().ignore_env().service_name("sdk-tests").with_span_processor(SimpleSpanProcessor::new(exporter.clone()));
            let guard = configure(b).install().expect("install the sdk");
            (exporter, guard)
        })
        .0
}

/// Every finished span.
pub fn spans() -> Vec<SpanData> {
    INSTALLED.get().expect("installed").0.get_finished_spans().expect("spans")
}

/// The value of an attribute.
pub fn attr(s: &SpanData, key: &str) -> Option<OtelValue> {
    s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
}

/// A string attribute.
pub fn attr_str(s: &SpanData, key: &str) -> Option<String> {
    match attr(s, key)? {
        OtelValue::String(v) => Some(v.to_string()),
        _ => None,
    }
}

/// An integer attribute.
pub fn attr_i64(s: &SpanData, key: &str) -> Option<i64> {
    match attr(s, key)? {
        OtelValue::I64(v) => Some(v),
        _ => None,
    }
}

/// A float attribute.
pub fn attr_f64(s: &SpanData, key: &str) -> Option<f64> {
    match attr(s, key)? {
        OtelValue::F64(v) => Some(v),
        _ => None,
    }
}

/// A JSON-string attribute (`rl.state`, `rl.action`), parsed.
pub fn attr_json(s: &SpanData, key: &str) -> Value {
    attr_str(s, key).and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
}

/// The triplet spans of a sequence, in index order.
pub fn sequence(sequence_id: &str) -> Vec<SpanData> {
    let mut v: Vec<SpanData> = spans().into_iter().filter(|s| attr_str(s, "rl.sequence_id").as_deref() == Some(sequence_id)).collect();
    v.sort_by_key(|s| attr_i64(s, "rl.sequence_index"));
    v
}

/// The one triplet span of a sequence.
pub fn only(sequence_id: &str) -> SpanData {
    let mut v = sequence(sequence_id);
    assert_eq!(v.len(), 1, "one triplet in {sequence_id}, got {}", v.len());
    v.remove(0)
}

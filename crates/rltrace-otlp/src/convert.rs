//! From proto messages to core spans, checking ids.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanRecord};

/// Spans taken from a request, and the messages of the spans that could not be taken.
#[derive(Debug, Default)]
pub struct ConvertedSpans {
    /// Spans with valid ids.
    pub spans: Vec<SpanRecord>,
    /// One message per rejected span.
    pub rejected: Vec<String>,
}

/// Convert every span of a request. A span whose trace id is not 16 non-zero bytes or whose span id
/// is not 8 non-zero bytes is rejected with a message; the rest are kept.
pub fn request_to_spans(req: ExportTraceServiceRequest) -> ConvertedSpans {
    let mut out = ConvertedSpans::default();
    for chunk in SpanChunks::new(req, usize::MAX) {
        out.spans.extend(chunk.spans);
        out.rejected.extend(chunk.rejected);
    }
    out
}

/// The spans of a request converted a chunk at a time: each item holds at most `max` spans
/// (kept and rejected together), in the request's order. Each span's contents move out of the
/// request as it is converted, so a large request is not held twice.
pub struct SpanChunks {
    resources: std::vec::IntoIter<ResourceSpans>,
    scopes: std::vec::IntoIter<ScopeSpans>,
    spans: std::iter::Enumerate<std::vec::IntoIter<Span>>,
    resource: Vec<(String, AttrValue)>,
    origin: Option<Arc<Origin>>,
    max: usize,
}

impl SpanChunks {
    /// Chunks of at most `max` spans (at least one) of `req`.
    pub fn new(req: ExportTraceServiceRequest, max: usize) -> SpanChunks {
        SpanChunks {
            resources: req.resource_spans.into_iter(),
            scopes: Vec::new().into_iter(),
            spans: Vec::new().into_iter().enumerate(),
            resource: Vec::new(),
            origin: None,
            max: max.max(1),
        }
    }
}

impl Iterator for SpanChunks {
    type Item = ConvertedSpans;

    fn next(&mut self) -> Option<ConvertedSpans> {
        let mut out = ConvertedSpans::default();
        loop {
            if let Some((i, span)) = self.spans.next() {
                let origin = self.origin.as_ref().map(Arc::clone).unwrap_or_default();
                match convert_span(span, origin) {
                    Ok(s) => out.spans.push(s),
                    Err(name) => out.rejected.push(format!(
                        "span #{i} {name:?}: trace_id must be 16 non-zero bytes and span_id 8 non-zero bytes"
                    )),
                }
                if out.spans.len() + out.rejected.len() >= self.max {
                    return Some(out);
                }
            } else if let Some(ss) = self.scopes.next() {
                let (scope_name, scope_version) = ss.scope.map(|s| (s.name, s.version)).unwrap_or_default();
                self.origin = Some(Arc::new(Origin { resource: self.resource.clone(), scope_name, scope_version }));
                self.spans = ss.spans.into_iter().enumerate();
            } else if let Some(rs) = self.resources.next() {
                self.resource = rs.resource.map(|r| convert_attrs(r.attributes)).unwrap_or_default();
                self.scopes = rs.scope_spans.into_iter();
            } else {
                return (!out.spans.is_empty() || !out.rejected.is_empty()).then_some(out);
            }
        }
    }
}

/// One span, or its name when its ids are not valid.
fn convert_span(span: Span, origin: Arc<Origin>) -> Result<SpanRecord, String> {
    let trace_id: Option<[u8; 16]> = span.trace_id.as_slice().try_into().ok().filter(|t| *t != [0u8; 16]);
    let span_id: Option<[u8; 8]> = span.span_id.as_slice().try_into().ok().filter(|s| *s != [0u8; 8]);
    let (Some(trace_id), Some(span_id)) = (trace_id, span_id) else {
        return Err(span.name);
    };
    let parent_span_id = span.parent_span_id.as_slice().try_into().ok().filter(|p| *p != [0u8; 8]);
    let (status_code, status_message) = span.status.map(|s| (s.code, s.message)).unwrap_or_default();
    Ok(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        name: span.name,
        kind: span.kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        status_code,
        status_message,
        attributes: convert_attrs(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|e| SpanEvent { name: e.name, time_unix_nano: e.time_unix_nano, attributes: convert_attrs(e.attributes) })
            .collect(),
        origin,
    })
}

fn convert_attrs(kvs: Vec<KeyValue>) -> Vec<(String, AttrValue)> {
    kvs.into_iter().map(|kv| (kv.key, convert_value(kv.value))).collect()
}

fn convert_value(v: Option<AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value) {
        None => AttrValue::Empty,
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(d),
        Some(any_value::Value::BytesValue(b)) => AttrValue::Bytes(b),
        Some(any_value::Value::ArrayValue(a)) => {
            AttrValue::Array(a.values.into_iter().map(|v| convert_value(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => AttrValue::Map(convert_attrs(kv.values)),
        #[allow(unreachable_patterns)]
        Some(_) => AttrValue::Empty,
    }
}

//! From proto messages to core spans, checking ids.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
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
    for rs in req.resource_spans {
        let resource = rs.resource.map(|r| convert_attrs(r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            let (scope_name, scope_version) = ss.scope.map(|s| (s.name, s.version)).unwrap_or_default();
            let origin = Arc::new(Origin { resource: resource.clone(), scope_name, scope_version });
            for (i, span) in ss.spans.into_iter().enumerate() {
                let trace_id: Option<[u8; 16]> = span.trace_id.as_slice().try_into().ok().filter(|t| *t != [0u8; 16]);
                let span_id: Option<[u8; 8]> = span.span_id.as_slice().try_into().ok().filter(|s| *s != [0u8; 8]);
                let (Some(trace_id), Some(span_id)) = (trace_id, span_id) else {
                    out.rejected.push(format!(
                        "span #{i} {:?}: trace_id must be 16 non-zero bytes and span_id 8 non-zero bytes",
                        span.name
                    ));
                    continue;
                };
                let parent_span_id = span.parent_span_id.as_slice().try_into().ok().filter(|p| *p != [0u8; 8]);
                let (status_code, status_message) = span.status.map(|s| (s.code, s.message)).unwrap_or_default();
                out.spans.push(SpanRecord {
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
                        .map(|e| SpanEvent {
                            name: e.name,
                            time_unix_nano: e.time_unix_nano,
                            attributes: convert_attrs(e.attributes),
                        })
                        .collect(),
                    origin: Arc::clone(&origin),
                });
            }
        }
    }
    out
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

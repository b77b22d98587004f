//! From proto messages to core spans, checking ids.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanExtras, SpanLink, SpanRecord};

use crate::sink::{Sink, feed};

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
    let delivered = for_each_part(req, usize::MAX, |part| {
        out = part;
        Ok::<(), std::convert::Infallible>(())
    });
    match delivered {
        Ok(()) => out,
        Err(never) => match never {},
    }
}

/// The spans of a request converted a part at a time: `deliver` gets parts of at most `max`
/// spans (kept and rejected together), in the request's order. Each span's contents move out of
/// the request as it is converted, so a large request is not held twice. The first error of
/// `deliver` stops the conversion and is returned.
pub fn for_each_part<E>(req: ExportTraceServiceRequest, max: usize, deliver: impl FnMut(ConvertedSpans) -> Result<(), E>) -> Result<(), E> {
    let mut parts = Parts::new(max, deliver);
    feed(req, &mut parts);
    parts.finish()
}

/// A sink that converts spans and hands them on in parts of at most `max`.
pub(crate) struct Parts<F, E> {
    deliver: F,
    max: usize,
    resource: Vec<(String, AttrValue)>,
    origin: Arc<Origin>,
    index: usize,
    out: ConvertedSpans,
    failed: Option<E>,
}

impl<E, F: FnMut(ConvertedSpans) -> Result<(), E>> Parts<F, E> {
    pub(crate) fn new(max: usize, deliver: F) -> Parts<F, E> {
        Parts { deliver, max: max.max(1), resource: Vec::new(), origin: Arc::default(), index: 0, out: ConvertedSpans::default(), failed: None }
    }

    /// Deliver what is left; the first error of `deliver`, if any.
    pub(crate) fn finish(mut self) -> Result<(), E> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.out.spans.is_empty() && self.out.rejected.is_empty() {
            return Ok(());
        }
        (self.deliver)(std::mem::take(&mut self.out))
    }
}

impl<E, F: FnMut(ConvertedSpans) -> Result<(), E>> Sink for Parts<F, E> {
    fn resource(&mut self, resource: Option<Resource>) {
        self.resource = resource.map(|r| convert_attrs(r.attributes)).unwrap_or_default();
    }

    fn scope(&mut self, scope: Option<InstrumentationScope>) {
        let (scope_name, scope_version) = scope.map(|s| (s.name, s.version)).unwrap_or_default();
        self.origin = Arc::new(Origin { resource: self.resource.clone(), scope_name, scope_version });
        self.index = 0;
    }

    fn span(&mut self, span: Span) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let i = self.index;
        self.index += 1;
        match convert_span(span, Arc::clone(&self.origin)) {
            Ok(s) => self.out.spans.push(s),
            Err(name) => self.out.rejected.push(format!("span #{i} {name:?}: trace_id must be 16 non-zero bytes and span_id 8 non-zero bytes")),
        }
        if self.out.spans.len() + self.out.rejected.len() >= self.max {
            if let Err(e) = (self.deliver)(std::mem::take(&mut self.out)) {
                self.failed = Some(e);
                return false;
            }
        }
        true
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
    let extras = SpanExtras {
        links: span
            .links
            .into_iter()
            .map(|l| SpanLink { trace_id: l.trace_id, span_id: l.span_id, trace_state: l.trace_state, attributes: convert_attrs(l.attributes), flags: l.flags })
            .collect(),
        trace_state: span.trace_state,
        flags: span.flags,
        event_times: Vec::new(),
        dropped: [span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count],
    };
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
        extras,
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

//! From core spans to an OTLP export request: the way back of [`crate::request_to_spans`], for
//! forwarding stored spans to another OTLP receiver.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use rltrace_core::span::{AttrValue, Origin, SpanRecord};

/// One export request holding `spans` in their order: consecutive spans of one origin (the same
/// `Arc`, or equal contents) share a resource and scope group. `extra_resource` is added to every
/// resource (after its own attributes).
pub fn export_request<'a>(spans: impl IntoIterator<Item = &'a SpanRecord>, extra_resource: &[(String, AttrValue)]) -> ExportTraceServiceRequest {
    let mut out = ExportTraceServiceRequest::default();
    let mut current: Option<Arc<Origin>> = None;
    for s in spans {
        let same = current.as_ref().is_some_and(|o| Arc::ptr_eq(o, &s.origin) || **o == *s.origin);
        if !same {
            out.resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: to_kvs(s.origin.resource.iter().chain(extra_resource.iter())),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: s.origin.scope_name.clone(),
                        version: s.origin.scope_version.clone(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans: Vec::new(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            current = Some(Arc::clone(&s.origin));
        }
        if let Some(group) = out.resource_spans.last_mut().and_then(|r| r.scope_spans.last_mut()) {
            group.spans.push(to_span(s));
        }
    }
    out
}

/// The request's protobuf encoding.
pub fn encode_request(req: &ExportTraceServiceRequest) -> Vec<u8> {
    req.encode_to_vec()
}

fn to_span(s: &SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.extras.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: s.extras.flags,
        name: s.name.clone(),
        kind: s.kind,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: to_kvs(s.attributes.iter()),
        dropped_attributes_count: s.extras.dropped[0],
        events: s
            .events
            .iter()
            .map(|e| span::Event { time_unix_nano: e.time_unix_nano, name: e.name.clone(), attributes: to_kvs(e.attributes.iter()), dropped_attributes_count: 0 })
            .collect(),
        dropped_events_count: s.extras.dropped[1],
        links: s
            .extras
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.clone(),
                span_id: l.span_id.clone(),
                trace_state: l.trace_state.clone(),
                attributes: to_kvs(l.attributes.iter()),
                dropped_attributes_count: 0,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.extras.dropped[2],
        status: (s.status_code != 0 || !s.status_message.is_empty()).then(|| Status { message: s.status_message.clone(), code: s.status_code }),
    }
}

fn to_kvs<'a>(attrs: impl Iterator<Item = &'a (String, AttrValue)>) -> Vec<KeyValue> {
    attrs.map(|(k, v)| KeyValue { key: k.clone(), value: Some(to_any(v)), ..Default::default() }).collect()
}

fn to_any(v: &AttrValue) -> AnyValue {
    let value = match v {
        AttrValue::Empty => None,
        AttrValue::Str(s) => Some(any_value::Value::StringValue(s.clone())),
        AttrValue::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        AttrValue::Int(i) => Some(any_value::Value::IntValue(*i)),
        AttrValue::Double(d) => Some(any_value::Value::DoubleValue(*d)),
        AttrValue::Bytes(b) => Some(any_value::Value::BytesValue(b.clone())),
        AttrValue::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue { values: a.iter().map(to_any).collect() })),
        AttrValue::Map(m) => Some(any_value::Value::KvlistValue(KeyValueList { values: to_kvs(m.iter()) })),
    };
    AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_to_spans;
    use opentelemetry_proto::tonic::trace::v1::span::Link;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    /// A request decoded and encoded again is the same request (the fields rltrace keeps).
    #[test]
    fn a_request_survives_the_way_there_and_back() {
        let span = Span {
            trace_id: (1u8..=16).collect(),
            span_id: (1u8..=8).collect(),
            trace_state: "a=b".into(),
            parent_span_id: (9u8..=16).collect(),
            flags: 257,
            name: "llm call".into(),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_001,
            end_time_unix_nano: 1_700_000_000_500_000_002,
            attributes: vec![
                kv("z", any_value::Value::StringValue("first".into())),
                kv("a", any_value::Value::IntValue(7)),
                kv("d", any_value::Value::DoubleValue(1.0)),
                kv("arr", any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(any_value::Value::BoolValue(true)) }] })),
                kv("blob", any_value::Value::BytesValue(vec![0, 1, 0xfe])),
            ],
            dropped_attributes_count: 5,
            events: vec![span::Event { time_unix_nano: 1_700_000_000_100_000_003, name: "e".into(), attributes: vec![kv("k", any_value::Value::IntValue(1))], dropped_attributes_count: 0 }],
            dropped_events_count: 6,
            links: vec![Link { trace_id: vec![7; 16], span_id: vec![8; 8], trace_state: "c=d".into(), attributes: vec![kv("l", any_value::Value::BoolValue(true))], dropped_attributes_count: 0, flags: 1 }],
            dropped_links_count: 7,
            status: Some(Status { message: "bad".into(), code: 2 }),
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", any_value::Value::StringValue("agents".into()))], ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "scope".into(), version: "1.2".into(), attributes: Vec::new(), dropped_attributes_count: 0 }),
                    spans: vec![span.clone(), Span { span_id: vec![2; 8], ..span.clone() }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let spans = request_to_spans(req.clone()).spans;
        let back = export_request(spans.iter(), &[]);
        assert_eq!(back, req);
        let extra = [("agentlightning.rollout_id".to_string(), AttrValue::Str("r1".into()))];
        let with = export_request(spans.iter(), &extra);
        let attrs = &with.resource_spans[0].resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[1].key, "agentlightning.rollout_id");
    }

    /// Spans of different origins are grouped in order; a group is not merged with an earlier one.
    #[test]
    fn origins_make_groups_in_order() {
        let a = Arc::new(Origin { resource: vec![("service.name".into(), AttrValue::Str("a".into()))], ..Origin::default() });
        let b = Arc::new(Origin { resource: vec![("service.name".into(), AttrValue::Str("b".into()))], ..Origin::default() });
        let mk = |o: &Arc<Origin>, id: u8| SpanRecord {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: None,
            name: "s".into(),
            kind: 1,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status_code: 0,
            status_message: String::new(),
            attributes: Vec::new(),
            events: Vec::new(),
            origin: Arc::clone(o),
            extras: Default::default(),
        };
        let spans = [mk(&a, 1), mk(&a, 2), mk(&b, 3), mk(&a, 4)];
        let req = export_request(spans.iter(), &[]);
        let sizes: Vec<usize> = req.resource_spans.iter().map(|r| r.scope_spans[0].spans.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
        assert!(req.resource_spans[0].scope_spans[0].spans[0].status.is_none());
    }
}

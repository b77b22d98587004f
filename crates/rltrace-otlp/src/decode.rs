//! Decoding of OTLP trace export requests from protobuf and from OTLP/JSON.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::convert::{ConvertedSpans, Parts, for_each_part};
pub use crate::json::MAX_VALUE_DEPTH;
use crate::response::Encoding;
use crate::sink::{Discard, Rebuild};

/// A body that cannot be decoded at all (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a valid protobuf `ExportTraceServiceRequest`.
    #[error("malformed protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(String),
    /// Not valid OTLP/JSON.
    #[error("malformed OTLP/JSON ExportTraceServiceRequest: {0}")]
    Json(String),
}

/// Decode a protobuf `ExportTraceServiceRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    ExportTraceServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// Decode an OTLP/JSON `ExportTraceServiceRequest`, straight into the protobuf types (no
/// intermediate JSON value tree, so memory stays near the size of what is kept).
///
/// Beyond the specification's integers, enum names (`"SPAN_KIND_SERVER"`, `"STATUS_CODE_ERROR"`)
/// are accepted, as some exporters write them; hex ids may be in either case; unknown fields are
/// ignored; a field that holds spans or their resource or scope may appear once. Attribute values
/// nest at most [`MAX_VALUE_DEPTH`] levels. See the `json` module for every reading.
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let mut rebuild = Rebuild::default();
    crate::json::decode_into(body, &mut rebuild).map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(rebuild.request)
}

/// Bodies up to this size are decoded whole, then converted in parts; larger bodies are read twice
/// instead (checked, then converted as they are read), so that no more than a part of such a body
/// exists decoded at once.
pub const DECODE_WHOLE_MAX: usize = 8 << 20;

/// Why [`decode_in_parts`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum PartsError<E> {
    /// The body cannot be decoded; nothing was delivered.
    #[error(transparent)]
    Decode(DecodeError),
    /// The receiver of the parts failed; the parts before were delivered.
    #[error("{0}")]
    Deliver(E),
}

/// Decode a body and hand its spans to `deliver` converted, in parts of at most `max` spans, in
/// the body's order. A body that cannot be decoded delivers nothing: a large body (over
/// [`DECODE_WHOLE_MAX`]) is checked whole before its first part is delivered, then read again
/// part by part, so its decoded spans are never held all at once.
pub fn decode_in_parts<E>(
    encoding: Encoding,
    body: &[u8],
    max: usize,
    deliver: impl FnMut(ConvertedSpans) -> Result<(), E>,
) -> Result<(), PartsError<E>> {
    if body.len() > DECODE_WHOLE_MAX {
        let streams = match encoding {
            Encoding::Json => crate::json::decode_into(body, &mut Discard).map(|()| true).map_err(|e| DecodeError::Json(e.to_string())),
            // A protobuf body whose resource or scope comes again after its spans is decoded
            // whole: protobuf merges the copies, so the spans before would get another resource.
            Encoding::Protobuf => crate::protobuf::walk(body, &mut Discard).map_err(DecodeError::Protobuf),
        }
        .map_err(PartsError::Decode)?;
        if streams {
            let mut parts = Parts::new(max, deliver);
            let decoded = match encoding {
                Encoding::Json => crate::json::decode_into(body, &mut parts).map_err(|e| DecodeError::Json(e.to_string())),
                Encoding::Protobuf => crate::protobuf::walk(body, &mut parts).map(|_| ()).map_err(DecodeError::Protobuf),
            };
            // Only the receiver can stop a body that was checked: its error comes first.
            parts.finish().map_err(PartsError::Deliver)?;
            return decoded.map_err(PartsError::Decode);
        }
    }
    let req = match encoding {
        Encoding::Protobuf => decode_protobuf(body),
        Encoding::Json => decode_json(body),
    }
    .map_err(PartsError::Decode)?;
    for_each_part(req, max, deliver).map_err(PartsError::Deliver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// A request with one span whose body is `span` (a JSON object's members).
    fn one_span(span: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{span}}}]}}]}}]}}"#)
    }

    fn span_of(body: &str) -> Span {
        let mut req = decode_json(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(req.resource_spans.len(), 1);
        req.resource_spans.remove(0).scope_spans.remove(0).spans.remove(0)
    }

    /// The value of the span's only attribute, decoded from `value` (an AnyValue in JSON).
    fn attr_value(value: &str) -> Option<V> {
        let span = span_of(&one_span(&format!(r#""attributes":[{{"key":"k","value":{value}}}]"#)));
        span.attributes.into_iter().next().and_then(|kv| kv.value).and_then(|v| v.value)
    }

    fn decode_err(body: &str) -> String {
        match decode_json(body.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(req) => panic!("accepted: {req:?}"),
        }
    }

    #[test]
    fn json_with_enum_names_and_upper_hex() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"scope":{"name":"x"},"spans":[
            {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"a","kind":"SPAN_KIND_SERVER",
             "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000001000000000,
             "status":{"code":"STATUS_CODE_ERROR","message":"boom"},
             "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let req = decode_json(body).expect("decodes");
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(span.status.as_ref().map(|s| s.message.as_str()), Some("boom"));
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_001_000_000_000);
        assert_eq!(span.attributes[0].value.as_ref().and_then(|v| v.value.clone()), Some(V::IntValue(42)));
        assert_eq!(req.resource_spans[0].scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("x"));
    }

    #[test]
    fn ids_in_either_case_give_the_same_bytes() {
        let upper = span_of(&one_span(r#""traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"00F067AA0BA902B7""#));
        let lower = span_of(&one_span(r#""traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"00f067aa0ba902b7""#));
        let mixed = span_of(&one_span(r#""traceId":"5b8EFFF798038103d269B633813fc60C","spanId":"EEe19b7ec3C1b174","parentSpanId":"00F067aa0BA902b7""#));
        assert_eq!(upper.trace_id, vec![0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c]);
        assert_eq!(upper.span_id, vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]);
        assert_eq!(upper.parent_span_id, vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        for other in [&lower, &mixed] {
            assert_eq!((&other.trace_id, &other.span_id, &other.parent_span_id), (&upper.trace_id, &upper.span_id, &upper.parent_span_id));
        }
        // No parent: an empty string or no field at all.
        assert!(span_of(&one_span(r#""traceId":"5b8efff798038103d269b633813fc60c","parentSpanId":"""#)).parent_span_id.is_empty());
        // Link ids are read the same way.
        let link = span_of(&one_span(r#""links":[{"traceId":"0102030405060708090A0B0C0D0E0F10","spanId":"A1A2A3A4A5A6A7A8","traceState":"k=v","attributes":[{"key":"l","value":{"boolValue":true}}]}]"#));
        assert_eq!(link.links[0].trace_id, (1u8..=16).collect::<Vec<_>>());
        assert_eq!(link.links[0].span_id, vec![0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
        assert_eq!(link.links[0].trace_state, "k=v");
        assert_eq!(link.links[0].attributes.len(), 1);
    }

    #[test]
    fn invalid_hex_is_an_error() {
        for bad in ["5B8EFFF798038103D269B633813FC60G", "abc", "zz", "5b8e-ff7"] {
            let msg = decode_err(&one_span(&format!(r#""traceId":"{bad}""#)));
            assert!(msg.contains("OTLP/JSON") && msg.contains("hex"), "{bad}: {msg}");
        }
        assert!(decode_err(&one_span(r#""spanId":"EEE19B7EC3C1B17""#)).contains("odd number"));
        assert!(decode_err(&one_span(r#""parentSpanId":42"#)).contains("hex"));
        assert!(decode_err(&one_span(r#""links":[{"spanId":"xyz0"}]"#)).contains("hex"));
    }

    #[test]
    fn span_kind_and_status_code_as_names_or_integers() {
        let kinds = [
            ("0", 0), ("\"SPAN_KIND_UNSPECIFIED\"", 0), ("\"SPAN_KIND_INTERNAL\"", 1), ("\"SPAN_KIND_SERVER\"", 2), ("\"SPAN_KIND_CLIENT\"", 3),
            ("\"SPAN_KIND_PRODUCER\"", 4), ("\"SPAN_KIND_CONSUMER\"", 5), ("\"server\"", 2), ("\"span_kind_client\"", 3), ("4", 4), ("\"5\"", 5), ("null", 0),
        ];
        for (json, want) in kinds {
            assert_eq!(span_of(&one_span(&format!(r#""kind":{json}"#))).kind, want, "kind {json}");
        }
        let codes = [("\"STATUS_CODE_UNSET\"", 0), ("\"STATUS_CODE_OK\"", 1), ("\"STATUS_CODE_ERROR\"", 2), ("\"error\"", 2), ("1", 1), ("\"2\"", 2)];
        for (json, want) in codes {
            assert_eq!(span_of(&one_span(&format!(r#""status":{{"code":{json}}}"#))).status.map(|s| s.code), Some(want), "code {json}");
        }
        assert_eq!(span_of(&one_span(r#""status":null"#)).status, None);
        assert!(decode_err(&one_span(r#""kind":"SPAN_KIND_SIDEWAYS""#)).contains("SPAN_KIND_SIDEWAYS"));
        assert!(decode_err(&one_span(r#""status":{"code":"STATUS_CODE_MAYBE"}"#)).contains("STATUS_CODE_MAYBE"));
        assert!(decode_err(&one_span(r#""kind":4294967296"#)).contains("out of range"));
        // A multi-byte character where the prefix would end must not panic.
        assert!(decode_err(&one_span(r#""kind":"SPAN_KIND\u00e9X""#)).contains("unknown enum name"));
    }

    #[test]
    fn int64_as_string_or_number() {
        assert_eq!(attr_value(r#"{"intValue":"42"}"#), Some(V::IntValue(42)));
        assert_eq!(attr_value(r#"{"intValue":42}"#), Some(V::IntValue(42)));
        assert_eq!(attr_value(r#"{"intValue":"-9223372036854775808"}"#), Some(V::IntValue(i64::MIN)));
        assert_eq!(attr_value(r#"{"intValue":-9223372036854775808}"#), Some(V::IntValue(i64::MIN)));
        assert_eq!(attr_value(r#"{"intValue":"9223372036854775807"}"#), Some(V::IntValue(i64::MAX)));
        assert!(decode_err(&one_span(r#""attributes":[{"key":"k","value":{"intValue":"9223372036854775808"}}]"#)).contains("not an integer"));
        assert!(decode_err(&one_span(r#""attributes":[{"key":"k","value":{"intValue":9223372036854775808}}]"#)).contains("out of range"));
        assert!(decode_err(&one_span(r#""attributes":[{"key":"k","value":{"intValue":"forty-two"}}]"#)).contains("not an integer"));
        assert!(decode_err(&one_span(r#""attributes":[{"key":"k","value":{"intValue":1.5}}]"#)).contains("integer"));
        // Times: u64 beyond i64, as a string or a number; negative is an error.
        let s = span_of(&one_span(r#""startTimeUnixNano":"18446744073709551615","endTimeUnixNano":18446744073709551615"#));
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (u64::MAX, u64::MAX));
        assert!(decode_err(&one_span(r#""startTimeUnixNano":-1"#)).contains("out of range"));
        let e = span_of(&one_span(r#""events":[{"name":"e","timeUnixNano":"1700000000000000001"}],"droppedEventsCount":"3","flags":257"#));
        assert_eq!((e.events[0].name.as_str(), e.events[0].time_unix_nano), ("e", 1_700_000_000_000_000_001));
        assert_eq!((e.dropped_events_count, e.flags), (3, 257));
    }

    #[test]
    fn scalar_values() {
        assert_eq!(attr_value(r#"{"stringValue":"h\u00e9llo \"q\""}"#), Some(V::StringValue("héllo \"q\"".into())));
        assert_eq!(attr_value(r#"{"boolValue":false}"#), Some(V::BoolValue(false)));
        assert_eq!(attr_value(r#"{"doubleValue":0.25}"#), Some(V::DoubleValue(0.25)));
        assert_eq!(attr_value(r#"{"doubleValue":3}"#), Some(V::DoubleValue(3.0)));
        assert_eq!(attr_value(r#"{"doubleValue":"0.5"}"#), Some(V::DoubleValue(0.5)));
        assert_eq!(attr_value(r#"{"doubleValue":"-Infinity"}"#), Some(V::DoubleValue(f64::NEG_INFINITY)));
        assert!(matches!(attr_value(r#"{"doubleValue":"NaN"}"#), Some(V::DoubleValue(d)) if d.is_nan()));
        assert_eq!(attr_value(r#"{"bytesValue":"AAEC/w=="}"#), Some(V::BytesValue(vec![0, 1, 2, 255])));
        assert_eq!(attr_value(r#"{"bytesValue":"AAEC_w"}"#), Some(V::BytesValue(vec![0, 1, 2, 255])));
        assert!(decode_err(&one_span(r#""attributes":[{"key":"k","value":{"bytesValue":"!!!"}}]"#)).contains("base64"));
        // No value, an empty value, a null value, an unknown kind of value: all empty.
        assert_eq!(attr_value("{}"), None);
        assert_eq!(attr_value("null"), None);
        assert_eq!(attr_value(r#"{"stringValue":null}"#), None);
        assert_eq!(attr_value(r#"{"futureValue":{"x":[1,2,{"y":null}]}}"#), None);
        let span = span_of(&one_span(r#""attributes":[{"key":"only-key"}]"#));
        assert_eq!(span.attributes, vec![KeyValue { key: "only-key".into(), value: None, ..Default::default() }]);
        // A wrong type is an error, not a silent default.
        assert!(decode_err(&one_span(r#""attributes":[{"key":"k","value":{"boolValue":"yes"}}]"#)).contains("boolean"));
        assert!(decode_err(&one_span(r#""name":7"#)).contains("string"));
    }

    #[test]
    fn nested_array_and_kvlist_values() {
        let v = attr_value(
            r#"{"kvlistValue":{"values":[
                {"key":"list","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"two"},{"arrayValue":{"values":[{"boolValue":true}]}}]}}},
                {"key":"map","value":{"kvlistValue":{"values":[{"key":"d","value":{"doubleValue":1.5}}]}}},
                {"key":"empty","value":{"arrayValue":{}}}
            ]}}"#,
        );
        let kv = |key: &str, v: V| KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() };
        let any = |v: V| AnyValue { value: Some(v) };
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
        let want = V::KvlistValue(KeyValueList {
            values: vec![
                kv(
                    "list",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            any(V::IntValue(1)),
                            any(V::StringValue("two".into())),
                            any(V::ArrayValue(ArrayValue { values: vec![any(V::BoolValue(true))] })),
                        ],
                    }),
                ),
                kv("map", V::KvlistValue(KeyValueList { values: vec![kv("d", V::DoubleValue(1.5))] })),
                kv("empty", V::ArrayValue(ArrayValue { values: vec![] })),
            ],
        });
        assert_eq!(v, Some(want));
    }

    /// An attribute value of `depth` nested arrays (or key/value lists) around a string.
    fn nested(depth: usize, kvlist: bool) -> String {
        let (open, close) = if kvlist {
            (r#"{"kvlistValue":{"values":[{"key":"n","value":"#, "}]}}")
        } else {
            (r#"{"arrayValue":{"values":["#, "]}}")
        };
        format!("{}{}{}", open.repeat(depth), r#"{"stringValue":"leaf"}"#, close.repeat(depth))
    }

    fn depth_of(mut v: Option<V>) -> usize {
        let mut d = 0;
        loop {
            match v {
                Some(V::ArrayValue(a)) => v = a.values.into_iter().next().and_then(|x| x.value),
                Some(V::KvlistValue(l)) => v = l.values.into_iter().next().and_then(|x| x.value).and_then(|x| x.value),
                Some(V::StringValue(s)) => {
                    assert_eq!(s, "leaf");
                    return d;
                }
                other => panic!("unexpected {other:?}"),
            }
            d += 1;
        }
    }

    #[test]
    fn nesting_is_bounded() {
        for kvlist in [false, true] {
            let at_bound = attr_value(&nested(MAX_VALUE_DEPTH, kvlist));
            assert_eq!(depth_of(at_bound), MAX_VALUE_DEPTH, "kvlist {kvlist}");
            let msg = decode_err(&one_span(&format!(r#""attributes":[{{"key":"k","value":{}}}]"#, nested(MAX_VALUE_DEPTH + 1, kvlist))));
            assert!(msg.contains(&format!("deeper than {MAX_VALUE_DEPTH} levels")), "kvlist {kvlist}: {msg}");
        }
        // Event, link, scope and resource attributes are bounded the same way.
        let deep = nested(MAX_VALUE_DEPTH + 1, false);
        for body in [
            one_span(&format!(r#""events":[{{"attributes":[{{"key":"k","value":{deep}}}]}}]"#)),
            one_span(&format!(r#""links":[{{"attributes":[{{"key":"k","value":{deep}}}]}}]"#)),
            format!(r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"k","value":{deep}}}]}}}}]}}"#),
            format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"scope":{{"attributes":[{{"key":"k","value":{deep}}}]}}}}]}}]}}"#),
        ] {
            assert!(decode_err(&body).contains("deeper than"), "{body}");
        }
    }

    #[test]
    fn very_deep_nesting_is_an_error_not_a_stack_overflow() {
        // Far beyond the bound, run on a small stack (a blocking-pool thread of the server has
        // 2 MiB): a deep value in a known field is an error; a deep value in an unknown field is
        // skipped by the JSON parser without recursion, as unknown fields are ignored.
        let known = [
            one_span(&format!(r#""attributes":[{{"key":"k","value":{}}}]"#, nested(100_000, false))),
            one_span(&format!(r#""attributes":[{{"key":"k","value":{}}}]"#, nested(100_000, true))),
        ];
        let unknown = [
            one_span(&format!(r#""name":"n","futureField":{}1{}"#, "[".repeat(200_000), "]".repeat(200_000))),
            one_span(&format!(r#""name":"n","attributes":[{{"key":"k","value":{{"futureValue":{}1{}}}}}]"#, r#"{"a":"#.repeat(100_000), "}".repeat(100_000))),
        ];
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let known: Vec<_> = known.iter().map(|b| decode_json(b.as_bytes()).map_err(|e| e.to_string())).collect();
                let unknown: Vec<_> = unknown.iter().map(|b| decode_json(b.as_bytes()).map_err(|e| e.to_string())).collect();
                (known, unknown)
            })
            .expect("spawn");
        let (known, unknown) = handle.join().expect("no stack overflow");
        for r in known {
            let msg = r.expect_err("rejected");
            assert!(msg.contains("deeper than") || msg.contains("recursion limit"), "{msg}");
        }
        for r in unknown {
            let req = r.expect("unknown deep value skipped");
            let span = &req.resource_spans[0].scope_spans[0].spans[0];
            assert_eq!(span.name, "n");
            assert!(span.attributes.iter().all(|kv| kv.value.as_ref().is_none_or(|v| v.value.is_none())));
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_nulls_are_defaults() {
        let body = r#"{"futureTop":{"a":[1,{"b":null}]},"resourceSpans":[{"futureRs":1,"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}],"entityRefs":[{"type":"x"}],"droppedAttributesCount":2},
            "schemaUrl":"https://x","scopeSpans":[{"scope":{"name":"s","version":"1","future":true,"attributes":null},"schemaUrl":null,"spans":[
                {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"n","futureSpanField":[{"deep":{"x":"y"}}],
                 "attributes":null,"events":null,"links":null,"traceState":null,"status":{"code":2,"message":"m","future":"f"}}]}]}]}"#;
        let req = decode_json(body.as_bytes()).expect("decodes");
        let rs = &req.resource_spans[0];
        assert_eq!(rs.schema_url, "https://x");
        let res = rs.resource.as_ref().expect("resource");
        assert_eq!((res.attributes.len(), res.dropped_attributes_count), (1, 2));
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().map(|s| (s.name.as_str(), s.version.as_str())), Some(("s", "1")));
        let span = &ss.spans[0];
        assert_eq!(span.name, "n");
        assert!(span.attributes.is_empty() && span.events.is_empty() && span.links.is_empty());
        assert_eq!(span.status.as_ref().map(|s| (s.code, s.message.as_str())), Some((2, "m")));
        // An empty object is an empty request; so is a null list.
        assert!(decode_json(b"{}").expect("empty").resource_spans.is_empty());
        assert!(decode_json(br#"{"resourceSpans":null}"#).expect("null").resource_spans.is_empty());
    }

    #[test]
    fn the_typed_decoder_agrees_with_the_proto_serde_encoding() {
        // What a serde-based OTLP/JSON writer (the load generator, some exporters) writes decodes
        // back to the same request.
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span};
        let kv = |key: &str, v: V| KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() };
        let attrs = vec![
            kv("s", V::StringValue("x".into())),
            kv("i", V::IntValue(-7)),
            kv("d", V::DoubleValue(0.5)),
            kv("b", V::BoolValue(true)),
            kv("bytes", V::BytesValue(vec![1, 2, 3, 250])),
            kv("a", V::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(V::IntValue(1)) }] })),
            kv("m", V::KvlistValue(KeyValueList { values: vec![kv("inner", V::StringValue("y".into()))] })),
        ];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: attrs.clone(), dropped_attributes_count: 1, ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "sc".into(), version: "2".into(), attributes: attrs.clone(), dropped_attributes_count: 0 }),
                    spans: vec![Span {
                        trace_id: (1u8..=16).collect(),
                        span_id: (1u8..=8).collect(),
                        trace_state: "a=b".into(),
                        parent_span_id: (9u8..=16).collect(),
                        flags: 1,
                        name: "op".into(),
                        kind: 3,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_500_000_000,
                        attributes: attrs.clone(),
                        dropped_attributes_count: 4,
                        events: vec![span::Event { time_unix_nano: 5, name: "ev".into(), attributes: attrs.clone(), dropped_attributes_count: 1 }],
                        dropped_events_count: 2,
                        links: vec![span::Link {
                            trace_id: (16u8..32).collect(),
                            span_id: (8u8..16).collect(),
                            trace_state: "c=d".into(),
                            attributes: attrs.clone(),
                            dropped_attributes_count: 3,
                            flags: 256,
                        }],
                        dropped_links_count: 6,
                        status: Some(Status { message: "bad".into(), code: 2 }),
                    }],
                    schema_url: "scope-schema".into(),
                }],
                schema_url: "res-schema".into(),
            }],
        };
        let json = serde_json::to_vec(&req).expect("serialize");
        assert_eq!(decode_json(&json).expect("decode"), req);
        // Upper-case ids, as some exporters write them, decode to the same request.
        let upper = String::from_utf8(json).expect("utf8").replace("0102030405060708090a0b0c0d0e0f10", "0102030405060708090A0B0C0D0E0F10");
        assert_eq!(decode_json(upper.as_bytes()).expect("decode"), req);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(decode_json(b"{not json").is_err());
        assert!(decode_json(b"[]").is_err());
        assert!(decode_json(b"\"text\"").is_err());
        assert!(decode_json(b"null").is_err());
        assert!(decode_json(b"{} trailing").is_err());
        assert!(decode_json(b"{}\n").is_ok(), "trailing whitespace is fine");
        assert!(decode_json(br#"{"resourceSpans":{}}"#).is_err());
        assert!(decode_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#).is_err());
        assert!(decode_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00"#).is_err());
        assert!(decode_protobuf(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_protobuf(b"").expect("empty is a valid empty request").resource_spans.is_empty());
    }

    /// An OTLP/JSON body of `n` spans named `s0`.. under one resource and scope, larger than
    /// [`DECODE_WHOLE_MAX`] when `pad` is large enough.
    fn many_json_spans(n: usize, pad: usize) -> String {
        let spans: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{:016x}","name":"s{i}","attributes":[{{"key":"pad","value":{{"stringValue":"{}"}}}}]}}"#, i + 1, "p".repeat(pad))
            })
            .collect();
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"scope":{{"name":"sc"}},"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        )
    }

    fn parts_of(body: &[u8], max: usize) -> Result<Vec<ConvertedSpans>, String> {
        let mut parts = Vec::new();
        decode_in_parts(Encoding::Json, body, max, |p| {
            parts.push(p);
            Ok::<(), String>(())
        })
        .map_err(|e| e.to_string())?;
        Ok(parts)
    }

    #[test]
    fn a_large_json_body_arrives_in_parts_in_order() {
        let body = many_json_spans(5000, 2000);
        assert!(body.len() > DECODE_WHOLE_MAX, "{}", body.len());
        let parts = parts_of(body.as_bytes(), 2048).expect("decodes");
        assert_eq!(parts.iter().map(|p| p.spans.len()).collect::<Vec<_>>(), vec![2048, 2048, 904]);
        let names: Vec<String> = parts.iter().flat_map(|p| p.spans.iter().map(|s| s.name.clone())).collect();
        assert_eq!(names, (0..5000).map(|i| format!("s{i}")).collect::<Vec<_>>());
        let last = &parts[2].spans[903];
        assert_eq!((last.origin.scope_name.as_str(), last.origin.resource.len()), ("sc", 1));
        // The same spans as the whole decoding gives.
        let whole = crate::request_to_spans(decode_json(body.as_bytes()).expect("decodes"));
        assert_eq!(whole.spans, parts.into_iter().flat_map(|p| p.spans).collect::<Vec<_>>());
    }

    #[test]
    fn a_large_json_body_that_breaks_at_its_end_delivers_nothing() {
        let body = many_json_spans(5000, 2000);
        let mut delivered = 0;
        for broken in [&body[..body.len() - 3], &body.replacen(r#""name":"s4999""#, r#""name":49"#, 1)[..]] {
            let r = decode_in_parts(Encoding::Json, broken.as_bytes(), 2048, |p| {
                delivered += p.spans.len();
                Ok::<(), String>(())
            });
            assert!(matches!(r, Err(PartsError::Decode(DecodeError::Json(_)))), "{r:?}");
        }
        assert_eq!(delivered, 0, "a body that cannot be decoded delivers no part");
    }

    #[test]
    fn the_receivers_error_stops_the_parts() {
        let body = many_json_spans(5000, 2000);
        let mut calls = 0;
        let r = decode_in_parts(Encoding::Json, body.as_bytes(), 1000, |_| {
            calls += 1;
            if calls == 2 { Err("queue full") } else { Ok(()) }
        });
        assert!(matches!(r, Err(PartsError::Deliver("queue full"))), "{r:?}");
        assert_eq!(calls, 2, "no part after the failing one");
    }

    #[test]
    fn spans_before_their_resource_or_scope_wait_for_it() {
        // Keys in any order, as JSON allows: the spans still get their resource and scope.
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000001","name":"a"}],"scope":{"name":"late-scope"}}],
            "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"late"}}]}},
            {"resource":{"attributes":[]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000002","name":"b"}]}]}]}"#;
        let req = decode_json(body.as_bytes()).expect("decodes");
        assert_eq!(req.resource_spans.len(), 2);
        let first = &req.resource_spans[0];
        assert_eq!(first.resource.as_ref().map(|r| r.attributes.len()), Some(1));
        assert_eq!(first.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("late-scope"));
        assert_eq!(first.scope_spans[0].spans[0].name, "a");
        assert_eq!(req.resource_spans[1].scope_spans[0].scope, None);
        let spans = crate::request_to_spans(req).spans;
        assert_eq!(spans[0].origin.scope_name, "late-scope");
        assert_eq!(spans[0].origin.resource[0].0, "service.name");
        assert!(spans[1].origin.resource.is_empty());
        // A field that holds spans, or their resource or scope, may appear once.
        for dup in [
            r#"{"resourceSpans":[],"resourceSpans":[]}"#,
            r#"{"resourceSpans":[{"resource":{},"resource":{}}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[],"scopeSpans":[]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"scope":{},"scope":{}}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[],"spans":[]}]}]}"#,
        ] {
            assert!(decode_err(dup).contains("duplicate field"), "{dup}");
        }
    }

    #[test]
    fn a_large_protobuf_body_arrives_in_parts_and_a_broken_one_delivers_nothing() {
        use prost::Message as _;
        let req = decode_json(many_json_spans(5000, 2000).as_bytes()).expect("decodes");
        let body = req.encode_to_vec();
        assert!(body.len() > DECODE_WHOLE_MAX, "{}", body.len());
        let whole = crate::request_to_spans(req.clone()).spans;
        let mut parts = Vec::new();
        decode_in_parts(Encoding::Protobuf, &body, 2048, |p| {
            parts.push(p);
            Ok::<(), String>(())
        })
        .expect("decodes");
        assert_eq!(parts.iter().map(|p| p.spans.len()).collect::<Vec<_>>(), vec![2048, 2048, 904]);
        assert_eq!(whole, parts.into_iter().flat_map(|p| p.spans).collect::<Vec<_>>());

        let mut delivered = 0;
        let r = decode_in_parts(Encoding::Protobuf, &body[..body.len() - 10], 2048, |p| {
            delivered += p.spans.len();
            Ok::<(), String>(())
        });
        assert!(matches!(r, Err(PartsError::Decode(DecodeError::Protobuf(_)))), "{r:?}");
        assert_eq!(delivered, 0, "a body that cannot be decoded delivers no part");

        // The resource written after the spans (protobuf allows any field order, and merges a
        // field that appears twice): every span still gets the resource a whole decoding gives.
        let mut late = Vec::new();
        let rs = &req.resource_spans[0];
        for ss in &rs.scope_spans {
            prost::encoding::message::encode(2, ss, &mut late);
        }
        if let Some(r) = &rs.resource {
            prost::encoding::message::encode(1, r, &mut late);
        }
        let mut body = Vec::new();
        prost::encoding::bytes::encode(1, &late, &mut body);
        assert!(body.len() > DECODE_WHOLE_MAX);
        let mut spans = Vec::new();
        decode_in_parts(Encoding::Protobuf, &body, 2048, |p| {
            spans.extend(p.spans);
            Ok::<(), String>(())
        })
        .expect("decodes");
        assert_eq!(spans, whole);
    }
}

//! Decoding of OTLP trace export requests from protobuf and from OTLP/JSON.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

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

/// Decode an OTLP/JSON `ExportTraceServiceRequest`.
///
/// Beyond the specification's integers, enum names (`"SPAN_KIND_SERVER"`, `"STATUS_CODE_ERROR"`)
/// are accepted, as some exporters write them; hex ids may be in either case.
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(DecodeError::Json("top level must be an object".into()));
    }
    normalize(&mut v);
    serde_json::from_value(v).map_err(|e| DecodeError::Json(e.to_string()))
}

fn normalize(v: &mut Value) {
    let Some(rs) = v.get_mut("resourceSpans").and_then(Value::as_array_mut) else { return };
    for r in rs {
        let Some(ss) = r.get_mut("scopeSpans").and_then(Value::as_array_mut) else { continue };
        for s in ss {
            let Some(spans) = s.get_mut("spans").and_then(Value::as_array_mut) else { continue };
            for span in spans {
                let Some(obj) = span.as_object_mut() else { continue };
                for id in ["traceId", "spanId", "parentSpanId"] {
                    lowercase(obj.get_mut(id));
                }
                if let Some(kind) = obj.get_mut("kind") {
                    enum_name(kind, "SPAN_KIND_", &["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]);
                }
                if let Some(code) = obj.get_mut("status").and_then(|s| s.get_mut("code")) {
                    enum_name(code, "STATUS_CODE_", &["UNSET", "OK", "ERROR"]);
                }
                if let Some(links) = obj.get_mut("links").and_then(Value::as_array_mut) {
                    for l in links {
                        if let Some(lo) = l.as_object_mut() {
                            lowercase(lo.get_mut("traceId"));
                            lowercase(lo.get_mut("spanId"));
                        }
                    }
                }
            }
        }
    }
}

fn lowercase(v: Option<&mut Value>) {
    if let Some(Value::String(s)) = v
        && s.bytes().any(|b| b.is_ascii_uppercase())
    {
        *s = s.to_ascii_lowercase();
    }
}

fn enum_name(v: &mut Value, prefix: &str, names: &[&str]) {
    if let Value::String(s) = v {
        let bare = s.strip_prefix(prefix).unwrap_or(s);
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(bare)) {
            *v = Value::from(i as i64);
        } else if let Ok(i) = s.parse::<i64>() {
            *v = Value::from(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(decode_json(b"{not json").is_err());
        assert!(decode_json(b"[]").is_err());
        assert!(decode_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#).is_err());
        assert!(decode_protobuf(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_protobuf(b"").expect("empty is a valid empty request").resource_spans.is_empty());
    }
}

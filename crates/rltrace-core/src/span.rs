//! Spans as rltrace receives them, independent of the wire encoding.

use std::sync::Arc;

use serde_json::{Map, Value};

/// One attribute value, as OpenTelemetry's `AnyValue`.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// No value (an empty `AnyValue`).
    Empty,
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An array of values.
    Array(Vec<AttrValue>),
    /// A list of key/value pairs.
    Map(Vec<(String, AttrValue)>),
}

impl AttrValue {
    /// Plain JSON for the value: strings, numbers, booleans, arrays and objects; bytes as lowercase
    /// hex; a non-finite double as its name in a string.
    pub fn to_json(&self) -> Value {
        match self {
            AttrValue::Empty => Value::Null,
            AttrValue::Str(s) => Value::String(s.clone()),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Int(i) => Value::from(*i),
            AttrValue::Double(d) => serde_json::Number::from_f64(*d)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(d.to_string())),
            AttrValue::Bytes(b) => Value::String(crate::ids::to_hex(b)),
            AttrValue::Array(a) => Value::Array(a.iter().map(AttrValue::to_json).collect()),
            AttrValue::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The string, when the value is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, when the value is a double, an integer or a string holding a number.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            AttrValue::Int(i) => Some(*i as f64),
            AttrValue::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
    }

    /// The integer, when the value is an integer or a string holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            AttrValue::Str(s) => s.trim().parse::<i64>().ok(),
            AttrValue::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
            _ => None,
        }
    }

    /// The boolean, when the value is a boolean or the string `true`/`false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            AttrValue::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            AttrValue::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            AttrValue::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    /// The largest string or byte payload held by this value, in bytes (for the size limit).
    pub fn largest_payload(&self) -> usize {
        match self {
            AttrValue::Str(s) => s.len(),
            AttrValue::Bytes(b) => b.len(),
            AttrValue::Array(a) => a.iter().map(AttrValue::payload_len).sum(),
            AttrValue::Map(m) => m.iter().map(|(k, v)| k.len() + v.payload_len()).sum(),
            _ => 0,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            AttrValue::Array(_) | AttrValue::Map(_) => self.largest_payload(),
            AttrValue::Str(s) => s.len(),
            AttrValue::Bytes(b) => b.len(),
            _ => 8,
        }
    }
}

/// Key/value attributes in wire order.
pub type Attributes = Vec<(String, AttrValue)>;

/// Attributes as a JSON object (a later duplicate key wins).
pub fn attributes_to_json(attrs: &[(String, AttrValue)]) -> Map<String, Value> {
    attrs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

/// Attributes as JSON object text, written straight from the attributes (no copy of their values).
/// A key given twice keeps its last value, as in [`attributes_to_json`].
pub fn attributes_json_string(attrs: &[(String, AttrValue)]) -> String {
    let unique = if attrs.len() <= 16 {
        attrs.iter().enumerate().all(|(i, (k, _))| attrs[..i].iter().all(|(k2, _)| k2 != k))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(attrs.len());
        attrs.iter().all(|(k, _)| seen.insert(k.as_str()))
    };
    if !unique {
        return Value::Object(attributes_to_json(attrs)).to_string();
    }
    let mut out = Vec::with_capacity(attrs.iter().map(|(k, v)| k.len() + v.largest_payload() + 8).sum::<usize>() + 2);
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &AttrsJson(attrs));
    String::from_utf8(out).unwrap_or_default()
}

struct AttrsJson<'a>(&'a [(String, AttrValue)]);

impl serde::Serialize for AttrsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl serde::Serialize for AttrValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            AttrValue::Empty => s.serialize_unit(),
            AttrValue::Str(v) => s.serialize_str(v),
            AttrValue::Bool(b) => s.serialize_bool(*b),
            AttrValue::Int(i) => s.serialize_i64(*i),
            AttrValue::Double(d) if d.is_finite() => s.serialize_f64(*d),
            AttrValue::Double(d) => s.serialize_str(&d.to_string()),
            AttrValue::Bytes(b) => s.serialize_str(&crate::ids::to_hex(b)),
            AttrValue::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            AttrValue::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Look up an attribute by key (the last occurrence wins, as in a map).
pub fn find<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A span event.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// Event name.
    pub name: String,
    /// Time in nanoseconds since the epoch.
    pub time_unix_nano: u64,
    /// Event attributes.
    pub attributes: Attributes,
}

/// Where a span came from: its resource and instrumentation scope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    /// Resource attributes (`service.name`, ...).
    pub resource: Attributes,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// Instrumentation scope version.
    pub scope_version: String,
}

/// One span as received.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte span id.
    pub span_id: [u8; 8],
    /// Parent span id, if any.
    pub parent_span_id: Option<[u8; 8]>,
    /// Span name.
    pub name: String,
    /// Span kind as the OTLP enum value (0 unspecified ... 5 consumer).
    pub kind: i32,
    /// Start time in nanoseconds since the epoch.
    pub start_time_unix_nano: u64,
    /// End time in nanoseconds since the epoch.
    pub end_time_unix_nano: u64,
    /// Status code as the OTLP enum value (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// Span attributes.
    pub attributes: Attributes,
    /// Span events.
    pub events: Vec<SpanEvent>,
    /// Resource and scope, shared by the spans of one resource/scope group.
    pub origin: Arc<Origin>,
}

impl SpanRecord {
    /// Lowercase hex trace id.
    pub fn trace_id_hex(&self) -> String {
        crate::ids::to_hex(&self.trace_id)
    }

    /// Lowercase hex span id.
    pub fn span_id_hex(&self) -> String {
        crate::ids::to_hex(&self.span_id)
    }

    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        find(&self.attributes, key)
    }

    /// The span's events as JSON: `[{name, time, attributes}]`.
    pub fn events_json(&self) -> Value {
        Value::Array(
            self.events
                .iter()
                .map(|e| {
                    let mut m = Map::new();
                    m.insert("name".into(), Value::String(e.name.clone()));
                    m.insert(
                        "time".into(),
                        Value::String(crate::time::format_micros(crate::time::nanos_to_micros(
                            e.time_unix_nano,
                        ))),
                    );
                    m.insert("attributes".into(), Value::Object(attributes_to_json(&e.attributes)));
                    Value::Object(m)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_json_matches_the_value_form() {
        let attrs: Attributes = vec![
            ("s".into(), AttrValue::Str("a \"quoted\" é".into())),
            ("i".into(), AttrValue::Int(-3)),
            ("d".into(), AttrValue::Double(0.25)),
            ("nan".into(), AttrValue::Double(f64::NAN)),
            ("b".into(), AttrValue::Bytes(vec![0xab, 0x01])),
            ("arr".into(), AttrValue::Array(vec![AttrValue::Bool(true), AttrValue::Empty])),
            ("map".into(), AttrValue::Map(vec![("k".into(), AttrValue::Int(1))])),
        ];
        let direct: Value = serde_json::from_str(&attributes_json_string(&attrs)).expect("json");
        assert_eq!(direct, Value::Object(attributes_to_json(&attrs)));
        let dup: Attributes = vec![("k".into(), AttrValue::Int(1)), ("k".into(), AttrValue::Int(2))];
        assert_eq!(attributes_json_string(&dup), r#"{"k":2}"#);
    }
}

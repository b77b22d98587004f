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
    /// What OTLP carries beside the fields rltrace reads (links, trace state, flags): kept so a
    /// forwarded span is the span received.
    pub extras: SpanExtras,
}

/// A link from a span to another span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanLink {
    /// Trace id of the linked span (16 bytes; as received, even when not valid).
    pub trace_id: Vec<u8>,
    /// Span id of the linked span (8 bytes; as received).
    pub span_id: Vec<u8>,
    /// W3C trace state of the link.
    pub trace_state: String,
    /// Link attributes.
    pub attributes: Attributes,
    /// W3C trace flags and OTLP's flag bits.
    pub flags: u32,
}

/// The parts of an OTLP span rltrace keeps only to hand the span on as received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanExtras {
    /// Links to other spans.
    pub links: Vec<SpanLink>,
    /// W3C trace state.
    pub trace_state: String,
    /// W3C trace flags and OTLP's flag bits.
    pub flags: u32,
    /// Event times in nanoseconds, when one of them is not a whole microsecond (the events' own
    /// JSON keeps microseconds).
    pub event_times: Vec<u64>,
    /// What the sender dropped of the span, as OTLP counts it: attributes, events, links.
    pub dropped: [u32; 3],
}

/// The stored form of [`SpanExtras`] and the scope version, JSON with empty parts left out.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredExtras {
    /// Links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<StoredLink>,
    /// Trace state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_state: String,
    /// Flags.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
    /// Instrumentation scope version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope_version: String,
    /// Event times in nanoseconds (see [`SpanExtras::event_times`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_times: Vec<u64>,
    /// Dropped counts (see [`SpanExtras::dropped`]).
    #[serde(default, skip_serializing_if = "is_zeros")]
    pub dropped: [u32; 3],
    /// Keys of the span's attributes whose values are bytes (their JSON holds them as hex text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<String>,
}

fn is_zeros(v: &[u32; 3]) -> bool {
    *v == [0; 3]
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A link as stored: ids in hex, attributes in order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredLink {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Trace state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_state: String,
    /// Attributes.
    #[serde(default, with = "ordered_attrs")]
    pub attributes: Attributes,
    /// Flags.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
}

mod ordered_attrs {
    use super::{AttrValue, Attributes, AttrsJson};

    pub fn serialize<S: serde::Serializer>(a: &Attributes, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&AttrsJson(a), s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Attributes, D::Error> {
        let OrderedMap(m) = serde::Deserialize::deserialize(d)?;
        Ok(m)
    }

    pub(super) struct OrderedMap(pub Vec<(String, AttrValue)>);
}

impl<'de> serde::Deserialize<'de> for ordered_attrs::OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ordered_attrs::OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of attributes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0).min(1024));
                while let Some((k, v)) = m.next_entry::<String, AttrValue>()? {
                    out.push((k, v));
                }
                Ok(ordered_attrs::OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads the JSON form back: null is empty, integers stay integers and other numbers doubles;
/// bytes come back as their hex strings (the JSON form does not tell them from strings).
impl<'de> serde::Deserialize<'de> for AttrValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AttrValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<AttrValue, E> {
                Ok(AttrValue::Empty)
            }
            fn visit_none<E>(self) -> Result<AttrValue, E> {
                Ok(AttrValue::Empty)
            }
            fn visit_bool<E>(self, b: bool) -> Result<AttrValue, E> {
                Ok(AttrValue::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<AttrValue, E> {
                Ok(AttrValue::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<AttrValue, E> {
                Ok(i64::try_from(u).map(AttrValue::Int).unwrap_or(AttrValue::Double(u as f64)))
            }
            fn visit_f64<E>(self, f: f64) -> Result<AttrValue, E> {
                Ok(AttrValue::Double(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<AttrValue, E> {
                Ok(AttrValue::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<AttrValue, E> {
                Ok(AttrValue::Str(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<AttrValue, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
                while let Some(v) = a.next_element::<AttrValue>()? {
                    out.push(v);
                }
                Ok(AttrValue::Array(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<AttrValue, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0).min(1024));
                while let Some((k, v)) = m.next_entry::<String, AttrValue>()? {
                    out.push((k, v));
                }
                Ok(AttrValue::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Attributes read back from their stored JSON object text, in the order they were written.
pub fn attributes_from_json(text: &str) -> Result<Attributes, String> {
    serde_json::from_str::<ordered_attrs::OrderedMap>(text).map(|m| m.0).map_err(|e| format!("stored attributes: {e}"))
}

/// Events read back from their stored JSON array text (`name`, `time`, `attributes`); `times`
/// are the exact nanoseconds when they were kept, else the stored microseconds are used.
pub fn events_from_json(text: &str, times: &[u64]) -> Result<Vec<SpanEvent>, String> {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        name: String,
        #[serde(default)]
        time: String,
        #[serde(default, with = "ordered_attrs")]
        attributes: Attributes,
    }
    let stored: Vec<Stored> = serde_json::from_str(text).map_err(|e| format!("stored events: {e}"))?;
    Ok(stored
        .into_iter()
        .enumerate()
        .map(|(i, e)| SpanEvent {
            time_unix_nano: times.get(i).copied().unwrap_or_else(|| {
                crate::time::parse_rfc3339_micros(&e.time).map_or(0, |us| u64::try_from(us).unwrap_or(0).saturating_mul(1000))
            }),
            name: e.name,
            attributes: e.attributes,
        })
        .collect())
}

impl SpanExtras {
    /// The stored JSON text of these extras, `scope_version` and which of the span's stored
    /// `attributes` are bytes; `None` when all are empty.
    pub fn to_stored_json(&self, scope_version: &str, events: &[SpanEvent], attributes: &[(String, AttrValue)]) -> Option<String> {
        let exact_times = events.iter().any(|e| e.time_unix_nano % 1000 != 0);
        let has_bytes = attributes.iter().any(|(_, v)| matches!(v, AttrValue::Bytes(_)));
        // Most spans have none of it: nothing to build (this runs for every span stored).
        if self.links.is_empty() && self.trace_state.is_empty() && self.flags == 0 && scope_version.is_empty() && !exact_times && self.dropped == [0; 3] && !has_bytes {
            return None;
        }
        let event_times = if exact_times {
            events.iter().map(|e| e.time_unix_nano).collect()
        } else {
            Vec::new()
        };
        let stored = StoredExtras {
            links: self
                .links
                .iter()
                .map(|l| StoredLink {
                    trace_id: crate::ids::to_hex(&l.trace_id),
                    span_id: crate::ids::to_hex(&l.span_id),
                    trace_state: l.trace_state.clone(),
                    attributes: l.attributes.clone(),
                    flags: l.flags,
                })
                .collect(),
            trace_state: self.trace_state.clone(),
            flags: self.flags,
            scope_version: scope_version.to_string(),
            event_times,
            dropped: self.dropped,
            bytes: attributes.iter().filter(|(_, v)| matches!(v, AttrValue::Bytes(_))).map(|(k, _)| k.clone()).collect(),
        };
        (stored != StoredExtras::default()).then(|| serde_json::to_string(&stored).unwrap_or_default())
    }

    /// Extras, the scope version and the keys of the attributes that are bytes, from their stored
    /// JSON text.
    pub fn from_stored_json(text: &str) -> Result<(SpanExtras, String, Vec<String>), String> {
        let s: StoredExtras = serde_json::from_str(text).map_err(|e| format!("stored extras: {e}"))?;
        let links = s
            .links
            .into_iter()
            .map(|l| {
                Ok(SpanLink {
                    trace_id: crate::ids::from_hex_vec(&l.trace_id).ok_or("stored link trace id")?,
                    span_id: crate::ids::from_hex_vec(&l.span_id).ok_or("stored link span id")?,
                    trace_state: l.trace_state,
                    attributes: l.attributes,
                    flags: l.flags,
                })
            })
            .collect::<Result<Vec<_>, &str>>()?;
        Ok((SpanExtras { links, trace_state: s.trace_state, flags: s.flags, event_times: s.event_times, dropped: s.dropped }, s.scope_version, s.bytes))
    }
}

/// Turn the values of `keys` (attributes that were bytes when stored, as hex text) back into
/// bytes; a value that is not hex text is left as it is.
pub fn restore_bytes(attributes: &mut [(String, AttrValue)], keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    for (k, v) in attributes.iter_mut() {
        if let AttrValue::Str(text) = v
            && keys.iter().any(|b| b == k)
            && let Some(bytes) = crate::ids::from_hex_vec(text)
        {
            *v = AttrValue::Bytes(bytes);
        }
    }
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

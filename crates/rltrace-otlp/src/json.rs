//! OTLP/JSON decoded straight into the protobuf types, with no `serde_json::Value` tree in between.
//!
//! A whole value tree costs many times the size of the body (a map node per object, a `Value` per
//! scalar, every key copied); these visitors read the body once and build the
//! `ExportTraceServiceRequest` directly, so decoding costs about the size of what is kept.
//!
//! Readings, as the OTLP/JSON encoding and the protobuf JSON mapping say, and a little more:
//! - keys are the lowerCamelCase field names; unknown keys are ignored, whatever their value;
//! - `null` stands for the field's default;
//! - trace and span ids are hex in either case (reported lowercase, as bytes);
//! - 64-bit integers (`intValue`, times) may be JSON numbers or strings holding one;
//! - `kind` and `status.code` may be integers or enum names, with or without their prefix, in any
//!   case (`"SPAN_KIND_SERVER"`, `"server"`, `"STATUS_CODE_ERROR"`), or numeric strings;
//! - `doubleValue` may be a number, a numeric string, `"NaN"`, `"Infinity"` or `"-Infinity"`;
//! - `bytesValue` is base64, standard or URL-safe, padded or not;
//! - array and key/value list values nest at most [`MAX_VALUE_DEPTH`] levels (the body is rejected
//!   beyond), so no recursion here or later is unbounded.

use std::fmt;

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::sink::{Rebuild, Sink, feed_scopes};

/// Deepest nesting of `arrayValue` / `kvlistValue` inside one attribute value: an attribute whose
/// value is a list of scalars has depth 1, a list of lists depth 2. Deeper values are an error.
pub const MAX_VALUE_DEPTH: usize = 16;

/// Decode an OTLP/JSON body (the whole body must be one object, trailing whitespace allowed) into
/// `sink`, a span at a time. Spans reach the sink as they are read when their resource and scope
/// come before them in the body (the order of the protobuf fields, which exporters follow);
/// spans placed before their resource or scope are held until it is read.
pub(crate) fn decode_into(body: &[u8], sink: &mut dyn Sink) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(RequestV(sink))?;
    de.end()
}

/// The message of the error that ends decoding when the sink stops it.
pub(crate) const STOPPED: &str = "decoding stopped by the receiver of the spans";

// ----- field names -----

/// A field-name enum read without allocating (borrowed or scratch `&str`); unknown names map to
/// `Unknown`.
macro_rules! fields {
    ($name:ident { $($variant:ident = $json:literal),* $(,)? }) => {
        #[derive(Clone, Copy)]
        enum $name { $($variant,)* Unknown }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        Ok(match s { $($json => $name::$variant,)* _ => $name::Unknown })
                    }
                }
                d.deserialize_identifier(V)
            }
        }
    };
}

fields!(RequestField { ResourceSpans = "resourceSpans" });
fields!(ResourceSpansField { Resource = "resource", ScopeSpans = "scopeSpans", SchemaUrl = "schemaUrl" });
fields!(ResourceField { Attributes = "attributes", DroppedAttributesCount = "droppedAttributesCount" });
fields!(ScopeSpansField { Scope = "scope", Spans = "spans", SchemaUrl = "schemaUrl" });
fields!(ScopeField { Name = "name", Version = "version", Attributes = "attributes", DroppedAttributesCount = "droppedAttributesCount" });
fields!(SpanField {
    TraceId = "traceId",
    SpanId = "spanId",
    TraceState = "traceState",
    ParentSpanId = "parentSpanId",
    Flags = "flags",
    Name = "name",
    Kind = "kind",
    StartTimeUnixNano = "startTimeUnixNano",
    EndTimeUnixNano = "endTimeUnixNano",
    Attributes = "attributes",
    DroppedAttributesCount = "droppedAttributesCount",
    Events = "events",
    DroppedEventsCount = "droppedEventsCount",
    Links = "links",
    DroppedLinksCount = "droppedLinksCount",
    Status = "status",
});
fields!(EventField { TimeUnixNano = "timeUnixNano", Name = "name", Attributes = "attributes", DroppedAttributesCount = "droppedAttributesCount" });
fields!(LinkField {
    TraceId = "traceId",
    SpanId = "spanId",
    TraceState = "traceState",
    Attributes = "attributes",
    DroppedAttributesCount = "droppedAttributesCount",
    Flags = "flags",
});
fields!(StatusField { Message = "message", Code = "code" });
fields!(KeyValueField { Key = "key", Value = "value" });
fields!(AnyValueField {
    StringValue = "stringValue",
    BoolValue = "boolValue",
    IntValue = "intValue",
    DoubleValue = "doubleValue",
    ArrayValue = "arrayValue",
    KvlistValue = "kvlistValue",
    BytesValue = "bytesValue",
});
fields!(ValuesField { Values = "values" });

// ----- generic helpers -----

/// A value that may be `null` (the field's default).
struct NullOr<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for NullOr<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<S>(S);
        impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for V<S> {
            type Value = Option<S::Value>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                self.0.deserialize(d).map(Some)
            }
        }
        d.deserialize_option(V(self.0))
    }
}

/// Read the next map value with `seed`, `null` giving the default.
fn next<'de, A: MapAccess<'de>, S>(map: &mut A, seed: S) -> Result<S::Value, A::Error>
where
    S: DeserializeSeed<'de>,
    S::Value: Default,
{
    Ok(map.next_value_seed(NullOr(seed))?.unwrap_or_default())
}

/// A JSON array of elements each read with a copy of `seed`.
#[derive(Clone, Copy)]
struct ListOf<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for ListOf<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<S>(S);
        impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for V<S> {
            type Value = Vec<S::Value>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element_seed(self.0)? {
                    out.push(x);
                }
                // Growth by doubling leaves up to half a list unused (attribute lists of ten
                // key/values have room for sixteen): give it back, about 15 % of a decoded body.
                out.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_seq(V(self.0))
    }
}

/// A plain `Deserialize` type used as a seed.
struct Plain<T>(std::marker::PhantomData<T>);

impl<T> Clone for Plain<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Plain<T> {}

fn plain<T>() -> Plain<T> {
    Plain(std::marker::PhantomData)
}

impl<'de, T: serde::Deserialize<'de>> DeserializeSeed<'de> for Plain<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
}

/// Skip the value of an unknown key, whatever it is.
fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>()?;
    Ok(())
}

// ----- scalars -----

/// Hex bytes (trace and span ids), either case; an empty string is no id.
#[derive(Clone, Copy)]
struct Hex;

impl<'de> DeserializeSeed<'de> for Hex {
    type Value = Vec<u8>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex-encoded id")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
                decode_hex(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Decode hex digits of either case; an optional `0x` prefix is tolerated.
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s).as_bytes();
    if digits.len() % 2 != 0 {
        return Err(format!("hex id {s:?} has an odd number of digits"));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("hex id {s:?} has a character that is not a hex digit")),
        }
    };
    digits.chunks_exact(2).map(|p| Ok((nibble(p[0])? << 4) | nibble(p[1])?)).collect()
}

/// An integer written as a JSON number or as a string holding one (`u64`, `i64`, `u32`).
#[derive(Clone, Copy)]
struct Int<T>(std::marker::PhantomData<T>);

fn int<T>() -> Int<T> {
    Int(std::marker::PhantomData)
}

impl<'de, T> DeserializeSeed<'de> for Int<T>
where
    T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
{
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T> Visitor<'de> for V<T>
        where
            T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
        {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer ({}), as a number or a string", std::any::type_name::<T>())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
                T::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range for {}", std::any::type_name::<T>())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
                T::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range for {}", std::any::type_name::<T>())))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
                s.trim().parse::<T>().map_err(|_| E::custom(format!("{s:?} is not an integer ({})", std::any::type_name::<T>())))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A double: a number, a numeric string, `"NaN"`, `"Infinity"` or `"-Infinity"`.
#[derive(Clone, Copy)]
struct Double;

impl<'de> DeserializeSeed<'de> for Double {
    type Value = f64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, or a string holding one, NaN, Infinity or -Infinity")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<f64, E> {
                match s {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    _ => s.trim().parse::<f64>().map_err(|_| E::custom(format!("{s:?} is not a number"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An enum as an integer, a numeric string, or a name (with or without `prefix`, any case).
#[derive(Clone, Copy)]
struct EnumValue {
    prefix: &'static str,
    names: &'static [&'static str],
}

const SPAN_KIND: EnumValue = EnumValue { prefix: "SPAN_KIND_", names: &["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"] };
const STATUS_CODE: EnumValue = EnumValue { prefix: "STATUS_CODE_", names: &["UNSET", "OK", "ERROR"] };

impl<'de> DeserializeSeed<'de> for EnumValue {
    type Value = i32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnumValue {
    type Value = i32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer or one of the names {}{}", self.prefix, self.names.join(" | "))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::custom(format!("enum value {v} out of range")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
        i32::try_from(v).map_err(|_| E::custom(format!("enum value {v} out of range")))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<i32, E> {
        let bare = match s.get(..self.prefix.len()) {
            Some(head) if head.eq_ignore_ascii_case(self.prefix) => &s[self.prefix.len()..],
            _ => s,
        };
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(bare)) {
            return Ok(i as i32);
        }
        s.trim().parse::<i32>().map_err(|_| E::custom(format!("unknown enum name {s:?}; expected an integer or {}{}", self.prefix, self.names.join(" | "))))
    }
}

/// Base64 bytes, standard or URL-safe alphabet, padded or not.
#[derive(Clone, Copy)]
struct Base64;

impl<'de> DeserializeSeed<'de> for Base64 {
    type Value = Vec<u8>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
                use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
                const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
                const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
                const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
                let engine = if s.contains(['-', '_']) { URL_SAFE } else { STANDARD };
                engine.decode(s).map_err(|e| E::custom(format!("bytesValue is not base64: {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

// ----- messages -----

struct RequestV<'s>(&'s mut dyn Sink);

impl<'de> Visitor<'de> for RequestV<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OTLP/JSON ExportTraceServiceRequest object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(k) = map.next_key::<RequestField>()? {
            match k {
                RequestField::ResourceSpans => {
                    once(&mut seen, "resourceSpans")?;
                    map.next_value_seed(NullOr(Each(&mut *self.0, Element::ResourceSpans)))?;
                }
                RequestField::Unknown => skip(&mut map)?,
            }
        }
        Ok(())
    }
}

/// A field that may appear once: a second copy is an error (as in the protobuf JSON mapping),
/// since the spans read after the first have already been handed on.
fn once<E: de::Error>(seen: &mut bool, field: &str) -> Result<(), E> {
    if std::mem::replace(seen, true) {
        return Err(E::custom(format!("duplicate field `{field}`")));
    }
    Ok(())
}

/// The elements of a JSON array handed to the sink as each is read.
struct Each<'s>(&'s mut dyn Sink, Element);

/// What an array of [`Each`] holds.
#[derive(Clone, Copy)]
enum Element {
    ResourceSpans,
    ScopeSpans,
    Span,
}

impl<'de> DeserializeSeed<'de> for Each<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Each<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.0;
        match self.1 {
            Element::ResourceSpans => while seq.next_element_seed(Message(ResourceSpansV(&mut *sink)))?.is_some() {},
            Element::ScopeSpans => while seq.next_element_seed(Message(ScopeSpansV(&mut *sink)))?.is_some() {},
            Element::Span => {
                while let Some(span) = seq.next_element_seed(Message(SpanV))? {
                    if !sink.span(span) {
                        return Err(de::Error::custom(STOPPED));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A JSON object read with the visitor `V`.
#[derive(Clone, Copy)]
struct Message<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Message<V> {
    type Value = V::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_map(self.0)
    }
}

/// A `ResourceSpans`: its resource goes to the sink first, then its scopes; scopes placed before
/// the resource are held (rebuilt) until the object ends.
struct ResourceSpansV<'s>(&'s mut dyn Sink);

impl<'de> Visitor<'de> for ResourceSpansV<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ResourceSpans object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.0;
        let (mut saw_resource, mut saw_scopes, mut started) = (false, false, false);
        let mut held = None;
        let mut waiting: Option<Rebuild> = None;
        let mut schema_url = String::new();
        while let Some(k) = map.next_key::<ResourceSpansField>()? {
            match k {
                ResourceSpansField::Resource => {
                    once(&mut saw_resource, "resource")?;
                    let resource = map.next_value_seed(NullOr(Message(ResourceV)))?;
                    if saw_scopes {
                        held = resource;
                    } else {
                        sink.resource(resource);
                        started = true;
                    }
                }
                ResourceSpansField::ScopeSpans => {
                    once(&mut saw_scopes, "scopeSpans")?;
                    if started {
                        map.next_value_seed(NullOr(Each(&mut *sink, Element::ScopeSpans)))?;
                    } else {
                        let mut rebuild = Rebuild::default();
                        rebuild.resource(None);
                        map.next_value_seed(NullOr(Each(&mut rebuild, Element::ScopeSpans)))?;
                        waiting = Some(rebuild);
                    }
                }
                ResourceSpansField::SchemaUrl => schema_url = next(&mut map, plain::<String>())?,
                ResourceSpansField::Unknown => skip(&mut map)?,
            }
        }
        if !started {
            sink.resource(held);
        }
        let scopes = waiting.map(|w| w.request.resource_spans.into_iter().flat_map(|rs| rs.scope_spans).collect()).unwrap_or_default();
        if !feed_scopes(scopes, sink) {
            return Err(de::Error::custom(STOPPED));
        }
        sink.end_resource(schema_url);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct ResourceV;

impl<'de> Visitor<'de> for ResourceV {
    type Value = Resource;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Resource object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut r = Resource::default();
        while let Some(k) = map.next_key::<ResourceField>()? {
            match k {
                ResourceField::Attributes => r.attributes = next(&mut map, ATTRIBUTES)?,
                ResourceField::DroppedAttributesCount => r.dropped_attributes_count = next(&mut map, int::<u32>())?,
                ResourceField::Unknown => skip(&mut map)?,
            }
        }
        Ok(r)
    }
}

/// A `ScopeSpans`: its scope goes to the sink first, then each span as it is read; spans placed
/// before the scope are held until the object ends.
struct ScopeSpansV<'s>(&'s mut dyn Sink);

impl<'de> Visitor<'de> for ScopeSpansV<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ScopeSpans object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.0;
        let (mut saw_scope, mut saw_spans, mut started) = (false, false, false);
        let mut held = None;
        let mut waiting: Vec<Span> = Vec::new();
        let mut schema_url = String::new();
        while let Some(k) = map.next_key::<ScopeSpansField>()? {
            match k {
                ScopeSpansField::Scope => {
                    once(&mut saw_scope, "scope")?;
                    let scope = map.next_value_seed(NullOr(Message(ScopeV)))?;
                    if saw_spans {
                        held = scope;
                    } else {
                        sink.scope(scope);
                        started = true;
                    }
                }
                ScopeSpansField::Spans => {
                    once(&mut saw_spans, "spans")?;
                    if started {
                        map.next_value_seed(NullOr(Each(&mut *sink, Element::Span)))?;
                    } else {
                        waiting = next(&mut map, ListOf(Message(SpanV)))?;
                    }
                }
                ScopeSpansField::SchemaUrl => schema_url = next(&mut map, plain::<String>())?,
                ScopeSpansField::Unknown => skip(&mut map)?,
            }
        }
        if !started {
            sink.scope(held);
        }
        for span in waiting {
            if !sink.span(span) {
                return Err(de::Error::custom(STOPPED));
            }
        }
        sink.end_scope(schema_url);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct ScopeV;

impl<'de> Visitor<'de> for ScopeV {
    type Value = InstrumentationScope;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an InstrumentationScope object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut s = InstrumentationScope::default();
        while let Some(k) = map.next_key::<ScopeField>()? {
            match k {
                ScopeField::Name => s.name = next(&mut map, plain::<String>())?,
                ScopeField::Version => s.version = next(&mut map, plain::<String>())?,
                ScopeField::Attributes => s.attributes = next(&mut map, ATTRIBUTES)?,
                ScopeField::DroppedAttributesCount => s.dropped_attributes_count = next(&mut map, int::<u32>())?,
                ScopeField::Unknown => skip(&mut map)?,
            }
        }
        Ok(s)
    }
}

#[derive(Clone, Copy)]
struct SpanV;

impl<'de> Visitor<'de> for SpanV {
    type Value = Span;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Span object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut s = Span::default();
        while let Some(k) = map.next_key::<SpanField>()? {
            match k {
                SpanField::TraceId => s.trace_id = next(&mut map, Hex)?,
                SpanField::SpanId => s.span_id = next(&mut map, Hex)?,
                SpanField::TraceState => s.trace_state = next(&mut map, plain::<String>())?,
                SpanField::ParentSpanId => s.parent_span_id = next(&mut map, Hex)?,
                SpanField::Flags => s.flags = next(&mut map, int::<u32>())?,
                SpanField::Name => s.name = next(&mut map, plain::<String>())?,
                SpanField::Kind => s.kind = next(&mut map, SPAN_KIND)?,
                SpanField::StartTimeUnixNano => s.start_time_unix_nano = next(&mut map, int::<u64>())?,
                SpanField::EndTimeUnixNano => s.end_time_unix_nano = next(&mut map, int::<u64>())?,
                SpanField::Attributes => s.attributes = next(&mut map, ATTRIBUTES)?,
                SpanField::DroppedAttributesCount => s.dropped_attributes_count = next(&mut map, int::<u32>())?,
                SpanField::Events => s.events = next(&mut map, ListOf(Message(EventV)))?,
                SpanField::DroppedEventsCount => s.dropped_events_count = next(&mut map, int::<u32>())?,
                SpanField::Links => s.links = next(&mut map, ListOf(Message(LinkV)))?,
                SpanField::DroppedLinksCount => s.dropped_links_count = next(&mut map, int::<u32>())?,
                SpanField::Status => s.status = map.next_value_seed(NullOr(Message(StatusV)))?,
                SpanField::Unknown => skip(&mut map)?,
            }
        }
        Ok(s)
    }
}

#[derive(Clone, Copy)]
struct EventV;

impl<'de> Visitor<'de> for EventV {
    type Value = span::Event;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a span Event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut e = span::Event::default();
        while let Some(k) = map.next_key::<EventField>()? {
            match k {
                EventField::TimeUnixNano => e.time_unix_nano = next(&mut map, int::<u64>())?,
                EventField::Name => e.name = next(&mut map, plain::<String>())?,
                EventField::Attributes => e.attributes = next(&mut map, ATTRIBUTES)?,
                EventField::DroppedAttributesCount => e.dropped_attributes_count = next(&mut map, int::<u32>())?,
                EventField::Unknown => skip(&mut map)?,
            }
        }
        Ok(e)
    }
}

#[derive(Clone, Copy)]
struct LinkV;

impl<'de> Visitor<'de> for LinkV {
    type Value = span::Link;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a span Link object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut l = span::Link::default();
        while let Some(k) = map.next_key::<LinkField>()? {
            match k {
                LinkField::TraceId => l.trace_id = next(&mut map, Hex)?,
                LinkField::SpanId => l.span_id = next(&mut map, Hex)?,
                LinkField::TraceState => l.trace_state = next(&mut map, plain::<String>())?,
                LinkField::Attributes => l.attributes = next(&mut map, ATTRIBUTES)?,
                LinkField::DroppedAttributesCount => l.dropped_attributes_count = next(&mut map, int::<u32>())?,
                LinkField::Flags => l.flags = next(&mut map, int::<u32>())?,
                LinkField::Unknown => skip(&mut map)?,
            }
        }
        Ok(l)
    }
}

#[derive(Clone, Copy)]
struct StatusV;

impl<'de> Visitor<'de> for StatusV {
    type Value = Status;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Status object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut s = Status::default();
        while let Some(k) = map.next_key::<StatusField>()? {
            match k {
                StatusField::Message => s.message = next(&mut map, plain::<String>())?,
                StatusField::Code => s.code = next(&mut map, STATUS_CODE)?,
                StatusField::Unknown => skip(&mut map)?,
            }
        }
        Ok(s)
    }
}

// ----- attributes and values (the only recursive part; `depth` bounds it) -----

/// The attribute list of a resource, scope, span, event or link.
const ATTRIBUTES: ListOf<Message<KeyValueV>> = ListOf(Message(KeyValueV { depth: 0 }));

/// A `KeyValue` whose value is at nesting `depth` (0 for an attribute).
#[derive(Clone, Copy)]
struct KeyValueV {
    depth: usize,
}

impl<'de> Visitor<'de> for KeyValueV {
    type Value = KeyValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a KeyValue object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kv = KeyValue::default();
        while let Some(k) = map.next_key::<KeyValueField>()? {
            match k {
                KeyValueField::Key => kv.key = next(&mut map, plain::<String>())?,
                KeyValueField::Value => kv.value = map.next_value_seed(NullOr(Message(AnyValueV { depth: self.depth })))?,
                KeyValueField::Unknown => skip(&mut map)?,
            }
        }
        Ok(kv)
    }
}

/// An `AnyValue` at nesting `depth`: its array or key/value list elements are at `depth + 1`.
#[derive(Clone, Copy)]
struct AnyValueV {
    depth: usize,
}

impl AnyValueV {
    fn inner<E: de::Error>(self) -> Result<usize, E> {
        let d = self.depth + 1;
        if d > MAX_VALUE_DEPTH {
            return Err(E::custom(format!("attribute value nests arrays or key/value lists deeper than {MAX_VALUE_DEPTH} levels")));
        }
        Ok(d)
    }
}

impl<'de> Visitor<'de> for AnyValueV {
    type Value = AnyValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AnyValue object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use any_value::Value as V;
        // An object with no known field is a valid empty value (unknown fields are ignored); the
        // last known field wins, a null one leaving the value as it was.
        let mut value: Option<V> = None;
        while let Some(k) = map.next_key::<AnyValueField>()? {
            let v = match k {
                AnyValueField::StringValue => map.next_value_seed(NullOr(plain::<String>()))?.map(V::StringValue),
                AnyValueField::BoolValue => map.next_value_seed(NullOr(plain::<bool>()))?.map(V::BoolValue),
                AnyValueField::IntValue => map.next_value_seed(NullOr(int::<i64>()))?.map(V::IntValue),
                AnyValueField::DoubleValue => map.next_value_seed(NullOr(Double))?.map(V::DoubleValue),
                AnyValueField::BytesValue => map.next_value_seed(NullOr(Base64))?.map(V::BytesValue),
                AnyValueField::ArrayValue => {
                    let depth = self.inner::<A::Error>()?;
                    map.next_value_seed(NullOr(Message(ArrayV { depth })))?.map(V::ArrayValue)
                }
                AnyValueField::KvlistValue => {
                    let depth = self.inner::<A::Error>()?;
                    map.next_value_seed(NullOr(Message(KvlistV { depth })))?.map(V::KvlistValue)
                }
                AnyValueField::Unknown => {
                    skip(&mut map)?;
                    None
                }
            };
            if v.is_some() {
                value = v;
            }
        }
        Ok(AnyValue { value })
    }
}

/// An `ArrayValue` whose elements are at `depth`.
#[derive(Clone, Copy)]
struct ArrayV {
    depth: usize,
}

impl<'de> Visitor<'de> for ArrayV {
    type Value = ArrayValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ArrayValue object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut a = ArrayValue::default();
        while let Some(k) = map.next_key::<ValuesField>()? {
            match k {
                ValuesField::Values => a.values = next(&mut map, ListOf(Message(AnyValueV { depth: self.depth })))?,
                ValuesField::Unknown => skip(&mut map)?,
            }
        }
        Ok(a)
    }
}

/// A `KeyValueList` whose values are at `depth`.
#[derive(Clone, Copy)]
struct KvlistV {
    depth: usize,
}

impl<'de> Visitor<'de> for KvlistV {
    type Value = KeyValueList;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a KeyValueList object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut l = KeyValueList::default();
        while let Some(k) = map.next_key::<ValuesField>()? {
            match k {
                ValuesField::Values => l.values = next(&mut map, ListOf(Message(KeyValueV { depth: self.depth })))?,
                ValuesField::Unknown => skip(&mut map)?,
            }
        }
        Ok(l)
    }
}

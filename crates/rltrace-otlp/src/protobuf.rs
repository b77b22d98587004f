//! A protobuf `ExportTraceServiceRequest` read a span at a time into a [`Sink`]: the request,
//! `ResourceSpans` and `ScopeSpans` levels are walked field by field, and each resource, scope and
//! span is decoded by prost on its own.

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::sink::Sink;

/// Walk a protobuf body into `sink`. Answers whether every resource and scope came before the
/// spans it holds (as exporters write them, in field order): only then did the sink see each span
/// with the resource and scope a whole decoding gives it, since protobuf merges a message field
/// that appears again later.
pub(crate) fn walk(mut buf: &[u8], sink: &mut dyn Sink) -> Result<bool, String> {
    let mut ordered = true;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        match tag {
            1 => ordered &= resource_spans(field(&mut buf, wire, tag)?, sink)?,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    Ok(ordered)
}

/// One `ResourceSpans`: `resource` (1), `scope_spans` (2), `schema_url` (3).
fn resource_spans(buf: &[u8], sink: &mut dyn Sink) -> Result<bool, String> {
    level::<Resource>(buf, sink, |s, r| s.resource(r), scope_spans, |s, url| s.end_resource(url))
}

/// One `ScopeSpans`: `scope` (1), `spans` (2), `schema_url` (3).
fn scope_spans(buf: &[u8], sink: &mut dyn Sink) -> Result<bool, String> {
    level::<InstrumentationScope>(buf, sink, |s, scope| s.scope(scope), span, |s, url| s.end_scope(url))
}

/// One span, decoded whole by prost and handed on.
fn span(buf: &[u8], sink: &mut dyn Sink) -> Result<bool, String> {
    let span = Span::decode(buf).map_err(|e| e.to_string())?;
    if !sink.span(span) {
        return Err(crate::json::STOPPED.to_string());
    }
    Ok(true)
}

/// A level of the request (`ResourceSpans` or `ScopeSpans`): its header message (field 1, the
/// resource or scope, merged when it appears again, as protobuf does) goes to `begin` before the
/// first of its children (field 2, each read by `child`), its schema URL (field 3) to `end`.
/// `false` when the header came again after a child.
fn level<H: Message + Default>(
    mut buf: &[u8],
    sink: &mut dyn Sink,
    begin: fn(&mut dyn Sink, Option<H>),
    child: fn(&[u8], &mut dyn Sink) -> Result<bool, String>,
    end: fn(&mut dyn Sink, String),
) -> Result<bool, String> {
    let (mut header, mut started, mut ordered, mut schema_url) = (None::<H>, false, true, String::new());
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        match tag {
            1 => {
                let msg = field(&mut buf, wire, tag)?;
                ordered &= !started;
                header.get_or_insert_with(H::default).merge(msg).map_err(|e| e.to_string())?;
            }
            2 => {
                if !started {
                    begin(sink, header.take());
                    started = true;
                }
                ordered &= child(field(&mut buf, wire, tag)?, sink)?;
            }
            3 => string(wire, &mut schema_url, &mut buf)?,
            _ => skip(wire, tag, &mut buf)?,
        }
    }
    if !started {
        begin(sink, header);
    }
    end(sink, schema_url);
    Ok(ordered)
}

/// The bytes of a length-delimited field.
fn field<'a>(buf: &mut &'a [u8], wire: WireType, tag: u32) -> Result<&'a [u8], String> {
    if wire != WireType::LengthDelimited {
        return Err(format!("field {tag} has wire type {wire:?}, expected a length-delimited message"));
    }
    let len = usize::try_from(decode_varint(buf).map_err(|e| e.to_string())?).map_err(|_| "length out of range".to_string())?;
    if len > buf.len() {
        return Err(format!("field {tag} is {len} bytes long but {} are left", buf.len()));
    }
    let (msg, rest) = buf.split_at(len);
    *buf = rest;
    Ok(msg)
}

fn string(wire: WireType, out: &mut String, buf: &mut &[u8]) -> Result<(), String> {
    prost::encoding::string::merge(wire, out, buf, DecodeContext::default()).map_err(|e| e.to_string())
}

fn skip(wire: WireType, tag: u32, buf: &mut &[u8]) -> Result<(), String> {
    skip_field(wire, tag, buf, DecodeContext::default()).map_err(|e| e.to_string())
}

//! The OTLP edge of rltrace: decodes OTLP trace export requests (protobuf or JSON, gzip or not)
//! into core [`rltrace_core::SpanRecord`]s, and encodes the OTLP responses and error statuses.
//!
//! Invariants: this is the only crate that knows protobuf types. It parses and hands spans on; it
//! never touches storage. Every input bound (inflation size) is enforced here before allocation.

mod convert;
mod decode;
mod encode;
mod gzip;
mod json;
mod protobuf;
mod response;
mod sink;

pub use convert::{ConvertedSpans, for_each_part, request_to_spans};
pub use encode::{encode_request, export_request};
pub use decode::{DECODE_WHOLE_MAX, DecodeError, MAX_VALUE_DEPTH, PartsError, decode_in_parts, decode_json, decode_protobuf};
pub use gzip::{INFLATE_STEP, InflateError, inflate_gzip, inflate_gzip_metered};
pub use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
pub use response::{Encoding, encode_response, encode_status};

/// The proto types, re-exported for clients (loadgen, tests) that build requests.
pub mod proto {
    pub use opentelemetry_proto::tonic::collector::trace::v1 as collector;
    pub use opentelemetry_proto::tonic::common::v1 as common;
    pub use opentelemetry_proto::tonic::resource::v1 as resource;
    pub use opentelemetry_proto::tonic::trace::v1 as trace;
}

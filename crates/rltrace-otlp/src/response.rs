//! OTLP responses: `ExportTraceServiceResponse` with `partial_success`, and the `google.rpc.Status`
//! body of OTLP/HTTP errors, in the encoding of the request.

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;

/// The encoding of an OTLP/HTTP exchange; the response mirrors the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`
    Protobuf,
    /// `application/json`
    Json,
}

impl Encoding {
    /// The content type of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Encode a success response; `rejected` spans and `message` go into `partial_success` when non-zero.
pub fn encode_response(encoding: Encoding, rejected: i64, message: &str) -> Vec<u8> {
    let partial = (rejected > 0 || !message.is_empty()).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: message.to_string(),
    });
    match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse { partial_success: partial }.encode_to_vec(),
        Encoding::Json => {
            let body = match partial {
                Some(p) => serde_json::json!({"partialSuccess": {"rejectedSpans": p.rejected_spans, "errorMessage": p.error_message}}),
                None => serde_json::json!({}),
            };
            body.to_string().into_bytes()
        }
    }
}

/// Encode a `google.rpc.Status` with a gRPC code number and a message.
pub fn encode_status(encoding: Encoding, grpc_code: i32, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => RpcStatus { code: grpc_code, message: message.to_string() }.encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": grpc_code, "message": message}).to_string().into_bytes(),
    }
}

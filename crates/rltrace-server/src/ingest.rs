//! OTLP ingest on both transports: OTLP/HTTP (`POST /v1/traces`, protobuf or JSON, gzip or not)
//! and OTLP/gRPC (`TraceService/Export`). Both run the same pipeline: decode, analyse each span,
//! prepare rows, queue them for the writer, and answer only after the commit.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse};
use rltrace_core::triplet::analyze;
use rltrace_otlp::{Encoding, decode_json, decode_protobuf, encode_response, encode_status, inflate_gzip, request_to_spans};
use rltrace_store::{StoreError, prepare_spans};

use crate::AppState;
use crate::metrics::{GRPC_EXPORT_ROUTE, MethodLabel};

/// Most rejection messages repeated in one `partial_success.error_message`.
const MAX_MESSAGES: usize = 10;

/// Outcome of one export request.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Spans rejected (ids, malformed `rl.*` values, size limit, triplet id clash).
    pub rejected: usize,
    /// The first rejection messages.
    pub message: String,
}

/// Why an export request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Queue full: retry later (503 / UNAVAILABLE).
    #[error("rltrace is overloaded, retry later")]
    Overloaded,
    /// The store failed; nothing of the request was stored.
    #[error("store failure: {0}")]
    Store(String),
}

/// Run the ingest pipeline on a decoded request; resolves after the spans are committed.
///
/// `permit` bounds the requests being decoded and prepared at once; it is released as soon as the
/// prepared rows are handed to the writer's bounded queue, which bounds the rest.
pub async fn ingest(state: &AppState, req: ExportTraceServiceRequest, permit: OwnedSemaphorePermit) -> Result<Accepted, IngestError> {
    let limits = state.limits.span_limits;
    let work = tokio::task::spawn_blocking(move || {
        let converted = request_to_spans(req);
        let received = converted.spans.len() + converted.rejected.len();
        let mut rejected = converted.rejected;
        let mut analyzed = Vec::with_capacity(converted.spans.len());
        for span in converted.spans {
            match analyze(span, &limits) {
                Ok(a) => analyzed.push(a),
                Err(msg) => rejected.push(msg),
            }
        }
        (received, rejected, prepare_spans(analyzed))
    });
    let (received, mut rejected, prepared) = work.await.map_err(|e| IngestError::Store(e.to_string()))?;
    state.metrics.received(received);
    if prepared.is_empty() {
        drop(permit);
        state.metrics.outcome(0, 0, rejected.len());
        return Ok(summarize(rejected));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submitted = state.store.submit_spans(prepared, move |r| {
        let _ = tx.send(r);
    });
    drop(permit);
    match submitted {
        Ok(()) => {}
        Err(StoreError::Overloaded) => {
            state.metrics.overloaded();
            return Err(IngestError::Overloaded);
        }
        Err(e) => return Err(IngestError::Store(e.to_string())),
    }
    let outcome = rx.await.map_err(|_| IngestError::Store("store writer stopped".into()))?.map_err(|e| IngestError::Store(e.to_string()))?;
    rejected.extend(outcome.rejected);
    state.metrics.outcome(outcome.stored, outcome.duplicates, rejected.len());
    Ok(summarize(rejected))
}

fn summarize(rejected: Vec<String>) -> Accepted {
    if rejected.is_empty() {
        return Accepted::default();
    }
    let mut message = rejected.iter().take(MAX_MESSAGES).cloned().collect::<Vec<_>>().join("; ");
    if rejected.len() > MAX_MESSAGES {
        message.push_str(&format!("; and {} more", rejected.len() - MAX_MESSAGES));
    }
    if !rejected.is_empty() {
        tracing::debug!(rejected = rejected.len(), first = %rejected[0], "spans rejected");
    }
    Accepted { rejected: rejected.len(), message }
}

/// Read and discard a request body (up to `max` bytes) so that an early answer leaves the
/// connection usable and the client sees the answer rather than a reset.
async fn drain(mut body: Body, max: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen > max {
                break;
            }
        }
    }
}

fn otlp_error(encoding: Encoding, status: StatusCode, grpc_code: i32, message: &str) -> Response {
    let mut resp = (status, encode_status(encoding, grpc_code, message)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

// gRPC status codes used in OTLP/HTTP error bodies.
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_INTERNAL: i32 = 13;
const GRPC_UNAVAILABLE: i32 = 14;

/// `POST /v1/traces`.
pub async fn otlp_http(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let encoding = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        _ => {
            return otlp_error(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                GRPC_INVALID_ARGUMENT,
                &format!("content type {content_type:?} is not supported; use application/x-protobuf or application/json"),
            );
        }
    };
    let limits = &state.limits;
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > limits.max_body_bytes
    {
        return otlp_error(encoding, StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, &format!("request body of {len} bytes exceeds the limit of {} bytes", limits.max_body_bytes));
    }
    let Ok(permit) = state.ingest_permits.clone().try_acquire_owned() else {
        state.metrics.overloaded();
        drain(body, limits.max_body_bytes).await;
        return otlp_error(encoding, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "rltrace is overloaded, retry later");
    };
    let bytes = match http_body_util::Limited::new(body, limits.max_body_bytes).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                return otlp_error(encoding, StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, &format!("request body exceeds the limit of {} bytes", limits.max_body_bytes));
            }
            return otlp_error(encoding, StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, &format!("cannot read request body: {e}"));
        }
    };
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity").trim().to_ascii_lowercase();
    let max_inflated = limits.max_inflated_bytes;
    let decoded = tokio::task::spawn_blocking(move || -> Result<ExportTraceServiceRequest, (StatusCode, i32, String)> {
        let raw = match content_encoding.as_str() {
            "gzip" | "x-gzip" => match inflate_gzip(&bytes, max_inflated) {
                Ok(v) => bytes::Bytes::from(v),
                Err(e @ rltrace_otlp::InflateError::TooLarge(_)) => return Err((StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, e.to_string())),
                Err(e) => return Err((StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, e.to_string())),
            },
            "identity" | "" => bytes,
            other => return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, GRPC_INVALID_ARGUMENT, format!("content encoding {other:?} is not supported; use gzip or none"))),
        };
        match encoding {
            Encoding::Protobuf => decode_protobuf(&raw),
            Encoding::Json => decode_json(&raw),
        }
        .map_err(|e| (StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, e.to_string()))
    })
    .await;
    let req = match decoded {
        Ok(Ok(r)) => r,
        Ok(Err((status, code, msg))) => return otlp_error(encoding, status, code, &msg),
        Err(e) => return otlp_error(encoding, StatusCode::INTERNAL_SERVER_ERROR, GRPC_INTERNAL, &e.to_string()),
    };
    match ingest(&state, req, permit).await {
        Ok(acc) => {
            let mut resp = (StatusCode::OK, encode_response(encoding, acc.rejected as i64, &acc.message)).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
            resp
        }
        Err(IngestError::Overloaded) => otlp_error(encoding, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "rltrace is overloaded, retry later"),
        Err(e @ IngestError::Store(_)) => otlp_error(encoding, StatusCode::INTERNAL_SERVER_ERROR, GRPC_INTERNAL, &e.to_string()),
    }
}

/// An ingest permit taken by [`Admission`] and handed to the handler with the request.
#[derive(Clone)]
struct AdmittedPermit(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

/// The gRPC interceptor that takes an ingest permit before the message is decoded, or answers
/// `UNAVAILABLE` at once.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<tokio::sync::Semaphore>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Admission {
    /// An interceptor over the collector's permits.
    pub fn new(state: &AppState) -> Admission {
        Admission { permits: Arc::clone(&state.ingest_permits), metrics: Arc::clone(&state.metrics) }
    }
}

impl tonic::service::Interceptor for Admission {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => {
                request.extensions_mut().insert(AdmittedPermit(Arc::new(std::sync::Mutex::new(Some(p)))));
                Ok(request)
            }
            Err(_) => {
                self.metrics.overloaded();
                self.metrics.observe(MethodLabel::Grpc, GRPC_EXPORT_ROUTE, 503, std::time::Duration::ZERO);
                Err(tonic::Status::unavailable("rltrace is overloaded, retry later"))
            }
        }
    }
}

/// The gRPC `TraceService`.
pub struct GrpcTraces {
    state: AppState,
}

impl GrpcTraces {
    /// A service over the collector's state.
    pub fn new(state: AppState) -> Self {
        GrpcTraces { state }
    }
}

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let started = Instant::now();
        let admitted = request.extensions().get::<AdmittedPermit>().and_then(|a| a.0.lock().ok().and_then(|mut p| p.take()));
        let Some(permit) = admitted.or_else(|| Arc::clone(&self.state.ingest_permits).try_acquire_owned().ok()) else {
            self.state.metrics.overloaded();
            self.state.metrics.observe(MethodLabel::Grpc, GRPC_EXPORT_ROUTE, 503, started.elapsed());
            return Err(tonic::Status::unavailable("rltrace is overloaded, retry later"));
        };
        let result = ingest(&self.state, request.into_inner(), permit).await;
        let (code, out) = match result {
            Ok(acc) => {
                let partial = (acc.rejected > 0).then_some(ExportTracePartialSuccess { rejected_spans: acc.rejected as i64, error_message: acc.message });
                (200, Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: partial })))
            }
            Err(IngestError::Overloaded) => (503, Err(tonic::Status::unavailable("rltrace is overloaded, retry later"))),
            Err(e @ IngestError::Store(_)) => (500, Err(tonic::Status::internal(e.to_string()))),
        };
        self.state.metrics.observe(MethodLabel::Grpc, GRPC_EXPORT_ROUTE, code, started.elapsed());
        out
    }
}

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
use rltrace_otlp::{ConvertedSpans, Encoding, PartsError, encode_response, encode_status};
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

/// What an admitted request holds while it is decoded and prepared: one of the request permits
/// and, for OTLP/HTTP, its share of the body-bytes budget.
pub struct IngestPermit {
    _request: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl IngestPermit {
    /// A request permit alone (gRPC: tonic bounds the message size).
    pub fn request(permit: OwnedSemaphorePermit) -> IngestPermit {
        IngestPermit { _request: permit, _bytes: None }
    }
}

/// The body-bytes budget in KiB (its permits), at least one.
pub fn budget_kib(limits: &crate::IngestLimits) -> u32 {
    kib(limits.max_inflight_bytes).max(1)
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// How long a request waits for its share of the body-bytes budget before it is answered 503.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Spans converted, analysed and prepared at a time: a large request reaches the writer in parts,
/// so the memory it takes after decoding is that of a part, not of the whole request.
pub const SPANS_PER_PART: usize = 2048;

/// How long a later part of an admitted request waits for room in the writer's queue.
const PART_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the ingest pipeline on a decoded request (gRPC); resolves after the spans are committed.
pub async fn ingest(state: &AppState, req: ExportTraceServiceRequest, permit: IngestPermit) -> Result<Accepted, IngestError> {
    let mut parts = RequestParts::new(state);
    let work = tokio::task::spawn_blocking(move || {
        let failed = rltrace_otlp::for_each_part(req, SPANS_PER_PART, |part| parts.queue(part)).err();
        (parts, failed)
    });
    let (parts, failed) = work.await.map_err(|e| IngestError::Store(e.to_string()))?;
    parts.committed(state, failed, permit).await
}

/// One request's parts on their way to the writer: each part is analysed, prepared and queued in
/// turn on a blocking thread, then [`RequestParts::committed`] waits for the commits.
///
/// The request's permit bounds the requests being decoded and prepared at once; it is released
/// as soon as every part's prepared rows are handed to the writer's bounded queue, which bounds
/// the rest. The first part finding the queue full makes the request overloaded (nothing of it
/// queued); a later part waits for room. A request that fails after some parts were queued was
/// not acknowledged: those parts are stored, and the exporter's retry finds them as duplicates.
struct RequestParts {
    store: rltrace_store::Store,
    redactor: Arc<rltrace_core::redact::Redactor>,
    limits: rltrace_core::Limits,
    received: usize,
    rejected: Vec<String>,
    replies: Vec<tokio::sync::oneshot::Receiver<Result<rltrace_store::IngestOutcome, StoreError>>>,
}

impl RequestParts {
    fn new(state: &AppState) -> RequestParts {
        RequestParts { store: state.store.clone(), redactor: Arc::clone(&state.redactor), limits: state.limits.span_limits, received: 0, rejected: Vec::new(), replies: Vec::new() }
    }

    /// Analyse, prepare and queue one part (blocking: a later part may wait for room).
    fn queue(&mut self, mut part: ConvertedSpans) -> Result<(), StoreError> {
        self.received += part.spans.len() + part.rejected.len();
        // Redaction first: nothing unredacted reaches the store (or a log message).
        self.redactor.apply_all(&mut part.spans);
        self.rejected.extend(part.rejected);
        let mut analyzed = Vec::with_capacity(part.spans.len());
        for span in part.spans {
            match analyze(span, &self.limits) {
                Ok(a) => analyzed.push(a),
                Err(msg) => self.rejected.push(msg),
            }
        }
        let prepared = prepare_spans(analyzed);
        if prepared.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = move |r| {
            let _ = tx.send(r);
        };
        if self.replies.is_empty() { self.store.submit_spans(prepared, reply) } else { self.store.submit_spans_within(prepared, reply, PART_WAIT) }?;
        self.replies.push(rx);
        Ok(())
    }

    /// After the last part (or the failure `failed` of one): release the permit, then wait for
    /// every queued part's commit.
    async fn committed(self, state: &AppState, failed: Option<StoreError>, permit: IngestPermit) -> Result<Accepted, IngestError> {
        drop(permit);
        state.metrics.received(self.received);
        match failed {
            None => {}
            Some(StoreError::Overloaded) => {
                state.metrics.overloaded();
                return Err(IngestError::Overloaded);
            }
            Some(e) => return Err(IngestError::Store(e.to_string())),
        }
        let (mut stored, mut duplicates, mut rejected) = (0, 0, self.rejected);
        for rx in self.replies {
            let outcome = rx.await.map_err(|_| IngestError::Store("store writer stopped".into()))?.map_err(|e| IngestError::Store(e.to_string()))?;
            stored += outcome.stored;
            duplicates += outcome.duplicates;
            rejected.extend(outcome.rejected);
        }
        state.metrics.outcome(stored, duplicates, rejected.len());
        Ok(summarize(rejected))
    }
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
/// Read a body of at most `max` bytes into one buffer, sized from `Content-Length` when it is
/// given (within `max`), each frame copied in and freed as it arrives: the body is held once, not
/// as frames and then again as their concatenation. `Err(None)`: over `max`.
async fn read_body(mut body: Body, max: usize, length: Option<usize>) -> Result<bytes::Bytes, Option<axum::Error>> {
    let mut buf = bytes::BytesMut::with_capacity(length.unwrap_or(0).min(max));
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(Some)?.data_ref() {
            if buf.len() + data.len() > max {
                return Err(None);
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

pub(crate) async fn drain(mut body: Body, max: usize) {
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

/// An OTLP/HTTP refusal before the body is read (401, 403): an OTLP `Status` in the request's
/// encoding (JSON when its content type is not one of OTLP's).
pub fn otlp_refusal(headers: &HeaderMap, status: StatusCode, grpc_code: i32, message: &str) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let encoding = if matches!(mime.as_str(), "application/x-protobuf" | "application/protobuf") { Encoding::Protobuf } else { Encoding::Json };
    otlp_error(encoding, status, grpc_code, message)
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
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = length
        && len > limits.max_body_bytes
    {
        return otlp_error(encoding, StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, &format!("request body of {len} bytes exceeds the limit of {} bytes", limits.max_body_bytes));
    }
    let Ok(permit) = state.ingest_permits.clone().try_acquire_owned() else {
        state.metrics.overloaded();
        drain(body, limits.max_body_bytes).await;
        return otlp_error(encoding, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "rltrace is overloaded, retry later");
    };
    let bytes = match read_body(body, limits.max_body_bytes, length).await {
        Ok(b) => b,
        Err(None) => {
            return otlp_error(encoding, StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, &format!("request body exceeds the limit of {} bytes", limits.max_body_bytes));
        }
        Err(Some(e)) => return otlp_error(encoding, StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, &format!("cannot read request body: {e}")),
    };
    // The body's share of the bytes budget, waited for in arrival order (the semaphore is
    // fair), so large bodies are not starved by small ones. A gzip body first takes a guess of
    // its inflated size (GZIP_GUESS times as sent).
    let total_kib = budget_kib(limits);
    let budget = Arc::clone(&state.ingest_bytes);
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity").trim().to_ascii_lowercase();
    let gzip = matches!(content_encoding.as_str(), "gzip" | "x-gzip");
    let share = if gzip { bytes.len().saturating_mul(GZIP_GUESS) } else { bytes.len() };
    let held = match tokio::time::timeout(BUDGET_WAIT, Arc::clone(&budget).acquire_many_owned(kib(share).clamp(1, total_kib))).await {
        Ok(Ok(p)) => p,
        _ => {
            state.metrics.overloaded();
            return otlp_error(encoding, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "rltrace is overloaded, retry later");
        }
    };
    let max_inflated = limits.max_inflated_bytes;
    let runtime = tokio::runtime::Handle::current();
    let mut parts = RequestParts::new(&state);
    // Inflate, decode and queue the parts on one blocking thread; a body that cannot be decoded
    // queues nothing (a large OTLP/JSON body is checked whole before its first part).
    let work = tokio::task::spawn_blocking(move || -> Result<(RequestParts, Option<StoreError>, OwnedSemaphorePermit), Refusal> {
        let (raw, held) = match content_encoding.as_str() {
            "gzip" | "x-gzip" => {
                let (inflated, held) = inflate_within_budget(&bytes, max_inflated, held, &budget, total_kib, &runtime)?;
                (bytes::Bytes::from(inflated), held)
            }
            "identity" | "" => (bytes, held),
            other => return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, GRPC_INVALID_ARGUMENT, format!("content encoding {other:?} is not supported; use gzip or none"))),
        };
        match rltrace_otlp::decode_in_parts(encoding, &raw, SPANS_PER_PART, |part| parts.queue(part)) {
            Ok(()) => Ok((parts, None, held)),
            Err(PartsError::Deliver(e)) => Ok((parts, Some(e), held)),
            Err(PartsError::Decode(e)) => Err((StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, e.to_string())),
        }
    })
    .await;
    let (parts, failed, held) = match work {
        Ok(Ok(r)) => r,
        Ok(Err((status, code, msg))) => {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                state.metrics.overloaded();
            }
            return otlp_error(encoding, status, code, &msg);
        }
        Err(e) => return otlp_error(encoding, StatusCode::INTERNAL_SERVER_ERROR, GRPC_INTERNAL, &e.to_string()),
    };
    match parts.committed(&state, failed, IngestPermit { _request: permit, _bytes: Some(held) }).await {
        Ok(acc) => {
            let mut resp = (StatusCode::OK, encode_response(encoding, acc.rejected as i64, &acc.message)).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
            resp
        }
        Err(IngestError::Overloaded) => otlp_error(encoding, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "rltrace is overloaded, retry later"),
        Err(e @ IngestError::Store(_)) => otlp_error(encoding, StatusCode::INTERNAL_SERVER_ERROR, GRPC_INTERNAL, &e.to_string()),
    }
}

/// A gzip body's first share of the bytes budget, as a multiple of its size as sent.
const GZIP_GUESS: usize = 8;

type Refusal = (StatusCode, i32, String);

/// Inflate a gzip body inside the bytes budget. The body grows its share without waiting while
/// it can (`held` is the first guess); when the budget has no room left, it gives back what it
/// holds and waits, in arrival order, for the most it may need (the inflation bound, at most the
/// whole budget), then inflates again: a request never waits while holding part of the budget, so
/// several large bodies cannot block each other. What it holds beyond the inflated size is given
/// back at the end.
fn inflate_within_budget(
    body: &[u8],
    max_inflated: usize,
    held: OwnedSemaphorePermit,
    budget: &Arc<tokio::sync::Semaphore>,
    total_kib: u32,
    runtime: &tokio::runtime::Handle,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), Refusal> {
    let refused = |e: rltrace_otlp::InflateError| -> Refusal {
        match e {
            e @ rltrace_otlp::InflateError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, GRPC_RESOURCE_EXHAUSTED, e.to_string()),
            e @ rltrace_otlp::InflateError::NoRoom => (StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, e.to_string()),
            e => (StatusCode::BAD_REQUEST, GRPC_INVALID_ARGUMENT, e.to_string()),
        }
    };
    let mut held = held;
    let first = {
        let mut reserve = |total: usize| {
            let want = kib(total).min(total_kib);
            let have = held.num_permits() as u32;
            if want <= have {
                return true;
            }
            match Arc::clone(budget).try_acquire_many_owned(want - have) {
                Ok(more) => {
                    held.merge(more);
                    true
                }
                Err(_) => false,
            }
        };
        rltrace_otlp::inflate_gzip_metered(body, max_inflated, &mut reserve)
    };
    let (inflated, mut held) = match first {
        Ok(v) => (v, held),
        Err(rltrace_otlp::InflateError::NoRoom) => {
            drop(held);
            let most = kib(max_inflated).clamp(1, total_kib);
            let wait = Arc::clone(budget).acquire_many_owned(most);
            let held = match runtime.block_on(async { tokio::time::timeout(BUDGET_WAIT, wait).await }) {
                Ok(Ok(p)) => p,
                _ => return Err(refused(rltrace_otlp::InflateError::NoRoom)),
            };
            (rltrace_otlp::inflate_gzip_metered(body, max_inflated, &mut |_| true).map_err(refused)?, held)
        }
        Err(e) => return Err(refused(e)),
    };
    let need = kib(inflated.len()).clamp(1, total_kib) as usize;
    if held.num_permits() > need {
        drop(held.split(held.num_permits() - need));
    }
    Ok((inflated, held))
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
    auth: Arc<crate::auth::Auth>,
}

impl Admission {
    /// An interceptor over the collector's permits.
    pub fn new(state: &AppState) -> Admission {
        Admission { permits: Arc::clone(&state.ingest_permits), metrics: Arc::clone(&state.metrics), auth: Arc::clone(&state.auth) }
    }
}

impl tonic::service::Interceptor for Admission {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        // The key is checked before a permit is taken: a refused client holds nothing.
        if let Err(status) = crate::auth::check_grpc(&self.auth, request.metadata()) {
            self.metrics.auth_refused(if status.code() == tonic::Code::Unauthenticated { 401 } else { 403 });
            self.metrics.observe(MethodLabel::Grpc, GRPC_EXPORT_ROUTE, if status.code() == tonic::Code::Unauthenticated { 401 } else { 403 }, std::time::Duration::ZERO);
            return Err(status);
        }
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
        let result = ingest(&self.state, request.into_inner(), IngestPermit::request(permit)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn large_gzip_bodies_inflating_at_once_never_block_each_other() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let total_kib = 4096u32; // a 4 MiB budget
        let budget = Arc::new(tokio::sync::Semaphore::new(total_kib as usize));
        let body = gz(&vec![b'x'; 3 * 1024 * 1024]); // inflates to 3 MiB: two cannot fit at once
        let bodies = 4;
        let done: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..bodies)
                .map(|_| {
                    let (budget, body, runtime) = (Arc::clone(&budget), body.clone(), rt.handle().clone());
                    scope.spawn(move || {
                        // Every body starts with its guess held, as the handler takes it.
                        let first = runtime.block_on(Arc::clone(&budget).acquire_many_owned(kib(body.len() * GZIP_GUESS).max(1))).expect("guess");
                        let (inflated, held) = inflate_within_budget(&body, 64 * 1024 * 1024, first, &budget, total_kib, &runtime).expect("inflates");
                        assert_eq!(held.num_permits(), 3072, "it keeps what the inflated body needs, no more");
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        drop(held);
                        inflated.len()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert_eq!(done, vec![3 * 1024 * 1024; bodies]);
        assert_eq!(budget.available_permits(), total_kib as usize, "everything was given back");
    }

    #[test]
    fn a_gzip_body_larger_than_the_budget_takes_all_of_it_and_limits_still_hold() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let budget = Arc::new(tokio::sync::Semaphore::new(1024));
        let body = gz(&vec![b'y'; 2 * 1024 * 1024]);
        let first = rt.block_on(Arc::clone(&budget).acquire_many_owned(1)).expect("guess");
        let (inflated, held) = inflate_within_budget(&body, 4 * 1024 * 1024, first, &budget, 1024, rt.handle()).expect("inflates alone");
        assert_eq!((inflated.len(), held.num_permits()), (2 * 1024 * 1024, 1024));
        drop(held);
        let first = rt.block_on(Arc::clone(&budget).acquire_many_owned(1)).expect("guess");
        let err = inflate_within_budget(&body, 2 * 1024 * 1024 - 1, first, &budget, 1024, rt.handle()).expect_err("over the bound");
        assert_eq!(err.0, StatusCode::PAYLOAD_TOO_LARGE);
        // While another request holds the whole budget, a body that cannot grow waits, then is
        // answered 503 (nothing held afterwards).
        let hog = rt.block_on(Arc::clone(&budget).acquire_many_owned(1023)).expect("hog");
        let first = rt.block_on(Arc::clone(&budget).acquire_many_owned(1)).expect("guess");
        let started = std::time::Instant::now();
        let err = inflate_within_budget(&body, 4 * 1024 * 1024, first, &budget, 1024, rt.handle()).expect_err("no room");
        assert_eq!(err.0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() >= BUDGET_WAIT, "it waited for room first");
        drop(hog);
        assert_eq!(budget.available_permits(), 1024);
    }
}

//! The rltrace collector: OTLP/HTTP and the REST API on one listener, OTLP/gRPC on another, over
//! one [`rltrace_store::Store`].
//!
//! Invariants: this is the only crate that knows HTTP and the JSON shapes of the API. Ingest is
//! bounded at every step (body size, gzip inflation, attribute size, concurrent requests, the
//! writer queue) and answers 503 / `UNAVAILABLE` with `Retry-After` instead of queueing more.

pub mod api;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod dto;
pub mod error;
pub mod agl;
pub mod forward;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod ui;
pub mod whatif;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use rltrace_core::{Limits as SpanLimits, Policy};
use rltrace_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Default bound of an OTLP request body as sent: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default bound of an OTLP request body after gzip inflation: 64 MiB.
pub const DEFAULT_MAX_INFLATED_BYTES: usize = 64 * 1024 * 1024;
/// Default bound of OTLP requests read, decoded and prepared at once; more are answered
/// 503 / `UNAVAILABLE`. Requests waiting for their commit no longer count: the writer queue bounds them.
pub const DEFAULT_MAX_CONCURRENT_EXPORTS: usize = 4;

/// Default bound of OTLP/HTTP request bodies (after inflation) being decoded and ingested at
/// once: 16 MiB, the largest body as sent. A request waits for its share (or is answered 503 when
/// it cannot have it soon); one larger than the whole budget takes all of it. Bodies of the usual
/// batch sizes (under 4 MiB) are bounded by the request count instead.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// HTTP/2 streams (gRPC requests) in flight on one connection.
pub const GRPC_MAX_STREAMS_PER_CONNECTION: u32 = 8;

/// Ingest bounds.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest request body as sent.
    pub max_body_bytes: usize,
    /// Largest request body after gzip inflation.
    pub max_inflated_bytes: usize,
    /// Bounds applied to each span.
    pub span_limits: SpanLimits,
    /// Export requests decoded at once.
    pub max_concurrent_exports: usize,
    /// Bytes of OTLP/HTTP bodies (after inflation) decoded and ingested at once.
    pub max_inflight_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_inflated_bytes: DEFAULT_MAX_INFLATED_BYTES,
            span_limits: SpanLimits::default(),
            max_concurrent_exports: DEFAULT_MAX_CONCURRENT_EXPORTS,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The reward policy.
    pub policy: Arc<Policy>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Ingest bounds.
    pub limits: IngestLimits,
    /// Permits for export requests being decoded and stored.
    pub ingest_permits: Arc<Semaphore>,
    /// The body-bytes budget of [`IngestLimits::max_inflight_bytes`], one permit per KiB.
    pub ingest_bytes: Arc<Semaphore>,
    /// Memory bounds of dataset exports (`GET /api/v1/export`).
    pub dataset_limits: rltrace_dataset::Limits,
    /// API keys and UI sessions; open when no keys are configured.
    pub auth: Arc<auth::Auth>,
    /// Redaction (`[redaction]`), applied to every span before it is stored.
    pub redactor: Arc<rltrace_core::redact::Redactor>,
    /// Retention (`[retention]`): what the background passes delete.
    pub retention: Arc<rltrace_core::retention::Retention>,
    /// Forwarding targets (`[[forward]]`), run by [`serve`].
    pub forwarders: Arc<Vec<Arc<forward::Forwarder>>>,
}

impl AppState {
    /// State over a store with a policy and limits.
    pub fn new(store: Store, policy: Policy, limits: IngestLimits) -> AppState {
        AppState {
            store,
            policy: Arc::new(policy),
            metrics: Arc::new(metrics::Metrics::default()),
            ingest_permits: Arc::new(Semaphore::new(limits.max_concurrent_exports.max(1))),
            ingest_bytes: Arc::new(Semaphore::new(ingest::budget_kib(&limits) as usize)),
            limits,
            dataset_limits: rltrace_dataset::Limits::default(),
            auth: Arc::new(auth::Auth::open()),
            retention: Arc::new(rltrace_core::retention::Retention::default()),
            redactor: Arc::new(rltrace_core::redact::Redactor::none()),
            forwarders: Arc::new(Vec::new()),
        }
    }

    /// The same state with these forwarding targets.
    pub fn with_forwarders(mut self, targets: Vec<forward::Target>) -> AppState {
        self.forwarders = Arc::new(targets.into_iter().map(|t| Arc::new(forward::Forwarder::new(t))).collect());
        self
    }

    /// The same state with these redaction rules.
    pub fn with_redactor(mut self, redactor: rltrace_core::redact::Redactor) -> AppState {
        self.redactor = Arc::new(redactor);
        self
    }

    /// The same state with this retention.
    pub fn with_retention(mut self, retention: rltrace_core::retention::Retention) -> AppState {
        self.retention = Arc::new(retention);
        self
    }

    /// The same state with these keys.
    pub fn with_auth(mut self, auth: auth::Auth) -> AppState {
        self.auth = Arc::new(auth);
        self
    }

    /// The same state with other dataset export bounds.
    pub fn with_dataset_limits(mut self, limits: rltrace_dataset::Limits) -> AppState {
        self.dataset_limits = limits;
        self
    }
}

/// Time every request; its labels are bounded (see [`metrics`]): the method's label, and the
/// matched route template or `unmatched`.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::MethodLabel::from_http(req.method());
    let route = req.extensions().get::<MatchedPath>().and_then(|p| routes::template(p.as_str())).unwrap_or(metrics::UNMATCHED_ROUTE);
    let resp = next.run(req).await;
    st.metrics.observe(method, route, resp.status().as_u16(), started.elapsed());
    resp
}

/// The HTTP application: OTLP/HTTP, the REST API, health, metrics and the OpenAPI document, with
/// the routes of [`routes::table`].
pub fn app(state: AppState) -> Router {
    routes::table()
        .into_iter()
        .fold(Router::new(), |router, r| {
            let access = r.access;
            let path = r.path;
            let handler = r.into_handler().route_layer(middleware::from_fn_with_state((state.clone(), access), auth::authorize));
            router.route(path, handler)
        })
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The gRPC service, with gzip and the message size bound.
///
/// Admission happens before tonic decodes the message (an interceptor takes one of the ingest
/// permits), so decoded messages never pile up ahead of the bound.
pub fn grpc_service(
    state: AppState,
) -> TooLargeIsFinal<tonic::service::interceptor::InterceptedService<TraceServiceServer<ingest::GrpcTraces>, ingest::Admission>> {
    let max = state.limits.max_body_bytes;
    let admission = ingest::Admission::new(&state);
    TooLargeIsFinal(tonic::service::interceptor::InterceptedService::new(
        TraceServiceServer::new(ingest::GrpcTraces::new(state))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        admission,
    ))
}

/// gRPC status code `OUT_OF_RANGE`, which tonic answers for a message over the size bound.
const GRPC_OUT_OF_RANGE: &str = "11";
/// gRPC status code `RESOURCE_EXHAUSTED`.
const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// Wraps the gRPC service so that a message over the size bound is answered `RESOURCE_EXHAUSTED`
/// (final for OTLP exporters) instead of tonic's `OUT_OF_RANGE`, which the OTLP specification lists
/// as retryable: an exporter would resend a request that can never fit. rltrace's own handler never
/// answers `OUT_OF_RANGE`, so only the size check is affected.
#[derive(Clone)]
pub struct TooLargeIsFinal<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for TooLargeIsFinal<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for TooLargeIsFinal<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<R>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if resp.headers().get("grpc-status").is_some_and(|v| v == GRPC_OUT_OF_RANGE) {
                resp.headers_mut().insert("grpc-status", axum::http::HeaderValue::from_static(GRPC_RESOURCE_EXHAUSTED));
            }
            Ok(resp)
        })
    }
}

/// Apply the fallback reward to every sequence that is due now, in small batches (one
/// transaction each, so settling never holds ingest up); the number of sequences settled.
pub async fn settle_due(store: &Store, policy: &Arc<Policy>) -> Result<usize, rltrace_store::StoreError> {
    let mut total = 0;
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.submit_settle(policy, move |r| {
            let _ = tx.send(r);
        })?;
        let n = rx.await.map_err(|_| rltrace_store::StoreError::Closed)??;
        total += n;
        if n < rltrace_store::SETTLE_BATCH {
            return Ok(total);
        }
    }
}

/// Delete what retention says is due now: small passes (one transaction each, a yield between
/// them so ingest is never held up), until none is left; counted in the metrics.
pub async fn retention_pass(st: &AppState) -> Result<rltrace_store::GcCounts, rltrace_store::StoreError> {
    let cut = st.retention.cutoffs(rltrace_store::now_micros());
    let keep = st.policy.default_reward.is_some();
    let mut total = rltrace_store::GcCounts::default();
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        st.store.submit_gc(cut, keep, total.cursor, move |r| {
            let _ = tx.send(r);
        })?;
        let n = rx.await.map_err(|_| rltrace_store::StoreError::Closed)??;
        st.metrics.deleted(&n);
        total.add(&n);
        if !n.more {
            return Ok(total);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Listeners of a running collector.
pub struct Bound {
    /// The HTTP listener.
    pub http: TcpListener,
    /// The gRPC listener.
    pub grpc: TcpListener,
}

impl Bound {
    /// Bind both listeners.
    pub async fn bind(http: SocketAddr, grpc: SocketAddr) -> std::io::Result<Bound> {
        Ok(Bound { http: TcpListener::bind(http).await?, grpc: TcpListener::bind(grpc).await? })
    }
}

/// Serve until `shutdown` resolves, then drain: stop accepting, finish requests in flight, and wait
/// for the writer to commit what it was given.
pub async fn serve(state: AppState, bound: Bound, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx.clone();
    let mut settle_stop = stop_rx.clone();
    let mut gc_stop = stop_rx.clone();
    let mut forwarding = Vec::new();
    if !state.forwarders.is_empty() {
        let runner = Arc::new(forward::Runner::new(state.store.clone(), state.metrics.clone()));
        for f in state.forwarders.iter() {
            let task = match f.target.kind {
                forward::Kind::AglRewards { .. } | forward::Kind::AglGateway { .. } => tokio::spawn(agl::run_rewards(runner.clone(), f.clone(), state.policy.clone(), stop_rx.clone())),
                forward::Kind::Otlp | forward::Kind::AglSpans { .. } => tokio::spawn(runner.clone().run(f.clone(), stop_rx.clone())),
            };
            forwarding.push(task);
        }
    }
    let mut grpc_stop = stop_rx;
    if state.retention.is_active() {
        let st = state.clone();
        let every = std::time::Duration::from_secs(st.retention.every_s());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = gc_stop.wait_for(|s| *s) => break,
                }
                match retention_pass(&st).await {
                    Ok(d) if d.spans + d.sequences > 0 => {
                        tracing::info!(spans = d.spans, sequences = d.sequences, triplets = d.triplets, reward_events = d.reward_events, "retention deleted")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                }
            }
        });
    }
    if let (Some(_), Some(wait)) = (state.policy.default_reward, state.policy.reward_wait) {
        let store = state.store.clone();
        let policy = state.policy.clone();
        let every = std::time::Duration::from_secs((wait / 4).clamp(1, 60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = settle_stop.wait_for(|s| *s) => break,
                }
                match settle_due(&store, &policy).await {
                    Ok(n) if n > 0 => tracing::info!(sequences = n, "fallback reward applied"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "fallback settle failed"),
                }
            }
        });
    }
    let http = axum::serve(bound.http, app(state.clone())).with_graceful_shutdown(async move {
        let _ = http_stop.wait_for(|s| *s).await;
    });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(bound.grpc);
    // tonic decodes a message before the service sees it: bound the requests in flight on each
    // connection so decoded messages cannot pile up ahead of the admission slots.
    let grpc = tonic::transport::Server::builder()
        .max_concurrent_streams(GRPC_MAX_STREAMS_PER_CONNECTION)
        .add_service(grpc_service(state.clone()))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        });
    let (h, g) = tokio::join!(http, grpc);
    // Forwarders end their request in flight (or give it up: it is resent after a restart) and
    // release their leases before the store closes.
    for task in forwarding {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    h?;
    g.map_err(std::io::Error::other)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.store.submit_barrier(move |r| {
        let _ = tx.send(r);
    })
    .is_ok()
    {
        let _ = rx.await;
    }
    state.store.close();
    Ok(())
}

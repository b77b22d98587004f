//! A tower [`Layer`] that makes every HTTP request of a service (axum or any tower HTTP
//! service) one triplet: state = method, route template, configured headers and query keys;
//! action = status, duration and response size; immediate rewards for success (5xx is a
//! failure) and latency. The W3C `traceparent` of the request is the parent of the triplet's
//! span, and the response carries the triplet's own `traceparent`, so a UI click, the API call
//! behind it and the agent work it starts share one trace.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http::{HeaderName, Request, Response};
use http_body::Body;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use tower_layer::Layer;
use tower_service::Service;

use crate::helpers::{extract_context, inject_context};
use crate::runtime::{self, Call, Keys, Scope, Start};

/// The route template of a request, for tower services that are not axum routers: insert it as
/// a request extension before the layer runs. With axum (feature `axum`, on by default) the
/// layer reads `MatchedPath`; requests with neither are recorded with route `unmatched`, never
/// with their raw path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate(pub Cow<'static, str>);

#[derive(Debug)]
struct LayerConfig {
    role: Cow<'static, str>,
    headers: Vec<(HeaderName, String)>,
    session_header: Option<HeaderName>,
    task_header: Option<HeaderName>,
    latency_budget: Option<Duration>,
}

/// The tower layer. Apply it to an axum `Router` with `Router::layer` (routes are then known)
/// or around any tower HTTP service.
///
/// ```
/// use axum::{Router, routing::get};
/// use http::HeaderName;
/// use rltrace_sdk::TripletLayer;
///
/// let app: Router = Router::new()
///     .route("/tasks/{id}", get(|| async { "ok" }))
///     .layer(
///         TripletLayer::new()
///             .role("api")
///             .capture_header(HeaderName::from_static("x-user-id"), "user_id")
///             .session_header(HeaderName::from_static("x-session-id")),
///     );
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct TripletLayer {
    cfg: Arc<LayerConfig>,
}

impl Default for TripletLayer {
    fn default() -> Self {
        TripletLayer::new()
    }
}

impl TripletLayer {
    /// A layer recording `state.agent_role = "http"`, no headers, the SDK's latency budget.
    pub fn new() -> Self {
        TripletLayer {
            cfg: Arc::new(LayerConfig { role: Cow::Borrowed("http"), headers: Vec::new(), session_header: None, task_header: None, latency_budget: None }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut LayerConfig)) -> Self {
        let mut cfg = LayerConfig {
            role: self.cfg.role.clone(),
            headers: self.cfg.headers.clone(),
            session_header: self.cfg.session_header.clone(),
            task_header: self.cfg.task_header.clone(),
            latency_budget: self.cfg.latency_budget,
        };
        f(&mut cfg);
        self.cfg = Arc::new(cfg);
        self
    }

    /// The `state.agent_role` of request triplets.
    pub fn role(self, role: impl Into<Cow<'static, str>>) -> Self {
        let role = role.into();
        self.edit(|c| c.role = role)
    }

    /// Record the value of a request header as `state.<state_key>` (e.g. a user id).
    pub fn capture_header(self, header: HeaderName, state_key: impl Into<String>) -> Self {
        let key = state_key.into();
        self.edit(|c| c.headers.push((header, key)))
    }

    /// The header holding the session id: requests carrying it form the sequence of that
    /// session (scope `session`) and record it as `state.session_id`.
    pub fn session_header(self, header: HeaderName) -> Self {
        self.edit(|c| c.session_header = Some(header))
    }

    /// The header holding a task id: requests carrying it (and no session) form the sequence of
    /// that task (scope `pipeline`).
    pub fn task_header(self, header: HeaderName) -> Self {
        self.edit(|c| c.task_header = Some(header))
    }

    /// The latency budget of requests (default: the SDK's).
    pub fn latency_budget(self, budget: Duration) -> Self {
        self.edit(|c| c.latency_budget = Some(budget))
    }
}

impl<S> Layer<S> for TripletLayer {
    type Service = TripletService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TripletService { inner, cfg: self.cfg.clone() }
    }
}

/// The service made by [`TripletLayer`].
#[derive(Debug, Clone)]
pub struct TripletService<S> {
    inner: S,
    cfg: Arc<LayerConfig>,
}

fn route_of<B>(req: &Request<B>) -> Cow<'_, str> {
    #[cfg(feature = "axum")]
    if let Some(p) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Cow::Borrowed(p.as_str());
    }
    match req.extensions().get::<RouteTemplate>() {
        Some(t) => Cow::Borrowed(t.0.as_ref()),
        None => Cow::Borrowed("unmatched"),
    }
}

fn query_keys(query: Option<&str>) -> Vec<&str> {
    let mut keys: Vec<&str> =
        query.unwrap_or("").split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').map_or(p, |(k, _)| k)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn header_str<'a, B>(req: &'a Request<B>, h: &Option<HeaderName>) -> Option<&'a str> {
    h.as_ref().and_then(|h| req.headers().get(h)).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

impl<S, B, RB> Service<Request<B>> for TripletService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(rt) = runtime::current() else {
            return ResponseFuture { inner: self.inner.call(req), call: None };
        };
        let cfg = &self.cfg;
        let parent = extract_context(req.headers());
        let call = {
            let method = req.method().as_str();
            let route = route_of(&req);
            let session = header_str(&req, &cfg.session_header);
            let task = header_str(&req, &cfg.task_header);
            let start = Start {
                name: Cow::Owned(format!("{method} {route}")),
                kind: SpanKind::Server,
                scope: if session.is_some() { Scope::Session } else { Scope::Pipeline },
                role: Some(&cfg.role),
                function: None,
                keys: Keys { task_id: task.map(Arc::from), session_id: session.map(Arc::from), sequence_id: None },
                extra_attributes: vec![
                    KeyValue::new("http.request.method", method.to_string()),
                    KeyValue::new("http.route", route.to_string()),
                ],
                latency_budget: cfg.latency_budget,
            };
            Call::start(rt, &parent, start, |w| {
                w.field("method", method);
                w.field("route", route.as_ref());
                w.field("query_keys", &query_keys(req.uri().query()));
                for (h, key) in &cfg.headers {
                    if let Some(v) = req.headers().get(h).and_then(|v| v.to_str().ok()) {
                        w.field(key, v);
                    }
                }
            })
        };
        let inner = {
            let _g = call.enter();
            self.inner.call(req)
        };
        ResponseFuture { inner, call: Some(call) }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TripletService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(call) = this.call.as_ref() else { return this.inner.poll(task) };
        let result = {
            let _g = call.enter();
            match this.inner.poll(task) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            }
        };
        let Some(call) = this.call.take() else { return Poll::Ready(result) };
        let mut result = result;
        if call.is_recording() {
            let mut o = call.outcome();
            match &mut result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    o.field("status", &status);
                    let size = resp.body().size_hint().exact().or_else(|| {
                        resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
                    });
                    if let Some(n) = size {
                        o.field("response_size", &n);
                    }
                    if status >= 500 {
                        o.fail(format!("http status {status}"));
                    }
                    o.attribute(KeyValue::new("http.response.status_code", i64::from(status)));
                    if let Some(cx) = call.context() {
                        inject_context(&cx, resp.headers_mut());
                    }
                }
                Err(_) => o.error(std::any::type_name::<E>(), None),
            }
            call.finish(o);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_sorted_without_values() {
        assert_eq!(query_keys(Some("b=2&a=1&b=3&flag")), vec!["a", "b", "flag"]);
        assert!(query_keys(None).is_empty());
    }
}

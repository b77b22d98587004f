"""ASGI middleware making every HTTP request one triplet: state = method, route template (never
the raw path), query keys (never values), chosen headers and the session; action = status,
duration and response size; immediate rewards for success (5xx is a failure) and latency.

The W3C ``traceparent`` of the request is the parent of the triplet's span (unless an outer
instrumentation, such as ``opentelemetry-instrumentation-fastapi``, already made a span for the
request: then the triplet is its child), the application below sees the triplet's own
``traceparent`` (so an inner instrumentation joins it), and the response carries it too, so a
browser click, the API call and the agents it starts share one trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import _runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PROPAGATOR = TraceContextTextMapPropagator()


def route_template(scope: Scope) -> str:
    """The route template the framework matched (Starlette and FastAPI put the route in
    ``scope["route"]``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _query_keys(qs: bytes) -> list[str]:
    keys = {p.split(b"=", 1)[0].decode("latin-1") for p in qs.split(b"&") if p}
    return sorted(keys)


class RLTripletMiddleware:
    """The middleware. ``app.add_middleware(RLTripletMiddleware, ...)`` or
    :func:`rltrace.fastapi.instrument`.

    - ``role``: ``state.agent_role`` of request triplets (default ``http``).
    - ``capture_headers``: header name -> state key (or a list of names, kept under their own
      lowercase name); values are recorded under the capture mode.
    - ``session_header`` / ``session_cookie``: where the session id is read; a request with one
      is part of that session's sequence (scope ``session``) and records ``state.session_id``.
    - ``task_header``: a header holding a task id (scope ``pipeline``) for requests without a
      session.
    - ``excluded_paths``: path prefixes not recorded (health checks); never recorded anyway.
    - ``latency_budget_s``: the latency budget of requests (default: the SDK's).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        role: str = "http",
        capture_headers: Mapping[str, str] | Iterable[str] = (),
        session_header: str | None = None,
        session_cookie: str | None = None,
        task_header: str | None = None,
        excluded_paths: Iterable[str] = (),
        latency_budget_s: float | None = None,
    ) -> None:
        self.app = app
        self.role = role
        if isinstance(capture_headers, Mapping):
            pairs = list(capture_headers.items())
        else:
            pairs = [(h, h.lower()) for h in capture_headers]
        self.capture_headers = [(h.lower().encode("latin-1"), k) for h, k in pairs]
        self.session_header = session_header.lower().encode("latin-1") if session_header else None
        self.session_cookie = session_cookie
        self.task_header = task_header.lower().encode("latin-1") if task_header else None
        self.excluded_paths = tuple(excluded_paths)
        self.latency_budget_s = latency_budget_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = _runtime.current()
        if scope.get("type") != "http" or rt is None or scope.get("rltrace.triplet") is not None:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.excluded_paths and any(path.startswith(p) for p in self.excluded_paths):
            await self.app(scope, receive, send)
            return
        raw_headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        hdr: dict[bytes, bytes] = {}
        for k, v in raw_headers:
            hdr.setdefault(k.lower(), v)
        current = otel_context.get_current()
        if trace.get_current_span(current).get_span_context().is_valid:
            parent = current
        else:
            carrier = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in hdr.items() if k in (b"traceparent", b"tracestate")
            }
            parent = _PROPAGATOR.extract(carrier, context=current) if carrier else current
        session = None
        if self.session_header is not None and hdr.get(self.session_header):
            session = hdr[self.session_header].decode("latin-1")
        elif self.session_cookie is not None and b"cookie" in hdr:
            c: SimpleCookie = SimpleCookie()
            try:
                c.load(hdr[b"cookie"].decode("latin-1"))
            except Exception:
                c = SimpleCookie()
            m = c.get(self.session_cookie)
            if m is not None and m.value:
                session = m.value
        task = None
        if self.task_header is not None and hdr.get(self.task_header):
            task = hdr[self.task_header].decode("latin-1")
        method = str(scope.get("method", "GET"))
        query = _query_keys(scope.get("query_string") or b"")
        headers_state = {key: hdr[h].decode("latin-1") for h, key in self.capture_headers if h in hdr}

        call = _runtime.start(
            rt,
            parent,
            name=f"{method} unmatched",
            kind=SpanKind.SERVER,
            scope="session" if session is not None else "pipeline",
            role=self.role,
            function=None,
            task_id=task,
            session_id=session,
            sequence_id=None,
            args=None,
            capture_mode=None,
            latency_budget_s=self.latency_budget_s,
            extra_attributes={"http.request.method": method},
        )
        if not call.recording:
            token = call.attach()
            try:
                await self.app(scope, receive, send)
            finally:
                call.detach(token)
            return
        traceparent: dict[str, str] = {}
        _PROPAGATOR.inject(traceparent, context=call.ctx)
        inner_headers = [(k, v) for k, v in raw_headers if k.lower() not in (b"traceparent", b"tracestate")]
        inner_headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in traceparent.items())
        inner_scope = dict(scope)
        inner_scope["headers"] = inner_headers
        inner_scope["rltrace.triplet"] = call.frame.triplet_id
        status: list[int] = []
        size: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
                out = list(message.get("headers") or [])
                for k, v in out:
                    if k.lower() == b"content-length":
                        try:
                            size.append(int(v))
                        except ValueError:
                            pass
                out = [(k, v) for k, v in out if k.lower() not in (b"traceparent", b"tracestate")]
                out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in traceparent.items())
                message = dict(message)
                message["headers"] = out
            await send(message)

        token = call.attach()
        error: BaseException | None = None
        try:
            await self.app(inner_scope, receive, send_wrapper)
        except BaseException as e:
            error = e
            raise
        finally:
            call.detach(token)
            route = route_template(inner_scope)
            call.state["method"] = method
            call.state["route"] = route
            call.state["query_keys"] = query
            for key, value in headers_state.items():
                call.state[key] = _runtime.captured(value, call.mode)
            code = status[0] if status else (500 if error is not None else 0)
            fields: dict[str, Any] = {"status": code}
            if size:
                fields["response_size"] = size[0]
            attrs: dict[str, Any] = {"http.route": route, "http.response.status_code": code}
            if error is not None:
                message = str(error) or type(error).__name__
                call.finish(False, type(error).__name__, message, fields, attrs, error, f"{method} {route}")
            elif code >= 500:
                call.finish(False, None, f"http status {code}", fields, attrs, None, f"{method} {route}")
            else:
                call.finish(True, None, None, fields, attrs, None, f"{method} {route}")

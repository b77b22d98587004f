"""``rltrace.fastapi.instrument(app)``: add :class:`rltrace.asgi.RLTripletMiddleware` to a FastAPI
(or Starlette) application, and ``uninstrument(app)`` to remove it. Importing this module does
not import FastAPI."""

from __future__ import annotations

from typing import Any, TypeVar

from .asgi import RLTripletMiddleware

A = TypeVar("A")


def instrument(app: A, **options: Any) -> A:
    """Make every request of ``app`` a triplet; ``options`` are those of
    :class:`~rltrace.asgi.RLTripletMiddleware` (``role``, ``capture_headers``,
    ``session_header``, ``session_cookie``, ``task_header``, ``excluded_paths``,
    ``latency_budget_s``). Call it before the application starts serving; calling it twice does
    nothing the second time. Returns ``app``.

    It coexists with ``FastAPIInstrumentor.instrument_app(app)``: the OpenTelemetry server span
    stays as it is (no ``rl.*`` attributes) and the request triplet becomes its child.
    """
    if is_instrumented(app):
        return app
    app.add_middleware(RLTripletMiddleware, **options)  # type: ignore[attr-defined]
    return app


def is_instrumented(app: Any) -> bool:
    """Whether :func:`instrument` added the middleware to ``app``."""
    return any(getattr(m, "cls", None) is RLTripletMiddleware for m in getattr(app, "user_middleware", ()))


def uninstrument(app: A) -> A:
    """Remove the middleware again; the stack is rebuilt on the next request. Returns ``app``."""
    kept = [m for m in getattr(app, "user_middleware", []) if getattr(m, "cls", None) is not RLTripletMiddleware]
    app.user_middleware = kept  # type: ignore[attr-defined]
    app.middleware_stack = None  # type: ignore[attr-defined]
    return app

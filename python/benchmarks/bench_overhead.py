"""Overhead of the Python SDK (DESIGN section 8), measured in one process and one run so the ratios
hold however fast the machine is:

1. ``@rl_triplet`` on an empty function against a bare OpenTelemetry span made with
   ``start_as_current_span`` carrying the same attributes (values computed beforehand), both on
   one SDK tracer provider whose simple span processor hands each span to an exporter that drops
   it (no queue that could drop spans and so skip work);
2. the ASGI middleware against the OpenTelemetry FastAPI instrumentation: the per-request cost of
   each is the time of a request through the instrumented app minus the time through the same
   app uninstrumented, requests driven straight into the ASGI app (no sockets).

    python python/benchmarks/bench_overhead.py [--quick]

Prints one line per measurement and the two ratios; exits 1 when a ratio is above 2.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import rltrace
import rltrace.fastapi


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def interleaved(fns: dict[str, Callable[[], Any]], number: int, repeat: int) -> dict[str, float]:
    """The best of ``repeat`` runs of ``number`` calls of each function, in microseconds per call;
    the runs alternate between the functions, so a change of machine load hits each alike, and the
    best run is the one least disturbed by the rest of the machine (as timeit advises)."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            runs[k].append(timeit.timeit(f, number=number) / number * 1e6)
    return {k: min(v) for k, v in runs.items()}


def bench_decorator(provider: TracerProvider, number: int, repeat: int) -> tuple[float, float]:
    tracer = provider.get_tracer("bench")
    attrs: dict[str, str | int | float] = {
        "rl.triplet_id": "9f1c0a4e-2b7d-4c3e-8a1f-0d2e3c4b5a69",
        "rl.sequence_id": "task-1",
        "rl.sequence_scope": "pipeline",
        "rl.sequence_index": 7,
        "rl.timestamp_utc": "2026-01-01T00:00:00.000000Z",
        "rl.sampling.probability": 1.0,
        "rl.state": json.dumps({"agent_role": "Code", "function": "empty", "call_depth": 0, "task_id": "task-1"}),
        "rl.action": json.dumps({"success": True, "duration_ms": 0.01}),
        "rl.reward.success": 1.0,
        "rl.reward.latency": 1.0,
    }

    def bare() -> None:
        with tracer.start_as_current_span("empty", attributes=attrs):
            pass

    rltrace.configure(tracer_provider=provider)

    @rltrace.rl_triplet(role="Code", task_id="task-1")
    def empty() -> None:
        pass

    for _ in range(2000):
        bare()
        empty()
    t = interleaved({"bare": bare, "rltrace": empty}, number, repeat)
    rltrace.shutdown()
    return t["bare"], t["rltrace"]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


def request_loop(app: Any, n: int) -> Callable[[], float]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"q=1",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"x-session-id", b"s-1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def many() -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    def run() -> float:
        t = time.perf_counter()
        asyncio.run(many())
        return (time.perf_counter() - t) / n * 1e6

    return run


def bench_middleware(provider: TracerProvider, n: int, repeat: int) -> tuple[float, float, float]:
    rltrace.configure(tracer_provider=provider)
    bare = make_app()
    otel = make_app()
    FastAPIInstrumentor.instrument_app(otel, tracer_provider=provider)
    rl = rltrace.fastapi.instrument(make_app(), session_header="x-session-id")
    loops = {name: request_loop(app, n) for name, app in (("bare", bare), ("otel", otel), ("rltrace", rl))}
    for f in loops.values():
        f()
    results: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(repeat):
        for k, f in loops.items():  # interleaved, so drift hits every variant alike
            results[k].append(f())
    rltrace.shutdown()
    low = {k: min(v) for k, v in results.items()}
    return low["bare"], low["otel"], low["rltrace"]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
    number, repeat = (2000, 5) if quick else (5000, 21)
    bare_us, rl_us = bench_decorator(provider, number, repeat)
    print(f"bare OpenTelemetry span, same attributes: {bare_us:8.2f} us/call")
    print(f"@rl_triplet on an empty function:         {rl_us:8.2f} us/call")
    r1 = rl_us / bare_us
    print(f"ratio @rl_triplet / bare span:            {r1:8.2f} (bound 2)")
    n, rep = (500, 5) if quick else (3000, 9)
    app_us, otel_us, rlm_us = bench_middleware(provider, n, rep)
    otel_cost, rl_cost = otel_us - app_us, rlm_us - app_us
    print(f"FastAPI app, no instrumentation:          {app_us:8.2f} us/request")
    print(f"  + OpenTelemetry FastAPI instrumentation:{otel_us:8.2f} us/request (cost {otel_cost:.2f})")
    print(f"  + rltrace middleware:                   {rlm_us:8.2f} us/request (cost {rl_cost:.2f})")
    r2 = rl_cost / otel_cost
    print(f"ratio middleware cost / OpenTelemetry's:  {r2:8.2f} (bound 2)")
    provider.shutdown()
    return 0 if r1 <= 2 and r2 <= 2 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

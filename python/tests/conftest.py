"""Fixtures: the real collector binary on loopback (started once per session, on port 0), an
OpenTelemetry tracer provider exporting to it over OTLP/HTTP, and ``rl``, which configures rltrace
for one test and shuts it down afterwards.

The binary is ``$RLTRACE_BIN``, else ``$CARGO_TARGET_DIR/debug/rltrace``, else the workspace's
``target/debug/rltrace``; a missing binary is an error, never a skip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import rltrace

ROOT = Path(__file__).resolve().parents[2]


def collector_binary() -> Path:
    env = os.environ.get("RLTRACE_BIN")
    if env:
        p = Path(env)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        p = target / "debug" / "rltrace"
    if not p.is_file():
        raise RuntimeError(
            f"the collector binary {p} is missing: build it with `cargo build -p rltrace` or set RLTRACE_BIN"
        )
    return p


class Collector:
    """A running ``rltrace serve`` and a tiny client of its REST API."""

    def __init__(self, proc: subprocess.Popen[str], http: str, grpc: str) -> None:
        self.proc = proc
        self.http = http
        self.grpc = grpc

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def sequence(self, sequence_id: str) -> dict[str, Any]:
        return dict(self.get("/api/v1/sequences/" + urllib.parse.quote(sequence_id, safe="")))

    def triplet(self, triplet_id: str) -> dict[str, Any]:
        return dict(self.get("/api/v1/triplets/" + urllib.parse.quote(triplet_id, safe="")))

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/traces/" + trace_id)["spans"])

    def status_of(self, path: str) -> int:
        return self.request("GET", path)[0]


def launch(db: Path, extra: list[str] | None = None) -> Collector:
    """Start ``rltrace serve`` on ``db`` (with ``extra`` flags) on free loopback ports."""
    cmd = [str(collector_binary()), "serve", "--db", str(db), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd + (extra or []), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "rltrace listening" in line or not line:
            break
    m = re.search(r"http=(\S+) grpc=(\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"the collector did not start: {line!r}")
    # Keep draining stdout so the collector never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
    return Collector(proc, m.group(1).rstrip("/"), m.group(2))


def stop(c: Collector) -> None:
    c.proc.terminate()
    try:
        c.proc.wait(10)
    except subprocess.TimeoutExpired:
        c.proc.kill()


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = launch(tmp_path_factory.mktemp("collector") / "rltrace.db")
    try:
        yield c
    finally:
        stop(c)


@pytest.fixture(scope="session")
def provider(collector: Collector) -> Iterator[TracerProvider]:
    p = TracerProvider(resource=Resource.create({"service.name": "rltrace-python-tests"}), sampler=ALWAYS_ON)
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.http + "/v1/traces")))
    yield p
    p.shutdown()


@pytest.fixture
def rl(provider: TracerProvider, collector: Collector) -> Iterator[Callable[..., rltrace.Handle]]:
    """``rl(**options)`` configures rltrace on the session provider; afterwards it shuts down."""

    def make(**options: Any) -> rltrace.Handle:
        options.setdefault("collector_url", collector.http)
        return rltrace.configure(tracer_provider=provider, **options)

    yield make
    rltrace.shutdown()


def flush() -> None:
    assert rltrace.flush(), "spans were not exported in time"


def state_of(t: dict[str, Any]) -> dict[str, Any]:
    return dict(t["state"])


def attrs_of(span: dict[str, Any]) -> dict[str, Any]:
    a = span["attributes"]
    if isinstance(a, list):
        return {kv["key"]: kv["value"] for kv in a}
    return dict(a)

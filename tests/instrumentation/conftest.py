"""Fixtures of the instrumentation-library tests: the real collector binary on loopback (started once
per session on port 0, with a temporary SQLite store), the fake OpenAI/Anthropic server, and ``drive``,
which runs one instrumented agent (``drive.py``) in a fresh interpreter against both.

The binary is ``$RLTRACE_BIN``, else ``$CARGO_TARGET_DIR/debug/rltrace``, else the workspace's
``target/debug/rltrace``; a missing binary or library is an error, never a skip."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_llm import FakeLLM

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Every library the suite drives: importing them here makes a missing one fail the whole run.
LIBRARIES = [
    "openai",
    "anthropic",
    "opentelemetry.instrumentation.openai",
    "opentelemetry.instrumentation.anthropic",
    "openinference.instrumentation.openai",
    "openinference.instrumentation.anthropic",
    "opentelemetry.instrumentation.openai_v2",
    "opentelemetry.processor.baggage",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
]
for _library in LIBRARIES:
    importlib.import_module(_library)


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

    def __init__(self, proc: subprocess.Popen[str], http: str) -> None:
        self.proc = proc
        self.http = http

    def request(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        status, body = self.request(path)
        assert status == 200, (path, status, body)
        return body

    def sequence(self, sequence_id: str, count: int, timeout: float = 20.0) -> dict[str, Any]:
        """``GET /api/v1/sequences/{id}`` once it has ``count`` triplets (polled, bounded)."""
        path = "/api/v1/sequences/" + urllib.parse.quote(sequence_id, safe="")
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, last = self.request(path)
            if status == 200 and last["triplet_count"] >= count:
                return dict(last)
            time.sleep(0.1)
        raise AssertionError(f"sequence {sequence_id} did not reach {count} triplets in {timeout}s: {last}")

    def triplets(self, sequence_id: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/triplets?limit=1000&sequence_id=" + urllib.parse.quote(sequence_id, safe=""))
        return list(body["items"])

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/traces/" + trace_id)["spans"])


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    db = tmp_path_factory.mktemp("collector") / "rltrace.db"
    cmd = [str(collector_binary()), "serve", "--db", str(db), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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
    c = Collector(proc, m.group(1).rstrip("/"))
    try:
        yield c
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    try:
        yield server
    finally:
        server.close()


Drive = Callable[..., dict[str, Any]]


@pytest.fixture
def drive(collector: Collector, fake_llm: FakeLLM) -> Drive:
    """``drive(family, session, session_via="library")`` runs one agent and returns its report."""

    def run(family: str, session: str, session_via: str = "library") -> dict[str, Any]:
        cfg = {
            "family": family,
            "otlp": collector.http + "/v1/traces",
            "llm": fake_llm.base_url,
            "session": session,
            "session_via": session_via,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["PYTHONPATH"] = str(HERE)
        p = subprocess.run(
            [sys.executable, str(HERE / "drive.py"), json.dumps(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert p.returncode == 0, f"{family} failed:\n{p.stdout}\n{p.stderr}"
        report = json.loads(p.stdout.strip().splitlines()[-1])
        assert isinstance(report, dict)
        return report

    return run

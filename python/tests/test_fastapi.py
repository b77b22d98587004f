"""The ASGI middleware on a FastAPI app served by uvicorn on loopback, called over real HTTP with
httpx; triplets read back from the real collector."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import Collector, attrs_of, flush
from fastapi import FastAPI, HTTPException
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

import rltrace
import rltrace.fastapi


class Server:
    def __init__(self, app: FastAPI) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], Server]]:
    servers: list[Server] = []

    def start(app: FastAPI) -> Server:
        s = Server(app)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


class Ticket(BaseModel):
    task_id: str
    title: str


class CodeAgent:
    agent_role = "Code"

    @rltrace.rl_triplet(task_id="ticket.task_id")
    async def execute(self, ticket: Ticket) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"patch": f"fix {ticket.title}"}


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/tasks/{task_id}/run")
    async def run(task_id: str, ticket: Ticket, verbose: bool = False) -> dict[str, str]:
        return await CodeAgent().execute(ticket)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/teapot")
    def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    return app


def parse_traceparent(v: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = v.split("-")
    assert version == "00" and flags in ("00", "01")
    return trace_id, span_id


def test_requests_are_triplets_with_route_templates_and_traceparent(
    rl: Callable[..., Any], collector: Collector, serve: Callable[[FastAPI], Server]
) -> None:
    rl()
    app = rltrace.fastapi.instrument(
        make_app(),
        capture_headers={"X-User-Id": "user_id"},
        session_header="x-session-id",
        session_cookie="sid",
    )
    assert rltrace.fastapi.is_instrumented(app)
    rltrace.fastapi.instrument(app)  # a second call adds nothing
    srv = serve(app)
    browser_trace, browser_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    session, task_id = f"sess-{uuid.uuid4().hex[:8]}", f"task-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=srv.url) as http:
        r = http.post(
            f"/tasks/{task_id}/run?verbose=true&b=2&b=3",
            json={"task_id": task_id, "title": "pager"},
            headers={
                "traceparent": f"00-{browser_trace}-{browser_span}-01",
                "x-session-id": session,
                "x-user-id": "u-7",
            },
        )
        assert r.status_code == 200 and r.json() == {"patch": "fix pager"}
        out_trace, out_span = parse_traceparent(r.headers["traceparent"])
        r2 = http.get("/boom")
        assert r2.status_code == 500
        r3 = http.get("/no/such/path/123", headers={"cookie": f"theme=dark; sid={session}"})
        assert r3.status_code == 404
        r4 = http.get("/teapot", headers={"x-session-id": session})
        assert r4.status_code == 418
    flush()
    assert out_trace == browser_trace and out_span != browser_span
    spans = collector.trace(browser_trace)
    req = next(s for s in spans if s["span_id"] == out_span)
    assert req["name"] == "POST /tasks/{task_id}/run"
    assert req["parent_span_id"] == browser_span
    assert req["kind"] == "SPAN_KIND_SERVER"
    at = attrs_of(req)
    assert at["http.route"] == "/tasks/{task_id}/run" and at["http.response.status_code"] == 200
    t = collector.triplet(at["rl.triplet_id"])
    assert t["sequence_id"] == session and at["rl.sequence_scope"] == "session"
    s = t["state"]
    assert s["agent_role"] == "http" and s["method"] == "POST" and s["route"] == "/tasks/{task_id}/run"
    assert s["query_keys"] == ["b", "verbose"] and s["user_id"] == "u-7" and s["session_id"] == session
    assert task_id not in str(s)  # the raw path is never recorded
    assert t["action"]["status"] == 200 and t["action"]["success"] is True
    assert t["action"]["response_size"] == len(r.content)
    # The agent the route started: same trace, child of the request triplet, its own task sequence.
    agent = next(x for x in spans if x["parent_span_id"] == out_span)
    agent_t = collector.triplet(agent["triplet_id"])
    assert agent_t["sequence_id"] == task_id
    assert agent_t["state"]["session_id"] == session and agent_t["state"]["call_depth"] == 1
    # The session's sequence: the three requests that carried it (header or cookie), in order.
    seq = collector.sequence(session)["triplets"]
    assert [(x["state"]["route"], x["action"]["status"]) for x in seq] == [
        ("/tasks/{task_id}/run", 200),
        ("unmatched", 404),
        ("/teapot", 418),
    ]
    assert seq[2]["action"]["success"] is True
    boom = [
        x for x in collector.get("/api/v1/triplets?role=http&limit=1000")["items"] if x["state"]["route"] == "/boom"
    ]
    assert boom, "the failing request was recorded"
    b = boom[-1]
    assert b["action"]["success"] is False and b["action"]["status"] == 500
    assert b["action"]["error_type"] == "RuntimeError" and b["action"]["error_message"] == "kaboom"


def test_coexists_with_the_opentelemetry_fastapi_instrumentation(
    rl: Callable[..., Any], collector: Collector, provider: TracerProvider, serve: Callable[[FastAPI], Server]
) -> None:
    rl()
    app = make_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    rltrace.fastapi.instrument(app)
    srv = serve(app)
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    browser_trace, browser_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    r = httpx.post(
        f"{srv.url}/tasks/{task_id}/run",
        json={"task_id": task_id, "title": "both"},
        headers={"traceparent": f"00-{browser_trace}-{browser_span}-01"},
    )
    assert r.status_code == 200
    flush()
    FastAPIInstrumentor.uninstrument_app(app)
    spans = collector.trace(browser_trace)
    triplets = [s for s in spans if s["triplet_id"]]
    # One request triplet and the agent's; the OpenTelemetry spans carry no rl.* attributes.
    assert len(triplets) == 2
    otel_server = next(s for s in spans if s["parent_span_id"] == browser_span)
    assert otel_server["triplet_id"] is None
    assert not any(k.startswith("rl.") for k in attrs_of(otel_server))
    req = next(s for s in triplets if attrs_of(s).get("http.route"))
    assert req["parent_span_id"] == otel_server["span_id"]
    assert parse_traceparent(r.headers["traceparent"]) == (browser_trace, req["span_id"])
    agent = next(s for s in triplets if s is not req)
    assert agent["parent_span_id"] == req["span_id"]


def test_uninstrument(rl: Callable[..., Any], collector: Collector, serve: Callable[[FastAPI], Server]) -> None:
    rl()
    app = rltrace.fastapi.uninstrument(rltrace.fastapi.instrument(make_app()))
    assert not rltrace.fastapi.is_instrumented(app)
    srv = serve(app)
    r = httpx.get(f"{srv.url}/teapot")
    assert r.status_code == 418 and "traceparent" not in r.headers


def test_task_header_and_excluded_paths(
    rl: Callable[..., Any], collector: Collector, serve: Callable[[FastAPI], Server]
) -> None:
    rl()
    app = rltrace.fastapi.instrument(make_app(), task_header="x-task-id", excluded_paths=["/teapot"], role="api")
    srv = serve(app)
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=srv.url) as http:
        skipped = http.get("/teapot", headers={"x-task-id": task_id})
        r = http.post(f"/tasks/{task_id}/run", json={"task_id": task_id, "title": "t"}, headers={"x-task-id": task_id})
    assert skipped.status_code == 418 and "traceparent" not in skipped.headers
    assert r.status_code == 200
    flush()
    ts = collector.sequence(task_id)["triplets"]
    # The request triplet and the agent it started, both in the task's sequence; no /teapot.
    assert [(t["state"]["agent_role"], t["state"].get("route")) for t in ts] == [
        ("api", "/tasks/{task_id}/run"),
        ("Code", None),
    ]
    assert [t["sequence_index"] for t in ts] == [0, 1]

"""The reward clients against the real collector: every strategy, HITL, tests, defects, explain,
idempotency, local validation; retries on 503 through a loopback proxy in front of the collector
that answers 503 with ``Retry-After`` a given number of times, then forwards."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Collector, flush

import rltrace
from rltrace import ApiError, AsyncRewardClient, RewardClient, RewardValidationError


def make_sequence(task_id: str, roles: list[str]) -> list[dict[str, Any]]:
    class Agent:
        def __init__(self, role: str) -> None:
            self.agent_role = role

        @rltrace.rl_triplet(task_id="task_id")
        def execute(self, task_id: str) -> None:
            return None

    for r in roles:
        Agent(r).execute(task_id)
    flush()
    return []


def sources(collector: Collector, task_id: str) -> list[dict[str, float]]:
    return [t["reward_sources"] for t in collector.sequence(task_id)["triplets"]]


def test_every_strategy_and_triplet_rewards(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = f"rw-{uuid.uuid4().hex[:10]}"
    make_sequence(task_id, ["Design", "Code", "Code Review"])
    c = RewardClient(collector.http)
    ev = c.reward_sequence(task_id, 0.8, source="terminal", strategy="discounted", gamma=0.5, reason="shipped")
    assert ev["value"] == 0.8 and ev["target"]["strategy"] == "discounted" and ev["reason"] == "shipped"
    c.reward_sequence(task_id, 0.6, source="judge", strategy="last")
    c.reward_sequence(task_id, 0.3, source="review", strategy="role", role="Code")
    c.reward_sequence(task_id, 0.9, source="ops")
    first = collector.sequence(task_id)["triplets"][0]["triplet_id"]
    c.reward_triplet(first, 0.1, source="custom", metadata={"by": "test"})
    got = sources(collector, task_id)
    assert [s["terminal"] for s in got] == pytest.approx([0.8 * 0.25, 0.8 * 0.5, 0.8])
    assert ["judge" in s for s in got] == [False, False, True] and got[2]["judge"] == 0.6
    assert ["review" in s for s in got] == [False, True, False] and got[1]["review"] == 0.3
    assert [s["ops"] for s in got] == [0.9, 0.9, 0.9]
    assert got[0]["custom"] == 0.1 and "custom" not in got[1]
    # Effective reward of the first triplet: mean of local 1.0, terminal 0.2, ops 0.9, custom 0.1.
    t0 = c.explain(first)
    assert t0["reward"] == pytest.approx((1.0 + 0.2 + 0.9 + 0.1) / 4)
    assert {e["source"] for e in t0["ledger"]} >= {"terminal", "ops", "custom"}
    # The ledger events reaching it, with the values the strategies gave.
    by_source = {e["source"]: e["value"] for e in t0["ledger"]}
    assert by_source["custom"] == 0.1 and by_source["ops"] == 0.9 and by_source["terminal"] == 0.8


def test_callbacks(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = f"cb-{uuid.uuid4().hex[:10]}"
    make_sequence(task_id, ["Design", "Code", "Test"])
    c = RewardClient(collector.http)
    c.hitl(task_id, "approved_with_changes", reviewer="ann", justification="rename the helper")
    c.tests(task_id, passed=3, failed=1, skipped=2)
    c.defect(
        task_id=task_id, defect_type="80_Function", severity="High", phase_injected="Code",
        phase_removed="Test", description="off by one",
    )  # fmt: skip
    got = sources(collector, task_id)
    assert [s["hitl"] for s in got] == [0.7, 0.7, 0.7]
    assert [s["tests"] for s in got] == [0.75, 0.75, 0.75]
    assert ["defect" in s for s in got] == [False, True, False] and got[1]["defect"] == 0.5
    seq = c.sequence(task_id)
    assert seq["complete"] is True
    assert {e["source"] for e in seq["ledger"]} >= {"hitl", "tests", "defect"}


def test_idempotency_and_errors(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = f"idem-{uuid.uuid4().hex[:10]}"
    make_sequence(task_id, ["Code"])
    c = RewardClient(collector.http)
    a = c.reward_sequence(task_id, 0.5, source="terminal", idempotency_key=f"k-{task_id}")
    b = c.reward_sequence(task_id, 0.5, source="terminal", idempotency_key=f"k-{task_id}")
    assert a["reward_id"] == b["reward_id"]
    with pytest.raises(ApiError) as e:
        c.reward_sequence(task_id, 0.6, source="terminal", idempotency_key=f"k-{task_id}")
    assert e.value.status == 409
    # Without a key of yours, each call gets its own.
    x = c.reward_sequence(task_id, 0.5, source="terminal")
    y = c.reward_sequence(task_id, 0.5, source="terminal")
    assert x["reward_id"] != y["reward_id"] and x["idempotency_key"] != y["idempotency_key"]
    with pytest.raises(ApiError) as e:
        c.reward_sequence(f"missing-{task_id}", 0.5, source="terminal")
    assert e.value.status == 404
    p = c.reward_sequence(f"later-{task_id}", 0.5, source="terminal", pending=True)
    assert p["pending"] is True


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.reward_triplet("t", 1.5, source="judge"),
        lambda c: c.reward_triplet("t", float("nan"), source="judge"),
        lambda c: c.reward_triplet("t", True, source="judge"),
        lambda c: c.reward_triplet("t", 0.5, source="Judge"),
        lambda c: c.reward_triplet("", 0.5, source="judge"),
        lambda c: c.reward_sequence("s", 0.5, source="x", strategy="discounted"),
        lambda c: c.reward_sequence("s", 0.5, source="x", strategy="discounted", gamma=0.0),
        lambda c: c.reward_sequence("s", 0.5, source="x", strategy="role"),
        lambda c: c.reward_sequence("s", 0.5, source="x", strategy="best"),
        lambda c: c.reward_sequence("s", 0.5, source="x", idempotency_key="k" * 257),
        lambda c: c.hitl("s", "maybe", reviewer="a", justification="b"),
        lambda c: c.hitl("s", "approved", reviewer="a", justification="  "),
        lambda c: c.tests("s", passed=0, failed=0),
        lambda c: c.tests("s", passed=-1, failed=2),
        lambda c: c.defect(task_id="t", defect_type="85_Other", severity="High", phase_injected="Code",
                           phase_removed="Test", description="d"),
        lambda c: c.defect(task_id="t", defect_type="20_Syntax", severity="Huge", phase_injected="Code",
                           phase_removed="Test", description="d"),
        lambda c: c.defect(task_id="t", defect_type="20_Syntax", severity="Low", phase_injected="Code",
                           phase_removed="Code", description="d"),
        lambda c: c.defect(task_id="t", sequence_id="s", defect_type="20_Syntax", severity="Low",
                           phase_injected="Code", phase_removed="Test", description="d"),
    ],
)  # fmt: skip
def test_what_the_collector_would_refuse_is_refused_locally(call: Callable[[RewardClient], Any]) -> None:
    # Port 9 on loopback has no listener: a request sent would fail with a connection error.
    with pytest.raises(RewardValidationError):
        call(RewardClient("http://127.0.0.1:9"))


def test_the_collector_agrees_with_the_local_checks(collector: Collector) -> None:
    # The same bodies, sent raw, are answered 422 by the collector.
    for body in [
        {"target": {"triplet_id": "t"}, "value": 1.5, "source": "judge"},
        {"target": {"triplet_id": "t"}, "value": 0.5, "source": "Judge"},
        {"target": {"sequence_id": "s", "strategy": "discounted", "gamma": 0}, "value": 0.5, "source": "x"},
        {"target": {"sequence_id": "s", "strategy": "role"}, "value": 0.5, "source": "x"},
    ]:
        assert collector.request("POST", "/api/v1/rewards", body)[0] == 422, body
    assert (
        collector.request("POST", "/api/v1/callbacks/tests", {"sequence_id": "s", "passed": 0, "failed": 0})[0] == 422
    )


class FlakyProxy:
    """A loopback HTTP proxy in front of the collector: answers 503 with ``Retry-After`` for the
    first ``failures`` requests, then forwards; records what it received (header names in lowercase)."""

    def __init__(self, target: str, failures: int, retry_after: str = "1") -> None:
        self.target = target
        self.failures = failures
        self.retry_after = retry_after
        self.seen: list[tuple[float, dict[str, str], bytes]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                proxy.seen.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                if len(proxy.seen) <= proxy.failures:
                    msg = b'{"error":{"code":"overloaded","message":"queue full"}}'
                    self.send_response(503)
                    self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                req = urllib.request.Request(proxy.target + self.path, data=body or None, method=self.command)
                if body:
                    req.add_header("Content-Type", self.headers.get("Content-Type") or "application/json")
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, data, r_type = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    status, data, r_type = e.code, e.read(), e.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", r_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _handle
            do_POST = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky(collector: Collector) -> Iterator[Callable[..., FlakyProxy]]:
    made: list[FlakyProxy] = []

    def make(failures: int, retry_after: str = "1") -> FlakyProxy:
        p = FlakyProxy(collector.http, failures, retry_after)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_retries_on_503_honour_retry_after_with_one_idempotency_key(
    rl: Callable[..., Any], collector: Collector, flaky: Callable[..., FlakyProxy]
) -> None:
    rl()
    task_id = f"retry-{uuid.uuid4().hex[:10]}"
    make_sequence(task_id, ["Code"])
    p = flaky(2, "1")
    c = RewardClient(p.url, api_key="k-123", max_retries=3)
    started = time.monotonic()
    ev = c.reward_sequence(task_id, 0.7, source="terminal")
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1
    assert len(p.seen) == 3
    keys = {json.loads(body)["idempotency_key"] for _, _, body in p.seen}
    assert keys == {ev["idempotency_key"]}
    assert all(h.get("authorization") == "Bearer k-123" for _, h, _ in p.seen)
    assert sources(collector, task_id)[0]["terminal"] == 0.7
    # Out of retries: the 503 is raised.
    p2 = flaky(5, "0")
    with pytest.raises(ApiError) as e:
        RewardClient(p2.url, max_retries=1).reward_sequence(task_id, 0.7, source="terminal")
    assert e.value.status == 503 and e.value.code == "overloaded" and len(p2.seen) == 2


async def test_async_client(rl: Callable[..., Any], collector: Collector, flaky: Callable[..., FlakyProxy]) -> None:
    rl()
    task_id = f"async-{uuid.uuid4().hex[:10]}"
    make_sequence(task_id, ["Design", "Code"])
    p = flaky(1, "0")
    c = AsyncRewardClient(p.url)
    await c.reward_sequence(task_id, 1.0, source="terminal", strategy="last")
    await c.hitl(task_id, "rejected", reviewer="bo", justification="wrong approach")
    await c.tests(task_id, passed=1, failed=1)
    await c.defect(
        sequence_id=task_id, defect_type="20_Syntax", severity="Critical", phase_injected="Design",
        phase_removed="Code", description="typo",
    )  # fmt: skip
    first = (await c.sequence(task_id))["triplets"][0]["triplet_id"]
    await c.reward_triplet(first, 0.25, source="judge")
    got = sources(collector, task_id)
    assert "terminal" not in got[0] and got[1]["terminal"] == 1.0
    assert [s["hitl"] for s in got] == [0.0, 0.0]
    assert [s["tests"] for s in got] == [0.5, 0.5]
    assert got[0]["defect"] == 0.0 and "defect" not in got[1]
    assert got[0]["judge"] == 0.25
    ex = await c.explain(first)
    assert ex["triplet_id"] == first and ex["reward_sources"] == got[0]
    with pytest.raises(RewardValidationError):
        await c.reward_triplet(first, -0.1, source="judge")
    assert len(p.seen) == 8  # one 503, then seven requests forwarded


def test_assign_helpers_need_a_collector_url() -> None:
    rltrace.shutdown()
    with pytest.raises(RuntimeError, match="collector url"):
        rltrace.assign_reward("t", 0.5)


def test_otlp_headers_from_the_environment_reach_the_collector(
    collector: Collector, flaky: Callable[..., FlakyProxy]
) -> None:
    import os
    import subprocess
    import sys

    p = flaky(0)
    task_id = f"hdr-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RLTRACE_", "AGL_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=p.url,
        OTEL_EXPORTER_OTLP_HEADERS="x-api-key=secret-1,x-tenant=acme",
        RLTRACE_API_KEY="reward-key",
    )
    code = (
        "import rltrace\n"
        "rltrace.configure()\n"
        f"@rltrace.rl_triplet(role='Code', task_id={task_id!r})\n"
        "def f(): pass\n"
        "f()\n"
        "rltrace.flush()\n"
        f"rltrace.assign_sequence_reward({task_id!r}, 0.3, source='terminal')\n"
        "rltrace.shutdown()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    otlp = [h for _, h, _ in p.seen if h.get("content-type") == "application/x-protobuf"]
    assert otlp and all(h.get("x-api-key") == "secret-1" and h.get("x-tenant") == "acme" for h in otlp)
    rewards = [h for _, h, b in p.seen if b.startswith(b"{")]
    assert rewards and rewards[0].get("authorization") == "Bearer reward-key"
    assert sources(collector, task_id) == [{"local": 1.0, "terminal": 0.3}]

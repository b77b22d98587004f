"""``@rl_triplet`` end to end: calls are made here, spans go over OTLP/HTTP to the real collector,
and every value is read back through its REST API and compared with values computed by hand."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import Collector, attrs_of, flush
from pydantic import BaseModel

import rltrace
from rltrace import _sequence


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Task(BaseModel):
    task_id: str
    title: str
    priority: int = 2


@dataclass
class Design:
    components: list[str]
    notes: str


def compact(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()


def test_method_with_pydantic_and_dataclass_arguments(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task = Task(task_id=uid("task"), title="login page")

    class CodeAgent:
        agent_role = "Code"

        @rltrace.rl_triplet(task_id="task.task_id")
        def execute(self, task: Task, design: Design, attempt: int = 1) -> dict[str, Any]:
            return {"files": ["login.py"], "lines": 42}

    out = CodeAgent().execute(task, Design(["form", "api"], "short"))
    flush()
    seq = collector.sequence(task.task_id)
    assert seq["triplet_count"] == 1
    t = seq["triplets"][0]
    assert t["sequence_index"] == 0
    assert t["sampling_probability"] == 1.0
    s = t["state"]
    assert s["agent_role"] == "Code"
    assert s["function"] == "execute"
    assert s["call_depth"] == 0
    assert s["task_id"] == task.task_id
    assert s["args"] == {
        "task": {"task_id": task.task_id, "title": "login page", "priority": 2},
        "design": {"components": ["form", "api"], "notes": "short"},
        "attempt": 1,
    }
    a = t["action"]
    assert a["success"] is True
    assert a["output"] == out
    assert a["output_size"] == len(compact(out))
    assert a["output_sha256"] == hashlib.sha256(compact(out)).hexdigest()
    assert a["duration_ms"] >= 0
    # Immediate components success 1 and latency 1, equal weights: local reward 1.0.
    assert t["reward_sources"] == {"local": 1.0}
    assert t["reward"] == 1.0
    spans = collector.trace(t["trace_id"])
    assert [s["name"] for s in spans] == [
        "test_method_with_pydantic_and_dataclass_arguments.<locals>.CodeAgent.execute"
    ]
    at = attrs_of(spans[0])
    assert at["rl.sequence_scope"] == "pipeline"
    assert at["rl.reward.success"] == 1.0 and at["rl.reward.latency"] == 1.0
    assert "rl.reward" not in at  # no weights configured: the collector combines the components
    assert uuid.UUID(at["rl.triplet_id"]).version == 4
    assert at["rl.timestamp_utc"].endswith("Z") and len(at["rl.timestamp_utc"]) == 27


def test_nested_triplets_inherit_task_and_session_and_follow_scopes(
    rl: Callable[..., Any], collector: Collector
) -> None:
    rl()
    task_id, session_id = uid("task"), uid("sess")

    class PlanningAgent:
        agent_name = "Planning"

        @rltrace.rl_triplet
        def execute(self, goal: str) -> list[str]:
            return ["design", "code"]

    class ReviewAgent:
        agent_role = "Code Review"

        @rltrace.rl_triplet(scope="agent")
        def execute(self) -> bool:
            return True

    @rltrace.rl_triplet(role="Session", session_id="sid")
    def chat(sid: str) -> None:
        return None

    @rltrace.rl_triplet(role="Orchestrator", task_id="task_id", session_id="session_id")
    def run(task_id: str, session_id: str) -> None:
        PlanningAgent().execute("ship it")
        ReviewAgent().execute()
        ReviewAgent().execute()
        chat(session_id)

    run(task_id, session_id)
    flush()
    pipeline = collector.sequence(task_id)["triplets"]
    assert [t["state"]["agent_role"] for t in pipeline] == ["Orchestrator", "Planning"]
    assert [t["sequence_index"] for t in pipeline] == [0, 1]
    planning = pipeline[1]["state"]
    assert planning["call_depth"] == 1
    assert planning["task_id"] == task_id and planning["session_id"] == session_id
    assert planning["args"] == {"goal": "ship it"}
    review = collector.sequence(f"{task_id}:Code Review")["triplets"]
    assert [t["sequence_index"] for t in review] == [0, 1]
    assert all(t["state"]["task_id"] == task_id for t in review)
    sess = collector.sequence(session_id)["triplets"]
    assert len(sess) == 1 and sess[0]["state"]["agent_role"] == "Session"
    # All in one trace, parents before children.
    spans = collector.trace(pipeline[0]["trace_id"])
    assert len(spans) == 5
    root = spans[0]
    assert root["triplet_id"] == pipeline[0]["triplet_id"]
    assert all(s["parent_span_id"] == root["span_id"] for s in spans[1:])


def test_a_root_triplet_without_key_uses_its_trace_id(rl: Callable[..., Any], collector: Collector) -> None:
    rl()

    @rltrace.rl_triplet(role="Loose")
    def loose() -> int:
        return 3

    @rltrace.rl_triplet(role="Inner")
    def inner() -> None:
        return None

    @rltrace.rl_triplet(role="Outer")
    def outer() -> None:
        inner()

    loose()
    outer()
    flush()
    spans = []
    for s in collector.get("/api/v1/triplets?role=Loose&limit=1000")["items"]:
        spans.append(s)
    t = spans[-1]
    assert t["sequence_id"] == t["trace_id"]
    outer_t = collector.get("/api/v1/triplets?role=Outer&limit=1000")["items"][-1]
    seq = collector.sequence(outer_t["trace_id"])["triplets"]
    assert [x["state"]["agent_role"] for x in seq] == ["Outer", "Inner"]


async def test_coroutines_and_async_generators(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = uid("task")

    @rltrace.rl_triplet(role="Design", task_id="task_id")
    async def design(task_id: str) -> str:
        await asyncio.sleep(0.01)
        rltrace.state("phase", "design")
        return "spec"

    @rltrace.rl_triplet(role="Test")
    async def one_test(n: int) -> bool:
        return n % 2 == 0

    @rltrace.rl_triplet(role="Stream", task_id="task_id")
    async def stream(task_id: str, n: int) -> AsyncGenerator[int, None]:
        for i in range(n):
            await one_test(i)
            yield i

    assert await design(task_id) == "spec"
    got = [i async for i in stream(task_id, 3)]
    assert got == [0, 1, 2]
    # Closed early: recorded as such.
    agen = stream(task_id, 10)
    assert await agen.__anext__() == 0
    await agen.aclose()
    flush()
    ts = collector.sequence(task_id)["triplets"]
    roles = [t["state"]["agent_role"] for t in ts]
    assert roles == ["Design", "Stream", "Test", "Test", "Test", "Stream", "Test"]
    assert ts[0]["state"]["phase"] == "design"
    assert ts[0]["action"]["duration_ms"] >= 9  # asyncio.sleep(0.01), within the clock resolution
    assert ts[1]["action"]["yielded"] == 3 and "closed_early" not in ts[1]["action"]
    assert [t["action"]["output"] for t in ts[2:5]] == [True, False, True]
    assert ts[2]["state"]["call_depth"] == 1
    assert ts[5]["action"] == {**ts[5]["action"], "yielded": 1, "closed_early": True, "success": True}


def test_generators(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = uid("task")

    @rltrace.rl_triplet(role="Gen", task_id="task_id")
    def numbers(task_id: str) -> Iterator[int]:
        yield 1
        yield 2

    assert list(numbers(task_id)) == [1, 2]
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    assert t["action"]["yielded"] == 2 and t["action"]["success"] is True


def test_exceptions_are_recorded_and_reraised(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = uid("task")

    class TestAgent:
        agent_role = "Test"

        @rltrace.rl_triplet(task_id="self.task_id")
        def execute(self) -> None:
            raise ValueError("3 tests failed")

        def __init__(self) -> None:
            self.task_id = task_id

    with pytest.raises(ValueError, match="3 tests failed"):
        TestAgent().execute()
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    assert t["action"]["success"] is False
    assert t["action"]["error_type"] == "ValueError"
    assert t["action"]["error_message"] == "3 tests failed"
    # success 0, latency 1, equal weights.
    assert t["reward"] == 0.5
    (span,) = collector.trace(t["trace_id"])
    assert span["status"]["code"] == "STATUS_CODE_ERROR"
    assert span["status"]["message"] == "3 tests failed"
    assert [e["name"] for e in span["events"]] == ["exception"]


async def test_cancellation_is_recorded(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = uid("task")

    @rltrace.rl_triplet(role="Slow", task_id="task_id")
    async def slow(task_id: str) -> None:
        await asyncio.sleep(10)

    job = asyncio.create_task(slow(task_id))
    await asyncio.sleep(0.02)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    assert t["action"]["success"] is False and t["action"]["cancelled"] is True


@pytest.mark.parametrize("mode", ["full", "truncate:5", "hash", "none"])
def test_capture_modes(rl: Callable[..., Any], collector: Collector, mode: str) -> None:
    rl(capture=mode)
    task_id = uid("task")
    long = "é" * 40  # 40 characters, 80 UTF-8 bytes: longer than 64 bytes
    short = "abcdefgh"

    @rltrace.rl_triplet(role="Cap", task_id="task_id")
    def f(task_id: str, prompt: str, tag: str) -> str:
        return prompt

    f(task_id, long, short)
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    args, out = t["state"]["args"], t["action"]["output"]
    # The digest is of the full output whatever the mode.
    assert t["action"]["output_sha256"] == hashlib.sha256(compact(long)).hexdigest()
    if mode == "full":
        assert args["prompt"] == long and out == long and args["tag"] == short
    elif mode == "truncate:5":
        assert args["prompt"] == "ééééé…" and out == "ééééé…" and args["tag"] == "abcde…"
    elif mode == "hash":
        h = "sha256:" + hashlib.sha256(long.encode()).hexdigest()
        assert args["prompt"] == h and out == h and args["tag"] == short
    else:
        assert args["prompt"] is None and out is None and args["tag"] == short
    # The state's own task id is kept as it is; as a captured argument it follows the mode.
    assert t["state"]["task_id"] == task_id
    assert args["task_id"] == ("task-…" if mode == "truncate:5" else task_id)


def test_per_function_capture_skip_and_capturers(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = uid("task")

    @rltrace.rl_triplet(role="Skip", task_id="task_id", skip=["secret"], capture="truncate:3")
    def skipping(task_id: str, secret: str, text: str) -> None:
        return None

    @rltrace.rl_triplet(
        role="Custom",
        task_id="task_id",
        state_capturer=lambda task_id, big: {"size": len(big)},
        action_capturer=lambda result: {"n": len(result)},
    )
    def custom(task_id: str, big: list[int]) -> list[int]:
        return big[:2]

    skipping(task_id, "hunter2", "abcdef")
    custom(task_id, list(range(100)))
    flush()
    a, b = collector.sequence(task_id)["triplets"]
    assert "secret" not in a["state"]["args"] and a["state"]["args"]["text"] == "abc…"
    assert b["state"]["args"] == {"size": 100}
    assert b["action"]["output"] == {"n": 2}
    assert b["action"]["output_size"] == len(compact({"n": 2}))


def test_reward_components_and_weights(rl: Callable[..., Any], collector: Collector) -> None:
    rl(reward_weights={"success": 0.4, "latency": 0.2, "cost": 0.2, "validation": 0.2})
    task_id = uid("task")

    @rltrace.rl_triplet(role="Code", task_id="task_id")
    def code(task_id: str) -> None:
        rltrace.reward_component("cost", 0.5)
        rltrace.reward_component("validation", 0.25)
        rltrace.action("tokens", 1234)
        with pytest.raises(rltrace.RewardValidationError):
            rltrace.reward_component("cost", 1.5)
        with pytest.raises(rltrace.RewardValidationError):
            rltrace.reward_component("Cost", 0.5)

    code(task_id)
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    expected = (0.4 * 1.0 + 0.2 * 1.0 + 0.2 * 0.5 + 0.2 * 0.25) / 1.0
    assert t["reward"] == pytest.approx(expected, abs=1e-12)
    assert t["action"]["tokens"] == 1234
    at = attrs_of(collector.trace(t["trace_id"])[0])
    assert at["rl.reward"] == pytest.approx(0.75)
    assert at["rl.reward.cost"] == 0.5 and at["rl.reward.validation"] == 0.25


def test_latency_budget(rl: Callable[..., Any], collector: Collector) -> None:
    rl(latency_budget_s=0.01)
    task_id = uid("task")

    @rltrace.rl_triplet(role="Slow", task_id="task_id")
    def slow(task_id: str) -> None:
        time.sleep(0.05)

    slow(task_id)
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    latency = attrs_of(collector.trace(t["trace_id"])[0])["rl.reward.latency"]
    # budget / duration, the duration being the one recorded in the action.
    assert latency == pytest.approx(10.0 / t["action"]["duration_ms"], rel=1e-9)
    assert latency < 0.25
    assert t["reward"] == pytest.approx((1.0 + latency) / 2)


def test_sampling_keeps_or_drops_whole_sequences(rl: Callable[..., Any], collector: Collector) -> None:
    rl(sampling_ratio=0.5)
    ids = [uid("sampled") for _ in range(30)]

    @rltrace.rl_triplet(role="Child", scope="agent")
    def child() -> None:
        return None

    @rltrace.rl_triplet(role="Step")
    def step() -> None:
        child()

    @rltrace.rl_triplet(role="Root", task_id="task_id")
    def root(task_id: str) -> None:
        step()
        step()

    for i in ids:
        root(i)
    flush()
    limit = int(0.5 * 2**64)
    kept = 0
    for i in ids:
        want = int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") < limit
        status = collector.status_of(f"/api/v1/sequences/{i}")
        agent_seq = f"{i}:Child"
        want_child = int.from_bytes(hashlib.sha256(agent_seq.encode()).digest()[:8], "big") < limit
        if want:
            kept += 1
            seq = collector.sequence(i)
            assert seq["triplet_count"] == 3, i
            assert all(t["sampling_probability"] == 0.5 for t in seq["triplets"])
        else:
            assert status == 404, i
        # The agent-scoped child is another sequence: it has its own decision, as in the Rust SDK.
        assert (collector.status_of(f"/api/v1/sequences/{agent_seq}") == 200) == want_child
    assert 0 < kept < len(ids)


def test_sampling_hash_is_the_rust_sdks() -> None:
    # The same constant as crates/rltrace-sdk/src/sequence.rs.
    assert _sequence.sequence_hash("abc") == 0xBA78_16BF_8F01_CFEA
    assert _sequence.threshold(1.0) is None and _sequence.threshold(0.0) == 0


def test_end_sequence_and_reward_events(rl: Callable[..., Any], collector: Collector) -> None:
    rl()
    task_id = uid("task")

    @rltrace.rl_triplet(role="Judge", task_id="task_id")
    def judge(task_id: str) -> None:
        assert rltrace.current_sequence_id() == task_id
        assert rltrace.current_triplet_id() is not None
        rltrace.reward(0.3, source="judge", reason="verbose")
        rltrace.reward(0.9, source="terminal", sequence=True, strategy="discounted", gamma=0.5)
        rltrace.end_sequence()

    judge(task_id)
    flush()
    seq = collector.sequence(task_id)
    assert seq["complete"] is True
    (t,) = seq["triplets"]
    assert t["reward_sources"]["judge"] == 0.3
    assert t["reward_sources"]["terminal"] == 0.9  # the last (only) triplet: 0.9 * 0.5**0
    assert {e["source"] for e in seq["ledger"]} >= {"judge", "terminal"}
    with pytest.raises(RuntimeError):
        rltrace.reward(0.5)


def test_state_providers_merge_and_never_break_the_call(rl: Callable[..., Any], collector: Collector) -> None:
    def budget() -> dict[str, Any]:
        return {"budget_remaining": 12.5, "active_agents": ["Code", "Test"]}

    def broken() -> dict[str, Any]:
        raise RuntimeError("database down")

    def slow() -> dict[str, Any]:
        time.sleep(3)
        return {"slow": True}

    rl(state_providers=[budget, broken, slow], state_provider_interval_s=0.2)
    task_id = uid("task")

    @rltrace.rl_triplet(role="Plan", task_id="task_id")
    def plan(task_id: str) -> None:
        rltrace.state("budget_remaining", 11)

    started = time.monotonic()
    plan(task_id)
    assert time.monotonic() - started < 0.5
    flush()
    (t,) = collector.sequence(task_id)["triplets"]
    # The helper's field wins over the provider's.
    assert t["state"]["budget_remaining"] == 11
    assert t["state"]["active_agents"] == ["Code", "Test"]


def test_unconfigured_functions_run_untouched() -> None:
    rltrace.shutdown()

    @rltrace.rl_triplet(role="X", task_id="t")
    def f(t: str) -> str:
        rltrace.state("k", 1)
        rltrace.reward(0.5)
        return t * 2

    assert f("ab") == "abab"
    assert rltrace.current_triplet_id() is None


def test_bad_settings_are_errors() -> None:
    with pytest.raises(rltrace.ConfigError, match="capture"):
        rltrace.configure(capture="truncate:0")
    with pytest.raises(rltrace.ConfigError, match="weight"):
        rltrace.configure(reward_weights={"success": -1})
    with pytest.raises(rltrace.ConfigError, match="sampling_ratio"):
        rltrace.configure(sampling_ratio=1.5)
    with pytest.raises(rltrace.ConfigError, match="scope"):
        rltrace.rl_triplet(scope="global")(lambda: None)
    with pytest.raises(rltrace.ConfigError, match="skip"):
        rltrace.rl_triplet(skip=["nope"])(lambda: None)

"""Agents traced by the instrumentation libraries people run, with no rltrace code, become triplets.

Each test runs one agent (``drive.py``, a fresh interpreter) with the real ``openai`` or
``anthropic`` client and one instrumentation library against the fake server, exporting over
OTLP/HTTP to the real collector, then reads the triplets back through the REST API and checks every
field of DESIGN section 3's LLM-call paragraph, the tool call, the order within the sequence, and
that the libraries' other spans stay plain spans."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Collector, Drive
from drive import SYSTEM, TOOL_ARGS, TOOL_RESULT, USER
from fake_llm import (
    ANTHROPIC_PLAIN,
    ANTHROPIC_RESPONSE_MODEL,
    ANTHROPIC_STREAM,
    OPENAI_PLAIN,
    OPENAI_RESPONSE_MODEL,
    OPENAI_STREAM,
)


@dataclass(frozen=True)
class Expect:
    """What one family's triplets must hold."""

    provider: str
    model: str
    response_model: str
    # None: the client has no such parameter (the Anthropic client of today takes no temperature).
    temperature: float | None
    plain_stop: str
    stream_stop: str
    plain_tokens: tuple[int, int]
    stream_tokens: tuple[int, int]
    # "openinference": a TOOL span from OpenInference's @tracer.tool; "genai": an execute_tool span.
    tool: str


def _openai(tool: str) -> Expect:
    return Expect(
        provider="openai",
        model="gpt-4o-mini",
        response_model=OPENAI_RESPONSE_MODEL,
        temperature=0.2,
        plain_stop=str(OPENAI_PLAIN["finish_reason"]),
        stream_stop=str(OPENAI_STREAM["finish_reason"]),
        plain_tokens=(int(OPENAI_PLAIN["prompt_tokens"]), int(OPENAI_PLAIN["completion_tokens"])),
        stream_tokens=(int(OPENAI_STREAM["prompt_tokens"]), int(OPENAI_STREAM["completion_tokens"])),
        tool=tool,
    )


def _anthropic(tool: str, plain_stop: str, stream_stop: str, stream_out: int) -> Expect:
    return Expect(
        provider="anthropic",
        model="claude-haiku-4-5",
        response_model=ANTHROPIC_RESPONSE_MODEL,
        temperature=None,
        plain_stop=plain_stop,
        stream_stop=stream_stop,
        plain_tokens=(int(ANTHROPIC_PLAIN["input_tokens"]), int(ANTHROPIC_PLAIN["output_tokens"])),
        stream_tokens=(int(ANTHROPIC_STREAM["input_tokens"]), stream_out),
        tool=tool,
    )


ANTHROPIC_STOP = (str(ANTHROPIC_PLAIN["stop_reason"]), str(ANTHROPIC_STREAM["stop_reason"]))
FAMILIES: dict[str, Expect] = {
    "openai-openllmetry": _openai("genai"),
    "openai-openinference": _openai("openinference"),
    "openai-contrib": _openai("genai"),
    # OpenInference and the client's own spans keep Anthropic's stop reasons as the API gives them.
    "anthropic-openinference": _anthropic("openinference", *ANTHROPIC_STOP, int(ANTHROPIC_STREAM["output_tokens"])),
    "anthropic-native": _anthropic("genai", *ANTHROPIC_STOP, int(ANTHROPIC_STREAM["output_tokens"])),
    # OpenLLMetry maps them to the GenAI names, and counts the streamed output tokens of
    # message_start (1) and message_delta (3) together.
    "anthropic-openllmetry": _anthropic("genai", "stop", "length", 1 + int(ANTHROPIC_STREAM["output_tokens"])),
}


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    a = span["attributes"]
    if isinstance(a, list):
        return {kv["key"]: kv["value"] for kv in a}
    return dict(a)


def _duration(action: dict[str, Any], at_least: float = 0.0) -> None:
    d = action["duration_ms"]
    assert isinstance(d, (int, float)) and math.isfinite(d) and d > at_least, action


def check_llm(t: dict[str, Any], e: Expect, kind: str) -> None:
    """One LLM-call triplet: ``kind`` is plain, stream, fail500 or fail400."""
    state, action = t["state"], t["action"]
    where = f"{kind}: state={state} action={action}"
    assert state["llm_model"] == e.model, where
    assert state["llm_provider"] == e.provider, where
    if kind in ("plain", "stream"):
        assert state["prompt"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}], where
        assert state["max_tokens"] == 64, where
        if e.temperature is not None:
            assert state["temperature"] == pytest.approx(e.temperature), where
        else:
            assert "temperature" not in state, where
        text, stop, tokens = (
            ("7", e.plain_stop, e.plain_tokens) if kind == "plain" else ("seven", e.stream_stop, e.stream_tokens)
        )
        assert action["llm_response"] == [{"role": "assistant", "content": text}], where
        assert action["llm_stop_reason"] == stop, where
        assert action["llm_response_model"] == e.response_model, where
        assert (action["llm_tokens_in"], action["llm_tokens_out"]) == tokens, where
        assert action["success"] is True, where
    else:
        assert state["prompt"] == [{"role": "user", "content": kind}], where
        assert state["max_tokens"] == 8, where
        assert action["success"] is False, where
        for absent in ("llm_response", "llm_response_model", "llm_stop_reason", "llm_tokens_in", "llm_tokens_out"):
            assert absent not in action, f"{absent} on a failed call: {where}"
    _duration(action)


def check_tool(t: dict[str, Any], e: Expect) -> None:
    state, action = t["state"], t["action"]
    where = f"tool: state={state} action={action}"
    assert state["tool_name"] == "get_weather", where
    assert state["tool_arguments"] == TOOL_ARGS, where
    if e.tool == "genai":
        assert state["tool_call_id"] == "call_weather_1", where
    else:
        # OpenInference's @tracer.tool has no call id of its own.
        assert "tool_call_id" not in state, where
    assert action["tool_result"] == TOOL_RESULT, where
    assert action["success"] is True, where
    _duration(action, at_least=10.0)
    assert "llm_model" not in state, where


def check_run(collector: Collector, report: dict[str, Any], family: str, sequence_id: str) -> list[dict[str, Any]]:
    """The five triplets of a run in one sequence, in time order, each checked; the run's other
    spans stay plain spans."""
    e = FAMILIES[family]
    assert report["errors"] == [500, 400], report
    assert (report["plain"], report["stream"]) == ("7", "seven"), report
    seq = collector.sequence(sequence_id, 5)
    triplets = seq["triplets"]
    assert [t["sequence_index"] for t in triplets] == [0, 1, 2, 3, 4], seq
    kinds = ["plain", "tool", "stream", "fail500", "fail400"]
    assert len(triplets) == len(kinds), [t["state"] for t in triplets]
    for t, kind in zip(triplets, kinds, strict=True):
        assert t["sequence_id"] == sequence_id
        if kind == "tool":
            check_tool(t, e)
        else:
            check_llm(t, e, kind)
    starts = [t["timestamp_utc"] for t in triplets]
    assert starts == sorted(starts), starts

    # Every span of the run is stored; only the LLM and tool calls are triplets.
    spans = collector.trace(report["trace_id"])
    triplet_spans = [s for s in spans if s["triplet_id"] is not None]
    assert sorted(s["triplet_id"] for s in triplet_spans) == sorted(t["triplet_id"] for t in triplets), spans
    plain = [s for s in spans if s["triplet_id"] is None]
    names = {s["name"] for s in plain}
    assert "agent.run" in names, names
    for s in plain:
        a = _attrs(s)
        assert a.get("gen_ai.operation.name") not in ("chat", "execute_tool"), s
        assert str(a.get("openinference.span.kind", "")).upper() not in ("LLM", "TOOL"), s
    if family.startswith("openai-"):
        # The embeddings call is traced by every OpenAI instrumentation, and is no LLM call.
        assert any(
            "embedding" in s["name"].lower() or _attrs(s).get("gen_ai.operation.name") == "embeddings" for s in plain
        ), names
    if "openinference" in family:
        assert any(_attrs(s).get("openinference.span.kind") == "CHAIN" for s in plain), names
    return list(triplets)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_session_as_the_library_sets_it(collector: Collector, drive: Drive, family: str) -> None:
    """OpenLLMetry association properties, OpenInference ``using_session``, baggage copied to spans
    by the contrib BaggageSpanProcessor, the Anthropic client's ``conversation_id``."""
    session = f"sess-{family}"
    report = drive(family, session)
    check_run(collector, report, family, session)


@pytest.mark.parametrize("family", ["openai-contrib", "anthropic-openllmetry"])
def test_session_on_the_resource(collector: Collector, drive: Drive, family: str) -> None:
    session = f"res-{family}"
    report = drive(family, session, session_via="resource")
    check_run(collector, report, family, session)


def test_no_session_the_trace_is_the_sequence(collector: Collector, drive: Drive) -> None:
    report = drive("openai-openinference", "unused", session_via="none")
    check_run(collector, report, "openai-openinference", report["trace_id"])


def test_explicit_rl_attributes_win(collector: Collector, drive: Drive) -> None:
    """rl.* attributes on OpenLLMetry's chat spans: their sequence and state fields win over the
    association property's session and the mapped fields; the rest is still mapped."""
    family = "openai-openllmetry"
    session = "T-7:Code"
    report = drive(family, session, session_via="explicit")
    seq = collector.sequence(session, 4)
    llm = seq["triplets"]
    assert len(llm) == 4, [t["state"] for t in llm]
    e = FAMILIES[family]
    for t, kind in zip(llm, ["plain", "stream", "fail500", "fail400"], strict=True):
        assert t["state"]["llm_model"] == "router-model", t
        assert t["state"]["agent_role"] == "Code", t
        t["state"]["llm_model"] = e.model
        check_llm(t, e, kind)
    # The tool span carries no rl.*: it stays in the association property's session.
    tools = collector.sequence(f"assoc-{session}", 1)["triplets"]
    assert [t["state"].get("tool_name") for t in tools] == ["get_weather"], tools
    check_tool(tools[0], e)
    assert report["errors"] == [500, 400]

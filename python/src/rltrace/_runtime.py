"""The triplet machinery shared by ``@rl_triplet`` and the ASGI middleware: the installed runtime
(tracer and settings), the frame of the current triplet carried in the OpenTelemetry context (so
it follows ``await``, threads started with a copied context and nested calls), and :class:`Call`,
one triplet from start to end. Same wire conventions and sequence rules as the Rust SDK's
``runtime.rs``."""

from __future__ import annotations

import contextvars
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from . import _sequence
from ._capture import JSON, apply_mode, capture, dumps, output_fields, rfc3339_utc, to_json
from ._config import CaptureMode, Settings, latency_reward

log = logging.getLogger("rltrace")

SCOPES = ("pipeline", "agent", "session", "custom")

_FRAME_KEY = otel_context.create_key("rltrace.frame")
_next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("rltrace_next_trace_id", default=None)
_next_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("rltrace_next_span_id", default=None)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_rand = random.Random()


def random_span_id() -> int:
    while True:
        t = _rand.getrandbits(64)
        if t:
            return t


def random_trace_id() -> int:
    while True:
        t = _rand.getrandbits(128)
        if t:
            return t


def new_triplet_id() -> str:
    """A random UUID v4, lowercase and hyphenated, as the Rust SDK writes it."""
    n = _rand.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _IdGenerator:
    """Wraps a tracer's id generator so that a root triplet may choose its trace id beforehand:
    its sequence id (the trace id when no key is given) must be known for the sampling decision
    before the span starts. Set only on rltrace's own tracer object."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_trace_id(self) -> int:
        t = _next_trace_id.get()
        if t is not None:
            return t
        return int(self.inner.generate_trace_id())

    def generate_span_id(self) -> int:
        t = _next_span_id.get()
        if t is not None:
            return t
        return int(self.inner.generate_span_id())

    def is_trace_id_random(self) -> bool:
        f = getattr(self.inner, "is_trace_id_random", None)
        return bool(f()) if callable(f) else True


class StateProviders:
    """State providers, each refreshed by its own background thread every ``interval_s``: a
    triplet reads the latest merged snapshot and never waits for a provider, so a slow or failing
    provider never slows or breaks a call (nor holds the others up). A failing provider is logged
    (once a minute at most) and left out of the snapshot until it answers again."""

    def __init__(self, providers: list[Callable[[], Mapping[str, Any]]], interval_s: float) -> None:
        self.providers = providers
        self.interval_s = interval_s
        self.snapshot: dict[str, JSON] = {}
        self._values: list[dict[str, JSON] | None] = [None] * len(providers)
        self._answered = [threading.Event() for _ in providers]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_warning: dict[int, float] = {}
        for i in range(len(providers)):
            threading.Thread(target=self._run, args=(i,), name=f"rltrace-state-provider-{i}", daemon=True).start()

    def wait_first(self, timeout_s: float) -> None:
        """Wait until every provider answered once, at most ``timeout_s`` in all."""
        deadline = time.monotonic() + timeout_s
        for e in self._answered:
            e.wait(max(0.0, deadline - time.monotonic()))

    def refresh(self, i: int) -> None:
        p = self.providers[i]
        value: dict[str, JSON] | None = None
        try:
            v = p()
            if not isinstance(v, Mapping):
                raise TypeError(f"a state provider must return a mapping, got {type(v).__name__}")
            j = to_json(v)
            value = j if isinstance(j, dict) else None
        except Exception as e:
            now = time.monotonic()
            if now - self._last_warning.get(i, -1e9) > 60:
                self._last_warning[i] = now
                log.warning("rltrace state provider %r failed: %s", getattr(p, "__name__", p), e)
        with self._lock:
            self._values[i] = value
            merged: dict[str, JSON] = {}
            for d in self._values:
                if d:
                    merged.update(d)
            self.snapshot = merged

    def _run(self, i: int) -> None:
        while not self._stop.is_set():
            self.refresh(i)
            self._answered[i].set()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()


class Runtime:
    """What an installed SDK holds."""

    def __init__(
        self,
        tracer: Any,
        settings: Settings,
        providers: StateProviders | None,
        collector_url: str | None,
        api_key: str | None,
    ) -> None:
        self.tracer = tracer
        self.settings = settings
        self.threshold = _sequence.threshold(settings.sampling_ratio)
        self.providers = providers
        self.collector_url = collector_url
        self.api_key = api_key
        self.sdk_tracer = hasattr(tracer, "id_generator")
        if self.sdk_tracer:
            tracer.id_generator = _IdGenerator(tracer.id_generator)
        link = settings.agentlightning
        self.static_attributes: dict[str, Any] = {"rl.sampling.probability": settings.sampling_ratio}
        if link is not None:
            self.static_attributes["agentlightning.rollout_id"] = link.rollout_id
            self.static_attributes["agentlightning.attempt_id"] = link.attempt_id


_runtime: Runtime | None = None


def current() -> Runtime | None:
    return _runtime


def install(rt: Runtime | None) -> None:
    global _runtime
    _runtime = rt


class Frame:
    """The current triplet as the code it runs sees it (stored in the OpenTelemetry context)."""

    __slots__ = (
        "action",
        "components",
        "depth",
        "events",
        "sampled",
        "scope",
        "sequence_end",
        "sequence_id",
        "session_id",
        "span",
        "state",
        "task_id",
        "triplet_id",
    )

    def __init__(
        self,
        sequence_id: str,
        scope: str,
        task_id: str | None,
        session_id: str | None,
        depth: int,
        sampled: bool,
        triplet_id: str | None,
        span: Any,
    ) -> None:
        self.sequence_id = sequence_id
        self.scope = scope
        self.task_id = task_id
        self.session_id = session_id
        self.depth = depth
        self.sampled = sampled
        self.triplet_id = triplet_id
        self.span = span
        self.state: dict[str, JSON] | None = None
        self.action: dict[str, JSON] | None = None
        self.components: dict[str, float] | None = None
        self.events: list[tuple[int, dict[str, Any]]] | None = None
        self.sequence_end = False


def current_frame(ctx: otel_context.Context | None = None) -> Frame | None:
    f = otel_context.get_value(_FRAME_KEY, ctx)
    return f if isinstance(f, Frame) else None


def recording_frame() -> Frame | None:
    f = otel_context.get_value(_FRAME_KEY)
    return f if isinstance(f, Frame) and f.sampled else None


class Call:
    """One triplet from its start to its end.

    With the OpenTelemetry SDK's tracer the span is created when the triplet ends, with the
    start time taken at the call's start, every attribute at once, and the ids chosen at the
    start (through the tracer's id generator): while the call runs, the context holds a
    placeholder span context with those ids, so children and propagated ``traceparent`` headers
    name the triplet's span. Other tracers get a span started at the call's start."""

    __slots__ = (
        "budget_s",
        "ctx",
        "frame",
        "ids",
        "kind",
        "mode",
        "name",
        "parent",
        "rt",
        "span",
        "start_attrs",
        "start_ns",
        "state",
    )

    def __init__(
        self,
        ctx: otel_context.Context,
        rt: Runtime | None,
        frame: Frame,
        span: Any,
        state: dict[str, JSON],
        start_ns: int,
        mode: CaptureMode,
        budget_s: float,
    ) -> None:
        self.ctx = ctx
        self.rt = rt
        self.frame = frame
        self.span = span
        self.state = state
        self.start_ns = start_ns
        self.mode = mode
        self.budget_s = budget_s
        self.ids: tuple[int | None, int] | None = None
        self.parent: otel_context.Context | None = None
        self.name = ""
        self.kind = SpanKind.INTERNAL
        self.start_attrs: dict[str, Any] | None = None

    @property
    def recording(self) -> bool:
        return self.span is not None

    def attach(self) -> object:
        return otel_context.attach(self.ctx)

    @staticmethod
    def detach(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    def finish(
        self,
        success: bool = True,
        error_type: str | None = None,
        error_message: str | None = None,
        fields: dict[str, JSON] | None = None,
        attributes: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        name: str | None = None,
    ) -> None:
        span = self.span
        if span is None:
            return
        self.span = None
        end_ns = time.time_ns()
        elapsed_s = max(0, end_ns - self.start_ns) / 1e9
        frame = self.frame
        mode = self.mode
        state = self.state
        if frame.state:
            for k, v in frame.state.items():
                state[k] = apply_mode(v, mode)
        action: dict[str, JSON] = {"success": success, "duration_ms": elapsed_s * 1000.0}
        if error_type is not None:
            action["error_type"] = error_type
            if error_message is not None:
                action["error_message"] = apply_mode(error_message, mode)
        if fields:
            action.update(fields)
        if frame.action:
            for k, v in frame.action.items():
                action[k] = apply_mode(v, mode)
        given = frame.components
        budget = self.budget_s
        if given:
            comps = {
                "success": given.get("success", 1.0 if success else 0.0),
                "latency": given.get("latency", 1.0 if elapsed_s <= budget else latency_reward(elapsed_s, budget)),
            }
            comps.update(given)
        else:
            comps = {
                "success": 1.0 if success else 0.0,
                "latency": 1.0 if elapsed_s <= budget else latency_reward(elapsed_s, budget),
            }
        try:
            state_json = _ENCODER.encode(state)
        except (TypeError, ValueError):
            state_json = dumps(to_json(state))
        try:
            action_json = _ENCODER.encode(action)
        except (TypeError, ValueError):
            action_json = dumps(to_json(action))
        attrs = self.start_attrs if self.start_attrs is not None else {}
        attrs["rl.state"] = state_json
        attrs["rl.action"] = action_json
        rt = self.rt
        weights = rt.settings.reward_weights if rt is not None else None
        if weights is not None:
            r = weights.combine(comps)
            if r is not None:
                attrs["rl.reward"] = r
        for c, v in comps.items():
            attrs["rl.reward." + c] = v
        if frame.sequence_end:
            attrs["rl.sequence_end"] = True
        if attributes:
            attrs.update(attributes)
        if self.ids is not None and rt is not None:
            trace_id, span_id = self.ids
            t1 = _next_trace_id.set(trace_id)
            t2 = _next_span_id.set(span_id)
            try:
                span = rt.tracer.start_span(
                    name or self.name, context=self.parent, kind=self.kind, attributes=attrs, start_time=self.start_ns
                )
            finally:
                _next_span_id.reset(t2)
                _next_trace_id.reset(t1)
        else:
            span.set_attributes(attrs)
            if name is not None:
                span.update_name(name)
        if frame.events:
            for at, ev in frame.events:
                span.add_event("rl.reward", ev, timestamp=at)
        if exception is not None:
            span.record_exception(exception, timestamp=end_ns)
        if not success:
            span.set_status(Status(StatusCode.ERROR, error_message or error_type or "error"))
        span.end(end_time=end_ns)
        if frame.sequence_end:
            _sequence.forget(frame.sequence_id)


def start(
    rt: Runtime,
    parent: otel_context.Context,
    *,
    name: str,
    kind: SpanKind,
    scope: str,
    role: str | None,
    function: str | None,
    task_id: str | None,
    session_id: str | None,
    sequence_id: str | None,
    args: Callable[[CaptureMode], tuple[str, JSON] | None] | None,
    capture_mode: CaptureMode | None,
    latency_budget_s: float | None,
    extra_attributes: dict[str, Any] | None = None,
) -> Call:
    """Start a triplet under ``parent``; the result is not yet attached."""
    pf = parent.get(_FRAME_KEY)
    if not isinstance(pf, Frame):
        pf = None
    explicit_task = task_id is not None
    if task_id is None and pf is not None:
        task_id = pf.task_id
    if session_id is None and pf is not None:
        session_id = pf.session_id
    if scope == "custom":
        keyed = sequence_id
    elif scope == "session":
        keyed = session_id
    elif scope == "agent":
        keyed = f"{task_id}:{role}" if task_id is not None and role is not None else None
    else:
        # Without its own key a pipeline triplet continues the sequence of its parent.
        keyed = task_id if explicit_task else None
    parent_sc = trace.get_current_span(parent).get_span_context()
    root_trace: int | None = None if parent_sc.is_valid else random_trace_id()
    if keyed is not None:
        seq, sc = keyed, scope
    elif pf is not None:
        seq, sc = pf.sequence_id, pf.scope
    else:
        tid = parent_sc.trace_id if root_trace is None else root_trace
        seq, sc = f"{tid:032x}", "custom"
    if pf is not None and pf.sequence_id == seq:
        sampled = pf.sampled
    else:
        sampled = _sequence.keep(seq, rt.threshold)
    depth = pf.depth + 1 if pf is not None else 0
    mode = capture_mode or rt.settings.capture
    budget = latency_budget_s if latency_budget_s is not None else rt.settings.latency_budget_s
    if not sampled:
        frame = Frame(seq, sc, task_id, session_id, depth, False, None, None)
        return Call(otel_context.set_value(_FRAME_KEY, frame, parent), None, frame, None, {}, 0, mode, budget)

    index = _sequence.next_index(seq)
    triplet_id = new_triplet_id()
    state: dict[str, JSON] = {}
    if role is not None:
        state["agent_role"] = role
    if function is not None:
        state["function"] = function
    state["call_depth"] = depth
    if task_id is not None:
        state["task_id"] = task_id
    if session_id is not None:
        state["session_id"] = session_id
    if args is not None:
        try:
            kv = args(mode)
        except Exception as e:
            kv = ("capture_error", f"{type(e).__name__}: {e}")
        if kv is not None:
            state[kv[0]] = kv[1]
    if rt.providers is not None:
        for k, v in rt.providers.snapshot.items():
            state[k] = apply_mode(v, mode)
    start_ns = time.time_ns()
    attrs: dict[str, Any] = {
        "rl.triplet_id": triplet_id,
        "rl.sequence_id": seq,
        "rl.sequence_scope": sc,
        "rl.sequence_index": index,
        "rl.timestamp_utc": rfc3339_utc(start_ns),
    }
    attrs.update(rt.static_attributes)
    if extra_attributes:
        attrs.update(extra_attributes)
    if rt.sdk_tracer:
        span_id = random_span_id()
        trace_id = parent_sc.trace_id if root_trace is None else root_trace
        placeholder = NonRecordingSpan(SpanContext(trace_id, span_id, False, _SAMPLED, parent_sc.trace_state))
        frame = Frame(seq, sc, task_id, session_id, depth, True, triplet_id, placeholder)
        values = dict(parent)
        values[_FRAME_KEY] = frame
        values[_SPAN_KEY] = placeholder
        call = Call(otel_context.Context(values), rt, frame, placeholder, state, start_ns, mode, budget)
        call.ids = (root_trace, span_id)
        call.parent = parent
        call.name = name
        call.kind = kind
        call.start_attrs = attrs
        return call
    if root_trace is not None and keyed is None:
        tok = _next_trace_id.set(root_trace)
    else:
        tok = None
    span = rt.tracer.start_span(name, context=parent, kind=kind, attributes=attrs, start_time=start_ns)
    if tok is not None:
        _next_trace_id.reset(tok)
    if root_trace is not None and keyed is None:
        # A tracer that is not the OpenTelemetry SDK's chose its own trace id: the sequence
        # follows it (the sampling decision was taken on the id chosen beforehand).
        real = span.get_span_context().trace_id
        if real and f"{real:032x}" != seq:
            seq = f"{real:032x}"
            span.set_attribute("rl.sequence_id", seq)
    frame = Frame(seq, sc, task_id, session_id, depth, True, triplet_id, span)
    ctx = trace.set_span_in_context(span, otel_context.set_value(_FRAME_KEY, frame, parent))
    return Call(ctx, rt, frame, span, state, start_ns, mode, budget)


def captured(value: Any, mode: CaptureMode) -> JSON:
    return capture(value, mode)


__all__ = ["SCOPES", "Call", "Frame", "Runtime", "StateProviders", "current", "install", "output_fields", "start"]

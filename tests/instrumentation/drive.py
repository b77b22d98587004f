"""One instrumented agent run, in a fresh interpreter (instrumentors patch the clients for the whole
process, so each library runs alone): set up the OpenTelemetry SDK with its OTLP/HTTP exporter
pointed at the collector, instrument the real client with one library, make the calls of a run
against the fake server, emit a tool call the way that library's users do, flush, and print a JSON
report on stdout.

    python drive.py '{"family": "openai-openinference", "otlp": "http://127.0.0.1:N/v1/traces",
                      "llm": "http://127.0.0.1:M", "session": "S", "session_via": "library"}'

Families: openai-openllmetry, openai-openinference, openai-contrib (opentelemetry-instrumentation-
openai-v2), anthropic-openinference, anthropic-openllmetry, anthropic-native (the Anthropic client's
own spans). ``session_via``: ``library`` (how that library's users name a session: OpenLLMetry
association properties, OpenInference ``using_session``, baggage copied to spans by the contrib
``BaggageSpanProcessor``, the Anthropic client's ``conversation_id``), ``resource`` (``session.id``
on the resource), ``none`` (no session: the trace is the sequence), or ``explicit`` (explicit
``rl.*`` attributes added by a span processor, besides the library's session).

The run, in order: a plain call (system and user messages, temperature for OpenAI, max tokens), a
tool call, a streamed call (with usage), a call the server fails with 500 and one it fails with
400; for OpenAI also an embeddings call, and for OpenInference a CHAIN span around the run."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SYSTEM = "You are terse."
USER = "Name a prime."
TOOL_ARGS = {"city": "Paris"}
TOOL_RESULT = {"temperature_c": 21}

_ASSOCIATION_KEY = context.create_key("association_properties")


def set_association_properties(properties: dict[str, str]) -> object:
    """What ``Traceloop.set_association_properties`` does (traceloop-sdk keeps them in the context
    and its span processor writes them onto every span as ``traceloop.association.properties.<k>``).
    traceloop-sdk itself cannot be installed beside OpenTelemetry 1.45 (it pins an older
    instrumentation); OpenLLMetry's instrumentations are used as they are."""
    return context.attach(context.set_value(_ASSOCIATION_KEY, properties))


class AssociationPropertiesSpanProcessor(SpanProcessor):
    """traceloop-sdk's span processor, for the association properties."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        from opentelemetry.semconv_ai import SpanAttributes

        props = context.get_value(_ASSOCIATION_KEY, parent_context) or {}
        assert isinstance(props, dict)
        for k, v in props.items():
            span.set_attribute(f"{SpanAttributes.TRACELOOP_ASSOCIATION_PROPERTIES}.{k}", v)

    def on_end(self, span: ReadableSpan) -> None:
        pass


class ExplicitRlSpanProcessor(SpanProcessor):
    """Explicit rl.* attributes on OpenLLMetry's chat spans (``openai.chat``), as a platform adds them
    to spans it does not create itself."""

    def __init__(self, sequence_id: str) -> None:
        self.sequence_id = sequence_id

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        if span.name != "openai.chat":
            return
        span.set_attribute("rl.sequence_id", self.sequence_id)
        span.set_attribute("rl.state.agent_role", "Code")
        span.set_attribute("rl.state.llm_model", "router-model")

    def on_end(self, span: ReadableSpan) -> None:
        pass


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    family: str = cfg["family"]
    session: str = cfg["session"]
    via: str = cfg["session_via"]
    client_kind, library = family.split("-", 1)

    if library == "contrib":
        # The contrib instrumentation records message content only with the latest GenAI conventions.
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"

    attrs: dict[str, Any] = {"service.name": f"instr-{family}"}
    if via == "resource":
        attrs["session.id"] = session
    provider = TracerProvider(resource=Resource.create(attrs))
    if via == "explicit":
        provider.add_span_processor(ExplicitRlSpanProcessor(session))
    if library == "openllmetry" and via in ("library", "explicit"):
        provider.add_span_processor(AssociationPropertiesSpanProcessor())
    if library == "contrib" and via == "library":
        from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor

        provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    exporter = OTLPSpanExporter(endpoint=cfg["otlp"], timeout=30)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("rltrace.instrumentation-tests")

    instrument(client_kind, library, provider)

    @contextlib.contextmanager
    def in_session() -> Iterator[None]:
        token = None
        if via in ("library", "explicit"):
            if library == "openllmetry":
                token = set_association_properties({"session_id": session if via == "library" else f"assoc-{session}"})
            elif library == "openinference":
                from openinference.instrumentation import using_session

                with using_session(session):
                    yield
                return
            elif library == "contrib":
                token = context.attach(baggage.set_baggage("session.id", session))
        try:
            yield
        finally:
            if token is not None:
                context.detach(token)

    report: dict[str, Any] = {"family": family, "session": session, "errors": []}
    with in_session(), tracer.start_as_current_span("agent.run") as root:
        report["trace_id"] = format(root.get_span_context().trace_id, "032x")
        chain = contextlib.nullcontext()
        if library == "openinference":
            chain = oi_tracer(provider).start_as_current_span("plan", openinference_span_kind="chain")
        with chain:

            def tool() -> None:
                tool_call(library, provider, session)

            if client_kind == "openai":
                run_openai(cfg, report, tool)
            else:
                run_anthropic(cfg, library, session, report, tool)
    provider.force_flush(30_000)
    provider.shutdown()
    print(json.dumps(report))


def oi_tracer(provider: TracerProvider) -> Any:
    from openinference.instrumentation import OITracer, TraceConfig

    return OITracer(provider.get_tracer("rltrace.instrumentation-tests.oi"), config=TraceConfig())


def instrument(client_kind: str, library: str, provider: TracerProvider) -> None:
    if client_kind == "openai":
        if library == "openllmetry":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        elif library == "openinference":
            from openinference.instrumentation.openai import OpenAIInstrumentor  # type: ignore[assignment]
        elif library == "contrib":
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # type: ignore[assignment]
        else:
            raise SystemExit(f"unknown library {library}")
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif client_kind == "anthropic":
        if library == "openllmetry":
            from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

            AnthropicInstrumentor().instrument(tracer_provider=provider)
        elif library == "openinference":
            from openinference.instrumentation.anthropic import AnthropicInstrumentor  # type: ignore[assignment]

            AnthropicInstrumentor().instrument(tracer_provider=provider)
        elif library != "native":
            raise SystemExit(f"unknown library {library}")
    else:
        raise SystemExit(f"unknown client {client_kind}")


def tool_call(library: str, provider: TracerProvider, session: str) -> None:
    """A tool call as the library's users emit one: OpenInference's ``@tracer.tool`` helper, else a
    GenAI ``execute_tool`` span made by hand with the documented attributes."""
    if library == "openinference":
        tracer = oi_tracer(provider)

        @tracer.tool(name="get_weather", description="The weather in a city.")  # type: ignore[misc]
        def get_weather(city: str) -> dict[str, int]:
            time.sleep(0.01)
            return dict(TOOL_RESULT)

        get_weather(**TOOL_ARGS)
        return
    tracer = provider.get_tracer("rltrace.instrumentation-tests.tools")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": "call_weather_1",
        "gen_ai.tool.call.arguments": json.dumps(TOOL_ARGS),
    }
    if library == "native":
        # The Anthropic client links its own spans with gen_ai.conversation.id; the tool span says
        # the same by hand.
        attributes["gen_ai.conversation.id"] = session
    with tracer.start_as_current_span(
        "execute_tool get_weather", kind=trace.SpanKind.INTERNAL, attributes=attributes
    ) as sp:
        time.sleep(0.01)
        sp.set_attribute("gen_ai.tool.call.result", json.dumps(TOOL_RESULT))


def run_openai(cfg: dict[str, Any], report: dict[str, Any], tool: Callable[[], None]) -> None:
    import openai

    client = openai.OpenAI(base_url=cfg["llm"] + "/v1", api_key="test-key", max_retries=0)
    messages: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0.2, max_tokens=64)
    report["plain"] = r.choices[0].message.content
    tool()
    parts = []
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        temperature=0.2,
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    report["stream"] = "".join(parts)
    for fail in ("fail500", "fail400"):
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": fail}], max_tokens=8
            )
        except openai.APIStatusError as e:
            report["errors"].append(e.status_code)
    client.embeddings.create(model="text-embedding-3-small", input="a prime")


def run_anthropic(
    cfg: dict[str, Any], library: str, session: str, report: dict[str, Any], tool: Callable[[], None]
) -> None:
    import anthropic

    if library == "native":
        telemetry: Any = {"traces": {"enabled": True, "content_mode": "content"}}
        if cfg["session_via"] == "library":
            telemetry["conversation_id"] = session
    else:
        # The client's own spans are off, so each call has one LLM span: the instrumentor's.
        telemetry = {"traces": False}
    client = anthropic.Anthropic(base_url=cfg["llm"], api_key="test-key", max_retries=0, open_telemetry=telemetry)
    messages: list[Any] = [{"role": "user", "content": USER}]
    r = client.messages.create(model="claude-haiku-4-5", system=SYSTEM, messages=messages, max_tokens=64)
    report["plain"] = "".join(b.text for b in r.content if b.type == "text")
    tool()
    with client.messages.stream(model="claude-haiku-4-5", system=SYSTEM, messages=messages, max_tokens=64) as st:
        report["stream"] = "".join(st.text_stream)
    for fail in ("fail500", "fail400"):
        try:
            client.messages.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": fail}], max_tokens=8)
        except anthropic.APIStatusError as e:
            report["errors"].append(e.status_code)


if __name__ == "__main__":
    main()

"""``rltrace.configure`` in fresh interpreters: its own provider from the ``OTEL_*`` / ``RLTRACE_*``
/ ``AGL_*`` variables, the application's provider kept as it is, and a cheap import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

from conftest import Collector, attrs_of


def run(code: str, env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RLTRACE_", "AGL_"))}
    full.update(env)
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_configure_from_the_environment_with_the_agent_lightning_link(collector: Collector) -> None:
    task_id = f"env-{uuid.uuid4().hex[:10]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http,
        "OTEL_SERVICE_NAME": "agents-from-env",
        "RLTRACE_CAPTURE": "hash",
        "RLTRACE_REWARD_WEIGHTS": '{"success": 0.5, "latency": 0.5}',
        "AGL_EVENT_URL": "http://127.0.0.1:9/v1/agl/rollouts/ro-7/attempt/at-3/events",
    }
    out = run(
        f"""
        import rltrace
        from opentelemetry import trace
        h = rltrace.configure()
        assert h.owned and trace.get_tracer_provider() is h.provider
        @rltrace.rl_triplet(role="Code", task_id="t")
        def code(t, prompt):
            return len(prompt)
        code({task_id!r}, "x" * 100)
        assert h.flush()
        rltrace.assign_sequence_reward({task_id!r}, 0.4, source="terminal")
        print(rltrace.current_triplet_id())
        rltrace.shutdown()
        """,
        env,
    )
    assert out.strip() == "None"
    seq = collector.sequence(task_id)
    (t,) = seq["triplets"]
    import hashlib

    assert t["state"]["args"]["prompt"] == "sha256:" + hashlib.sha256(b"x" * 100).hexdigest()
    assert t["reward_sources"] == {"local": 1.0, "terminal": 0.4}
    (span,) = collector.trace(t["trace_id"])
    at = attrs_of(span)
    assert at["agentlightning.rollout_id"] == "ro-7" and at["agentlightning.attempt_id"] == "at-3"
    assert at["rl.reward"] == 1.0
    res = span["resource"]
    assert res["service.name"] == "agents-from-env"
    assert res["agentlightning.rollout_id"] == "ro-7"


def test_grpc_export_and_agl_ids(collector: Collector) -> None:
    task_id = f"grpc-{uuid.uuid4().hex[:10]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + collector.grpc,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "AGL_ROLLOUT_ID": "ro-1",
        "AGL_ATTEMPT_ID": "at-1",
        "RLTRACE_SAMPLE_RATIO": "1",
    }
    run(
        f"""
        import rltrace
        rltrace.configure(service_name="grpc-agents")
        @rltrace.rl_triplet(role="Plan", task_id="t")
        def plan(t):
            return 1
        plan({task_id!r})
        rltrace.shutdown()
        """,
        env,
    )
    (t,) = collector.sequence(task_id)["triplets"]
    (span,) = collector.trace(t["trace_id"])
    assert attrs_of(span)["agentlightning.rollout_id"] == "ro-1"
    assert span["resource"]["service.name"] == "grpc-agents"


def test_the_applications_provider_is_used_not_replaced(collector: Collector) -> None:
    task_id = f"app-{uuid.uuid4().hex[:10]}"
    run(
        f"""
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        app = TracerProvider(resource=Resource.create({{"service.name": "the-app"}}))
        app.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint={collector.http!r} + "/v1/traces")))
        trace.set_tracer_provider(app)
        import rltrace
        h = rltrace.configure(endpoint=None)
        assert h.provider is app and not h.owned
        assert trace.get_tracer_provider() is app
        tracer = trace.get_tracer("app")
        @rltrace.rl_triplet(role="Code", task_id="t")
        def code(t):
            with tracer.start_as_current_span("app.child"):
                pass
        code({task_id!r})
        rltrace.shutdown()
        app.shutdown()
        """,
        {},
    )
    (t,) = collector.sequence(task_id)["triplets"]
    spans = collector.trace(t["trace_id"])
    assert [s["name"] for s in spans] == ["code", "app.child"]
    assert spans[0]["resource"]["service.name"] == "the-app"
    assert spans[1]["parent_span_id"] == spans[0]["span_id"]


def test_import_is_cheap() -> None:
    out = run(
        """
        import sys
        import rltrace, rltrace.asgi, rltrace.fastapi
        from opentelemetry import trace
        print(type(trace.get_tracer_provider()).__name__)
        heavy = ("opentelemetry.exporter", "opentelemetry.sdk", "fastapi", "grpc", "requests")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """,
        {},
    )
    assert out.splitlines() == ["ProxyTracerProvider", "[]"]


def test_configure_again_keeps_its_global_provider(collector: Collector) -> None:
    task_id = f"again-{uuid.uuid4().hex[:10]}"
    run(
        f"""
        import rltrace
        from opentelemetry import trace
        first = rltrace.configure(endpoint={collector.http!r}, capture="hash")
        @rltrace.rl_triplet(role="Code", task_id="t")
        def code(t, text):
            return None
        code({task_id!r}, "y" * 80)
        second = rltrace.configure(capture="full")
        assert second.provider is first.provider is trace.get_tracer_provider() and second.owned
        code({task_id!r}, "y" * 80)
        rltrace.shutdown()
        """,
        {},
    )
    a, b = collector.sequence(task_id)["triplets"]
    assert a["state"]["args"]["text"].startswith("sha256:")
    assert b["state"]["args"]["text"] == "y" * 80

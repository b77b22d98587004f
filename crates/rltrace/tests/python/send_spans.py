#!/usr/bin/env python3
"""Send a small agent pipeline to rltrace with the official Python OpenTelemetry SDK.

Used by crates/rltrace/tests/python_sdk.rs; the pinned SDK versions are in requirements.txt
(install them with .ci/python-setup.sh).

    send_spans.py --endpoint http://127.0.0.1:4318 --protocol http --sequence-id task-1
    send_spans.py --endpoint http://127.0.0.1:4317 --protocol grpc --sequence-id task-2

What it sends, in one trace: a root span "orchestrator" with three children (one per agent
role), each a triplet by the rl.* conventions (rl.sequence_id, rl.sequence_index, rl.state as
JSON plus rl.state.agent_role, rl.action as JSON, rl.reward.success / rl.reward.latency, and
rl.timestamp_utc from datetime.utcnow().isoformat(), i.e. without offset). The second child
makes an LLM call: a grandchild span with only GenAI semantic-convention attributes (no rl.*)
and a gen_ai.evaluation.result event scoring it 0.9.

The spans go through a TracerProvider with a BatchSpanProcessor and the OTLPSpanExporter of the
chosen protocol; the script then calls force_flush and shutdown. It prints the trace id (32 lower
case hex digits) on stdout and exits non-zero when any export failed. With --report FILE it also
writes what it sent (timestamps, rewards, span ids) as JSON, so the test can compare exactly.
"""

import argparse
import datetime
import json
import sys
import warnings

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

ROLES = ["Planning", "Code", "Code Review"]
LATENCY = [0.8, 0.6, 0.4]
LLM_MODEL = "gpt-4o-mini"
PROMPT = [
    {"role": "system", "parts": [{"type": "text", "content": "You write Rust."}]},
    {"role": "user", "parts": [{"type": "text", "content": "Write a function that adds two numbers."}]},
]
RESPONSE = [
    {
        "role": "assistant",
        "parts": [{"type": "text", "content": "fn add(a: i64, b: i64) -> i64 { a + b }"}],
        "finish_reason": "stop",
    }
]


class RecordingExporter(SpanExporter):
    """Wraps the real exporter and remembers every export result (the batch processor drops them)."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append((len(spans), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def make_exporter(protocol, endpoint):
    endpoint = endpoint.rstrip("/")
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    host_port = endpoint.split("://", 1)[-1]
    return OTLPSpanExporter(endpoint=host_port, insecure=True, timeout=10)


def utc_now_naive():
    # The form the contract names: Python's datetime.utcnow().isoformat(), no offset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return datetime.datetime.utcnow().isoformat()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT of the HTTP (http) or gRPC (grpc) listener")
    ap.add_argument("--protocol", choices=["http", "grpc"], required=True)
    ap.add_argument("--sequence-id", required=True)
    ap.add_argument("--report", help="write what was sent as JSON to this file")
    args = ap.parse_args()

    exporter = RecordingExporter(make_exporter(args.protocol, args.endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": f"rltrace-python-{args.protocol}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    tracer = provider.get_tracer("rltrace.tests.send_spans", "1.0")

    report = {"protocol": args.protocol, "sequence_id": args.sequence_id, "triplets": [], "llm": None}
    with tracer.start_as_current_span("orchestrator", kind=SpanKind.INTERNAL) as root:
        root.set_attribute("pipeline.task_id", args.sequence_id)
        trace_id = format(root.get_span_context().trace_id, "032x")
        report["trace_id"] = trace_id
        report["root_span_id"] = format(root.get_span_context().span_id, "016x")
        for index, role in enumerate(ROLES):
            with tracer.start_as_current_span(f"agent.{role}.execute") as span:
                ts = utc_now_naive()
                state = {"agent_role": role, "task_id": args.sequence_id, "iteration": index}
                action = {"success": True, "output": f"{role} output", "artifacts": index + 1}
                span.set_attribute("rl.sequence_id", args.sequence_id)
                span.set_attribute("rl.sequence_scope", "pipeline")
                span.set_attribute("rl.sequence_index", index)
                span.set_attribute("rl.state", json.dumps(state))
                span.set_attribute("rl.state.agent_role", role)
                span.set_attribute("rl.action", json.dumps(action))
                span.set_attribute("rl.reward.success", 1.0)
                span.set_attribute("rl.reward.latency", LATENCY[index])
                span.set_attribute("rl.timestamp_utc", ts)
                report["triplets"].append(
                    {
                        "span_id": format(span.get_span_context().span_id, "016x"),
                        "sequence_index": index,
                        "timestamp_utc": ts,
                        "state": state,
                        "action": action,
                        "reward_components": {"success": 1.0, "latency": LATENCY[index]},
                    }
                )
                if role == "Code":
                    with tracer.start_as_current_span(f"chat {LLM_MODEL}", kind=SpanKind.CLIENT) as llm:
                        llm.set_attribute("gen_ai.operation.name", "chat")
                        llm.set_attribute("gen_ai.provider.name", "openai")
                        llm.set_attribute("gen_ai.request.model", LLM_MODEL)
                        llm.set_attribute("gen_ai.request.temperature", 0.2)
                        llm.set_attribute("gen_ai.input.messages", json.dumps(PROMPT))
                        llm.set_attribute("gen_ai.output.messages", json.dumps(RESPONSE))
                        llm.set_attribute("gen_ai.response.finish_reasons", ["stop"])
                        llm.set_attribute("gen_ai.usage.input_tokens", 42)
                        llm.set_attribute("gen_ai.usage.output_tokens", 17)
                        llm.add_event(
                            "gen_ai.evaluation.result",
                            {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.9},
                        )
                        llm.set_status(Status(StatusCode.OK))
                        report["llm"] = {
                            "span_id": format(llm.get_span_context().span_id, "016x"),
                            "model": LLM_MODEL,
                            "input_tokens": 42,
                            "output_tokens": 17,
                            "judge_score": 0.9,
                        }
                span.set_status(Status(StatusCode.OK))

    flushed = provider.force_flush(timeout_millis=30000)
    provider.shutdown()

    failed = [(n, r) for n, r in exporter.results if r != SpanExportResult.SUCCESS]
    exported = sum(n for n, r in exporter.results if r == SpanExportResult.SUCCESS)
    if args.report:
        report["exported_spans"] = exported
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    print(trace_id)
    if not flushed or failed or exported != 5:
        print(
            f"send_spans: export incomplete: flushed={flushed} exported={exported}/5 failed={failed}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Agent Lightning's side of the bridge test (crates/rltrace/tests/agentlightning.rs), with the
real `agentlightning` 0.3 package:

  rollout STORE_URL                 start a rollout in the LightningStore; prints its ids (JSON)
  emit OTLP_URL ROLLOUT ATTEMPT SEQ an agent's spans, exported by the OpenTelemetry SDK's own
                                    OTLP/HTTP exporter to rltrace: an agent span and two LLM calls
                                    (token ids, the second ending the sequence SEQ), linked to the
                                    rollout attempt by the resource (as AGL_ROLLOUT_ID would)
  read STORE_URL ROLLOUT...         each rollout's spans as the store has them, through Agent
                                    Lightning's own client, and the triplets its
                                    TracerTraceToTriplet adapter makes of them (JSON, by rollout)
"""

import asyncio
import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def rollout(url: str) -> None:
    from agentlightning.store.client_server import LightningStoreClient

    async def go():
        client = LightningStoreClient(url)
        try:
            r = await client.start_rollout(input={"task": "add two numbers"})
            return {"rollout_id": r.rollout_id, "attempt_id": r.attempt.attempt_id}
        finally:
            await client.close()

    print(json.dumps(asyncio.run(go())))


def emit(otlp: str, rollout_id: str, attempt_id: str, seq: str) -> None:
    resource = Resource.create(
        {
            "service.name": "agl-agent",
            "agentlightning.rollout_id": rollout_id,
            "agentlightning.attempt_id": attempt_id,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp)))
    tracer = provider.get_tracer("agl-agent")
    calls = [
        ("What is 2+3?", "Let me add them.", [101, 102, 103], [201, 202]),
        ("And the answer?", "5", [104, 105], [203]),
    ]
    with tracer.start_as_current_span("agent.run") as agent:
        agent.set_attribute("agent.name", "adder")
        for n, (prompt, completion, prompt_ids, response_ids) in enumerate(calls):
            with tracer.start_as_current_span("openai.chat.completion") as s:
                s.set_attribute("gen_ai.system", "openai")
                s.set_attribute("gen_ai.request.model", "fake-model")
                s.set_attribute("gen_ai.prompt.0.role", "user")
                s.set_attribute("gen_ai.prompt.0.content", prompt)
                s.set_attribute("gen_ai.completion.0.role", "assistant")
                s.set_attribute("gen_ai.completion.0.content", completion)
                s.set_attribute("gen_ai.response.id", f"resp-{n}")
                s.set_attribute("prompt_token_ids", prompt_ids)
                s.set_attribute("response_token_ids", response_ids)
                s.set_attribute("rl.sequence_id", seq)
                if n == len(calls) - 1:
                    s.set_attribute("rl.sequence_end", True)
    provider.shutdown()


def read(url: str, *rollout_ids: str) -> None:
    from agentlightning.adapter.triplet import TracerTraceToTriplet
    from agentlightning.store.client_server import LightningStoreClient

    async def go():
        client = LightningStoreClient(url)
        try:
            return {r: list(await client.query_spans(r)) for r in rollout_ids}
        finally:
            await client.close()

    result = {}
    for rollout_id, spans in asyncio.run(go()).items():
        out = {
            "spans": len(spans),
            "span_ids": sorted(s.span_id for s in spans),
            "names": sorted(s.name for s in spans),
            "annotations": [dict(s.attributes) for s in spans if s.name == "agentlightning.annotation"],
            "resource_rollouts": sorted({str(s.resource.attributes.get("agentlightning.rollout_id")) for s in spans}),
            "triplets": [],
        }
        if spans:
            for t in TracerTraceToTriplet().adapt(spans):
                out["triplets"].append(
                    {
                        "prompt_ids": t.prompt.get("token_ids"),
                        "response_ids": t.response.get("token_ids"),
                        "reward": t.reward,
                        "response_id": (t.metadata or {}).get("response_id"),
                    }
                )
        result[rollout_id] = out
    print(json.dumps(result))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"rollout": rollout, "emit": emit, "read": read}[cmd](*args)

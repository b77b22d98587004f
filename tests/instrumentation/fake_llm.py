"""A small OpenAI- and Anthropic-compatible HTTP server on loopback for the instrumentation tests.

Routes: ``POST /v1/chat/completions`` (plain, or streamed as server-sent events with a final usage
chunk when ``stream_options.include_usage`` is set), ``POST /v1/embeddings`` and ``POST /v1/messages``
(Anthropic; plain or streamed events). A request whose last user message contains ``fail500`` or
``fail400`` is answered with that status and an error body in the provider's shape. The answers are
fixed, so the tests know every token count and stop reason; ``FakeLLM.requests`` keeps the bodies
received."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_RESPONSE_MODEL = "claude-haiku-4-5-20251001"

# Plain chat completion.
OPENAI_PLAIN = {"text": "7", "finish_reason": "stop", "prompt_tokens": 21, "completion_tokens": 1}
# Streamed chat completion: the text in two deltas, usage in a last chunk without choices.
OPENAI_STREAM = {"text": "seven", "finish_reason": "length", "prompt_tokens": 30, "completion_tokens": 2}
# Anthropic messages.
ANTHROPIC_PLAIN = {"text": "7", "stop_reason": "end_turn", "input_tokens": 20, "output_tokens": 1}
ANTHROPIC_STREAM = {"text": "seven", "stop_reason": "max_tokens", "input_tokens": 25, "output_tokens": 3}


def _last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, list):
            return " ".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
        return str(c)
    return ""


def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += f"event: {name}\n".encode()
        payload = data if isinstance(data, str) else json.dumps(data)
        out += f"data: {payload}\n\n".encode()
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        with self.server.lock:
            self.server.requests.append({"path": self.path, "body": body})
        text = _last_user_text(body)
        anthropic = self.path.endswith("/messages")
        for code in (500, 400):
            if f"fail{code}" in text:
                if anthropic:
                    kind = "api_error" if code == 500 else "invalid_request_error"
                    return self._send(
                        code, {"type": "error", "error": {"type": kind, "message": f"fake failure {code}"}}
                    )
                kind = "server_error" if code == 500 else "invalid_request_error"
                return self._send(code, {"error": {"message": f"fake failure {code}", "type": kind, "code": None}})
        if self.path.endswith("/chat/completions"):
            return self._chat(body)
        if self.path.endswith("/embeddings"):
            return self._send(
                200,
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
                    "model": "text-embedding-3-small",
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                },
            )
        if anthropic:
            return self._messages(body)
        return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _chat(self, body: dict[str, Any]) -> None:
        if body.get("stream"):
            r = OPENAI_STREAM
            base = {
                "id": "chatcmpl-stream",
                "object": "chat.completion.chunk",
                "created": 1767225600,
                "model": OPENAI_RESPONSE_MODEL,
            }
            text = str(r["text"])
            chunks: list[tuple[str | None, Any]] = [
                (
                    None,
                    {
                        **base,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    },
                ),
                (None, {**base, "choices": [{"index": 0, "delta": {"content": text[:3]}, "finish_reason": None}]}),
                (None, {**base, "choices": [{"index": 0, "delta": {"content": text[3:]}, "finish_reason": None}]}),
                (None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": r["finish_reason"]}]}),
            ]
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"]}
                usage["total_tokens"] = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
                chunks.append((None, {**base, "choices": [], "usage": usage}))
            chunks.append((None, "[DONE]"))
            return self._send(200, _sse(chunks), "text/event-stream")
        r = OPENAI_PLAIN
        return self._send(
            200,
            {
                "id": "chatcmpl-plain",
                "object": "chat.completion",
                "created": 1767225600,
                "model": OPENAI_RESPONSE_MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": r["text"]},
                        "finish_reason": r["finish_reason"],
                    }
                ],
                "usage": {
                    "prompt_tokens": r["prompt_tokens"],
                    "completion_tokens": r["completion_tokens"],
                    "total_tokens": int(r["prompt_tokens"]) + int(r["completion_tokens"]),
                },
            },
        )

    def _messages(self, body: dict[str, Any]) -> None:
        if body.get("stream"):
            r = ANTHROPIC_STREAM
            text = str(r["text"])
            events: list[tuple[str | None, Any]] = [
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": "msg_stream",
                            "type": "message",
                            "role": "assistant",
                            "model": ANTHROPIC_RESPONSE_MODEL,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {"input_tokens": r["input_tokens"], "output_tokens": 1},
                        },
                    },
                ),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[:3]}},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[3:]}},
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": r["stop_reason"], "stop_sequence": None},
                        "usage": {"output_tokens": r["output_tokens"]},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
            return self._send(200, _sse(events), "text/event-stream")
        r = ANTHROPIC_PLAIN
        return self._send(
            200,
            {
                "id": "msg_plain",
                "type": "message",
                "role": "assistant",
                "model": ANTHROPIC_RESPONSE_MODEL,
                "content": [{"type": "text", "text": r["text"]}],
                "stop_reason": r["stop_reason"],
                "stop_sequence": None,
                "usage": {"input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"]},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []


class FakeLLM:
    """The server on a free loopback port, served from a daemon thread until ``close``."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._server.lock:
            return list(self._server.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

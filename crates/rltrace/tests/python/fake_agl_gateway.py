"""A stand-in for Agent Lightning 1.0's API gateway (`agl-server`), whose package is not on PyPI:
the routes the rltrace bridge uses, with the real server's semantics (agentlightning 1.0.0,
`agentlightning/server/routes/{rollouts,events}.py` and `app.py`):

  GET  /healthz                                            no key needed
  POST /api/rollouts                 [RolloutCreate]       201, the rollouts (idempotent by id)
  DELETE /api/rollouts/{id}                                204, its events go too
  POST /api/rollouts/{id}/attempt/{attempt}/events         {event_type, data}: the event; 404
                                                           for an unknown rollout
  GET  /api/rollouts/{id}/events?format=triplet&event_type=
                                                           the events of the rollout's last
                                                           attempt (or "0"); reward data trimmed
                                                           to value, source, reason

Every /api route needs `Authorization: Bearer KEY` or `x-api-key: KEY` when a key is given
(401 otherwise). Usage: fake_agl_gateway.py PORT KEY; prints "listening PORT" when ready.
"""

import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DEFAULT_ATTEMPT_ID = "0"
rollouts: dict = {}
events: dict = {}
lock = threading.Lock()
KEY = ""

EVENTS = re.compile(r"^/api/rollouts/([^/]+)/attempt/([^/]+)/events$")
QUERY = re.compile(r"^/api/rollouts/([^/]+)/events$")
ONE = re.compile(r"^/api/rollouts/([^/]+)$")


def trim(event: dict) -> dict:
    if event["event_type"] == "reward":
        data = {"value": event["data"].get("value")}
        for key in ("source", "reason"):
            if key in event["data"]:
                data[key] = event["data"][key]
        return {**event, "data": data}
    return event


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status: int, body=None):
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def authorised(self) -> bool:
        if not KEY:
            return True
        auth = self.headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[7:] == KEY:
            return True
        if self.headers.get("x-api-key", "") == KEY:
            return True
        self.answer(401, {"detail": "Invalid or missing API key"})
        return False

    def body(self):
        n = int(self.headers.get("content-length", "0"))
        return json.loads(self.rfile.read(n) or b"null")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self.answer(200, {"status": "ok"})
        if not self.authorised():
            return
        m = QUERY.match(url.path)
        if m:
            rid = m.group(1)
            q = parse_qs(url.query)
            with lock:
                if rid not in rollouts:
                    return self.answer(404, {"detail": f"Rollout not found: {rid}"})
                attempt = rollouts[rid]["status"].get("last_attempt_id") or DEFAULT_ATTEMPT_ID
                found = list(events.get(rid, {}).get(attempt, []))
            if "event_type" in q:
                found = [e for e in found if e["event_type"] == q["event_type"][0]]
            if q.get("format") == ["triplet"]:
                found = [trim(e) for e in found]
            return self.answer(200, found)
        m = ONE.match(url.path)
        if m:
            with lock:
                r = rollouts.get(m.group(1))
            return self.answer(200, r) if r else self.answer(404, {"detail": f"Rollout not found: {m.group(1)}"})
        self.answer(404, {"detail": "Not Found"})

    def do_POST(self):
        url = urlparse(self.path)
        if not self.authorised():
            return
        if url.path == "/api/rollouts":
            out = []
            with lock:
                for req in self.body():
                    rid = req.get("rollout_id") or uuid.uuid4().hex
                    if rid not in rollouts:
                        now = time.time()
                        rollouts[rid] = {
                            "rollout_id": rid,
                            "input": req.get("input"),
                            "is_train": req.get("is_train", True),
                            "status": {"state": "queued", "created_at": now, "updated_at": now, "last_attempt_id": None},
                        }
                        events[rid] = {}
                    out.append(rollouts[rid])
            return self.answer(201, out)
        m = EVENTS.match(url.path)
        if m:
            rid, attempt = m.group(1), m.group(2)
            body = self.body()
            if not isinstance(body, dict) or not isinstance(body.get("event_type"), str) or not isinstance(body.get("data", {}), dict):
                return self.answer(422, {"detail": "event_type (a string) and data (an object) expected"})
            with lock:
                if rid not in rollouts:
                    return self.answer(404, {"detail": f"Rollout not found: {rid}"})
                event = {"event_type": body["event_type"], "rollout_id": rid, "attempt_id": attempt, "timestamp": time.time(), "data": body.get("data", {})}
                events[rid].setdefault(attempt, []).append(event)
            return self.answer(200, event)
        self.answer(404, {"detail": "Not Found"})

    def do_DELETE(self):
        url = urlparse(self.path)
        if not self.authorised():
            return
        m = ONE.match(url.path)
        if not m:
            return self.answer(404, {"detail": "Not Found"})
        with lock:
            if m.group(1) not in rollouts:
                return self.answer(404, {"detail": f"Rollout not found: {m.group(1)}"})
            del rollouts[m.group(1)]
            events.pop(m.group(1), None)
        self.answer(204)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port, KEY = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()

"""A collector with API keys (``[auth]`` of ``--config``): ``rltrace.configure(api_key=...)`` (or
``RLTRACE_API_KEY``) sends the key with the spans and with the reward helpers; without it the
collector refuses both and stores nothing."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Collector, launch, stop
from test_setup import run

KEY = "python-sdk-key-0123456789abcdef"


class Keyed:
    """A collector with one key, and reads that send it (or not)."""

    def __init__(self, c: Collector) -> None:
        self.c = c
        self.http = c.http

    def get(self, path: str, key: str | None = KEY) -> tuple[int, Any]:
        req = urllib.request.Request(self.http + path)
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    d: Path = tmp_path_factory.mktemp("keyed")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    cfg = d / "rltrace.toml"
    cfg.write_text(f'[[auth.keys]]\nname = "py"\nscopes = ["ingest", "write", "read"]\nsha256 = "{digest}"\n')
    c = launch(d / "rltrace.db", ["--config", str(cfg)])
    try:
        yield Keyed(c)
    finally:
        stop(c)


CODE = """
import rltrace
rltrace.configure(service_name="keyed", endpoint={http!r}{key_arg})
@rltrace.rl_triplet(role="Code", task_id="t")
def step(t):
    return 1
step({task!r})
rltrace.flush()
try:
    rltrace.assign_sequence_reward({task!r}, 0.9, source="judge", pending=True)
    print("reward stored")
except Exception as e:
    print("reward refused", getattr(e, "status", e))
rltrace.shutdown()
"""


def test_the_key_goes_with_spans_and_rewards(keyed: Keyed) -> None:
    task = f"key-{uuid.uuid4().hex[:10]}"
    out = run(CODE.format(http=keyed.http, key_arg=f", api_key={KEY!r}", task=task), {})
    assert "reward stored" in out, out
    status, seq = keyed.get(f"/api/v1/sequences/{task}")
    assert status == 200, seq
    assert seq["triplet_count"] == 1
    assert [e["source"] for e in seq["ledger"]] == ["judge"]
    # The same from RLTRACE_API_KEY.
    task2 = task + "-env"
    out = run(CODE.format(http=keyed.http, key_arg="", task=task2), {"RLTRACE_API_KEY": KEY})
    assert "reward stored" in out, out
    assert keyed.get(f"/api/v1/sequences/{task2}")[0] == 200


def test_without_the_key_nothing_is_stored(keyed: Keyed) -> None:
    task = f"nokey-{uuid.uuid4().hex[:10]}"
    out = run(CODE.format(http=keyed.http, key_arg="", task=task), {})
    assert "reward refused 401" in out, out
    assert keyed.get(f"/api/v1/sequences/{task}")[0] == 404
    assert keyed.get("/api/v1/stats", key=None)[0] == 401

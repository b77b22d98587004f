"""The example platform (examples/python-platform) started with its one command against the real
collector: its seven agents, review loops, HTTP triplets and callbacks read back through the
REST API."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT, Collector

ROLES = {"Orchestrator", "Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"}


def test_the_example_platform_runs_in_one_command(collector: Collector) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RLTRACE_", "AGL_"))}
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples/python-platform/platform_app.py"), "--collector", collector.http,
         "--simulate", "3", "--exit", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    tasks = re.findall(r"^task (task-[0-9a-f]{12}): design rounds (\d), code rounds (\d)$", p.stdout, re.M)
    assert len(tasks) == 3, p.stdout
    for task_id, design_rounds, code_rounds in tasks:
        seq = collector.sequence(task_id)
        ts = seq["triplets"]
        assert {t["state"]["agent_role"] for t in ts} == ROLES
        # Planning, the design loop (author + reviewer per round), the code loop, Test, Postmortem.
        assert len(ts) == 1 + 1 + 2 * int(design_rounds) + 2 * int(code_rounds) + 2
        assert seq["complete"] is True
        code = [t for t in ts if t["state"]["agent_role"] == "Code"]
        assert [t["state"]["iteration"] for t in code] == list(range(1, int(code_rounds) + 1))
        # The platform's state provider and the configured component weights.
        assert all("budget_tokens_remaining" in t["state"] for t in ts)
        sources = {e["source"] for e in seq["ledger"]}
        assert {"hitl", "tests"} <= sources
        agent = next(t for t in ts if t["state"]["agent_role"] == "Design")
        assert "local" in agent["reward_sources"]
    http = [
        t for t in collector.get("/api/v1/triplets?role=http&limit=1000")["items"] if t["state"].get("user_id") == "ann"
    ]
    routes = {t["state"]["route"] for t in http}
    assert {"/tasks", "/tasks/{task_id}/review", "/tasks/{task_id}/tests"} <= routes
    assert all(t["sequence_id"].startswith("session-") for t in http)

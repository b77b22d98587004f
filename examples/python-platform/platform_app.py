"""An example agent platform instrumented with the rltrace Python SDK: a FastAPI app, seven agents
(Planning, Design, Design Review, Code, Code Review, Test, Postmortem), an orchestrator with review
loops, and the callbacks a platform sends later (human review, test results, defects).

Start a collector (`cargo run --release -- serve`), then, from the repository root:

    pip install ./python -r examples/python-platform/requirements.txt
    python examples/python-platform/platform_app.py --simulate 5

`--simulate N` runs N tasks through the platform's own HTTP API (with reviews, test runs and a
defect now and then) and keeps serving on http://127.0.0.1:8000 until Ctrl-C; `--exit` stops
after the run. The collector is `--collector` (default http://127.0.0.1:4318); every triplet is
then in its REST API (`/api/v1/sequences`) and web UI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import threading
import time
import urllib.request
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import rltrace
import rltrace.fastapi

ROLES = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"]
MAX_REVIEW_ROUNDS = 3


class TaskRequest(BaseModel):
    title: str
    description: str = ""
    seed: int = Field(default=0, description="seed of the simulated model")


class TaskInput(BaseModel):
    task_id: str
    title: str
    description: str
    iteration: int = 1


class Budget:
    """Platform state the agents share, exposed to every triplet through a state provider."""

    def __init__(self) -> None:
        self.tokens_remaining = 1_000_000
        self.pending_approvals = 0
        self.active: set[str] = set()
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "budget_tokens_remaining": self.tokens_remaining,
                "pending_approvals": self.pending_approvals,
                "active_agents": sorted(self.active),
            }

    def spend(self, tokens: int) -> None:
        with self.lock:
            self.tokens_remaining = max(0, self.tokens_remaining - tokens)


BUDGET = Budget()


class SimulatedModel:
    """A seeded stand-in for an LLM: latency, tokens and a quality in [0, 1]."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    async def complete(self, prompt: str) -> tuple[str, int, float]:
        await asyncio.sleep(self.rng.uniform(0.001, 0.004))
        tokens = self.rng.randint(200, 2000)
        return f"response to: {prompt[:60]}", tokens, self.rng.random()


class Agent:
    """Base of the seven agents: `execute` is one triplet (role from `agent_role`, sequence by task)."""

    agent_role = "Agent"

    def __init__(self, model: SimulatedModel) -> None:
        self.model = model

    @rltrace.rl_triplet(task_id="task.task_id", skip=["context"])
    async def execute(self, task: TaskInput, context: dict[str, Any]) -> dict[str, Any]:
        with BUDGET.lock:
            BUDGET.active.add(self.agent_role)
        try:
            text, tokens, quality = await self.model.complete(f"{self.agent_role}: {task.title}")
            BUDGET.spend(tokens)
            rltrace.state("iteration", task.iteration)
            rltrace.action("tokens", tokens)
            rltrace.reward_component("cost", max(0.0, 1.0 - tokens / 2000))
            rltrace.reward_component("validation", quality)
            return {"role": self.agent_role, "text": text, "quality": round(quality, 3)}
        finally:
            with BUDGET.lock:
                BUDGET.active.discard(self.agent_role)


class PlanningAgent(Agent):
    agent_role = "Planning"


class DesignAgent(Agent):
    agent_role = "Design"


class DesignReviewAgent(Agent):
    agent_role = "Design Review"


class CodeAgent(Agent):
    agent_role = "Code"


class CodeReviewAgent(Agent):
    agent_role = "Code Review"


class TestAgent(Agent):
    agent_role = "Test"


class PostmortemAgent(Agent):
    agent_role = "Postmortem"


class Orchestrator:
    """Runs a task through the phases; a review that scores below 0.4 sends the work back (at most
    three rounds)."""

    agent_role = "Orchestrator"

    def __init__(self, seed: int) -> None:
        m = SimulatedModel(seed)
        self.agents = {
            cls.agent_role: cls(m)
            for cls in (
                PlanningAgent,
                DesignAgent,
                DesignReviewAgent,
                CodeAgent,
                CodeReviewAgent,
                TestAgent,
                PostmortemAgent,
            )
        }

    async def review_loop(self, task: TaskInput, author: str, reviewer: str, context: dict[str, Any]) -> int:
        for round_ in range(1, MAX_REVIEW_ROUNDS + 1):
            step = task.model_copy(update={"iteration": round_})
            context[author] = await self.agents[author].execute(step, context)
            review = await self.agents[reviewer].execute(step, context)
            if review["quality"] >= 0.4:
                return round_
        return MAX_REVIEW_ROUNDS

    @rltrace.rl_triplet(task_id="task.task_id")
    async def run(self, task: TaskInput) -> dict[str, Any]:
        context: dict[str, Any] = {}
        context["Planning"] = await self.agents["Planning"].execute(task, context)
        design_rounds = await self.review_loop(task, "Design", "Design Review", context)
        code_rounds = await self.review_loop(task, "Code", "Code Review", context)
        context["Test"] = await self.agents["Test"].execute(task, context)
        context["Postmortem"] = await self.agents["Postmortem"].execute(task, context)
        rltrace.end_sequence()
        with BUDGET.lock:
            BUDGET.pending_approvals += 1
        return {"task_id": task.task_id, "design_rounds": design_rounds, "code_rounds": code_rounds}


class Review(BaseModel):
    decision: str
    reviewer: str
    justification: str


class TestRun(BaseModel):
    passed: int
    failed: int
    skipped: int = 0


class DefectReport(BaseModel):
    defect_type: str
    severity: str
    phase_injected: str
    phase_removed: str
    description: str


def create_app(collector_url: str) -> FastAPI:
    """The platform's web API, every request a triplet (session from `x-session-id`)."""
    app = FastAPI(title="example agent platform")
    # The callbacks are sent with `pending`: a task's last triplets may still be in the exporter's
    # batch when its review arrives; the collector joins the reward when they land.
    rewards = rltrace.AsyncRewardClient(collector_url)

    @app.post("/tasks")
    async def create_task(req: TaskRequest) -> dict[str, Any]:
        task = TaskInput(task_id=f"task-{uuid.uuid4().hex[:12]}", title=req.title, description=req.description)
        return await Orchestrator(req.seed).run(task)

    @app.post("/tasks/{task_id}/review")
    async def review(task_id: str, r: Review) -> dict[str, Any]:
        try:
            ev = await rewards.hitl(
                task_id, r.decision, reviewer=r.reviewer, justification=r.justification, pending=True
            )
        except rltrace.RewardValidationError as e:
            raise HTTPException(422, str(e)) from None
        with BUDGET.lock:
            BUDGET.pending_approvals = max(0, BUDGET.pending_approvals - 1)
        return ev

    @app.post("/tasks/{task_id}/tests")
    async def tests(task_id: str, t: TestRun) -> dict[str, Any]:
        return await rewards.tests(task_id, passed=t.passed, failed=t.failed, skipped=t.skipped, pending=True)

    @app.post("/tasks/{task_id}/defects")
    async def defects(task_id: str, d: DefectReport) -> dict[str, Any]:
        return await rewards.defect(
            task_id=task_id, defect_type=d.defect_type, severity=d.severity, phase_injected=d.phase_injected,
            phase_removed=d.phase_removed, description=d.description, pending=True,
        )  # fmt: skip

    return rltrace.fastapi.instrument(app, session_header="x-session-id", capture_headers={"x-user-id": "user_id"})


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=60) as r:
        return dict(json.loads(r.read()))


def simulate(base: str, tasks: int, seed: int) -> list[dict[str, Any]]:
    """Drive tasks through the platform's HTTP API as its users would."""
    rng = random.Random(seed)
    done = []
    session = f"session-{uuid.uuid4().hex[:8]}"
    for i in range(tasks):
        h = {"x-session-id": session, "x-user-id": "ann"}
        r = post(f"{base}/tasks", {"title": f"feature {i}", "seed": seed * 1000 + i}, h)
        tid = r["task_id"]
        decision = rng.choice(["approved", "approved", "approved_with_changes", "rejected", "deferred"])
        post(
            f"{base}/tasks/{tid}/review", {"decision": decision, "reviewer": "ann", "justification": "looked at it"}, h
        )
        failed = rng.randint(0, 3)
        post(f"{base}/tasks/{tid}/tests", {"passed": 20 - failed, "failed": failed, "skipped": 1}, h)
        if rng.random() < 0.3:
            post(
                f"{base}/tasks/{tid}/defects",
                {"defect_type": "80_Function", "severity": rng.choice(["Low", "Medium", "High"]),
                 "phase_injected": "Code", "phase_removed": "Test", "description": "found in test"},
                h,
            )  # fmt: skip
        done.append(r)
    return done


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collector", default="http://127.0.0.1:4318")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--simulate", type=int, default=0, metavar="N")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--exit", action="store_true", help="stop after the simulated run")
    a = ap.parse_args()
    rltrace.configure(
        service_name="example-platform",
        endpoint=a.collector,
        collector_url=a.collector,
        reward_weights={"success": 0.4, "latency": 0.2, "cost": 0.2, "validation": 0.2},
        state_providers=[BUDGET.snapshot],
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", a.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(a.collector), log_level="warning"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    print(f"platform listening on {base} (collector {a.collector})", flush=True)
    if a.simulate:
        for r in simulate(base, a.simulate, a.seed):
            print(
                f"task {r['task_id']}: design rounds {r['design_rounds']}, code rounds {r['code_rounds']}", flush=True
            )
        rltrace.flush()
        print(f"see {a.collector}/api/v1/sequences?review=pending and {a.collector}/ui/", flush=True)
    try:
        while t.is_alive() and not a.exit:
            t.join(0.5)
    except KeyboardInterrupt:
        pass
    server.should_exit = True
    t.join(10)
    rltrace.shutdown()


if __name__ == "__main__":
    main()

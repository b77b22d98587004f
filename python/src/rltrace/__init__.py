"""rltrace: turn the agents, orchestrators and FastAPI routes of a Python platform into
reinforcement-learning triplets (state, action, reward) sent as OpenTelemetry spans that follow
the rltrace wire conventions (``rl.*`` attributes), and send the rewards that come later.

- :func:`configure`: the tracer provider (yours, or a new one with OTLP export), capture mode,
  reward weights, sequence sampling, the Agent Lightning link, state providers.
- :func:`rl_triplet`: one triplet per call of a function, method, coroutine or async generator.
- :func:`state`, :func:`action`, :func:`reward_component`, :func:`reward`,
  :func:`end_sequence`: enrich the current triplet from inside it.
- :mod:`rltrace.asgi` / :mod:`rltrace.fastapi`: one triplet per HTTP request.
- :class:`RewardClient`, :class:`AsyncRewardClient`, :func:`assign_reward`,
  :func:`assign_sequence_reward`: the collector's reward API and callbacks.

Importing the package does no network and installs no provider.

>>> import rltrace
>>> @rltrace.rl_triplet(role="Plan", task_id="task_id")
... def plan(task_id: str) -> list[str]:
...     rltrace.state("phase", "design")
...     return ["design", "code"]
>>> plan("task-1")  # without configure() the function runs untouched
['design', 'code']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__version__ = "0.1.0"

from ._config import AgentLightningLink, CaptureMode, ConfigError, RewardWeights, Settings
from ._decorator import rl_triplet
from ._helpers import (
    RewardValidationError,
    action,
    current_sequence_id,
    current_triplet_id,
    end_sequence,
    reward,
    reward_component,
    state,
)
from ._setup import Handle, configure, flush, shutdown
from .client import ApiError, AsyncRewardClient, RewardClient


def _default_client() -> RewardClient:
    from . import _runtime

    rt = _runtime.current()
    if rt is None or rt.collector_url is None:
        raise RuntimeError("no collector url: pass collector_url to rltrace.configure() or set RLTRACE_COLLECTOR_URL")
    return RewardClient(rt.collector_url, api_key=rt.api_key)


def assign_reward(
    triplet_id: str,
    value: float,
    *,
    source: str = "terminal",
    reason: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    pending: bool = False,
) -> dict[str, Any]:
    """Append a reward for one triplet to the collector configured by :func:`configure`."""
    return _default_client().reward_triplet(
        triplet_id, value, source=source, reason=reason, idempotency_key=idempotency_key,
        metadata=metadata, pending=pending,
    )  # fmt: skip


def assign_sequence_reward(
    sequence_id: str,
    value: float,
    *,
    source: str = "terminal",
    strategy: str = "uniform",
    gamma: float | None = None,
    role: str | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    pending: bool = False,
) -> dict[str, Any]:
    """Append a reward for a sequence (through ``strategy``) to the configured collector."""
    return _default_client().reward_sequence(
        sequence_id, value, source=source, strategy=strategy, gamma=gamma, role=role, reason=reason,
        idempotency_key=idempotency_key, metadata=metadata, pending=pending,
    )  # fmt: skip


__all__ = [
    "AgentLightningLink",
    "ApiError",
    "AsyncRewardClient",
    "CaptureMode",
    "ConfigError",
    "Handle",
    "RewardClient",
    "RewardValidationError",
    "RewardWeights",
    "Settings",
    "__version__",
    "action",
    "assign_reward",
    "assign_sequence_reward",
    "configure",
    "current_sequence_id",
    "current_triplet_id",
    "end_sequence",
    "flush",
    "reward",
    "reward_component",
    "rl_triplet",
    "shutdown",
    "state",
]

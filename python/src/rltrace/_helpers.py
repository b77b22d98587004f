"""Helpers for code running inside a triplet: add state and action fields, set reward
components, emit ``rl.reward`` span events for the triplet or its sequence, end the sequence."""

from __future__ import annotations

import math
import time
from typing import Any

from opentelemetry import context as otel_context

from ._capture import to_json
from ._config import valid_name
from ._runtime import current, current_frame, recording_frame

STRATEGIES = ("uniform", "discounted", "last", "role")


class RewardValidationError(ValueError):
    """A reward the collector would refuse with 422, caught before anything is sent."""


def check_value(value: object, what: str = "value") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RewardValidationError(f"{what} must be a finite number in [0, 1], got {value!r}")
    if not 0 <= value <= 1:
        raise RewardValidationError(f"{what} must be a finite number in [0, 1], got {value!r}")
    return float(value)


def check_source(source: object) -> str:
    if not isinstance(source, str) or not valid_name(source):
        raise RewardValidationError(f"source {source!r} must match [a-z0-9_.-]{{1,64}}")
    return source


def check_strategy(strategy: str, gamma: float | None, role: str | None) -> None:
    if strategy not in STRATEGIES:
        raise RewardValidationError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "discounted":
        if (
            gamma is None
            or isinstance(gamma, bool)
            or not isinstance(gamma, (int, float))
            or not math.isfinite(gamma)
            or not 0 < gamma <= 1
        ):
            raise RewardValidationError(f"gamma must be in (0, 1], got {gamma!r}")
    elif gamma is not None:
        raise RewardValidationError("gamma goes with the discounted strategy only")
    if strategy == "role":
        if not isinstance(role, str) or not role:
            raise RewardValidationError("the role strategy needs a non-empty role")
    elif role is not None:
        raise RewardValidationError("role goes with the role strategy only")


def state(key: str, value: Any) -> None:
    """Add a field to the state of the current triplet (under the capture mode). Outside a
    recording triplet it does nothing."""
    f = recording_frame()
    if f is not None:
        if f.state is None:
            f.state = {}
        f.state[key] = to_json(value)


def action(key: str, value: Any) -> None:
    """Add a field to the action of the current triplet (under the capture mode). Outside a
    recording triplet it does nothing."""
    f = recording_frame()
    if f is not None:
        if f.action is None:
            f.action = {}
        f.action[key] = to_json(value)


def reward_component(name: str, value: float) -> None:
    """Set an immediate reward component ``rl.reward.<name>`` of the current triplet (``cost``,
    ``validation``, ...); naming ``success`` or ``latency`` replaces the computed one. Raises
    :class:`RewardValidationError` for a bad name or a value outside [0, 1]."""
    if not isinstance(name, str) or not valid_name(name):
        raise RewardValidationError(f"component name {name!r} must match [a-z0-9_.-]{{1,64}}")
    v = check_value(value)
    f = recording_frame()
    if f is not None:
        if f.components is None:
            f.components = {}
        f.components[name] = v


def end_sequence() -> None:
    """Mark the current triplet as the last of its sequence (``rl.sequence_end``)."""
    f = recording_frame()
    if f is not None:
        f.sequence_end = True


def current_triplet_id() -> str | None:
    """The id of the current triplet, when one is recording."""
    f = recording_frame()
    return f.triplet_id if f is not None else None


def current_sequence_id() -> str | None:
    """The sequence id of the current triplet (also when its sequence is not sampled)."""
    f = current_frame()
    return f.sequence_id if f is not None else None


def reward(
    value: float,
    *,
    source: str = "local",
    reason: str | None = None,
    sequence: bool = False,
    strategy: str = "uniform",
    gamma: float | None = None,
    role: str | None = None,
) -> None:
    """Attach a reward to the current triplet (or, with ``sequence=True``, to its sequence
    through ``strategy``) as an ``rl.reward`` span event: no second channel needed. Validated
    like the REST API; outside any triplet of a configured SDK it raises ``RuntimeError``."""
    v = check_value(value)
    check_source(source)
    attrs: dict[str, Any] = {"rl.reward.value": v, "rl.reward.source": source}
    if sequence:
        check_strategy(strategy, gamma, role)
        attrs["rl.reward.target"] = "sequence"
        attrs["rl.reward.strategy"] = strategy
        if gamma is not None:
            attrs["rl.reward.gamma"] = float(gamma)
        if role is not None:
            attrs["rl.reward.role"] = role
    else:
        attrs["rl.reward.target"] = "triplet"
    if reason is not None:
        attrs["rl.reward.reason"] = reason
    f = current_frame(otel_context.get_current())
    if f is None:
        if current() is not None:
            raise RuntimeError("rltrace.reward() called outside a triplet")
        return
    if f.sampled:
        if f.events is None:
            f.events = []
        f.events.append((time.time_ns(), attrs))

"""SDK settings that are not OpenTelemetry's: capture mode, reward component weights, latency
budget, sampling ratio and the Agent Lightning link, each read from an ``RLTRACE_*`` / ``AGL_*``
variable or given to :func:`rltrace.configure`. A bad value is an error, never a silent default
(the same rules as the Rust SDK's ``config.rs``)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Default length kept by ``truncate``: 500 characters.
DEFAULT_TRUNCATE_CHARS = 500
#: Strings up to this many UTF-8 bytes are kept as they are by ``hash`` and ``none``.
SHORT_STRING_BYTES = 64
#: Default latency budget: 10 seconds.
DEFAULT_LATENCY_BUDGET_S = 10.0

ENV_CAPTURE = "RLTRACE_CAPTURE"
ENV_REWARD_WEIGHTS = "RLTRACE_REWARD_WEIGHTS"
ENV_LATENCY_BUDGET_MS = "RLTRACE_LATENCY_BUDGET_MS"
ENV_SAMPLING_RATIO = "RLTRACE_SAMPLING_RATIO"
#: The name DESIGN section 13 gives; read when ``RLTRACE_SAMPLING_RATIO`` is unset.
ENV_SAMPLE_RATIO = "RLTRACE_SAMPLE_RATIO"
ENV_ENVIRONMENT = "RLTRACE_ENVIRONMENT"
ENV_COLLECTOR_URL = "RLTRACE_COLLECTOR_URL"
ENV_API_KEY = "RLTRACE_API_KEY"
ENV_AGL_ROLLOUT_ID = "AGL_ROLLOUT_ID"
ENV_AGL_ATTEMPT_ID = "AGL_ATTEMPT_ID"
ENV_AGL_EVENT_URL = "AGL_EVENT_URL"

_NAME = re.compile(r"^[a-z0-9_.-]{1,64}$")
_AGL_EVENT_PATH = re.compile(r"/rollouts/([^/]+)/attempt/([^/]+)/events/?$")


class ConfigError(ValueError):
    """An invalid setting: names the variable or argument and what was expected."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"invalid {name}: {message}")
        self.name = name


def valid_name(s: str) -> bool:
    """Whether ``s`` is a valid reward source or component name: ``[a-z0-9_.-]{1,64}``."""
    return bool(_NAME.match(s))


@dataclass(frozen=True)
class CaptureMode:
    """How strings in captured arguments, outputs and helper values are recorded.

    ``full`` keeps every string; ``truncate:N`` keeps the first N characters of longer strings
    followed by ``…``; ``hash`` replaces strings longer than 64 UTF-8 bytes by ``sha256:<hex>``;
    ``none`` replaces them by ``null``.

    >>> CaptureMode.parse("truncate:80")
    CaptureMode(kind='truncate', length=80)
    >>> str(CaptureMode.parse("hash"))
    'hash'
    """

    kind: str
    length: int = DEFAULT_TRUNCATE_CHARS

    @staticmethod
    def parse(text: str, name: str = ENV_CAPTURE) -> CaptureMode:
        """Parse ``full``, ``truncate``, ``truncate:N`` (N > 0), ``hash`` or ``none``."""
        s = text.strip()
        if s in ("full", "hash", "none"):
            return CaptureMode(s)
        if s == "truncate":
            return CaptureMode("truncate")
        if s.startswith("truncate:"):
            n = s[len("truncate:") :].strip()
            if n.isdigit() and int(n) > 0:
                return CaptureMode("truncate", int(n))
            raise ConfigError(name, f"truncate length must be a positive integer, got {n!r}")
        raise ConfigError(name, f"expected full, truncate:N, hash or none, got {s!r}")

    def __str__(self) -> str:
        return f"truncate:{self.length}" if self.kind == "truncate" else self.kind


DEFAULT_CAPTURE = CaptureMode("truncate")


class RewardWeights:
    """Weights of immediate reward components (``success``, ``latency``, ``cost``, ...).

    When configured, each triplet also carries ``rl.reward``: the weighted mean of its
    components that have a weight. Without weights only the components are sent and the
    collector's policy combines them.

    >>> w = RewardWeights({"success": 0.4, "latency": 0.2, "cost": 0.2, "validation": 0.2})
    >>> round(w.combine({"success": 1.0, "latency": 0.5}) or 0, 4)
    0.8333
    """

    __slots__ = ("weights",)

    def __init__(self, weights: Mapping[str, float], name: str = ENV_REWARD_WEIGHTS) -> None:
        checked: dict[str, float] = {}
        for k, w in weights.items():
            if not isinstance(k, str) or not valid_name(k):
                raise ConfigError(name, f"component name {k!r} must match [a-z0-9_.-]{{1,64}}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(name, f"weight of {k!r} must be a finite number >= 0, got {w!r}")
            checked[k] = float(w)
        if not any(w > 0 for w in checked.values()):
            raise ConfigError(name, "at least one weight must be positive")
        self.weights = checked

    @staticmethod
    def parse(text: str) -> RewardWeights:
        """Parse a JSON object of component -> weight."""
        try:
            v = json.loads(text)
        except ValueError as e:
            raise ConfigError(ENV_REWARD_WEIGHTS, f"not valid JSON: {e}") from None
        if not isinstance(v, dict):
            raise ConfigError(ENV_REWARD_WEIGHTS, "must be a JSON object of component -> weight")
        return RewardWeights(v)

    def combine(self, components: Mapping[str, float]) -> float | None:
        """Weighted mean of the components that have a weight; ``None`` when none has."""
        num = den = 0.0
        for c, v in components.items():
            w = self.weights.get(c)
            if w is not None:
                num += w * v
                den += w
        if den <= 0:
            return None
        return min(1.0, max(0.0, num / den))

    def __repr__(self) -> str:
        return f"RewardWeights({self.weights!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RewardWeights) and other.weights == self.weights

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.weights.items())))


@dataclass(frozen=True)
class AgentLightningLink:
    """The Agent Lightning rollout attempt this process works for (DESIGN section 10)."""

    rollout_id: str
    attempt_id: str


def agl_from_env(env: Mapping[str, str]) -> AgentLightningLink | None:
    """``AGL_ROLLOUT_ID`` + ``AGL_ATTEMPT_ID``, else the ids in ``AGL_EVENT_URL``
    (``.../rollouts/{rollout_id}/attempt/{attempt_id}/events``), else ``None``."""
    r, a = env.get(ENV_AGL_ROLLOUT_ID, "").strip(), env.get(ENV_AGL_ATTEMPT_ID, "").strip()
    if r and a:
        return AgentLightningLink(r, a)
    if r or a:
        raise ConfigError(ENV_AGL_ROLLOUT_ID, "AGL_ROLLOUT_ID and AGL_ATTEMPT_ID must be set together")
    url = env.get(ENV_AGL_EVENT_URL, "").strip()
    if url:
        m = _AGL_EVENT_PATH.search(url.split("?", 1)[0])
        if not m:
            raise ConfigError(
                ENV_AGL_EVENT_URL, f"expected .../rollouts/{{rollout_id}}/attempt/{{attempt_id}}/events, got {url!r}"
            )
        return AgentLightningLink(m.group(1), m.group(2))
    return None


def check_ratio(r: float, name: str = ENV_SAMPLING_RATIO) -> float:
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 <= r <= 1:
        raise ConfigError(name, f"expected a number in [0, 1], got {r!r}")
    return float(r)


def parse_ratio(text: str, name: str) -> float:
    try:
        r = float(text.strip())
    except ValueError:
        raise ConfigError(name, f"expected a number in [0, 1], got {text!r}") from None
    return check_ratio(r, name)


def parse_budget_ms(text: str) -> float:
    s = text.strip()
    if not s.isdigit() or int(s) <= 0:
        raise ConfigError(ENV_LATENCY_BUDGET_MS, f"expected a positive integer of milliseconds, got {text!r}")
    return int(s) / 1000.0


def latency_reward(elapsed_s: float, budget_s: float) -> float:
    """``rl.reward.latency``: 1.0 within the budget, ``budget / duration`` beyond it."""
    if elapsed_s <= budget_s:
        return 1.0
    return min(1.0, max(0.0, budget_s / elapsed_s))


def env_value(env: Mapping[str, str], name: str) -> str | None:
    v = env.get(name)
    return v if v is not None and v.strip() else None


@dataclass(frozen=True)
class Settings:
    """The SDK settings in force."""

    capture: CaptureMode = DEFAULT_CAPTURE
    reward_weights: RewardWeights | None = None
    latency_budget_s: float = DEFAULT_LATENCY_BUDGET_S
    sampling_ratio: float = 1.0
    agentlightning: AgentLightningLink | None = None
    extra: dict[str, str] = field(default_factory=dict)


def resolve_settings(
    env: Mapping[str, str] | None = None,
    *,
    capture: str | CaptureMode | None = None,
    reward_weights: Mapping[str, float] | RewardWeights | None = None,
    latency_budget_s: float | None = None,
    sampling_ratio: float | None = None,
    agentlightning: AgentLightningLink | None = None,
) -> Settings:
    """Arguments win over the environment, which wins over the defaults."""
    e = os.environ if env is None else env
    if isinstance(capture, CaptureMode):
        cap = capture
    elif capture is not None:
        cap = CaptureMode.parse(capture, "capture")
    else:
        v = env_value(e, ENV_CAPTURE)
        cap = CaptureMode.parse(v) if v else DEFAULT_CAPTURE
    if isinstance(reward_weights, RewardWeights):
        weights: RewardWeights | None = reward_weights
    elif reward_weights is not None:
        weights = RewardWeights(reward_weights, "reward_weights")
    else:
        v = env_value(e, ENV_REWARD_WEIGHTS)
        weights = RewardWeights.parse(v) if v else None
    if latency_budget_s is not None:
        if isinstance(latency_budget_s, bool) or not latency_budget_s > 0 or not math.isfinite(latency_budget_s):
            raise ConfigError("latency_budget_s", f"must be a positive number of seconds, got {latency_budget_s!r}")
        budget = float(latency_budget_s)
    else:
        v = env_value(e, ENV_LATENCY_BUDGET_MS)
        budget = parse_budget_ms(v) if v else DEFAULT_LATENCY_BUDGET_S
    if sampling_ratio is not None:
        ratio = check_ratio(sampling_ratio, "sampling_ratio")
    else:
        v = env_value(e, ENV_SAMPLING_RATIO)
        name = ENV_SAMPLING_RATIO
        if v is None:
            v, name = env_value(e, ENV_SAMPLE_RATIO), ENV_SAMPLE_RATIO
        ratio = parse_ratio(v, name) if v else 1.0
    link = agentlightning if agentlightning is not None else agl_from_env(e)
    return Settings(cap, weights, budget, ratio, link)

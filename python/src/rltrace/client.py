"""Clients of the collector's reward API (``POST /api/v1/rewards``) and callbacks
(``POST /api/v1/callbacks/hitl|tests|defects``, DESIGN section 5), for rewards that arrive after
the trace: a human review, a test run, a defect found later. :class:`RewardClient` is sync,
:class:`AsyncRewardClient` async, with the same methods. Both use only the standard library.

- Everything the collector would answer 422 is checked before sending
  (:class:`RewardValidationError`).
- Every write carries an idempotency key (yours, or a random one made once per call), so the
  retries below never store an event twice.
- 503 and 429 are retried (``max_retries``, default 3), waiting the ``Retry-After`` seconds
  (capped at ``max_retry_wait_s``) or an exponential backoff; other errors raise
  :class:`ApiError` with the collector's code and message.
- ``api_key`` (or ``RLTRACE_API_KEY``) is sent as ``Authorization: Bearer KEY``.

>>> client = RewardClient("http://127.0.0.1:4318")
>>> # client.reward_sequence("task-42", 1.0, source="terminal", strategy="last")
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

from ._helpers import RewardValidationError, check_source, check_strategy, check_value

#: Timeout of one request.
REQUEST_TIMEOUT_S = 30.0
#: Longest wait honoured from a ``Retry-After`` header.
MAX_RETRY_WAIT_S = 30.0
#: Largest response body read.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

DECISIONS = ("approved", "approved_with_changes", "rejected", "deferred")
SEVERITIES = ("Low", "Medium", "High", "Critical")
PSP_DEFECT_TYPES = (
    "10_Documentation",
    "20_Syntax",
    "30_Build_Package",
    "40_Assignment",
    "50_Interface",
    "60_Checking",
    "70_Data",
    "80_Function",
    "90_System",
    "100_Environment",
)

JSONObject = dict[str, Any]


class ApiError(Exception):
    """The collector answered an error: ``status``, ``code`` and ``message`` from its body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _text(field: str, v: object) -> str:
    if not isinstance(v, str) or not v.strip():
        raise RewardValidationError(f"{field} must be a non-empty string")
    return v


def _key(key: str | None) -> str:
    if key is None:
        return str(uuid.uuid4())
    if not isinstance(key, str) or not key or len(key) > 256:
        raise RewardValidationError("idempotency_key must be 1 to 256 characters")
    return key


def _count(field: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise RewardValidationError(f"{field} must be a non-negative integer, got {v!r}")
    return v


def reward_body(
    *,
    triplet_id: str | None = None,
    sequence_id: str | None = None,
    value: float,
    source: str,
    strategy: str | None = None,
    gamma: float | None = None,
    role: str | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    pending: bool = False,
) -> JSONObject:
    """The body of ``POST /api/v1/rewards``, validated as the collector does."""
    if (triplet_id is None) == (sequence_id is None):
        raise RewardValidationError("give triplet_id or sequence_id, not both")
    target: JSONObject
    if triplet_id is not None:
        if strategy is not None or gamma is not None or role is not None:
            raise RewardValidationError("strategy, gamma and role go with sequence_id, not with triplet_id")
        if not isinstance(triplet_id, str) or not triplet_id:
            raise RewardValidationError("triplet_id must be a non-empty string")
        target = {"triplet_id": triplet_id}
    else:
        if not isinstance(sequence_id, str) or not sequence_id:
            raise RewardValidationError("sequence_id must be a non-empty string")
        s = strategy or "uniform"
        check_strategy(s, gamma, role)
        target = {"sequence_id": sequence_id, "strategy": s}
        if gamma is not None:
            target["gamma"] = float(gamma)
        if role is not None:
            target["role"] = role
    body: JSONObject = {"target": target, "value": check_value(value), "source": check_source(source)}
    if reason is not None:
        if not isinstance(reason, str) or not reason:
            raise RewardValidationError("reason must be a non-empty string when given")
        body["reason"] = reason
    body["idempotency_key"] = _key(idempotency_key)
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise RewardValidationError("metadata must be a JSON object")
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise RewardValidationError(f"metadata must be JSON: {e}") from None
        body["metadata"] = dict(metadata)
    if pending:
        body["pending"] = True
    return body


def hitl_body(
    sequence_id: str,
    decision: str,
    reviewer: str,
    justification: str,
    idempotency_key: str | None = None,
    pending: bool = False,
) -> JSONObject:
    """The body of ``POST /api/v1/callbacks/hitl``."""
    if decision not in DECISIONS:
        raise RewardValidationError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    body: JSONObject = {
        "sequence_id": _text("sequence_id", sequence_id),
        "decision": decision,
        "reviewer": _text("reviewer", reviewer),
        "justification": _text("justification", justification),
        "idempotency_key": _key(idempotency_key),
    }
    if pending:
        body["pending"] = True
    return body


def tests_body(
    sequence_id: str,
    passed: int,
    failed: int,
    skipped: int | None = None,
    idempotency_key: str | None = None,
    pending: bool = False,
) -> JSONObject:
    """The body of ``POST /api/v1/callbacks/tests``."""
    body: JSONObject = {
        "sequence_id": _text("sequence_id", sequence_id),
        "passed": _count("passed", passed),
        "failed": _count("failed", failed),
    }
    if passed + failed == 0:
        raise RewardValidationError("passed and failed are both 0: no test result to reward")
    if skipped is not None:
        body["skipped"] = _count("skipped", skipped)
    body["idempotency_key"] = _key(idempotency_key)
    if pending:
        body["pending"] = True
    return body


def defect_body(
    *,
    task_id: str | None = None,
    sequence_id: str | None = None,
    defect_type: str,
    severity: str,
    phase_injected: str,
    phase_removed: str,
    description: str,
    idempotency_key: str | None = None,
    pending: bool = False,
) -> JSONObject:
    """The body of ``POST /api/v1/callbacks/defects``."""
    if (task_id is None) == (sequence_id is None):
        raise RewardValidationError("give task_id or sequence_id, not both")
    body: JSONObject = {}
    if task_id is not None:
        body["task_id"] = _text("task_id", task_id)
    else:
        body["sequence_id"] = _text("sequence_id", sequence_id)
    if defect_type not in PSP_DEFECT_TYPES:
        raise RewardValidationError(f"defect_type must be one of the PSP types {', '.join(PSP_DEFECT_TYPES)}")
    if severity not in SEVERITIES:
        raise RewardValidationError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    if _text("phase_injected", phase_injected) == _text("phase_removed", phase_removed):
        raise RewardValidationError("phase_injected and phase_removed must differ")
    body.update(
        defect_type=defect_type,
        severity=severity,
        phase_injected=phase_injected,
        phase_removed=phase_removed,
        description=_text("description", description),
        idempotency_key=_key(idempotency_key),
    )
    if pending:
        body["pending"] = True
    return body


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        max_retries: int = 3,
        max_retry_wait_s: float = MAX_RETRY_WAIT_S,
    ) -> None:
        base = base_url.rstrip("/")
        if not (base.startswith("http://") or base.startswith("https://")):
            raise ValueError(f"expected an http:// or https:// url, got {base_url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base
        self.api_key = api_key if api_key is not None else (os.environ.get("RLTRACE_API_KEY") or None)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s

    def _request(self, method: str, path: str, body: JSONObject | None) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body, allow_nan=False).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, headers, raw = resp.status, dict(resp.headers.items()), resp.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as e:
            status, headers, raw = e.code, dict(e.headers.items()), e.read(MAX_RESPONSE_BYTES)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")[:200]
        return status, {k.lower(): v for k, v in headers.items()}, parsed

    def _wait(self, attempt: int, headers: dict[str, str]) -> float:
        ra = headers.get("retry-after")
        if ra is not None:
            try:
                w = float(ra)
                if math.isfinite(w) and w >= 0:
                    return float(min(w, self.max_retry_wait_s))
            except ValueError:
                pass
        return float(min(0.25 * 2.0**attempt, self.max_retry_wait_s))

    @staticmethod
    def _result(status: int, parsed: Any) -> Any:
        if 200 <= status < 300:
            return parsed
        code, message = "unknown", str(parsed)[:200]
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            code = str(parsed["error"].get("code", code))
            message = str(parsed["error"].get("message", message))
        raise ApiError(status, code, message)

    @staticmethod
    def _quote(s: str) -> str:
        return urllib.parse.quote(s, safe="")


class RewardClient(_Base):
    """Sync client of the collector's reward API (see the module documentation)."""

    def _call(self, method: str, path: str, body: JSONObject | None = None) -> Any:
        attempt = 0
        while True:
            status, headers, parsed = self._request(method, path, body)
            if status in (429, 503) and attempt < self.max_retries:
                time.sleep(self._wait(attempt, headers))
                attempt += 1
                continue
            return self._result(status, parsed)

    def reward_triplet(
        self,
        triplet_id: str,
        value: float,
        *,
        source: str,
        reason: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """Append a reward event for one triplet; answers the stored event."""
        b = reward_body(
            triplet_id=triplet_id, value=value, source=source, reason=reason,
            idempotency_key=idempotency_key, metadata=metadata, pending=pending,
        )  # fmt: skip
        return dict(self._call("POST", "/api/v1/rewards", b))

    def reward_sequence(
        self,
        sequence_id: str,
        value: float,
        *,
        source: str,
        strategy: str = "uniform",
        gamma: float | None = None,
        role: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """Append a reward event for a sequence through ``strategy`` (``uniform``,
        ``discounted`` with ``gamma``, ``last``, ``role`` with ``role``)."""
        b = reward_body(
            sequence_id=sequence_id, value=value, source=source, strategy=strategy, gamma=gamma, role=role,
            reason=reason, idempotency_key=idempotency_key, metadata=metadata, pending=pending,
        )  # fmt: skip
        return dict(self._call("POST", "/api/v1/rewards", b))

    def hitl(
        self,
        sequence_id: str,
        decision: str,
        *,
        reviewer: str,
        justification: str,
        idempotency_key: str | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """A human decision on a sequence (``approved``, ``approved_with_changes``, ``rejected``,
        ``deferred``)."""
        b = hitl_body(sequence_id, decision, reviewer, justification, idempotency_key, pending)
        return dict(self._call("POST", "/api/v1/callbacks/hitl", b))

    def tests(
        self,
        sequence_id: str,
        *,
        passed: int,
        failed: int,
        skipped: int | None = None,
        idempotency_key: str | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """Test results for a sequence (value ``passed / (passed + failed)``)."""
        b = tests_body(sequence_id, passed, failed, skipped, idempotency_key, pending)
        return dict(self._call("POST", "/api/v1/callbacks/tests", b))

    def defect(
        self,
        *,
        task_id: str | None = None,
        sequence_id: str | None = None,
        defect_type: str,
        severity: str,
        phase_injected: str,
        phase_removed: str,
        description: str,
        idempotency_key: str | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """A defect found later, penalising the triplets of the phase that injected it."""
        b = defect_body(
            task_id=task_id, sequence_id=sequence_id, defect_type=defect_type, severity=severity,
            phase_injected=phase_injected, phase_removed=phase_removed, description=description,
            idempotency_key=idempotency_key, pending=pending,
        )  # fmt: skip
        return dict(self._call("POST", "/api/v1/callbacks/defects", b))

    def explain(self, triplet_id: str) -> JSONObject:
        """The triplet with its effective reward, ``ledger`` and ``explain`` (each source: the
        events considered, the one used, aggregation, weight)."""
        return dict(self._call("GET", "/api/v1/triplets/" + self._quote(_text("triplet_id", triplet_id))))

    def sequence(self, sequence_id: str) -> JSONObject:
        """The sequence with its triplets in order and its ledger."""
        return dict(self._call("GET", "/api/v1/sequences/" + self._quote(_text("sequence_id", sequence_id))))


class AsyncRewardClient(_Base):
    """Async client with the methods of :class:`RewardClient`; each request runs in a worker
    thread (``asyncio.to_thread``) and waits between retries with ``asyncio.sleep``."""

    async def _call(self, method: str, path: str, body: JSONObject | None = None) -> Any:
        attempt = 0
        while True:
            status, headers, parsed = await asyncio.to_thread(self._request, method, path, body)
            if status in (429, 503) and attempt < self.max_retries:
                await asyncio.sleep(self._wait(attempt, headers))
                attempt += 1
                continue
            return self._result(status, parsed)

    async def reward_triplet(
        self,
        triplet_id: str,
        value: float,
        *,
        source: str,
        reason: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """See :meth:`RewardClient.reward_triplet`."""
        b = reward_body(
            triplet_id=triplet_id, value=value, source=source, reason=reason,
            idempotency_key=idempotency_key, metadata=metadata, pending=pending,
        )  # fmt: skip
        return dict(await self._call("POST", "/api/v1/rewards", b))

    async def reward_sequence(
        self,
        sequence_id: str,
        value: float,
        *,
        source: str,
        strategy: str = "uniform",
        gamma: float | None = None,
        role: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """See :meth:`RewardClient.reward_sequence`."""
        b = reward_body(
            sequence_id=sequence_id, value=value, source=source, strategy=strategy, gamma=gamma, role=role,
            reason=reason, idempotency_key=idempotency_key, metadata=metadata, pending=pending,
        )  # fmt: skip
        return dict(await self._call("POST", "/api/v1/rewards", b))

    async def hitl(
        self,
        sequence_id: str,
        decision: str,
        *,
        reviewer: str,
        justification: str,
        idempotency_key: str | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """See :meth:`RewardClient.hitl`."""
        b = hitl_body(sequence_id, decision, reviewer, justification, idempotency_key, pending)
        return dict(await self._call("POST", "/api/v1/callbacks/hitl", b))

    async def tests(
        self,
        sequence_id: str,
        *,
        passed: int,
        failed: int,
        skipped: int | None = None,
        idempotency_key: str | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """See :meth:`RewardClient.tests`."""
        b = tests_body(sequence_id, passed, failed, skipped, idempotency_key, pending)
        return dict(await self._call("POST", "/api/v1/callbacks/tests", b))

    async def defect(
        self,
        *,
        task_id: str | None = None,
        sequence_id: str | None = None,
        defect_type: str,
        severity: str,
        phase_injected: str,
        phase_removed: str,
        description: str,
        idempotency_key: str | None = None,
        pending: bool = False,
    ) -> JSONObject:
        """See :meth:`RewardClient.defect`."""
        b = defect_body(
            task_id=task_id, sequence_id=sequence_id, defect_type=defect_type, severity=severity,
            phase_injected=phase_injected, phase_removed=phase_removed, description=description,
            idempotency_key=idempotency_key, pending=pending,
        )  # fmt: skip
        return dict(await self._call("POST", "/api/v1/callbacks/defects", b))

    async def explain(self, triplet_id: str) -> JSONObject:
        """See :meth:`RewardClient.explain`."""
        return dict(await self._call("GET", "/api/v1/triplets/" + self._quote(_text("triplet_id", triplet_id))))

    async def sequence(self, sequence_id: str) -> JSONObject:
        """See :meth:`RewardClient.sequence`."""
        return dict(await self._call("GET", "/api/v1/sequences/" + self._quote(_text("sequence_id", sequence_id))))

"""Captured values as JSON under the capture mode, output digests, and the RFC 3339 timestamps
of ``rl.timestamp_utc``. Pydantic models (``model_dump(mode="json")``), dataclasses, enums,
dates, sets, tuples and mappings become JSON; any other object is recorded by its type name only,
so a capture never leaks an object's ``repr`` and never fails the call."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ._config import SHORT_STRING_BYTES, CaptureMode

#: Depth past which nested values are cut (``"<max depth>"``): captures stay bounded.
MAX_DEPTH = 32
#: Items of one list or mapping captured at most; the rest is summarised as ``"<n more>"``.
MAX_ITEMS = 1000

JSON = Any


def to_json(value: Any, depth: int = 0) -> JSON:
    """A JSON-compatible copy of ``value`` (no capture mode applied)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return "<max depth>"
    if isinstance(value, Mapping):
        out: dict[str, JSON] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["..."] = f"<{len(value) - MAX_ITEMS} more>"
                break
            out[k if isinstance(k, str) else str(k)] = to_json(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        res = [to_json(v, depth + 1) for v in list(items)[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            res.append(f"<{len(value) - MAX_ITEMS} more>")
        return res
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return to_json(dump(mode="json"), depth + 1)
        except Exception:
            return f"<{type(value).__name__}>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name, None), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_json(value.value, depth + 1)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return f"<{type(value).__name__}>"


def apply_mode(v: JSON, mode: CaptureMode) -> JSON:
    """Apply the capture mode to every string of a JSON value (object keys are kept)."""
    if mode.kind == "full":
        return v
    if isinstance(v, str):
        return captured_string(v, mode)
    if isinstance(v, list):
        return [apply_mode(x, mode) for x in v]
    if isinstance(v, dict):
        return {k: apply_mode(x, mode) for k, x in v.items()}
    return v


def captured_string(s: str, mode: CaptureMode) -> JSON:
    kind = mode.kind
    if kind == "truncate":
        return s[: mode.length] + "…" if len(s) > mode.length else s
    # A string of at most 16 characters has at most 64 UTF-8 bytes.
    if kind == "full" or len(s) <= SHORT_STRING_BYTES // 4 or len(s.encode("utf-8")) <= SHORT_STRING_BYTES:
        return s
    if kind == "hash":
        return "sha256:" + hashlib.sha256(s.encode("utf-8")).hexdigest()
    return None


def capture(value: Any, mode: CaptureMode) -> JSON:
    """``value`` as JSON under the capture mode."""
    return apply_mode(to_json(value), mode)


def dumps(v: JSON) -> str:
    """Compact JSON, as the Rust SDK writes it (no spaces, UTF-8 kept)."""
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def output_fields(value: Any, mode: CaptureMode) -> dict[str, JSON]:
    """``output_size`` and ``output_sha256`` of the full output JSON, and ``output`` under the
    mode; nothing for ``None``."""
    if value is None:
        return {}
    j = to_json(value)
    raw = dumps(j).encode("utf-8")
    return {
        "output_size": len(raw),
        "output_sha256": hashlib.sha256(raw).hexdigest(),
        "output": apply_mode(j, mode),
    }


_last_second: tuple[int, str] = (-1, "")


def rfc3339_utc(ns: int) -> str:
    """``ns`` since the epoch as RFC 3339 UTC with microseconds and ``Z``."""
    global _last_second
    secs, rem = divmod(ns, 1_000_000_000)
    last = _last_second  # one tuple, read once: safe across threads
    if last[0] == secs:
        prefix = last[1]
    else:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _last_second = (secs, prefix)
    return f"{prefix}.{rem // 1000:06d}Z"

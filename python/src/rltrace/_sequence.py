"""Per-sequence indexes and sequence-aware sampling, as the Rust SDK's ``sequence.rs``.

The index of a triplet in its sequence comes from a process-wide map ``sequence_id -> next
index`` taken when the call starts, so concurrent calls of one sequence get distinct, gap-free
indexes in start order. The map is bounded (:data:`MAX_SEQUENCES`): ending a sequence releases
its counter, and a full map evicts its least recently used half (a sequence evicted and then
continued restarts at 0).

Sampling keeps or drops whole sequences: a sequence is kept when the first 8 bytes of SHA-256
of its id, read as a big-endian integer, are below ``ratio * 2**64``; every process (Python or
Rust) decides alike for the same id."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

#: Sequences tracked at once before the least recently used half is evicted.
MAX_SEQUENCES = 65_536

_lock = threading.Lock()
_counters: OrderedDict[str, int] = OrderedDict()


def next_index(sequence_id: str) -> int:
    """Take the next index of a sequence (0 for its first triplet in this process)."""
    with _lock:
        i = _counters.get(sequence_id)
        if i is None:
            if len(_counters) >= MAX_SEQUENCES:
                for _ in range(len(_counters) // 2):
                    _counters.popitem(last=False)
            _counters[sequence_id] = 1
            return 0
        _counters[sequence_id] = i + 1
        _counters.move_to_end(sequence_id)
        return i


def forget(sequence_id: str) -> None:
    """Release a sequence's counter (it ended)."""
    with _lock:
        _counters.pop(sequence_id, None)


def tracked() -> int:
    """Number of sequences whose counter is held."""
    return len(_counters)


def threshold(ratio: float) -> int | None:
    """The keep threshold of a ratio; ``None`` keeps everything."""
    if ratio >= 1.0:
        return None
    return int(ratio * 18_446_744_073_709_551_616.0)


def sequence_hash(sequence_id: str) -> int:
    """The sampling hash of a sequence id: the first 8 bytes of its SHA-256, big-endian."""
    return int.from_bytes(hashlib.sha256(sequence_id.encode("utf-8")).digest()[:8], "big")


def keep(sequence_id: str, limit: int | None) -> bool:
    """Whether a sequence is kept under a threshold from :func:`threshold`."""
    return True if limit is None else sequence_hash(sequence_id) < limit

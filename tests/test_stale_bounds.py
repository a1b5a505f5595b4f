"""The bounds the caching guide states in "What can be stale, and for how long" that
need no server: a large backlog of missed invalidations is replayed in linear time, in
slices that keep their budget, holding a bounded amount of memory per pending key.

(The bounds that need a real server or a network are in ``tests/integration``:
``test_partitions.py``, ``test_replay_real.py``, ``test_near_expiry_real.py``,
``test_swap_real.py``, ``test_patterns_real.py``.)
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

from tasker_resilience._cache.invalidations import (
    DELETE,
    MEMORY_PER_KEY_BYTES,
    PendingInvalidations,
)
from tasker_resilience._cache.replay import REPLAY_BATCH, InvalidationReplay

SLICE_SECONDS = 0.05


class _Backend:
    """A backend whose every batch costs one millisecond of the replay's own clock (no
    real time): a slice holds 50 batches, the rest of a call is bookkeeping."""

    name = "timed"

    def __init__(self) -> None:
        self.now = 0.0
        self.deleted = 0
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: list[str]) -> int:
        self.now += 0.001
        self.calls += 1
        self.deleted += len(keys)
        return len(keys)

    def delete_pattern(self, pattern: str) -> int:
        self.now += 0.001
        return 0


def _replay(count: int) -> tuple[list[float], _Backend]:
    """Replay ``count`` missed deletes; the real duration of every call."""
    pending = PendingInvalidations(1_000_000, "t:*")
    for i in range(count):
        pending.add(DELETE, f"t:users:{i}")
    backend = _Backend()
    replay = InvalidationReplay(
        backend,  # type: ignore[arg-type]  # the operations the replay calls
        pending,
        "t",
        slice_seconds=SLICE_SECONDS,
        clock=backend.clock,
    )
    durations = []
    while pending.active:
        started = time.perf_counter()
        replay.replay()
        durations.append(time.perf_counter() - started)
        assert len(durations) < count, "the replay made no progress"
    return durations, backend


def test_a_large_backlog_is_replayed_in_linear_time_and_budgeted_slices() -> None:
    small, small_backend = _replay(100_000)
    large, large_backend = _replay(400_000)
    for backend, count in ((small_backend, 100_000), (large_backend, 400_000)):
        assert backend.deleted == count  # each missed delete sent exactly once
        assert backend.calls == -(-count // REPLAY_BATCH)
    # 50 batches of 500 keys per slice, whatever the backlog.
    assert len(large) == -(-400_000 // (REPLAY_BATCH * 50))
    # What a call costs besides the backend does not grow with the backlog: four times
    # the keys, four times the calls, each about as cheap (a quadratic replay makes
    # each call four times dearer, the whole sixteen).
    assert statistics.median(large) < 2.5 * statistics.median(small) + 0.002
    assert sum(large) < 10 * sum(small) + 0.05
    # And stays inside the slice budget itself (the backend's time is on top of it).
    assert max(large) < SLICE_SECONDS


def test_memory_per_pending_key_is_bounded() -> None:
    count = 100_000
    keys = [f"tasker:users:profile:{i}" for i in range(count)]  # the caller's strings
    pending = PendingInvalidations(1_000_000, "tasker:*")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            pending.add(DELETE, key)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(pending) == count
    assert held / count <= MEMORY_PER_KEY_BYTES

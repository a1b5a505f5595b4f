"""What each cache operation ended as: the counters behind ``CacheProvider.stats()``.

One ``itertools.count`` per (operation, outcome): ``next()`` on it is atomic under the
GIL and lock-free, so the hot path pays one C call per count.
"""

from __future__ import annotations

import itertools
from typing import Final

from tasker_resilience._breakers.breaker import counter_value

__all__ = [
    "CACHED",
    "CACHED_OUTCOMES",
    "COMMANDS",
    "DELETE_OP",
    "DELETE_PATTERN_OP",
    "GET",
    "HEALTH",
    "LEASE",
    "OPERATIONS",
    "SET",
    "CacheStats",
]

GET: Final = "get"
SET: Final = "set"
DELETE_OP: Final = "delete"
DELETE_PATTERN_OP: Final = "delete_pattern"
HEALTH: Final = "health_check"
COMMANDS: Final = ("add", "get_many", "set_many", "delete_many", "has_key", "incr", "touch")
"""Backend commands beyond the contract that integrations run through
``CacheProvider.command`` (Django's cache API)."""
LEASE: Final = "lease"
"""``@cached(lock=True)``'s backend calls: taking and giving back a lease."""
CACHED: Final = "cached"
"""Not a backend call: what ``@cached``'s origin protection decided (see CACHED_OUTCOMES)."""
CACHED_OUTCOMES: Final = ("stale_served", "lease_waited", "lease_unavailable", "early_refresh")
"""``stale_served``: the function raised and a value past its TTL answered
(``stale_if_error``); ``lease_waited``: a value another holder of the lease computed
answered a waiting caller; ``lease_unavailable``: no lease could be asked for (circuit
open, backend failing or without leases), single-flight within the process instead;
``early_refresh``: recomputations started before expiry (``early_refresh``)."""
OPERATIONS: Final = (GET, SET, DELETE_OP, DELETE_PATTERN_OP, HEALTH, *COMMANDS, LEASE, CACHED)
# pool_exhausted: the client's own pool had no free connection in time. Counted apart
# from "error" because it is this process's load, not the backend's health.
_OUTCOMES: Final = {
    GET: ("hit", "miss", "error", "skipped_open", "pool_exhausted"),
    SET: ("ok", "error", "skipped_open", "pool_exhausted"),
    DELETE_OP: ("ok", "error", "skipped_open", "pool_exhausted"),
    DELETE_PATTERN_OP: ("ok", "error", "skipped_open", "pool_exhausted"),
    HEALTH: ("ok", "error", "skipped_open", "pool_exhausted"),
    **dict.fromkeys((*COMMANDS, LEASE), ("ok", "error", "skipped_open", "pool_exhausted")),
    CACHED: CACHED_OUTCOMES,
}


class CacheStats:
    """Per operation, how many calls ended as hit/miss (get), ok, error, skipped_open,
    pool_exhausted; and the ``cached`` row of ``@cached``'s own decisions, which
    :meth:`snapshot` shows once one was counted (a service that uses no origin option
    reports exactly what it did before)."""

    def __init__(self) -> None:
        self._counts = {op: {o: itertools.count() for o in _OUTCOMES[op]} for op in OPERATIONS}

    def counter(self, op: str, outcome: str) -> itertools.count[int]:
        """The counter itself, for a hot path to bind once and ``next()`` per call."""
        return self._counts[op][outcome]

    def count(self, op: str, outcome: str) -> None:
        next(self._counts[op][outcome])

    def snapshot(self) -> dict[str, dict[str, int]]:
        snapshot = {
            op: {outcome: counter_value(c) for outcome, c in outcomes.items()}
            for op, outcomes in self._counts.items()
        }
        if not any(snapshot[CACHED].values()):
            del snapshot[CACHED]
        return snapshot

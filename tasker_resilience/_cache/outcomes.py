"""What each cache operation ended as: the counters behind ``CacheProvider.stats()``.

One ``itertools.count`` per (operation, outcome): ``next()`` on it is atomic under the
GIL and lock-free, so the hot path pays one C call per count.

The same counts are where OpenTelemetry learns what each cache call ended as (span
attributes, see ``_operations/telemetry.py``). This module imports nothing of it: it
holds one slot, :func:`set_outcome_hook`, that the telemetry module fills when the
package is imported and the OpenTelemetry API is installed. Stats built while the slot
is empty hand out the plain counters: without the API a cache call pays nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

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
    "OutcomeHook",
    "set_outcome_hook",
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


OutcomeHook = Callable[[Any, str, str], None]
"""``hook(source, operation, outcome)``, called on the caller's thread after each count
(``source``: what the stats were built for, the ``CacheProvider``)."""

_hook: OutcomeHook | None = None


def set_outcome_hook(hook: OutcomeHook | None) -> None:
    """Fill (or empty) the slot. Stats built from now on report each count to ``hook``;
    an emptied slot silences the stats built while it was filled."""
    global _hook
    _hook = hook


class _Reported:
    """A counter that also tells the hook: what stats built with a filled slot hand out."""

    __slots__ = ("_count", "_op", "_outcome", "_source")

    def __init__(self, count: itertools.count[int], source: Any, op: str, outcome: str) -> None:
        self._count = count
        self._source = source
        self._op = op
        self._outcome = outcome

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        value = next(self._count)
        hook = _hook
        if hook is not None:
            hook(self._source, self._op, self._outcome)
        return value


class CacheStats:
    """Per operation, how many calls ended as hit/miss (get), ok, error, skipped_open,
    pool_exhausted; and the ``cached`` row of ``@cached``'s own decisions, which
    :meth:`snapshot` shows once one was counted (a service that uses no origin option
    reports exactly what it did before). ``source``: what the outcome hook is told the
    counts belong to."""

    def __init__(self, source: Any = None) -> None:
        self._counts = {op: {o: itertools.count() for o in _OUTCOMES[op]} for op in OPERATIONS}
        self._source = source
        self._bound: Mapping[str, Mapping[str, Iterator[int]]] = self._counts
        if _hook is not None:
            self._bound = {
                op: {o: _Reported(c, source, op, o) for o, c in outcomes.items()}
                for op, outcomes in self._counts.items()
            }

    def counter(self, op: str, outcome: str) -> Iterator[int]:
        """The counter itself, for a hot path to bind once and ``next()`` per call."""
        return self._bound[op][outcome]

    def count(self, op: str, outcome: str) -> None:
        next(self._bound[op][outcome])

    def note(self, op: str, outcome: str) -> None:
        """Tell the hook of an outcome counted elsewhere (a near-tier answer served
        stale, counted by the tier); counts nothing here."""
        hook = _hook
        if hook is not None and self._bound is not self._counts:
            hook(self._source, op, outcome)

    def snapshot(self) -> dict[str, dict[str, int]]:
        snapshot = {
            op: {outcome: counter_value(c) for outcome, c in outcomes.items()}
            for op, outcomes in self._counts.items()
        }
        if not any(snapshot[CACHED].values()):
            del snapshot[CACHED]
        return snapshot

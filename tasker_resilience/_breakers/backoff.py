"""How long a breaker stays open: ``timeout_seconds``, growing after each failed probe.

A dependency that fails its probe again and again is probed less and less often
(Envoy's growing ejection time): the n-th re-open in a row stays open for a time
drawn uniformly between ``timeout_seconds`` and ``min(max_timeout_seconds,
timeout_seconds * 2**n)``. That is full jitter above a floor: processes that tripped
together spread their probes instead of probing in step, and no open period is ever
shorter than the configured ``timeout_seconds``. The first open after a close is
exactly ``timeout_seconds`` (as without growth); a close starts over.

With ``max_timeout_seconds`` unset (or equal to ``timeout_seconds``) every open lasts
``timeout_seconds``, as it always did.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["OpenTime", "Random"]

Random = Callable[[], float]
"""A source of floats in [0, 1): ``random.random`` by default; tests pass their own."""

_MAX_DOUBLINGS = 32
"""2**32 x 0.001 s is far past any cap: no need to compute larger powers."""


class OpenTime:
    """The open time of one breaker; the breaker's lock guards every call."""

    __slots__ = ("_random", "_reopens", "base", "cap", "current")

    def __init__(
        self, base: float, cap: float | None = None, *, rand: Random = random.random
    ) -> None:
        if cap is not None and cap < base:
            raise ValueError(f"max open time {cap!r} is below the open time {base!r}")
        self.base = base
        self.cap = base if cap is None else cap
        self._random = rand
        self._reopens = 0
        self.current = base
        """The length of the present (or last) open period, in seconds."""

    @property
    def reopens(self) -> int:
        """Failed probes in a row since the circuit last closed."""
        return self._reopens

    def first(self) -> float:
        """The open time of a trip from closed: ``base``."""
        self._reopens = 0
        self.current = self.base
        return self.current

    def reopen(self) -> float:
        """The open time after a failed probe: one doubling more, jittered, capped."""
        self._reopens += 1
        ceiling = min(self.cap, self.base * 2 ** min(self._reopens, _MAX_DOUBLINGS))
        self.current = self.base + self._random() * (ceiling - self.base)
        return self.current

    def reset(self) -> None:
        """The circuit closed: the next trip starts from ``base`` again."""
        self._reopens = 0
        self.current = self.base

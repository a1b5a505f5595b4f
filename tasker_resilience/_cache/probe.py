"""The health report's look at a backend: at most one check per interval, shared.

Kubernetes probes every pod every few seconds, often on several endpoints, and a load
balancer may add its own; each of those requests must not become a round trip to a
server that is already struggling. :class:`HealthProbe` runs the check when the last
answer is older than ``interval`` seconds and hands every other caller that answer.
While one check is in flight the others do not wait for it: they get the previous
answer (only the very first callers, with nothing to reuse yet, wait for it).

The check runs outside the cache's breaker: a health request never moves a breaker's
counts, so a storm of probes cannot open it (or close it) on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["HealthProbe"]


class HealthProbe:
    """``result()``: the answer of ``check``, at most one call per ``interval`` seconds."""

    def __init__(
        self, check: Callable[[], bool], interval: float, clock: Callable[[], float]
    ) -> None:
        self._check = check
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below, never held across check()
        self._answer: bool | None = None
        self._due = 0.0
        self._running = False
        self._first = threading.Event()  # set once the first answer exists

    def result(self) -> bool:
        """The last answer if it is recent enough (or a check is already running), else
        the answer of a check run now, by this caller."""
        with self._lock:
            answer = self._answer
            runs = not self._running and (answer is None or self._clock() >= self._due)
            if runs:
                self._running = True
        if not runs:
            if answer is None:
                # Nothing to reuse yet: wait for the first check (bounded by its own
                # socket timeouts), and call it unhealthy if it has not answered.
                self._first.wait()
                answer = self._answer
            return bool(answer)
        healthy = False
        try:
            healthy = self._check()
        finally:
            # Interrupted (cancelled, KeyboardInterrupt): recorded as unhealthy, so the
            # waiting callers are released and the next due check tries again.
            with self._lock:
                self._answer = healthy
                self._due = self._clock() + self._interval
                self._running = False
            self._first.set()
        return healthy

    def forget(self) -> None:
        """Drop the last answer: the next :meth:`result` checks (tests, maintenance)."""
        with self._lock:
            self._due = 0.0

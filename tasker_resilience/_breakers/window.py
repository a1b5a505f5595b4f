"""The rate rules' sliding time window: calls, failures and slow calls of the last N seconds.

A breaker with ``window_seconds > 0`` trips on the failure rate or the slow-call rate of
its recent calls, once ``minimum_calls`` calls are in the window (resilience4j's
time-based window). The window is a ring of :data:`BUCKETS` buckets; it holds, per
bucket, the running totals at the bucket's start, so the counts of the whole window
are the totals now minus the totals at the start of its oldest bucket: O(1) to read,
O(1) to move on (at most :data:`BUCKETS` steps, whatever the idle time).

Why totals and not a counter per bucket: the healthy call, the one the rules must not
slow down, records nothing here. Its success is already counted by the breaker (a
lock-free ``itertools.count``), and that count is read only when the window moves on
(once per bucket) or judges a bad call. So the lock-free path of a fast success only
compares its duration and the bucket's end; failures and slow calls are counted under
the breaker's lock, which they take anyway. The breaker holds its lock around every
method here.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUCKETS", "FAILURE_RATE", "SLOW_CALL_RATE", "SlidingWindow"]

BUCKETS: Final = 10
"""Buckets per window: the window covers the last ``window_seconds`` to within one
bucket (a tenth of it)."""

FAILURE_RATE: Final = "failure_rate"
SLOW_CALL_RATE: Final = "slow_call_rate"


class SlidingWindow:
    """Counts of the calls that ended in the last ``seconds`` (within one bucket).

    ``calls`` totals are handed in by the caller (the breaker's success + failure
    counters); ``failures`` and ``slow`` are counted here by :meth:`add`.
    """

    __slots__ = (
        "_calls_at",
        "_failures_at",
        "_index",
        "_slow_at",
        "failure_rate_threshold",
        "failures",
        "minimum_calls",
        "rotate_at",
        "seconds",
        "slow",
        "slow_call_rate_threshold",
        "width",
    )

    def __init__(
        self,
        seconds: float,
        *,
        minimum_calls: int,
        failure_rate_threshold: float,
        slow_call_rate_threshold: float,
        now: float,
        calls: int = 0,
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"a window needs seconds > 0, not {seconds!r}")
        self.seconds = seconds
        self.width = seconds / BUCKETS
        self.minimum_calls = minimum_calls
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.failures = 0
        """Failures counted since the window was made (a running total)."""
        self.slow = 0
        """Slow calls counted since the window was made (a running total)."""
        self._calls_at = [0] * BUCKETS
        self._failures_at = [0] * BUCKETS
        self._slow_at = [0] * BUCKETS
        self._index = 0
        self.rotate_at = 0.0
        """When the current bucket ends: a call ending before it needs no bookkeeping."""
        self.reset(now, calls)

    def reset(self, now: float, calls: int) -> None:
        """Forget every call: the window starts empty at ``now`` (``calls``: the total so far)."""
        for ring, total in (
            (self._calls_at, calls),
            (self._failures_at, self.failures),
            (self._slow_at, self.slow),
        ):
            ring[:] = [total] * BUCKETS
        self._index = 0
        self.rotate_at = now + self.width

    def advance(self, now: float, calls: int) -> None:
        """Move the window on to ``now``: each bucket that ended gives way to a new one
        starting at the present totals (``calls``: the total number of calls now)."""
        if now < self.rotate_at:
            return
        passed = int((now - self.rotate_at) // self.width) + 1
        self.rotate_at += passed * self.width
        index = self._index
        for _ in range(min(passed, BUCKETS)):
            index = (index + 1) % BUCKETS
            self._calls_at[index] = calls
            self._failures_at[index] = self.failures
            self._slow_at[index] = self.slow
        self._index = index

    def add(self, *, failed: bool, slow: bool) -> None:
        """Count one bad call (``advance`` to its end time first)."""
        self.failures += failed
        self.slow += slow

    def counts(self, calls: int, now: float | None = None) -> tuple[int, int, int]:
        """``(calls, failures, slow)`` in the window (``calls``: the total now).

        With ``now``, as :meth:`advance` to ``now`` would leave them, without moving the
        window: a reader (the health report) changes nothing and needs no lock."""
        passed = 0
        if now is not None and now >= self.rotate_at:
            passed = int((now - self.rotate_at) // self.width) + 1
            if passed >= BUCKETS:
                return (0, 0, 0)
        # The oldest bucket after ``passed`` more: never one of those that would start now.
        oldest = (self._index + passed + 1) % BUCKETS
        return (
            calls - self._calls_at[oldest],
            self.failures - self._failures_at[oldest],
            self.slow - self._slow_at[oldest],
        )

    def tripped(self, calls: int) -> str | None:
        """The rule the window breaks now (:data:`FAILURE_RATE` first, then
        :data:`SLOW_CALL_RATE`), or None; never before ``minimum_calls`` calls."""
        in_window, failures, slow = self.counts(calls)
        if in_window < self.minimum_calls:
            return None
        if failures >= self.failure_rate_threshold * in_window:
            return FAILURE_RATE
        if slow >= self.slow_call_rate_threshold * in_window:
            return SLOW_CALL_RATE
        return None

    def rates(self, calls: int, now: float | None = None) -> dict[str, float | int]:
        """The window as health shows it: its length, calls and both rates (``now``: as
        in :meth:`counts`)."""
        in_window, failures, slow = self.counts(calls, now)
        return {
            "seconds": self.seconds,
            "calls": in_window,
            "failure_rate": round(failures / in_window, 3) if in_window else 0.0,
            "slow_call_rate": round(slow / in_window, 3) if in_window else 0.0,
        }

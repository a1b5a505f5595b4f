"""Invalidations the cache could not apply, kept until the backend is reachable again.

While the ``cache`` breaker is open (or when the call itself failed) a ``delete``,
``delete_pattern`` or write-through ``set`` never reaches the server, so the server
may still hold the old value. The provider records the full key or pattern here and
replays the list before it serves any read through an admitted call. The memory is
bounded: once more than ``limit`` entries are pending they are replaced by one
"drop the whole ``key_prefix`` namespace" step, which is always safe (only slower to
warm up).
"""

from __future__ import annotations

import threading
from typing import Final, Literal, NamedTuple

__all__ = ["DELETE", "DELETE_PATTERN", "PendingInvalidations", "ReplayPlan", "Step"]

Kind = Literal["delete", "delete_pattern"]
DELETE: Final = "delete"
DELETE_PATTERN: Final = "delete_pattern"


class Step(NamedTuple):
    kind: Kind
    target: str
    """A full key (``delete``) or a full, prefixed pattern (``delete_pattern``)."""


class ReplayPlan(NamedTuple):
    steps: tuple[Step, ...]
    overflowed: bool
    """True when the steps are the single namespace drop that replaced an overflow."""
    seqs: tuple[int, ...]
    """The recording sequence number of each step (or of the last record, on overflow)."""


class PendingInvalidations:
    """A bounded, ordered, de-duplicated set of invalidations to replay. Thread-safe.

    ``active`` is a plain attribute so the provider's hot path pays one read when
    nothing is pending.
    """

    def __init__(self, limit: int, namespace_pattern: str) -> None:
        self.limit: Final = limit
        self.namespace_pattern: Final = namespace_pattern
        self.active = False
        # Step -> sequence number of its latest recording. A step recorded again while
        # a replay of it is in flight gets a new number, so that replay cannot forget
        # it: the new invalidation may have come after the replayed delete ran.
        self._steps: dict[Step, int] = {}
        self._overflowed = False
        self._patterns = 0  # pattern steps among _steps (covers() reads it without a lock)
        self._seq = 0
        self._claimed = False
        self._lock = threading.Lock()

    def add(self, kind: Kind, target: str) -> None:
        with self._lock:
            self._seq += 1
            if not self._overflowed:
                step = Step(kind, target)
                if kind != DELETE and step not in self._steps:
                    self._patterns += 1
                self._steps[step] = self._seq
                if len(self._steps) > self.limit:
                    self._overflowed = True
                    self._steps.clear()
                    self._patterns = 0
            self.active = True

    def plan(self) -> ReplayPlan:
        """What to replay now; pass it to :meth:`done` once every step succeeded."""
        with self._lock:
            if self._overflowed:
                drop = Step(DELETE_PATTERN, self.namespace_pattern)
                return ReplayPlan((drop,), True, (self._seq,))
            return ReplayPlan(tuple(self._steps), False, tuple(self._steps.values()))

    def claim(self) -> ReplayPlan | None:
        """:meth:`plan` for one replaying caller at a time; None while another's is in flight.

        Without it every call admitted after an outage replays the whole list at once:
        hundreds of concurrent callers times hundreds of deletes saturate the pool and
        re-open the circuit. Call :meth:`release` when the claimed replay ends.
        """
        with self._lock:
            if self._claimed:
                return None
            self._claimed = True
        return self.plan()

    def release(self) -> None:
        """End a claimed replay (after :meth:`done`, or after it failed)."""
        with self._lock:
            self._claimed = False

    def done(self, plan: ReplayPlan) -> None:
        """Forget what ``plan`` replayed; anything recorded since stays pending."""
        with self._lock:
            if plan.overflowed:
                # Nothing recorded since the plan was made: the namespace drop covered
                # everything. Otherwise the drop stays pending and runs again.
                if plan.seqs[0] == self._seq:
                    self._overflowed = False
                    self._steps.clear()
                    self._patterns = 0
            else:
                for step, seq in zip(plan.steps, plan.seqs, strict=True):
                    if self._steps.get(step) == seq:
                        del self._steps[step]
                        if step.kind != DELETE:
                            self._patterns -= 1
            self.active = self._overflowed or bool(self._steps)

    def steps(self) -> list[Step]:
        """What is pending, as steps another instance can :meth:`add` (an overflow is
        its namespace drop)."""
        with self._lock:
            if self._overflowed:
                return [Step(DELETE_PATTERN, self.namespace_pattern)]
            return list(self._steps)

    def covers(self, full_key: str) -> bool:
        """True when ``full_key`` may still hold a value this process invalidated: its
        own delete is pending, or any pattern or namespace drop is (patterns are not
        matched here: treating them as covering every key is the safe answer)."""
        if not self.active:
            return False
        if self._overflowed or self._patterns:
            return True
        return Step(DELETE, full_key) in self._steps

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def snapshot(self) -> dict[str, int | bool]:
        """For stats and health: how much is pending."""
        with self._lock:
            return {"pending": len(self._steps), "overflowed": self._overflowed}

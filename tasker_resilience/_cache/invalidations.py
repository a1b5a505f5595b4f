"""Invalidations the cache could not apply, kept until the backend is reachable again.

While the ``cache`` breaker is open (or when the call itself failed) a ``delete``,
``delete_pattern`` or write-through ``set`` never reaches the server, so the server
may still hold the old value. The provider records the full key or pattern here and
replays them before it serves any read through an admitted call. The memory is
bounded: once more than ``limit`` entries are pending they are replaced by one
"drop the whole ``key_prefix`` namespace" step, which is always safe (only slower to
warm up).

Single keys wait in a FIFO queue (a ``deque``) beside a ``set`` of what is pending:
recording, covering a read, taking a batch for the replay and finishing it are each
O(1) per key, so replaying ``n`` missed deletes costs O(n) however many slices it
takes. What one pending key holds: the key's own string (this process made it for the
call that missed), one ``set`` slot and one ``deque`` slot: ``MEMORY_PER_KEY_BYTES``
besides the string (measured in ``tests/test_stale_bounds.py``).

Patterns (and the namespace drop that replaces an overflow) are few; each carries the
sequence number of its latest recording, so a replay that resumes a pattern's
``SCAN`` from a saved cursor can tell that the pattern was recorded again since it
started (a second outage) and start over: keys the first pass already walked may
hold values invalidated after it walked them.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Final, Literal, NamedTuple

from tasker_resilience._forks import after_fork_in_child

__all__ = [
    "DELETE",
    "DELETE_PATTERN",
    "MEMORY_PER_KEY_BYTES",
    "PatternStep",
    "PendingInvalidations",
    "ReplayPlan",
    "Step",
]

Kind = Literal["delete", "delete_pattern"]
DELETE: Final = "delete"
DELETE_PATTERN: Final = "delete_pattern"
MEMORY_PER_KEY_BYTES: Final = 100
"""Upper bound of what a pending single-key invalidation holds besides its key string
(one ``set`` slot and one ``deque`` slot, with their growth slack)."""


class Step(NamedTuple):
    kind: Kind
    target: str
    """A full key (``delete``) or a full, prefixed pattern (``delete_pattern``)."""


class PatternStep(NamedTuple):
    """A pattern (or the namespace drop) to replay, and the sequence number of its
    latest recording: a replay of it is finished only if nothing recorded it since."""

    pattern: str
    seq: int
    overflowed: bool


class ReplayPlan(NamedTuple):
    """Everything pending, taken at once (a cluster node replays it all in the first
    call it admits again): settle it with :meth:`PendingInvalidations.settle`."""

    epoch: int
    keys: list[str]
    patterns: list[PatternStep]

    @property
    def steps(self) -> tuple[Step, ...]:
        return (
            *(Step(DELETE, key) for key in self.keys),
            *(Step(DELETE_PATTERN, step.pattern) for step in self.patterns),
        )

    @property
    def overflowed(self) -> bool:
        return any(step.overflowed for step in self.patterns)


class PendingInvalidations:
    """A bounded, ordered, de-duplicated set of invalidations to replay. Thread-safe.

    ``active`` is a plain attribute so the provider's hot path pays one read when
    nothing is pending.
    """

    def __init__(self, limit: int, namespace_pattern: str) -> None:
        self.limit: Final = limit
        self.namespace_pattern: Final = namespace_pattern
        self.active = False
        self._keys: set[str] = set()
        """Every single key pending (``covers`` reads it without the lock)."""
        self._queue: deque[str] = deque()
        """Pending keys in the order recorded; a key recorded again while the replay
        held it appears once more (see ``_again``)."""
        self._taken: set[str] = set()
        """Keys the replaying caller holds right now (between :meth:`take` and
        :meth:`finished` or :meth:`untake`)."""
        self._again: set[str] = set()
        """Taken keys recorded again meanwhile: queued once more, and still pending
        after the taken copy is finished."""
        self._patterns: dict[str, int] = {}
        """Pattern -> sequence number of its latest recording."""
        self._overflowed = False
        self._seq = 0
        self._epoch = 0  # bumped when everything pending is replaced (an overflow)
        self._claimed = False
        self._lock = threading.Lock()
        after_fork_in_child(self, PendingInvalidations._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the lock and the claim of a replay that was in flight in
        another thread of the parent are released, and what it held is pending again
        (first in line), so the child replays it."""
        self._lock = threading.Lock()
        self._claimed = False
        for key in reversed(list(self._taken)):
            if key not in self._again:  # those are queued already
                self._queue.appendleft(key)
        self._taken.clear()
        self._again.clear()

    # --- recording -------------------------------------------------------------------------

    def add(self, kind: Kind, target: str) -> None:
        with self._lock:
            self._seq += 1
            self.active = True
            if self._overflowed:
                return  # the namespace drop covers it; _seq says it came after
            if kind != DELETE:
                self._patterns[target] = self._seq
            elif target in self._keys:
                if target in self._taken and target not in self._again:
                    # The replay may have deleted it already, before this invalidation.
                    self._again.add(target)
                    self._queue.append(target)
                return
            else:
                self._keys.add(target)
                self._queue.append(target)
            if len(self._keys) + len(self._patterns) > self.limit:
                self._overflow()

    def _overflow(self) -> None:
        # Under self._lock.
        self._overflowed = True
        self._epoch += 1
        self._keys.clear()
        self._queue.clear()
        self._taken.clear()
        self._again.clear()
        self._patterns.clear()
        self.active = True

    # --- the replaying caller -----------------------------------------------------------------

    def claim(self) -> bool:
        """Become the one replaying caller; False while another's replay is in flight.

        Without it every call admitted after an outage replays the whole list at once:
        hundreds of concurrent callers times hundreds of deletes saturate the pool and
        re-open the circuit. Call :meth:`release` when the claimed replay ends.
        """
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    def release(self) -> None:
        """End a claimed replay (after it finished, or after it failed)."""
        with self._lock:
            self._claimed = False

    def take(self, count: int) -> tuple[int, list[str]]:
        """Up to ``count`` pending keys, oldest first, for the claimed replay, with the
        epoch to hand back to :meth:`finished` or :meth:`untake` (one batch at a time:
        nothing is taken when this is called)."""
        with self._lock:
            queue = self._queue
            keys = [queue.popleft() for _ in range(min(count, len(queue)))]
            self._taken.update(keys)
            return self._epoch, keys

    def finished(self, epoch: int, keys: list[str]) -> None:
        """The replay deleted ``keys``: they are no longer pending, unless recorded
        again since they were taken."""
        with self._lock:
            if epoch != self._epoch:
                return  # replaced by the namespace drop meanwhile
            for key in keys:
                self._taken.discard(key)
                if key in self._again:
                    self._again.discard(key)  # its later copy in the queue stays pending
                else:
                    self._keys.discard(key)
            self._update()

    def untake(self, epoch: int, keys: list[str]) -> None:
        """The replay could not delete ``keys`` (the backend failed): first in line again."""
        with self._lock:
            if epoch != self._epoch:
                return
            for key in reversed(keys):  # pushed to the front: oldest first again
                if key not in self._taken:
                    continue  # finished already
                self._taken.discard(key)
                if key in self._again:
                    self._again.discard(key)  # queued again already: one copy is enough
                else:
                    self._queue.appendleft(key)

    def take_all(self) -> ReplayPlan:
        """Everything pending, for the claimed replay to apply in one go."""
        epoch, keys = self.take(len(self._queue))
        return ReplayPlan(epoch, keys, self.pattern_steps())

    def settle(self, plan: ReplayPlan) -> None:
        """Every step of ``plan`` was applied."""
        self.finished(plan.epoch, plan.keys)
        for step in plan.patterns:
            self.pattern_done(step)

    def give_back(self, plan: ReplayPlan) -> None:
        """``plan`` was not applied (or only in part): what it took is pending again
        (nothing, once it was settled)."""
        self.untake(plan.epoch, plan.keys)

    def pattern_steps(self) -> list[PatternStep]:
        """The patterns to replay with their sequence numbers, or the namespace drop."""
        with self._lock:
            if self._overflowed:
                return [PatternStep(self.namespace_pattern, self._seq, True)]
            return [PatternStep(p, seq, False) for p, seq in self._patterns.items()]

    def pattern_done(self, step: PatternStep) -> bool:
        """The replay dropped ``step``'s keys. True when that settled it: False when it
        was recorded again since (for the namespace drop: anything was), so it stays."""
        with self._lock:
            if step.overflowed:
                if not self._overflowed or step.seq != self._seq:
                    return False
                self._overflowed = False
                self._epoch += 1
            elif self._patterns.get(step.pattern) != step.seq:
                return False
            else:
                del self._patterns[step.pattern]
            self._update()
            return True

    def _update(self) -> None:
        # Under self._lock.
        self.active = self._overflowed or bool(self._keys) or bool(self._patterns)

    # --- reading -------------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        """What is pending, as steps another instance can :meth:`add` (an overflow is
        its namespace drop)."""
        with self._lock:
            if self._overflowed:
                return [Step(DELETE_PATTERN, self.namespace_pattern)]
            keys = [Step(DELETE, key) for key in self._keys]
            return keys + [Step(DELETE_PATTERN, pattern) for pattern in self._patterns]

    def covers(self, full_key: str) -> bool:
        """True when ``full_key`` may still hold a value this process invalidated: its
        own delete is pending, or any pattern or namespace drop is (patterns are not
        matched here: treating them as covering every key is the safe answer)."""
        if not self.active:
            return False
        return self._overflowed or bool(self._patterns) or full_key in self._keys

    def __len__(self) -> int:
        return len(self._keys) + len(self._patterns)

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def overflow(self) -> None:
        """Replace everything pending with the namespace drop (as an overflow does)."""
        with self._lock:
            self._seq += 1
            self._overflow()

    def snapshot(self) -> dict[str, int | bool]:
        """For stats and health: how much is pending."""
        with self._lock:
            return {"pending": len(self), "overflowed": self._overflowed}

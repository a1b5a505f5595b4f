"""The replay of invalidations the backend missed, in bounded slices.

:class:`~tasker_resilience._cache.invalidations.PendingInvalidations` remembers what
could not be applied; this module sends it to the backend, one replaying caller at a
time, and logs the outcome.

What one caller pays is bounded: each admitted call replays one *slice*, at most
``REPLAY_SLICE_SECONDS`` of work (a round trip started before the budget ran out
finishes). Single keys go in batches (``delete_many``, one ``UNLINK`` per
``REPLAY_BATCH`` keys, when the backend has it); a pattern or a whole-namespace drop
goes one ``SCAN`` page at a time (``delete_pattern_page``) and resumes from its
cursor in the next slice. Until a key's invalidation is applied, the provider answers
reads of it as misses (:meth:`PendingInvalidations.covers`): a value this process
invalidated is never served, however many slices the replay takes.

The slice is written once, as a generator of backend operations; :meth:`replay` and
:meth:`areplay` drive it, calling or awaiting each operation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final

from tasker_resilience._cache.backends.contract import NodeUnavailable
from tasker_resilience._cache.invalidations import (
    DELETE,
    PendingInvalidations,
    ReplayPlan,
    Step,
)

if TYPE_CHECKING:
    from tasker_resilience._cache.backends.contract import CacheBackend

__all__ = ["REPLAY_BATCH", "REPLAY_SLICE_SECONDS", "InvalidationReplay"]

_LOGGER = logging.getLogger("tasker_resilience.cache")

REPLAY_SLICE_SECONDS: Final = 0.05
"""Work one caller does for the replay before its own call goes on."""
REPLAY_BATCH: Final = 500
"""Single-key invalidations sent per backend call (one ``UNLINK k1 k2 ...``)."""

# One backend operation of a slice: (name, argument). "delete": one key; "delete_many":
# a list of keys; "page": (pattern, cursor) -> next cursor (0: the pattern is done).
_Op = tuple[str, Any]


class InvalidationReplay:
    """Replays remembered invalidations (``pending``) on the backend, a slice per call."""

    def __init__(
        self,
        backend: CacheBackend,
        pending: PendingInvalidations,
        key_prefix: str,
        *,
        slice_seconds: float = REPLAY_SLICE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pending = pending
        self._backend = backend
        self._key_prefix = key_prefix
        self._slice_seconds = slice_seconds
        self._clock = clock
        # A pattern step part-way through its SCAN, and the cursor to resume from.
        self._resume: tuple[Step, int] | None = None
        self._paged = callable(getattr(backend, "delete_pattern_page", None))
        self._batched = callable(getattr(backend, "delete_many", None))

    def replay(self) -> bool:
        """Replay one slice. True when nothing is left pending afterwards; False when
        work remains, or while another caller's slice is in flight."""
        plan = self.pending.claim()
        if plan is None:
            return False
        work = self._slice(plan)
        try:
            op = next(work)
            while True:
                op = work.send(self._call(*op))
        except StopIteration:
            pass
        finally:
            work.close()  # a backend error ended the slice: record what it finished, now
            self.pending.release()
        return not self.pending.active

    async def areplay(self) -> bool:
        """Async :meth:`replay`."""
        plan = self.pending.claim()
        if plan is None:
            return False
        work = self._slice(plan)
        try:
            op = next(work)
            while True:
                op = work.send(await self._acall(*op))
        except StopIteration:
            pass
        finally:
            work.close()
            self.pending.release()
        return not self.pending.active

    # A cluster node that is down (NodeUnavailable) takes the step into its own memory
    # and replays it when it is back: done here. A batch that met one is retried key
    # by key, so the keys on the nodes that are up are still deleted now.

    def _call(self, name: str, arg: Any) -> Any:
        backend: Any = self._backend
        try:
            if name == "page":
                return backend.delete_pattern_page(*arg) if self._paged else _whole(backend, arg)
            return getattr(backend, name)(arg)
        except NodeUnavailable:
            if name == "delete_many":
                for key in arg:
                    with contextlib.suppress(NodeUnavailable):
                        backend.delete(key)
            return 0

    async def _acall(self, name: str, arg: Any) -> Any:
        backend: Any = self._backend
        try:
            if name == "page":
                if self._paged:
                    return await backend.adelete_pattern_page(*arg)
                await backend.adelete_pattern(arg[0])
                return 0
            return await getattr(backend, "a" + name)(arg)
        except NodeUnavailable:
            if name == "delete_many":
                for key in arg:
                    with contextlib.suppress(NodeUnavailable):
                        await backend.adelete(key)
            return 0

    def _slice(self, plan: ReplayPlan) -> Generator[_Op, Any, None]:
        """The backend operations of one slice; records what it finished."""
        deadline = self._clock() + self._slice_seconds
        finished: list[int] = []
        keys = [i for i, (kind, _) in enumerate(plan.steps) if kind is DELETE]
        patterns = [i for i, (kind, _) in enumerate(plan.steps) if kind is not DELETE]
        try:
            for start in range(0, len(keys), REPLAY_BATCH if self._batched else 1):
                batch = keys[start : start + (REPLAY_BATCH if self._batched else 1)]
                targets = [plan.steps[i].target for i in batch]
                yield ("delete_many", targets) if self._batched else ("delete", targets[0])
                finished.extend(batch)
                if self._clock() >= deadline:
                    return
            for index in patterns:
                step = plan.steps[index]
                resume = self._resume
                cursor = resume[1] if resume is not None and resume[0] == step else 0
                while True:
                    cursor = int((yield ("page", (step.target, cursor))))
                    if not cursor:
                        finished.append(index)
                        self._resume = None
                        break
                    if self._clock() >= deadline:
                        self._resume = (step, cursor)
                        return
                if self._clock() >= deadline:
                    return
        finally:
            # Whatever ended the slice (the budget, or a backend error raised into
            # it), the steps already applied are done.
            self._done(plan, finished)

    def _done(self, plan: ReplayPlan, finished: list[int]) -> None:
        if not finished:
            return
        if len(finished) < len(plan.steps):
            part = ReplayPlan(
                tuple(plan.steps[i] for i in finished),
                False,
                tuple(plan.seqs[i] for i in finished),
            )
            self.pending.done(part)
            _LOGGER.info(
                "cache: replayed %d of %d missed invalidation(s); the rest in later calls",
                len(finished),
                len(plan.steps),
            )
            return
        self.pending.done(plan)
        if plan.overflowed:
            _LOGGER.warning(
                "cache: more invalidations were missed during the outage than remembered; "
                "dropped the whole %r namespace",
                self._key_prefix,
            )
        else:
            _LOGGER.info("cache: replayed %d missed invalidation(s)", len(plan.steps))


def _whole(backend: Any, arg: tuple[str, int]) -> int:
    # A backend without paging drops the whole pattern in one call.
    backend.delete_pattern(arg[0])
    return 0

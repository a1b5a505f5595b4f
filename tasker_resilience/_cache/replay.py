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
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from tasker_resilience._cache.backends.contract import NodeUnavailable
from tasker_resilience._cache.invalidations import PatternStep, PendingInvalidations

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


class _Resume(NamedTuple):
    """A pattern part-way through its ``SCAN``: valid only for the recording it began
    with (``step.seq``); recorded again since, the scan starts over."""

    step: PatternStep
    cursor: int


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
        self._resume: _Resume | None = None
        self._paged = callable(getattr(backend, "delete_pattern_page", None))
        self._batched = callable(getattr(backend, "delete_many", None))

    def replay(self) -> bool:
        """Replay one slice. True when nothing is left pending afterwards; False when
        work remains, or while another caller's slice is in flight."""
        if not self.pending.claim():
            return False
        work = self._slice()
        try:
            op = next(work)
            while True:
                op = work.send(self._call(*op))
        except StopIteration:
            pass
        finally:
            work.close()  # a backend error ended the slice: put back what it held, now
            self.pending.release()
        return not self.pending.active

    async def areplay(self) -> bool:
        """Async :meth:`replay`."""
        if not self.pending.claim():
            return False
        work = self._slice()
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

    def _slice(self) -> Generator[_Op, Any, None]:
        """The backend operations of one slice, each recorded as it completes.

        Single keys are taken from the pending queue a batch at a time, so each pending
        invalidation is touched a constant number of times however long the backlog
        (a batch the backend failed goes back to the front, once per failure)."""
        deadline = self._clock() + self._slice_seconds
        pending, batched = self.pending, self._batched
        replayed = 0
        while True:
            epoch, keys = pending.take(REPLAY_BATCH if batched else 1)
            if not keys:
                break
            try:
                yield ("delete_many", keys) if batched else ("delete", keys[0])
            except BaseException:
                pending.untake(epoch, keys)  # the backend failed, or the caller is gone
                raise
            pending.finished(epoch, keys)
            replayed += len(keys)
            if self._clock() >= deadline:
                self._log_partial(replayed)
                return
        for step in pending.pattern_steps():
            resume = self._resume
            cursor = resume.cursor if resume is not None and resume.step == step else 0
            while True:
                cursor = int((yield ("page", (step.pattern, cursor))))
                if not cursor:
                    self._resume = None
                    if pending.pattern_done(step):
                        self._log_pattern(step)
                    break
                if self._clock() >= deadline:
                    # Resumed from here by the next slice, unless the step is recorded
                    # again meanwhile (its sequence number then differs): start over.
                    self._resume = _Resume(step, cursor)
                    return
            if self._clock() >= deadline:
                return
        if replayed:
            _LOGGER.info("cache: replayed %d missed invalidation(s)", replayed)

    def _log_partial(self, replayed: int) -> None:
        _LOGGER.info(
            "cache: replayed %d missed invalidation(s); %d left for later calls",
            replayed,
            len(self.pending),
        )

    def _log_pattern(self, step: PatternStep) -> None:
        if step.overflowed:
            _LOGGER.warning(
                "cache: more invalidations were missed during the outage than remembered; "
                "dropped the whole %r namespace",
                self._key_prefix,
            )
        else:
            _LOGGER.info("cache: replayed the missed pattern invalidation %r", step.pattern)


def _whole(backend: Any, arg: tuple[str, int]) -> int:
    # A backend without paging drops the whole pattern in one call.
    backend.delete_pattern(arg[0])
    return 0

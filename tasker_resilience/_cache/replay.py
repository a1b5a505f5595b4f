"""The replay of invalidations the backend missed, before an admitted call reads.

:class:`~tasker_resilience._cache.invalidations.PendingInvalidations` remembers what
could not be applied; this module sends it to the backend, one replaying caller at a
time, and logs the outcome. Sync and async differ only in the ``await`` on each step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tasker_resilience._cache.backends.contract import NodeUnavailable
from tasker_resilience._cache.invalidations import DELETE, PendingInvalidations, ReplayPlan

if TYPE_CHECKING:
    from tasker_resilience._cache.backends.contract import CacheBackend

__all__ = ["InvalidationReplay"]

_LOGGER = logging.getLogger("tasker_resilience.cache")


class InvalidationReplay:
    """Remembers missed invalidations (``pending``) and replays them on the backend."""

    def __init__(self, backend: CacheBackend, pending: PendingInvalidations, key_prefix: str):
        self.pending = pending
        self._backend = backend
        self._key_prefix = key_prefix

    def replay(self) -> bool:
        """Replay missed invalidations; False while another caller's replay is in flight."""
        plan = self.pending.claim()
        if plan is None:
            return False
        try:
            for call, target in self._steps(
                plan, self._backend.delete, self._backend.delete_pattern
            ):
                # A cluster node that is down takes the step into its own memory and
                # replays it when it is back: done here.
                with contextlib.suppress(NodeUnavailable):
                    call(target)
            self._done(plan)
        finally:
            self.pending.release()
        return True

    async def areplay(self) -> bool:
        """Async :meth:`replay`."""
        plan = self.pending.claim()
        if plan is None:
            return False
        try:
            backend = self._backend
            for call, target in self._steps(plan, backend.adelete, backend.adelete_pattern):
                with contextlib.suppress(NodeUnavailable):  # as in replay()
                    await call(target)
            self._done(plan)
        finally:
            self.pending.release()
        return True

    @staticmethod
    def _steps(
        plan: ReplayPlan,
        delete: Callable[[str], Any],
        delete_pattern: Callable[[str], Any],
    ) -> Iterator[tuple[Callable[[str], Any | Awaitable[Any]], str]]:
        for kind, target in plan.steps:
            yield (delete if kind is DELETE else delete_pattern), target

    def _done(self, plan: ReplayPlan) -> None:
        self.pending.done(plan)
        if plan.overflowed:
            _LOGGER.warning(
                "cache: more invalidations were missed during the outage than remembered; "
                "dropped the whole %r namespace",
                self._key_prefix,
            )
        else:
            _LOGGER.info("cache: replayed %d missed invalidation(s)", len(plan.steps))

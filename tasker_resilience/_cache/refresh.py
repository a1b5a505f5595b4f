"""Early refresh for ``@cached(early_refresh=True)``: recompute a hot entry before it
expires, so it never expires under load.

The decision is XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache
Stampede Prevention", VLDB 2015): a read of an entry with ``remaining`` seconds left,
whose value took ``delta`` seconds to compute, recomputes when

    delta * beta * -ln(rand()) >= remaining

The chance grows as expiry nears and with the cost of the computation; over the whole
fleet that is about one early recomputation per TTL, whatever the number of readers
(each read draws independently, and the first that fires refreshes the entry for all).
``beta`` > 1 refreshes earlier, < 1 later.

At most one refresh per key runs in a process (:class:`Refreshes`), and at most
:data:`MAX_REFRESHES` at once; a read that finds one running, or the table full, simply
returns the current value. Async functions refresh in a background task, sync functions
in the calling thread (that caller waits for the computation, the others do not).
"""

from __future__ import annotations

import asyncio
import math
import os
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Final

__all__ = ["MAX_REFRESHES", "Refreshes", "early_beta", "xfetch"]

MAX_REFRESHES: Final = 256
"""Early refreshes running at once in one process (per decorated function)."""


def early_beta(early_refresh: bool | float) -> float | None:
    """``beta`` for ``@cached(early_refresh=...)``: None (off) for False, 1.0 for True,
    else the number given (> 0)."""
    if early_refresh is False:
        return None
    if early_refresh is True:
        return 1.0
    if isinstance(early_refresh, (int, float)) and 0 < early_refresh <= 100:
        return float(early_refresh)
    raise ValueError(
        "@cached early_refresh must be True, False or XFetch's beta (0 < beta <= 100), "
        f"not {early_refresh!r}"
    )


def xfetch(delta: float, beta: float, remaining: float, draw: float) -> bool:
    """True when a read with ``remaining`` seconds left should recompute now.
    ``draw`` is uniform in (0, 1] (``1 - random.random()``); ``delta`` the seconds the
    value took to compute."""
    if remaining <= 0:
        return True
    if delta <= 0:
        return False
    return delta * beta * -math.log(draw) >= remaining


class Refreshes:
    """The early refreshes running in this process: at most one per key, bounded."""

    def __init__(self, limit: int = MAX_REFRESHES) -> None:
        self._limit = limit
        # slot -> the background task (async) or the claim of a thread refreshing it.
        self._running: dict[Any, Any] = {}
        _tables.add(self)

    def after_fork(self) -> None:
        """In a forked child: the parent's refreshes do not run here, and their claims
        would keep those keys from ever refreshing early."""
        self._running = {}

    def __len__(self) -> int:
        return len(self._running)

    def claim(self, slot: Any) -> bool:
        """True when the caller may refresh ``slot`` (then :meth:`done` when finished)."""
        running = self._running
        if len(running) >= self._limit:
            return False
        # setdefault is atomic under the GIL: exactly one caller claims a free slot.
        mine = object()
        return running.setdefault(slot, mine) is mine

    def done(self, slot: Any) -> None:
        self._running.pop(slot, None)

    def spawn(
        self,
        slot: Any,
        refresh: Callable[[], Coroutine[Any, Any, Any]],
        failed: Callable[[BaseException], None],
    ) -> bool:
        """Run ``refresh()`` in a background task of the running loop, unless ``slot`` is
        already refreshing or the table is full. ``failed`` hears of an exception (it
        must not raise); a cancelled refresh is dropped quietly."""
        if not self.claim(slot):
            return False
        try:
            task = asyncio.get_running_loop().create_task(refresh())
        except BaseException:
            self.done(slot)
            raise
        # The table holds the task: a task nobody references may be collected mid-run.
        self._running[slot] = task

        def finished(task: asyncio.Task[Any]) -> None:
            self.done(slot)
            if not task.cancelled() and (exc := task.exception()) is not None:
                failed(exc)

        task.add_done_callback(finished)
        return True


_tables: weakref.WeakSet[Refreshes] = weakref.WeakSet()


def _after_fork() -> None:
    for table in list(_tables):
        table.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork)

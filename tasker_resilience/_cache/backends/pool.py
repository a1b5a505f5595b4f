"""The queue of the single-server blocking pool: LIFO, bounded, cheap when healthy.

redis-py's ``BlockingConnectionPool`` keeps its connections (and ``None`` placeholders
for connections not opened yet) in a ``queue.LifoQueue``: every checkout and every
return takes a ``Condition`` and notifies it, in Python, even when nobody waits.
:class:`FailFastQueue` gives the pool what it uses of that queue (``get``,
``put_nowait``, ``queue``) with lock-free checkouts and returns while no caller waits, and a
notification only when one does, and adds one rule for callers that had to
wait (see the class).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from queue import Empty, Full
from typing import Any

__all__ = ["FailFastQueue", "close_gracefully", "pools_of"]


class FailFastQueue:
    """The blocking pool's queue, with one rule for callers that had to wait.

    When the server hangs, every pooled connection is held by a call waiting out its
    socket timeout; when those calls fail, redis-py drops (disconnects) their
    connections and returns them. A caller that was waiting would take one, reconnect
    to the same hung server and wait a second timeout: one call costing two (16
    threads on a pool of 10: 6 waited ~500 ms with a 250 ms timeout). So a caller that
    waited and is handed a connection its last user dropped gives up instead: redis-py
    reports that as "No connection available", an exhausted local pool, which reads
    as a miss and never counts against the breaker. The connection goes back for the
    next caller. Healthy connections come back connected, so a busy but healthy
    server keeps every waiter served within ``connect_timeout_seconds``.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: deque[Any] = deque()
        """The free items, the most recently returned last (redis-py reads it)."""
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self.waiting = 0
        """Callers blocked in :meth:`get` (changed under the lock, before they look)."""
        self.closed = False
        """Set by :meth:`close`: connections handed back are disconnected."""

    def close(self) -> None:
        """Close the pool under traffic: disconnect the idle connections now, and each
        connection in use when its call hands it back, by that caller.

        A connection is never disconnected while another thread uses it (redis-py's
        ``pool.disconnect()`` does that, and the call using it then fails with
        ``AttributeError: 'NoneType' object has no attribute 'readline'``). The idle
        ones are taken out first (each ``pop`` is atomic, as a checkout is), so no
        caller can take one being disconnected; they go back disconnected (a caller
        still arriving reconnects, and hands it back to be disconnected again)."""
        self.closed = True
        idle = []
        while True:
            try:
                idle.append(self.queue.pop())
            except IndexError:
                break
        for item in idle:
            if item is not None:
                item.disconnect()
        for item in reversed(idle):
            self.queue.append(item)
        if self.waiting:
            with self._lock:
                self._returned.notify_all()

    def put_nowait(self, item: Any) -> None:
        """Return ``item`` (a connection or a ``None`` placeholder); ``queue.Full``
        past ``maxsize``, as ``queue.Queue`` raises (redis-py fills a new pool with
        placeholders until it does; afterwards each return follows one checkout, so
        the bound holds without a lock)."""
        queue = self.queue
        if len(queue) >= self.maxsize:
            raise Full
        if self.closed and item is not None:
            item.disconnect()  # by the caller that used it: see close()
        queue.append(item)
        # Read after the append: a caller that starts waiting later finds the item
        # itself (it looks under the lock after counting itself), one already
        # waiting is woken here.
        if self.waiting:
            with self._lock:
                self._returned.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The most recently returned item; ``queue.Empty`` if none is free (without
        ``block``), if none comes back within ``timeout`` seconds, or if the one that
        comes back was dropped by its last call (see the class)."""
        try:
            # deque.pop is atomic: a free connection costs no lock. A return racing
            # this is seen here or by the waiting path below, which re-checks under
            # the lock that returns hold.
            return self.queue.pop()
        except IndexError:
            if not block:
                raise Empty from None
        item = self._wait(timeout)
        if item is not None and getattr(item, "_sock", None) is None:
            # A connection (not a None placeholder, which means "open a new one")
            # that is no longer connected: its last call failed just now.
            self.put_nowait(item)
            raise Empty
        return item

    def _wait(self, timeout: float | None) -> Any:
        ends = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self.waiting += 1
            try:
                while True:
                    try:
                        return self.queue.pop()
                    except IndexError:
                        pass
                    if ends is None:
                        self._returned.wait()
                        continue
                    left = ends - time.monotonic()
                    if left <= 0:
                        raise Empty
                    self._returned.wait(left)
            finally:
                self.waiting -= 1


def pools_of(client: Any) -> Iterator[Any]:
    """The redis-py connection pools of a sync ``client``: its own (one server, or a
    Sentinel-managed primary), its sentinels', and each known node's of a cluster."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        yield pool
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            yield sentinel.connection_pool
    nodes = getattr(client, "nodes_manager", None)
    for node in getattr(nodes, "nodes_cache", {}).values():
        node_client = getattr(node, "redis_connection", None)
        if node_client is not None:
            yield node_client.connection_pool


def close_gracefully(client: Any) -> None:
    """Release ``client``'s connections without failing the calls still using some:
    idle ones now, the others as their calls hand them back (:meth:`FailFastQueue.close`;
    redis-py's own queues: only the idle ones, the others go with the pool)."""
    for pool in pools_of(client):
        queue = getattr(pool, "pool", None)
        if isinstance(queue, FailFastQueue):
            queue.close()
            continue
        # An old redis-py pool without the choice: nothing now, the pool's GC closes them.
        with contextlib.suppress(TypeError):
            pool.disconnect(inuse_connections=False)

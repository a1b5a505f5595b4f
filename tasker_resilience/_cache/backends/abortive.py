"""Connections that never deliver a failed command later: every close is abortive.

redis-py closes a connection that failed or timed out politely: ``shutdown()`` and
``close()`` on the socket (``transport.close()`` on asyncio). The kernel then keeps the
unsent bytes queued and retransmits them for minutes. During a network partition that
means a ``SET`` whose call timed out (and whose key this process has since invalidated,
and replayed the ``DEL`` of) reaches the server *after* the partition heals: the old
value comes back and is served for its whole TTL.

So every connection the library opens closes abortively:

- sync sockets get ``SO_LINGER (on, 0 s)`` when they connect: whatever closes them
  (redis-py after an error, a pool's ``disconnect``, garbage collection) sends a RST
  and the kernel drops the unsent bytes at once;
- asyncio connections also ``transport.abort()`` before redis-py's own close, which
  drops the transport's user-space buffer too; and they never call into an event loop
  that is already closed (closing a connection of a finished ``asyncio.run`` from
  another loop or from the garbage collector would raise "Event loop is closed").

A healthy connection has nothing unsent when it closes: aborting it costs nothing but
the FIN handshake. :func:`make_abortive` applies this to every pool of a built client:
the pool of one server or a Sentinel-managed primary, the sentinels themselves, and
each node of a cluster (including nodes discovered later).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from typing import Any, Final

import redis

from tasker_resilience._cache.backends.pool import pools_of

__all__ = [
    "AbortiveAsyncMixin",
    "AbortiveMixin",
    "abortive",
    "linger_zero",
    "make_abortive",
    "make_pool_abortive",
]

_LINGER_ZERO: Final = struct.pack("ii", 1, 0)


def linger_zero(sock: Any) -> None:
    """``SO_LINGER (1, 0)`` on ``sock``: its close resets the connection and drops
    what was not sent (harmless where it means nothing, e.g. a Unix socket)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)


class AbortiveMixin:
    """For a sync redis-py connection class: its sockets close abortively."""

    def _connect(self) -> Any:
        sock = super()._connect()  # type: ignore[misc]  # the redis-py class it is mixed into
        linger_zero(sock)
        return sock


class AbortiveAsyncMixin:
    """For an asyncio redis-py connection class: closes abortively, and never through
    a closed event loop."""

    _reader: Any
    _writer: Any

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[misc]  # the redis-py class it is mixed into
        writer = self._writer
        if writer is not None:
            linger_zero(writer.get_extra_info("socket"))

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._abort()
        await super().disconnect(*args, **kwargs)  # type: ignore[misc]  # as above

    def _close(self) -> None:
        # redis-py's synchronous close (its __del__, a client's __del__), which may
        # run in any thread: through the transport only from its own loop's thread;
        # otherwise the abort is handed to that loop, or, when the loop has ended, the
        # socket goes with the transport (SO_LINGER set: a reset, nothing late).
        if self._abort():
            super()._close()  # type: ignore[misc]  # the redis-py class it is mixed into
        else:
            self._writer = self._reader = None

    def _abort(self) -> bool:
        """Abort the transport (drop its buffered bytes). False when that could not
        be done here and now: its loop has closed, or runs in another thread (then
        the abort is scheduled there)."""
        writer = self._writer
        if writer is None:
            return True
        transport = writer.transport
        loop = getattr(transport, "_loop", None)
        if loop is None:
            with contextlib.suppress(RuntimeError):
                transport.abort()
            return True
        if loop.is_closed():
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
            if running is loop or not loop.is_running():
                transport.abort()
                return True
            loop.call_soon_threadsafe(transport.abort)
        return False


@functools.cache
def abortive(cls: type) -> type:
    """``cls`` (a redis-py connection class, sync or asyncio) closing abortively."""
    if issubclass(cls, (AbortiveMixin, AbortiveAsyncMixin)):
        return cls
    import redis.asyncio.connection as aconnection

    mixin = AbortiveAsyncMixin if issubclass(cls, aconnection.AbstractConnection) else AbortiveMixin
    return type(f"Abortive{cls.__name__}", (mixin, cls), {"__module__": __name__})


def make_pool_abortive(pool: Any) -> None:
    """New connections of ``pool`` close abortively, and so do those it made already
    (a cluster client connects while it is built): they take the abortive class (it
    adds methods only), and an open socket gets SO_LINGER now."""
    cls = getattr(pool, "connection_class", None)
    if isinstance(cls, type):
        pool.connection_class = abortive(cls)
    made = [
        *getattr(pool, "_connections", ()),
        *getattr(pool, "_available_connections", ()),
        *getattr(pool, "_in_use_connections", ()),
    ]
    for connection in made:
        made_as: type = type(connection)
        with contextlib.suppress(TypeError):  # a class whose layout cannot change
            connection.__class__ = abortive(made_as)
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            linger_zero(getattr(sock, "_sock", sock))  # under a deadline wrapper too


def make_abortive(client: Any) -> Any:
    """Make every connection ``client`` (sync or asyncio) opens close abortively (see
    the module docstring); returns ``client``."""
    for pool in pools_of(client):
        make_pool_abortive(pool)
    nodes = getattr(client, "nodes_manager", None)
    if nodes is not None:
        kwargs = getattr(nodes, "connection_kwargs", None)
        if isinstance(kwargs, dict):  # cluster nodes created from now on
            kwargs["connection_class"] = abortive(kwargs.get("connection_class", redis.Connection))
        known = getattr(nodes, "nodes_cache", {})
        for node in [*known.values(), *getattr(client, "startup_nodes", ())]:
            if isinstance(getattr(node, "connection_class", None), type):  # an asyncio node
                node.connection_class = abortive(node.connection_class)
    return client

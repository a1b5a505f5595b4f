"""A total deadline for the socket I/O of one cache command (sync redis-py clients).

redis-py's ``socket_timeout`` bounds each ``recv()``, not a reply: a server (or a
proxy, or a congested link) that trickles one byte every 100 ms holds a call for
seconds with a 0.25 s timeout. Here the socket of each pooled connection is wrapped
so that all the I/O of one checkout of the connection (the handshake of a new
connection, the command or pipeline, its reply) shares one budget of
``IO_BUDGET_FACTOR x socket_timeout``, starting at its first byte. I/O past it fails
with ``socket.timeout``, which redis-py turns into its ``TimeoutError``: a backend
failure like any other.

Where a call starts needs no marking by the caller: redis-py's pools call
``connect()`` on every connection they hand out (a no-op when it is connected), and
each backend command is one checkout, so :class:`_DeadlineMixin` starts a fresh
budget there. Backend calls are written as one command each (a pipeline where they
need several), so the budget of a command is the budget of the call.

A half-open probe of the ``cache`` breaker gets a shorter budget of its own, from
its checkout on: ``PROBE_BUDGET`` (``probe_socket_timeout_seconds``), set by the
provider while the probe runs, so probing a server that is still broken costs little.

The healthy path is cheap: no thread-local state, no extra frame, one clock read per
blocking send or receive; a non-blocking poll (redis-py's ``can_read``) is never
timed.

The asyncio clients need none of this: redis-py bounds each whole asyncio reply by
``socket_timeout`` already.

Every class here also closes abortively (``abortive.py``): a command that failed or
timed out is never delivered after the fact.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from tasker_resilience._cache.backends.abortive import AbortiveMixin
from tasker_resilience._cache.backends.contract import PROBE_BUDGET

__all__ = [
    "IO_BUDGET_FACTOR",
    "DeadlineConnection",
    "DeadlineSSLConnection",
    "DeadlineSentinelConnection",
    "DeadlineSentinelSSLConnection",
    "DeadlineUnixConnection",
]

IO_BUDGET_FACTOR: Final = 2
"""All the I/O of one command gets this many ``socket_timeout_seconds``. Two, not one,
so a healthy command never pays for re-arming socket timeouts (its reply comes well
within one ``socket_timeout``); a hung server still costs one ``socket_timeout`` (its
first ``recv`` times out)."""

_FRESH: Final = 0.0
"""``_DeadlineSocket._deadline`` of a checkout with no blocking I/O yet; after its
first byte, the monotonic time the checkout's I/O must end by."""

_monotonic = time.monotonic
R = TypeVar("R")


class _DeadlineSocket:
    """A socket whose blocking sends and receives stop at the checkout's deadline."""

    __slots__ = ("_budget", "_deadline", "_sock", "_timeout")

    def __init__(self, sock: socket.socket, budget: float) -> None:
        self._sock = sock
        self._budget = budget
        self._deadline = _FRESH
        # The socket's own timeout, mirrored so the I/O path needs no gettimeout() call.
        self._timeout: float | None = sock.gettimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    # Called on every command by redis-py: defined here, not found through the slow
    # __getattr__ fallback, and they keep the mirrored timeout true.
    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)
        self._timeout = None if flag else 0.0

    # Each method is written out (no generic helper taking *args on the healthy path):
    # this is the I/O path of every cache call. A non-blocking poll (timeout 0) is
    # passed through; a blocking operation reads the clock once (the first of a
    # checkout starts the budget) and runs as it is while the socket's own timeout
    # ends before the deadline. Only the last operations of a slow reply take the
    # bounded path.

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        timeout = self._timeout
        if timeout:
            now = _monotonic()
            deadline = self._deadline
            if deadline == _FRESH:
                self._deadline = deadline = now + self._budget
            if deadline - now < timeout:
                return self._within(deadline - now, timeout, self._sock.recv, bufsize, flags)
        return self._sock.recv(bufsize, flags)

    def recv_into(self, buffer: Any, *rest: int) -> int:
        # *rest, not nbytes=0: an SSL socket reads 0 bytes when told nbytes=0.
        timeout = self._timeout
        if timeout:
            now = _monotonic()
            deadline = self._deadline
            if deadline == _FRESH:
                self._deadline = deadline = now + self._budget
            if deadline - now < timeout:
                return self._within(deadline - now, timeout, self._sock.recv_into, buffer, *rest)
        return self._sock.recv_into(buffer, *rest)

    def sendall(self, data: Any, flags: int = 0) -> None:
        timeout = self._timeout
        if timeout:
            now = _monotonic()
            deadline = self._deadline
            if deadline == _FRESH:
                self._deadline = deadline = now + self._budget
            if deadline - now < timeout:
                self._within(deadline - now, timeout, self._sock.sendall, data, flags)
                return
        self._sock.sendall(data, flags)

    def _within(self, left: float, timeout: float, io: Callable[..., R], *args: Any) -> R:
        """Run ``io`` with the socket timeout cut to the ``left`` seconds of the budget."""
        if left <= 0:
            raise TimeoutError("the cache command's I/O deadline passed")
        sock = self._sock
        sock.settimeout(left)
        try:
            return io(*args)
        finally:
            sock.settimeout(timeout)


class _DeadlineMixin:
    socket_timeout: float | None
    _sock: Any

    def connect(self) -> None:
        # redis-py's pools call connect() on every connection they hand out: each
        # checkout (one backend command) gets a fresh budget.
        sock = self._sock
        if type(sock) is _DeadlineSocket:
            sock._deadline = _probe_deadline()  # else the budget starts at its first byte
        super().connect()  # type: ignore[misc]  # the redis-py class it is mixed into

    def _connect(self) -> Any:
        sock = super()._connect()  # type: ignore[misc]  # the redis-py class it is mixed into
        timeout = self.socket_timeout
        if not timeout:
            return sock
        wrapped = _DeadlineSocket(sock, IO_BUDGET_FACTOR * timeout)
        wrapped._deadline = _probe_deadline()  # a probe's new connection: handshake too
        return wrapped


def _probe_deadline() -> float:
    """The deadline a checkout starts with: a half-open probe's own short budget from
    now (``PROBE_BUDGET``), else ``_FRESH``."""
    budget = PROBE_BUDGET.get()
    return _FRESH if budget is None else _monotonic() + budget


# _DeadlineMixin first: it wraps the socket AbortiveMixin has just set SO_LINGER on.


class DeadlineConnection(_DeadlineMixin, AbortiveMixin, redis.Connection):
    """``redis.Connection`` with a total I/O deadline per command."""


class DeadlineSSLConnection(_DeadlineMixin, AbortiveMixin, redis.SSLConnection):
    """``redis.SSLConnection`` (``rediss://``) with a total I/O deadline per command."""


class DeadlineUnixConnection(_DeadlineMixin, AbortiveMixin, redis.UnixDomainSocketConnection):
    """``redis.UnixDomainSocketConnection`` (``unix://``) with a total I/O deadline."""


class DeadlineSentinelConnection(_DeadlineMixin, AbortiveMixin, SentinelManagedConnection):
    """A Sentinel-managed primary's connection (``redis+sentinel://``), with a total
    I/O deadline per command; it asks the sentinels where the primary is on connect."""


class DeadlineSentinelSSLConnection(_DeadlineMixin, AbortiveMixin, SentinelManagedSSLConnection):
    """:class:`DeadlineSentinelConnection` over TLS (``rediss+sentinel://``)."""

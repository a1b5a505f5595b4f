"""A total deadline for the socket I/O of one cache call (sync redis-py clients).

redis-py's ``socket_timeout`` bounds each ``recv()``, not a reply: a server (or a
proxy, or a congested link) that trickles one byte every 100 ms holds a call for
seconds with a 0.25 s timeout. Here the socket of each pooled connection is wrapped
so that all the I/O of one backend call (the handshake of a new connection, the
command, its reply) shares one budget of ``IO_BUDGET_FACTOR x socket_timeout``,
starting at the call's first byte. A call past it fails with ``socket.timeout``,
which redis-py turns into its ``TimeoutError``: a backend failure like any other.

The backend marks where a call starts and ends (:func:`call_started` /
:func:`call_ended`); outside a call nothing is bounded beyond ``socket_timeout``.
The asyncio clients need none of this: redis-py bounds each whole asyncio reply by
``socket_timeout`` already.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

import redis
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

__all__ = [
    "CURRENT_CALL",
    "IO_BUDGET_FACTOR",
    "DeadlineConnection",
    "DeadlineSSLConnection",
    "DeadlineSentinelConnection",
    "DeadlineSentinelSSLConnection",
    "DeadlineUnixConnection",
    "bounded",
    "call_ended",
    "call_started",
]

IO_BUDGET_FACTOR: Final = 2
"""All the I/O of one call gets this many ``socket_timeout_seconds``. Two, not one, so
a healthy call never pays for re-arming socket timeouts (its reply comes well within
one ``socket_timeout``); a hung server still costs one ``socket_timeout`` (its first
``recv`` times out)."""

_monotonic = time.monotonic


class _Call(threading.local):
    # None: not inside a backend call (no total deadline); 0.0: a call started and
    # has sent or read nothing yet; else: the monotonic time its I/O must end by.
    deadline: float | None = None


_CALL: Final = _Call()
CURRENT_CALL: Final = _CALL
"""This thread's call state: the ``get`` hot path sets ``.deadline`` itself (``0.0`` at
the start, ``None`` at the end), as :func:`call_started` / :func:`call_ended` do,
without their two calls."""


def call_started() -> None:
    """A backend call begins on this thread: its I/O budget starts at its first byte."""
    _CALL.deadline = 0.0


def call_ended() -> None:
    """The backend call on this thread is over."""
    _CALL.deadline = None


P = ParamSpec("P")
R = TypeVar("R")


def bounded(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` as one backend call: its socket I/O shares one deadline. (The
    ``get`` hot path inlines the same two lines instead of paying for a wrapper.)"""

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        _CALL.deadline = 0.0
        try:
            return func(*args, **kwargs)
        finally:
            _CALL.deadline = None

    return call


class _DeadlineSocket:
    """A socket whose sends and receives stop at the current call's deadline."""

    __slots__ = ("_budget", "_sock")

    def __init__(self, sock: socket.socket, budget: float) -> None:
        self._sock = sock
        self._budget = budget

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    # Called on every command by redis-py: defined here, not found through the slow
    # __getattr__ fallback.
    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def _left(self, deadline: float) -> float:
        """Seconds left for this call's I/O; starts the budget at the call's first byte."""
        now = _monotonic()
        if not deadline:
            _CALL.deadline = deadline = now + self._budget
        left = deadline - now
        if left <= 0:
            raise TimeoutError("the cache call's deadline passed")
        return left

    # Each method is written out (no generic helper taking *args): this is the I/O
    # path of every cache call, and a healthy call must pay one clock read and one
    # comparison, not tuple packing. Outside a backend call (deadline None) it is a
    # plain pass-through.

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        deadline = _CALL.deadline
        sock = self._sock
        if deadline is None:
            return sock.recv(bufsize, flags)
        current = sock.gettimeout()
        # A non-blocking poll (redis-py's can_read), or the socket's own timeout is the
        # tighter: as is. The poll needs no clock read at all.
        if current == 0 or (current is not None and current <= self._left(deadline)):
            return sock.recv(bufsize, flags)
        left = self._left(_CALL.deadline or deadline)  # the budget may have just started
        sock.settimeout(left)
        try:
            return sock.recv(bufsize, flags)
        finally:
            sock.settimeout(current)

    def recv_into(self, buffer: Any, *rest: int) -> int:
        # *rest, not nbytes=0: an SSL socket reads 0 bytes when told nbytes=0.
        deadline = _CALL.deadline
        sock = self._sock
        if deadline is None:
            return sock.recv_into(buffer, *rest)
        current = sock.gettimeout()
        if current == 0 or (current is not None and current <= self._left(deadline)):
            return sock.recv_into(buffer, *rest)
        left = self._left(_CALL.deadline or deadline)  # the budget may have just started
        sock.settimeout(left)
        try:
            return sock.recv_into(buffer, *rest)
        finally:
            sock.settimeout(current)

    def sendall(self, data: Any, flags: int = 0) -> None:
        deadline = _CALL.deadline
        sock = self._sock
        if deadline is None:
            sock.sendall(data, flags)
            return
        current = sock.gettimeout()
        if current == 0 or (current is not None and current <= self._left(deadline)):
            sock.sendall(data, flags)
            return
        left = self._left(_CALL.deadline or deadline)  # the budget may have just started
        sock.settimeout(left)
        try:
            sock.sendall(data, flags)
        finally:
            sock.settimeout(current)


class _DeadlineMixin:
    socket_timeout: float | None

    def _connect(self) -> Any:
        sock = super()._connect()  # type: ignore[misc]  # the redis-py class it is mixed into
        timeout = self.socket_timeout
        if not timeout:
            return sock
        return _DeadlineSocket(sock, IO_BUDGET_FACTOR * timeout)


class DeadlineConnection(_DeadlineMixin, redis.Connection):
    """``redis.Connection`` with a total I/O deadline per backend call."""


class DeadlineSSLConnection(_DeadlineMixin, redis.SSLConnection):
    """``redis.SSLConnection`` (``rediss://``) with a total I/O deadline per call."""


class DeadlineUnixConnection(_DeadlineMixin, redis.UnixDomainSocketConnection):
    """``redis.UnixDomainSocketConnection`` (``unix://``) with a total I/O deadline."""


class DeadlineSentinelConnection(_DeadlineMixin, SentinelManagedConnection):
    """A Sentinel-managed primary's connection (``redis+sentinel://``), with a total
    I/O deadline per call; it asks the sentinels where the primary is on connect."""


class DeadlineSentinelSSLConnection(_DeadlineMixin, SentinelManagedSSLConnection):
    """:class:`DeadlineSentinelConnection` over TLS (``rediss+sentinel://``)."""

"""``FaultProxy``: a loopback TCP proxy that makes a healthy server misbehave on cue.

Put it between your code and a real server (Redis, Postgres, anything over TCP) and
switch faults on and off while it runs::

    from tasker_resilience.testing import FaultProxy

    with FaultProxy("redis://127.0.0.1:6379/0") as proxy:
        cache_url = proxy.url                 # the same URL, through the proxy
        proxy.latency(0.12, fraction=0.6)     # 60 % of replies held 120 ms: a brownout
        ...
        proxy.blackhole()                     # accepts, never answers: a hung server
        ...
        proxy.heal()                          # every fault off

Faults (each takes effect at once, on open connections too, until changed or healed):

- :meth:`~FaultProxy.latency`: hold replies ``seconds`` (plus up to ``jitter``), all of
  them or a ``fraction``. A reply is what one read from the server returns: one
  RESP reply of a request/response client, for values under the read size.
- :meth:`~FaultProxy.bandwidth`: a slow link, ``bytes_per_second`` each way.
- :meth:`~FaultProxy.blackhole`: accept connections, forward nothing, answer nothing.
- :meth:`~FaultProxy.reset_connections`: reset (TCP RST) every open connection and
  each new one.
- :meth:`~FaultProxy.close_after`: close each connection once it has sent ``n`` more
  bytes to the client (a reply cut short).

The proxy runs an asyncio loop on a thread of its own, so sync and async code under
test use it alike; it needs nothing beyond the standard library. The pytest plugin
offers it as the ``tasker_fault_proxy`` fixture. ``seed`` makes the choice of delayed
replies (``fraction``) and their jitter repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy"]

READ_SIZE: Final = 65536
"""Bytes read from either side at once."""
_START_TIMEOUT_SECONDS: Final = 5.0
_SLICES_PER_SECOND: Final = 50
"""A throttled write is cut in this many slices per second of its duration: the link
trickles rather than stalling and bursting."""


@dataclass(frozen=True)
class _Faults:
    """The faults switched on now; replaced whole, so a reader sees one consistent set."""

    latency: float = 0.0
    jitter: float = 0.0
    fraction: float = 1.0
    bytes_per_second: float | None = None
    blackhole: bool = False
    reset: bool = False
    close_after: int | None = None
    close_epoch: int = 0
    """Bumped by each ``close_after``: a connection counts its bytes from then on."""


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _target_of(target: str | tuple[str, int]) -> tuple[str, int, str | None]:
    """``(host, port, url)`` of what the proxy forwards to; ``url`` when given one."""
    if isinstance(target, tuple):
        return target[0], int(target[1]), None
    url = target if "://" in target else None
    parts = urlsplit(target if url else f"tcp://{target}")
    port: int | None
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        raise ValueError(f"FaultProxy needs a target with a host and a port, not {shown!r}")
    return parts.hostname, port, url


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a task's exception seen: a client gone mid-reply is an ordinary end of a
    connection, not an "exception was never retrieved" line in the log."""
    if not task.cancelled():
        task.exception()


class _Link:
    """One client connection and its upstream connection."""

    __slots__ = ("client", "close_epoch", "sent", "upstream")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.sent = 0  # bytes to the client since close_epoch
        self.close_epoch = 0

    def reset(self) -> None:
        """Abort the client side with a TCP RST (linger 0), and drop the upstream."""
        sock = self.client.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.transport.abort()
        if self.upstream is not None:
            self.upstream.transport.abort()

    def close(self) -> None:
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class FaultProxy:
    """A loopback TCP proxy in front of ``target`` whose faults switch while it runs.

    ``target`` is ``"host:port"``, ``(host, port)`` or a URL with a host and a port
    (``redis://:secret@127.0.0.1:6379/0``): then :attr:`url` is that URL through the
    proxy, password and path kept. The proxy listens on ``host`` (loopback by
    default) and ``port`` (0: a free one; see :attr:`address`).
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self._target_host, self._target_port, self._target_url = _target_of(target)
        self._listen = (host, port)
        self._faults = _Faults()
        self._random = random.Random(seed)
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._error: BaseException | None = None
        self._counts = dict.fromkeys(
            (
                "accepted",
                "bytes_to_server",
                "bytes_to_client",
                "replies",
                "delayed_replies",
                "resets",
                "closed_after_bytes",
            ),
            0,
        )

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen and forward; returns the proxy. Raises ``OSError`` if it cannot listen."""
        if self._thread is not None:
            raise RuntimeError("this FaultProxy is already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="tasker-fault-proxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_SECONDS) or self._address is None:
            self.stop()
            error = self._error
            if isinstance(error, OSError):
                raise error
            raise RuntimeError(f"FaultProxy did not start: {error!r}")
        return self

    def stop(self) -> None:
        """Close every connection and stop listening (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._shutdown)
        if thread is not None and thread is not threading.current_thread():
            thread.join(_START_TIMEOUT_SECONDS)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- where it is --------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the proxy listens on (once started)."""
        if self._address is None:
            raise RuntimeError("the FaultProxy is not started")
        return self._address

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        """The target URL through the proxy (``tcp://host:port`` for a bare target)."""
        return self.proxied(self._target_url or "tcp://placeholder:1")

    def proxied(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's (credentials and path
        kept)."""
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{shown}:{port}"))

    # --- faults -------------------------------------------------------------------------

    def latency(self, seconds: float, *, jitter: float = 0.0, fraction: float = 1.0) -> FaultProxy:
        """Hold replies ``seconds`` plus a uniform ``0..jitter``; only a random
        ``fraction`` of them (0-1) when given. ``latency(0)`` turns it off."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be from 0 to 1, not {fraction!r}")
        self._faults = replace(
            self._faults,
            latency=_seconds("latency", seconds),
            jitter=_seconds("jitter", jitter),
            fraction=float(fraction),
        )
        return self

    def bandwidth(self, bytes_per_second: float | None) -> FaultProxy:
        """A slow link: at most ``bytes_per_second`` each way (None: unlimited)."""
        if bytes_per_second is not None and not bytes_per_second > 0:
            raise ValueError(f"bytes_per_second must be > 0 or None, not {bytes_per_second!r}")
        self._faults = replace(self._faults, bytes_per_second=bytes_per_second)
        return self

    def blackhole(self, on: bool = True) -> FaultProxy:
        """Accept connections, forward nothing, answer nothing (a hung server or a
        dropped route), until ``blackhole(False)`` or :meth:`heal`."""
        self._faults = replace(self._faults, blackhole=on)
        return self

    def reset_connections(self, on: bool = True) -> FaultProxy:
        """Reset every open connection now and each new one while on (a crashed
        server's host, a firewall sending RST)."""
        self._faults = replace(self._faults, reset=on)
        if on:
            self._in_loop(self._reset_all)
        return self

    def close_after(self, n_bytes: int | None) -> FaultProxy:
        """Close each connection once it has sent ``n_bytes`` more to the client (a
        reply cut off mid-way); None turns it off."""
        if n_bytes is not None and (isinstance(n_bytes, bool) or not n_bytes >= 0):
            raise ValueError(f"n_bytes must be a whole number >= 0 or None, not {n_bytes!r}")
        faults = self._faults
        self._faults = replace(faults, close_after=n_bytes, close_epoch=faults.close_epoch + 1)
        return self

    def heal(self) -> FaultProxy:
        """Every fault off: the proxy forwards as a plain TCP proxy again."""
        self._faults = replace(_Faults(), close_epoch=self._faults.close_epoch + 1)
        return self

    def stats(self) -> dict[str, int]:
        """Counts so far: ``accepted`` connections, ``open`` ones, bytes each way,
        ``replies`` forwarded, ``delayed_replies``, ``resets``, ``closed_after_bytes``."""
        counts = dict(self._counts)
        counts["open"] = len(self._links)
        return counts

    def __repr__(self) -> str:
        address = self._address
        where = "not started" if address is None else f"{address[0]}:{address[1]}"
        return f"<FaultProxy {where} -> {self._target_host}:{self._target_port} {self._faults}>"

    # --- the loop thread ----------------------------------------------------------------

    def _in_loop(self, callback: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, *self._listen))
            host, port = self._server.sockets[0].getsockname()[:2]
            self._address = (host, port)
            ready.set()
            loop.run_forever()
        except BaseException as exc:  # reported by start(); the thread must not die loudly
            self._error = exc
            ready.set()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.client.transport.abort()
            if link.upstream is not None:
                link.upstream.transport.abort()
        # The handlers see their connections gone and end by themselves; the loop stops
        # once they have (anything left then is cancelled by _run).
        handlers = [task for task in self._handlers if not task.done()]
        self._stopping = asyncio.ensure_future(self._stop_after(handlers))

    async def _stop_after(self, handlers: list[asyncio.Task[Any]]) -> None:
        if handlers:
            await asyncio.wait(handlers, timeout=_START_TIMEOUT_SECONDS)
        asyncio.get_running_loop().stop()

    def _reset_all(self) -> None:
        for link in list(self._links):
            self._counts["resets"] += 1
            link.reset()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._counts["accepted"] += 1
        link = _Link(writer)
        self._links.add(link)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        try:
            if self._faults.reset:
                self._counts["resets"] += 1
                link.reset()
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection(
                    self._target_host, self._target_port
                )
            except OSError:
                link.reset()  # as the server's own host would answer: refused
                return
            link.close_epoch = self._faults.close_epoch
            pumps = [
                asyncio.ensure_future(self._to_server(reader, link)),
                asyncio.ensure_future(self._to_client(up_reader, link)),
            ]
            # One side closing ends the connection: close both, as a proxy does.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only when the proxy stops: asyncio's stream server would log a cancelled
            # handler as an error (Python < 3.12), so it ends quietly instead.
            pass
        finally:
            self._links.discard(link)
            link.close()

    async def _to_server(self, reader: asyncio.StreamReader, link: _Link) -> None:
        upstream = link.upstream
        assert upstream is not None
        while data := await reader.read(READ_SIZE):
            faults = self._faults
            if faults.blackhole:
                continue  # swallowed
            await self._send(upstream, data, faults)
            self._counts["bytes_to_server"] += len(data)

    async def _to_client(self, up_reader: asyncio.StreamReader, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.ensure_future(self._deliver(queue, link))
        deliver.add_done_callback(_retrieved)
        last_due = 0.0
        try:
            while data := await up_reader.read(READ_SIZE):
                faults = self._faults
                delay = 0.0
                if faults.latency or faults.jitter:
                    chance = self._random.random()
                    if faults.fraction >= 1 or chance < faults.fraction:
                        delay = faults.latency + self._random.uniform(0, faults.jitter)
                        self._counts["delayed_replies"] += 1
                # Replies keep their order: one is never delivered before an earlier one.
                last_due = max(loop.time() + delay, last_due)
                queue.put_nowait((last_due, data))
                if deliver.done():
                    return
            queue.put_nowait(None)
            await deliver
        finally:
            deliver.cancel()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes] | None], link: _Link) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            faults = self._faults
            if faults.blackhole:
                continue  # the server answered; the client never hears it
            limit = faults.close_after
            if limit is not None:
                if link.close_epoch != faults.close_epoch:
                    link.close_epoch, link.sent = faults.close_epoch, 0
                left = limit - link.sent
                if left < len(data):
                    if left > 0:
                        await self._send(link.client, data[:left], faults)
                        self._counts["bytes_to_client"] += left
                    self._counts["closed_after_bytes"] += 1
                    link.close()
                    return
            await self._send(link.client, data, faults)
            link.sent += len(data)
            self._counts["bytes_to_client"] += len(data)
            self._counts["replies"] += 1

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, faults: _Faults) -> None:
        rate = faults.bytes_per_second
        if rate is None:
            writer.write(data)
            await writer.drain()
            return
        step = max(1, int(rate / _SLICES_PER_SECOND))
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(len(chunk) / rate)

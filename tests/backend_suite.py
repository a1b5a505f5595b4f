"""One conformance suite for every cache backend (built-in, fake, real server, a user's own).

Subclass :class:`BackendConformance` in a test module and give it a ``make_backend``
fixture that yields a ready backend::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def make_backend(self) -> Iterator[CacheBackend]:
            backend = MyBackend(...)
            yield backend
            backend.close()

Every key a test writes lives under a fresh random namespace, and the suite deletes
that namespace afterwards, so it can run against a shared server without flushing it.
A backend that stores nothing (``noop``) sets ``stores = False``: the same tests then
check that nothing is ever returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from tasker_resilience import CacheBackend
from tasker_resilience._cache.backends.contract import InProcessAsyncMixin
from tasker_resilience._cache.backends.memory_backend import MemoryBackend

__all__ = [
    "BackendConformance",
    "CountingBackend",
    "Outage",
    "PrivateRedis",
    "SilentServer",
    "closed_port",
]

BINARY = bytes(range(256)) * 4 + b"\x00\r\n\x00"
UNICODE_KEY = "ключ:🔑:鍵:naïve"
ONE_MB = 1024 * 1024


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


class BackendConformance:
    """The behaviour every backend promises. Subclasses provide ``make_backend``."""

    stores: bool = True
    """False for a backend that keeps nothing (every get is a miss)."""
    expect_distributed: bool | None = None
    """When set, ``backend.distributed`` must equal it."""

    @pytest.fixture
    def make_backend(self) -> CacheBackend:
        raise NotImplementedError("subclasses provide a make_backend fixture")

    @pytest.fixture
    async def backend(self, make_backend: CacheBackend, ns: str) -> AsyncIterator[CacheBackend]:
        yield make_backend
        # Leave nothing behind on a shared server; then release this loop's connections.
        await make_backend.adelete_pattern(ns + "*")
        await make_backend.aclose()

    @pytest.fixture
    def ns(self) -> str:
        return f"conformance:{uuid.uuid4().hex}:"

    def expected(self, value: bytes) -> bytes | None:
        return value if self.stores else None

    # --- identity ---------------------------------------------------------------------------

    def test_describes_itself(self, backend: CacheBackend) -> None:
        assert isinstance(backend, CacheBackend)
        assert isinstance(backend.name, str)
        assert backend.name
        assert isinstance(backend.distributed, bool)
        if self.expect_distributed is not None:
            assert backend.distributed is self.expect_distributed

    def test_caller_mistakes_are_not_backend_failures(self, backend: CacheBackend) -> None:
        assert backend.is_backend_failure(TypeError("bad key")) is False
        assert backend.is_backend_failure(ValueError("bad value")) is False

    # --- CRUD ---------------------------------------------------------------------------------

    def test_get_missing_is_none(self, backend: CacheBackend, ns: str) -> None:
        assert backend.get(ns + "missing") is None

    def test_set_then_get(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "k", b"value", None)
        assert backend.get(ns + "k") == self.expected(b"value")

    def test_empty_value_is_not_a_miss(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "empty", b"", None)
        assert backend.get(ns + "empty") == self.expected(b"")

    def test_set_overwrites(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "k", b"one", None)
        backend.set(ns + "k", b"two", None)
        assert backend.get(ns + "k") == self.expected(b"two")

    def test_delete(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "k", b"v", None)
        backend.set(ns + "other", b"w", None)
        backend.delete(ns + "k")
        assert backend.get(ns + "k") is None
        assert backend.get(ns + "other") == self.expected(b"w")

    def test_delete_missing_is_fine(self, backend: CacheBackend, ns: str) -> None:
        backend.delete(ns + "never-set")
        assert backend.get(ns + "never-set") is None

    def test_keys_with_different_prefixes_are_independent(
        self, backend: CacheBackend, ns: str
    ) -> None:
        backend.set(ns + "app1:user", b"1", None)
        backend.set(ns + "app2:user", b"2", None)
        assert backend.get(ns + "app1:user") == self.expected(b"1")
        assert backend.get(ns + "app2:user") == self.expected(b"2")
        assert backend.delete_pattern(ns + "app1:*") == (1 if self.stores else 0)
        assert backend.get(ns + "app1:user") is None
        assert backend.get(ns + "app2:user") == self.expected(b"2")

    # --- values and keys --------------------------------------------------------------------

    def test_binary_safe_values(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "bin", BINARY, None)
        assert backend.get(ns + "bin") == self.expected(BINARY)

    def test_large_value(self, backend: CacheBackend, ns: str) -> None:
        big = (BINARY * (ONE_MB // len(BINARY) + 1))[:ONE_MB]
        backend.set(ns + "big", big, None)
        got = backend.get(ns + "big")
        assert got == self.expected(big)
        if self.stores:
            assert got is not None
            assert len(got) == ONE_MB

    def test_unicode_keys(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + UNICODE_KEY, "значение ✓".encode(), None)
        assert backend.get(ns + UNICODE_KEY) == self.expected("значение ✓".encode())
        assert backend.get(ns + "ключ") is None
        assert backend.delete_pattern(ns + "ключ:🔑:*") == (1 if self.stores else 0)
        assert backend.get(ns + UNICODE_KEY) is None

    # --- TTL ----------------------------------------------------------------------------------

    def test_ttl_expires(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "short", b"v", 0.3)
        backend.set(ns + "long", b"v", 60)
        backend.set(ns + "forever", b"v", None)
        assert backend.get(ns + "short") == self.expected(b"v")
        assert _eventually(lambda: backend.get(ns + "short") is None)
        # The short entry's expiry must not take the others with it.
        assert backend.get(ns + "long") == self.expected(b"v")
        assert backend.get(ns + "forever") == self.expected(b"v")

    def test_sub_second_ttl_is_kept_not_rounded_to_zero(
        self, backend: CacheBackend, ns: str
    ) -> None:
        backend.set(ns + "k", b"v", 0.5)
        assert backend.get(ns + "k") == self.expected(b"v")

    def test_set_without_ttl_clears_an_earlier_ttl(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "k", b"old", 0.3)
        backend.set(ns + "k", b"new", None)
        time.sleep(0.5)
        assert backend.get(ns + "k") == self.expected(b"new")

    # --- delete_pattern -----------------------------------------------------------------------

    def test_delete_pattern_removes_only_matches(self, backend: CacheBackend, ns: str) -> None:
        for key in ("user:1", "user:2", "user:10", "users", "group:1"):
            backend.set(ns + key, b"v", None)
        assert backend.delete_pattern(ns + "user:*") == (3 if self.stores else 0)
        assert backend.get(ns + "users") == self.expected(b"v")
        assert backend.get(ns + "group:1") == self.expected(b"v")
        assert backend.get(ns + "user:10") is None

    def test_delete_pattern_glob_syntax(self, backend: CacheBackend, ns: str) -> None:
        for key in ("a1", "a2", "b1", "ab", "x*y", "xzy"):
            backend.set(ns + key, b"v", None)
        assert backend.delete_pattern(ns + "a?") == (3 if self.stores else 0)  # a1 a2 ab
        assert backend.delete_pattern(ns + "[b]1") == (1 if self.stores else 0)
        # An escaped star matches only a literal star.
        assert backend.delete_pattern(ns + "x\\*y") == (1 if self.stores else 0)
        assert backend.get(ns + "xzy") == self.expected(b"v")

    def test_delete_pattern_without_match_is_zero(self, backend: CacheBackend, ns: str) -> None:
        backend.set(ns + "k", b"v", None)
        assert backend.delete_pattern(ns + "nothing-*") == 0
        assert backend.get(ns + "k") == self.expected(b"v")

    def test_delete_pattern_many_keys_in_batches(self, backend: CacheBackend, ns: str) -> None:
        count = 1234  # more than one SCAN page and one UNLINK batch
        for i in range(count):
            backend.set(f"{ns}many:{i}", b"v", None)
        assert backend.delete_pattern(ns + "many:*") == (count if self.stores else 0)
        assert backend.get(ns + "many:0") is None
        assert backend.get(f"{ns}many:{count - 1}") is None

    def test_delete_pattern_does_not_count_expired_keys(
        self, backend: CacheBackend, ns: str
    ) -> None:
        backend.set(ns + "gone", b"v", 0.2)
        backend.set(ns + "kept", b"v", None)
        assert _eventually(lambda: backend.get(ns + "gone") is None)
        assert backend.delete_pattern(ns + "*") == (1 if self.stores else 0)

    # --- health -------------------------------------------------------------------------------

    def test_health_check(self, backend: CacheBackend) -> None:
        assert backend.health_check() is True

    # --- async twins --------------------------------------------------------------------------

    async def test_async_crud(self, backend: CacheBackend, ns: str) -> None:
        assert await backend.aget(ns + "k") is None
        await backend.aset(ns + "k", BINARY, None)
        assert await backend.aget(ns + "k") == self.expected(BINARY)
        # The sync and async twins see the same data.
        assert backend.get(ns + "k") == self.expected(BINARY)
        await backend.adelete(ns + "k")
        assert await backend.aget(ns + "k") is None

    async def test_async_ttl_expires(self, backend: CacheBackend, ns: str) -> None:
        await backend.aset(ns + "short", b"v", 0.3)
        await backend.aset(ns + "long", b"v", 60)
        assert await backend.aget(ns + "short") == self.expected(b"v")
        for _ in range(100):  # up to 5 s
            if await backend.aget(ns + "short") is None:
                break
            await asyncio.sleep(0.05)
        assert await backend.aget(ns + "short") is None
        assert await backend.aget(ns + "long") == self.expected(b"v")

    async def test_async_delete_pattern(self, backend: CacheBackend, ns: str) -> None:
        for i in range(700):
            await backend.aset(f"{ns}p:{i}", b"v", None)
        await backend.aset(ns + "q:0", b"v", None)
        assert await backend.adelete_pattern(ns + "p:*") == (700 if self.stores else 0)
        assert await backend.aget(ns + "p:1") is None
        assert await backend.aget(ns + "q:0") == self.expected(b"v")

    async def test_async_large_unicode(self, backend: CacheBackend, ns: str) -> None:
        big = b"\xff" * ONE_MB
        await backend.aset(ns + UNICODE_KEY, big, None)
        assert await backend.aget(ns + UNICODE_KEY) == self.expected(big)

    async def test_async_health_check(self, backend: CacheBackend) -> None:
        assert await backend.ahealth_check() is True

    async def test_async_clients_work_concurrently(self, backend: CacheBackend, ns: str) -> None:
        async def roundtrip(i: int) -> bytes | None:
            await backend.aset(f"{ns}c:{i}", str(i).encode(), None)
            return await backend.aget(f"{ns}c:{i}")

        results = await asyncio.gather(*(roundtrip(i) for i in range(50)))
        assert results == [self.expected(str(i).encode()) for i in range(50)]


# --- helpers for failure tests ---------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SilentServer:
    """Accepts TCP connections and never answers: a hung cache. Counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        self.sock.close()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()


class Outage(ConnectionError):
    """What the counting backend raises while "down"."""


class CountingBackend(InProcessAsyncMixin):
    """A distributed-looking backend over an in-memory store that records every call
    and can be switched to fail like an unreachable server."""

    distributed = True
    name = "counting"

    def __init__(self) -> None:
        self.store = MemoryBackend(1000)
        self.calls: list[tuple[Any, ...]] = []
        self.failing: BaseException | None = None

    def _call(self, op: str, *args: Any) -> Any:
        self.calls.append((op, *args))
        if self.failing is not None:
            raise self.failing
        return getattr(self.store, op)(*args)

    def ops(self) -> list[str]:
        return [call[0] for call in self.calls]

    def get(self, key: str) -> bytes | None:
        return self._call("get", key)  # type: ignore[no-any-return]

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self._call("set", key, value, ttl_seconds)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def delete_pattern(self, pattern: str) -> int:
        return self._call("delete_pattern", pattern)  # type: ignore[no-any-return]

    def health_check(self) -> bool:
        return self._call("health_check")  # type: ignore[no-any-return]

    def close(self) -> None:
        pass

    def is_backend_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, TimeoutError))


class PrivateRedis:
    """A private redis-server on a given loopback port (never the shared one)."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

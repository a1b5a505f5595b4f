"""The conformance suite every cache backend passes: the built-in ones, fakeredis, a
real server, and yours. Subclass :class:`BackendConformance` in a test module and give it
a ``make_backend`` fixture that returns (or yields) a ready backend::

    import pytest
    from tasker_resilience.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def make_backend(self):
            return MyBackend()

pytest then runs every test below against it: bytes values, TTLs (sub-second too),
``delete_pattern`` globs with escapes, counts, batches of many keys, unicode keys, large
values, ``health_check``, ``is_backend_failure`` for caller mistakes, the ``a``-prefixed
async twins, and, for a backend that offers leases (``add`` and ``delete_if_equal``, see
``LeaseBackend``: what ``@cached(lock=True)`` uses), that they are exclusive, expire and
are given back only by their holder (a backend without them passes those checks unless
it offers half of them). The
async checks run their own event loop (``asyncio.run``), so the suite needs no
pytest-asyncio settings. It takes a few seconds (real TTLs expire).

Every key a test writes lives under a fresh random namespace, and the suite deletes that
namespace afterwards, so it can run against a shared server without flushing it. A
backend that stores nothing (``noop``) sets ``stores = False``: the same tests then check
that nothing is ever returned.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tasker_resilience._cache.backends.contract import CacheBackend, LeaseBackend

__all__ = ["BackendConformance"]

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
    def backend(self, make_backend: CacheBackend, ns: str) -> Iterator[CacheBackend]:
        yield make_backend
        # Leave nothing behind on a shared server.
        make_backend.delete_pattern(ns + "*")

    @staticmethod
    def run_async(backend: CacheBackend, test: Callable[[], Awaitable[None]]) -> None:
        """Run ``test`` in a fresh event loop, then release that loop's connections."""

        async def main() -> None:
            try:
                await test()
            finally:
                await backend.aclose()

        asyncio.run(main())

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

    def test_usable_again_after_close(self, backend: CacheBackend, ns: str) -> None:
        # A process closes its cache on reconfiguration or shutdown; a backend object
        # still referenced afterwards must reconnect rather than fail.
        backend.set(ns + "k", b"v", None)
        backend.close()  # an in-process backend may drop its data here
        backend.set(ns + "k2", b"w", None)
        assert backend.get(ns + "k2") == self.expected(b"w")

    # --- leases (optional) ---------------------------------------------------------------------

    @staticmethod
    def leases(backend: CacheBackend) -> LeaseBackend | None:
        """``backend`` as a :class:`LeaseBackend`, or None when it offers no leases
        (they are optional). Half an offer fails: ``@cached(lock=True)`` would ignore it."""
        if isinstance(backend, LeaseBackend):
            return backend
        partial = [
            name
            for name in ("delete_if_equal", "adelete_if_equal")
            if callable(getattr(backend, name, None))
        ]
        assert not partial, (
            f"{type(backend).__name__} has {', '.join(partial)} but not all of add, aadd, "
            "delete_if_equal, adelete_if_equal: @cached(lock=True) uses no lease on it"
        )
        return None

    def test_lease_is_exclusive_and_given_back_only_by_its_holder(
        self, backend: CacheBackend, ns: str
    ) -> None:
        leases = self.leases(backend)
        if leases is None:
            return  # no leases: @cached(lock=True) is single-flight per process on it
        assert leases.add(ns + "lease", b"mine", 30) is True
        assert leases.add(ns + "lease", b"theirs", 30) is False
        assert backend.get(ns + "lease") == self.expected(b"mine")
        assert leases.delete_if_equal(ns + "lease", b"theirs") is False
        assert backend.get(ns + "lease") == self.expected(b"mine")
        assert leases.delete_if_equal(ns + "lease", b"mine") is True
        assert backend.get(ns + "lease") is None
        assert leases.delete_if_equal(ns + "lease", b"mine") is False  # gone: nothing to do

    def test_lease_expires(self, backend: CacheBackend, ns: str) -> None:
        leases = self.leases(backend)
        if leases is None:
            return
        assert leases.add(ns + "lease", b"first", 0.3) is True
        assert _eventually(lambda: leases.add(ns + "lease", b"second", 30))
        assert backend.get(ns + "lease") == self.expected(b"second")

    def test_async_leases(self, backend: CacheBackend, ns: str) -> None:
        leases = self.leases(backend)
        if leases is None:
            return

        async def check() -> None:
            assert await leases.aadd(ns + "lease", b"mine", 30) is True
            assert await leases.aadd(ns + "lease", b"other", 30) is False
            assert await leases.adelete_if_equal(ns + "lease", b"other") is False
            assert await leases.adelete_if_equal(ns + "lease", b"mine") is True
            assert await backend.aget(ns + "lease") is None

        self.run_async(backend, check)

    # --- async twins --------------------------------------------------------------------------

    def test_async_crud(self, backend: CacheBackend, ns: str) -> None:
        async def check() -> None:
            assert await backend.aget(ns + "k") is None
            await backend.aset(ns + "k", BINARY, None)
            assert await backend.aget(ns + "k") == self.expected(BINARY)
            # The sync and async twins see the same data.
            assert backend.get(ns + "k") == self.expected(BINARY)
            await backend.adelete(ns + "k")
            assert await backend.aget(ns + "k") is None

        self.run_async(backend, check)

    def test_async_ttl_expires(self, backend: CacheBackend, ns: str) -> None:
        async def check() -> None:
            await backend.aset(ns + "short", b"v", 0.3)
            await backend.aset(ns + "long", b"v", 60)
            assert await backend.aget(ns + "short") == self.expected(b"v")
            for _ in range(100):  # up to 5 s
                if await backend.aget(ns + "short") is None:
                    break
                await asyncio.sleep(0.05)
            assert await backend.aget(ns + "short") is None
            assert await backend.aget(ns + "long") == self.expected(b"v")

        self.run_async(backend, check)

    def test_async_delete_pattern(self, backend: CacheBackend, ns: str) -> None:
        async def check() -> None:
            for i in range(700):
                await backend.aset(f"{ns}p:{i}", b"v", None)
            await backend.aset(ns + "q:0", b"v", None)
            assert await backend.adelete_pattern(ns + "p:*") == (700 if self.stores else 0)
            assert await backend.aget(ns + "p:1") is None
            assert await backend.aget(ns + "q:0") == self.expected(b"v")

        self.run_async(backend, check)

    def test_async_large_unicode(self, backend: CacheBackend, ns: str) -> None:
        async def check() -> None:
            big = b"\xff" * ONE_MB
            await backend.aset(ns + UNICODE_KEY, big, None)
            assert await backend.aget(ns + UNICODE_KEY) == self.expected(big)

        self.run_async(backend, check)

    def test_async_health_check(self, backend: CacheBackend) -> None:
        async def check() -> None:
            assert await backend.ahealth_check() is True

        self.run_async(backend, check)

    def test_async_clients_work_concurrently(self, backend: CacheBackend, ns: str) -> None:
        async def check() -> None:
            async def roundtrip(i: int) -> bytes | None:
                await backend.aset(f"{ns}c:{i}", str(i).encode(), None)
                return await backend.aget(f"{ns}c:{i}")

            results = await asyncio.gather(*(roundtrip(i) for i in range(50)))
            assert results == [self.expected(str(i).encode()) for i in range(50)]

        self.run_async(backend, check)

"""The cache against a real server over TCP, under both backend names.

The conformance suite every backend passes, then what only a real server proves:
TTLs expiring in the server's own clock, SCAN/UNLINK over thousands of keys, the sync
and asyncio clients sharing data, and many threads on one bounded pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis

import tasker_resilience as tr
from tasker_resilience import CacheBackend, CacheConfig, CacheProvider, RedisConfig
from tasker_resilience._cache.backends.contract import backend_factory
from tasker_resilience.testing import BackendConformance

from ._support import BACKEND_NAMES, configure_cache, wait_until

pytestmark = pytest.mark.integration

MANY = 5000


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class TestRealServerConformance(BackendConformance):
    """Every promise of a backend, kept by a real server under both names."""

    expect_distributed = True

    @pytest.fixture
    def make_backend(self, cache_url: str, backend_name: str) -> Iterator[CacheBackend]:
        config = CacheConfig(backend=backend_name, redis=RedisConfig(url=cache_url))
        backend = backend_factory(backend_name)(config)
        assert backend.name == backend_name
        yield backend
        backend.close()


@pytest.fixture
def cache(cache_url: str, backend_name: str, key_prefix: str) -> Iterator[CacheProvider]:
    # A generous connect timeout (also the wait for a pooled connection): these tests
    # load a healthy server and must not see the pool wait as an outage.
    res = configure_cache(cache_url, backend_name, key_prefix, connect_timeout=2.0)
    assert res.cache.backend_name == backend_name
    assert res.cache.distributed
    yield res.cache
    # Leave nothing behind on a server that is not flushed (the reset closes it).
    res.cache.delete_pattern("*")


@pytest.fixture
def raw(cache_url: str) -> Iterator[redis.Redis]:
    """A plain client beside the cache: what the server really holds."""
    client = redis.Redis.from_url(cache_url, socket_timeout=5)
    yield client
    client.close()


def test_reports_itself_healthy(cache: CacheProvider, backend_name: str) -> None:
    report = tr.current().health()
    assert report["status"] == "healthy"
    assert report["cache"] == {
        "enabled": True,
        "backend": backend_name,
        "distributed": True,
        "healthy": True,
        "circuit_state": "closed",
        "breaker": "cache",
    }


def test_values_live_under_the_key_prefix(
    cache: CacheProvider, raw: redis.Redis, key_prefix: str
) -> None:
    cache.set("user:1", {"name": "Ada", "tags": ["x"]}, ttl=60)
    assert cache.get("user:1") == {"name": "Ada", "tags": ["x"]}
    assert raw.get(f"{key_prefix}:user:1") is not None
    assert 0 < raw.pttl(f"{key_prefix}:user:1") <= 60_000


def test_ttl_expires_on_the_server(cache: CacheProvider, raw: redis.Redis, key_prefix: str) -> None:
    cache.set("short", "v", ttl=0.3)
    cache.set("long", "v", ttl=60)
    assert cache.get("short") == "v"
    # Sub-second TTLs must reach the server as milliseconds, not be rounded to 0 or 1 s.
    assert 0 < raw.pttl(f"{key_prefix}:short") <= 300
    assert wait_until(lambda: cache.get("short") is None, timeout=5)
    assert cache.get("long") == "v"


def test_default_ttl_is_applied(cache: CacheProvider, raw: redis.Redis, key_prefix: str) -> None:
    cache.set("k", 1)
    ttl_ms = raw.pttl(f"{key_prefix}:k")
    assert 0 < ttl_ms <= cache.default_ttl_seconds * 1000


def _fill(raw: redis.Redis, cache: CacheProvider, key_prefix: str) -> None:
    """Write MANY entries the way the cache stores them, in one pipelined round trip."""
    with raw.pipeline(transaction=False) as pipe:
        for i in range(MANY):
            pipe.set(f"{key_prefix}:bulk:{i}", cache.serializer.dumps(i), ex=60)
        pipe.execute()


def test_delete_pattern_over_thousands_of_keys(
    cache: CacheProvider, raw: redis.Redis, key_prefix: str
) -> None:
    _fill(raw, cache, key_prefix)
    cache.set("keep:1", "k")
    raw.set("outside-the-prefix:bulk:1", b"o")
    assert cache.get(f"bulk:{MANY - 1}") == MANY - 1

    assert cache.delete_pattern("bulk:*") == MANY

    assert raw.exists(f"{key_prefix}:bulk:0", f"{key_prefix}:bulk:{MANY - 1}") == 0
    assert list(raw.scan_iter(match=f"{key_prefix}:bulk:*", count=1000)) == []
    assert cache.get("keep:1") == "k"
    # The key prefix confines the pattern: a same-shaped key elsewhere survives.
    assert raw.get("outside-the-prefix:bulk:1") == b"o"
    raw.delete("outside-the-prefix:bulk:1")


async def test_async_delete_pattern_over_thousands_of_keys(
    cache: CacheProvider, raw: redis.Redis, key_prefix: str
) -> None:
    _fill(raw, cache, key_prefix)
    try:
        await cache.aset("keep:1", "k")
        assert await cache.aget("bulk:1234") == 1234
        assert await cache.adelete_pattern("bulk:*") == MANY
        assert await cache.aget("keep:1") == "k"
        assert list(raw.scan_iter(match=f"{key_prefix}:bulk:*", count=1000)) == []
    finally:
        await cache.aclose()


async def test_sync_and_asyncio_clients_share_the_data(cache: CacheProvider) -> None:
    try:
        cache.set("from-sync", [1, 2])
        await cache.aset("from-async", {"a": None})
        assert await cache.aget("from-sync") == [1, 2]
        assert cache.get("from-async") == {"a": None}
        await cache.adelete("from-sync")
        assert cache.get("from-sync") is None
        assert await cache.ahealth_check() is True
        stats = cache.stats()
        assert stats["get"]["hit"] == 2
        assert stats["get"]["miss"] == 1
        assert stats["get"]["error"] == 0
    finally:
        await cache.aclose()


def test_asyncio_clients_in_separate_event_loops(cache: CacheProvider) -> None:
    """``asyncio.run`` per job: each loop gets its own connections, none leak across."""

    async def job(i: int) -> object:
        try:
            await cache.aset(f"job:{i}", i)
            return await cache.aget(f"job:{i}")
        finally:
            await cache.aclose()

    assert [asyncio.run(job(i)) for i in range(3)] == [0, 1, 2]


def test_many_threads_share_one_bounded_pool(cache: CacheProvider) -> None:
    errors: list[BaseException] = []
    wrong: list[tuple[int, object]] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                cache.set(f"t:{n}:{i}", [n, i])
                got = cache.get(f"t:{n}:{i}")
                if got != [n, i]:
                    wrong.append((n, got))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert wrong == []
    assert cache.stats()["get"]["hit"] == 32 * 50
    assert cache.circuit_state == "closed"

"""Drills against real local topologies: a 3-master Redis Cluster and a Sentinel group.

The topologies are private processes started on free loopback ports below 55535
(``tasker_resilience._operations.drill.topology``), shared per module and put back
together after each destructive test (a frozen master thawed, a killed one restarted
on its port). They skip only when ``redis-server``/``redis-cli`` are missing, and
fail instead when ``TASKER_TEST_REQUIRE_SERVER=1``.

Timing: a call to a frozen master costs ``SOCKET_TIMEOUT`` (150 ms); "waited" below
means a call took more than a third of that, which a loopback GET (well under 1 ms
even on a loaded 2-core machine) or a refused call (microseconds) never does.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasker_resilience import Resilience
from tasker_resilience._cache.backends.cluster_backend import RedisClusterBackend
from tasker_resilience._cache.provider import CacheProvider
from tasker_resilience._operations.drill.topology import (
    LocalCluster,
    LocalSentinel,
    topology_binaries,
)
from tests.servers import _skip_or_fail

from ._support import SOCKET_TIMEOUT, configure_cache, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.drill]

WAITED = SOCKET_TIMEOUT / 3
"""A call slower than this waited for a timeout (see the module docstring)."""
HEALTHY_AFTER_SECONDS = 2.0
"""The issue's bound: after the first 2 s of a shard outage, at most 1% of calls wait."""


def _require_binaries() -> None:
    if topology_binaries() is None:
        _skip_or_fail("redis-server and redis-cli are not on PATH: no local cluster or sentinel")


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    _require_binaries()
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(local_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The module's cluster, whole again after the test (thawed, restarted, healthy)."""
    yield local_cluster
    for master in local_cluster.masters:
        if master.is_frozen:
            master.thaw()
        if not master.is_running:
            master.restart()
    local_cluster.wait_healthy()


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[LocalSentinel]:
    _require_binaries()
    with LocalSentinel() as group:
        yield group


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def _configure(url: str, prefix: str, **kwargs: Any) -> Resilience:
    kwargs.setdefault("failure_threshold", 3)
    kwargs.setdefault("timeout_seconds", 0.5)
    return configure_cache(url, "redis", prefix, **kwargs)


def _cluster_backend(cache: CacheProvider) -> RedisClusterBackend:
    backend = cache.backend
    assert isinstance(backend, RedisClusterBackend), backend
    return backend


def _keys_per_master(cluster: LocalCluster, prefix: str, count: int) -> list[list[str]]:
    """``count`` cache keys per master (the provider stores ``prefix:key``)."""
    return [cluster.keys_on(i, count, prefix=f"{prefix}:") for i in range(len(cluster.masters))]


def _cluster_cache(
    cluster: LocalCluster, count: int, **kwargs: Any
) -> tuple[Resilience, CacheProvider, list[list[str]], list[str]]:
    """A cache on ``cluster`` under a fresh prefix, and ``count`` of its keys per master
    (per master, and all of them in one list)."""
    prefix = _prefix()
    res = _configure(cluster.url, prefix, **kwargs)
    per_master = _keys_per_master(cluster, prefix, count)
    return res, res.cache, per_master, [key for keys in per_master for key in keys]


# --- cluster: healthy ---------------------------------------------------------------------


def test_cluster_serves_every_operation_sync_and_async(cluster: LocalCluster) -> None:
    res, cache, _, keys = _cluster_cache(cluster, 3)
    for key in keys:
        cache.set(key, {"key": key})
    assert [cache.get(key) for key in keys] == [{"key": key} for key in keys]
    cache.delete(keys[0])
    assert cache.get(keys[0]) is None
    assert cache.delete_pattern("k*") == len(keys) - 1  # spread over all three masters

    async def run() -> tuple[Any, int, bool]:
        for key in keys:
            await cache.aset(key, key)
        value = await cache.aget(keys[-1])
        return value, await cache.adelete_pattern("k*"), await cache.ahealth_check()

    assert asyncio.run(run()) == (keys[-1], len(keys), True)
    report = res.health()
    assert report["status"] == "healthy"
    nodes = report["cache"]["nodes"]
    assert sorted(nodes) == sorted(cluster.node_name(i) for i in range(3))
    assert {node["state"] for node in nodes.values()} == {"closed"}
    assert report["cache"]["unavailable_nodes"] == []
    assert cache.breaker is not None
    assert cache.breaker.metrics()["failed_calls"] == 0


def test_async_burst_of_1000_agets_on_a_healthy_cluster_opens_nothing(
    cluster: LocalCluster,
) -> None:
    prefix = _prefix()
    # 10 connections per node against 1000 concurrent calls: redis-py's asyncio cluster
    # client alone raises MaxConnectionsError for most of them.
    res = _configure(cluster.url, prefix, max_connections=10, connect_timeout=2.0)
    cache = res.cache
    keys = [key for keys in _keys_per_master(cluster, prefix, 10) for key in keys]

    async def burst() -> list[Any]:
        for key in keys:
            await cache.aset(key, key)
        # Half the burst on one hot key, the rest spread over every master.
        wanted = [keys[0] if i % 2 else keys[i % len(keys)] for i in range(1000)]
        got = await asyncio.gather(*(cache.aget(key) for key in wanted))
        await cache.aclose()
        return [(want, value) for want, value in zip(wanted, got, strict=True)]

    pairs = asyncio.run(burst())
    assert all(value == want for want, value in pairs), "every call of the burst is a hit"
    breaker = cache.breaker
    assert breaker is not None
    metrics = breaker.metrics()
    outcome = (metrics["state"], metrics["failed_calls"], metrics["rejected_calls"])
    assert outcome == ("closed", 0, 0)
    for name, node in cache.nodes().items():
        assert (node["state"], node["failed_calls"]) == ("closed", 0), name
    assert cache.stats()["get"]["error"] == 0


def test_sync_burst_beyond_the_pool_opens_nothing(cluster: LocalCluster) -> None:
    prefix = _prefix()
    # Two connections per node for 16 threads: callers queue on the blocking pools.
    res = _configure(cluster.url, prefix, max_connections=2, connect_timeout=2.0)
    cache = res.cache
    keys = [key for keys in _keys_per_master(cluster, prefix, 4) for key in keys]
    for key in keys:
        cache.set(key, key)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in range(100):
                cache.get(keys[i % len(keys)])
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    breaker = cache.breaker
    assert breaker is not None
    assert (breaker.state, breaker.metrics()["failed_calls"]) == ("closed", 0)
    assert all(node["failed_calls"] == 0 for node in cache.nodes().values())
    assert cache.stats()["get"]["hit"] == 16 * 100


# --- cluster: one master of three lost ----------------------------------------------------


Call = tuple[float, float, str, Any]
"""``(started_at, latency, key, value)`` of one get; the keys' values are the keys."""


def _load(cache: CacheProvider, keys: list[str], seconds: float) -> list[Call]:
    """Round-robin gets for ``seconds``."""
    calls: list[Call] = []
    start = time.monotonic()
    index = 0
    while (now := time.monotonic()) - start < seconds:
        key = keys[index % len(keys)]
        index += 1
        value = cache.get(key)
        calls.append((now - start, time.monotonic() - now, key, value))
    return calls


async def _aload(cache: CacheProvider, keys: list[str], seconds: float) -> list[Call]:
    """:func:`_load` with ``aget``, eight calls at a time."""
    calls: list[Call] = []
    start = time.monotonic()
    index = 0

    async def one(key: str) -> None:
        began = time.monotonic()
        value = await cache.aget(key)
        calls.append((began - start, time.monotonic() - began, key, value))

    while time.monotonic() - start < seconds:
        batch = [keys[(index + i) % len(keys)] for i in range(8)]
        index += 8
        await asyncio.gather(*(one(key) for key in batch))
    return calls


def _waited_share(calls: list[Call]) -> tuple[float, int]:
    late = [latency for at, latency, _, _ in calls if at >= HEALTHY_AFTER_SECONDS]
    assert len(late) > 200, f"too few calls after {HEALTHY_AFTER_SECONDS} s to judge: {len(late)}"
    waited = sum(latency > WAITED for latency in late)
    return waited / len(late), len(late)


def _assert_healthy_masters_hit(calls: list[Call], lost_keys: list[str]) -> None:
    """Every call after the first 2 s to a key on a healthy master was a hit."""
    healthy = [c for c in calls if c[0] >= HEALTHY_AFTER_SECONDS and c[2] not in lost_keys]
    assert len(healthy) > 100
    misses = [(key, value) for _, _, key, value in healthy if value != key]
    assert misses == [], f"{len(misses)} of {len(healthy)} healthy-master reads missed"


def _assert_degraded_naming(res: Resilience, node: str) -> None:
    report = res.health()
    assert report["status"] == "degraded"
    assert report["cache"]["unavailable_nodes"] == [node]
    assert report["cache"]["nodes"][node]["state"] in ("open", "half-open")
    assert report["circuit_breakers"]["cache"]["state"] == "closed", "the global breaker stays"


def _assert_node_metrics(res: Resilience, node: str) -> None:
    from tasker_resilience._operations.metrics import private_registry

    registry = private_registry(res)
    value = registry.get_sample_value(
        "tasker_resilience_cache_node_state", {"cache": "default", "node": node}
    )
    assert value in (1.0, 2.0), value  # half-open or open
    healthy = [n for n in res.cache.nodes() if n != node]
    for name in healthy:
        assert (
            registry.get_sample_value(
                "tasker_resilience_cache_node_state", {"cache": "default", "node": name}
            )
            == 0
        )


def test_a_frozen_master_costs_under_one_percent_of_calls_after_two_seconds(
    cluster: LocalCluster,
) -> None:
    res, cache, per_master, keys = _cluster_cache(cluster, 4)
    for key in keys:
        cache.set(key, key)
    frozen, node = 1, cluster.node_name(1)
    victim, survivor = per_master[frozen][0], per_master[frozen][1]

    cluster.masters[frozen].freeze()
    calls = _load(cache, keys, 3.5)
    share, counted = _waited_share(calls)
    print(f"frozen master: {share:.2%} of {counted} calls after 2 s waited for a timeout")
    assert share <= 0.01
    _assert_healthy_masters_hit(calls, per_master[frozen])
    _assert_degraded_naming(res, node)
    _assert_node_metrics(res, node)
    # Invalidated while its master is away: remembered by that master's guard.
    cache.delete(victim)
    assert cache.nodes()[node]["pending_invalidations"] == 1
    assert cache.pending_invalidations()["pending"] == 0, "not the global list"

    cluster.masters[frozen].thaw()
    # Used again without a restart: the node's breaker probes and closes by itself.
    assert wait_until(lambda: cache.get(survivor) == survivor, timeout=5)
    assert cache.get(victim) is None, "the delete was replayed on the master that came back"
    assert cache.nodes()[node]["pending_invalidations"] == 0
    assert wait_until(lambda: res.health()["status"] == "healthy", timeout=5)


def test_a_killed_master_is_skipped_then_used_again_when_it_returns(
    cluster: LocalCluster,
) -> None:
    res, cache, per_master, keys = _cluster_cache(cluster, 4)
    killed, node = 2, cluster.node_name(2)

    async def before() -> None:
        for key in keys:
            await cache.aset(key, key)

    asyncio.run(before())
    cluster.masters[killed].kill()

    async def outage() -> list[Call]:
        calls = await _aload(cache, keys, 3.0)
        await cache.aclose()
        return calls

    calls = asyncio.run(outage())
    share, counted = _waited_share(calls)
    print(f"killed master: {share:.2%} of {counted} calls after 2 s waited")
    assert share <= 0.01
    _assert_healthy_masters_hit(calls, per_master[killed])
    _assert_degraded_naming(res, node)

    cluster.masters[killed].restart()
    cluster.wait_healthy()
    lost = per_master[killed][0]

    async def back() -> Any:
        cache.set(lost, "again")  # sync and async share the node's breaker
        value = await cache.aget(lost)
        await cache.aclose()
        return value

    assert wait_until(lambda: asyncio.run(back()) == "again", timeout=5)
    assert wait_until(lambda: res.health()["status"] == "healthy", timeout=5)


# --- sentinel -----------------------------------------------------------------------------


def test_sentinel_url_serves_sync_and_async(sentinel_group: LocalSentinel) -> None:
    prefix = _prefix()
    res = _configure(sentinel_group.url, prefix)
    cache = res.cache
    cache.set("a", {"n": 1})
    assert cache.get("a") == {"n": 1}

    async def run() -> tuple[Any, int]:
        await cache.aset("b", 2)
        value = await cache.aget("b")
        deleted = await cache.adelete_pattern("*")
        await cache.aclose()
        return value, deleted

    assert asyncio.run(run()) == (2, 2)
    report = res.health()
    assert report["status"] == "healthy"
    assert "nodes" not in report["cache"], "one primary: the cache breaker alone guards it"
    direct = redis.Redis(port=sentinel_group.primary_port(), socket_timeout=2)
    try:
        assert direct.exists(f"{prefix}:a") == 0  # deleted through the pattern, on the primary
    finally:
        direct.close()


def test_sentinel_failover_costs_misses_only_and_resumes_on_the_new_primary(
    sentinel_group: LocalSentinel,
) -> None:
    """Kills the primary: must stay the last test of the module."""
    prefix = _prefix()
    res = _configure(sentinel_group.url, prefix)
    cache = res.cache
    cache.set("stale", "before")
    cache.set("kept", "value")
    old_port = sentinel_group.primary_port()
    replica = redis.Redis(port=sentinel_group.replica.port, socket_timeout=2)
    assert wait_until(lambda: replica.get(f"{prefix}:kept") is not None, timeout=5)

    sentinel_group.primary.kill()
    killed_at = time.monotonic()
    cache.delete("stale")  # cannot reach anyone: remembered, replayed on the new primary
    recovered_at = None
    while time.monotonic() - killed_at < 20:
        # Any exception here fails the test: a failover must cost misses only.
        cache.get("kept")
        cache.set("probe", "p")
        if cache.get("probe") == "p" and sentinel_group.primary_port() != old_port:
            recovered_at = time.monotonic()
            break
        time.sleep(0.01)
    assert recovered_at is not None, "the cache did not resume on the new primary within 20 s"
    print(f"sentinel failover: the cache resumed {recovered_at - killed_at:.2f} s after the kill")
    assert cache.get("stale") is None, "the skipped delete was replayed"
    assert cache.get("kept") == "value", "the promoted replica's data is served"
    new_primary = redis.Redis(port=sentinel_group.primary_port(), socket_timeout=2)
    try:
        assert new_primary.exists(f"{prefix}:stale") == 0
        assert new_primary.get(f"{prefix}:probe") is not None
    finally:
        new_primary.close()
        replica.close()

    async def after() -> Any:
        await cache.aset("async", 1)
        value = await cache.aget("async")
        await cache.aclose()
        return value

    assert asyncio.run(after()) == 1
    assert cache.circuit_state == "closed"


def test_a_whole_cluster_freeze_opens_the_cache_breaker_and_recovers(
    cluster: LocalCluster,
) -> None:
    # One failure opens a master's breaker: redis-py re-reads the slot table from every
    # (frozen) master after each failure, so a failing call costs about 4 socket
    # timeouts here. Open for 1.5 s: time to check the answers while open.
    res, cache, _, keys = _cluster_cache(cluster, 2, failure_threshold=1, timeout_seconds=1.5)
    for key in keys:
        cache.set(key, key)
    for master in cluster.masters:
        master.freeze()
    # Each master's breaker opens on its failure; with all three open the cache
    # breaker opens too, and every call is answered at once.
    round_robin = itertools.cycle(keys)
    assert wait_until(
        lambda: cache.get(next(round_robin)) is None and cache.circuit_state == "open", 15
    )
    calls = _load(cache, keys, 0.3)
    waited = sum(latency > WAITED for _, latency, _, _ in calls)
    # Answered without the network: a rare slow call is the loaded machine, not a wait.
    assert waited <= max(1, len(calls) // 100), f"{waited} of {len(calls)} calls waited"
    report = res.health()
    assert report["status"] == "degraded"
    assert report["cache"]["unavailable_nodes"] == sorted(cluster.node_name(i) for i in range(3))
    for master in cluster.masters:
        master.thaw()
    cluster.wait_healthy()
    assert wait_until(lambda: all(cache.get(key) == key for key in keys), timeout=10)
    assert wait_until(lambda: res.health()["status"] == "healthy", timeout=5)
    assert cache.circuit_state == "closed"

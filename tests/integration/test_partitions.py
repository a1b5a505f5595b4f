"""A write that timed out during a network partition never lands after recovery.

``set(k, v1)`` then ``delete(k)`` during a ~4 s partition: the set times out, the
breaker opens, the delete is remembered and replayed on recovery. If the timed-out
connection were closed politely, the kernel would keep retransmitting the queued
``SET`` and deliver it after the partition heals, after the replayed ``DEL``: ``v1``
back on the server for its whole TTL. Abortive closes drop it. A real partition: a
private redis-server in a network namespace, cut with ``tc`` blackholes (see
``tests/netns.py``; skipped, saying why, where namespaces cannot be made).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import redis

import tasker_resilience as tr
from tasker_resilience._cache.tracking import tracking_connection_factory
from tasker_resilience.testing import configure_for_tests
from tests.netns import PartitionableServer, partitionable_server

pytestmark = [pytest.mark.integration, pytest.mark.drill]

PARTITION_SECONDS = 4.0
WATCH_UNTIL_SECONDS = 12.0
"""How long after the timed-out write the server is watched: TCP retransmits a queued
segment at about 0.2, 0.6, 1.4, 3.0 and 6.2 s, so one lands after a 4 s partition."""


@pytest.fixture
def server() -> Iterator[PartitionableServer]:
    with partitionable_server() as found:
        yield found


class _Loop:
    """One event loop in a thread of its own, kept for the whole test (its asyncio
    client and connections live as long)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _configure(url: str) -> tr.Resilience:
    return configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": "part",
                    "redis": {
                        "url": url,
                        "socket_timeout_seconds": 0.25,
                        "connect_timeout_seconds": 0.25,
                    },
                },
                "circuit_breakers": {
                    "component_configs": {
                        "cache": {
                            "failure_threshold": 2,
                            "timeout_seconds": 0.5,
                            "success_threshold": 1,
                        }
                    }
                },
            }
        }
    )


def test_a_write_that_timed_out_during_a_partition_never_lands_after_recovery(
    server: PartitionableServer,
) -> None:
    res = _configure(server.url)
    cache = res.cache
    loop = _Loop()
    raw = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        cache.set("warm", 0)  # both clients connected before the link goes
        loop.run(cache.aset("warm", 0))
        server.partition()
        cut_at = time.monotonic()
        cache.set("k", "v1")  # times out: a failure, the SET queued in the kernel
        loop.run(cache.aset("ka", "v1"))  # the same over asyncio; the breaker opens
        assert cache.circuit_state == "open"
        cache.delete("k")  # skipped while open: remembered, replayed on recovery
        loop.run(cache.adelete("ka"))
        time.sleep(max(0.0, cut_at + PARTITION_SECONDS - time.monotonic()))
        server.heal()

        deadline = time.monotonic() + 10
        while cache.circuit_state != "closed" and time.monotonic() < deadline:
            cache.get("probe")  # the probe replays the deletes first
            time.sleep(0.1)
        assert cache.circuit_state == "closed"
        assert cache.pending_invalidations()["pending"] == 0

        landed: dict[str, bytes] = {}
        while time.monotonic() < cut_at + WATCH_UNTIL_SECONDS:
            for key in ("part:k", "part:ka"):
                value = raw.get(key)
                if value is not None:
                    landed[key] = value
            time.sleep(0.1)
        assert landed == {}  # no queued SET reached the server after recovery
        assert cache.get("k") is None
        assert loop.run(cache.aget("ka")) is None
    finally:
        server.heal()
        raw.close()
        loop.run(cache.aclose())
        loop.close()


def _lingers_zero(sock: Any) -> bool:
    on, seconds = struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
    return bool(on) and seconds == 0


def test_every_connection_the_library_opens_closes_abortively(cache_url: str) -> None:
    """The cache's sync and asyncio connections and the near tier's channel all set
    SO_LINGER (1, 0) (sentinel and cluster pools get the same connection classes,
    see ``abortive.make_abortive``)."""
    res = _configure(cache_url)
    res.cache.set("x", 1)
    backend: Any = res.cache.backend
    (connection,) = [c for c in backend.client.connection_pool.pool.queue if c is not None]
    assert _lingers_zero(connection._sock._sock)  # the raw socket under the deadline wrapper

    async def async_lingers() -> bool:
        await res.cache.aset("x", 1)
        pool = backend.async_client.connection_pool
        (connection,) = pool._available_connections
        lingers = _lingers_zero(connection._writer.get_extra_info("socket"))
        await res.cache.aclose()
        return lingers

    assert asyncio.run(async_lingers())

    channel = tracking_connection_factory(cache_url, 1.0, 1.0)()
    channel.connect()
    try:
        assert _lingers_zero(channel._sock)
    finally:
        channel.disconnect()


def _sync_sockets(client: Any) -> list[Any]:
    from tasker_resilience._cache.backends.pool import pools_of

    found = []
    for pool in pools_of(client):
        for connection in getattr(pool, "_connections", ()):
            sock = getattr(connection, "_sock", None)
            if sock is not None:
                found.append(getattr(sock, "_sock", sock))  # under a deadline wrapper
    return found


async def _async_sockets(client: Any) -> list[Any]:
    nodes = getattr(client, "nodes_manager", None)
    if nodes is not None:
        connections = [c for node in nodes.nodes_cache.values() for c in node._connections]
    else:
        pool = client.connection_pool
        connections = list(pool._available_connections)
        for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", ()):
            connections += sentinel.connection_pool._available_connections
    return [c._writer.get_extra_info("socket") for c in connections if c._writer is not None]


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_cluster_nodes_and_sentinels_close_abortively(topology: str) -> None:
    from tasker_resilience._operations.drill.topology import (
        LocalCluster,
        LocalSentinel,
        topology_binaries,
    )

    if topology_binaries() is None:
        pytest.skip("redis-server and redis-cli are not on PATH: no local cluster or sentinel")
    with LocalCluster() if topology == "cluster" else LocalSentinel() as group:
        res = configure_for_tests(
            {
                "common": {
                    "cache": {"backend": "redis", "key_prefix": "lg", "redis": {"url": group.url}}
                }
            }
        )
        try:
            res.cache.set("a", 1)
            assert res.cache.get("a") == 1
            backend: Any = res.cache.backend
            sync_sockets = _sync_sockets(backend.client)
            assert sync_sockets
            assert all(map(_lingers_zero, sync_sockets))

            async def async_lingers() -> tuple[int, bool]:
                await res.cache.aset("b", 2)
                assert await res.cache.aget("b") == 2
                sockets = await _async_sockets(backend.async_client)
                lingers = all(map(_lingers_zero, sockets))
                await res.cache.aclose()
                return len(sockets), lingers

            count, lingers = asyncio.run(async_lingers())
            assert count > 0
            assert lingers
        finally:
            res.close()

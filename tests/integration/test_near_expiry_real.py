"""A near entry never outlives the TTL the server holds for its key, in any mode.

Redis reports an expired key (to tracking clients too) only when it deletes it: lazily,
when the key is next touched, or when its sampling sweep reaches it. With many keys
holding TTLs that can be minutes after the TTL ran out; here the sweep is switched off
(``DEBUG SET-ACTIVE-EXPIRE 0``) so the test does not depend on when it would come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasker_resilience._operations.drill.local_server import LocalServer, find_server_binary
from tasker_resilience.testing import configure_for_tests

pytestmark = [pytest.mark.integration, pytest.mark.drill]


@pytest.fixture
def lazy_expiry_server() -> Iterator[LocalServer]:
    found = find_server_binary()
    if found is None or found[0] != "redis-server":
        pytest.skip("needs a redis-server binary on PATH (DEBUG SET-ACTIVE-EXPIRE)")
    server = LocalServer(found[1], extra_args=["--enable-debug-command", "local"])
    server.start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
        client.close()
        yield server
    finally:
        server.stop()


def _configure(server: LocalServer, tracking: str) -> Any:
    res = configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": "near-ttl",
                    "redis": {"url": server.url},
                    # ttl_seconds far longer than the key's TTL: only the server's TTL
                    # can end the entry in time.
                    "near": {"enabled": True, "tracking": tracking, "ttl_seconds": 600},
                }
            }
        }
    )
    deadline = time.monotonic() + 10
    while tracking == "on" and time.monotonic() < deadline:
        if res.cache.near.mode == "tracking" and res.cache.near.tracking_connected:
            return res
        time.sleep(0.02)
    assert tracking != "on", "the near tier's invalidation channel never came up"
    return res


@pytest.mark.parametrize("tracking", ["on", "off"])
def test_a_near_entry_read_from_the_server_ends_with_the_servers_ttl(
    lazy_expiry_server: LocalServer, tracking: str
) -> None:
    res = _configure(lazy_expiry_server, tracking)
    writer = redis.Redis.from_url(lazy_expiry_server.url, socket_timeout=5)
    try:
        # Another process writes them (one with a 1.5 s TTL); this one reads them into
        # its tier once the server has reported those writes (tracking).
        written = time.monotonic()
        writer.set("near-ttl:session", b'J"v1"', px=1500)
        writer.set("near-ttl:forever", b'J"v2"')
        time.sleep(0.3)
        assert res.cache.get("session") == "v1"
        assert res.cache.get("forever") == "v2"
        hits = res.cache.stats()["near"]["hit"]
        assert res.cache.get("session") == "v1"
        assert res.cache.get("forever") == "v2"
        assert res.cache.stats()["near"]["hit"] == hits + 2  # both served from the tier
        time.sleep(max(0.0, written + 1.8 - time.monotonic()))
        assert res.cache.get("session") is None  # not a near hit past the server's TTL
        # The key that never expires on the server stays: kept until invalidated
        # (tracking), or for ttl_seconds (off), as before.
        assert res.cache.get("forever") == "v2"
        assert res.cache.stats()["near"]["hit"] == hits + 3
    finally:
        writer.close()


async def test_the_async_read_brings_the_ttl_too(lazy_expiry_server: LocalServer) -> None:
    res = _configure(lazy_expiry_server, "on")
    writer = redis.Redis.from_url(lazy_expiry_server.url, socket_timeout=5)
    try:
        writer.set("near-ttl:token", b'J"t1"', px=800)
        assert await res.cache.aget("token") == "t1"
        await asyncio.sleep(1.1)
        assert await res.cache.aget("token") is None
    finally:
        writer.close()
        await res.cache.aclose()

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


def _wait_for_tracking(res: object, seconds: float = 10.0) -> None:
    cache = res.cache  # type: ignore[attr-defined]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cache.near.mode == "tracking" and cache.near.tracking_connected:
            return
        time.sleep(0.02)
    raise AssertionError("the near tier's invalidation channel never came up")


@pytest.mark.parametrize("tracking", ["on", "off"])
def test_a_near_entry_read_from_the_server_ends_with_the_servers_ttl(
    lazy_expiry_server: LocalServer, tracking: str
) -> None:
    res = configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": "near-ttl",
                    "redis": {"url": lazy_expiry_server.url},
                    # ttl_seconds far longer than the key's TTL: only the server's TTL
                    # can end the entry in time.
                    "near": {"enabled": True, "tracking": tracking, "ttl_seconds": 600},
                }
            }
        }
    )
    if tracking == "on":
        _wait_for_tracking(res)
    writer = redis.Redis.from_url(lazy_expiry_server.url, socket_timeout=5)
    try:
        # Another process writes it with a 1 s TTL; this one reads it into its tier.
        writer.set("near-ttl:session", b'J"v1"', px=1000)
        assert res.cache.get("session") == "v1"
        assert res.cache.get("session") == "v1"
        assert res.cache.stats()["near"]["hit"] >= 1  # served from the tier
        time.sleep(1.3)
        assert res.cache.get("session") is None  # not a near hit past the server's TTL
        # The key never expiring on the server: the entry is kept (tracking) or
        # bounded by ttl_seconds (off), as before.
        writer.set("near-ttl:forever", b'J"v2"')
        assert res.cache.get("forever") == "v2"
        hits = res.cache.stats()["near"]["hit"]
        assert res.cache.get("forever") == "v2"
        assert res.cache.stats()["near"]["hit"] == hits + 1
    finally:
        writer.close()


async def test_the_async_read_brings_the_ttl_too(lazy_expiry_server: LocalServer) -> None:
    res = configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": "near-ttl",
                    "redis": {"url": lazy_expiry_server.url},
                    "near": {"enabled": True, "tracking": "on", "ttl_seconds": 600},
                }
            }
        }
    )
    _wait_for_tracking(res)
    writer = redis.Redis.from_url(lazy_expiry_server.url, socket_timeout=5)
    try:
        writer.set("near-ttl:token", b'J"t1"', px=800)
        assert await res.cache.aget("token") == "t1"
        await asyncio.sleep(1.1)
        assert await res.cache.aget("token") is None
    finally:
        writer.close()
        await res.cache.aclose()

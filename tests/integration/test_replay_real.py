"""A replay resumed across a second outage never loses the newer invalidations.

A pattern (or the namespace drop that replaces an overflow) is replayed one ``SCAN``
page per slice and resumed from its cursor. If the same invalidation is recorded again
between two slices (a second outage), keys the first pass already walked may hold values
written after it walked them: the scan must start over. Against a real server, with a
clock that ends every slice after one page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tasker_resilience._cache.backends.redis_backend import RedisBackend
from tasker_resilience._cache.invalidations import DELETE, DELETE_PATTERN, PendingInvalidations
from tasker_resilience._cache.keys import escape_glob
from tasker_resilience._cache.replay import InvalidationReplay
from tasker_resilience._config.schema import RedisConfig

pytestmark = pytest.mark.integration

KEYS = 2000


class _OnePagePerSlice:
    """A clock for the replay: every reading is a second later, so each slice ends
    after its first backend operation."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def server(cache_url: str, key_prefix: str) -> Iterator[tuple[redis.Redis, RedisBackend, str]]:
    client = redis.Redis.from_url(cache_url, socket_timeout=5)
    backend = RedisBackend(RedisConfig(url=cache_url, socket_timeout_seconds=2.0))
    try:
        yield client, backend, key_prefix
    finally:
        for key in client.scan_iter(match=escape_glob(key_prefix) + ":*", count=1000):
            client.delete(key)
        backend.close()
        client.close()


def _write_all(client: redis.Redis, prefix: str, value: bytes) -> list[str]:
    keys = [f"{prefix}:k{i}" for i in range(KEYS)]
    client.mset(dict.fromkeys(keys, value))
    return keys


def _left(client: redis.Redis, keys: list[str]) -> int:
    return sum(value is not None for value in client.mget(keys))


@pytest.mark.parametrize("how", ["namespace drop after an overflow", "pattern"])
def test_a_replay_resumed_across_a_second_outage_restarts_its_scan(
    server: tuple[redis.Redis, RedisBackend, str], how: str
) -> None:
    client, backend, prefix = server
    namespace = escape_glob(prefix) + ":*"
    keys = _write_all(client, prefix, b"old")
    pending = PendingInvalidations(10, namespace)
    if how == "pattern":
        pending.add(DELETE_PATTERN, namespace)
    else:
        for key in keys[:11]:  # one more than the bound: the namespace drop
            pending.add(DELETE, key)
        assert pending.overflowed
    replay = InvalidationReplay(backend, pending, prefix, clock=_OnePagePerSlice())

    assert replay.replay() is False  # the first outage's replay: one SCAN page, then out
    assert 0 < _left(client, keys) < KEYS

    # The cache is filled again, then a second outage: every key is invalidated once
    # more while the scan is parked at its cursor.
    _write_all(client, prefix, b"newer")
    if how == "pattern":
        pending.add(DELETE_PATTERN, namespace)
    else:
        for key in keys:
            pending.add(DELETE, key)

    for _ in range(100):
        if replay.replay():
            break
    assert not pending.active
    assert _left(client, keys) == 0  # no value written before the second outage survives

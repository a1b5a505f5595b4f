"""The near cache: the in-process tier in front of a distributed backend.

These run against ``CountingBackend`` (a distributed-looking in-memory store that can
fail like an unreachable server) and a manual clock; the cross-process coherence over a
real redis-server is in ``tests/integration/test_near_real.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tasker_resilience as tr
from tasker_resilience import CacheProvider, ConfigurationError, Resilience
from tasker_resilience._cache.near import PENDING, TRACKING, TTL, NearTier
from tasker_resilience._config.schema import NearConfig
from tasker_resilience._operations.metrics import private_registry
from tasker_resilience.testing import ManualClock, configure_for_tests

from .backend_suite import CountingBackend, Outage

# The counting backend (the ``backend`` fixture in tests/conftest.py) and the provider
# tests' settings (3 failures open the circuit for OPEN_TIMEOUT seconds, 2 probes close
# it), with the near tier on.
from .test_provider import OPEN_TIMEOUT
from .test_provider import _configure as _configure_provider


def _configure(clock: ManualClock, **near: Any) -> Resilience:
    return _configure_provider(clock, near={"enabled": True, **near})


@pytest.fixture
def cache(backend: CountingBackend, clock: ManualClock) -> CacheProvider:
    cache = _configure(clock, ttl_seconds=5, stale_if_error_seconds=60).cache
    backend.calls.clear()
    return cache


def _gets(backend: CountingBackend) -> int:
    return backend.ops().count("get")


def _trip(cache: CacheProvider, backend: CountingBackend) -> None:
    backend.failing = Outage("down")
    for _ in range(3):
        cache.get("trip")
    assert cache.circuit_state == "open"


def _recover(cache: CacheProvider, backend: CountingBackend, clock: ManualClock) -> None:
    backend.failing = None
    clock.advance(OPEN_TIMEOUT + 1)
    for _ in range(2):  # success_threshold probes
        assert cache.health_check()
    assert cache.circuit_state == "closed"


# --- configuration ------------------------------------------------------------------------


def test_near_defaults_are_off_with_documented_values() -> None:
    res = configure_for_tests()
    assert res.settings.cache.near == tr.NearConfig(
        enabled=False,
        max_entries=10_000,
        ttl_seconds=5,
        stale_if_error_seconds=300,
        tracking="auto",
    )
    assert res.cache.near is None


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("max_entries", 0, "a whole number from 1 to 10000000"),
        ("ttl_seconds", 0, "seconds greater than 0 and at most 86400"),
        ("stale_if_error_seconds", -1, "seconds from 0 to 86400"),
        ("tracking", "yes", "one of auto, on, off"),
        ("enabled", "maybe", "true or false"),
        ("colour", 1, "unknown key"),
    ],
)
def test_bad_near_values_name_key_value_and_range(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure_for_tests({"common": {"cache": {"near": {key: value}}}})
    message = str(caught.value)
    assert f"common.cache.near.{key}" in message
    assert repr(value) in message or str(value) in message
    assert allowed in message


def test_tracking_typo_gets_a_suggestion() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'auto'"):
        configure_for_tests({"common": {"cache": {"near": {"tracking": "atuo"}}}})


def test_tier_off_leaves_stats_and_health_unchanged(backend: CountingBackend) -> None:
    res = configure_for_tests({"common": {"cache": {"backend": "counting"}}})
    assert res.cache.near is None
    assert "near" not in res.cache.stats()
    assert "near" not in res.health()["cache"]
    assert res.cache.near_info() is None


def test_near_is_not_put_in_front_of_the_in_process_backend() -> None:
    res = configure_for_tests({"common": {"cache": {"near": {"enabled": True}}}})
    assert res.cache.backend_name == "memory"
    assert res.cache.near is None


def test_without_a_server_to_track_auto_falls_back_to_ttl_and_says_so(
    backend: CountingBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "tasker_resilience.cache"):
        cache = _configure(clock).cache
    assert cache.near is not None
    assert cache.near.mode == TTL
    assert "entries are fresh for ttl_seconds=5" in caplog.text


# --- healthy ------------------------------------------------------------------------------


def test_reads_fill_the_tier_and_repeat_reads_skip_the_backend(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    backend.store.set("tasker-test:k", cache.serializer.dumps({"a": 1}), None)
    assert cache.get("k") == {"a": 1}
    assert _gets(backend) == 1
    for _ in range(5):
        assert cache.get("k") == {"a": 1}
    assert _gets(backend) == 1
    near = cache.stats()["near"]
    assert near["hit"] == 5
    assert near["entries"] == 1
    assert near["bytes"] > 0
    assert cache.stats()["get"]["hit"] == 6


def test_own_writes_update_the_tier_at_once(cache: CacheProvider, backend: CountingBackend) -> None:
    cache.set("k", [1])
    assert cache.get("k") == [1]
    cache.set("k", [2])
    assert cache.get("k") == [2]
    cache.delete("k")
    assert cache.get("k") is None
    cache.set("p:1", 1)
    cache.set("p:2", 2)
    assert cache.get("p:1") == 1
    cache.delete_pattern("p:*")
    assert cache.get("p:1") is None
    assert cache.get("p:2") is None
    assert _gets(backend) == 3  # only the reads after the deletes went to the backend


def test_ttl_mode_bounds_staleness_to_ttl_seconds(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", "old")
    # Another process writes behind this one's back (no invalidation in ttl mode).
    backend.store.set("tasker-test:k", cache.serializer.dumps("new"), None)
    assert cache.get("k") == "old"
    clock.advance(4.9)
    assert cache.get("k") == "old"
    clock.advance(0.2)
    assert cache.get("k") == "new"


def test_a_cached_none_is_a_near_hit(cache: CacheProvider, backend: CountingBackend) -> None:
    calls: list[int] = []

    @tr.cached(ttl=60, namespace="near")
    def lookup(x: int) -> None:
        calls.append(x)

    assert lookup(1) is None
    assert lookup(1) is None
    assert lookup(1) is None
    assert calls == [1]
    assert _gets(backend) == 1


def test_callers_never_share_a_mutable_result(cache: CacheProvider) -> None:
    cache.set("k", {"items": [1, 2]})
    first = cache.get("k")
    first["items"].append(3)
    second = cache.get("k")
    assert second == {"items": [1, 2]}
    assert second is not first


def test_no_collision_between_get_keys_and_cached_entries(cache: CacheProvider) -> None:
    @tr.cached(ttl=60, namespace="near", key=lambda x: "shared")
    def f(x: int) -> int:
        return x * 10

    assert f(1) == 10
    cache.set("shared", 99)  # a plain entry under a different full key
    assert f(1) == 10
    assert cache.get("shared") == 99


def test_lru_bound_and_memory_reported(backend: CountingBackend, clock: ManualClock) -> None:
    cache = _configure(clock, max_entries=3).cache
    for i in range(5):
        cache.set(f"k{i}", "x" * 100)
    near = cache.stats()["near"]
    assert near["entries"] == 3
    assert near["evicted"] == 2
    assert near["bytes"] >= 300
    assert cache.near is not None
    assert len(cache.near) == 3


async def test_async_twins_share_the_tier(cache: CacheProvider, backend: CountingBackend) -> None:
    await cache.aset("k", {"v": 1})
    assert await cache.aget("k") == {"v": 1}
    assert cache.get("k") == {"v": 1}
    assert _gets(backend) == 0
    await cache.adelete("k")
    assert await cache.aget("k") is None
    await cache.aset("p:1", 1)
    await cache.adelete_pattern("p:*")
    assert await cache.aget("p:1") is None


# --- circuit open: stale-if-error -----------------------------------------------------------


def test_open_circuit_serves_stale_entries_and_counts_them(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", {"v": 1})
    clock.advance(10)  # past ttl_seconds: no longer fresh
    _trip(cache, backend)
    calls = len(backend.calls)
    assert cache.get("k") == {"v": 1}
    assert len(backend.calls) == calls  # no network call while open
    assert cache.stats()["near"]["stale_served"] == 1
    assert tr.current().health()["cache"]["near"]["stale_served"] == 1
    assert cache.get("missing") is None  # nothing to serve: still a miss


async def test_stale_serving_is_bounded_by_stale_if_error_seconds(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", "v")
    _trip(cache, backend)
    # Freshness ended when the outage began (before ttl_seconds ran out): the window of
    # stale_if_error_seconds counts from there.
    clock.advance(60 - 1)
    assert await cache.aget("k") == "v"
    clock.advance(2)
    assert await cache.aget("k") is None


def test_a_cached_function_is_not_recomputed_while_open(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    calls: list[int] = []

    @tr.cached(ttl=3600, namespace="near")
    def origin(x: int) -> int:
        calls.append(x)
        return x

    assert [origin(i) for i in range(3)] == [0, 1, 2]
    clock.advance(30)
    _trip(cache, backend)
    assert [origin(i) for i in range(3)] == [0, 1, 2]
    assert calls == [0, 1, 2]
    assert origin(7) == 7
    assert origin(7) == 7
    assert calls == [0, 1, 2, 7]
    assert cache.stats()["near"]["stale_served"] == 3


def test_writes_while_open_are_read_back_and_replayed_as_invalidations(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", "before")
    cache.set("gone", "before")
    _trip(cache, backend)
    cache.set("k", "during")
    cache.delete("gone")
    assert cache.get("k") == "during"
    assert cache.get("gone") is None
    _recover(cache, backend, clock)
    # The replay removed both keys from the backend: nothing stale comes back.
    assert cache.get("k") is None
    assert cache.get("gone") is None


def test_after_an_outage_old_entries_are_not_served_as_fresh(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", "v1")
    assert cache.get("k") == "v1"
    _trip(cache, backend)
    # Meanwhile another process changed k (its invalidation never reached this one).
    backend.store.set("tasker-test:k", cache.serializer.dumps("v2"), None)
    assert cache.get("k") == "v1"  # stale-if-error, within the window
    _recover(cache, backend, clock)
    assert cache.get("k") == "v2"


def test_a_single_failed_read_also_ends_trust(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    cache.set("k", "v1")
    backend.store.set("tasker-test:k", cache.serializer.dumps("v2"), None)
    assert cache.near is not None
    cache.near.invalidate(["tasker-test:k"])  # as if pushed; forces a backend read
    backend.failing = Outage("blip")
    assert cache.get("k") is None  # nothing fresh and nothing stale: invalidated
    backend.failing = None
    assert cache.get("k") == "v2"


# --- the tier alone ---------------------------------------------------------------------------


@pytest.fixture
def tier(clock: ManualClock) -> NearTier:
    tier = NearTier(NearConfig(enabled=True, ttl_seconds=5, stale_if_error_seconds=60), clock=clock)
    tier.tracking_up()
    return tier


def test_an_invalidation_during_a_fill_voids_it(tier: NearTier) -> None:
    token = tier.begin("k")
    tier.invalidate(["k"])  # arrived before the (older) backend answer
    tier.fill("k", token, b"old")
    assert tier.fresh("k") is None
    assert len(tier) == 0


def test_a_fill_across_a_generation_end_is_dropped(tier: NearTier) -> None:
    token = tier.begin("k")
    tier.tracking_down()
    tier.tracking_up()
    tier.fill("k", token, b"v")
    assert len(tier) == 0


def test_tracking_entries_stay_fresh_until_invalidated(tier: NearTier, clock: ManualClock) -> None:
    assert tier.mode == TRACKING
    tier.fill("k", tier.begin("k"), b"v")
    clock.advance(3600)
    assert tier.fresh("k") is not None
    tier.invalidate(["k"])
    assert tier.fresh("k") is None
    assert tier.snapshot()["invalidated"] == 1


def test_a_dropped_channel_distrusts_everything_until_it_is_back(
    tier: NearTier, clock: ManualClock
) -> None:
    tier.fill("k", tier.begin("k"), b"v")
    tier.tracking_down()
    assert tier.fresh("k") is None
    assert not tier.tracking_connected
    tier.fill("k2", tier.begin("k2"), b"v")  # filled while the channel is down
    tier.tracking_up()
    assert tier.fresh("k") is None
    assert tier.fresh("k2") is None
    # Still a stale answer for an outage, measured from when trust ended.
    clock.advance(59)
    assert tier.stale("k") is not None
    clock.advance(2)
    assert tier.stale("k") is None


def test_a_flush_message_empties_the_tier(tier: NearTier) -> None:
    tier.fill("k", tier.begin("k"), b"v")
    tier.invalidate(None)
    assert len(tier) == 0
    assert tier.stale("k") is None


def test_a_pending_tier_never_serves_fresh(clock: ManualClock) -> None:
    tier = NearTier(NearConfig(enabled=True), clock=clock)
    assert tier.mode == PENDING
    tier.put_local("k", b"v", None)
    assert tier.fresh("k") is None
    assert tier.stale("k") is not None


def test_tracking_on_without_a_server_to_track_never_serves_fresh(
    backend: CountingBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        cache = _configure(clock, tracking="on").cache
    assert 'tracking = "on"' in caplog.text
    backend.calls.clear()
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert cache.get("k") == "v"
    assert _gets(backend) == 2
    _trip(cache, backend)
    assert cache.get("k") == "v"  # but still stale-if-error while open


# --- reporting ----------------------------------------------------------------------------------


def test_health_and_metrics_report_the_tier(cache: CacheProvider, backend: CountingBackend) -> None:
    res = tr.current()
    cache.set("k", "v")
    assert cache.get("k") == "v"
    health = res.health()["cache"]["near"]
    assert health == {
        "enabled": True,
        "mode": TTL,
        "tracking_connected": False,
        "entries": 1,
        "stale_served": 0,
    }
    from prometheus_client import generate_latest

    text = generate_latest(private_registry(res)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    default = ("cache", "default")
    assert samples[("tasker_resilience_cache_near_total", (default, ("outcome", "hit")))] == 1
    assert samples[("tasker_resilience_cache_near_entries", (default,))] == 1
    assert ("tasker_resilience_cache_near_total", (default, ("outcome", "stale_served"))) in samples
    assert not any(
        name == "tasker_resilience_cache_operations_total" and ("operation", "near") in labels
        for name, labels in samples
    )


# --- the invalidation listener's parsing (its connection is exercised on a real server) -----


def test_server_versions_are_parsed_for_auto() -> None:
    from tasker_resilience._cache.tracking import parse_version

    assert parse_version({"redis_version": "7.2.4"}) == (7, 2, 4)
    assert parse_version({"redis_version": "5.0.14"})[0] < 6
    assert parse_version({}) == (0,)


def test_pushed_messages_evict_keys_and_a_null_list_flushes(tier: NearTier) -> None:
    from tasker_resilience._cache.tracking import InvalidationListener

    listener = InvalidationListener(tier, lambda: None, "p:", required=False)
    for key in ("p:a", "p:b", "p:c"):
        tier.fill(key, tier.begin(key), b"v")
    listener._handle([b"message", b"__redis__:invalidate", [b"p:a", b"p:b"]])
    assert tier.fresh("p:a") is None
    assert tier.fresh("p:c") is not None
    listener._handle([b"pong", b""])  # proves liveness only
    assert tier.fresh("p:c") is not None
    listener._handle([b"message", b"__redis__:invalidate", None])
    assert len(tier) == 0


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/mymaster/0"]
)
def test_topologies_without_one_channel_fall_back_to_ttl(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tasker_resilience._cache.tracking import start_near_coherence
    from tasker_resilience._config.schema import CacheConfig, RedisConfig

    class Topology:
        name = "redis"
        config = RedisConfig(url=url)

    tier = NearTier(NearConfig(enabled=True))
    config = CacheConfig(near=NearConfig(enabled=True))
    with caplog.at_level(logging.INFO, "tasker_resilience.cache"):
        assert start_near_coherence(tier, Topology(), config, "") is None  # type: ignore[arg-type]
    assert tier.mode == TTL
    assert "not available for" in caplog.text


async def test_an_async_cached_function_is_served_stale_while_open(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    calls: list[int] = []

    @tr.cached(ttl=3600, namespace="near-async")
    async def origin(x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x}

    assert await origin(1) == {"x": 1}
    clock.advance(30)
    _trip(cache, backend)
    first = await origin(1)
    first["x"] = 99  # a caller mutating its result changes nothing for the next one
    assert await origin(1) == {"x": 1}
    assert calls == [1]
    assert cache.stats()["near"]["stale_served"] == 2


def test_a_long_outage_with_reconnect_attempts_keeps_entries_servable(
    tier: NearTier, clock: ManualClock
) -> None:
    tier.fill("k", tier.begin("k"), b"v")
    tier.unavailable()
    for _ in range(5000):  # the listener failing to reconnect, once a second
        tier.tracking_down()
        clock.advance(0.01)
    assert tier.stale("k") is not None
    assert tier.snapshot()["generations_ended"] <= 4

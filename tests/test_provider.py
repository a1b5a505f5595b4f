"""CacheProvider: the breaker around every operation, start-up, replayed invalidations."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import Any

import pytest

from tasker_resilience import CacheConfig, CacheProvider, RedisConfig, Resilience
from tasker_resilience._breakers.registry import BreakerRegistry
from tasker_resilience._cache.backends.redis_backend import RedisBackend
from tasker_resilience._cache.serializers import SerializationError
from tasker_resilience._config.schema import BreakersConfig
from tasker_resilience.testing import ManualClock, configure_for_tests

from .backend_suite import CountingBackend, Outage, PrivateRedis, SilentServer, closed_port

OPEN_TIMEOUT = 10.0


def _configure(clock: ManualClock, **cache: Any) -> Resilience:
    return configure_for_tests(
        {
            "common": {
                "cache": {"backend": "counting", **cache},
                "circuit_breakers": {
                    "component_configs": {
                        "cache": {
                            "failure_threshold": 3,
                            "timeout_seconds": OPEN_TIMEOUT,
                            "success_threshold": 2,
                        }
                    }
                },
            }
        },
        clock=clock,
    )


@pytest.fixture
def res(backend: CountingBackend, clock: ManualClock) -> Resilience:
    resilience = _configure(clock)
    backend.calls.clear()  # forget the start-up health check
    return resilience


@pytest.fixture
def cache(res: Resilience) -> CacheProvider:
    return res.cache


def state(cache: CacheProvider) -> str:
    """The circuit state, read fresh (a plain ``str`` so checks in a row type-check)."""
    return cache.circuit_state


def _trip(cache: CacheProvider, backend: CountingBackend) -> None:
    backend.failing = Outage("down")
    for _ in range(3):
        assert cache.get("trip") is None
    assert state(cache) == "open"
    backend.calls.clear()


# --- wiring -------------------------------------------------------------------------------------


def test_provider_uses_the_registry_cache_breaker(res: Resilience, cache: CacheProvider) -> None:
    assert cache.breaker is res.breakers.get("cache")
    assert cache.distributed is True
    assert cache.enabled is True
    assert cache.backend_name == "counting"
    assert state(cache) == "closed"


def test_key_prefix_on_every_key_and_pattern(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    cache.set("user:1", {"name": "ada"})
    assert cache.get("user:1") == {"name": "ada"}
    cache.delete("user:1")
    cache.delete_pattern("user:*")
    keys = [call[1] for call in backend.calls]
    assert keys == ["tasker-test:user:1"] * 3 + ["tasker-test:user:*"]


def test_a_key_prefix_with_glob_characters_is_escaped_in_patterns(
    backend: CountingBackend, clock: ManualClock
) -> None:
    cache = _configure(clock, key_prefix="app[1]*").cache
    cache.set("a", 1)
    backend.store.set("app1:a", b"J1", None)  # would match an unescaped "app[1]*:*"
    backend.store.set("app[1]*x:a", b"J1", None)
    assert cache.delete_pattern("*") == 1
    assert backend.store.get("app1:a") == b"J1"
    assert backend.store.get("app[1]*x:a") == b"J1"
    assert cache.get("a") is None


def test_default_ttl_when_none_given(cache: CacheProvider, backend: CountingBackend) -> None:
    cache.set("a", 1)
    cache.set("b", 1, ttl=5)
    cache.set("c", 1, ttl=0.25)
    assert [call[3] for call in backend.calls] == [3600, 5, 0.25]


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
def test_bad_ttl_is_a_caller_mistake(cache: CacheProvider, ttl: float) -> None:
    with pytest.raises(ValueError):
        cache.set("a", 1, ttl=ttl)


def test_values_round_trip_through_json(cache: CacheProvider) -> None:
    value = {"s": "✓", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, "2"], "d": {"x": {}}}
    cache.set("v", value)
    assert cache.get("v") == value
    cache.set("bytes", b"\x00\xffraw")
    assert cache.get("bytes") == b"\x00\xffraw"
    cache.set("nested", {"blob": b"\x00\x01"})
    assert cache.get("nested") == {"blob": b"\x00\x01"}


def test_pickle_only_when_configured(backend: CountingBackend, clock: ManualClock) -> None:
    cache = _configure(clock, serializer="pickle").cache
    cache.set("t", (1, {2, 3}))
    assert cache.get("t") == (1, {2, 3})
    # A JSON-configured provider reading that entry never unpickles it: a miss.
    json_cache = CacheProvider(backend, key_prefix="tasker-test")
    assert json_cache.get("t") is None
    assert json_cache.stats()["get"]["error"] == 1


def test_unreadable_entry_is_a_miss_not_an_error(
    cache: CacheProvider, backend: CountingBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.store.set("tasker-test:junk", b"not ours", None)
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        assert cache.get("junk") is None
    assert "unreadable" in caplog.text
    assert state(cache) == "closed"


def test_stats_count_outcomes(cache: CacheProvider, backend: CountingBackend) -> None:
    cache.set("a", 1)
    cache.get("a")
    cache.get("missing")
    cache.delete("a")
    cache.delete_pattern("*")
    cache.health_check()
    _trip(cache, backend)
    cache.get("a")
    cache.set("a", 1)
    stats = cache.stats()
    assert stats["get"] == {
        "hit": 1,
        "miss": 1,
        "error": 3,
        "skipped_open": 1,
        "pool_exhausted": 0,
    }
    assert stats["set"] == {"ok": 1, "error": 0, "skipped_open": 1, "pool_exhausted": 0}
    assert stats["delete"]["ok"] == 1
    assert stats["delete_pattern"]["ok"] == 1
    assert stats["health_check"]["ok"] == 2  # with the start-up check


# --- the breaker around every operation ----------------------------------------------------------


def test_trips_at_exactly_failure_threshold(cache: CacheProvider, backend: CountingBackend) -> None:
    backend.failing = Outage("down")
    assert cache.get("a") is None
    cache.set("a", 1)  # swallowed
    assert state(cache) == "closed"
    assert cache.breaker is not None
    assert cache.breaker.metrics()["failure_count"] == 2
    cache.delete("a")
    assert state(cache) == "open"
    assert len(backend.calls) == 3


@pytest.mark.parametrize("interruption", [asyncio.CancelledError(), KeyboardInterrupt()])
async def test_an_interrupted_read_propagates_and_never_counts(
    cache: CacheProvider, backend: CountingBackend, interruption: BaseException
) -> None:
    backend.failing = interruption
    for _ in range(5):  # more than failure_threshold, each way
        with pytest.raises(type(interruption)):
            cache.get("k")
        with pytest.raises(type(interruption)):
            await cache.aget("k")
    assert state(cache) == "closed"
    assert cache.breaker is not None
    assert cache.breaker.metrics()["failed_calls"] == 0
    assert cache.stats()["get"]["error"] == 0
    backend.failing = None
    cache.set("k", 1)
    assert await cache.aget("k") == 1


def test_a_success_resets_the_failure_streak(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    for _ in range(3):
        backend.failing = Outage("down")
        cache.get("a")
        cache.get("a")
        backend.failing = None
        cache.get("a")
    assert state(cache) == "closed"


def test_no_backend_call_while_open(cache: CacheProvider, backend: CountingBackend) -> None:
    _trip(cache, backend)
    backend.failing = None  # even a healthy backend is not asked while open
    for _ in range(20):
        assert cache.get("a") is None
        cache.set("a", 1)
        cache.delete("a")
        assert cache.delete_pattern("a*") == 0
        assert cache.health_check() is False
    assert backend.calls == []
    stats = cache.stats()
    # Backend commands (Django's add, incr, ...) were not called: their rows stay at 0.
    assert {op: stats[op]["skipped_open"] for op in stats} == {
        **dict.fromkeys(stats, 0),
        "get": 20,
        "set": 20,
        "delete": 20,
        "delete_pattern": 20,
        "health_check": 20,
    }


async def test_no_backend_call_while_open_async(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    _trip(cache, backend)
    backend.failing = None
    for _ in range(5):
        assert await cache.aget("a") is None
        await cache.aset("a", 1)
        await cache.adelete("a")
        assert await cache.adelete_pattern("a*") == 0
        assert await cache.ahealth_check() is False
    assert backend.calls == []


def test_open_path_is_fast(cache: CacheProvider, backend: CountingBackend) -> None:
    _trip(cache, backend)
    started = time.perf_counter()
    for _ in range(10_000):
        cache.get("a")
    per_call = (time.perf_counter() - started) / 10_000
    assert per_call < 50e-6  # wide bound for a noisy machine; the benchmark is precise


def test_recovery_after_timeout_and_success_threshold(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    _trip(cache, backend)
    backend.failing = None
    clock.advance(OPEN_TIMEOUT - 0.1)
    assert cache.get("a") is None
    assert backend.calls == []  # still open
    clock.advance(0.2)
    assert state(cache) == "half-open"
    cache.set("a", 1)  # probe 1
    assert state(cache) == "half-open"
    assert cache.get("a") == 1  # probe 2 closes it
    assert state(cache) == "closed"
    assert backend.ops() == ["set", "get"]


def test_failed_probe_reopens(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    _trip(cache, backend)
    clock.advance(OPEN_TIMEOUT)
    assert cache.get("a") is None  # the probe fails
    assert state(cache) == "open"
    assert backend.ops() == ["get"]
    assert cache.get("a") is None
    assert backend.ops() == ["get"]


def test_caller_mistakes_raise_and_never_trip(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    for _ in range(5):
        with pytest.raises(SerializationError):
            cache.set("a", object())
        with pytest.raises(TypeError):
            cache.get(123)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            cache.delete_pattern(None)  # type: ignore[arg-type]
    assert backend.calls == []
    # A backend error that is not a failure (a bug in the caller's data) propagates
    # from a write and does not count against the breaker.
    backend.failing = ValueError("bad value for this backend")
    for _ in range(5):
        with pytest.raises(ValueError):
            cache.set("a", 1)
        with pytest.raises(ValueError):
            cache.delete("a")
        assert cache.get("a") is None  # a read never raises
    assert state(cache) == "closed"
    assert cache.breaker is not None
    assert cache.breaker.metrics()["failure_count"] == 0


def test_serialisation_errors_raise_even_while_open(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    _trip(cache, backend)
    with pytest.raises(SerializationError):
        cache.set("a", {1, 2})  # sets are not JSON


def test_failures_are_logged_once_per_interval_without_password(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    breakers = BreakerRegistry(BreakersConfig(), clock=clock)
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    backend = RedisBackend(RedisConfig(url=url))
    cache = CacheProvider(backend, breaker=breakers.get("cache"))
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        assert cache.get("a") is None
        cache.set("a", 1)
        cache.delete("a")
    warnings = [r for r in caplog.records if r.name == "tasker_resilience.cache"]
    assert len(warnings) == 1
    text = caplog.text
    assert "hunter2" not in text
    assert "redis://:***@127.0.0.1" in text
    assert "ConnectionError" in text
    assert cache.stats()["set"]["error"] == 1
    backend.close()


def test_a_hung_redis_trips_and_then_costs_nothing(clock: ManualClock) -> None:
    server = SilentServer()
    try:
        breakers = BreakerRegistry(BreakersConfig(), clock=clock)  # cache: 5 failures
        backend = RedisBackend(
            RedisConfig(
                url=f"redis://127.0.0.1:{server.port}/0",
                socket_timeout_seconds=0.1,
                connect_timeout_seconds=0.1,
            )
        )
        cache = CacheProvider(backend, breaker=breakers.get("cache"))
        started = time.monotonic()
        for _ in range(5):
            assert cache.get("a") is None
        assert state(cache) == "open"
        assert time.monotonic() - started < 5 * 0.1 + 1.5
        started = time.monotonic()
        for _ in range(1000):
            assert cache.get("a") is None
        assert time.monotonic() - started < 0.5
        backend.close()
    finally:
        server.close()


# --- no stale reads after an outage ----------------------------------------------------------


def test_missed_delete_is_replayed_before_the_first_read(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("user:1", "old")
    _trip(cache, backend)
    cache.delete("user:1")  # skipped: the server still holds "old"
    assert cache.pending_invalidations() == {"pending": 1, "overflowed": False}
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    assert cache.get("user:1") is None  # not "old"
    assert backend.calls == [("delete", "tasker-test:user:1"), ("get", "tasker-test:user:1")]
    assert cache.pending_invalidations() == {"pending": 0, "overflowed": False}


def test_missed_pattern_delete_and_write_through_set_are_replayed(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("user:1", "old")
    cache.set("user:2", "old")
    cache.set("page", "old")
    _trip(cache, backend)
    cache.delete_pattern("user:*")
    cache.set("page", "new")  # a write-through update that never arrived
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    assert cache.get("page") is None  # not "old"
    assert cache.get("user:2") is None
    # Single keys first (batched), then patterns; the order of deletes does not matter.
    assert backend.ops() == ["delete", "delete_pattern", "get", "get"]


def test_a_delete_that_fails_while_closed_is_remembered(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", "old")
    backend.failing = Outage("blip")
    cache.delete("k")  # fails; the circuit is still closed
    assert state(cache) == "closed"
    backend.failing = None
    assert cache.get("k") is None
    assert backend.ops()[-2:] == ["delete", "get"]


def test_failed_replay_reopens_and_keeps_the_invalidations(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    cache.set("k", "old")
    _trip(cache, backend)
    cache.delete("k")
    clock.advance(OPEN_TIMEOUT)  # backend still failing
    assert cache.get("k") is None
    assert backend.ops() == ["delete"]  # the replay failed, the read never ran
    assert state(cache) == "open"
    assert cache.pending_invalidations()["pending"] == 1
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    assert cache.get("k") is None
    assert cache.pending_invalidations()["pending"] == 0


def test_overflow_drops_the_whole_namespace(backend: CountingBackend, clock: ManualClock) -> None:
    cache = _configure(clock, max_pending_invalidations=2).cache
    for key in ("a", "b", "c"):
        cache.set(key, "old")
    backend.store.set("other-app:a", b"J1", None)
    _trip(cache, backend)
    for key in ("a", "b", "c"):
        cache.delete(key)
    assert cache.pending_invalidations() == {"pending": 0, "overflowed": True}
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    assert cache.get("b") is None
    assert backend.calls[0] == ("delete_pattern", "tasker-test:*")
    assert backend.store.get("tasker-test:a") is None
    assert backend.store.get("other-app:a") == b"J1"  # another prefix is untouched
    assert cache.pending_invalidations() == {"pending": 0, "overflowed": False}


def test_zero_pending_limit_always_drops_the_namespace(
    backend: CountingBackend, clock: ManualClock
) -> None:
    cache = _configure(clock, max_pending_invalidations=0).cache
    cache.set("a", "old")
    _trip(cache, backend)
    cache.delete("a")
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    assert cache.get("a") is None
    assert backend.calls[0] == ("delete_pattern", "tasker-test:*")


async def test_missed_invalidations_replayed_async(
    cache: CacheProvider, backend: CountingBackend, clock: ManualClock
) -> None:
    await cache.aset("k", "old")
    _trip(cache, backend)
    await cache.adelete("k")
    await cache.adelete_pattern("j*")
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    assert await cache.aget("k") is None
    assert backend.ops() == ["delete", "delete_pattern", "get"]


# --- start-up -------------------------------------------------------------------------------


def test_startup_with_backend_down_starts_open_and_recovers(
    backend: CountingBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend.failing = Outage("connection refused")
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        res = _configure(clock)  # must not raise
    cache = res.cache
    assert state(cache) == "open"
    assert "starts degraded" in caplog.text
    assert "recovers by itself" in caplog.text
    backend.calls.clear()
    assert cache.get("a") is None
    assert backend.calls == []
    backend.failing = None
    clock.advance(OPEN_TIMEOUT)
    cache.set("a", 1)
    assert cache.get("a") == 1
    assert state(cache) == "closed"


def test_startup_with_breakers_disabled_stays_closed(
    backend: CountingBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend.failing = Outage("down")
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        res = configure_for_tests(
            {"common": {"cache": {"backend": "counting"}, "circuit_breakers": {"enabled": False}}},
            clock=clock,
        )
    assert state(res.cache) == "closed"
    assert "breakers are disabled" in caplog.text


@pytest.mark.parametrize("name", ["redis", "dragonfly"])
def test_startup_with_real_server_down_then_up(
    name: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: cannot start a private server")
    port = closed_port()
    url = f"redis://:pw-not-shown@127.0.0.1:{port}/0"
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        res = configure_for_tests(
            {"common": {"cache": {"backend": name, "redis": {"url": url}}}}, clock=clock
        )
    cache = res.cache
    assert cache.backend_name == name
    assert type(cache.backend) is RedisBackend
    assert state(cache) == "open"
    assert "pw-not-shown" not in caplog.text
    assert "starts degraded" in caplog.text
    server = PrivateRedis(binary, port)
    server.start()
    try:
        # The server has no password: connect without one once it is up.
        res = configure_for_tests(
            {
                "common": {
                    "cache": {"backend": name, "redis": {"url": f"redis://127.0.0.1:{port}/0"}}
                }
            },
            clock=clock,
        )
        assert state(res.cache) == "closed"
        res.cache.set("k", "v")
        assert res.cache.get("k") == "v"
        res.cache.delete("k")
    finally:
        server.stop()


def test_recovers_when_the_real_server_appears_later(clock: ManualClock) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: cannot start a private server")
    port = closed_port()
    res = configure_for_tests(
        {
            "common": {
                "cache": {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{port}/0"}},
                "circuit_breakers": {
                    "component_configs": {"cache": {"timeout_seconds": 5, "success_threshold": 2}}
                },
            }
        },
        clock=clock,
    )
    cache = res.cache
    assert state(cache) == "open"
    assert cache.get("k") is None
    server = PrivateRedis(binary, port)
    server.start()
    try:
        assert cache.get("k") is None  # still open: nobody asked the server yet
        assert cache.stats()["get"]["skipped_open"] == 2
        clock.advance(5)
        cache.set("k", "v")  # probe 1
        assert cache.get("k") == "v"  # probe 2
        assert state(cache) == "closed"
        cache.delete("k")
    finally:
        server.stop()
        res.close()


# --- disabled and in-process caches ---------------------------------------------------------


def test_disabled_cache_is_a_plain_noop(clock: ManualClock) -> None:
    res = configure_for_tests(
        {"common": {"cache": {"enabled": False, "backend": "redis"}}}, clock=clock
    )
    cache = res.cache
    assert cache.enabled is False
    assert cache.backend_name == "redis"
    assert cache.distributed is False
    assert cache.breaker is None
    assert state(cache) == "closed"
    cache.set("a", 1)
    assert cache.get("a") is None
    assert cache.delete_pattern("*") == 0


def test_memory_backend_has_no_breaker(clock: ManualClock) -> None:
    res = configure_for_tests({"common": {"cache": {"backend": "memory"}}}, clock=clock)
    cache = res.cache
    assert cache.breaker is None
    assert cache.distributed is False
    assert state(cache) == "closed"
    cache.set("a", [1, None])
    assert cache.get("a") == [1, None]


TRICKY_JSON: Any = {
    "floats": [-0.0, 1e308, float("inf"), 0.1],
    "big": 10**40,
    "nested": {"b": [True, False, None, {"z": 1, "a": 2}]},
    "bytes": b"\x00\xff",
    "text": "\u00e9\u4e2d\U0001f600",
}


@pytest.mark.parametrize("serializer", ["json", "pickle"])
async def test_memory_hits_are_fresh_copies_equal_to_a_decode(
    clock: ManualClock, serializer: str
) -> None:
    res = configure_for_tests(
        {"common": {"cache": {"backend": "memory", "serializer": serializer}}}, clock=clock
    )
    cache = res.cache
    cache.set("k", TRICKY_JSON)
    decoded = cache.serializer.loads(cache.backend.get("tasker-test:k") or b"")
    first, second, third = cache.get("k"), cache.get("k"), await cache.aget("k")
    for hit in (first, second, third):
        assert repr(hit) == repr(decoded)  # repr: -0.0 and key order count too
    assert list(second["nested"]["b"][3]) == ["z", "a"]
    # Every hit is its own object: a caller mutating one never changes the next.
    assert first is not second
    assert first["nested"] is not second["nested"]
    first["nested"]["b"].append("mutated")
    second["text"] = "mutated"
    assert repr(cache.get("k")) == repr(decoded)
    assert cache.stats()["get"]["hit"] == 4


def test_memory_hits_after_overwrite_and_delete_see_the_new_state(clock: ManualClock) -> None:
    res = configure_for_tests({"common": {"cache": {"backend": "memory"}}}, clock=clock)
    cache = res.cache
    cache.set("k", [1])
    assert cache.get("k") == cache.get("k") == [1]
    cache.set("k", {"two": 2})
    assert cache.get("k") == cache.get("k") == {"two": 2}
    cache.delete("k")
    assert cache.get("k") is None
    assert cache.stats()["get"] == {
        "hit": 4,
        "miss": 1,
        "error": 0,
        "skipped_open": 0,
        "pool_exhausted": 0,
    }


def test_memory_unreadable_entry_is_a_miss(clock: ManualClock) -> None:
    res = configure_for_tests({"common": {"cache": {"backend": "memory"}}}, clock=clock)
    cache = res.cache
    cache.backend.set("tasker-test:k", b"not ours", None)
    assert cache.get("k") is None
    assert cache.get("k") is None
    assert cache.stats()["get"]["error"] == 2
    with pytest.raises(TypeError):
        cache.get(1)  # type: ignore[arg-type]


def test_from_config_without_configure() -> None:
    breakers = BreakerRegistry(BreakersConfig())
    cache = CacheProvider.from_config(CacheConfig(backend="noop"), breakers)
    assert cache.backend_name == "noop"
    assert cache.health_check() is True
    assert "cache" not in breakers  # no breaker for an in-process backend


async def test_an_open_get_is_a_counted_miss_and_checks_its_key_as_when_closed(
    cache: CacheProvider, backend: CountingBackend
) -> None:
    _trip(cache, backend)
    backend.failing = None
    skipped = cache.stats()["get"].get("skipped_open", 0)
    assert cache.get("a") is None
    assert await cache.aget("é-non-ascii") is None  # a valid key off the fast path
    assert cache.stats()["get"]["skipped_open"] == skipped + 2
    for bad in (b"bytes", "\ud800"):
        with pytest.raises((TypeError, ValueError)):
            cache.get(bad)  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError)):
            await cache.aget(bad)  # type: ignore[arg-type]
    assert backend.calls == []

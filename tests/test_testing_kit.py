"""tasker_resilience.testing: the fakeredis cache with an outage switch, the manual clock,
and the pytest plugin's fixtures, used the way a user's tests use them."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import fakeredis
import pytest

import tasker_resilience as tr
from tasker_resilience._cache.backends.redis_backend import RedisBackend
from tasker_resilience.testing import (
    BackendConformance,
    Harness,
    ManualClock,
    configure_for_tests,
)

pytest_plugins = ["pytester"]

CALLS: list[str] = []


@tr.cached(ttl=60, namespace="kit")
def profile(user: str) -> dict[str, str]:
    CALLS.append(user)
    return {"user": user, "call": str(len(CALLS))}


@tr.cached(ttl=60, namespace="kit-async")
async def aprofile(user: str) -> dict[str, str]:
    CALLS.append(user)
    return {"user": user, "call": str(len(CALLS))}


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    CALLS.clear()


# --- configure_for_tests(backend=...) ---------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "server_type", "reported"),
    [
        ("fakeredis", "redis", "redis"),
        ("redis", "redis", "redis"),
        ("valkey", "valkey", "redis"),
        ("dragonfly", "dragonfly", "dragonfly"),
        ("Dragonfly", "dragonfly", "dragonfly"),
    ],
)
def test_fake_backends_are_the_real_redis_backend(
    backend: str, server_type: str, reported: str
) -> None:
    harness = configure_for_tests(backend=backend)
    assert isinstance(harness, tr.Resilience)
    assert tr.current() is harness
    assert isinstance(harness.server, fakeredis.FakeServer)
    assert harness.server.server_type == server_type
    assert type(harness.cache.backend) is RedisBackend
    assert harness.cache.backend_name == reported
    assert harness.cache.distributed is True
    assert harness.cache.breaker is harness.breakers.get("cache")
    harness.cache.set("k", {"a": 1})
    assert harness.cache.get("k") == {"a": 1}
    # The value went through the real key prefix and serializer to the fake server.
    assert harness.redis_client().keys("*") == [b"tasker-test:k"]
    assert harness.health()["cache"]["backend"] == reported


def test_each_harness_has_its_own_server() -> None:
    first = configure_for_tests(backend="fakeredis", install=False)
    first.cache.set("k", 1)
    second = configure_for_tests(backend="fakeredis", install=False)
    assert second.cache.get("k") is None
    assert first.server is not second.server


def test_other_backend_names_pass_through() -> None:
    harness = configure_for_tests(backend="noop")
    assert harness.server is None
    assert harness.cache.backend_name == "noop"
    with pytest.raises(RuntimeError, match=r"'noop' cache has no server to take down"):
        harness.down()


def test_overrides_still_apply_under_a_fake_backend() -> None:
    harness = configure_for_tests(
        {"common": {"cache": {"key_prefix": "shop"}}}, backend="dragonfly"
    )
    harness.cache.set("k", 1)
    assert harness.redis_client().keys("*") == [b"shop:k"]


def test_a_bad_override_is_still_a_configuration_error() -> None:
    with pytest.raises(tr.ConfigurationError, match="failure_threshold"):
        configure_for_tests(
            {"common": {"circuit_breakers": {"default_config": {"failure_threshold": 0}}}},
            backend="fakeredis",
        )


# --- an outage, sync and async ------------------------------------------------------------


def test_cached_function_through_an_outage_and_back() -> None:
    clock = ManualClock()
    harness = configure_for_tests(backend="fakeredis", clock=clock)
    assert profile("ann")["call"] == "1"
    assert profile("ann")["call"] == "1"  # a hit
    with harness.outage():
        assert harness.is_down
        # The function still answers, by calling through: the cache is a miss.
        assert [profile("ann")["call"] for _ in range(3)] == ["2", "3", "4"]
        assert harness.cache.circuit_state == "open"  # 3 failures in the test defaults
        assert harness.health()["status"] == "degraded"
        stats = harness.cache.stats()["get"]
        profile("ann")
        # Open: no call reaches the (down) server any more.
        assert harness.cache.stats()["get"]["skipped_open"] == stats["skipped_open"] + 1
        profile.invalidate("ann")  # skipped while open, remembered for the recovery
    assert not harness.is_down
    assert harness.cache.circuit_state == "open"  # recovery waits for the probe
    harness.advance()  # past the cache breaker's 1 s open timeout
    assert clock() == pytest.approx(1001.001)
    # The probe replays the invalidation first: the value cached before the outage is gone.
    assert profile("ann")["call"] == "6"
    assert harness.cache.circuit_state == "closed"
    assert profile("ann")["call"] == "6"


async def test_async_cached_function_through_an_outage() -> None:
    harness = configure_for_tests(backend="dragonfly", clock=ManualClock())
    assert (await aprofile("bo"))["call"] == "1"
    harness.down()
    for expected in ("2", "3", "4"):
        assert (await aprofile("bo"))["call"] == expected
    assert harness.cache.circuit_state == "open"
    assert await harness.cache.aget("anything") is None
    harness.up()
    harness.advance(1.5)
    assert (await aprofile("bo"))["call"] == "1"  # back: the old entry was never invalidated
    assert harness.cache.circuit_state == "closed"
    await harness.cache.aclose()


def test_advance_needs_the_manual_clock() -> None:
    harness = configure_for_tests(backend="fakeredis")
    with pytest.raises(RuntimeError, match="ManualClock"):
        harness.advance()
    assert "server=up" in repr(harness)
    harness.down()
    assert "server=down" in repr(harness)


# --- the pytest plugin, in this suite (it is installed with the package) -------------------


def test_plugin_fixtures(tasker_harness: Harness, tasker_cache: tr.CacheProvider) -> None:
    assert tr.current() is tasker_harness
    assert tasker_cache is tasker_harness.cache
    assert tasker_harness.cache.backend_name == "redis"
    assert tasker_harness.server is not None
    with tasker_harness.outage():
        assert tasker_cache.get("k") is None


async def test_plugin_fixtures_in_async_tests(
    tasker_harness: Harness, tasker_cache: tr.CacheProvider, tasker_clock: ManualClock
) -> None:
    await tasker_cache.aset("k", [1, 2])
    assert await tasker_cache.aget("k") == [1, 2]
    tasker_harness.down()
    for _ in range(3):
        assert await tasker_cache.aget("k") is None
    assert tasker_cache.circuit_state == "open"
    tasker_harness.up()
    tasker_clock.advance(1.01)
    assert await tasker_cache.aget("k") == [1, 2]
    assert tasker_cache.circuit_state == "closed"


@pytest.mark.parametrize("tasker_backend", ["dragonfly", "memory"])
def test_plugin_backend_is_parametrizable(
    tasker_cache: tr.CacheProvider, tasker_backend: str
) -> None:
    assert tasker_cache.backend_name == tasker_backend


@pytest.fixture
def tasker_overrides() -> Mapping[str, Any]:
    return {"common": {"cache": {"key_prefix": "overridden"}}}


def test_plugin_overrides_are_a_fixture(tasker_cache: tr.CacheProvider) -> None:
    assert tasker_cache.key_prefix == "overridden"


# --- the plugin in a user's project: strict asyncio mode, reset between tests --------------

USER_TESTS = """
import pytest
import tasker_resilience as tr

@tr.cached(ttl=60)
def answer(x):
    return x * 2

SEEN = []

def test_first(tasker_harness):
    SEEN.append(tasker_harness)
    tr.register_backend("left-behind", lambda config: None)
    assert answer(2) == 4
    tasker_harness.down()   # ends inside an outage

def test_second_starts_fresh(tasker_harness, tasker_cache):
    assert tasker_harness is not SEEN[0]
    assert tr.current() is tasker_harness
    assert tasker_cache.circuit_state == "closed"
    assert tasker_cache.get("anything") is None
    assert not SEEN[0].is_down

def test_registrations_are_forgotten():
    from tasker_resilience._cache.backends.contract import known_backend_names
    assert "left-behind" not in known_backend_names()

@pytest.mark.asyncio
async def test_async_in_strict_mode(tasker_cache):
    await tasker_cache.aset("k", 1)
    assert await tasker_cache.aget("k") == 1

def test_nothing_is_left_configured():
    import tasker_resilience._resilience as r
    assert r._current is None
"""


def test_plugin_in_a_users_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


FORGETFUL_TESTS = """
import tasker_resilience as tr
from tasker_resilience.testing import configure_for_tests

@tr.cached(ttl=60)
def answer(x):
    return x * 2

def test_without_the_fixture():
    assert answer(2) == 4     # configures from settings.toml: the real server
    assert answer(2) == 4
    tr.current().cache.set("more", 1)

def test_also_without_the_fixture():
    assert answer(3) == 6

def test_with_the_fixture(tasker_harness):
    assert answer(2) == 4

def test_with_configure_for_tests():
    configure_for_tests()
    assert answer(2) == 4

def test_pointing_at_a_server_on_purpose():
    tr.configure(overrides={"common": {"cache": {"redis": {"url": "URL"}}}})
    assert answer(5) == 10
"""


@pytest.mark.integration
def test_a_test_that_reaches_the_settings_cache_server_gets_one_warning(
    pytester: pytest.Pytester, private_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    pytester.makepyfile(test_forgetful=FORGETFUL_TESTS.replace("URL", private_server.url))
    pytester.makefile(
        ".toml",
        settings=f'[common.cache]\nbackend = "redis"\nredis = {{url = "{private_server.url}"}}\n',
    )
    pytester.makeconftest(
        "import pytest\nfrom tasker_resilience.testing import reset\n\n"
        "@pytest.fixture(autouse=True)\ndef _reset():\n    reset()\n    yield\n    reset()\n"
    )
    monkeypatch.setenv("TASKER_CONFIG_ROOT", str(pytester.path))
    monkeypatch.setenv("TASKER_ENV", "test")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rw")
    result.assert_outcomes(passed=5, warnings=2)
    text = result.stdout.str()
    assert text.count("RealCacheServerWarning") == 2  # once per test, however many calls
    assert "test_without_the_fixture" in text
    assert "test_also_without_the_fixture" in text
    for name in ("test_with_the_fixture", "test_with_configure_for_tests", "on_purpose"):
        assert name not in text.split("warnings summary")[-1], name
    assert (
        f"this test talks to the settings' cache server {private_server.url} "
        "(common.cache.redis.url): use the tasker_harness fixture"
    ) in text.replace("\n", "")
    # It really did reach the server: what the warning is about.
    client = redis.Redis.from_url(private_server.url)
    try:
        assert client.exists("tasker:more") == 1
    finally:
        client.close()


def test_the_suite_is_shipped_in_the_package() -> None:
    import tasker_resilience.testing.backend_suite as shipped

    assert BackendConformance is shipped.BackendConformance
    assert textwrap.dedent(BackendConformance.__doc__ or "").startswith("The behaviour")

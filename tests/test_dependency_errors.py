"""An incompatible dependency or a bug in the backend is not an outage.

Before the redis-py check, redis-py 5.0.0 (allowed by pyproject then) failed every call
with ``AttributeError: type object 'Redis' has no attribute 'from_pool'``; the cache
took it for an unreachable server, started with its circuit open and stayed a miss for
ever on a healthy server. Now the check fails ``configure()`` naming the version and
the range, and what the check cannot foresee (an attribute gone from a class the
backend calls) raises to the caller, logged at ERROR, without touching the breaker.
"""

from __future__ import annotations

import logging

import pytest
import redis
import redis.commands.core

import tasker_resilience as tr
from tasker_resilience._cache.backends.redis_compat import SUPPORTED_REDIS
from tasker_resilience.testing import Harness, configure_for_tests

from .backend_suite import closed_port

REDIS_CACHE = {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{closed_port()}/0"}}


def _configure_redis() -> tr.Resilience:
    return tr.configure(env="test", overrides={"common": {"cache": REDIS_CACHE}}, install=False)


def test_redis_py_without_what_the_backend_calls_fails_configure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(redis.Redis, "from_pool")  # as in redis-py 5.0.0
    with (
        caplog.at_level(logging.ERROR, "tasker_resilience.cache"),
        pytest.raises(tr.ConfigurationError) as caught,
    ):
        _configure_redis()
    message = str(caught.value)
    assert caught.value.key == "redis-py"
    assert caught.value.value == redis.__version__
    assert "redis.Redis.from_pool" in message
    assert f"redis{SUPPORTED_REDIS}" in message
    assert "pip install" in message
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "redis.Redis.from_pool" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("version", "says"),
    [("5.0.0", "too old"), ("7.2.0", "too old"), ("8.0.0", "unix socket")],
)
def test_a_redis_py_version_outside_the_range_fails_configure(
    monkeypatch: pytest.MonkeyPatch, version: str, says: str
) -> None:
    monkeypatch.setattr(redis, "__version__", version)
    with pytest.raises(tr.ConfigurationError, match=says) as caught:
        _configure_redis()
    assert caught.value.value == version
    assert SUPPORTED_REDIS in str(caught.value)


def test_a_redis_py_newer_than_tested_only_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis, "__version__", "9.1.0")
    with caplog.at_level(logging.WARNING, "tasker_resilience.cache"):
        res = _configure_redis()
    try:
        assert "redis-py 9.1.0 is newer than the range" in caplog.text
    finally:
        res.close()


@pytest.fixture
def harness() -> Harness:
    """The real Redis backend and breaker over fakeredis (3 failures trip it); the
    suite's autouse fixture resets it afterwards."""
    return configure_for_tests(backend="fakeredis")


def test_an_attribute_gone_from_redis_py_raises_to_the_caller_and_never_trips(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = harness.cache
    cache.set("k", 1)
    # An incompatible redis-py as the backend would meet it: a method it calls is gone.
    monkeypatch.delattr(redis.commands.core.BasicKeyCommands, "get")
    with caplog.at_level(logging.ERROR, "tasker_resilience.cache"):
        for _ in range(5):  # more than the threshold of 3
            with pytest.raises(AttributeError):
                cache.get("k")
    assert cache.circuit_state == "closed"
    breaker = harness.breakers.get("cache")
    assert breaker.metrics()["failed_calls"] == 0
    assert cache.stats()["get"]["error"] == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors, "logged at ERROR"
    assert "AttributeError" in errors[0].getMessage()
    assert "not an outage" in errors[0].getMessage()
    monkeypatch.undo()
    assert cache.get("k") == 1  # nothing was held open: the next call is served


async def test_the_async_path_raises_alike(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = harness.cache
    await cache.aset("k", 1)
    monkeypatch.delattr(redis.commands.core.BasicKeyCommands, "get")
    for _ in range(5):
        with pytest.raises(AttributeError):
            await cache.aget("k")
    assert cache.circuit_state == "closed"


def test_a_programming_error_at_start_up_fails_configure_instead_of_starting_degraded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The start-up health check is a PING: without it the cache used to start with its
    # circuit open ("unreachable at start-up") and probe for ever.
    monkeypatch.delattr(redis.commands.core.ManagementCommands, "ping")
    with (
        caplog.at_level(logging.WARNING, "tasker_resilience.cache"),
        pytest.raises(AttributeError),
    ):
        configure_for_tests(backend="fakeredis")
    assert "unreachable at start-up" not in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_real_backend_errors_still_trip_the_breaker(harness: Harness) -> None:
    cache = harness.cache
    cache.set("k", 1)
    with harness.outage():  # connections refused: the server is unwell
        for _ in range(3):
            assert cache.get("k") is None  # a miss, not an exception
        assert cache.circuit_state == "open"

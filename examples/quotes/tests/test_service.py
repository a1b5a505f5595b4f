"""The cached lookup through a cache outage, with the plugin's fixtures."""

from __future__ import annotations

import pytest
from quotes import service

import tasker_resilience as tr
from tasker_resilience.testing import Harness, ManualClock


@pytest.fixture(autouse=True)
def _fresh_lookups() -> None:
    service.LOOKUPS.clear()


@pytest.mark.parametrize("tasker_backend", ["fakeredis", "dragonfly"])
def test_lookups_are_cached(tasker_cache: tr.CacheProvider, tasker_backend: str) -> None:
    assert service.quotes_by("knuth") == service.DATABASE["knuth"]
    assert service.quotes_by("knuth") == service.DATABASE["knuth"]
    assert service.LOOKUPS == ["knuth"]
    assert tasker_cache.backend_name == ("dragonfly" if tasker_backend == "dragonfly" else "redis")


def test_the_service_answers_while_the_cache_is_down(tasker_harness: Harness) -> None:
    service.quotes_by("hopper")
    with tasker_harness.outage():
        for _ in range(5):
            assert service.quotes_by("hopper") == service.DATABASE["hopper"]
        # Three failures (the test defaults) opened the breaker: no more waiting on it.
        assert tasker_harness.cache.circuit_state == "open"
        assert tasker_harness.health()["status"] == "degraded"
    assert service.LOOKUPS == ["hopper"] * 6


def test_no_stale_quote_after_the_outage(
    tasker_harness: Harness, tasker_clock: ManualClock
) -> None:
    service.quotes_by("knuth")
    with tasker_harness.outage():
        for _ in range(3):
            service.quotes_by("knuth")
        service.add_quote("knuth", "Beware of bugs in the above code.")
    tasker_clock.advance(1.5)  # past the 1 s open timeout: the next call is a probe
    assert "Beware of bugs in the above code." in service.quotes_by("knuth")
    assert tasker_harness.cache.circuit_state == "closed"
    service.DATABASE["knuth"].pop()


async def test_async_lookups_through_an_outage(
    tasker_harness: Harness, tasker_cache: tr.CacheProvider
) -> None:
    assert await service.aquotes_by("knuth") == service.DATABASE["knuth"]
    tasker_harness.down()
    for _ in range(3):
        assert await service.aquotes_by("knuth") == service.DATABASE["knuth"]
    assert tasker_cache.circuit_state == "open"
    tasker_harness.up()
    tasker_harness.advance()  # just past the cache breaker's open timeout
    assert await service.aquotes_by("knuth") == service.DATABASE["knuth"]
    assert tasker_cache.circuit_state == "closed"
    assert service.LOOKUPS == ["knuth"] * 4

"""Half-open probes of the cache cost little: ``probe_socket_timeout_seconds``.

A private redis-server behind a ``FaultProxy`` in blackhole mode (accepts, never
answers): a call while closed waits its full socket timeout (0.25 s), a half-open probe
only its own budget (0.05 s), sync and async alike, replays included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tasker_resilience import Resilience
from tasker_resilience._cache.backends.contract import PROBE_BUDGET
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience.testing import FaultProxy, configure_for_tests

pytestmark = [pytest.mark.integration, pytest.mark.drill]

SOCKET_TIMEOUT = 0.25
PROBE_TIMEOUT = 0.05
OPEN_SECONDS = 0.3


@pytest.fixture
def proxy(private_server: LocalServer) -> Iterator[FaultProxy]:
    with FaultProxy(private_server.url) as started:
        yield started


@pytest.fixture
def res(proxy: FaultProxy) -> Resilience:
    return configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": "probe-budget",
                    "redis": {
                        "url": proxy.url,
                        "socket_timeout_seconds": SOCKET_TIMEOUT,
                        "connect_timeout_seconds": SOCKET_TIMEOUT,
                        "probe_socket_timeout_seconds": PROBE_TIMEOUT,
                    },
                },
                "circuit_breakers": {
                    "component_configs": {
                        "cache": {
                            "failure_threshold": 1,
                            "timeout_seconds": OPEN_SECONDS,
                            "success_threshold": 1,
                        }
                    }
                },
            }
        }
    )


def _trip(res: Resilience, proxy: FaultProxy) -> float:
    """Blackhole the server and trip the breaker with one call; that call's cost."""
    assert res.cache.get("k") is None  # connects while healthy
    proxy.blackhole()
    began = time.perf_counter()
    assert res.cache.get("k") is None
    cost = time.perf_counter() - began
    assert res.cache.circuit_state == "open"
    return cost


def _wait_for_probe(res: Resilience) -> None:
    breaker = res.cache.breaker
    assert breaker is not None
    time.sleep((breaker.retry_after_seconds or 0) + 0.01)
    assert res.cache.circuit_state == "half-open"


def test_a_sync_probe_costs_its_budget_not_the_socket_timeout(
    res: Resilience, proxy: FaultProxy
) -> None:
    closed_cost = _trip(res, proxy)
    assert closed_cost >= SOCKET_TIMEOUT * 0.9  # a closed call waits the socket timeout
    for probe in (
        lambda: res.cache.get("k"),
        lambda: res.cache.set("k", 1),
        res.cache.health_check,
    ):
        _wait_for_probe(res)
        began = time.perf_counter()
        probe()
        cost = time.perf_counter() - began
        assert PROBE_TIMEOUT * 0.8 <= cost < SOCKET_TIMEOUT * 0.8
        assert res.cache.circuit_state == "open"  # the probe failed: open again
    assert PROBE_BUDGET.get() is None  # nothing left behind in this thread's context
    proxy.heal()
    _wait_for_probe(res)
    assert res.cache.get("k") is None  # a successful probe: the key was never stored
    assert res.cache.circuit_state == "closed"
    res.cache.set("k", "back")
    assert res.cache.get("k") == "back"


def test_after_a_probe_closed_calls_have_the_full_timeout_again(
    res: Resilience, proxy: FaultProxy
) -> None:
    _trip(res, proxy)
    proxy.heal()
    _wait_for_probe(res)
    assert res.cache.get("k") is None
    assert res.cache.circuit_state == "closed"
    proxy.blackhole()
    began = time.perf_counter()
    res.cache.get("k")
    assert time.perf_counter() - began >= SOCKET_TIMEOUT * 0.9


def test_an_async_probe_costs_its_budget_too(res: Resilience, proxy: FaultProxy) -> None:
    async def scenario() -> list[float]:
        cache = res.cache
        assert await cache.aget("k") is None  # connects while healthy
        proxy.blackhole()
        costs = []
        began = time.perf_counter()
        await cache.aget("k")
        costs.append(time.perf_counter() - began)
        assert cache.circuit_state == "open"
        for probe in (lambda: cache.aget("k"), lambda: cache.aset("k", 1), cache.ahealth_check):
            await asyncio.sleep((cache.breaker.retry_after_seconds or 0) + 0.01)  # type: ignore[union-attr]
            began = time.perf_counter()
            await probe()
            costs.append(time.perf_counter() - began)
            assert cache.circuit_state == "open"
        await cache.aclose()
        return costs

    closed, *probes = asyncio.run(scenario())
    assert closed >= SOCKET_TIMEOUT * 0.9
    for cost in probes:
        assert PROBE_TIMEOUT * 0.8 <= cost < SOCKET_TIMEOUT * 0.8


def test_a_probe_that_replays_invalidations_is_bounded_as_a_whole(
    res: Resilience, proxy: FaultProxy
) -> None:
    _trip(res, proxy)
    res.cache.delete("remembered")  # skipped while open: to be replayed by the next probe
    assert res.cache.pending_invalidations()["pending"] == 1
    _wait_for_probe(res)
    began = time.perf_counter()
    assert res.cache.get("k") is None
    assert time.perf_counter() - began < SOCKET_TIMEOUT * 0.8
    assert res.cache.pending_invalidations()["pending"] == 1  # still owed

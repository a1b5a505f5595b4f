"""The health report: status rules, the cache block, breaker entries, no secrets."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience._operations.health import build_health, build_readiness
from tasker_resilience.testing import ManualClock, configure_for_tests

BREAKER_KEYS = {
    "state",
    "failure_count",
    "success_count",
    "total_calls",
    "rejected_calls",
    "opened_at",
    "retry_after_seconds",
    "critical",
}


def _redis(url: str, **breaker: Any) -> dict[str, Any]:
    """Overrides for a redis cache at ``url`` with a 1 s socket timeout."""
    cache_breaker = {"failure_threshold": 3, "timeout_seconds": 30, **breaker}
    return {
        "common": {
            "cache": {
                "backend": "redis",
                "redis": {"url": url, "socket_timeout_seconds": 1, "connect_timeout_seconds": 1},
            },
            "circuit_breakers": {"component_configs": {"cache": cache_breaker}},
        }
    }


def test_fresh_in_process_cache_is_healthy_and_json_ready() -> None:
    res = configure_for_tests()
    report = res.health()
    assert json.loads(json.dumps(report)) == report
    assert report["status"] == "healthy"
    assert report["cache"] == {
        "enabled": True,
        "backend": "memory",
        "distributed": False,
        "healthy": True,
        "circuit_state": "closed",
    }
    assert {"cache", "pgmq", "task_readiness"} <= set(report["circuit_breakers"])
    for entry in report["circuit_breakers"].values():
        assert set(entry) >= BREAKER_KEYS
        assert entry["state"] == "closed"
        assert entry["opened_at"] is None
        assert entry["retry_after_seconds"] is None


def test_res_health_is_build_health() -> None:
    res = configure_for_tests()
    assert res.health() == build_health(res)


def test_an_open_non_critical_breaker_only_degrades() -> None:
    clock = ManualClock()
    res = configure_for_tests(clock=clock)
    res.breakers.get("pgmq").force_open()
    report = res.health()
    assert report["status"] == "degraded"  # its callers have a fallback: keep serving
    assert build_readiness(res) == {"status": "healthy", "circuit_breakers": {}}
    pgmq = report["circuit_breakers"]["pgmq"]
    assert pgmq["state"] == "open"
    assert pgmq["retry_after_seconds"] == pytest.approx(1.0)
    assert pgmq["opened_at"] is not None
    clock.advance(0.25)
    assert res.health()["circuit_breakers"]["pgmq"]["retry_after_seconds"] == pytest.approx(0.75)


def test_an_open_critical_breaker_is_unhealthy_and_not_ready() -> None:
    overrides = {
        "common": {"circuit_breakers": {"component_configs": {"payments": {"critical": True}}}}
    }
    res = configure_for_tests(overrides)
    res.breakers.get("payments").force_open()
    report = res.health()
    assert report["circuit_breakers"]["payments"]["state"] == "open"
    assert report["status"] == "unhealthy"
    readiness = build_readiness(res)
    assert readiness["status"] == "unhealthy"
    assert set(readiness["circuit_breakers"]) == {"payments"}  # the critical ones only


def test_a_breaker_created_at_run_time_is_reported() -> None:
    res = configure_for_tests()
    res.breakers.get("payments", create=True).force_open()
    report = res.health()
    assert report["circuit_breakers"]["payments"]["state"] == "open"
    assert report["status"] == "degraded"


def test_an_open_cache_breaker_only_degrades() -> None:
    res = configure_for_tests()
    res.breakers.get("cache").force_open()
    report = res.health()
    assert report["status"] == "degraded"
    assert report["circuit_breakers"]["cache"]["state"] == "open"


def test_an_open_critical_cache_breaker_is_unhealthy() -> None:
    overrides = {
        "common": {"circuit_breakers": {"component_configs": {"cache": {"critical": True}}}}
    }
    res = configure_for_tests(overrides)
    res.breakers.get("cache").force_open()
    report = res.health()
    assert report["circuit_breakers"]["cache"]["critical"] is True
    assert report["status"] == "unhealthy"


def test_a_half_open_breaker_is_degraded_not_unhealthy() -> None:
    clock = ManualClock()
    res = configure_for_tests(clock=clock)
    res.breakers.get("pgmq").force_open()
    clock.advance(1.5)  # past timeout_seconds = 1: the next call would probe
    report = res.health()
    assert report["circuit_breakers"]["pgmq"]["state"] == "half-open"
    assert report["status"] == "degraded"


def test_rejected_calls_show_in_the_breaker_entry() -> None:
    res = configure_for_tests()
    breaker = res.breakers.get("pgmq")
    breaker.force_open()
    for _ in range(3):
        with pytest.raises(tr.CircuitOpenError):
            breaker.call(lambda: None)
    entry = res.health()["circuit_breakers"]["pgmq"]
    assert entry["rejected_calls"] == 3
    assert entry["total_calls"] == 3


def test_a_disabled_cache_is_not_a_degradation() -> None:
    res = configure_for_tests({"common": {"cache": {"enabled": False}}})
    report = res.health()
    assert report["status"] == "healthy"
    assert report["cache"]["enabled"] is False
    assert report["cache"]["healthy"] is True


def test_a_health_check_that_raises_reports_the_cache_unhealthy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    res = configure_for_tests()

    def boom() -> bool:
        raise RuntimeError("redis://:hunter2@cache:6379 exploded")

    monkeypatch.setattr(res.cache, "probe_health", boom)
    report = res.health()
    assert report["status"] == "degraded"
    assert report["cache"]["healthy"] is False
    assert "hunter2" not in json.dumps(report)


def test_a_password_in_the_cache_url_never_reaches_the_report() -> None:
    # Port 1 refuses connections: the start-up check fails and the cache starts open.
    res = configure_for_tests(_redis("redis://:s3cret-pw@127.0.0.1:1/0"))
    report = res.health()
    text = json.dumps(report)
    assert "s3cret-pw" not in text
    assert "127.0.0.1" not in text  # nothing URL-like at all
    assert report["status"] == "degraded"
    assert report["cache"]["backend"] == "redis"
    assert report["cache"]["distributed"] is True
    assert report["cache"]["healthy"] is False
    assert report["cache"]["circuit_state"] == "open"


def test_dragonfly_alias_is_reported_by_its_configured_name() -> None:
    res = configure_for_tests(
        {"common": {"cache": {"backend": "dragonfly", "redis": {"url": "redis://127.0.0.1:1/0"}}}}
    )
    assert res.health()["cache"]["backend"] == "dragonfly"


@pytest.mark.integration
def test_a_reachable_server_is_healthy(private_server: LocalServer) -> None:
    res = configure_for_tests(_redis(private_server.url))
    report = res.health()
    assert report["status"] == "healthy"
    assert report["cache"]["healthy"] is True
    assert report["cache"]["circuit_state"] == "closed"
    # The check went through the breaker: it is a real round trip.
    assert report["circuit_breakers"]["cache"]["total_calls"] >= 1


@pytest.mark.integration
@pytest.mark.drill
def test_a_failing_cache_with_a_closed_breaker_is_degraded(private_server: LocalServer) -> None:
    clock = ManualClock()
    res = configure_for_tests(_redis(private_server.url), clock=clock)
    assert res.health()["cache"]["healthy"] is True
    private_server.stop()
    # Within the probe interval the last answer is reused: no new round trip.
    assert res.health()["cache"]["healthy"] is True
    clock.advance(5)  # health_probe_interval_seconds
    report = res.health()
    assert report["cache"]["healthy"] is False
    assert report["cache"]["circuit_state"] == "closed"
    assert report["circuit_breakers"]["cache"]["failure_count"] == 0  # not the breaker's
    assert report["status"] == "degraded"


@pytest.mark.integration
@pytest.mark.drill
def test_health_makes_no_network_call_while_the_cache_circuit_is_open(
    private_server: LocalServer,
) -> None:
    res = configure_for_tests(_redis(private_server.url))
    res.breakers.get("cache").force_open()
    private_server.freeze()  # a network call now would wait the full 1 s socket timeout
    try:
        started = time.perf_counter()
        report = res.health()
        elapsed = time.perf_counter() - started
    finally:
        private_server.thaw()
    assert report["cache"]["healthy"] is False
    assert report["status"] == "degraded"
    assert elapsed < 0.5, f"health took {elapsed:.3f}s: it waited on the frozen server"
    assert res.cache.stats()["health_check"]["skipped_open"] >= 1


@pytest.mark.integration
@pytest.mark.drill
def test_health_checks_never_move_the_breaker(private_server: LocalServer) -> None:
    # The case: after recovery, five health() calls opened the breaker again.
    clock = ManualClock()
    res = configure_for_tests(_redis(private_server.url, failure_threshold=2), clock=clock)
    breaker = res.breakers.get("cache")
    private_server.stop()
    before = breaker.metrics()
    for _ in range(5):
        clock.advance(5)  # every call is due for a probe
        assert res.health()["status"] == "degraded"
    after = breaker.metrics()
    assert after["state"] == "closed"
    for key in ("total_calls", "failed_calls", "rejected_calls", "failure_count"):
        assert after[key] == before[key], key
    assert res.cache.stats()["health_check"]["error"] == 5  # the probes did run


@pytest.mark.integration
def test_a_storm_of_health_requests_probes_the_server_once_per_interval(
    private_server: LocalServer,
) -> None:
    import redis

    clock = ManualClock()
    res = configure_for_tests(_redis(private_server.url), clock=clock)
    client = redis.Redis.from_url(private_server.url)
    try:
        before = int(client.info("stats")["total_commands_processed"])
        reports = []
        threads = [threading.Thread(target=lambda: reports.append(res.health())) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        # The INFO calls themselves count: one before, and the one reading this.
        seen = int(client.info("stats")["total_commands_processed"]) - before - 1
    finally:
        client.close()
    assert len(reports) == 50
    assert all(report["cache"]["healthy"] for report in reports)
    assert seen == 1, f"{seen} commands for 50 health reports"
    assert res.cache.stats()["health_check"]["ok"] == 2  # the start-up check, and this one

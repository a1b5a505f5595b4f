"""The Prometheus collector: values read at scrape time, lazy import, registration."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tasker_resilience as tr
from tasker_resilience import _resilience
from tasker_resilience._operations.metrics import (
    STATE_VALUES,
    ResilienceCollector,
    private_registry,
    register_metrics,
)
from tasker_resilience.testing import ManualClock, configure_for_tests

from .conftest import REPO_ROOT


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from a real text-format scrape."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_breaker_state_transitions_and_calls() -> None:
    clock = ManualClock()
    res = configure_for_tests(clock=clock)
    registry = private_registry(res)
    pgmq = res.breakers.get("pgmq")
    pgmq.call(lambda: "ok")
    for _ in range(3):  # failure_threshold = 3 in the test settings
        with pytest.raises(ZeroDivisionError):
            pgmq.call(lambda: 1 / 0)
    for _ in range(2):
        with pytest.raises(tr.CircuitOpenError):
            pgmq.call(lambda: "refused")

    samples = scrape(registry)
    assert samples[("tasker_resilience_breaker_state", (("breaker", "pgmq"),))] == 2
    assert samples[("tasker_resilience_breaker_state", (("breaker", "cache"),))] == 0
    for state in STATE_VALUES:
        flag = samples[
            ("tasker_resilience_breaker_in_state", (("breaker", "pgmq"), ("state", state)))
        ]
        assert flag == (1 if state == "open" else 0)
    assert samples[("tasker_resilience_breaker_transitions_total", (("breaker", "pgmq"),))] == 1
    calls = {
        outcome: samples[
            ("tasker_resilience_breaker_calls_total", (("breaker", "pgmq"), ("outcome", outcome)))
        ]
        for outcome in ("success", "failure", "rejected")
    }
    assert calls == {"success": 1, "failure": 3, "rejected": 2}
    assert samples[
        ("tasker_resilience_breaker_retry_after_seconds", (("breaker", "pgmq"),))
    ] == pytest.approx(1.0)
    # No retry gauge for a closed breaker: "no probe pending" is not a number of seconds.
    assert ("tasker_resilience_breaker_retry_after_seconds", (("breaker", "cache"),)) not in samples

    clock.advance(1.5)  # read again at the next scrape: nothing is cached between scrapes
    samples = scrape(registry)
    assert samples[("tasker_resilience_breaker_state", (("breaker", "pgmq"),))] == 1


def test_cache_operations_by_operation_and_outcome() -> None:
    res = configure_for_tests()
    registry = private_registry(res)
    res.cache.get("absent")
    res.cache.set("present", {"v": 1})
    res.cache.get("present")
    res.cache.get("present")
    res.cache.delete("present")

    samples = scrape(registry)

    def ops(operation: str, outcome: str) -> float:
        labels = (("cache", "default"), ("operation", operation), ("outcome", outcome))
        return samples[("tasker_resilience_cache_operations_total", labels)]

    assert ops("get", "miss") == 1
    assert ops("get", "hit") == 2
    assert ops("set", "ok") == 1
    assert ops("delete", "ok") == 1
    assert ops("get", "skipped_open") == 0
    info = (
        ("backend", "memory"),
        ("breaker", ""),  # in-process: nothing to guard
        ("cache", "default"),
        ("distributed", "false"),
        ("enabled", "true"),
    )
    assert samples[("tasker_resilience_cache_info", info)] == 1


def test_skipped_open_cache_operations_are_counted() -> None:
    # Port 1 refuses: the start-up check fails, so the cache circuit starts open.
    res = configure_for_tests(
        {"common": {"cache": {"backend": "redis", "redis": {"url": "redis://127.0.0.1:1/0"}}}}
    )
    for _ in range(4):
        res.cache.get("k")
    samples = scrape(private_registry(res))
    labels = (("cache", "default"), ("operation", "get"), ("outcome", "skipped_open"))
    assert samples[("tasker_resilience_cache_operations_total", labels)] == 4
    assert samples[("tasker_resilience_breaker_state", (("breaker", "cache"),))] == 2


def test_without_a_resilience_the_collector_follows_configure() -> None:
    registry = CollectorRegistry()
    register_metrics(registry)
    # Registering must not configure anything (describe() carries no samples).
    assert _resilience._current is None
    configure_for_tests().breakers.get("alpha", create=True)
    assert ("tasker_resilience_breaker_state", (("breaker", "alpha"),)) in scrape(registry)
    configure_for_tests().breakers.get("beta", create=True)
    samples = scrape(registry)
    assert ("tasker_resilience_breaker_state", (("breaker", "beta"),)) in samples
    assert ("tasker_resilience_breaker_state", (("breaker", "alpha"),)) not in samples


def test_registering_twice_in_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    register_metrics(registry, configure_for_tests())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(ResilienceCollector())


def test_importing_the_package_does_not_import_prometheus_client() -> None:
    script = textwrap.dedent(
        """
        import sys
        import tasker_resilience as tr
        from tasker_resilience._operations import cli, health, http as _http, metrics as _metrics
        from tasker_resilience._operations.drill import runner
        from tasker_resilience.testing import configure_for_tests

        res = configure_for_tests()
        res.health()
        _http.health_wsgi_app(res)
        _http.health_asgi_app(res)
        loaded = sorted(name for name in sys.modules if name.startswith("prometheus_client"))
        assert not loaded, loaded
        assert _metrics.metrics_available()
        print("clean")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"

"""An outage seen through OpenTelemetry: a private redis-server frozen with SIGSTOP under
the cache, the SDK's in-memory metric reader and span exporter watching.

Each request is a span. The test checks what each one carries (cache name, usage,
breaker state), the transition events on the spans whose calls caused them (closed ->
open on the call that tripped, open -> half-open -> closed on the recovering probe), a
stale answer from the near tier while open, and the metrics at each step.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import tasker_resilience as tr
from tasker_resilience._operations import telemetry
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience.testing import configure_for_tests
from tests.test_telemetry import Spans, collect, value

from ._support import SOCKET_TIMEOUT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.drill]

BREAKER_STATE = "circuitbreaker.state"
THRESHOLD = 3
OPEN_SECONDS = 0.5
NEAR_TTL = 0.2


def _state_changes(span: Any) -> list[tuple[str, str]]:
    return [
        (event.attributes["circuitbreaker.previous_state"], event.attributes[BREAKER_STATE])
        for event in span.events
        if event.name == "circuitbreaker.state_change"
    ]


def test_an_outage_is_seen_in_spans_events_and_metrics(private_server: LocalServer) -> None:
    assert telemetry.install()
    res = configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": "otel-outage",
                    "redis": {
                        "url": private_server.url,
                        "socket_timeout_seconds": SOCKET_TIMEOUT,
                        "connect_timeout_seconds": SOCKET_TIMEOUT,
                    },
                    # TTL mode (no invalidation channel): entries go stale after
                    # NEAR_TTL and stay servable while the circuit is open.
                    "near": {"enabled": True, "tracking": "off", "ttl_seconds": NEAR_TTL},
                },
                "circuit_breakers": {
                    "component_configs": {
                        "cache": {
                            "failure_threshold": THRESHOLD,
                            "timeout_seconds": OPEN_SECONDS,
                            "success_threshold": 1,
                        }
                    }
                },
            }
        }
    )
    reader = InMemoryMetricReader()
    assert tr.instrument_opentelemetry(res, meter_provider=MeterProvider(metric_readers=[reader]))
    spans = Spans()
    cache = res.cache

    def request(name: str, key: str) -> Any:
        with spans.tracer.start_as_current_span(name):
            return cache.get(key)

    cache.set("hot", {"v": 1})
    assert request("healthy", "hot") == {"v": 1}
    time.sleep(NEAR_TTL * 1.5)  # "hot" is no longer fresh in the near tier
    healthy = collect(reader)["tasker_resilience.breaker.state"]
    assert value(healthy, **{"circuitbreaker.name": "cache"}) == 0

    private_server.freeze()
    try:
        for i in range(THRESHOLD):
            started = time.perf_counter()
            assert request(f"hung {i}", f"cold-{i}") is None
            assert time.perf_counter() - started >= SOCKET_TIMEOUT * 0.9, "a real hung call"
        assert cache.circuit_state == "open"
        assert request("open", "cold-x") is None
        assert request("stale", "hot") == {"v": 1}, "the near tier answers stale while open"
        outage = collect(reader)
    finally:
        private_server.thaw()
    assert wait_until(lambda: cache.circuit_state == "half-open", timeout=OPEN_SECONDS * 10)
    assert request("recovering", "cold-0") is None  # absent: a miss, from the server
    assert cache.circuit_state == "closed"
    recovered = collect(reader)

    # Spans: one attribute set per request, the transition events where they happened.
    for i in range(THRESHOLD - 1):
        hung = spans.finished(f"hung {i}")
        assert (hung.attributes or {})["cache.usage"] == "error"
        assert (hung.attributes or {})["circuitbreaker.state"] == "closed"
        assert _state_changes(hung) == []
    tripped = spans.finished(f"hung {THRESHOLD - 1}")
    assert dict(tripped.attributes or {}) == {
        "cache.name": "default",
        "cache.operation": "get",
        "cache.usage": "error",
        "circuitbreaker.name": "cache",
        "circuitbreaker.state": "open",
    }
    assert _state_changes(tripped) == [("closed", "open")]
    assert (tripped.events[0].attributes or {})["circuitbreaker.failure_count"] == THRESHOLD
    opened = spans.finished("open").attributes or {}
    assert (opened["cache.usage"], opened["circuitbreaker.state"]) == ("skipped", "open")
    stale = spans.finished("stale").attributes or {}
    assert (stale["cache.usage"], stale["circuitbreaker.state"]) == ("stale", "open")
    recovering = spans.finished("recovering")
    assert _state_changes(recovering) == [("open", "half-open"), ("half-open", "closed")]
    assert (recovering.attributes or {})["circuitbreaker.state"] == "closed"
    assert spans.finished("healthy").attributes["cache.usage"] == "hit"  # type: ignore[index]

    # Metrics: the same story, read from the breaker and the cache at each collection.
    cache_breaker = {"circuitbreaker.name": "cache"}
    assert value(outage["tasker_resilience.breaker.state"], **cache_breaker) == 2
    assert value(outage["tasker_resilience.breaker.transitions"], **cache_breaker) == 1
    calls = outage["tasker_resilience.breaker.calls"]
    assert value(calls, outcome="failure", **cache_breaker) == THRESHOLD
    assert value(calls, outcome="rejected", **cache_breaker) == 2  # "open" and "stale"
    ops = outage["tasker_resilience.cache.operations"]
    assert value(ops, **{"cache.operation": "get", "cache.usage": "error"}) == THRESHOLD
    assert value(ops, **{"cache.operation": "get", "cache.usage": "skipped"}) == 2
    assert value(outage["tasker_resilience.cache.stale_served"], **{"cache.name": "default"}) == 1
    assert value(recovered["tasker_resilience.breaker.state"], **cache_breaker) == 0
    assert value(recovered["tasker_resilience.breaker.transitions"], **cache_breaker) == 3

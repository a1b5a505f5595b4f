"""Native OpenTelemetry (``_operations/telemetry.py``), with the SDK's in-memory reader and
exporter: span attributes per cache call, an event per breaker transition, observable
metrics, the off switch, and nothing at all without a recording span or without the API.

The outage against a real, frozen redis-server is in
``tests/integration/test_telemetry_outage.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import tasker_resilience as tr
from tasker_resilience import ConfigurationError
from tasker_resilience._cache import outcomes
from tasker_resilience._operations import telemetry
from tasker_resilience.testing import configure_for_tests
from tests.backend_suite import CountingBackend

COUNTING = {
    "common": {
        "cache": {"backend": "counting"},
        "circuit_breakers": {
            "component_configs": {
                "cache": {"failure_threshold": 2, "timeout_seconds": 30, "success_threshold": 1}
            }
        },
    }
}


class Spans:
    """A tracer whose finished spans land in memory."""

    def __init__(self, sampler: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(**({} if sampler is None else {"sampler": sampler}))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("tests")

    def finished(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.exporter.get_finished_spans() if s.name == name]
        return span


def collect(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Instrument name -> [(attributes, value)], from one collection."""
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    data = reader.get_metrics_data()
    if data is None:  # no instrument observed anything
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
                    for point in metric.data.data_points
                ]
    return found


def value(points: list[tuple[dict[str, Any], float]], **attributes: Any) -> float:
    (match,) = [v for a, v in points if all(a.get(k) == w for k, w in attributes.items())]
    return match


@pytest.fixture
def spans() -> Spans:
    return Spans()


@pytest.fixture
def installed() -> None:
    """The slots filled (the package fills them on import when the API is present)."""
    assert telemetry.install()


def test_the_package_filled_both_slots_on_import_because_the_api_is_installed() -> None:
    assert telemetry.api_available()
    assert outcomes._hook is not None
    res = configure_for_tests()
    assert type(res.cache._stats.counter("get", "hit")).__name__ == "_Reported"


def test_each_cache_call_sets_its_outcome_on_the_active_span(
    installed: None, backend: CountingBackend, spans: Spans
) -> None:
    res = configure_for_tests(COUNTING)
    cache = res.cache
    cache.set("there", 1)
    for name, call in (
        ("hit", lambda: cache.get("there")),
        ("miss", lambda: cache.get("absent")),
        ("set", lambda: cache.set("k", 2)),
    ):
        with spans.tracer.start_as_current_span(name):
            call()
    assert dict(spans.finished("hit").attributes or {}) == {
        "cache.name": "default",
        "cache.operation": "get",
        "cache.usage": "hit",
        "circuitbreaker.name": "cache",
        "circuitbreaker.state": "closed",
    }
    assert (spans.finished("miss").attributes or {})["cache.usage"] == "miss"
    set_attributes = spans.finished("set").attributes or {}
    assert (set_attributes["cache.operation"], set_attributes["cache.usage"]) == ("set", "ok")


def test_a_named_cache_reports_its_own_name_and_breaker(installed: None, spans: Spans) -> None:
    res = configure_for_tests(
        {"common": {"caches": {"sessions": {"backend": "memory"}}}}, backend="memory"
    )
    sessions = res.get_cache("sessions")
    assert sessions.name == "sessions"
    with spans.tracer.start_as_current_span("named"):
        sessions.get("absent")
    attributes = spans.finished("named").attributes or {}
    assert (attributes["cache.name"], attributes["cache.usage"]) == ("sessions", "miss")


def test_an_outage_shows_errors_a_transition_event_and_skipped_calls(
    installed: None, backend: CountingBackend, spans: Spans
) -> None:
    res = configure_for_tests(COUNTING)
    cache = res.cache
    backend.failing = ConnectionError("refused")
    for name in ("first failure", "trip"):
        with spans.tracer.start_as_current_span(name):
            assert cache.get("k") is None
    with spans.tracer.start_as_current_span("open"):
        assert cache.get("k") is None

    first = spans.finished("first failure")
    assert (first.attributes or {})["cache.usage"] == "error"
    assert (first.attributes or {})["circuitbreaker.state"] == "closed"
    assert first.events == ()

    trip = spans.finished("trip")
    assert (trip.attributes or {})["cache.usage"] == "error"
    assert (trip.attributes or {})["circuitbreaker.state"] == "open"
    (event,) = trip.events
    assert event.name == "circuitbreaker.state_change"
    assert dict(event.attributes or {}) == {
        "circuitbreaker.name": "cache",
        "circuitbreaker.previous_state": "closed",
        "circuitbreaker.state": "open",
        "circuitbreaker.failure_count": 2,
    }

    opened = spans.finished("open")
    assert (opened.attributes or {})["cache.usage"] == "skipped"
    assert (opened.attributes or {})["circuitbreaker.state"] == "open"
    assert backend.ops().count("get") == 2, "the open circuit made no call"


def test_cached_functions_report_through_the_same_counts(
    installed: None, backend: CountingBackend, spans: Spans
) -> None:
    configure_for_tests(COUNTING)

    @tr.cached(ttl=60, namespace="telemetry")
    def double(n: int) -> int:
        return 2 * n

    double(2)
    with spans.tracer.start_as_current_span("cached hit"):
        assert double(2) == 4
    assert (spans.finished("cached hit").attributes or {})["cache.usage"] == "hit"


class _WatchedSpan(trace.NonRecordingSpan):
    """A span that is not recording and remembers anything asked of it: the test of
    "nothing at all" needs something that could see a call."""

    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)
        self.asked: list[str] = []

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.asked.append("set_attributes")

    def set_attribute(self, key: str, value: Any) -> None:
        self.asked.append("set_attribute")

    def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
        self.asked.append("add_event")


def test_nothing_at_all_reaches_a_span_that_is_not_recording(
    installed: None, backend: CountingBackend
) -> None:
    res = configure_for_tests(COUNTING)
    watched = _WatchedSpan()
    with trace.use_span(watched):
        res.cache.set("k", 1)
        res.cache.get("k")
        backend.failing = ConnectionError("refused")
        res.cache.get("k")
        res.cache.get("k")  # trips: a transition
        res.cache.get("k")  # skipped
    assert res.cache.circuit_state == "open"
    assert watched.asked == []


def test_an_unsampled_span_exports_nothing(installed: None, backend: CountingBackend) -> None:
    unsampled = Spans(sampler=ALWAYS_OFF)
    res = configure_for_tests(COUNTING)
    with unsampled.tracer.start_as_current_span("unsampled") as span:
        assert not span.is_recording()
        res.cache.get("k")
    assert unsampled.exporter.get_finished_spans() == ()


def test_the_off_switch_silences_spans_events_and_metrics(
    installed: None, backend: CountingBackend, spans: Spans
) -> None:
    off = {"common": {**COUNTING["common"], "telemetry": {"opentelemetry": False}}}
    res = configure_for_tests(off)  # the process-wide settings decide
    assert res.settings.telemetry.opentelemetry is False
    reader = InMemoryMetricReader()
    telemetry.instrument_opentelemetry(meter_provider=MeterProvider(metric_readers=[reader]))
    backend.failing = ConnectionError("refused")
    with spans.tracer.start_as_current_span("off"):
        res.cache.get("a")
        res.cache.get("b")
    assert res.cache.circuit_state == "open"
    off_span = spans.finished("off")
    assert (dict(off_span.attributes or {}), off_span.events) == ({}, ())
    assert collect(reader) == {}


def test_metrics_read_breakers_and_caches_at_collection(
    installed: None, backend: CountingBackend
) -> None:
    res = configure_for_tests(COUNTING)
    reader = InMemoryMetricReader()
    assert telemetry.instrument_opentelemetry(
        res, meter_provider=MeterProvider(metric_readers=[reader])
    )
    cache = res.cache
    cache.set("k", 1)
    cache.get("k")
    cache.get("absent")
    backend.failing = ConnectionError("refused")
    cache.get("k")
    cache.get("k")  # trips
    cache.get("k")  # skipped
    cache.delete("k")  # skipped: remembered for replay

    found = collect(reader)
    assert set(found) == set(telemetry.METRICS) - {"tasker_resilience.cache.stale_served"}
    state = found["tasker_resilience.breaker.state"]
    assert value(state, **{"circuitbreaker.name": "cache"}) == 2
    assert value(state, **{"circuitbreaker.name": "pgmq"}) == 0
    transitions = found["tasker_resilience.breaker.transitions"]
    assert value(transitions, **{"circuitbreaker.name": "cache"}) == 1
    calls = found["tasker_resilience.breaker.calls"]
    by_outcome = {a["outcome"]: v for a, v in calls if a["circuitbreaker.name"] == "cache"}
    assert by_outcome["failure"] == 2
    assert by_outcome["rejected"] == 2
    assert by_outcome["success"] >= 3
    ops = found["tasker_resilience.cache.operations"]
    get = {a["cache.usage"]: v for a, v in ops if a["cache.operation"] == "get"}
    assert (get["hit"], get["miss"], get["error"], get["skipped"]) == (1, 1, 2, 1)
    assert all(a["cache.name"] == "default" for a, _ in ops)
    pending = found["tasker_resilience.cache.pending_invalidations"]
    assert value(pending, **{"cache.name": "default"}) == 1
    assert "tasker_resilience.cache.stale_served" not in found  # no near tier


def test_a_pair_is_instrumented_once() -> None:
    res = configure_for_tests()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    assert telemetry.instrument_opentelemetry(res, meter_provider=provider)
    assert not telemetry.instrument_opentelemetry(res, meter_provider=provider)


@pytest.mark.parametrize(
    ("raw", "allowed"),
    [
        ({"opentelemetry": "maybe"}, "true or false"),
        ({"open_telemetry": True}, "unknown key (did you mean 'opentelemetry'?)"),
        ("on", "a table"),
    ],
)
def test_the_switch_is_validated(raw: object, allowed: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure_for_tests({"common": {"telemetry": raw}})
    assert "common.telemetry" in caught.value.key
    assert allowed in str(caught.value)


def test_a_misspelt_telemetry_table_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'telemetry'"):
        configure_for_tests({"common": {"telemetri": {"opentelemetry": False}}})


def _run(script: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_global_providers_need_no_call() -> None:
    # A fresh process, as an application: import the package, then set the SDK as the
    # global providers, configure, work. No telemetry call anywhere.
    found = _run(
        """
        import json
        import tasker_resilience as tr
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        res = tr.configure(env="test", overrides={"common": {"cache": {"backend": "memory"}}})
        with trace.get_tracer("app").start_as_current_span("request"):
            res.cache.set("k", 1)
            res.cache.get("k")
            res.breakers.get("pgmq").force_open()
        (span,) = exporter.get_finished_spans()
        points = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points[m.name] = [[dict(p.attributes), p.value] for p in m.data.data_points]
        print(json.dumps({
            "attributes": dict(span.attributes),
            "events": [[e.name, dict(e.attributes)] for e in span.events],
            "metrics": points,
        }))
        """
    )
    assert found["attributes"] == {
        "cache.name": "default",
        "cache.operation": "get",
        "cache.usage": "hit",
    }, "an in-process cache has no breaker: no circuitbreaker attributes"
    assert found["events"] == [
        [
            "circuitbreaker.state_change",
            {
                "circuitbreaker.name": "pgmq",
                "circuitbreaker.previous_state": "closed",
                "circuitbreaker.state": "open",
                "circuitbreaker.failure_count": 0,
            },
        ]
    ]
    state = found["metrics"]["tasker_resilience.breaker.state"]
    assert [{"circuitbreaker.name": "pgmq"}, 2] in state
    ops = found["metrics"]["tasker_resilience.cache.operations"]
    assert [{"cache.name": "default", "cache.operation": "get", "cache.usage": "hit"}, 1] in ops


def test_without_the_api_nothing_is_hooked_and_the_counters_are_plain() -> None:
    found = _run(
        """
        import itertools, json, sys
        sys.modules["opentelemetry"] = None  # as if not installed: every import fails
        import tasker_resilience as tr
        from tasker_resilience._breakers import transitions
        from tasker_resilience._cache import outcomes
        from tasker_resilience._operations import telemetry

        res = tr.configure(env="test", overrides={"common": {"cache": {"backend": "memory"}}})
        counters = [res.cache._stats.counter("get", o) for o in ("hit", "miss")]
        try:
            tr.instrument_opentelemetry()
            error = None
        except ImportError as exc:
            error = str(exc)
        print(json.dumps({
            "api": telemetry.api_available(),
            "hooks": [outcomes._hook is None, transitions._hook is None],
            "plain": all(type(c) is itertools.count for c in counters),
            "error": error,
        }))
        """
    )
    assert found == {
        "api": False,
        "hooks": [True, True],
        "plain": True,
        "error": telemetry.INSTALL_HINT,
    }


class _BrokenSpan(trace.NonRecordingSpan):
    """A recording span whose SDK fails: telemetry must not break the cache call."""

    def __init__(self) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)

    def is_recording(self) -> bool:
        return True

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        raise RuntimeError("exporter on fire")


def test_a_failing_span_never_reaches_the_cache_caller(
    installed: None,
    backend: CountingBackend,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "_failed_once", False)
    res = configure_for_tests(COUNTING)
    res.cache.set("k", 1)
    with trace.use_span(_BrokenSpan()):
        assert res.cache.get("k") == 1
        assert res.cache.get("k") == 1
    logged = [r for r in caplog.records if r.name == "tasker_resilience.telemetry"]
    assert len(logged) == 1, "logged once, not on every call"
    assert "exporter on fire" in caplog.text

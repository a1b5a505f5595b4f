"""Native OpenTelemetry: metrics, span attributes per cache call, breaker transition events.

Needs only the OpenTelemetry **API** (``pip install 'tasker-resilience[otel]'``); the
application brings the SDK and its exporters. Nothing to call: when the package is
imported and the API is importable, this module

- registers observable instruments on the global ``MeterProvider`` (a proxy until the
  application sets its SDK provider, which OpenTelemetry then binds them to). Their
  callbacks read ``Breaker.metrics()`` and ``CacheProvider.stats()`` of the process-wide
  ``Resilience`` when the SDK collects, as the Prometheus collector does at scrape
  time: the hot path pays nothing for metrics;
- fills the outcome slot of ``_cache/outcomes.py``: each counted cache outcome sets
  attributes on the active span (cache name, operation, hit/miss/skipped/stale/error,
  breaker name and state). The first thing it asks is whether a span is recording: with
  no SDK, or no sampled span, nothing is built or set;
- fills the transition slot of ``_breakers/transitions.py``: each breaker transition
  adds a ``circuitbreaker.state_change`` event to the active span (the call that caused it).

Names follow the resilience conventions proposed to OpenTelemetry
(open-telemetry/semantic-conventions#2355: ``cache.name``, ``cache.usage``,
``circuitbreaker.name``, ``circuitbreaker.state``, an event per state change); the
values this library adds (``stale``, ``error``, ``ok``, ``pool_exhausted`` for
``cache.usage``, ``cache.operation``) are documented in the guide ("OpenTelemetry").

``[common.telemetry] opentelemetry = false`` in the process-wide settings silences all
three. :func:`instrument_opentelemetry` reports through a provider of your own or for a
``Resilience`` that is not the process-wide one.

The lower rooms import nothing of this module (tests/test_architecture.py): they hold
the two slots, and this module fills them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from tasker_resilience import _resilience
from tasker_resilience._breakers import transitions
from tasker_resilience._cache import outcomes
from tasker_resilience._operations.metrics import STATE_VALUES

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span

    from tasker_resilience._breakers.breaker import Breaker
    from tasker_resilience._cache.provider import CacheProvider
    from tasker_resilience._resilience import Resilience

__all__ = [
    "BREAKER_NAME",
    "BREAKER_PREVIOUS_STATE",
    "BREAKER_STATE",
    "CACHE_NAME",
    "CACHE_OPERATION",
    "CACHE_USAGE",
    "DEFAULT_CACHE_NAME",
    "INSTALL_HINT",
    "METRICS",
    "SCOPE",
    "TRANSITION_EVENT",
    "USAGE",
    "api_available",
    "install",
    "instrument_opentelemetry",
    "uninstall",
]

INSTALL_HINT: Final = "OpenTelemetry needs its API: pip install 'tasker-resilience[otel]'"
SCOPE: Final = "tasker_resilience"
"""The instrumentation scope (meter name)."""
DEFAULT_CACHE_NAME: Final = "default"

# Span and metric attribute keys.
CACHE_NAME: Final = "cache.name"
CACHE_OPERATION: Final = "cache.operation"
CACHE_USAGE: Final = "cache.usage"
BREAKER_NAME: Final = "circuitbreaker.name"
BREAKER_STATE: Final = "circuitbreaker.state"
BREAKER_PREVIOUS_STATE: Final = "circuitbreaker.previous_state"
BREAKER_FAILURE_COUNT: Final = "circuitbreaker.failure_count"
CALL_OUTCOME: Final = "outcome"
TRANSITION_EVENT: Final = "circuitbreaker.state_change"

USAGE: Final = {
    "hit": "hit",
    "miss": "miss",
    "skipped_open": "skipped",
    "stale_served": "stale",
    "error": "error",
    "pool_exhausted": "pool_exhausted",
    "ok": "ok",
}
"""Counted outcome -> ``cache.usage``: ``skipped`` answered at once while the circuit was
open; ``stale`` answered by the near tier while the cache was unavailable; ``error`` the
backend failed (the caller got a miss or a no-op); ``ok`` a write that reached it."""

METRICS: Final = {
    "tasker_resilience.breaker.state": "gauge",
    "tasker_resilience.breaker.transitions": "counter",
    "tasker_resilience.breaker.calls": "counter",
    "tasker_resilience.cache.operations": "counter",
    "tasker_resilience.cache.stale_served": "counter",
    "tasker_resilience.cache.pending_invalidations": "gauge",
}
"""Every instrument this module registers, by kind (observable, read at collection)."""

# Breaker.metrics() keys that count calls by outcome, and the outcome they are. A key
# another part adds (``slow_calls``) is reported under its own name: any ``<x>_calls``.
_CALL_KEYS: Final = {
    "successful_calls": "success",
    "failed_calls": "failure",
    "rejected_calls": "rejected",
    "neutral_calls": "neutral",
}
_NOT_AN_OUTCOME: Final = frozenset({"total_calls"})


class _Api:
    """The API functions this module calls, bound once when the API is importable."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        self.get_current_span: Callable[[], Span] = trace.get_current_span
        self.get_meter_provider: Callable[[], MeterProvider] = metrics.get_meter_provider
        self.observation: type[Observation] = metrics.Observation


def _load_api() -> _Api | None:
    try:
        return _Api()
    except ImportError:
        return None


_api: _Api | None = None
_log = logging.getLogger("tasker_resilience.telemetry")
_failed_once = False
_lock = threading.Lock()
# (meter provider, resilience) pairs already instrumented: registering twice would
# report every number twice.
_instrumented: list[tuple[object, object]] = []


def api_available() -> bool:
    """True when the OpenTelemetry API can be imported."""
    return _api is not None or _load_api() is not None


def _switched_on() -> bool:
    # The process-wide settings decide; read without configuring (a private Resilience,
    # or none yet, leaves the default: on). _current is that module's own global.
    res = _resilience._current
    return res is None or res.settings.telemetry.opentelemetry


# --- spans: the two slots ----------------------------------------------------------------


class _Reported(Protocol):
    """What a span attribute reads of the cache a count belongs to (a CacheProvider)."""

    @property
    def breaker(self) -> Breaker | None: ...


def _cache_name(source: object) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else DEFAULT_CACHE_NAME


def _on_outcome(source: _Reported | None, op: str, outcome: str) -> None:
    """Outcome slot: the cache call's attributes on the active span, if it records.
    Runs inside the cache call: whatever goes wrong here is logged, never raised."""
    api = _api
    if api is None or not _switched_on():
        return
    try:
        span = api.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, str] = {
            CACHE_NAME: _cache_name(source),
            CACHE_OPERATION: op,
            CACHE_USAGE: USAGE.get(outcome, outcome),
        }
        breaker = getattr(source, "breaker", None)
        if breaker is not None:
            attributes[BREAKER_NAME] = breaker.name
            attributes[BREAKER_STATE] = breaker.state
        span.set_attributes(attributes)
    except Exception:
        global _failed_once
        if not _failed_once:  # once: a broken SDK must not flood the log on every call
            _failed_once = True
            _log.exception("OpenTelemetry span attributes for a cache %s failed; ignored", op)


def _on_transition(name: str, old: str, new: str, failure_count: int) -> None:
    """Transition slot: one event on the active span (the call that caused it)."""
    api = _api
    if api is None or not _switched_on():
        return
    span = api.get_current_span()
    if not span.is_recording():
        return
    span.add_event(
        TRANSITION_EVENT,
        {
            BREAKER_NAME: name,
            BREAKER_PREVIOUS_STATE: old,
            BREAKER_STATE: new,
            BREAKER_FAILURE_COUNT: failure_count,
        },
    )


# --- metrics: observable instruments -----------------------------------------------------


def _providers(res: Resilience) -> Iterator[tuple[str, CacheProvider]]:
    """``(cache name, provider)`` for each cache of ``res`` built so far: several where
    the Resilience holds named caches (``built_caches()``), else its one cache as
    ``default``. A collection never builds a cache (that would reach its server)."""
    built: Callable[[], Mapping[str, CacheProvider]] | None = getattr(res, "built_caches", None)
    if built is not None:
        for name, provider in sorted(built().items()):
            yield str(name), provider
        return
    yield DEFAULT_CACHE_NAME, res.cache


class _Observer:
    """The callbacks of one set of instruments, over one Resilience (or the process-wide
    one, read at each collection)."""

    def __init__(self, api: _Api, resilience: Resilience | None) -> None:
        self._observation = api.observation
        self._resilience = resilience

    def _resolve(self) -> Resilience | None:
        if self._resilience is not None:
            return self._resilience
        # Never configures: a collection before configure() reports nothing.
        return _resilience._current if _switched_on() else None

    def _breakers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        res = self._resolve()
        if res is not None:
            yield from res.breakers.snapshot().items()

    def breaker_state(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            self._observation(STATE_VALUES[metrics["state"]], {BREAKER_NAME: name})
            for name, metrics in self._breakers()
        ]

    def breaker_transitions(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            self._observation(metrics["transitions"], {BREAKER_NAME: name})
            for name, metrics in self._breakers()
        ]

    def breaker_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        found = []
        for name, metrics in self._breakers():
            for key, value in metrics.items():
                if key.endswith("_calls") and key not in _NOT_AN_OUTCOME:
                    outcome = _CALL_KEYS.get(key, key.removesuffix("_calls"))
                    found.append(
                        self._observation(value, {BREAKER_NAME: name, CALL_OUTCOME: outcome})
                    )
        return found

    def _caches(self) -> Iterator[tuple[str, CacheProvider]]:
        res = self._resolve()
        if res is not None:
            yield from _providers(res)

    def cache_operations(self, options: CallbackOptions) -> Iterable[Observation]:
        found = []
        for name, provider in self._caches():
            stats = provider.stats()
            stats.pop("near", None)
            for op, counts in stats.items():
                for outcome, value in counts.items():
                    attributes = {
                        CACHE_NAME: name,
                        CACHE_OPERATION: op,
                        CACHE_USAGE: USAGE.get(outcome, outcome),
                    }
                    found.append(self._observation(value, attributes))
        return found

    def stale_served(self, options: CallbackOptions) -> Iterable[Observation]:
        found = []
        for name, provider in self._caches():
            near = provider.stats().get("near")
            if near is not None:
                found.append(self._observation(near["stale_served"], {CACHE_NAME: name}))
        return found

    def pending_invalidations(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            self._observation(int(provider.pending_invalidations()["pending"]), {CACHE_NAME: name})
            for name, provider in self._caches()
        ]


def _register(meter: Meter, observer: _Observer) -> None:
    meter.create_observable_gauge(
        "tasker_resilience.breaker.state",
        callbacks=[observer.breaker_state],
        unit="1",
        description="Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    )
    meter.create_observable_counter(
        "tasker_resilience.breaker.transitions",
        callbacks=[observer.breaker_transitions],
        unit="{transition}",
        description="State transitions of each circuit breaker.",
    )
    meter.create_observable_counter(
        "tasker_resilience.breaker.calls",
        callbacks=[observer.breaker_calls],
        unit="{call}",
        description="Calls through each circuit breaker by outcome (success, failure, "
        "rejected: refused while open, neutral: cancelled or a caller mistake, and any "
        "other outcome the breaker counts, such as slow).",
    )
    meter.create_observable_counter(
        "tasker_resilience.cache.operations",
        callbacks=[observer.cache_operations],
        unit="{operation}",
        description="Cache operations by cache, operation and usage (hit, miss, skipped: "
        "answered at once while the circuit is open, error, ok, pool_exhausted).",
    )
    meter.create_observable_counter(
        "tasker_resilience.cache.stale_served",
        callbacks=[observer.stale_served],
        unit="{read}",
        description="Reads the near tier answered stale while the cache was unavailable "
        "(also counted as hits).",
    )
    meter.create_observable_gauge(
        "tasker_resilience.cache.pending_invalidations",
        callbacks=[observer.pending_invalidations],
        unit="{invalidation}",
        description="Invalidations waiting to be replayed when the cache is back.",
    )


def instrument_opentelemetry(
    resilience: Resilience | None = None, *, meter_provider: MeterProvider | None = None
) -> bool:
    """Report the metrics of ``resilience`` (default: the process-wide one, read at each
    collection) through ``meter_provider`` (default: the global one, which the package
    already reports through on import).

    Returns False when that pair is already reported (registering it twice would report
    every number twice). Raises ``ImportError`` (with the install hint) without the API.
    Span attributes and transition events need no call: they go to the active span.
    """
    api = _api or _load_api()
    if api is None:
        raise ImportError(INSTALL_HINT)
    provider = meter_provider if meter_provider is not None else api.get_meter_provider()
    with _lock:
        for seen_provider, seen_resilience in _instrumented:
            if seen_provider is provider and seen_resilience is resilience:
                return False
        _instrumented.append((provider, resilience))
    _register(provider.get_meter(SCOPE, _version()), _Observer(api, resilience))
    return True


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tasker-resilience")
    except PackageNotFoundError:  # run from a source tree without installing
        return None


# --- installation ------------------------------------------------------------------------


def install() -> bool:
    """Fill the slots and report through the global providers, if the API is importable.
    Called once when the package is imported; True when telemetry is on."""
    global _api
    api = _api or _load_api()
    if api is None:
        return False
    _api = api
    outcomes.set_outcome_hook(_on_outcome)
    transitions.set_transition_hook(_on_transition)
    instrument_opentelemetry()
    return True


def uninstall() -> None:
    """Empty the slots (tests, benchmarks): caches built afterwards pay nothing, the ones
    built before stop reporting. Instruments already registered stay (the API cannot
    remove them); their callbacks keep reading."""
    outcomes.set_outcome_hook(None)
    transitions.set_transition_hook(None)

"""Prometheus metrics, read from breakers and the cache at scrape time.

Needs the ``prometheus`` extra (``pip install 'tasker-resilience[prometheus]'``).
The collector keeps no state and hooks no call: every number is read from
``Breaker.metrics()`` and ``CacheProvider.stats()`` when Prometheus scrapes, so the
hot path pays nothing for metrics. prometheus_client is imported inside functions
only, so importing tasker_resilience never imports it.

    import tasker_resilience as tr
    tr.register_metrics()         # adds the collector to prometheus_client.REGISTRY
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from tasker_resilience._resilience import Resilience

__all__ = [
    "INSTALL_HINT",
    "STATE_VALUES",
    "ResilienceCollector",
    "metrics_available",
    "private_registry",
    "register_metrics",
    "render_metrics",
]

INSTALL_HINT: Final = "metrics need prometheus-client: pip install 'tasker-resilience[prometheus]'"

STATE_VALUES: Final = {"closed": 0, "half-open": 1, "open": 2}
"""``tasker_resilience_breaker_state`` values: higher is worse, so alerts can use ``>= 2``."""

_CALL_OUTCOMES: Final = (
    ("success", "successful_calls"),
    ("failure", "failed_calls"),
    ("rejected", "rejected_calls"),
    ("neutral", "neutral_calls"),
)

_PREFIX: Final = "tasker_resilience"
_NEAR_COUNTERS: Final = (
    "hit",
    "miss",
    "stale_served",
    "invalidated",
    "evicted",
    "generations_ended",
)


def metrics_available() -> bool:
    """True when prometheus-client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class ResilienceCollector:
    """A prometheus_client collector over one :class:`Resilience`.

    With ``resilience=None`` it reads the process-wide one at each scrape, so a later
    ``configure()`` is picked up without re-registering.
    """

    def __init__(self, resilience: Resilience | None = None) -> None:
        self._resilience = resilience

    def _resolve(self) -> Resilience:
        if self._resilience is not None:
            return self._resilience
        from tasker_resilience._resilience import current

        return current()

    def describe(self) -> Iterator[Metric]:
        # Names without samples: lets a registry detect duplicates at register time
        # without calling collect(), which would configure the process-wide Resilience.
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._resolve())

    def _families(self, res: Resilience | None) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily(
            f"{_PREFIX}_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        in_state = GaugeMetricFamily(
            f"{_PREFIX}_breaker_in_state",
            "1 for the state each circuit breaker is in, 0 for the others.",
            labels=["breaker", "state"],
        )
        streak = GaugeMetricFamily(
            f"{_PREFIX}_breaker_failure_streak",
            "Consecutive counted failures (the breaker opens at failure_threshold).",
            labels=["breaker"],
        )
        retry_after = GaugeMetricFamily(
            f"{_PREFIX}_breaker_retry_after_seconds",
            "Seconds until an open breaker lets a half-open probe through.",
            labels=["breaker"],
        )
        transitions = CounterMetricFamily(
            f"{_PREFIX}_breaker_transitions",
            "State transitions of each circuit breaker.",
            labels=["breaker"],
        )
        calls = CounterMetricFamily(
            f"{_PREFIX}_breaker_calls",
            "Calls through each circuit breaker by outcome (rejected: refused while open; "
            "neutral: cancelled, a caller mistake or an exhausted local pool).",
            labels=["breaker", "outcome"],
        )
        # Every cache family carries a `cache` label: "default" for [common.cache], the
        # name of each [common.caches.<name>] or attached cache for the others.
        cache_ops = CounterMetricFamily(
            f"{_PREFIX}_cache_operations",
            "Cache operations by cache, operation and outcome "
            "(hit, miss, ok, error, skipped_open: answered at once while the circuit is open, "
            "pool_exhausted: no free local connection; not a backend failure).",
            labels=["cache", "operation", "outcome"],
        )
        cache_info = GaugeMetricFamily(
            f"{_PREFIX}_cache_info",
            "Each cache's configured backend and its breaker (always 1).",
            labels=["cache", "backend", "enabled", "distributed", "breaker"],
        )
        near_ops = CounterMetricFamily(
            f"{_PREFIX}_cache_near",
            "Near-tier lookups by outcome (hit, miss: fresh lookups; stale_served: answered "
            "from the tier while the cache was unavailable; invalidated: keys the server "
            "pushed; evicted: least recently used; generations_ended: trust resets).",
            labels=["cache", "outcome"],
        )
        near_entries = GaugeMetricFamily(
            f"{_PREFIX}_cache_near_entries", "Entries held by the near tier.", labels=["cache"]
        )
        near_bytes = GaugeMetricFamily(
            f"{_PREFIX}_cache_near_bytes",
            "Estimated memory held by the near tier.",
            labels=["cache"],
        )
        any_near = False
        node_state = GaugeMetricFamily(
            f"{_PREFIX}_cache_node_state",
            "State of each cache node's own breaker (Redis Cluster masters): "
            "0 closed, 1 half-open, 2 open.",
            labels=["cache", "node"],
        )
        node_calls = CounterMetricFamily(
            f"{_PREFIX}_cache_node_calls",
            "Calls to each cache node by outcome (rejected: refused while its breaker is open).",
            labels=["cache", "node", "outcome"],
        )
        pending = GaugeMetricFamily(
            f"{_PREFIX}_cache_pending_invalidations",
            "Invalidations the cache could not apply (circuit open, backend failing), "
            "waiting to be replayed when it is back: the replay backlog.",
            labels=["cache"],
        )
        views = [] if res is None else _host_views(res)
        host_families = _host_families() if res is None or views else ()
        for name, view in views:
            _add_host_view(host_families, name, view)
        if res is not None:
            for name, metrics in res.breakers.snapshot().items():
                self._add_breaker(name, metrics, state, in_state, streak, retry_after)
                transitions.add_metric([name], metrics["transitions"])
                for outcome, key in _CALL_OUTCOMES:
                    calls.add_metric([name, outcome], metrics[key])
            for cache_name, cache in res.caches.items():
                for node, metrics in sorted(cache.nodes().items()):
                    node_state.add_metric([cache_name, node], STATE_VALUES[metrics["state"]])
                    for outcome, key in _CALL_OUTCOMES:
                        node_calls.add_metric([cache_name, node, outcome], metrics[key])
                stats = cache.stats()
                near = stats.pop("near", None)
                for operation, outcomes in sorted(stats.items()):
                    for outcome, count in sorted(outcomes.items()):
                        cache_ops.add_metric([cache_name, operation, outcome], count)
                if near is not None:
                    any_near = True
                    for outcome in _NEAR_COUNTERS:
                        near_ops.add_metric([cache_name, outcome], near[outcome])
                    near_entries.add_metric([cache_name], near["entries"])
                    near_bytes.add_metric([cache_name], near["bytes"])
                breaker = cache.breaker
                cache_info.add_metric(
                    [
                        cache_name,
                        cache.backend_name,
                        _label(cache.enabled),
                        _label(cache.distributed),
                        "" if breaker is None else breaker.name,
                    ],
                    1,
                )
                pending.add_metric([cache_name], cache.pending_invalidations()["pending"])
        yield from (state, in_state, streak, retry_after, transitions, calls, cache_ops)
        yield from (cache_info, node_state, node_calls, pending)
        # Only with host sharing on (or for describe()): otherwise unchanged output.
        yield from host_families
        if res is None or any_near:
            # Only with a near tier on (or for describe()): otherwise unchanged output.
            yield from (near_ops, near_entries, near_bytes)

    @staticmethod
    def _add_breaker(
        name: str,
        metrics: dict[str, Any],
        state: Any,
        in_state: Any,
        streak: Any,
        retry_after: Any,
    ) -> None:
        current_state = metrics["state"]
        state.add_metric([name], STATE_VALUES[current_state])
        for candidate in STATE_VALUES:
            in_state.add_metric([name, candidate], 1 if candidate == current_state else 0)
        streak.add_metric([name], metrics["failure_count"])
        if metrics["retry_after_seconds"] is not None:
            retry_after.add_metric([name], metrics["retry_after_seconds"])


def _host_families() -> tuple[Any, ...]:
    from prometheus_client.core import GaugeMetricFamily

    return (
        GaugeMetricFamily(
            f"{_PREFIX}_breaker_host_processes",
            "Processes of this host sharing the breaker (host sharing on).",
            labels=["breaker"],
        ),
        GaugeMetricFamily(
            f"{_PREFIX}_breaker_host_open_processes",
            "Processes of this host whose breaker is open.",
            labels=["breaker"],
        ),
        GaugeMetricFamily(
            f"{_PREFIX}_breaker_host_open",
            "1 while the host is in an outage of this breaker (some process opened it).",
            labels=["breaker"],
        ),
        GaugeMetricFamily(
            f"{_PREFIX}_breaker_host_opened_by_pid",
            "The process that opened the breaker first in the host's latest outage (0: none yet).",
            labels=["breaker"],
        ),
    )


def _host_views(res: Resilience) -> list[tuple[str, dict[str, Any]]]:
    """``(breaker, host view)`` of the breakers that share with the host."""
    views = []
    for breaker in res.breakers:
        host = breaker.metrics().get("host")
        if host is not None and host.get("shared"):
            views.append((breaker.name, host))
    return sorted(views, key=lambda item: item[0])


def _add_host_view(families: tuple[Any, ...], name: str, view: dict[str, Any]) -> None:
    processes, open_processes, host_open, opened_by = families
    processes.add_metric([name], view["processes"])
    open_processes.add_metric([name], view["open_processes"])
    host_open.add_metric([name], 1 if view["state"] == "open" else 0)
    opened_by.add_metric([name], view["opened_by"] or 0)


def _label(flag: bool) -> str:
    return "true" if flag else "false"


def register_metrics(
    registry: CollectorRegistry | None = None, resilience: Resilience | None = None
) -> ResilienceCollector:
    """Add a :class:`ResilienceCollector` to ``registry`` (default: prometheus_client's
    global ``REGISTRY``, the one your own ``/metrics`` already serves)."""
    from prometheus_client import REGISTRY

    collector = ResilienceCollector(resilience)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


def private_registry(resilience: Resilience | None = None) -> CollectorRegistry:
    """A fresh registry holding only the resilience collector (what ``/metrics`` serves)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    register_metrics(registry, resilience)
    return registry


def render_metrics(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """``(body, content_type)`` for a scrape, in the format the ``Accept`` header asks for
    (OpenMetrics or the classic text format)."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type

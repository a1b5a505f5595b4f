"""The outage drill: freeze a cache server under a steady load and watch the breaker work.

This module runs the phases; its options are in ``options`` and the live display in
``progress``. Where the outage happens (a private server, the in-process fault
injector, or a server of yours that is only observed) is in ``targets``; what was
measured and its text report in ``report``.

Phases with a server it controls: warm-up, hang (server frozen until the breaker opens),
open (still frozen), thaw (server back, breaker still open until its probe time),
half-open (probes), closed. The load is paced (``rate`` operations per second, one
worker), so every phase offers the same demand and the "without the breaker"
comparison counts operations that real callers would really have made.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import pybreaker

from tasker_resilience._operations.drill.cost import outage_cost
from tasker_resilience._operations.drill.options import DrillOptions
from tasker_resilience._operations.drill.progress import Progress
from tasker_resilience._operations.drill.report import DrillReport, PhaseResult, format_report
from tasker_resilience._operations.drill.targets import (
    IN_PROCESS,
    OBSERVE,
    DrillError,
    Target,
    check_reachable,
    choose_target,
)

if TYPE_CHECKING:
    from tasker_resilience._breakers.breaker import Breaker
    from tasker_resilience._resilience import Resilience

__all__ = [
    "IN_PROCESS",
    "DrillError",
    "DrillOptions",
    "DrillReport",
    "PhaseResult",
    "Progress",
    "check_reachable",
    "format_report",
    "run_drill",
    "run_on_target",
]

FROZEN_PHASES: Final = ("hang", "open")
"""Phases during which the server does not answer at all."""


# --- running ---------------------------------------------------------------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class _TransitionListener(pybreaker.CircuitBreakerListener):
    """Records transitions; printing happens in the drill loop, not under the breaker's lock."""

    def __init__(self, record: Callable[[str, str], None]) -> None:
        self._record = record

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._record(getattr(old_state, "name", None) or "new", new_state.name)


def _stats_totals(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    get = stats.get("get", {})
    return {
        "hits": get.get("hit", 0),
        "misses": get.get("miss", 0),
        "stored": stats.get("set", {}).get("ok", 0),
        "skipped": sum(outcomes.get("skipped_open", 0) for outcomes in stats.values()),
        "errors": sum(outcomes.get("error", 0) for outcomes in stats.values()),
    }


class _Drill:
    def __init__(
        self, options: DrillOptions, target: Target, res: Resilience, progress: Progress
    ) -> None:
        self.options = options
        self.target = target
        self.res = res
        self.progress = progress
        self.breaker: Breaker = res.breakers.get("cache")
        self.started = time.perf_counter()
        self.transitions: list[dict[str, Any]] = []
        self._reported_transitions = 0
        self._op = 0
        self._interval = 1.0 / options.rate
        self._next_at = time.perf_counter()
        self.breaker.add_listener(_TransitionListener(self._on_transition))

    def _on_transition(self, old: str, new: str) -> None:
        self.transitions.append(
            {
                "at_seconds": round(time.perf_counter() - self.started, 3),
                "from": old,
                "to": new,
                "failure_count": self.breaker.metrics()["failure_count"],
            }
        )

    def _report_transitions(self) -> None:
        for entry in self.transitions[self._reported_transitions :]:
            why = (
                " (probe failed)" if entry["from"] == "half-open" and entry["to"] == "open" else ""
            )
            self.progress.event(f"breaker 'cache': {entry['from']} -> {entry['to']}{why}")
        self._reported_transitions = len(self.transitions)

    def _wait_for_slot(self) -> None:
        """Sleep until the paced load's next operation is due."""
        now = time.perf_counter()
        if now < self._next_at:
            time.sleep(self._next_at - now)

    def _one_operation(self) -> float:
        """Run the due cache call (80 % get, 20 % set); returns its latency."""
        # No catch-up burst after a slow call: a caller that waited is a caller lost.
        self._next_at = max(self._next_at + self._interval, time.perf_counter())
        index = self._op
        self._op += 1
        key = f"drill:{index % 64}"
        cache = self.res.cache
        started = time.perf_counter()
        if index % 5 == 4:
            cache.set(key, {"n": index}, ttl=60)
        else:
            cache.get(key)
        return time.perf_counter() - started

    def phase(
        self, name: str, until: Callable[[float], bool], *, limit: float | None = None
    ) -> PhaseResult:
        """Run the load until ``until(seconds_in_phase)`` or ``limit`` seconds pass."""
        result = PhaseResult(name)
        latencies: list[float] = []
        before = _stats_totals(self.res.cache.stats())
        started = time.perf_counter()
        while True:
            # Wait first, decide after: the breaker's state may change while we sleep
            # (an open timeout elapsing), and the call must land in the phase it belongs to.
            self._wait_for_slot()
            elapsed = time.perf_counter() - started
            if until(elapsed):
                break
            if limit is not None and elapsed >= limit:
                result.reached = False
                self.progress.event(f"{name}: gave up after {elapsed:.1f}s")
                break
            latencies.append(self._one_operation())
            self._report_transitions()
            self.progress.status(
                name, len(latencies), self.breaker.state, self.breaker.retry_after_seconds
            )
        self._report_transitions()
        after = _stats_totals(self.res.cache.stats())
        result.seconds = round(time.perf_counter() - started, 3)
        result.operations = len(latencies)
        result.hits = after["hits"] - before["hits"]
        result.misses = after["misses"] - before["misses"]
        result.stored = after["stored"] - before["stored"]
        result.skipped = after["skipped"] - before["skipped"]
        result.errors = after["errors"] - before["errors"]
        result.waited_seconds = round(sum(latencies), 3)
        slow = self.options.slow_call_seconds
        if slow:
            result.slow = sum(latency > slow for latency in latencies)
        if latencies:
            latencies.sort()
            result.p50_ms = round(_percentile(latencies, 0.50) * 1000, 3)
            result.p99_ms = round(_percentile(latencies, 0.99) * 1000, 3)
            result.max_ms = round(latencies[-1] * 1000, 3)
        result.breaker_state = self.breaker.state
        return result


@contextmanager
def _private_resilience(options: DrillOptions, target: Target) -> Iterator[Resilience]:
    from tasker_resilience._config.layers import deep_merge
    from tasker_resilience._resilience import configure

    breaker: dict[str, Any] = {
        "failure_threshold": options.failure_threshold,
        "timeout_seconds": options.open_timeout,
        "success_threshold": options.success_threshold,
        **_rate_rules(options),
    }
    redis: dict[str, Any] = {
        "socket_timeout_seconds": options.socket_timeout,
        "connect_timeout_seconds": options.connect_timeout,
    }
    if options.probe_timeout is not None:
        redis["probe_socket_timeout_seconds"] = options.probe_timeout
    overrides = {
        "common": {
            "circuit_breakers": {"enabled": True, "component_configs": {"cache": breaker}},
            "cache": deep_merge(
                {
                    "enabled": True,
                    "backend": "redis",
                    "key_prefix": "tasker-drill",
                    "redis": redis,
                },
                target.cache_overrides(),
            ),
        }
    }
    # An empty root: the drill's settings are its own, whatever config/ or settings.toml
    # the current directory holds (TASKER_* variables still apply beneath the overrides).
    with tempfile.TemporaryDirectory(prefix="tasker-drill-") as root:
        res = configure(env="test", overrides=overrides, root=root, install=False)
        try:
            yield res
        finally:
            res.close()


def _rate_rules(options: DrillOptions) -> dict[str, Any]:
    """The cache breaker's keys beyond the seed's, only those the options set."""
    rules: dict[str, Any] = {}
    if options.window_seconds:
        rules.update(
            window_seconds=options.window_seconds,
            minimum_calls=options.minimum_calls,
            slow_call_seconds=options.slow_call_seconds,
        )
        if options.slow_call_seconds:
            rules["slow_call_rate_threshold"] = options.slow_call_rate_threshold
    if options.max_open_timeout is not None:
        rules["max_timeout_seconds"] = options.max_open_timeout
    return rules


def _settings_summary(options: DrillOptions, target: Target) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rate_ops_per_second": options.rate,
        "socket_timeout_seconds": options.socket_timeout,
        "connect_timeout_seconds": options.connect_timeout,
        "failure_threshold": options.failure_threshold,
        "open_timeout_seconds": options.open_timeout,
        "success_threshold": options.success_threshold,
        **_rate_rules(options),
    }
    if options.probe_timeout is not None:
        summary["probe_socket_timeout_seconds"] = options.probe_timeout
    if target.mode == OBSERVE:
        summary["duration_seconds"] = options.duration
    else:
        summary.update(
            warmup_seconds=options.warmup,
            outage_seconds=options.outage,
            cooldown_seconds=options.cooldown,
        )
    return summary


def _measure_raw(
    target: Target, options: DrillOptions, samples: list[tuple[float, str]]
) -> threading.Thread:
    def run() -> None:
        for _ in range(options.raw_samples):
            samples.append(target.raw_call(options))

    thread = threading.Thread(target=run, name="tasker-drill-raw-client", daemon=True)
    thread.start()
    return thread


def _without_breaker(
    report: DrillReport, options: DrillOptions, samples: list[tuple[float, str]]
) -> dict[str, Any]:
    frozen = [phase for phase in report.phases if phase.name in FROZEN_PHASES]
    operations = sum(phase.operations for phase in frozen)
    errors = sum(phase.errors for phase in frozen)
    frozen_seconds = sum(phase.seconds for phase in frozen)
    timed_out = [seconds for seconds, outcome in samples if outcome != "answered"]
    measured = statistics.median(timed_out) if timed_out else None
    return {
        "frozen_seconds": round(frozen_seconds, 3),
        "operations": operations,
        "with_breaker_waited": errors,
        "with_breaker_wait_seconds": round(sum(phase.waited_seconds for phase in frozen), 3),
        "without_breaker_waited": operations,
        "without_breaker_wait_seconds_configured": round(operations * options.socket_timeout, 3),
        "raw_client_samples": [
            {"seconds": round(seconds, 4), "outcome": outcome} for seconds, outcome in samples
        ],
        "raw_client_median_seconds": None if measured is None else round(measured, 4),
        "without_breaker_wait_seconds_measured": (
            None if measured is None else round(operations * measured, 3)
        ),
        "one_worker_max_ops_per_second": round(1.0 / options.socket_timeout, 1),
    }


def _stale_check(res: Resilience, report: DrillReport) -> None:
    value = res.cache.get("drill:stale-check")
    report.stale_read_check = "passed" if value is None else "failed"
    if value is not None:
        report.notes.append(
            "a key deleted while the circuit was open was served after recovery (stale read)"
        )


def _run_controlled(drill: _Drill, report: DrillReport) -> None:
    options, target, breaker, progress = drill.options, drill.target, drill.breaker, drill.progress
    cache = drill.res.cache
    cache.set("drill:stale-check", "before the outage", ttl=300)

    progress.event(f"warm-up: {options.rate:g} ops/s for {options.warmup:g}s")
    report.phases.append(drill.phase("warm-up", lambda t: t >= options.warmup))

    progress.event("hang: server frozen; waiting for the breaker to open")
    samples: list[tuple[float, str]] = []
    target.freeze()
    try:
        report.phases.append(
            drill.phase("hang", lambda t: breaker.state == "open", limit=options.phase_limit)
        )
        report.opened = report.phases[-1].reached
        progress.event(f"open: server still frozen for {options.outage:g}s")
        raw = _measure_raw(target, options, samples)
        # Skipped while open: the provider must remember it and replay it on recovery.
        cache.delete("drill:stale-check")
        report.phases.append(drill.phase("open", lambda t: t >= options.outage))
        raw.join(
            timeout=options.raw_samples * (options.socket_timeout + options.connect_timeout) + 5
        )
    finally:
        target.thaw()
    progress.event("thaw: server running again; the breaker waits for its probe time")
    report.phases.append(
        drill.phase("thaw", lambda t: breaker.state != "open", limit=options.phase_limit)
    )
    report.invalidations_remembered = cache.pending_invalidations()
    progress.event("half-open: probe time reached; the next calls are probes")
    report.phases.append(
        drill.phase("half-open", lambda t: breaker.state == "closed", limit=options.phase_limit)
    )
    report.closed_again = report.phases[-1].reached and breaker.state == "closed"
    progress.event(f"closed: {options.cooldown:g}s of normal load")
    report.phases.append(drill.phase("closed", lambda t: t >= options.cooldown))
    report.without_breaker = _without_breaker(report, options, samples)
    report.outage_cost = outage_cost(report, drill.transitions)
    _stale_check(drill.res, report)


def _run_observed(drill: _Drill, report: DrillReport) -> None:
    options, breaker = drill.options, drill.breaker
    drill.progress.event(
        f"observing for {options.duration:g}s at {options.rate:g} ops/s "
        "(freeze the server yourself, e.g. docker pause, to see the breaker open)"
    )
    deadline = time.perf_counter() + options.duration

    def segment_over(state: str) -> Callable[[float], bool]:
        # One row per stretch of one breaker state, so a pause of your own shows up
        # as closed / open / half-open / closed rows.
        return lambda _: breaker.state != state or time.perf_counter() >= deadline

    while time.perf_counter() < deadline:
        state = breaker.state
        report.phases.append(drill.phase(state, segment_over(state)))
    report.opened = any(entry["to"] == "open" for entry in drill.transitions)
    report.closed_again = breaker.state == "closed"


def run_on_target(
    options: DrillOptions,
    target: Target,
    progress: Progress,
    stage: Callable[[_Drill, DrillReport], None],
) -> DrillReport:
    """Run ``stage`` (the phases) against ``target`` with a private Resilience; the
    target is closed whatever happens. Shared by :func:`run_drill` and the topology
    drills."""
    try:
        report = DrillReport(
            mode=target.mode,
            target=target.description,
            settings=_settings_summary(options, target),
        )
        progress.event(f"target: {target.description}")
        with _private_resilience(options, target) as res:
            drill = _Drill(options, target, res, progress)
            stage(drill, report)
            report.transitions = drill.transitions
    finally:
        target.close()
        progress.done()
    return report


def run_drill(options: DrillOptions, progress: Progress | None = None) -> DrillReport:
    """Run the drill described by ``options``; raises :class:`DrillError` if it cannot."""
    progress = progress or Progress(enabled=False)
    target = choose_target(options, progress)
    stage = _run_observed if target.mode == OBSERVE else _run_controlled
    return run_on_target(options, target, progress, stage)

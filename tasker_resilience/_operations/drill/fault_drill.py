"""``tasker-resilience drill --fault brownout|blackhole|reset|slow-link``: the outage
story through a :class:`~tasker_resilience.testing.FaultProxy` in front of a private
server, and what each phase cost the callers.

Phases (one sequential caller, paced at ``rate`` calls per second, 80 % get, 20 % set):

- ``healthy``: the proxy forwards; the baseline.
- ``noise`` (brownout only): 2 % of replies held 120 ms for 6 s, the background a
  healthy cache has: the breaker must not trip on it.
- ``fault``: the fault switched on, until the breaker opens.
- ``open``: the fault still on for ``outage`` seconds: calls answered at once, probes
  failing (each at the probe budget), the open time growing.
- ``healed``: the fault off, until the breaker closes (its open time, then its probes).
- ``closed``: normal load again; a key deleted during the outage must read as a miss.

The default set-up is the issue's measured one: about 100 calls/s, socket timeout
0.25 s, a 2 s window, ``minimum_calls`` 20, slow calls over 50 ms, slow-call rate 0.5.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pybreaker

from tasker_resilience._operations.drill.report import DrillReport, PhaseResult
from tasker_resilience._operations.drill.runner import (
    DrillOptions,
    Progress,
    _Drill,
    _stale_check,
    run_on_target,
)
from tasker_resilience._operations.drill.targets import DrillError

if TYPE_CHECKING:
    from tasker_resilience.testing.fault_proxy import FaultProxy

__all__ = ["FAULTS", "FAULT_PROXY", "Fault", "fault_drill_options", "run_fault_drill"]

FAULT_PROXY: Final = "fault-proxy"
"""The drill's mode: a private server behind a fault proxy."""

HELD_SECONDS: Final = 0.12
"""How long a brownout holds a reply: under the 0.25 s socket timeout, over 50 ms."""
NOISE_FRACTION: Final = 0.02
NOISE_SECONDS: Final = 6.0
BROWNOUT_FRACTION: Final = 0.6
SLOW_LINK_BYTES_PER_SECOND: Final = 800
"""A congested link: a drill call (about 60 bytes each way) takes about 80 ms."""
STALE_KEY: Final = "drill:stale-check"


@dataclass(frozen=True)
class Fault:
    """One fault the drill can stage: how to switch it on, and what it is."""

    name: str
    description: str
    switch_on: Callable[[FaultProxy], object]
    noise: bool = False
    """Run the ``noise`` phase first (the background that must not trip the breaker)."""


FAULTS: Final = {
    fault.name: fault
    for fault in (
        Fault(
            "brownout",
            f"{BROWNOUT_FRACTION:.0%} of replies held {HELD_SECONDS * 1000:.0f} ms",
            lambda proxy: proxy.latency(HELD_SECONDS, fraction=BROWNOUT_FRACTION),
            noise=True,
        ),
        Fault(
            "blackhole",
            "connections accepted, nothing ever answered",
            lambda proxy: proxy.blackhole(),
        ),
        Fault("reset", "every connection reset (TCP RST)", lambda proxy: proxy.reset_connections()),
        Fault(
            "slow-link",
            f"a {SLOW_LINK_BYTES_PER_SECOND} bytes/s link each way",
            lambda proxy: proxy.bandwidth(SLOW_LINK_BYTES_PER_SECOND),
        ),
    )
}

_DEFAULTS: Final[dict[str, Any]] = {
    "rate": 100.0,
    "warmup": 2.0,
    "outage": 3.0,
    "cooldown": 1.5,
    "socket_timeout": 0.25,
    "connect_timeout": 0.25,
    "failure_threshold": 5,
    "open_timeout": 1.0,
    "success_threshold": 2,
    "window_seconds": 2.0,
    "minimum_calls": 20,
    "slow_call_seconds": 0.05,
    "slow_call_rate_threshold": 0.5,
    "max_open_timeout": 4.0,
    "probe_timeout": 0.1,
}


def fault_drill_options(**given: Any) -> DrillOptions:
    """The fault drill's options: its own defaults (the issue's measured set-up), then
    ``given`` (``DrillOptions`` fields)."""
    return DrillOptions(**{**_DEFAULTS, **given})


class _FaultTarget:
    """A private server behind a :class:`FaultProxy`; both stopped in :meth:`close`."""

    mode = FAULT_PROXY

    def __init__(self, binary: str | None) -> None:
        from tasker_resilience._operations.drill.local_server import (
            LocalServer,
            ServerStartError,
        )
        from tasker_resilience.testing.fault_proxy import FaultProxy

        try:
            self.server = LocalServer(binary).start()
        except ServerStartError as exc:
            raise DrillError(f"--fault needs a private server: {exc}") from None
        self.proxy = FaultProxy(self.server.url, seed=1).start()
        host, port = self.proxy.address
        self.description = (
            f"{self.server.kind} on 127.0.0.1:{self.server.port}, a private server started "
            f"by the drill, behind a fault proxy on {host}:{port}"
        )

    def cache_overrides(self) -> dict[str, Any]:
        return {"redis": {"url": self.proxy.url}}

    def freeze(self) -> None:
        self.proxy.blackhole()

    def thaw(self) -> None:
        self.proxy.heal()

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        raise NotImplementedError("the fault drill makes no raw calls")

    def close(self) -> None:
        self.proxy.stop()
        self.server.stop()


class _OpenTimes(pybreaker.CircuitBreakerListener):
    """The open time of each open, as the breaker sets it (growing after failed probes)."""

    def __init__(self, drill: _Drill) -> None:
        self.drill = drill
        self.seconds: list[float] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        if new_state.name == "open":
            self.seconds.append(self.drill.breaker.open_seconds or 0.0)


def _since(drill: _Drill, mark: float, to: str) -> float | None:
    """Seconds from ``mark`` (drill time) to the first transition to ``to`` after it."""
    for entry in drill.transitions:
        at: float = entry["at_seconds"]
        if entry["to"] == to and at >= mark:
            return round(at - mark, 3)
    return None


def _now(drill: _Drill) -> float:
    return time.perf_counter() - drill.started


def _mean_ms(phase: PhaseResult) -> float:
    return phase.waited_seconds / phase.operations * 1000 if phase.operations else 0.0


def _run_fault(drill: _Drill, report: DrillReport, target: _FaultTarget, fault: Fault) -> None:
    options, breaker, progress, proxy = drill.options, drill.breaker, drill.progress, target.proxy
    opens = _OpenTimes(drill)
    breaker.add_listener(opens)
    drill.res.cache.set(STALE_KEY, "before the fault", ttl=300)
    progress.event(f"healthy: {options.rate:g} calls/s for {options.warmup:g}s")
    healthy = drill.phase("healthy", lambda t: t >= options.warmup)
    report.phases.append(healthy)
    summary = [
        f"fault: {fault.name} ({fault.description})",
        f"healthy: {healthy.operations} calls, mean {_mean_ms(healthy):.1f} ms, "
        f"{healthy.slow} slow",
    ]
    if fault.noise:
        proxy.latency(HELD_SECONDS, fraction=NOISE_FRACTION)
        progress.event(
            f"noise: {NOISE_FRACTION:.0%} of replies held {HELD_SECONDS * 1000:.0f} ms for "
            f"{NOISE_SECONDS:g}s (the breaker must stay closed)"
        )
        noise = drill.phase("noise", lambda t: t >= NOISE_SECONDS or breaker.state != "closed")
        report.phases.append(noise)
        share = noise.slow / noise.operations if noise.operations else 0.0
        summary.append(
            f"noise: {noise.operations} calls, {noise.slow} slow ({share:.1%}), breaker "
            f"{noise.breaker_state}"
        )
        if noise.breaker_state != "closed":
            report.problems.append("the breaker opened on background noise")

    onset = _now(drill)
    fault.switch_on(proxy)
    progress.event(f"fault: {fault.description}; waiting for the breaker to open")
    hit = drill.phase("fault", lambda t: breaker.state == "open", limit=options.phase_limit)
    report.phases.append(hit)
    report.opened = hit.reached
    opened_after = _since(drill, onset, "open")
    reason = breaker.opened_reason
    summary.append(
        f"fault until open: opened {opened_after}s after the onset ({reason}), after "
        f"{hit.operations} calls: {hit.slow} slow, {hit.errors} failed, "
        f"{hit.waited_seconds:.2f}s waited in all (mean {_mean_ms(hit):.1f} ms a call)"
    )

    drill.res.cache.delete(STALE_KEY)  # skipped while open: remembered, replayed later
    progress.event(f"open: the fault stays on for {options.outage:g}s")
    still = drill.phase("open", lambda t: t >= options.outage)
    report.phases.append(still)
    saved = still.skipped * _mean_ms(hit) / 1000
    grown = ", ".join(f"{seconds:.2f}s" for seconds in opens.seconds)
    summary.append(
        f"open, fault still on: {still.skipped} of {still.operations} calls answered at once "
        f"(about {saved:.1f}s of waiting saved at the fault's mean cost); "
        f"{len(opens.seconds) - 1} probes failed, {still.waited_seconds:.2f}s waited in all; "
        f"open times: {grown}"
    )

    open_time = breaker.open_seconds  # None: closed again during the fault (see below)
    healed_at = _now(drill)
    proxy.heal()
    progress.event("healed: the fault is off; waiting for the breaker to close")
    healed = drill.phase("healed", lambda t: breaker.state == "closed", limit=options.phase_limit)
    report.phases.append(healed)
    report.closed_again = healed.reached and breaker.state == "closed"
    report.invalidations_remembered = drill.res.cache.pending_invalidations()
    closed_after = _since(drill, healed_at, "closed")
    if open_time is None:
        # Probes can pass during a partial fault (a brownout's fast replies): the
        # circuit closed, and the rules then judged a fresh window.
        summary.append(
            "healed: the breaker was closed when the fault ended (its probes had passed "
            "during the fault; a larger success_threshold makes that rarer)"
        )
    else:
        summary.append(
            f"healed: closed {closed_after}s after the fault ended (open time then "
            f"{open_time:.2f}s, then {options.success_threshold} successful probes)"
        )
    progress.event(f"closed: {options.cooldown:g}s of normal load")
    report.phases.append(drill.phase("closed", lambda t: t >= options.cooldown))
    _stale_check(drill.res, report)
    summary.append(f"stale-read check (key deleted during the outage): {report.stale_read_check}")
    report.summary = summary
    report.measured.update(
        fault=fault.name,
        opened_after_seconds=opened_after,
        opened_reason=reason,
        slow_calls_until_open=hit.slow,
        open_seconds_seen=opens.seconds,
        open_seconds_at_heal=open_time,
        closed_after_heal_seconds=closed_after,
    )


def run_fault_drill(
    options: DrillOptions, fault: str, progress: Progress | None = None
) -> DrillReport:
    """Run the fault drill (``fault``: one of :data:`FAULTS`) on a private server behind
    a fault proxy; raises :class:`DrillError` if it cannot."""
    chosen = FAULTS.get(fault)
    if chosen is None:
        raise DrillError(f"--fault must be one of {', '.join(FAULTS)}, not {fault!r}")
    progress = progress or Progress(enabled=False)
    target = _FaultTarget(options.server_binary)

    def stage(drill: _Drill, report: DrillReport) -> None:
        _run_fault(drill, report, target, chosen)

    return run_on_target(options, target, progress, stage)

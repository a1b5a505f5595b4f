"""What the drill measured and how it reads: the phase results, the report and its text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from tasker_resilience._operations.drill.targets import LOCAL_SERVER, OBSERVE

__all__ = ["DrillReport", "PhaseResult", "format_report"]


@dataclass
class PhaseResult:
    """What one phase measured."""

    name: str
    seconds: float = 0.0
    operations: int = 0
    hits: int = 0
    misses: int = 0
    stored: int = 0
    """Sets the backend accepted."""
    skipped: int = 0
    """Answered at once without a network call (circuit open)."""
    errors: int = 0
    """Backend failures: each waited for a timeout (or a refused connection)."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    waited_seconds: float = 0.0
    """Sum of all operation latencies in the phase."""
    slow: int = 0
    """Operations slower than the breaker's ``slow_call_seconds`` (0 when it is off)."""
    breaker_state: str = "closed"
    """The cache breaker's state when the phase ended."""
    reached: bool = True
    """False when the phase gave up waiting for the breaker."""


@dataclass
class DrillReport:
    """Everything the drill measured; ``asdict`` gives the ``--json`` output."""

    mode: str
    target: str
    settings: dict[str, Any]
    phases: list[PhaseResult] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    without_breaker: dict[str, Any] | None = None
    stale_read_check: str = "not run"
    invalidations_remembered: dict[str, int | bool] | None = None
    """Deletes and sets skipped during the outage, held for replay when it ends."""
    opened: bool = False
    closed_again: bool = False
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    """Topology drills: what each outage cost, in place of the single-server comparison
    (``--json`` gives the comparison's lines here for the other drills)."""
    outage_cost: dict[str, Any] | None = None
    """One worker's cost of the staged outage, in the terms ``explain`` predicts
    (``drill/cost.py``)."""
    measured: dict[str, Any] = field(default_factory=dict)
    """Figures beyond the phase table (the fault drill: time to open, to close, why)."""
    problems: list[str] = field(default_factory=list)
    """What else went wrong (e.g. a fault drill's breaker tripped on background noise)."""

    @property
    def ok(self) -> bool:
        """Did the drill show what it set out to show?"""
        if self.mode == OBSERVE:
            return True
        return (
            self.opened
            and self.closed_again
            and self.stale_read_check != "failed"
            and not self.problems
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        # The lines the text report prints under the table: never an empty list.
        data["summary"] = self.summary or _comparison_lines(self)
        return data


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


_COLUMNS: Final = (
    ("phase", "<", 9),
    ("seconds", ">", 7),
    ("ops", ">", 6),
    ("hits", ">", 6),
    ("misses", ">", 6),
    ("stored", ">", 6),
    ("skipped", ">", 7),
    ("errors", ">", 6),
    ("p50 ms", ">", 8),
    ("p99 ms", ">", 8),
    ("max ms", ">", 8),
    ("breaker", "<", 9),
)


def _row(cells: list[str]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def format_report(report: DrillReport) -> str:
    """The human-readable report: the phase table and the comparison."""
    s = report.settings
    lines = [
        f"tasker-resilience drill ({report.mode}): {report.target}",
        f"load: {s['rate_ops_per_second']:g} ops/s (80% get, 20% set), one worker; "
        f"socket timeout {s['socket_timeout_seconds']:g}s; breaker opens after "
        f"{s['failure_threshold']} failures, probes after {s['open_timeout_seconds']:g}s, "
        f"closes after {s['success_threshold']} successful probes",
        "",
        _row([name for name, _, _ in _COLUMNS]),
    ]
    for phase in report.phases:
        state = phase.breaker_state if phase.reached else f"{phase.breaker_state} (gave up)"
        lines.append(
            _row(
                [
                    phase.name,
                    f"{phase.seconds:.2f}",
                    str(phase.operations),
                    str(phase.hits),
                    str(phase.misses),
                    str(phase.stored),
                    str(phase.skipped),
                    str(phase.errors),
                    _ms(phase.p50_ms),
                    _ms(phase.p99_ms),
                    _ms(phase.max_ms),
                    state,
                ]
            )
        )
    lines.append("")
    lines.extend(report.summary or _comparison_lines(report))
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append(_verdict(report))
    return "\n".join(lines)


def _comparison_lines(report: DrillReport) -> list[str]:
    cmp = report.without_breaker
    if cmp is None:
        return [
            "no outage was staged: the drill does not freeze a server it did not start.",
            f"breaker transitions seen: {len(report.transitions)}",
        ]
    timeout = report.settings["socket_timeout_seconds"]
    lines = [
        f"Same outage without the breaker (server frozen {cmp['frozen_seconds']:.2f}s, "
        "phases hang + open):",
        f"  with the breaker:    {cmp['with_breaker_waited']} of {cmp['operations']} operations "
        f"waited for a timeout; {cmp['with_breaker_wait_seconds']:.2f}s spent waiting in all",
        f"  without the breaker: all {cmp['without_breaker_waited']} would have waited: "
        f"{cmp['operations']} x {timeout:g}s (configured) = "
        f"{cmp['without_breaker_wait_seconds_configured']:.1f}s",
    ]
    measured = cmp["raw_client_median_seconds"]
    samples = cmp["raw_client_samples"]
    if measured is not None:
        client = "plain redis-py client" if report.mode == LOCAL_SERVER else "injected fault"
        lines.append(
            f"                       {cmp['operations']} x {measured:.3f}s (measured: median of "
            f"{len(samples)} calls, {client}, same timeout, no retries) = "
            f"{cmp['without_breaker_wait_seconds_measured']:.1f}s"
        )
    else:
        lines.append(
            f"                       (the {len(samples)} measured raw calls did not time out: "
            f"{samples})"
        )
    lines.append(
        f"  one worker making one call at a time could finish at most "
        f"{cmp['one_worker_max_ops_per_second']:g} ops/s while the server hangs "
        f"(offered: {report.settings['rate_ops_per_second']:g} ops/s)"
    )
    thaw = next((phase for phase in report.phases if phase.name == "thaw"), None)
    if thaw is not None and thaw.skipped:
        lines.append(
            f"cost of the breaker: {thaw.skipped} operations answered as misses in the "
            f"{thaw.seconds:.2f}s between thaw and the next probe"
        )
    remembered = report.invalidations_remembered
    if remembered is not None:
        overflow = " (overflowed: the whole key prefix is dropped instead)" * bool(
            remembered["overflowed"]
        )
        lines.append(
            f"writes skipped while the circuit was open: {remembered['pending']} keys remembered"
            f"{overflow}, replayed by the first probe before it read"
        )
    lines.append(f"stale-read check (key deleted during the outage): {report.stale_read_check}")
    return lines


def _verdict(report: DrillReport) -> str:
    if report.mode == OBSERVE:
        return "result: observed (no outage staged)"
    if report.ok:
        return "result: PASS: the breaker opened during the outage and closed again after it"
    missing = []
    if not report.opened:
        missing.append("the breaker did not open")
    if not report.closed_again:
        missing.append("the breaker did not close again")
    if report.stale_read_check == "failed":
        missing.append("a stale value was served")
    missing.extend(report.problems)
    return f"result: FAIL: {'; '.join(missing)}"

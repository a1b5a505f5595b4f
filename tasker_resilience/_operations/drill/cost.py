"""What the staged outage cost one worker, in the terms ``tasker-resilience explain``
predicts (``outage_cost`` in ``drill --json``): the onset, each open period while the
server stayed frozen, and the slowest call.

- onset: the ``hang`` phase (it starts when the server is frozen and ends at the trip):
  its failed calls, the seconds they waited, its length;
- open periods: from the breaker's transitions. A period runs from one opening to the
  next one caused by a failed probe (``open -> half-open -> open``); its probe is the
  time between the two last transitions. Only complete periods count, so the figures do
  not depend on where the outage happened to end;
- the slowest call of the frozen phases (``hang``, ``open``).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasker_resilience._operations.drill.report import DrillReport

__all__ = ["outage_cost"]

_FROZEN = ("hang", "open")


def _open_periods(transitions: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(period seconds, probe seconds)`` of each open period ended by a failed probe."""
    periods = []
    for first, probe, reopen in zip(transitions, transitions[1:], transitions[2:], strict=False):
        if (
            first["to"] == "open"
            and (probe["from"], probe["to"]) == ("open", "half-open")
            and (reopen["from"], reopen["to"]) == ("half-open", "open")
        ):
            periods.append(
                (
                    reopen["at_seconds"] - first["at_seconds"],
                    reopen["at_seconds"] - probe["at_seconds"],
                )
            )
    return periods


def outage_cost(report: DrillReport, transitions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The block for ``report``'s phases and the breaker's ``transitions`` so far, or
    None when no outage was staged (no ``hang`` phase)."""
    hang = next((phase for phase in report.phases if phase.name == "hang"), None)
    if hang is None:
        return None
    periods = _open_periods(transitions)
    period_seconds = sum(period for period, _ in periods)
    frozen_max = [phase.max_ms for phase in report.phases if phase.name in _FROZEN and phase.max_ms]
    return {
        "onset": {
            "hung_calls": hang.errors,
            "worker_seconds": hang.waited_seconds,
            "time_to_trip_seconds": hang.seconds,
        },
        "open_periods": {
            "complete": len(periods),
            "period_seconds": (
                round(statistics.mean(p for p, _ in periods), 4) if periods else None
            ),
            "probe_seconds": (
                round(statistics.mean(p for _, p in periods), 4) if periods else None
            ),
            "half_open_share": (
                round(sum(p for _, p in periods) / period_seconds, 4) if period_seconds else None
            ),
        },
        "worst_call_seconds": round(max(frozen_max) / 1000, 4) if frozen_max else None,
    }

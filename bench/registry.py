"""What a case module declares so ``bench/run.py`` runs it and ``report.py`` reports it.

A module ``bench/cases_<name>.py`` that defines ``STAGES`` (a tuple of :class:`Stage`)
is found by ``run.py`` on its own: no edit to ``run.py`` or ``report.py`` is needed to
add a case. Each stage brings:

- ``run(ctx) -> (figures, details)``: ``figures`` are the top-level keys it adds to
  ``bench/results.json``, ``details`` go under ``results["details"]``;
- ``figures`` / ``extra_figures``: the rows of the table and of ``docs/benchmarks.md``
  (with the meaning of each key), with or without a goal;
- ``goals``: each compares one figure (a dotted path into nested figures, e.g.
  ``"closed_get_overhead_us.shared.sync"``) with a limit; ``results["goals"]`` holds
  the verdicts;
- ``parameters``: rounds and batch sizes per profile (``"full"``, ``"quick"``).

Example (``bench/cases_example.py``)::

    from bench.registry import Figure, Goal, Stage, StageContext

    def _run(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"example_us": 1.0}, {"example": {"rounds": ctx.params["rounds"]}}

    STAGES = (
        Stage(
            name="example",
            run=_run,
            order=50,
            parameters={"full": {"rounds": 100}, "quick": {"rounds": 5}},
            figures=(Figure("example_us", "µs", "what it measures"),),
            goals=(Goal("example_us", "<=", 2.0, "why this limit"),),
        ),
    )
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "Goal", "Stage", "StageContext", "lookup"]


@dataclass(frozen=True)
class Figure:
    """One row of the results table: a key of ``results.json`` and what it means."""

    key: str
    unit: str
    meaning: str


def lookup(results: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``"a.b"`` is ``results["a"]["b"]``); None if absent."""
    value: Any = results
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class Goal:
    """``lookup(results, key) <op> limit``; a missing value is a missed goal."""

    key: str
    op: str
    limit: float
    why: str

    @property
    def text(self) -> str:
        return f"{self.op} {self.limit:g}"

    def holds(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = {"<=": operator.le, ">=": operator.ge}[self.op]
        return compare(value, self.limit)


@dataclass(frozen=True)
class StageContext:
    """What a stage's ``run`` receives."""

    params: dict[str, int]
    """This stage's parameters for the chosen profile."""
    profile: str
    """``"full"`` or ``"quick"``."""
    server_binary: str
    """The server binary to start privately (``--server``), e.g. ``"redis-server"``."""
    root: Path
    """The repository root (for ``tr.configure(root=...)``)."""


Runner = Callable[[StageContext], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class Stage:
    """One part of the suite, run by ``run.py`` in ascending ``order``."""

    name: str
    run: Runner
    order: int = 100
    parameters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    figures: tuple[Figure, ...] = ()
    extra_figures: tuple[Figure, ...] = ()
    goals: tuple[Goal, ...] = ()

    def params(self, profile: str) -> dict[str, int]:
        return dict(self.parameters.get(profile, self.parameters.get("full", {})))

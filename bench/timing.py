"""Measurement primitives: interleaved rounds, per-call batches, medians.

Why interleave: on a noisy 2-core VM absolute times drift by tens of percent from
one second to the next (other processes, the redis-server sharing the cores). Every
case of a comparison is timed in short batches, one after another, in a rotating
order, round after round. Drift then hits all cases alike, the ratio of the cases
is taken per round, and the median over many rounds is the figure.

A batch calls one function ``n`` times with one positional argument from a tight
``for _ in repeat(None, n)`` loop (what ``timeit`` does): no lambda, no ``*args``,
so the loop adds the same few tens of nanoseconds to every case.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

__all__ = [
    "Case",
    "Comparison",
    "acompare",
    "arun_batch",
    "collected_first",
    "compare",
    "quartiles",
    "round_order",
    "run_batch",
]

SyncFn = Callable[[Any], Any]
AsyncFn = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Case:
    """One contestant: ``fn(arg)`` is the call being timed."""

    fn: Callable[[Any], Any]
    arg: Any = None


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare` / :func:`acompare`."""

    per_call_us: dict[str, float]
    """Median over rounds of each case's mean per-call time in its batch."""
    ratios: dict[str, float]
    """Median over rounds of (case / baseline) within the same round."""
    ratio_iqr: dict[str, tuple[float, float]]
    """25th and 75th percentile of the per-round ratios: how steady the figure is."""
    baseline: str
    rounds: int
    batch: int
    samples: dict[str, list[float]] = field(repr=False, compare=False, default_factory=dict)
    """Per-round mean per-call µs of each case, in round order."""

    def ratio(self, name: str, base: str) -> float:
        """Median over rounds of ``name / base`` within the same round."""
        return statistics.median(
            a / b for a, b in zip(self.samples[name], self.samples[base], strict=True)
        )

    def difference(self, name: str, base: str) -> float:
        """Median over rounds of ``name - base`` µs per call within the same round."""
        return statistics.median(
            a - b for a, b in zip(self.samples[name], self.samples[base], strict=True)
        )

    def detail(self) -> dict[str, Any]:
        """JSON-ready description for ``results.json``."""
        return {
            "per_call_us": {k: round(v, 4) for k, v in self.per_call_us.items()},
            "ratio_vs_" + self.baseline: {k: round(v, 4) for k, v in self.ratios.items()},
            "ratio_iqr": {
                k: [round(lo, 4), round(hi, 4)] for k, (lo, hi) in self.ratio_iqr.items()
            },
            "rounds": self.rounds,
            "batch": self.batch,
        }


@contextmanager
def collected_first() -> Iterator[None]:
    """Collect before a measurement, and leave the cyclic GC on during it: a path that
    leaves reference cycles behind (an exception per call, say) pays for their
    collection inside its own figure, as it would in a service."""
    gc.collect()
    yield


def run_batch(fn: SyncFn, arg: Any, n: int) -> float:
    """Mean microseconds per call of ``fn(arg)`` over ``n`` back-to-back calls."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in repeat(None, n):
        fn(arg)
    return (clock() - start) / n / 1000.0


async def arun_batch(fn: AsyncFn, arg: Any, n: int) -> float:
    """Mean microseconds per ``await fn(arg)`` over ``n`` back-to-back awaits."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in repeat(None, n):
        await fn(arg)
    return (clock() - start) / n / 1000.0


def quartiles(values: list[float]) -> tuple[float, float]:
    """25th and 75th percentile (``values`` needs at least two items)."""
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def round_order(names: list[str], round_no: int) -> list[str]:
    # A fresh order every round (seeded: runs are repeatable) so no case always runs
    # first or always after the same neighbour. A plain rotation left a ~1% bias
    # between two identical cases (an A/A test); shuffling brings it under 0.3%.
    return random.Random(round_no).sample(names, len(names))


def _summarise(
    samples: Mapping[str, list[float]], baseline: str, rounds: int, batch: int
) -> Comparison:
    base = samples[baseline]
    per_round = {
        name: [value / base[i] for i, value in enumerate(values)]
        for name, values in samples.items()
    }
    return Comparison(
        per_call_us={name: statistics.median(values) for name, values in samples.items()},
        ratios={name: statistics.median(r) for name, r in per_round.items()},
        ratio_iqr={name: quartiles(r) for name, r in per_round.items()},
        baseline=baseline,
        rounds=rounds,
        batch=batch,
        samples={name: list(values) for name, values in samples.items()},
    )


def compare(
    cases: Mapping[str, Case], *, baseline: str, rounds: int, batch: int, warmup: int = 1
) -> Comparison:
    """Time every case in ``rounds`` interleaved rounds of ``batch`` calls each."""
    if rounds < 2 or baseline not in cases:
        raise ValueError("compare needs >= 2 rounds and a baseline among the cases")
    names = list(cases)
    for case in cases.values():
        run_batch(case.fn, case.arg, max(1, batch * warmup))
    samples: dict[str, list[float]] = {name: [] for name in names}
    with collected_first():
        for round_no in range(rounds):
            for name in round_order(names, round_no):
                case = cases[name]
                samples[name].append(run_batch(case.fn, case.arg, batch))
    return _summarise(samples, baseline, rounds, batch)


async def acompare(
    cases: Mapping[str, Case], *, baseline: str, rounds: int, batch: int, warmup: int = 1
) -> Comparison:
    """:func:`compare` for coroutine functions, awaited on the running loop."""
    if rounds < 2 or baseline not in cases:
        raise ValueError("acompare needs >= 2 rounds and a baseline among the cases")
    names = list(cases)
    for case in cases.values():
        await arun_batch(case.fn, case.arg, max(1, batch * warmup))
    samples: dict[str, list[float]] = {name: [] for name in names}
    with collected_first():
        for round_no in range(rounds):
            for name in round_order(names, round_no):
                case = cases[name]
                samples[name].append(await arun_batch(case.fn, case.arg, batch))
    return _summarise(samples, baseline, rounds, batch)

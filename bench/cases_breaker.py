"""The breaker on its own: rejecting while open, and 32 threads through one guarded call.

pybreaker 1.4 is the reference: our ``Breaker`` keeps pybreaker's state machine
but owns the call path, so its rejections and its concurrency are compared with
``pybreaker.CircuitBreaker.call`` in the same run.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pybreaker

from tasker_resilience import Resilience, breaker_guarded

from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, round_order

__all__ = [
    "REJECT_BREAKER",
    "STAGES",
    "THREADS",
    "WORK_SECONDS",
    "ThreadResults",
    "circuitbreaker_fallback_case",
    "guarded_fallback_case",
    "guarded_reject_case",
    "measure_threads",
    "pybreaker_reject_case",
]

THREADS = 32
WORK_SECONDS = 0.02
"""The guarded function's own cost: a 20 ms wait that releases the GIL, like I/O."""


REJECT_BREAKER = "bench-reject"
"""Configure it with a long ``timeout_seconds``: it must stay open while timed."""


def _work(_: object = None) -> None:
    time.sleep(WORK_SECONDS)


def _never_called(_: object = None) -> None:
    # Behind an open breaker this never runs; if it did, the figure would be wrong.
    raise AssertionError("a rejected call ran")


def pybreaker_reject_case() -> Case:
    """pybreaker, open, rejecting a call; the ``try`` turns the rejection into a miss
    the way a caller must to get the provider's "open means None" behaviour."""
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    cb.open()

    def call(arg: object) -> object:
        try:
            return cb.call(_never_called, arg)
        except pybreaker.CircuitBreakerError:
            return None

    if call(None) is not None or cb.current_state != pybreaker.STATE_OPEN:
        raise RuntimeError("pybreaker did not reject while open")
    return Case(call, None)


def guarded_reject_case(res: Resilience) -> Case:
    """``@breaker_guarded(fallback=None)`` on a forced-open breaker: the same job."""
    guarded = breaker_guarded(REJECT_BREAKER, fallback=None, resilience=res)(_never_called)
    handle = guarded.breaker  # type: ignore[attr-defined]  # set by the decorator
    if handle.get().config.timeout_seconds < 60:
        raise RuntimeError(f"configure {REJECT_BREAKER!r} with a long timeout_seconds")
    handle.force_open()
    if not handle.is_open:
        raise RuntimeError("the forced-open breaker is not open")
    return Case(guarded, None)


def _fallback(_: object = None) -> None:
    return None


def guarded_fallback_case(res: Resilience) -> Case:
    """``@breaker_guarded(fallback=<function>)`` on a forced-open breaker: the fallback
    answers, called with the call's arguments (what ``circuitbreaker`` does)."""
    guarded = breaker_guarded(REJECT_BREAKER, fallback=_fallback, resilience=res)(_never_called)
    handle = guarded.breaker  # type: ignore[attr-defined]  # set by the decorator
    handle.force_open()
    if guarded(None) is not None or not handle.is_open:
        raise RuntimeError("the guarded call was not answered by its fallback")
    return Case(guarded, None)


def circuitbreaker_fallback_case() -> Case:
    """The ``circuitbreaker`` package's decorator, open, answering with its
    ``fallback_function``."""
    from circuitbreaker import STATE_OPEN, CircuitBreaker

    cb = CircuitBreaker(
        failure_threshold=1,
        recovery_timeout=3600,
        fallback_function=_fallback,
        name="bench-circuitbreaker",
    )
    guarded = cb(_never_called)
    with contextlib.suppress(AssertionError):
        guarded(None)  # the one failure that opens it
    if cb.state != STATE_OPEN or guarded(None) is not None:
        raise RuntimeError("circuitbreaker did not open and answer with its fallback")
    return Case(guarded, None)


@dataclass(frozen=True)
class ThreadResults:
    one_call_ms: dict[str, float]
    """Median time of one call on its own, per contestant."""
    wall_ms: dict[str, float]
    """Median wall time of THREADS concurrent calls, per contestant."""
    rounds: dict[str, int]

    @property
    def ratios(self) -> dict[str, float]:
        return {name: self.wall_ms[name] / self.one_call_ms[name] for name in self.wall_ms}

    def detail(self) -> dict[str, Any]:
        return {
            "threads": THREADS,
            "work_ms": WORK_SECONDS * 1000,
            "one_call_ms": {k: round(v, 3) for k, v in self.one_call_ms.items()},
            "wall_ms": {k: round(v, 3) for k, v in self.wall_ms.items()},
            "ratio": {k: round(v, 4) for k, v in self.ratios.items()},
            "rounds": self.rounds,
        }


def _wall(fn: Callable[[], object]) -> float:
    """Seconds from releasing THREADS waiting threads until the last call returns."""
    barrier = threading.Barrier(THREADS + 1)
    ends = [0.0] * THREADS
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        try:
            fn()
        except BaseException as exc:  # reported below; a failed call is no timing
            errors.append(exc)
        ends[index] = time.perf_counter()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    # Start the clock before releasing the barrier: waking the threads is part of
    # the cost (conservative; it can only make the ratio worse).
    start = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {THREADS} threaded calls failed: {errors[0]!r}")
    return max(ends) - start


def _one_call(fn: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure_threads(res: Resilience, *, rounds: int, reference_rounds: int) -> ThreadResults:
    """tasker's guarded call, pybreaker's ``call`` and the bare function, interleaved.

    pybreaker runs in the first ``reference_rounds`` rounds only: its 32 calls run one
    after another (0.64 s a round) and its ratio, near 32, needs no fine resolution.
    """
    guarded = breaker_guarded("bench-threads", resilience=res)(_work)
    cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    contestants: dict[str, Callable[[], object]] = {
        "tasker": guarded,
        "pybreaker": lambda: cb.call(_work),
        "unguarded": _work,
    }
    names = list(contestants)
    one: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds):
        for name in round_order(names, round_no):
            if name == "pybreaker" and round_no >= reference_rounds:
                continue
            fn = contestants[name]
            one[name].append(_one_call(fn, 3))
            wall[name].append(_wall(fn))
    if guarded.breaker.state != "closed":  # type: ignore[attr-defined]
        raise RuntimeError("the guarded breaker left 'closed' during a benchmark of successes")
    return ThreadResults(
        one_call_ms={n: statistics.median(v) * 1000 for n, v in one.items()},
        wall_ms={n: statistics.median(v) * 1000 for n, v in wall.items()},
        rounds={n: len(v) for n, v in wall.items()},
    )


# --- the stage run.py finds ---------------------------------------------------------------


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    import tasker_resilience as tr

    # Breakers only: a Resilience from default settings, no cache is ever built.
    res = tr.Resilience(tr.Settings())
    threads = measure_threads(
        res, rounds=ctx.params["rounds"], reference_rounds=ctx.params["pybreaker_rounds"]
    )
    ratios = threads.ratios
    figures = {
        "threads32_ratio": round(ratios["tasker"], 4),
        "pybreaker_threads32_ratio": round(ratios["pybreaker"], 4),
        "threads32_ratio_unguarded": round(ratios["unguarded"], 4),
    }
    return figures, {"threads": threads.detail()}


STAGES = (
    Stage(
        name="threads",
        run=_run_stage,
        order=30,
        parameters={
            "full": {"rounds": 41, "pybreaker_rounds": 5},
            "quick": {"rounds": 5, "pybreaker_rounds": 2},
        },
        figures=(
            Figure(
                "threads32_ratio",
                "x",
                "32 threads released at once into one `@breaker_guarded` function that "
                "sleeps 20 ms (I/O that releases the GIL): wall time until the last returns, "
                "divided by one call's time. 1.00 means the calls ran fully in parallel.",
            ),
            Figure(
                "pybreaker_threads32_ratio",
                "x",
                "The same through `pybreaker.CircuitBreaker.call`, which holds one lock "
                "across the call (reference: close to 32).",
            ),
        ),
        extra_figures=(
            Figure(
                "threads32_ratio_unguarded",
                "x",
                "The 32-thread ratio of the bare function: the floor set by starting and "
                "waking 32 threads on this machine.",
            ),
        ),
        goals=(Goal("threads32_ratio", "<=", 1.10, "no lock across the guarded call"),),
    ),
)

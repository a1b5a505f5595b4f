"""What the rate rules cost a healthy cache: ``closed_get_cpu_us`` with them off and on.

The measurement of ``closed_get_cpu_us`` (``cases_cache.measure_closed_cpu``): a
provider's closed ``get`` over a backend answering from memory, warm, no I/O, against
that backend's ``get`` + the same decode. Here two providers, identical but for their
breaker: ``off`` has the seed's rule alone (no key of the issue set), ``on`` has both
rate rules (``window_seconds`` 2, ``slow_call_seconds`` 0.05: a timed call, two clock
reads, the window's bookkeeping once per bucket). Timed interleaved, round after round;
``added`` is the median per-round difference ``on - off``.

A sub-µs difference is near the timing noise of a loaded machine, so the same calls are
also counted in CPU instructions under callgrind when ``valgrind`` is installed: three
runs of a child process (set-up only, set-up + N calls ``off``, set-up + N calls
``on``), whose differences are instructions per call, repeatable to a few instructions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cases_cache import KEY, VALUE, _Answering
from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, Comparison, compare

if TYPE_CHECKING:
    from tasker_resilience import CacheProvider

__all__ = ["RATE_RULES", "STAGES", "measure_rate_rules", "providers"]

RATE_RULES: dict[str, Any] = {"window_seconds": 2.0, "slow_call_seconds": 0.05}
"""The breaker keys of ``on``: both rate rules (the failure rate comes with the window)."""
ADDED_GOAL_US = 0.15

_COLLECTED = re.compile(r"Collected : (\d+)")


def providers() -> tuple[CacheProvider, CacheProvider, bytes]:
    """``(off, on, raw)``: two providers over one answering backend, and the stored bytes."""
    from tasker_resilience import Breaker, BreakerConfig, CacheProvider
    from tasker_resilience._cache.serializers import get_serializer

    raw = get_serializer("json").dumps(VALUE)
    made = []
    for name, config in (
        ("bench-rules-off", BreakerConfig()),
        ("bench-rules-on", BreakerConfig(**RATE_RULES)),
    ):
        made.append(
            CacheProvider(
                _Answering(raw),  # type: ignore[arg-type]  # the two operations a get uses
                breaker=Breaker(name, config),
                key_prefix="bench",
                serializer="json",
            )
        )
    return made[0], made[1], raw


def measure_rate_rules(*, rounds: int, batch: int) -> Comparison:
    """``off``, ``on`` and ``raw+decode`` (the backend's own get + decode), interleaved."""
    from tasker_resilience._cache.serializers import get_serializer

    off, on, raw = providers()
    loads = get_serializer("json").loads
    backend = _Answering(raw)

    def raw_decoded(key: str) -> Any:
        return loads(backend.get(key))

    for provider in (off, on):
        if provider.get(KEY) != VALUE:
            raise RuntimeError("the answering provider disagrees")
    if type(on.breaker).__name__ != "_TimedBreaker":
        raise RuntimeError("the 'on' provider's breaker has no rate rules")
    return compare(
        {
            "off": Case(off.get, KEY),
            "on": Case(on.get, KEY),
            "raw+decode": Case(raw_decoded, KEY),
        },
        baseline="raw+decode",
        rounds=rounds,
        batch=batch,
    )


# --- instruction counts ---------------------------------------------------------------------

_CHILD = """
import sys
sys.path.insert(0, {root!r})
from bench.cases_rate_rules import providers
from bench.cases_cache import KEY
off, on, _ = providers()
get = {{"off": off.get, "on": on.get, "none": None}}[sys.argv[1]]
for _ in range(200):  # warm: the first calls specialise the bytecode
    off.get(KEY), on.get(KEY)
if get is not None:
    for _ in range(int(sys.argv[2])):
        get(KEY)
"""


def _instructions(script: str, mode: str, calls: int) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            script,
            mode,
            str(calls),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=600,
    )
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output: {done.stderr[-500:]}")
    return int(found.group(1))


def count_instructions(root: Path, calls: int) -> dict[str, float] | None:
    """Instructions per closed get, off and on; None without valgrind (or calls=0)."""
    if not calls or shutil.which("valgrind") is None:
        return None
    script = _CHILD.format(root=str(root))
    base = _instructions(script, "none", calls)
    per_call = {mode: (_instructions(script, mode, calls) - base) / calls for mode in ("off", "on")}
    return {
        "off": round(per_call["off"], 1),
        "on": round(per_call["on"], 1),
        "added": round(per_call["on"] - per_call["off"], 1),
        "added_percent": round((per_call["on"] / per_call["off"] - 1) * 100, 2),
    }


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    params = ctx.params
    timed = measure_rate_rules(rounds=params["rounds"], batch=params["batch"])
    figures: dict[str, Any] = {
        "closed_get_cpu_us_rate_rules": {
            "off": round(timed.difference("off", "raw+decode"), 3),
            "on": round(timed.difference("on", "raw+decode"), 3),
            "added": round(timed.difference("on", "off"), 3),
        }
    }
    counted = count_instructions(ctx.root, params["callgrind_calls"])
    if counted is not None:
        # The added instructions at the off call's own measured speed: a µs figure
        # that does not depend on the timing noise of the difference.
        off_us = timed.per_call_us["off"]
        counted["added_us_estimate"] = round(counted["added"] * off_us / counted["off"], 3)
        figures["closed_get_instructions_rate_rules"] = counted
    details = {"rate_rules": {"timed": timed.detail(), "breaker_keys": RATE_RULES}}
    return figures, details


STAGES = (
    Stage(
        name="rate_rules",
        run=_run_stage,
        order=15,
        parameters={
            "full": {"rounds": 400, "batch": 200, "callgrind_calls": 20_000},
            "quick": {"rounds": 40, "batch": 200, "callgrind_calls": 0},
        },
        figures=(
            Figure(
                "closed_get_cpu_us_rate_rules",
                "µs",
                "`closed_get_cpu_us` (a closed `get` over a backend answering from memory, "
                "minus that backend's `get` + decode) of a provider whose breaker has the "
                "seed's rule alone (`off`) and both rate rules (`on`: `window_seconds` 2, "
                "`slow_call_seconds` 0.05); `added` is the median per-round `on - off`.",
            ),
        ),
        extra_figures=(
            Figure(
                "closed_get_instructions_rate_rules",
                "instructions",
                "The same two closed gets counted in CPU instructions under callgrind "
                "(`valgrind`, when installed): per call `off` and `on` (the whole `get`, "
                "decode included), `added`, and `added_us_estimate`: the added "
                "instructions at the `off` call's own measured speed.",
            ),
        ),
        goals=(
            Goal(
                "closed_get_cpu_us_rate_rules.added",
                "<=",
                ADDED_GOAL_US,
                "the rate rules cost a healthy cache almost nothing",
            ),
        ),
    ),
)

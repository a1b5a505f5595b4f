"""Herds: what ``@cached``'s origin options save the origin, between real processes, and
what a typed hit costs.

- ``herd_origin_calls``: 8 worker processes (``tasker_resilience._operations.drill.herd``)
  share a private redis-server and call one hot ``@cached`` function (ttl 1 s, an origin
  of 0.2 s) every 20 ms for 3.5 s; the origin calls of all of them, without and with
  ``lock=True``. Without it every process recomputes at every expiry.
- ``restart_origin_peak``: 8 workers, Zipf(1.1) over 10k keys, a 2 ms origin, each
  worker 100 calls/s (ttl 1 s); after a warm-up and a steady phase the server is killed,
  and 10 s later restarted empty (the cache breaker probes every second). The peak
  origin calls per 100 ms in the 2.5 s after the restart over the steady phase's mean,
  with ``lock=True``, ``early_refresh`` and the near tier; ``restart_origin_peak_plain``
  is the same run with none of them.
- ``typed_hit_ratio``: a memory-backend hit of ``-> tuple[int, int]`` (decoded by
  msgspec following the annotation) over a hit of ``-> list[int]`` (plain JSON), same
  value, interleaved rounds.
"""

from __future__ import annotations

import statistics
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.registry import Figure, Goal, Stage, StageContext
from tasker_resilience._operations.drill.herd import HerdResult, HerdSpec, run_herd
from tasker_resilience._operations.drill.local_server import LocalServer

from .timing import Case, compare

__all__ = ["STAGES"]

WORKERS = 8
BUCKET_SECONDS = 0.1
AFTER_RESTART_SECONDS = 2.5


def _herd(server: LocalServer, lock: bool) -> HerdResult:
    spec = HerdSpec.hot_key(server.url, f"bench-herd-{uuid.uuid4().hex[:8]}", lock=lock)
    return run_herd(spec, workers=WORKERS)


def _restart(server: LocalServer, ctx: StageContext, protected: bool) -> dict[str, Any]:
    warmup, steady, outage = (ctx.params[k] for k in ("warmup_s", "steady_s", "outage_s"))
    spec = HerdSpec(
        url=server.url,
        key_prefix=f"bench-restart-{uuid.uuid4().hex[:8]}",
        ttl=1.0,
        origin_seconds=0.002,
        interval=0.01,
        seconds=warmup + steady + outage + AFTER_RESTART_SECONDS,
        lock=protected,
        early_refresh=protected,
        near=protected,
        keys=10_000,
        zipf_s=1.1,
        breaker_timeout_seconds=1.0,
    )
    down = warmup + steady
    back = down + outage
    result = run_herd(spec, workers=WORKERS, actions=[(down, server.kill), (back, server.restart)])
    steady_buckets = result.buckets(BUCKET_SECONDS, warmup, down)
    after = result.buckets(BUCKET_SECONDS, back, back + AFTER_RESTART_SECONDS)
    mean = statistics.mean(steady_buckets)
    return {
        "ratio": round(max(after) / mean, 3) if mean else float("inf"),
        "steady_mean_per_100ms": round(mean, 2),
        "steady_peak_per_100ms": max(steady_buckets),
        "after_restart_peak_per_100ms": max(after),
        "after_restart_per_100ms": after,
        "requests": result.requests,
        "origin_calls": result.origin_calls,
        "decisions": {
            outcome: result.total(outcome)
            for outcome in ("lease_waited", "lease_unavailable", "early_refresh")
        },
    }


def _typed_hits(root: Path, ctx: StageContext) -> dict[str, Any]:
    import tasker_resilience as tr
    from tasker_resilience.testing import reset

    tr.configure(env="test", overrides={"common": {"cache": {"backend": "memory"}}}, root=root)
    computed: Counter[str] = Counter()
    try:

        @tr.cached(ttl=3600, namespace="bench-typed")
        def as_list(user_id: int) -> list[int]:
            computed["list"] += 1
            return [user_id, user_id + 1]

        @tr.cached(ttl=3600, namespace="bench-typed")
        def as_tuple(user_id: int) -> tuple[int, int]:
            computed["tuple"] += 1
            return (user_id, user_id + 1)

        for fn in (as_list, as_tuple):
            fn(42)
            fn(42)
        if type(as_tuple(42)) is not tuple or type(as_list(42)) is not list:
            raise RuntimeError("bench typed: hits did not return the annotated types")
        result = compare(
            {"untyped_list": Case(as_list, 42), "typed_tuple": Case(as_tuple, 42)},
            baseline="untyped_list",
            rounds=ctx.params["rounds"],
            batch=ctx.params["batch"],
        )
        if computed != Counter({"list": 1, "tuple": 1}):
            raise RuntimeError(f"bench typed: misses were timed ({dict(computed)})")
    finally:
        reset()
    return {
        "ratio": round(result.ratios["typed_tuple"], 3),
        "per_call_us": {k: round(v, 3) for k, v in result.per_call_us.items()},
        "detail": result.detail(),
    }


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    with LocalServer(ctx.server_binary) as server:
        herd = {lock: _herd(server, lock) for lock in (False, True)}
        protected = _restart(server, ctx, True)
        plain = _restart(server, ctx, False)
    typed = _typed_hits(ctx.root, ctx)
    figures = {
        "herd_origin_calls": {
            "lock": herd[True].origin_calls,
            "without_lock": herd[False].origin_calls,
        },
        "restart_origin_peak": protected["ratio"],
        "restart_origin_peak_plain": plain["ratio"],
        "typed_hit_ratio": typed["ratio"],
        "typed_hit_us": typed["per_call_us"],
    }
    details = {
        "herd": {
            ("lock" if lock else "without_lock"): {
                "origin_calls": result.origin_calls,
                "origin_times": [round(t, 3) for t in result.origin_times],
                "requests": result.requests,
                "lease_waited": result.total("lease_waited"),
            }
            for lock, result in herd.items()
        },
        "restart": {"protected": protected, "plain": plain},
        "typed_hits": typed["detail"],
    }
    return figures, details


STAGES = (
    Stage(
        name="herd",
        run=_run_stage,
        order=70,
        parameters={
            "full": {"rounds": 30, "batch": 2_000, "warmup_s": 3, "steady_s": 4, "outage_s": 10},
            "quick": {"rounds": 6, "batch": 500, "warmup_s": 2, "steady_s": 2, "outage_s": 3},
        },
        figures=(
            Figure(
                "herd_origin_calls",
                "calls",
                "8 worker processes, one hot `@cached` function (ttl 1 s, origin 0.2 s) called "
                "every 20 ms for 3.5 s on a private redis-server: origin calls of all of "
                "them, with `lock=True` (`lock`) and without (`without_lock`).",
            ),
            Figure(
                "restart_origin_peak",
                "x",
                "8 workers, Zipf(1.1) over 10k keys, 2 ms origin, 100 calls/s each, ttl 1 s, "
                "server killed for 10 s and restarted empty: peak origin calls per 100 ms in "
                "the 2.5 s after the restart over the steady mean, with `lock=True`, "
                "`early_refresh=True` and the near tier.",
            ),
            Figure(
                "typed_hit_ratio",
                "x",
                "A memory-backend `@cached` hit of `-> tuple[int, int]` (decoded following "
                "the annotation) over a hit of `-> list[int]` (plain JSON), same value.",
            ),
        ),
        extra_figures=(
            Figure(
                "restart_origin_peak_plain",
                "x",
                "`restart_origin_peak` with none of the options (plain `@cached`, no near "
                "tier): while the circuit is open after the restart every call reaches the "
                "origin.",
            ),
            Figure("typed_hit_us", "µs", "The per-call times behind `typed_hit_ratio`."),
        ),
        goals=(
            Goal(
                "herd_origin_calls.lock",
                "<=",
                6,
                "one recompute per expiry across the host: TTL periods (4) + 2",
            ),
            Goal(
                "restart_origin_peak",
                "<=",
                1.5,
                "a cache restarted empty must not become a thundering herd on the origin",
            ),
            Goal("typed_hit_ratio", "<=", 1.3, "typed hits cost little more than JSON hits"),
        ),
    ),
)

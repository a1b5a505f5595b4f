"""The near cache (``[common.cache.near]``): hit cost, origin load in an outage, and how
fast another process's write reaches this one.

- ``near_hit_us``: a hit answered by the near tier in front of a real redis-server,
  through ``res.cache.get`` and through ``@tr.cached``, timed against cachetools'
  ``cached`` on the same value (interleaved rounds, as the memory stage). Each hit hands
  out a fresh copy (the copy policy of the memory backend); cachetools returns the
  stored object. A run that timed round trips instead of near hits is an error.
- ``outage_origin_ratio``: :mod:`tasker_resilience._operations.drill.near_load`: a
  ``@cached`` origin of 2 ms, Zipf(1.1) keys over 10k, a paced load, 3 s healthy then
  5 s with the server frozen; origin calls per second in the outage over the healthy
  rate, with the near tier and (``outage_origin_ratio_without_near``) without it, from
  the same run against the same server.
- ``cross_process_invalidation_ms``: two peer processes with the tier on and tracking;
  A sets a key B holds in its near tier, B polls it; the delay from A's ``set`` to B's
  first read of the new value, p50 and p99.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

from bench.registry import Figure, Goal, Stage, StageContext
from tasker_resilience._operations.drill.local_server import LocalServer

from .timing import Case, compare

__all__ = ["STAGES"]

ARG = 42


def _record(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "name": f"user-{user_id}", "active": True, "roles": ["reader"]}


def _near_overrides(url: str, prefix: str) -> dict[str, Any]:
    return {
        "common": {
            "cache": {
                "backend": "redis",
                "key_prefix": prefix,
                "redis": {"url": url},
                "near": {"enabled": True, "tracking": "on"},
            }
        }
    }


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench near: {what} did not happen within {timeout:g} s")
        time.sleep(0.01)


def _measure_hits(server: LocalServer, ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    import cachetools

    import tasker_resilience as tr
    from tasker_resilience.testing import reset

    res = tr.configure(env="production", overrides=_near_overrides(server.url, "bench-near"))
    try:
        cache = res.cache
        near = cache.near
        assert near is not None
        _wait(lambda: near.tracking_connected, 10, "the invalidation channel")
        computed: Counter[str] = Counter()

        @tr.cached(ttl=3600, namespace="bench")
        def tasker_lookup(user_id: int) -> dict[str, Any]:
            computed["tasker"] += 1
            return _record(user_id)

        def cachetools_compute(user_id: int) -> dict[str, Any]:
            computed["cachetools"] += 1
            return _record(user_id)

        cachetools_lookup = cachetools.cached(
            cachetools.TTLCache(maxsize=10_000, ttl=3600), lock=threading.Lock()
        )(cachetools_compute)
        cache.set("hit", _record(ARG))
        # Our own writes come back as invalidations (broadcast tracking): read until the
        # entries stay, so the timing sees near hits only.
        for _ in range(50):
            cache.get("hit")
            tasker_lookup(ARG)
            time.sleep(0.01)
        before = near.snapshot()
        cases = {
            "near_get": Case(cache.get, "hit"),
            "near_cached": Case(tasker_lookup, ARG),
            "cachetools": Case(cachetools_lookup, ARG),
        }
        result = compare(
            cases, baseline="cachetools", rounds=ctx.params["rounds"], batch=ctx.params["batch"]
        )
        after = near.snapshot()
        misses = after["miss"] - before["miss"]
        hits = after["hit"] - before["hit"]
        if computed["tasker"] != 1 or computed["cachetools"] != 1 or misses > hits / 1000:
            raise RuntimeError(
                f"bench near: timed misses, not near hits ({computed}, {misses} near misses)"
            )
    finally:
        reset()
    figures = {
        "near_hit_us": {
            "get": round(result.per_call_us["near_get"], 4),
            "cached": round(result.per_call_us["near_cached"], 4),
            "cachetools": round(result.per_call_us["cachetools"], 4),
        },
        "near_hit_ratio_vs_cachetools": {
            "get": round(result.ratios["near_get"], 4),
            "cached": round(result.ratios["near_cached"], 4),
        },
    }
    return figures, {"near_hits": result.detail()}


def _measure_outage(
    server: LocalServer, ctx: StageContext
) -> tuple[dict[str, Any], dict[str, Any]]:
    from tasker_resilience._operations.drill.near_load import measure_origin_load

    seconds = ctx.params["outage_seconds"]
    loads = {
        near: measure_origin_load(
            server,
            near=near,
            key_prefix=f"bench-origin-{'near' if near else 'plain'}",
            warmup_seconds=1.0,
            healthy_seconds=seconds * 3 / 5,
            outage_seconds=seconds,
        )
        for near in (True, False)
    }
    figures = {
        "outage_origin_ratio": round(loads[True].ratio, 3),
        "outage_origin_ratio_without_near": round(loads[False].ratio, 3),
    }
    return figures, {"near_outage": {str(k): v.as_dict() for k, v in loads.items()}}


def _measure_invalidation(
    server: LocalServer, ctx: StageContext
) -> tuple[dict[str, Any], dict[str, Any]]:
    from tasker_resilience._operations.drill.peer import Peer

    settings = _near_overrides(server.url, "bench-xproc")
    delays: list[float] = []
    with (
        Peer.start(settings, name="A", env="production") as a,
        Peer.start(settings, name="B", env="production") as b,
    ):
        for peer in (a, b):
            if not peer.call("wait_near", mode="tracking", timeout=10)["ok"]:
                raise RuntimeError(f"bench near: peer {peer.name} has no invalidation channel")
        a.call("set", key="k", value=-1)
        for i in range(ctx.params["changes"]):
            # B holds the current value in its near tier, then watches for the next.
            if not b.call("settle", key="k", timeout=5)["ok"]:
                raise RuntimeError("bench near: B never kept k in its near tier")
            b.send("watch", key="k", until=i, timeout=5)
            started = a.call("set", key="k", value=i)["t"]
            seen = b.reply()
            if not seen["seen"]:
                raise RuntimeError(f"bench near: B never saw change {i}")
            delays.append((float(seen["t"]) - float(started)) * 1000)
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    figures = {
        "cross_process_invalidation_ms": {
            "p50": round(statistics.median(ordered), 3),
            "p99": round(p99, 3),
            "max": round(ordered[-1], 3),
        }
    }
    return figures, {"near_invalidation": {"changes": len(delays)}}


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    with LocalServer(ctx.server_binary) as server:
        for measure in (_measure_hits, _measure_invalidation, _measure_outage):
            part, more = measure(server, ctx)
            figures.update(part)
            details.update(more)
    return figures, details


STAGES = (
    Stage(
        name="near",
        run=_run_stage,
        order=60,
        parameters={
            "full": {"rounds": 60, "batch": 4_000, "changes": 100, "outage_seconds": 5},
            "quick": {"rounds": 8, "batch": 1_000, "changes": 20, "outage_seconds": 2},
        },
        figures=(
            Figure(
                "near_hit_us",
                "µs",
                "A near-tier hit in front of a real redis-server: `res.cache.get` (`get`) and "
                "`@tr.cached` (`cached`), each handing out a fresh copy; `cachetools` is "
                "`cachetools.cached(TTLCache, lock)` on the same value (no copy).",
            ),
            Figure(
                "near_hit_ratio_vs_cachetools",
                "x",
                "`near_hit_us` over cachetools, median of the per-round ratios.",
            ),
            Figure(
                "outage_origin_ratio",
                "x",
                "With the near tier: origin calls/s while the server is frozen over the "
                "healthy rate (`@cached` origin of 2 ms, Zipf(1.1) over 10k keys, paced load, "
                "3 s healthy then 5 s frozen).",
            ),
            Figure(
                "outage_origin_ratio_without_near",
                "x",
                "The same run without the near tier: every read in the outage is a miss.",
            ),
            Figure(
                "cross_process_invalidation_ms",
                "ms",
                "From process A's `set` to process B (tier on, tracking) first reading the new "
                "value it held in its near tier: p50, p99, max.",
            ),
        ),
        goals=(
            Goal(
                "near_hit_ratio_vs_cachetools.get",
                "<=",
                2.0,
                "a near hit stays an in-process hit (res.cache.get)",
            ),
            Goal(
                "near_hit_ratio_vs_cachetools.cached",
                "<=",
                2.0,
                "a near hit stays an in-process hit (@cached)",
            ),
            Goal(
                "outage_origin_ratio",
                "<=",
                1.2,
                "an open cache circuit must not become a thundering herd on the origin",
            ),
            Goal(
                "cross_process_invalidation_ms.p99",
                "<=",
                50,
                "another process's write is seen within milliseconds on loopback",
            ),
        ),
    ),
)

"""In-process cache hits: ``@tr.cached`` on the memory backend against cachetools and peers.

Every contestant caches the same function (a small JSON-able record, the typical
payload of a cached lookup) and is timed on a hit for the same argument. A
computation counter proves each one really hits: a figure measured on misses is
thrown away with an error instead of being reported.

What differs by design: ``@tr.cached`` stores bytes (JSON by default, the format
shared with the redis backend) and hands out a fresh object on every hit (rebuilt
from a ``marshal`` image of the decoded value); cachetools,
dogpile.cache's memory backend, aiocache's ``SimpleMemoryCache`` and cashews'
``mem://`` keep the Python object itself and hand out the same instance.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, Comparison, acompare, compare

__all__ = ["STAGES", "MemoryResults", "measure_memory"]

ARG = 42
"""The one argument every hit is timed with."""


def _record(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "name": f"user-{user_id}", "active": True, "roles": ["reader"]}


class MemoryResults:
    """The two interleaved comparisons (sync: vs cachetools; async peers)."""

    def __init__(self, sync: Comparison, asyncs: Comparison) -> None:
        self.sync = sync
        self.asyncs = asyncs


def _count(computed: Counter[str], name: str) -> Callable[[int], dict[str, Any]]:
    def compute(user_id: int) -> dict[str, Any]:
        computed[name] += 1
        return _record(user_id)

    return compute


def _sync_cases(computed: Counter[str]) -> dict[str, Case]:
    import cachetools
    from dogpile.cache import make_region

    from tasker_resilience._cache.cached import cached

    tasker_compute = _count(computed, "tasker")

    @cached(ttl=3600, namespace="bench")
    def tasker_lookup(user_id: int) -> dict[str, Any]:
        return tasker_compute(user_id)

    cachetools_lookup = cachetools.cached(
        cachetools.TTLCache(maxsize=10_000, ttl=3600), lock=threading.Lock()
    )(_count(computed, "cachetools"))

    region = make_region().configure("dogpile.cache.memory", expiration_time=3600)
    dogpile_lookup = region.cache_on_arguments()(_count(computed, "dogpile"))

    return {
        "tasker": Case(tasker_lookup, ARG),
        "cachetools": Case(cachetools_lookup, ARG),
        "dogpile": Case(dogpile_lookup, ARG),
    }


def _async_cases(computed: Counter[str]) -> dict[str, Case]:
    from aiocache import SimpleMemoryCache
    from aiocache import cached as aiocache_cached
    from cashews import Cache

    from tasker_resilience._cache.cached import cached

    def counted(name: str) -> Callable[[int], Any]:
        compute = _count(computed, name)

        async def lookup(user_id: int) -> dict[str, Any]:
            return compute(user_id)

        return lookup

    tasker_lookup = cached(ttl=3600, namespace="bench-async")(counted("tasker_async"))
    aiocache_lookup = aiocache_cached(ttl=3600, cache=SimpleMemoryCache)(counted("aiocache"))
    cashews_cache = Cache()
    cashews_cache.setup("mem://")
    cashews_lookup = cashews_cache.cache(ttl="1h")(counted("cashews"))
    return {
        "tasker_async": Case(tasker_lookup, ARG),
        "aiocache": Case(aiocache_lookup, ARG),
        "cashews": Case(cashews_lookup, ARG),
    }


def _check_hits(computed: Counter[str], names: list[str]) -> None:
    for name in names:
        if computed[name] != 1:
            raise RuntimeError(
                f"{name} computed {computed[name]} times for one argument: the benchmark "
                "timed misses, not hits"
            )


def measure_memory(root: Path, *, rounds: int, batch: int) -> MemoryResults:
    """Configure a memory-backed process-wide Resilience, time hits, then restore."""
    import tasker_resilience as tr
    from tasker_resilience.testing import reset

    tr.configure(
        env="test",
        overrides={"common": {"cache": {"enabled": True, "backend": "memory"}}},
        root=root,
    )
    try:
        computed: Counter[str] = Counter()
        sync_cases = _sync_cases(computed)
        sync = compare(sync_cases, baseline="cachetools", rounds=rounds, batch=batch)
        _check_hits(computed, list(sync_cases))

        async def run_async() -> Comparison:
            async_cases = _async_cases(computed)
            result = await acompare(
                async_cases, baseline="aiocache", rounds=rounds, batch=max(1, batch // 2)
            )
            _check_hits(computed, list(async_cases))
            return result

        asyncs = asyncio.run(run_async())
    finally:
        reset()
    return MemoryResults(sync, asyncs)


# --- the stage run.py finds ---------------------------------------------------------------


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    memory = measure_memory(ctx.root, rounds=ctx.params["rounds"], batch=ctx.params["batch"])
    sync, asyncs = memory.sync, memory.asyncs
    figures = {
        "memory_hit_us": round(sync.per_call_us["tasker"], 4),
        "cachetools_hit_us": round(sync.per_call_us["cachetools"], 4),
        "memory_hit_ratio_vs_cachetools": round(sync.ratios["tasker"], 4),
        "peer_hit_us": {
            "dogpile": round(sync.per_call_us["dogpile"], 4),
            "aiocache": round(asyncs.per_call_us["aiocache"], 4),
            "cashews": round(asyncs.per_call_us["cashews"], 4),
        },
        "memory_hit_async_us": round(asyncs.per_call_us["tasker_async"], 4),
    }
    return figures, {"memory_sync": sync.detail(), "memory_async": asyncs.detail()}


STAGES = (
    Stage(
        name="memory",
        run=_run_stage,
        order=20,
        parameters={"full": {"rounds": 60, "batch": 4_000}, "quick": {"rounds": 8, "batch": 1_000}},
        figures=(
            Figure(
                "memory_hit_us",
                "µs",
                "A hit through `@tr.cached` on the `memory` backend: key built from the "
                "arguments, TTL and LRU bookkeeping under a lock, and the value handed out "
                "under the default copy policy (the caller gets its own copy).",
            ),
            Figure(
                "cachetools_hit_us",
                "µs",
                "A hit through `cachetools.cached(TTLCache(...), lock=threading.Lock())` on "
                "the same function; it returns the stored object itself (no copy, no decode).",
            ),
            Figure(
                "memory_hit_ratio_vs_cachetools",
                "x",
                "`memory_hit_us / cachetools_hit_us`, as the median of the per-round ratios.",
            ),
            Figure(
                "peer_hit_us",
                "µs",
                "The same hit through peers: dogpile.cache memory region (sync, "
                "`cache_on_arguments`), aiocache `SimpleMemoryCache` (`@cached`, awaited) and "
                "cashews `mem://` (`@cache`, awaited). Recorded, no goal.",
            ),
        ),
        extra_figures=(
            Figure(
                "memory_hit_async_us", "µs", "`@tr.cached` hit on an `async def` (memory backend)."
            ),
        ),
        goals=(
            Goal("memory_hit_ratio_vs_cachetools", "<=", 2.0, "the in-process cache stays cheap"),
        ),
    ),
)

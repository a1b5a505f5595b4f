"""What the near cache buys during an outage: the load that reaches the origin.

A ``@cached`` function stands for a database query (``origin_seconds`` each). A paced
load calls it with Zipf-distributed keys (a few hot keys, a long tail), first with the
cache server healthy, then with it frozen (SIGSTOP). Without the near tier an open
circuit makes every read a miss, so the origin takes the whole load; with it, entries
this process already had are served stale and the origin sees little more than the
cold keys it saw before the outage.

Used by ``tasker-resilience drill --near`` (printed per phase, with and without the tier)
and by the benchmark (``outage_origin_ratio`` in ``bench/results.json``).
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tasker_resilience._operations.drill.local_server import LocalServer

__all__ = ["OriginLoad", "OriginPhase", "format_origin_loads", "measure_origin_load", "zipf_keys"]

PHASES: Final = ("warm-up", "healthy", "outage")


@dataclass
class OriginPhase:
    """One phase: how long it ran, how many calls it offered, how many hit the origin."""

    name: str
    seconds: float = 0.0
    requests: int = 0
    origin_calls: int = 0

    @property
    def origin_per_second(self) -> float:
        return self.origin_calls / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "origin_calls": self.origin_calls,
            "origin_per_second": round(self.origin_per_second, 1),
        }


@dataclass
class OriginLoad:
    """The phases of one run, with or without the near tier."""

    near: bool
    phases: list[OriginPhase] = field(default_factory=list)
    stale_served: int = 0

    def phase(self, name: str) -> OriginPhase:
        return next(phase for phase in self.phases if phase.name == name)

    @property
    def ratio(self) -> float:
        """Origin calls per second during the outage over the healthy rate."""
        healthy = self.phase("healthy").origin_per_second
        outage = self.phase("outage").origin_per_second
        return outage / healthy if healthy else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "near": self.near,
            "phases": [phase.as_dict() for phase in self.phases],
            "outage_over_healthy": round(self.ratio, 3),
            "stale_served": self.stale_served,
        }


def zipf_keys(count: int, *, keys: int, s: float, seed: int) -> list[int]:
    """``count`` keys in ``range(keys)``, key ``k`` drawn with weight ``1 / (k + 1) ** s``."""
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** s for rank in range(keys)))
    total = cumulative[-1]
    rng = random.Random(seed)
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(count)]


def measure_origin_load(
    server: LocalServer,
    *,
    near: bool,
    key_prefix: str,
    warmup_seconds: float = 1.0,
    healthy_seconds: float = 3.0,
    outage_seconds: float = 5.0,
    rate: float = 800.0,
    workers: int = 4,
    keys: int = 10_000,
    zipf_s: float = 1.1,
    origin_seconds: float = 0.002,
    seed: int = 13,
    on_phase: Callable[[str], None] | None = None,
) -> OriginLoad:
    """Run the phases against ``server`` (frozen for the outage, thawed after) with a
    process-wide Resilience of default breaker settings; reset it afterwards."""
    from tasker_resilience._cache.cached import cached
    from tasker_resilience._resilience import configure, reset_current

    res = configure(
        env="production",
        overrides={
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": key_prefix,
                    "redis": {"url": server.url},
                    "near": {"enabled": near},
                }
            }
        },
    )
    load = OriginLoad(near=near, phases=[OriginPhase(name) for name in PHASES])
    current = [load.phases[0]]
    lock = threading.Lock()

    # key=: the closure captures a lock, which cannot be part of a key.
    @cached(ttl=3600, namespace="origin", key=str)
    def lookup(key: int) -> dict[str, Any]:
        time.sleep(origin_seconds)  # the database query the cache saves
        with lock:
            current[0].origin_calls += 1
        return {"id": key, "name": f"row-{key}", "tags": ["a", "b"]}

    durations = (warmup_seconds, healthy_seconds, outage_seconds)
    samples = zipf_keys(int(rate * sum(durations) * 1.2) + workers, keys=keys, s=zipf_s, seed=seed)
    stop = threading.Event()
    interval = workers / rate

    def worker(index: int) -> None:
        mine = samples[index::workers]
        next_at = time.monotonic()
        for key in mine:
            if stop.is_set():
                return
            lookup(key)
            with lock:
                current[0].requests += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.monotonic()  # behind: no burst to catch up

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"origin-load-{i}", daemon=True)
        for i in range(workers)
    ]
    try:
        for thread in threads:
            thread.start()
        for phase, seconds in zip(load.phases, durations, strict=True):
            if on_phase is not None:
                on_phase(phase.name)
            if phase.name == "outage":
                server.freeze()
            with lock:
                current[0] = phase
            started = time.monotonic()
            time.sleep(seconds)
            with lock:
                phase.seconds = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(10)
        near_stats = res.cache.stats().get("near")
        load.stale_served = near_stats["stale_served"] if near_stats else 0
    finally:
        stop.set()
        server.thaw()
        reset_current()
        res.close()
    return load


def format_origin_loads(loads: list[OriginLoad]) -> str:
    """A small table: origin calls per second per phase, with and without the tier."""
    lines = [
        "origin load (calls/s reaching the @cached function's origin)",
        f"{'phase':<16}" + "".join(f"{_label(load):>14}" for load in loads),
    ]
    for name in PHASES:
        row = f"{name:<16}"
        for load in loads:
            row += f"{load.phase(name).origin_per_second:>14.1f}"
        lines.append(row)
    lines.append(f"{'outage/healthy':<10}" + "".join(f"{load.ratio:>13.2f}x" for load in loads))
    for load in loads:
        if load.near:
            lines.append(f"near tier answered {load.stale_served} reads stale during the outage")
    return "\n".join(lines)


def _label(load: OriginLoad) -> str:
    return "near on" if load.near else "near off"


def run_near_drill(
    *,
    server_binary: str | None,
    rate: float,
    healthy_seconds: float,
    outage_seconds: float,
    say: Callable[[str], None] | None = None,
) -> list[OriginLoad]:
    """``tasker-resilience drill --near``: the same outage twice on one private server,
    with the near tier and without it."""
    from tasker_resilience._operations.drill.local_server import LocalServer, ServerStartError
    from tasker_resilience._operations.drill.targets import DrillError, private_server_binary

    server_binary = private_server_binary("--near", server_binary)
    loads: list[OriginLoad] = []
    try:
        with LocalServer(server_binary) as server:
            for near in (True, False):
                label = "near on" if near else "near off"

                def on_phase(phase: str, label: str = label) -> None:
                    if say is not None:
                        say(f"{label}: {phase}")

                loads.append(
                    measure_origin_load(
                        server,
                        near=near,
                        key_prefix=f"drill-near-{'on' if near else 'off'}",
                        healthy_seconds=healthy_seconds,
                        outage_seconds=outage_seconds,
                        rate=rate,
                        on_phase=on_phase,
                    )
                )
    except ServerStartError as exc:
        raise DrillError(f"cannot start {server_binary}: {exc}") from None
    return loads

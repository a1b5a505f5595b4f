"""Origin load from worker processes that share one cache: what ``@cached(lock=True)``
and ``early_refresh`` save the origin, measured between real processes.

Each worker is a process (``python -m tasker_resilience._operations.drill.herd``) with
its own :class:`~tasker_resilience.Resilience` over the same server, like the worker
processes of one service. It reads its :class:`HerdSpec` as one JSON line, builds a
``@cached`` function standing for the origin (a query of ``origin_seconds``), says
``ready``, waits for the shared start time (``time.monotonic()``, one clock for every
process of the machine on Linux and macOS), calls the function at a paced rate for
``seconds``, and answers with the times of its origin calls and its cache stats.

:func:`run_herd` starts the workers, starts them together, runs timed actions on the
server meanwhile (kill, restart), and gathers every origin call. Used by the benchmark
(``herd_origin_calls``, ``restart_origin_peak``) and by the integration tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

__all__ = ["HerdResult", "HerdSpec", "main", "run_herd", "stop_processes"]

_READY_TIMEOUT_SECONDS = 120.0
"""Eight interpreters importing the package on a loaded 2-core machine take a while."""


@dataclass(frozen=True)
class HerdSpec:
    """One worker's load and its ``@cached`` options (the same for every worker)."""

    url: str
    key_prefix: str
    ttl: float
    origin_seconds: float
    interval: float
    """Seconds between the calls of one worker (paced: a late worker does not burst)."""
    seconds: float
    lock: bool | float = False
    early_refresh: bool = False
    near: bool = False
    keys: int = 1
    """1: one hot key; more: Zipf(``zipf_s``) over that many keys."""
    zipf_s: float = 1.1
    seed: int = 0
    breaker_timeout_seconds: float = 30.0
    """The cache breaker's open time (how soon it probes after an outage)."""

    @classmethod
    def hot_key(cls, url: str, key_prefix: str, *, lock: bool) -> HerdSpec:
        """One hot key, ttl 1 s, an origin of 0.2 s, each worker calling every 20 ms for
        3.5 s: the scenario of ``herd_origin_calls``."""
        return cls(
            url=url,
            key_prefix=key_prefix,
            ttl=1.0,
            origin_seconds=0.2,
            interval=0.02,
            seconds=3.5,
            lock=lock,
        )

    def overrides(self) -> dict[str, Any]:
        return {
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": self.key_prefix,
                    "redis": {"url": self.url},
                    "near": {"enabled": self.near},
                },
                "circuit_breakers": {
                    "component_configs": {
                        "cache": {"timeout_seconds": self.breaker_timeout_seconds}
                    }
                },
            }
        }


@dataclass
class HerdResult:
    """Every origin call of every worker, in seconds since the shared start."""

    origin_times: list[float] = field(default_factory=list)
    requests: int = 0
    stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def origin_calls(self) -> int:
        return len(self.origin_times)

    def buckets(self, width: float, start: float, end: float) -> list[int]:
        """Origin calls per ``width`` seconds from ``start`` to ``end``."""
        count = max(1, round((end - start) / width))
        counts = [0] * count
        for t in self.origin_times:
            if start <= t < end:
                counts[min(count - 1, int((t - start) / width))] += 1
        return counts

    def total(self, outcome: str) -> int:
        """``stats()["cached"][outcome]`` summed over the workers."""
        return sum(stats.get("cached", {}).get(outcome, 0) for stats in self.stats)


def zipf_sample(count: int, *, keys: int, s: float, seed: int) -> list[int]:
    from tasker_resilience._operations.drill.near_load import zipf_keys

    return zipf_keys(count, keys=keys, s=s, seed=seed)


def _worker(spec: HerdSpec, stdin: IO[str], out: IO[str]) -> None:
    from tasker_resilience._cache.cached import cached
    from tasker_resilience._resilience import configure

    res = configure(env="production", overrides=spec.overrides())
    times: list[float] = []
    # The function captures only what is the same in every worker: a closure's captured
    # values are part of its @cached key, and the spec differs by worker (its seed).
    origin_seconds = spec.origin_seconds

    @cached(ttl=spec.ttl, namespace="herd", lock=spec.lock, early_refresh=spec.early_refresh)
    def origin(key: int) -> dict[str, Any]:
        times.append(time.monotonic())
        time.sleep(origin_seconds)  # the query the cache saves
        return {"id": key, "name": f"row-{key}"}

    calls = int(spec.seconds / spec.interval) + 1
    keys = (
        [0] * calls
        if spec.keys <= 1
        else zipf_sample(calls, keys=spec.keys, s=spec.zipf_s, seed=spec.seed)
    )
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    start_at = float(json.loads(stdin.readline())["start_at"])
    time.sleep(max(0.0, start_at - time.monotonic()))
    end_at = start_at + spec.seconds
    next_at = start_at
    done = 0
    for key in keys:
        if time.monotonic() >= end_at:
            break
        origin(key)
        done += 1
        next_at += spec.interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # behind: no burst to catch up
    out.write(
        json.dumps(
            {
                "origin": [t - start_at for t in times],
                "requests": done,
                "stats": res.cache.stats(),
            }
        )
        + "\n"
    )
    out.flush()
    res.close()


def main() -> None:
    """A worker: the spec on the first line of stdin, ``{"start_at": t}`` on the next."""
    spec = HerdSpec(**json.loads(sys.stdin.readline()))
    _worker(spec, sys.stdin, sys.stdout)


def _start(spec: HerdSpec, index: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tasker_resilience._operations.drill.herd"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdin is not None
    fields = asdict(spec)
    fields["seed"] = spec.seed + index  # every worker its own draw of keys
    process.stdin.write(json.dumps(fields) + "\n")
    process.stdin.flush()
    return process


def _line(process: subprocess.Popen[str], timeout: float, what: str) -> dict[str, Any]:
    assert process.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline()))  # type: ignore[union-attr]  # checked above
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    if not box or not box[0]:
        raise RuntimeError(
            f"herd worker {process.pid} gave no {what} within {timeout:g} s "
            f"(exit code {process.poll()})"
        )
    answer: dict[str, Any] = json.loads(box[0])
    return answer


def run_herd(
    spec: HerdSpec,
    *,
    workers: int = 8,
    actions: Sequence[tuple[float, Callable[[], None]]] = (),
    start_delay: float = 0.5,
) -> HerdResult:
    """Run ``workers`` processes on ``spec`` together; ``actions`` are ``(seconds after
    the start, callable)`` run meanwhile in this process (e.g. kill the server)."""
    processes = [_start(spec, i) for i in range(workers)]
    try:
        for process in processes:
            _line(process, _READY_TIMEOUT_SECONDS, "ready line")
        start_at = time.monotonic() + start_delay
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(json.dumps({"start_at": start_at}) + "\n")
            process.stdin.flush()
        for at, action in sorted(actions, key=lambda item: item[0]):
            time.sleep(max(0.0, start_at + at - time.monotonic()))
            action()
        result = HerdResult()
        finish = max(0.0, start_at + spec.seconds - time.monotonic())
        for process in processes:
            answer = _line(process, finish + 60.0, "result")
            result.origin_times.extend(answer["origin"])
            result.requests += int(answer["requests"])
            result.stats.append(answer["stats"])
        result.origin_times.sort()
        return result
    finally:
        stop_processes(processes)


def stop_processes(processes: Sequence[subprocess.Popen[str]]) -> None:
    """Kill whichever still runs, reap them all and close their pipes."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


if __name__ == "__main__":
    main()

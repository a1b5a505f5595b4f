"""One worker process of a fleet (``drill --workers``): a paced loop of cache reads.

Started by :mod:`~tasker_resilience._operations.drill.fleet` as ``python -m
tasker_resilience._operations.drill.fleet_worker``, one JSON line in on stdin (the
settings and the load), then:

1. it configures its own ``Resilience`` (as a gunicorn or celery worker would), stores
   its key and prints ``{"ready": pid}``;
2. it waits for ``{"start_at": t, "end_at": t}`` (monotonic times: one clock for every
   process of the machine) and reads its key ``rate`` times a second until ``end_at``
   (a call that ran late is not made up for with a burst);
3. it prints one JSON line: every call ``[start, seconds, hit]`` and every transition
   of its ``cache`` breaker ``[t, from, to]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pybreaker

__all__ = ["main"]

KEY = "fleet:value"


class _Transitions(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None) or "new"
        self.seen.append((round(time.monotonic(), 5), str(old), str(new_state.name)))


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    from tasker_resilience._resilience import configure

    res = configure(env="production", overrides=request["overrides"], install=False)
    cache = res.cache
    breaker = res.breakers.get("cache")
    transitions = _Transitions()
    breaker.add_listener(transitions)
    cache.set(KEY, "present", ttl=3600)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    go = json.loads(sys.stdin.readline())
    interval = 1.0 / float(request["rate"])
    start_at, end_at = float(go["start_at"]), float(go["end_at"])
    calls: list[tuple[float, float, bool]] = []
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    next_at = time.monotonic()
    while True:
        started = time.monotonic()
        if started >= end_at:
            break
        hit = cache.get(KEY) == "present"
        calls.append((round(started, 5), round(time.monotonic() - started, 5), hit))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # behind: no burst to catch up
    host = breaker.metrics().get("host")
    res.close()
    return {"pid": os.getpid(), "calls": calls, "transitions": transitions.seen, "host": host}


def main() -> None:
    request = json.loads(sys.stdin.readline())
    print(json.dumps(_serve(request)), flush=True)


if __name__ == "__main__":
    main()

"""OpenTelemetry's cost per cache call (``_operations/telemetry.py``).

Timed on a warm ``res.cache.get`` hit of the ``memory`` backend (no network: the
figure is the telemetry's own CPU cost, not a round trip's noise), interleaved rounds;
each figure is the difference of the two cases' lower-quartile per-call times:

- ``no_api``: in a subprocess that cannot import ``opentelemetry`` (as without the
  ``otel`` extra). There the cache binds the plain ``itertools.count`` counters and the
  package fills no slot (checked on every run, else the stage fails): the get path is
  the one without telemetry. The figure is the interleaved A/A difference of two such
  caches, i.e. the noise floor of this measurement;
- ``api_no_sdk``: here, the API installed and no SDK (no span recording): a cache built
  with the outcome slot filled against one built with it empty. Each counted outcome
  asks for the current span and whether it records, and stops;
- ``recording`` (no goal): the same inside a span the SDK records: the attributes built
  and set on every call.

The other stages run with the slot empty (``bench/run.py``): their figures are the
library's, this stage's are the telemetry's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, Comparison, compare, quartiles

__all__ = ["STAGES"]

_MEMORY = {"common": {"cache": {"backend": "memory"}}}

_NO_API = textwrap.dedent(
    """
    import itertools, json, sys
    sys.modules["opentelemetry"] = None  # every import of it fails, as when not installed
    sys.path.insert(0, sys.argv[1])
    from bench.timing import Case, compare, quartiles
    import tasker_resilience as tr
    from tasker_resilience._breakers import transitions
    from tasker_resilience._cache import outcomes

    caches = []
    for _ in range(2):
        res = tr.configure(env="test", overrides=OVERRIDES, root=sys.argv[1], install=False)
        res.cache.set("k", {"id": 1})
        caches.append(res.cache)
    plain = all(
        type(cache._stats.counter("get", outcome)) is itertools.count
        for cache in caches for outcome in ("hit", "miss", "error", "skipped_open")
    )
    if not plain or outcomes._hook is not None or transitions._hook is not None:
        raise SystemExit("without the API the cache still reports to a hook")
    cmp = compare(
        {"a": Case(caches[0].get, "k"), "b": Case(caches[1].get, "k")},
        baseline="a", rounds=int(sys.argv[2]), batch=int(sys.argv[3]),
    )
    low = {name: quartiles(values)[0] for name, values in cmp.samples.items()}
    print(json.dumps({"difference": low["b"] - low["a"], "get_us": low["a"]}))
    """
).replace("OVERRIDES", repr(_MEMORY))


def _no_api(root: Path, rounds: int, batch: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _NO_API, str(root), str(rounds), str(batch)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench telemetry (no API): {done.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cost(comparison: Comparison, name: str, base: str) -> float:
    """``name`` minus ``base`` per call, each taken at the lower quartile of its rounds:
    what the code costs when the machine lets it run. Other processes slow some rounds
    of either case by far more than the sub-microsecond difference measured here."""
    return quartiles(comparison.samples[name])[0] - quartiles(comparison.samples[base])[0]


def _cache(root: Path) -> Any:
    import tasker_resilience as tr

    res = tr.configure(env="test", overrides=_MEMORY, root=root, install=False)
    res.cache.set("k", {"id": 1})
    return res.cache


def _run(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from tasker_resilience._operations import telemetry

    rounds, batch = ctx.params["rounds"], ctx.params["batch"]
    was_filled = telemetry.outcomes._hook is not None
    try:
        telemetry.uninstall()
        plain = _cache(ctx.root)
        if not telemetry.install():
            raise RuntimeError("bench telemetry: the OpenTelemetry API is not installed")
        reported = _cache(ctx.root)
        if trace.get_current_span().is_recording():
            raise RuntimeError("bench telemetry: a span records already: not 'no SDK'")
        cases = {"plain": Case(plain.get, "k"), "api_no_sdk": Case(reported.get, "k")}
        no_sdk = compare(cases, baseline="plain", rounds=rounds, batch=batch)
        tracer = TracerProvider().get_tracer("bench")  # an SDK span that records
        with tracer.start_as_current_span("request") as span:
            if not span.is_recording():
                raise RuntimeError("bench telemetry: the SDK span does not record")
            recording = compare(cases, baseline="plain", rounds=rounds, batch=batch)
    finally:
        if not was_filled:
            telemetry.uninstall()
    no_api = _no_api(ctx.root, rounds, batch)
    figures = {
        "otel_cache_call_us": {
            "no_api": round(no_api["difference"], 4),
            "api_no_sdk": round(_cost(no_sdk, "api_no_sdk", "plain"), 4),
        },
        "otel_recording_span_us": round(_cost(recording, "api_no_sdk", "plain"), 4),
    }
    details = {
        "telemetry": {
            "no_api_get_us": round(no_api["get_us"], 4),
            "no_sdk": no_sdk.detail(),
            "recording": recording.detail(),
        }
    }
    return figures, details


STAGES = (
    Stage(
        name="telemetry",
        run=_run,
        order=60,
        parameters={"full": {"rounds": 40, "batch": 5_000}, "quick": {"rounds": 6, "batch": 1_000}},
        figures=(
            Figure(
                "otel_cache_call_us",
                "µs",
                "OpenTelemetry's cost per cache call (a warm `memory` get, interleaved "
                "rounds, difference of the lower quartiles): `no_api` in a process that "
                "cannot import opentelemetry (the plain counters are checked; the figure "
                "is the A/A noise floor of two such caches), "
                "`api_no_sdk` with the API and no recording span (a cache reporting to the "
                "slot against one that does not).",
            ),
        ),
        extra_figures=(
            Figure(
                "otel_recording_span_us",
                "µs",
                "The same inside a span the SDK records: the cache attributes built and set "
                "on the span per call. Recorded, no goal.",
            ),
        ),
        goals=(
            Goal(
                "otel_cache_call_us.no_api",
                "<=",
                0.2,
                "issue 25: at most 0.2 µs per cache call without the API installed",
            ),
            Goal(
                "otel_cache_call_us.api_no_sdk",
                "<=",
                2.0,
                "issue 25: at most 2 µs per cache call with the API and no SDK",
            ),
        ),
    ),
)

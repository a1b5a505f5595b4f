"""``tasker-resilience explain``: what a cache outage will cost, predicted from the settings.

Nothing is contacted: the merged settings (files, variables) and a few numbers about the
load (``--rate``, ``--cache-calls-per-request``, ``--workers``, ``--hit-ratio``) are the
whole input. The model, stated once so every figure can be checked against it:

- **A hung call** (server frozen, connection already open) costs one
  ``socket_timeout_seconds``: its first read times out. No call can cost more than the
  documented bound, ``2 x connect_timeout_seconds + 2 x socket_timeout_seconds``.
- **A worker** is one process serving one request at a time (a sync worker). Requests
  arrive evenly at ``rate`` per second; each makes ``K`` cache calls one after another.
  While the cache hangs, a worker that cannot keep up works back to back.
- **Onset**: the breaker opens on its ``failure_threshold``-th consecutive failure; every
  call before that hangs. Without host sharing each of ``W`` processes pays its own
  onset. With it (``[common.circuit_breakers.host_sharing] enabled``) the host pays
  ``failure_threshold + W`` hung calls, the workers learning of the outage together.
- **Open periods**: while the outage lasts, the breaker stays open ``timeout_seconds``
  (growing up to ``max_timeout_seconds`` where the breaker backs off), then the next call
  is a probe that hangs and re-opens it. A worker's share of time spent on probes is
  Semian's half-open resource cost: ``probe / (open time + wait for a call + probe)``.
- **Origin**: each cache call stands in front of an origin call made on a miss. While the
  circuit is open every read is a miss: the origin takes ``1 / (1 - hit ratio)`` times
  its healthy load. The near tier answers from its stale entries instead, for up to
  ``stale_if_error_seconds``, when the working set fits in ``max_entries``.

``tests/test_explain.py`` checks the per-process figures against ``drill --json`` (its
``outage_cost`` block) for three different settings.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tasker_resilience._config.schema import BreakerConfig, Settings

__all__ = ["CACHE_BREAKER", "Load", "add_parser", "explain", "format_explanation", "run"]

CACHE_BREAKER: Final = "cache"
DEFAULT_RATE: Final = 20.0
DEFAULT_CALLS: Final = 1
DEFAULT_WORKERS: Final = 1
DEFAULT_HIT_RATIO: Final = 0.8


@dataclass(frozen=True)
class Load:
    """What the settings cannot say: the traffic of one host."""

    rate: float = DEFAULT_RATE
    """Requests per second offered to each worker process."""
    cache_calls: int = DEFAULT_CALLS
    """Cache calls per request (K), made one after another."""
    workers: int = DEFAULT_WORKERS
    """Worker processes per host (W), each serving one request at a time."""
    hit_ratio: float = DEFAULT_HIT_RATIO
    """The fraction of cache reads that hit while the cache is healthy."""


def _onset(load: Load, threshold: int, hung: float) -> tuple[float, int]:
    """``(seconds from the onset to the trip, hung calls)`` of one worker: requests
    arrive every ``1 / rate`` (the first half an interval after the onset, on average),
    each making ``K`` calls of ``hung`` seconds; the ``threshold``-th failure trips."""
    interval = 1.0 / load.rate
    now, failures, request = 0.0, 0, 0
    while True:
        now = max(now, (request + 0.5) * interval)
        for _ in range(load.cache_calls):
            now += hung
            failures += 1
            if failures == threshold:
                return now, failures
        request += 1


def _round(value: float) -> float:
    return round(value, 4)


def _cache_breaker(settings: Settings) -> BreakerConfig:
    return settings.circuit_breakers.for_component(CACHE_BREAKER)


def _host_sharing(settings: Settings) -> bool:
    # Host sharing is optional; settings without its table mean "off".
    sharing = getattr(settings.circuit_breakers, "host_sharing", None)
    return bool(getattr(sharing, "enabled", False))


def explain(settings: Settings, load: Load) -> dict[str, Any]:
    """The predictions for ``settings`` under ``load``, JSON-ready (see the module)."""
    breaker = _cache_breaker(settings)
    redis = settings.cache.redis
    near = settings.cache.near
    socket, connect = redis.socket_timeout_seconds, redis.connect_timeout_seconds
    # A breaker that backs off or probes with a budget of its own: read where present.
    probe_timeout = getattr(redis, "probe_socket_timeout_seconds", None)
    probe = min(float(probe_timeout), socket) if probe_timeout else socket
    open_seconds = breaker.timeout_seconds
    max_open = float(getattr(breaker, "max_timeout_seconds", open_seconds) or open_seconds)
    f, k, w = breaker.failure_threshold, load.cache_calls, load.workers
    calls_per_second = load.rate * k
    bound = 2 * connect + 2 * socket

    trip_seconds, hung_calls = _onset(load, f, socket)
    shared_hung = min(w * hung_calls, f + w)
    # The workers hang in parallel: the host's hung calls spread over its W workers.
    shared_trip = _onset(load, max(1, math.ceil(shared_hung / w)), socket)[0]
    wait_for_call = 0.5 / load.rate  # the probe is the first request after the open time

    def period(open_for: float) -> dict[str, float]:
        cycle = open_for + wait_for_call + probe
        return {
            "open_seconds": _round(open_for),
            "period_seconds": _round(cycle),
            "half_open_share": _round(probe / cycle),
        }

    miss = 1.0 - load.hit_ratio
    without_near = math.inf if miss <= 0 else 1.0 / miss
    sharing = _host_sharing(settings)
    per_host = {
        "without_sharing": {
            "hung_calls": w * hung_calls,
            "worker_seconds": _round(w * hung_calls * socket),
            "time_to_trip_seconds": _round(trip_seconds),
        },
        "with_sharing": {
            "hung_calls": shared_hung,
            "worker_seconds": _round(shared_hung * socket),
            "time_to_trip_seconds": _round(shared_trip),
        },
    }
    return {
        "settings": {
            "failure_threshold": f,
            "timeout_seconds": open_seconds,
            "max_timeout_seconds": max_open,
            "success_threshold": breaker.success_threshold,
            "socket_timeout_seconds": socket,
            "connect_timeout_seconds": connect,
            "probe_socket_timeout_seconds": probe,
            "circuit_breakers_enabled": settings.circuit_breakers.enabled,
            "host_sharing": sharing,
            "near_enabled": near.enabled,
            "near_stale_if_error_seconds": near.stale_if_error_seconds,
            "near_max_entries": near.max_entries,
        },
        "load": {
            "rate_per_worker": load.rate,
            "cache_calls_per_request": k,
            "workers": w,
            "hit_ratio": load.hit_ratio,
            "cache_calls_per_second_per_worker": _round(calls_per_second),
        },
        "per_call": {"hung_seconds": socket, "bound_seconds": _round(bound)},
        "onset": {
            "per_process": {
                "hung_calls": hung_calls,
                "worker_seconds": _round(hung_calls * socket),
                "time_to_trip_seconds": _round(trip_seconds),
            },
            "per_host": per_host,
            "per_host_as_configured": per_host["with_sharing" if sharing else "without_sharing"],
        },
        "open_period": {
            "probes_per_process": 1,
            "probe_seconds": _round(probe),
            "first": period(open_seconds),
            "longest": period(max_open),
            "probes_per_host": w,
            "probe_worker_seconds_per_host": _round(w * probe),
        },
        "worst_request": {
            "cache_calls": k,
            "hung_calls": min(k, f),
            "expected_seconds": _round(min(k, f) * socket),
            "bound_seconds": _round(min(k, f) * bound),
            "without_breaker_seconds": _round(k * socket),
        },
        "throughput": {
            "offered_per_worker": load.rate,
            "without_breaker_max_per_worker": _round(1.0 / (k * socket)),
        },
        "origin": {
            "healthy_calls_per_second_per_worker": _round(calls_per_second * miss),
            "amplification_without_near": _round(without_near),
            "amplification_with_near": 1.0 if near.enabled else _round(without_near),
            "near_covers_seconds": near.stale_if_error_seconds if near.enabled else 0.0,
        },
    }


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def format_explanation(result: dict[str, Any]) -> str:
    """The human-readable prediction."""
    s, load = result["settings"], result["load"]
    onset, period = result["onset"], result["open_period"]
    worst, origin = result["worst_request"], result["origin"]
    process, host = onset["per_process"], onset["per_host"]
    k, w = load["cache_calls_per_request"], load["workers"]
    lines = [
        "What a cache outage costs with these settings (a prediction; check it with "
        "`tasker-resilience drill`)",
        f"settings: breaker 'cache' opens after {s['failure_threshold']} failures, stays open "
        f"{s['timeout_seconds']:g} s, closes after {s['success_threshold']} probes; socket "
        f"timeout {_seconds(s['socket_timeout_seconds'])}, connect timeout "
        f"{_seconds(s['connect_timeout_seconds'])}",
        f"load: {load['rate_per_worker']:g} requests/s per worker, {k} cache call(s) each, "
        f"{w} worker process(es) per host, {load['hit_ratio']:.0%} hits while healthy",
        "",
        f"one hung call: {_seconds(result['per_call']['hung_seconds'])} "
        f"(never more than {_seconds(result['per_call']['bound_seconds'])})",
        f"onset, per process: {process['hung_calls']} hung calls, "
        f"{process['worker_seconds']:.2f} worker-seconds, open after "
        f"{_seconds(process['time_to_trip_seconds'])}",
        f"onset, per host: {host['without_sharing']['hung_calls']} hung calls, "
        f"{host['without_sharing']['worker_seconds']:.2f} worker-seconds without host "
        f"sharing; {host['with_sharing']['hung_calls']} and "
        f"{host['with_sharing']['worker_seconds']:.2f} with it "
        f"({'on' if s['host_sharing'] else 'off'} in these settings)",
        f"each open period while it lasts: {period['probes_per_process']} probe per process "
        f"({_seconds(period['probe_seconds'])}), {period['probes_per_host']} per host; "
        f"{period['first']['half_open_share']:.1%} of a worker's time spent probing",
    ]
    if period["longest"]["open_seconds"] != period["first"]["open_seconds"]:
        lines.append(
            f"  open time grows to {period['longest']['open_seconds']:g} s: then "
            f"{period['longest']['half_open_share']:.1%}"
        )
    lines += [
        f"worst request ({k} cache call(s)): {_seconds(worst['expected_seconds'])} "
        f"(bound {_seconds(worst['bound_seconds'])}); without the breaker every request "
        f"pays {_seconds(worst['without_breaker_seconds'])} for the whole outage, "
        f"{result['throughput']['without_breaker_max_per_worker']:.1f} requests/s per worker "
        f"at most (offered {load['rate_per_worker']:g})",
        f"origin load while open: x{origin['amplification_without_near']:.2f} without the "
        "near tier"
        + (
            f", x{origin['amplification_with_near']:.2f} with it for "
            f"{origin['near_covers_seconds']:g} s (entries this process holds)"
            if s["near_enabled"]
            else "; with [common.cache.near] enabled about x1.00 (stale answers)"
        ),
    ]
    if not s["circuit_breakers_enabled"]:
        lines.append("note: circuit_breakers.enabled = false: the breaker never opens")
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0 up to (not including) 1")
    return value


def add_parser(
    commands: Any,
    add_settings_arguments: Callable[[Any], None],
    positive: Callable[[type[float] | type[int]], Callable[[str], Any]],
) -> None:
    """The ``explain`` subcommand, on the CLI's subparsers (with the CLI's own settings
    arguments and number parsing, so every command reads and refuses them alike)."""
    parser = commands.add_parser(
        "explain",
        help="predict what a cache outage costs with the current settings",
        description="Predict, from the merged settings, what a cache outage costs: hung "
        "calls and worker-seconds at onset (per process and per host, with and without "
        "host sharing), time to trip, probe cost per open period, the worst request "
        "latency, and the origin's extra load with and without the near tier. Contacts "
        "nothing.",
    )
    add_settings_arguments(parser)
    for flag, kind, metavar, default, text in (
        ("--rate", float, "N", DEFAULT_RATE, "requests per second per worker process"),
        ("--cache-calls-per-request", int, "K", DEFAULT_CALLS, "cache calls each request makes"),
        ("--workers", int, "W", DEFAULT_WORKERS, "worker processes per host"),
    ):
        parser.add_argument(
            flag,
            type=positive(kind),
            default=default,
            metavar=metavar,
            help=f"{text} (default {default:g})",
        )
    parser.add_argument(
        "--hit-ratio",
        type=_ratio,
        default=DEFAULT_HIT_RATIO,
        help=f"fraction of reads that hit while healthy (default {DEFAULT_HIT_RATIO:g})",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable output")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Read the settings named by ``args`` and print the prediction; returns it."""
    from tasker_resilience._resilience import load_validated

    _, settings = load_validated(args.env, root=args.root)
    load = Load(
        rate=args.rate,
        cache_calls=args.cache_calls_per_request,
        workers=args.workers,
        hit_ratio=args.hit_ratio,
    )
    result = explain(settings, load)
    print(json.dumps(result, indent=2) if args.json else format_explanation(result))
    return result

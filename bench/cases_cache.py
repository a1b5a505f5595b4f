"""The cache provider against a private redis-server: closed, open, and hung.

Closed: ``CacheProvider.get``/``aget`` against redis-py on the *same* client, pool
and server, interleaved. The provider returns the decoded value, so the fair
baseline is the raw ``GET`` of the same full key followed by the same
``serializer.loads`` the provider uses ("raw+decode"). The raw ``GET`` alone
("raw bytes") is timed too and reported, but it does less work than any cache
read a caller could use, so the goal is judged against raw+decode.

Open: the cache breaker forced open (with the longest allowed timeout, so no probe
starts mid-run) answers ``get`` with a miss without touching the network; the
server's command counter proves it.

Hung: the server is frozen (SIGSTOP); one raw client call costs the configured
socket timeout, and the provider, once its breaker has tripped, costs microseconds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .cases_breaker import REJECT_BREAKER, guarded_reject_case, pybreaker_reject_case
from .registry import Figure, Goal, Stage, StageContext
from .timing import Case, Comparison, acompare, compare, run_batch

if TYPE_CHECKING:
    from tasker_resilience import Resilience
    from tasker_resilience._cache.provider import CacheProvider

__all__ = ["STAGES", "CacheResults", "Freezable", "cache_overrides", "measure_cache"]

KEY = "bench:user:42"
VALUE = {"id": 42, "name": "user-42", "active": True, "roles": ["reader"]}
SOCKET_TIMEOUT_SECONDS = 0.25
"""The shipped default of ``cache.redis.socket_timeout_seconds``: what a hung call costs."""
FAILURE_THRESHOLD = 5
OPEN_TIMEOUT_SECONDS = 300
"""The longest allowed: the forced-open breaker must not start probing mid-measurement."""
HUNG_RAW_CALLS = 4


class Freezable(Protocol):
    """The part of ``LocalServer`` the hung measurement needs."""

    def freeze(self) -> None: ...
    def thaw(self) -> None: ...


def cache_overrides(url: str) -> dict[str, Any]:
    """Settings for a redis-backed provider on ``url`` with the shipped timeouts."""
    return {
        "common": {
            "cache": {
                "enabled": True,
                "backend": "redis",
                "key_prefix": "bench",
                "serializer": "json",
                "redis": {
                    "url": url,
                    "max_connections": 10,
                    "connect_timeout_seconds": 0.5,
                    "socket_timeout_seconds": SOCKET_TIMEOUT_SECONDS,
                },
            },
            "circuit_breakers": {
                "enabled": True,
                "component_configs": {
                    name: {
                        "failure_threshold": FAILURE_THRESHOLD,
                        "timeout_seconds": OPEN_TIMEOUT_SECONDS,
                        "success_threshold": 2,
                    }
                    for name in ("cache", REJECT_BREAKER)
                },
            },
        }
    }


@dataclass
class CacheResults:
    closed_sync: Comparison | None = None
    closed_async: Comparison | None = None
    open_sync: Comparison | None = None
    open_async: Comparison | None = None
    hung: dict[str, Any] = field(default_factory=dict)


def _raw_client(provider: CacheProvider) -> Any:
    """The provider backend's own redis-py client (same pool, same server)."""
    backend: Any = provider.backend
    return backend.client


def _raw_async_client(provider: CacheProvider) -> Any:
    """The backend's redis.asyncio client of the running loop (the one ``aget`` uses)."""
    backend: Any = provider.backend
    return backend.async_client


def _commands_processed(client: Any) -> int:
    return int(client.info("stats")["total_commands_processed"])


def _full_key(client: Any) -> bytes:
    """The one key the provider stored, found on the (private, emptied) server: the
    benchmark does not guess the provider's key layout."""
    keys = client.keys("*")
    if len(keys) != 1:
        raise RuntimeError(f"expected exactly one key on the private server, found {keys!r}")
    return bytes(keys[0])


def _hits(provider: CacheProvider, op: str) -> int:
    return provider.stats().get(op, {}).get("hit", 0)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def measure_closed_sync(
    provider: CacheProvider, loads: Callable[[bytes], Any], *, rounds: int, batch: int
) -> Comparison:
    client = _raw_client(provider)
    full_key = _full_key(client)
    raw_get = client.get

    def raw_decoded(key: bytes) -> Any:
        return loads(raw_get(key))

    _expect(provider.get(KEY) == VALUE == raw_decoded(full_key), "provider and raw disagree")
    hits = _hits(provider, "get")
    result = compare(
        {
            "provider": Case(provider.get, KEY),
            "raw+decode": Case(raw_decoded, full_key),
            "raw bytes": Case(raw_get, full_key),
        },
        baseline="raw+decode",
        rounds=rounds,
        batch=batch,
    )
    _expect(_hits(provider, "get") - hits >= rounds * batch, "provider.get did not hit")
    _expect(provider.circuit_state == "closed", "the breaker left closed during a closed run")
    return result


async def measure_closed_async(
    provider: CacheProvider, loads: Callable[[bytes], Any], *, rounds: int, batch: int
) -> Comparison:
    client, aclient = _raw_client(provider), _raw_async_client(provider)
    full_key = _full_key(client)
    raw_aget: Callable[[bytes], Awaitable[Any]] = aclient.get

    async def raw_decoded(key: bytes) -> Any:
        return loads(await raw_aget(key))

    _expect(await provider.aget(KEY) == VALUE == await raw_decoded(full_key), "disagreement")
    hits = _hits(provider, "get")
    result = await acompare(
        {
            "provider": Case(provider.aget, KEY),
            "raw+decode": Case(raw_decoded, full_key),
            "raw bytes": Case(raw_aget, full_key),
        },
        baseline="raw+decode",
        rounds=rounds,
        batch=batch,
    )
    _expect(_hits(provider, "get") - hits >= rounds * batch, "provider.aget did not hit")
    return result


def measure_open(
    res: Resilience, provider: CacheProvider, *, rounds: int, batch: int
) -> Comparison:
    client = _raw_client(provider)
    breaker = provider.breaker
    _expect(breaker is not None, "a redis provider has a breaker")
    assert breaker is not None
    breaker.force_open()
    try:
        _expect(provider.circuit_state == "open", "force_open did not open the cache breaker")
        _expect(provider.get(KEY) is None, "an open provider must answer get with a miss")
        before = _commands_processed(client)
        result = compare(
            {
                "provider.get": Case(provider.get, KEY),
                "pybreaker": pybreaker_reject_case(),
                "breaker_guarded": guarded_reject_case(res),
            },
            baseline="pybreaker",
            rounds=rounds,
            batch=batch,
        )
        # The INFO calls themselves are the only commands the server may have seen.
        seen = _commands_processed(client) - before
        _expect(seen <= 2, f"the open provider sent {seen} commands to the server")
        _expect(provider.circuit_state == "open", "the breaker closed during the open run")
        _expect(res.breakers.get(REJECT_BREAKER).is_open, "the guarded breaker closed mid-run")
    finally:
        breaker.reset()
    return result


async def measure_open_async(provider: CacheProvider, *, rounds: int, batch: int) -> Comparison:
    breaker = provider.breaker
    assert breaker is not None
    breaker.force_open()
    try:
        _expect(await provider.aget(KEY) is None, "an open provider must answer aget with a miss")
        return await acompare(
            {"provider.aget": Case(provider.aget, KEY)},
            baseline="provider.aget",
            rounds=rounds,
            batch=batch,
        )
    finally:
        breaker.reset()


def measure_hung(provider: CacheProvider, server: Freezable, *, batch: int) -> dict[str, Any]:
    """Per-call cost with the server frozen: raw client, then the provider until and
    after its breaker trips."""
    client = _raw_client(provider)
    breaker = provider.breaker
    assert breaker is not None
    _expect(provider.circuit_state == "closed", "hung run must start closed")
    server.freeze()
    try:
        raw_ms = []
        for _ in range(HUNG_RAW_CALLS):
            start = time.perf_counter()
            try:
                client.get(KEY)
            except Exception:  # the timeout the figure is about
                pass
            else:
                raise RuntimeError("a GET to a frozen server answered")
            raw_ms.append((time.perf_counter() - start) * 1000)
        trip_start = time.perf_counter()
        calls_to_trip = 0
        while not breaker.is_open:
            calls_to_trip += 1
            _expect(calls_to_trip <= 10 * FAILURE_THRESHOLD, "the breaker never tripped")
            _expect(provider.get(KEY) is None, "a hung get must read as a miss")
        trip_ms = (time.perf_counter() - trip_start) * 1000
        after_ms = run_batch(provider.get, KEY, batch) / 1000.0
        _expect(breaker.is_open, "the breaker closed while the server was still frozen")
    finally:
        server.thaw()
    return {
        "without_breaker": round(statistics.median(raw_ms), 3),
        "with_breaker_after_trip": round(after_ms, 6),
        "detail": {
            "raw_calls_ms": [round(v, 3) for v in raw_ms],
            "socket_timeout_seconds": SOCKET_TIMEOUT_SECONDS,
            "calls_to_trip": calls_to_trip,
            "time_to_trip_ms": round(trip_ms, 3),
            "failure_threshold": FAILURE_THRESHOLD,
            "calls_timed_after_trip": batch,
        },
    }


def measure_cache(
    url: str,
    server: Freezable,
    root: Path,
    *,
    rounds: int,
    batch: int,
    open_rounds: int,
    open_batch: int,
) -> CacheResults:
    """Every provider measurement on one provider, one pool, one event loop."""
    import tasker_resilience as tr
    from tasker_resilience._cache.serializers import get_serializer

    res = tr.configure(env="test", overrides=cache_overrides(url), root=root, install=False)
    provider = res.cache
    _expect(provider.distributed and provider.backend_name == "redis", "not a redis provider")
    loads = get_serializer(res.settings.cache.serializer).loads
    client = _raw_client(provider)
    client.flushdb()  # the private server of this run; never the shared one
    provider.set(KEY, VALUE)
    results = CacheResults()
    loop = asyncio.new_event_loop()
    try:
        results.closed_sync = measure_closed_sync(provider, loads, rounds=rounds, batch=batch)
        results.closed_async = loop.run_until_complete(
            measure_closed_async(provider, loads, rounds=rounds, batch=batch)
        )
        results.open_sync = measure_open(res, provider, rounds=open_rounds, batch=open_batch)
        results.open_async = loop.run_until_complete(
            measure_open_async(provider, rounds=open_rounds, batch=open_batch)
        )
        results.hung = measure_hung(provider, server, batch=open_batch)
    finally:
        loop.run_until_complete(provider.aclose())
        provider.close()
        loop.close()
    return results


# --- the stage run.py finds ---------------------------------------------------------------


def _r(value: float, digits: int = 4) -> float:
    return round(value, digits)


def _run_stage(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    from tasker_resilience._operations.drill.local_server import LocalServer

    params = ctx.params
    # A private server on a free loopback port (never the shared one), always stopped.
    with LocalServer(ctx.server_binary) as server:
        server_info = {"kind": server.kind, "version": server.version()}
        cache = measure_cache(
            server.url,
            server,
            ctx.root,
            rounds=params["closed_rounds"],
            batch=params["closed_batch"],
            open_rounds=params["open_rounds"],
            open_batch=params["open_batch"],
        )
    assert cache.closed_sync is not None
    assert cache.closed_async is not None
    assert cache.open_sync is not None
    assert cache.open_async is not None
    hung = dict(cache.hung)
    hung_detail = hung.pop("detail")
    figures = {
        "closed_get_ratio_sync": _r(cache.closed_sync.ratios["provider"]),
        "closed_get_ratio_async": _r(cache.closed_async.ratios["provider"]),
        "open_get_us": _r(cache.open_sync.per_call_us["provider.get"]),
        "pybreaker_reject_us": _r(cache.open_sync.per_call_us["pybreaker"]),
        "hung_call_ms": hung,
        "closed_get_ratio_sync_vs_raw_bytes": _r(
            cache.closed_sync.per_call_us["provider"] / cache.closed_sync.per_call_us["raw bytes"]
        ),
        "closed_get_ratio_async_vs_raw_bytes": _r(
            cache.closed_async.per_call_us["provider"] / cache.closed_async.per_call_us["raw bytes"]
        ),
        "closed_get_raw_us": {
            "sync": _r(cache.closed_sync.per_call_us["raw+decode"], 2),
            "async": _r(cache.closed_async.per_call_us["raw+decode"], 2),
        },
        "closed_get_overhead_us": {
            "sync": _r(cache.closed_sync.difference("provider", "raw+decode"), 3),
            "async": _r(cache.closed_async.difference("provider", "raw+decode"), 3),
        },
        "open_aget_us": _r(cache.open_async.per_call_us["provider.aget"]),
        "guarded_reject_us": _r(cache.open_sync.per_call_us["breaker_guarded"]),
    }
    details = {
        "server": server_info,
        "closed_sync": cache.closed_sync.detail(),
        "closed_async": cache.closed_async.detail(),
        "open_sync": cache.open_sync.detail(),
        "open_async": cache.open_async.detail(),
        "hung": hung_detail,
    }
    return figures, details


STAGES = (
    Stage(
        name="cache",
        run=_run_stage,
        order=10,
        # Rounds x batch sized for ~1 minute on 2 cores: enough rounds that the median
        # ratio moves by well under the goal margins from run to run.
        parameters={
            "full": {
                "closed_rounds": 1500,
                "closed_batch": 20,
                "open_rounds": 40,
                "open_batch": 20_000,
            },
            "quick": {
                "closed_rounds": 40,
                "closed_batch": 20,
                "open_rounds": 6,
                "open_batch": 5_000,
            },
        },
        figures=(
            Figure(
                "closed_get_ratio_sync",
                "x",
                "`CacheProvider.get` (breaker closed, hit) divided by a raw redis-py `GET` of "
                "the same full key on the same client, pool and server, followed by the same "
                "`serializer.loads` the provider applies. 1.00 means the breaker, key "
                "prefixing, stats and error handling cost nothing measurable next to the "
                "round trip.",
            ),
            Figure(
                "closed_get_ratio_async",
                "x",
                "The same for `await CacheProvider.aget` against `await "
                "redis.asyncio.Redis.get` (+ the same decode) on the provider's own asyncio "
                "client.",
            ),
            Figure(
                "open_get_us",
                "µs",
                "One `CacheProvider.get` while the cache breaker is open: the miss answered "
                "without touching the network (the server's command counter is checked to "
                "stay still). Includes the ~0.02 µs of the timing loop.",
            ),
            Figure(
                "pybreaker_reject_us",
                "µs",
                "pybreaker 1.4 `CircuitBreaker.call` rejecting while open, with the "
                "`try/except CircuitBreakerError` a caller needs to turn that into a miss; "
                "timed interleaved with `open_get_us`.",
            ),
            Figure(
                "hung_call_ms",
                "ms",
                "Cost of one cache read while the server is frozen by SIGSTOP: "
                "`without_breaker` is the provider's own redis-py client (socket timeout "
                "0.25 s, retries off) on its own; `with_breaker_after_trip` is "
                "`CacheProvider.get` once the breaker has opened.",
            ),
        ),
        extra_figures=(
            Figure(
                "closed_get_ratio_sync_vs_raw_bytes",
                "x",
                "`CacheProvider.get` against the raw `GET` alone (no decode): what the "
                "decode adds on top of the provider's own cost. Not the goal figure: a raw "
                "`GET` returns bytes no caller can use as the value.",
            ),
            Figure("closed_get_ratio_async_vs_raw_bytes", "x", "The same for `aget`."),
            Figure(
                "closed_get_raw_us",
                "µs",
                "The baseline of the closed ratios: one raw `GET` + decode over loopback, "
                "sync and async. The ratio's denominator: the same provider cost weighs "
                "more when the round trip is short (an idle machine) than when it is long "
                "(a busy one).",
            ),
            Figure(
                "closed_get_overhead_us",
                "µs",
                "What the provider adds to one closed `get`/`aget` (median per-round "
                "difference to raw+decode): breaker admission and outcome, key prefix, stats.",
            ),
            Figure("open_aget_us", "µs", "`await CacheProvider.aget` while open."),
            Figure(
                "guarded_reject_us",
                "µs",
                "`@breaker_guarded(fallback=None)` rejecting while open (the generic guard, "
                "not the cache provider).",
            ),
        ),
        goals=(
            Goal(
                "closed_get_ratio_sync", "<=", 1.05, "the breaker must not cost speed when healthy"
            ),
            Goal("closed_get_ratio_async", "<=", 1.05, "the same for asyncio"),
            Goal("open_get_us", "<=", 1.0, "an open circuit answers at once"),
        ),
    ),
)

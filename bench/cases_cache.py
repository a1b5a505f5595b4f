"""The cache provider against a private redis-server: closed, open, and hung.

Closed: ``CacheProvider.get``/``aget`` against plain redis-py clients on the same
server, interleaved. The baseline is redis-py as a careful user would configure it
without this library: ``redis.Redis`` on a ``BlockingConnectionPool`` with the same
URL, timeouts and pool size, and redis-py's own connection and queue classes (sync);
for ``aget``, the ``redis.asyncio`` client the backend uses, which is redis-py's own.
The provider returns the decoded value, so the fair baseline is the raw ``GET`` of
the same full key (a str, as users write keys) followed by the same
``serializer.loads`` the provider uses ("raw+decode"). Everything the library puts
in between counts as its overhead: breaker, key prefix, stats, the per-command I/O
deadline and its pool queue. The raw ``GET`` alone ("raw bytes") and a sync client
with redis-py's defaults (a non-blocking ``ConnectionPool``: "default client") are
timed too and reported; the goal is judged against raw+decode.

Open: the cache breaker forced open (with the longest allowed timeout, so no probe
starts mid-run) answers ``get`` with a miss without touching the network; the
server's command counter proves it.

Hung: the server is frozen (SIGSTOP); one raw client call costs the configured
socket timeout, and the provider, once its breaker has tripped, costs microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .cases_breaker import (
    REJECT_BREAKER,
    circuitbreaker_fallback_case,
    guarded_fallback_case,
    guarded_reject_case,
    pybreaker_reject_case,
)
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
HANG_THREADS = 16
POOL_SIZE = 10
PLACEMENTS = ("shared_vcpu", "separate_vcpu")
"""Where redis-server and this client run: on one vCPU (every round trip includes two
context switches on it) or on two (the round trip overlaps): the same provider
overhead in µs weighs differently against the two round trips."""


class Freezable(Protocol):
    """The part of ``LocalServer`` the hung measurement needs."""

    def freeze(self) -> None: ...
    def thaw(self) -> None: ...


class LocalServerLike(Freezable, Protocol):
    """The part of ``LocalServer`` the whole stage needs (its pid, for pinning)."""

    @property
    def pid(self) -> int | None: ...


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
                    "max_connections": POOL_SIZE,
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
    closed_sync: dict[str, Comparison] = field(default_factory=dict)
    """Per placement."""
    closed_async: dict[str, Comparison] = field(default_factory=dict)
    placement_cpus: dict[str, Any] = field(default_factory=dict)
    closed_cpu: Comparison | None = None
    open_sync: Comparison | None = None
    open_async: Comparison | None = None
    hung: dict[str, Any] = field(default_factory=dict)
    threads16: dict[str, Any] = field(default_factory=dict)


def _tasks(pid: int) -> list[int]:
    try:
        return [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def _set_affinity(pid: int, cpus: set[int]) -> None:
    # Every thread: redis-server's I/O and background threads, and this process's own.
    for task in _tasks(pid):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(task, cpus)


@contextmanager
def placement(server_pid: int, where: str) -> Iterator[dict[str, Any] | None]:
    """Pin redis-server and this process (all threads) for one placement; restore after.
    Yields the CPUs used, or None when the placement is impossible here (one CPU)."""
    available = sorted(os.sched_getaffinity(0))
    server_before = os.sched_getaffinity(server_pid)
    if where == "shared_vcpu":
        server_cpu, client_cpu = available[0], available[0]
    elif len(available) >= 2:
        server_cpu, client_cpu = available[0], available[1]
    else:
        yield None
        return
    _set_affinity(server_pid, {server_cpu})
    _set_affinity(os.getpid(), {client_cpu})
    try:
        yield {"server_cpu": server_cpu, "client_cpu": client_cpu}
    finally:
        _set_affinity(os.getpid(), set(available))
        _set_affinity(server_pid, server_before)


def _raw_client(provider: CacheProvider) -> Any:
    """The provider backend's own redis-py client (same pool, same server)."""
    backend: Any = provider.backend
    return backend.client


def _plain_client(provider: CacheProvider, *, default_pool: bool = False) -> Any:
    """A redis-py client of the backend's server built with redis-py's own classes:
    the same URL, timeouts and blocking pool (or, ``default_pool``, redis-py's
    default non-blocking pool), none of this library's connection or queue classes."""
    import redis

    backend: Any = provider.backend  # a RedisBackend
    config = backend.config
    options = {
        "socket_timeout": config.socket_timeout_seconds,
        "socket_connect_timeout": config.connect_timeout_seconds,
    }
    if default_pool:
        return redis.Redis.from_url(config.url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        timeout=config.connect_timeout_seconds,
        **options,
    )
    return redis.Redis.from_pool(pool)


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
    client, default = _plain_client(provider), _plain_client(provider, default_pool=True)
    full_key = _full_key(_raw_client(provider)).decode()
    raw_get, default_get = client.get, default.get

    def raw_decoded(key: str) -> Any:
        return loads(raw_get(key))

    def default_decoded(key: str) -> Any:
        return loads(default_get(key))

    _expect(provider.get(KEY) == VALUE == raw_decoded(full_key), "provider and raw disagree")
    _expect(default_decoded(full_key) == VALUE, "the default client disagrees")
    hits = _hits(provider, "get")
    try:
        result = compare(
            {
                "provider": Case(provider.get, KEY),
                "raw+decode": Case(raw_decoded, full_key),
                "raw bytes": Case(raw_get, full_key),
                "default client": Case(default_decoded, full_key),
            },
            baseline="raw+decode",
            rounds=rounds,
            batch=batch,
        )
    finally:
        client.close()
        default.close()
    _expect(_hits(provider, "get") - hits >= rounds * batch, "provider.get did not hit")
    _expect(provider.circuit_state == "closed", "the breaker left closed during a closed run")
    return result


async def measure_closed_async(
    provider: CacheProvider, loads: Callable[[bytes], Any], *, rounds: int, batch: int
) -> Comparison:
    client, aclient = _raw_client(provider), _raw_async_client(provider)
    full_key = _full_key(client).decode()
    raw_aget: Callable[[str], Awaitable[Any]] = aclient.get

    async def raw_decoded(key: str) -> Any:
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


class _Answering:
    """A distributed backend that answers every ``get`` with one stored value, at
    once: the provider's own work on a closed hit, with no I/O to hide or inflate it."""

    name = "answering"
    distributed = True

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def get(self, key: str) -> bytes:
        return self.raw

    async def aget(self, key: str) -> bytes:
        return self.raw

    def is_backend_failure(self, exc: BaseException) -> bool:
        return True


def measure_closed_cpu(
    res: Resilience, raw: bytes, loads: Callable[[bytes], Any], *, rounds: int, batch: int
) -> Comparison:
    """A closed-circuit ``get`` through a provider (own breaker, same serializer) over
    a backend that answers from memory, against the same backend's ``get`` + decode:
    what the library adds per call in CPU alone, warm, with nothing in between."""
    from tasker_resilience import CacheProvider

    backend = _Answering(raw)
    provider = CacheProvider(
        backend,  # type: ignore[arg-type]  # the two operations a closed get uses
        breaker=res.breakers.get("bench-cpu", create=True),
        key_prefix="bench",
        serializer="json",
    )
    answer = backend.get

    def raw_decoded(key: str) -> Any:
        return loads(answer(key))

    _expect(provider.get(KEY) == VALUE == raw_decoded(KEY), "the answering provider disagrees")
    return compare(
        {
            "provider": Case(provider.get, KEY),
            "raw+decode": Case(raw_decoded, KEY),
            "decode": Case(loads, raw),
        },
        baseline="raw+decode",
        rounds=rounds,
        batch=batch,
    )


def _lookup_record(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "name": f"user-{user_id}", "active": True, "roles": ["reader"]}


def _lookup_page(page: int) -> list[dict[str, Any]]:
    from .cases_shapes import page_of_records

    return page_of_records(page)


def measure_open(
    res: Resilience, provider: CacheProvider, *, rounds: int, batch: int
) -> Comparison:
    from tasker_resilience._cache.cached import cached

    client = _raw_client(provider)
    breaker = provider.breaker
    _expect(breaker is not None, "a redis provider has a breaker")
    assert breaker is not None
    cached_record = cached(ttl=60, namespace="bench-open")(_lookup_record)
    cached_page = cached(ttl=60, namespace="bench-open")(_lookup_page)
    breaker.force_open()
    try:
        _expect(provider.circuit_state == "open", "force_open did not open the cache breaker")
        _expect(provider.get(KEY) is None, "an open provider must answer get with a miss")
        skipped = provider.stats()["get"].get("skipped_open", 0)
        _expect(cached_record(42) == _lookup_record(42), "an open @cached call must compute")
        _expect(
            provider.stats()["get"].get("skipped_open", 0) == skipped + 1,
            "the open @cached call was not a skipped read",
        )
        before = _commands_processed(client)
        result = compare(
            {
                "provider.get": Case(provider.get, KEY),
                "pybreaker": pybreaker_reject_case(),
                "breaker_guarded": guarded_reject_case(res),
                "guarded_fallback": guarded_fallback_case(res),
                "circuitbreaker": circuitbreaker_fallback_case(),
                "cached_open": Case(cached_record, 42),
                "bare": Case(_lookup_record, 42),
            },
            baseline="pybreaker",
            rounds=rounds,
            batch=batch,
        )
        # A 6 KB result costs ~50x more to build: its own comparison, smaller batches.
        large = compare(
            {"cached_open_6kb": Case(cached_page, 7), "bare_6kb": Case(_lookup_page, 7)},
            baseline="bare_6kb",
            rounds=rounds,
            batch=max(2, batch // 50),
        )
        result.samples.update(large.samples)
        result.per_call_us.update(large.per_call_us)
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
    """Per-call cost with the server frozen: the raw client; then ``@cached`` calls one
    after another until the breaker trips (each one's wait, and the time to trip);
    then ``get`` once it has tripped."""
    from tasker_resilience._cache.cached import cached

    client = _raw_client(provider)
    breaker = provider.breaker
    assert breaker is not None
    computed: list[int] = []

    def lookup(user_id: int) -> dict[str, Any]:
        computed.append(user_id)
        return _lookup_record(user_id)

    cached_lookup = cached(ttl=60, namespace="bench-hang")(lookup)
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
        call_ms: list[float] = []
        trip_start = time.perf_counter()
        while not breaker.is_open:
            _expect(len(call_ms) < 10 * FAILURE_THRESHOLD, "the breaker never tripped")
            start = time.perf_counter()
            _expect(cached_lookup(len(call_ms)) == _lookup_record(len(call_ms)), "wrong result")
            call_ms.append((time.perf_counter() - start) * 1000)
        trip_ms = (time.perf_counter() - trip_start) * 1000
        _expect(len(computed) == len(call_ms), "a hung @cached call did not compute")
        after_ms = run_batch(provider.get, KEY, batch) / 1000.0
        _expect(breaker.is_open, "the breaker closed while the server was still frozen")
    finally:
        server.thaw()
    return {
        "without_breaker": round(statistics.median(raw_ms), 3),
        "with_breaker_after_trip": round(after_ms, 6),
        "cached_call_ms": [round(v, 3) for v in call_ms],
        "time_to_trip_ms": round(trip_ms, 3),
        "detail": {
            "raw_calls_ms": [round(v, 3) for v in raw_ms],
            "socket_timeout_seconds": SOCKET_TIMEOUT_SECONDS,
            "calls_to_trip": len(call_ms),
            "failure_threshold": FAILURE_THRESHOLD,
            "calls_timed_after_trip": batch,
        },
    }


def measure_threads16(provider: CacheProvider, server: Freezable) -> dict[str, Any]:
    """HANG_THREADS threads read at once through a pool of POOL_SIZE while the server
    is frozen: how long the slowest waits (pool wait included)."""
    breaker = provider.breaker
    assert breaker is not None
    breaker.reset()
    barrier = threading.Barrier(HANG_THREADS + 1)
    waits = [0.0] * HANG_THREADS
    answers: list[Any] = [0] * HANG_THREADS

    def reader(index: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        answers[index] = provider.get(KEY)
        waits[index] = time.perf_counter() - start

    # Fill the pool while healthy: the figure is about waiting, not connecting.
    warm = [threading.Thread(target=provider.get, args=(KEY,)) for _ in range(2 * POOL_SIZE)]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()
    server.freeze()
    try:
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(HANG_THREADS)]
        for thread in threads:
            thread.start()
        barrier.wait()
        for thread in threads:
            thread.join(timeout=30)
        _expect(all(answer is None for answer in answers), "a read of a frozen server answered")
    finally:
        server.thaw()
        breaker.reset()
    waits_ms = sorted(round(w * 1000, 3) for w in waits)
    return {
        "max_wait_ms": waits_ms[-1],
        "waits_ms": waits_ms,
        "threads": HANG_THREADS,
        "pool": POOL_SIZE,
        "socket_timeout_seconds": SOCKET_TIMEOUT_SECONDS,
    }


def measure_cache(
    url: str,
    server: LocalServerLike,
    root: Path,
    *,
    rounds: int,
    batch: int,
    open_rounds: int,
    open_batch: int,
) -> CacheResults:
    """Every provider measurement on one provider, one pool, one event loop; the
    provider is the process-wide one (``@cached`` measurements use it), reset after."""
    import tasker_resilience as tr
    from tasker_resilience._cache.serializers import get_serializer
    from tasker_resilience.testing import reset

    res = tr.configure(env="test", overrides=cache_overrides(url), root=root)
    provider = res.cache
    _expect(provider.distributed and provider.backend_name == "redis", "not a redis provider")
    loads = get_serializer(res.settings.cache.serializer).loads
    client = _raw_client(provider)
    client.flushdb()  # the private server of this run; never the shared one
    provider.set(KEY, VALUE)
    results = CacheResults()
    loop = asyncio.new_event_loop()
    server_pid = server.pid
    assert server_pid is not None
    try:
        for where in PLACEMENTS:
            with placement(server_pid, where) as cpus:
                if cpus is None:
                    continue
                results.placement_cpus[where] = cpus
                results.closed_sync[where] = measure_closed_sync(
                    provider, loads, rounds=rounds, batch=batch
                )
                results.closed_async[where] = loop.run_until_complete(
                    measure_closed_async(provider, loads, rounds=rounds, batch=batch)
                )
        results.closed_cpu = measure_closed_cpu(
            res, _raw_client(provider).get(_full_key(client)), loads, rounds=rounds, batch=batch
        )
        results.open_sync = measure_open(res, provider, rounds=open_rounds, batch=open_batch)
        results.open_async = loop.run_until_complete(
            measure_open_async(provider, rounds=open_rounds, batch=open_batch)
        )
        results.hung = measure_hung(provider, server, batch=open_batch)
        breaker = provider.breaker
        assert breaker is not None
        breaker.reset()
        results.threads16 = measure_threads16(provider, server)
    finally:
        loop.run_until_complete(provider.aclose())
        loop.close()
        reset()
    return results


# --- the stage run.py finds ---------------------------------------------------------------


def _r(value: float, digits: int = 4) -> float:
    return round(value, digits)


def _per_placement(
    comparisons: dict[str, Comparison], value: Callable[[Comparison], float], digits: int
) -> dict[str, float]:
    return {where: _r(value(result), digits) for where, result in comparisons.items()}


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
    sync, asyncs = cache.closed_sync, cache.closed_async
    opened, cpu = cache.open_sync, cache.closed_cpu
    assert opened is not None
    assert cpu is not None
    assert cache.open_async is not None
    # The headline ratios: redis-server on its own vCPU (as on a separate host).
    headline = "separate_vcpu" if "separate_vcpu" in sync else "shared_vcpu"
    hung = dict(cache.hung)
    hung_detail = hung.pop("detail")
    cached_call_ms = hung.pop("cached_call_ms")
    time_to_trip_ms = hung.pop("time_to_trip_ms")
    timeout_ms = SOCKET_TIMEOUT_SECONDS * 1000
    figures = {
        "closed_get_ratio_sync": _r(sync[headline].ratios["provider"]),
        "closed_get_ratio_async": _r(asyncs[headline].ratios["provider"]),
        "closed_get_overhead_us": {
            where: {
                "sync": _r(sync[where].difference("provider", "raw+decode"), 3),
                "async": _r(asyncs[where].difference("provider", "raw+decode"), 3),
            }
            for where in sync
        },
        "closed_get_cpu_us": {
            # What the library's own code costs warm (no I/O), and how the same JSON
            # decode reads inside the round-trip loop: the gap is the cold-cache cost
            # of code run right after a syscall, which any added code pays too.
            "provider_overhead_warm": _r(cpu.difference("provider", "raw+decode"), 3),
            "decode_warm": _r(cpu.per_call_us["decode"], 3),
            "decode_in_round_trip": {
                where: _r(sync[where].difference("raw+decode", "raw bytes"), 3) for where in sync
            },
        },
        "closed_get_overhead_vs_default_client_us": {
            where: _r(sync[where].difference("provider", "default client"), 3) for where in sync
        },
        "closed_get_raw_us": {
            where: {
                "sync": _r(sync[where].per_call_us["raw+decode"], 2),
                "async": _r(asyncs[where].per_call_us["raw+decode"], 2),
            }
            for where in sync
        },
        "open_get_us": _r(opened.per_call_us["provider.get"]),
        "pybreaker_reject_us": _r(opened.per_call_us["pybreaker"]),
        "cached_open_overhead_us": _r(opened.difference("cached_open", "bare"), 3),
        "guarded_open_fallback_ratio_vs_circuitbreaker": _r(
            opened.ratio("guarded_fallback", "circuitbreaker"), 3
        ),
        "hang_cached_call_ratio": _r(statistics.median(cached_call_ms) / timeout_ms, 3),
        "hang_threads16_max_wait_ratio": _r(cache.threads16["max_wait_ms"] / timeout_ms, 3),
        "time_to_trip_ms": _r(time_to_trip_ms, 1),
        "hung_call_ms": hung,
        "closed_get_ratio_sync_vs_raw_bytes": _r(
            sync[headline].per_call_us["provider"] / sync[headline].per_call_us["raw bytes"]
        ),
        "closed_get_ratio_async_vs_raw_bytes": _r(
            asyncs[headline].per_call_us["provider"] / asyncs[headline].per_call_us["raw bytes"]
        ),
        "closed_get_ratio_by_placement": {
            where: {
                "sync": _r(sync[where].ratios["provider"]),
                "async": _r(asyncs[where].ratios["provider"]),
            }
            for where in sync
        },
        "cached_open_overhead_6kb_us": _r(opened.difference("cached_open_6kb", "bare_6kb"), 3),
        "open_peer_us": {
            name: _r(opened.per_call_us[name], 4)
            for name in ("guarded_fallback", "circuitbreaker", "cached_open", "bare")
        },
        "open_aget_us": _r(cache.open_async.per_call_us["provider.aget"]),
        "guarded_reject_us": _r(opened.per_call_us["breaker_guarded"]),
    }
    details = {
        "server": server_info,
        "placements": cache.placement_cpus,
        "headline_placement": headline,
        **{f"closed_sync_{where}": result.detail() for where, result in sync.items()},
        **{f"closed_async_{where}": result.detail() for where, result in asyncs.items()},
        "open_sync": opened.detail(),
        "open_async": cache.open_async.detail(),
        "hung": {**hung_detail, "cached_call_ms": cached_call_ms},
        "hang_threads16": cache.threads16,
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
                "closed_rounds": 1000,
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
                "closed_get_overhead_us",
                "µs",
                "What the library adds to one closed `get`/`aget` (median per-round "
                "difference to a raw redis-py `GET` of the same full key, followed by the "
                "same decode, on a plain redis-py client with the same URL, timeouts and "
                "blocking pool): breaker admission and outcome, key prefix, stats, the "
                "per-command I/O deadline and the pool queue. Measured twice, with "
                "redis-server and the client pinned (`os.sched_setaffinity`, every thread) "
                "to one shared vCPU and to two separate vCPUs. It does not depend on the "
                "round trip, but it is the difference of two ~100 µs medians: a few µs of "
                "noise either way, and it can come out negative (the library's connection "
                "and pool classes do less per command than redis-py's blocking pool).",
            ),
            Figure(
                "closed_get_raw_us",
                "µs",
                "The raw round trip (`GET` + decode) of each placement: the denominator "
                "that turns the same overhead into different ratios.",
            ),
            Figure(
                "closed_get_ratio_sync",
                "x",
                "`CacheProvider.get` (closed, hit) divided by the raw `GET` + decode, "
                "redis-server on its own vCPU (`closed_get_ratio_by_placement` has both).",
            ),
            Figure("closed_get_ratio_async", "x", "The same for `aget`."),
            Figure(
                "open_get_us",
                "µs",
                "One `CacheProvider.get` while the cache breaker is open: the miss answered "
                "without touching the network (the server's command counter is checked to "
                "stay still). Includes the ~0.02 µs of the timing loop.",
            ),
            Figure(
                "cached_open_overhead_us",
                "µs",
                "A `@tr.cached` call while the cache breaker is open, minus the bare "
                "function's call (same argument, same result), median per-round difference.",
            ),
            Figure(
                "guarded_open_fallback_ratio_vs_circuitbreaker",
                "x",
                "`@breaker_guarded(fallback=f)` while open divided by the `circuitbreaker` "
                "package's `@circuit(fallback_function=f)` while open (both call `f` with "
                "the call's arguments).",
            ),
            Figure(
                "hang_cached_call_ratio",
                "x",
                "One `@tr.cached` call while the server is frozen (SIGSTOP) and the breaker "
                "has not tripped yet (median of the calls until it trips), divided by the "
                "socket timeout (0.25 s): 1.0 means one timeout per call.",
            ),
            Figure(
                "hang_threads16_max_wait_ratio",
                "x",
                "16 threads read at once through the provider's pool of 10 while the server "
                "is frozen: the slowest thread's wait (pool wait included) over the socket "
                "timeout.",
            ),
            Figure(
                "time_to_trip_ms",
                "ms",
                "A sequential caller of a `@tr.cached` function when the server freezes: "
                "time from the first hung call until the breaker is open "
                "(failure_threshold 5, socket timeout 0.25 s).",
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
                "closed_get_cpu_us",
                "µs",
                "The closed get without I/O: `provider_overhead_warm` is a provider's "
                "`get` over a backend answering from memory minus that backend's `get` + "
                "the same decode (the library's own code, warm); `decode_warm` is the "
                "JSON decode alone; `decode_in_round_trip` is `raw+decode` minus `raw "
                "bytes` in the loop of real GETs, the same decode read as wall time "
                "right after each reply (per placement).",
            ),
            Figure(
                "closed_get_overhead_vs_default_client_us",
                "µs",
                "`closed_get_overhead_us` (sync) against redis-py's default client "
                "instead (`redis.Redis.from_url` with the same timeouts: a non-blocking "
                "`ConnectionPool`, which never waits for a free connection).",
            ),
            Figure(
                "closed_get_ratio_by_placement",
                "x",
                "The closed ratios in both placements: the same overhead reads smaller "
                "against the longer round trip.",
            ),
            Figure(
                "closed_get_ratio_sync_vs_raw_bytes",
                "x",
                "`CacheProvider.get` against the raw `GET` alone (no decode), separate "
                "vCPUs: what the decode adds on top of the provider's own cost.",
            ),
            Figure("closed_get_ratio_async_vs_raw_bytes", "x", "The same for `aget`."),
            Figure(
                "cached_open_overhead_6kb_us",
                "µs",
                "`cached_open_overhead_us` for a function returning ~6 KB (50 records).",
            ),
            Figure(
                "open_peer_us",
                "µs",
                "The per-call times behind the open-circuit figures (guarded with a "
                "fallback, circuitbreaker, the open `@cached` call and the bare function).",
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
            *(
                Goal(
                    f"closed_get_overhead_us.{where}.{mode}",
                    "<=",
                    1.5,
                    f"the breaker costs little when healthy ({mode}, {where.replace('_', ' ')})",
                )
                for where in PLACEMENTS
                for mode in ("sync", "async")
            ),
            Goal("open_get_us", "<=", 0.5, "an open circuit answers at once"),
            Goal("cached_open_overhead_us", "<=", 1.0, "an open cache costs a cached call nothing"),
            Goal(
                "guarded_open_fallback_ratio_vs_circuitbreaker",
                "<=",
                1.2,
                "a rejected call as cheap as the leanest peer's",
            ),
            Goal("hang_cached_call_ratio", "<=", 1.1, "a call during a hang waits once"),
            Goal(
                "hang_threads16_max_wait_ratio",
                "<=",
                1.2,
                "pool waits bounded by the call's deadline",
            ),
        ),
    ),
)

"""Fault drills: a private server is frozen, killed, restarted and flapped under the cache.

Each drill checks the trip (after exactly ``failure_threshold`` counted failures), the
fail-fast open circuit (answers without touching the network), the recovery (timeout,
then probes) without rebuilding the client, and what ``res.health()`` says at each
step. The servers are ``private_server`` processes: a shared server is never touched.

Timing bounds are wide on purpose (a noisy 2-core machine): a call to a frozen server
costs ``SOCKET_TIMEOUT`` (150 ms), a rejected call microseconds, so "p99 < 1 ms"
separates them by two orders of magnitude.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tasker_resilience import Resilience
from tasker_resilience._cache.provider import CacheProvider
from tasker_resilience._cache.replay import REPLAY_BATCH
from tasker_resilience._operations.drill.local_server import LocalServer

from ._support import (
    BACKEND_NAMES,
    SOCKET_TIMEOUT,
    TransitionRecorder,
    configure_cache,
    p99,
    timed,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.drill]

THRESHOLD = 3
FAST_CALLS = 1000
FAIL_FAST_P99_SECONDS = 0.001
ONE_TRIP = [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _health(res: Resilience) -> tuple[str, str, bool, str]:
    """(status, cache circuit state, cache healthy, cache breaker entry state)."""
    report = res.health()
    return (
        report["status"],
        report["cache"]["circuit_state"],
        report["cache"]["healthy"],
        report["circuit_breakers"]["cache"]["state"],
    )


def _circuit(cache: CacheProvider) -> str:
    # A plain str: mypy would otherwise narrow the Literal property across steps.
    return cache.circuit_state


def _breaker(cache: CacheProvider) -> Any:
    breaker = cache.breaker
    assert breaker is not None, "a redis/dragonfly cache is guarded by the cache breaker"
    return breaker


def _assert_fails_fast(cache: CacheProvider) -> None:
    """Every operation answers at once, as a miss or a no-op, while the circuit is open."""
    before = cache.stats()
    samples: list[float] = []
    for i in range(FAST_CALLS):
        elapsed, value = timed(lambda: cache.get("k"))
        assert value is None
        samples.append(elapsed)
        samples.append(timed(functools.partial(cache.set, f"w:{i % 10}", i))[0])
    for call in (lambda: cache.delete("w:0"), lambda: cache.delete_pattern("w:*")):
        samples.append(timed(call)[0])
    assert p99(samples) < FAIL_FAST_P99_SECONDS, f"p99 {p99(samples) * 1e6:.0f} us"
    after = cache.stats()
    assert after["get"]["skipped_open"] - before["get"]["skipped_open"] == FAST_CALLS
    assert after["set"]["skipped_open"] - before["set"]["skipped_open"] == FAST_CALLS
    assert after["get"]["error"] == before["get"]["error"]


def _trip(cache: CacheProvider, threshold: int, *, min_seconds: float, max_seconds: float) -> None:
    """Make ``threshold`` failing gets; the breaker opens on the last one, not before."""
    breaker = _breaker(cache)
    failed_before = breaker.metrics()["failed_calls"]
    for attempt in range(1, threshold + 1):
        elapsed, value = timed(lambda: cache.get("k"))
        assert value is None
        assert min_seconds <= elapsed <= max_seconds, f"call {attempt} took {elapsed:.3f} s"
        metrics = breaker.metrics()
        assert metrics["failed_calls"] - failed_before == attempt
        assert metrics["state"] == ("open" if attempt == threshold else "closed"), attempt


def _wait_for_probe_time(cache: CacheProvider, timeout: float) -> None:
    breaker = _breaker(cache)
    assert wait_until(lambda: breaker.state == "half-open", timeout=timeout + 3)


def _assert_counters_add_up(cache: CacheProvider) -> None:
    """Every call the breaker saw ended as exactly one of success, failure, rejection or
    neutral (cancelled, or no free pooled connection in this process)."""
    m = _breaker(cache).metrics()
    ended = m["successful_calls"] + m["failed_calls"] + m["rejected_calls"] + m["neutral_calls"]
    assert m["total_calls"] == ended


# --- hang ---------------------------------------------------------------------------------


def test_hang_trips_fails_fast_and_recovers(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    open_seconds = 1.0
    res = configure_cache(
        private_server.url,
        backend_name,
        key_prefix,
        failure_threshold=THRESHOLD,
        timeout_seconds=open_seconds,
        success_threshold=2,
    )
    cache = res.cache
    breaker = _breaker(cache)
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert _health(res) == ("healthy", "closed", True, "closed")

    private_server.freeze()
    # Each call waits out the socket timeout (the server took the bytes and says
    # nothing); the third one opens the circuit.
    _trip(cache, THRESHOLD, min_seconds=SOCKET_TIMEOUT * 0.8, max_seconds=SOCKET_TIMEOUT + 2)
    assert cache.stats()["get"]["error"] == THRESHOLD

    elapsed, report = timed(res.health)
    assert elapsed < SOCKET_TIMEOUT, "the health check must not call a frozen server"
    assert report["status"] == "degraded"
    assert report["cache"]["healthy"] is False
    assert report["cache"]["circuit_state"] == "open"
    entry = report["circuit_breakers"]["cache"]
    assert entry["state"] == "open"
    assert entry["opened_at"] is not None
    assert 0 < entry["retry_after_seconds"] <= open_seconds

    _assert_fails_fast(cache)

    private_server.thaw()
    # A thawed server does not close the circuit by itself: the timeout must pass.
    assert _circuit(cache) == "open"
    _wait_for_probe_time(cache, open_seconds)
    # Health requests only watch: half-open, no probe made through the breaker.
    calls = breaker.metrics()["total_calls"]
    assert _health(res) == ("degraded", "half-open", False, "half-open")
    assert breaker.metrics()["total_calls"] == calls
    # Traffic probes: one success of two, still half-open; the second closes it, and
    # the data outlived the freeze.
    assert cache.get("k") == "v"
    assert breaker.metrics()["success_count"] == 1
    assert cache.get("k") == "v"
    assert _circuit(cache) == "closed"
    assert _health(res) == ("healthy", "closed", True, "closed")
    assert breaker.metrics()["transitions"] == len(ONE_TRIP)
    _assert_counters_add_up(cache)


# --- crash and restart --------------------------------------------------------------------


def test_crash_then_restart_on_the_same_port_recovers_without_a_new_client(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    open_seconds = 0.5
    res = configure_cache(
        private_server.url, backend_name, key_prefix, timeout_seconds=open_seconds
    )
    cache = res.cache
    client = cache.backend.client  # type: ignore[attr-defined]
    cache.set("k", "v")
    port = private_server.port

    private_server.kill()
    assert not private_server.is_running
    # A dead server refuses at once: failures are fast, not timeouts.
    _trip(cache, THRESHOLD, min_seconds=0, max_seconds=SOCKET_TIMEOUT)
    assert _health(res) == ("degraded", "open", False, "open")
    _assert_fails_fast(cache)

    private_server.restart()
    assert private_server.port == port
    _wait_for_probe_time(cache, open_seconds)
    # The restarted server is empty: the probe is a miss, and a miss is a success.
    assert cache.get("k") is None
    assert _circuit(cache) == "closed"
    cache.set("k", "again")
    assert cache.get("k") == "again"
    assert _health(res) == ("healthy", "closed", True, "closed")
    # Same process, same provider, same client object: it reconnected by itself.
    assert res.cache is cache
    assert cache.backend.client is client  # type: ignore[attr-defined]
    assert cache.stats()["get"]["error"] == THRESHOLD


# --- start-up with the server down ----------------------------------------------------------


def test_startup_with_the_server_down_then_it_appears(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    open_seconds = 0.5
    private_server.kill()  # nothing listens on its port now

    elapsed, res = timed(
        lambda: configure_cache(
            private_server.url, backend_name, key_prefix, timeout_seconds=open_seconds
        )
    )
    assert elapsed < 2, "configure() must not hang on a missing cache"
    cache = res.cache
    assert _circuit(cache) == "open"
    assert _health(res) == ("degraded", "open", False, "open")
    _assert_fails_fast(cache)

    private_server.restart()
    _wait_for_probe_time(cache, open_seconds)
    cache.set("k", "v")  # the probe
    assert _circuit(cache) == "closed"
    assert cache.get("k") == "v"
    assert _health(res) == ("healthy", "closed", True, "closed")


# --- flapping -----------------------------------------------------------------------------


def test_flapping_server_never_sticks(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    open_seconds, threshold, cycles = 0.3, 2, 4
    res = configure_cache(
        private_server.url,
        backend_name,
        key_prefix,
        failure_threshold=threshold,
        timeout_seconds=open_seconds,
    )
    cache = res.cache
    breaker = _breaker(cache)
    recorder = TransitionRecorder()
    breaker.add_listener(recorder)
    gets = 0

    for cycle in range(cycles):
        private_server.kill()
        _trip(cache, threshold, min_seconds=0, max_seconds=SOCKET_TIMEOUT)
        gets += threshold
        assert cache.get("k") is None  # rejected, not attempted
        gets += 1
        assert _health(res)[0] == "degraded"

        private_server.restart()
        _wait_for_probe_time(cache, open_seconds)
        cache.set("k", cycle)
        assert _circuit(cache) == "closed", f"cycle {cycle}"
        assert cache.get("k") == cycle
        gets += 1
        assert _health(res) == ("healthy", "closed", True, "closed")

    assert recorder.transitions == ONE_TRIP * cycles
    m = breaker.metrics()
    assert m["transitions"] == len(ONE_TRIP) * cycles
    assert m["state"] == "closed"
    assert m["failure_count"] == 0
    assert m["failed_calls"] == threshold * cycles
    assert m["opened_at"] is None
    _assert_counters_add_up(cache)
    stats = cache.stats()["get"]
    assert sum(stats.values()) == gets
    assert stats["error"] == threshold * cycles
    assert stats["skipped_open"] == cycles
    assert stats["hit"] == cycles


# --- missed invalidations -----------------------------------------------------------------


def test_invalidations_missed_during_an_outage_leave_no_stale_read(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    open_seconds = 0.5
    res = configure_cache(
        private_server.url, backend_name, key_prefix, timeout_seconds=open_seconds
    )
    cache = res.cache
    raw = redis.Redis.from_url(private_server.url, socket_timeout=5)
    try:
        for key, value in [("user:1", "old"), ("user:2", "old"), ("list:a", 1), ("list:b", 2)]:
            cache.set(key, value)
        cache.set("other", "keep")

        private_server.freeze()  # SIGSTOP keeps the data: the stale values stay on the server
        _trip(cache, THRESHOLD, min_seconds=SOCKET_TIMEOUT * 0.8, max_seconds=SOCKET_TIMEOUT + 2)
        cache.delete("user:1")
        assert cache.delete_pattern("list:*") == 0
        cache.set("user:2", "new")  # a write-through update that cannot be written
        assert cache.pending_invalidations() == {"pending": 3, "overflowed": False}
        private_server.thaw()

        # Without the replay, these stale values would be served after recovery.
        stale = [f"{key_prefix}:{k}" for k in ("user:1", "user:2", "list:a", "list:b")]
        assert raw.exists(*stale) == len(stale)

        _wait_for_probe_time(cache, open_seconds)
        assert cache.get("user:1") is None  # the probe replays first, then reads
        assert _circuit(cache) == "closed"
        assert cache.get("user:2") is None
        assert cache.get("list:a") is None
        assert cache.get("list:b") is None
        assert cache.get("other") == "keep"
        assert raw.exists(*stale) == 0
        assert cache.pending_invalidations() == {"pending": 0, "overflowed": False}
        assert _health(res) == ("healthy", "closed", True, "closed")
    finally:
        raw.close()


def _command_calls(raw: redis.Redis, command: str) -> int:
    """How often the server ran ``command`` (``INFO commandstats``; Redis, Valkey, Dragonfly)."""
    for name, value in raw.info("commandstats").items():
        if name.lower() == f"cmdstat_{command}":
            return int(value["calls"])
    return 0


def test_concurrent_callers_replay_missed_invalidations_once(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    """After an outage, one caller replays the missed deletes; the others wait for
    nothing and read nothing stale (each replaying the whole list would flood the server)."""
    open_seconds, keys, threads_n = 0.5, 200, 32
    # As many concurrent probes as threads: they all arrive with the list pending.
    res = configure_cache(
        private_server.url,
        backend_name,
        key_prefix,
        timeout_seconds=open_seconds,
        success_threshold=threads_n,
    )
    cache = res.cache
    raw = redis.Redis.from_url(private_server.url, socket_timeout=5)
    try:
        for i in range(keys):
            cache.set(f"k:{i}", i)
        private_server.freeze()
        _trip(cache, THRESHOLD, min_seconds=SOCKET_TIMEOUT * 0.8, max_seconds=SOCKET_TIMEOUT + 2)
        for i in range(keys):
            cache.delete(f"k:{i}")
        assert cache.pending_invalidations()["pending"] == keys
        private_server.thaw()
        unlinks_before = _command_calls(raw, "unlink")
        _wait_for_probe_time(cache, open_seconds)

        stale: list[object] = []
        errors: list[BaseException] = []
        start = threading.Barrier(threads_n)

        def reader(n: int) -> None:
            try:
                start.wait()
                for i in range(n, keys, 7):
                    value = cache.get(f"k:{i}")
                    if value is not None:
                        stale.append(value)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert stale == []
        assert cache.pending_invalidations() == {"pending": 0, "overflowed": False}
        unlinks = _command_calls(raw, "unlink") - unlinks_before
        # Replayed once, batched (REPLAY_BATCH keys per UNLINK), not once per caller.
        assert unlinks == -(-keys // REPLAY_BATCH), "every missed delete replayed exactly once"
        assert _circuit(cache) == "closed"
    finally:
        raw.close()


# --- many callers through an outage -------------------------------------------------------


async def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


async def test_threads_and_tasks_hammer_through_an_outage(
    private_server: LocalServer, backend_name: str, key_prefix: str
) -> None:
    threads_n, tasks_n, open_seconds = 32, 500, 1.5
    # Production-like timeouts and a pool big enough for the load: under this much
    # concurrency on 2 cores, a 150 ms budget could time out on a healthy server.
    res = configure_cache(
        private_server.url,
        backend_name,
        key_prefix,
        failure_threshold=5,
        timeout_seconds=open_seconds,
        success_threshold=2,
        max_connections=64,
        socket_timeout=1.0,
        connect_timeout=1.0,
    )
    cache = res.cache
    breaker = _breaker(cache)
    recorder = TransitionRecorder()
    breaker.add_listener(recorder)
    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[tuple[str, object]] = []

    def thread_worker(n: int) -> None:
        key = f"thread:{n}"
        while not stop.is_set():
            try:
                cache.set(key, n)
                value = cache.get(key)
            except BaseException as exc:
                errors.append(exc)
                return
            if value not in (None, n):
                wrong.append((key, value))
            time.sleep(0.005)

    async def task_worker(n: int) -> None:
        key = f"task:{n}"
        while not stop.is_set():
            try:
                await cache.aset(key, n)
                value = await cache.aget(key)
            except BaseException as exc:
                errors.append(exc)
                return
            if value not in (None, n):
                wrong.append((key, value))
            # Jittered: a freeze lines all tasks up, and 500 calls in one burst on a
            # 2-core box would time out on a healthy server (load, not an outage).
            await asyncio.sleep(random.uniform(0.05, 0.35))

    threads = [threading.Thread(target=thread_worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    tasks = [asyncio.create_task(task_worker(n)) for n in range(tasks_n)]
    try:
        await asyncio.sleep(0.5)
        assert _circuit(cache) == "closed"
        private_server.freeze()
        assert await _until(lambda: breaker.is_open, 10)
        assert _health(res)[:2] == ("degraded", "open")
        await asyncio.sleep(0.2)
        private_server.thaw()
        assert await _until(lambda: breaker.metrics()["state"] == "closed", open_seconds + 10)
        await asyncio.sleep(0.5)  # keep hammering the recovered server
    finally:
        stop.set()
        private_server.thaw()
        await asyncio.gather(*tasks)
        for thread in threads:
            thread.join(10)
        await cache.aclose()

    assert errors == []
    assert wrong == []
    assert recorder.transitions == ONE_TRIP
    assert breaker.metrics()["transitions"] == len(ONE_TRIP)
    _assert_counters_add_up(cache)
    stats = cache.stats()
    # They really hammered it: hits before and after, answers skipped while open.
    assert stats["get"]["hit"] > threads_n
    assert stats["get"]["skipped_open"] > 0
    assert stats["set"]["skipped_open"] > 0
    assert _health(res) == ("healthy", "closed", True, "closed")

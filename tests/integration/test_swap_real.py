"""Reconfiguring or closing the cache while other threads use it never raises to them.

A second ``configure()`` replaces the process-wide cache and closes the old one; a
``close()`` at shutdown closes it outright. Threads still inside a call on the old
cache must finish it, or get a miss or a no-op: never redis-py's
``AttributeError: 'NoneType' object has no attribute 'readline'`` from a connection
closed under them. Real threads against a real server.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from collections import Counter
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience._resilience import reset_current
from tests.package_python import run_python

pytestmark = pytest.mark.integration

SECONDS = 5.0
THREADS = 6


def _configure(url: str, prefix: str) -> tr.Resilience:
    return tr.configure(
        env="test",
        overrides={
            "common": {
                "cache": {
                    "backend": "redis",
                    "key_prefix": prefix,
                    "redis": {"url": url, "socket_timeout_seconds": 1.0},
                }
            }
        },
    )


def test_configure_and_close_under_traffic_never_raise_to_callers(
    cache_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    _configure(cache_url, key_prefix)

    @tr.cached(ttl=30)
    def lookup(n: int) -> int:
        return n * 2

    errors: Counter[str] = Counter()
    calls = [0] * THREADS
    stop = threading.Event()

    def worker(index: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                cache = tr.current().cache
                cache.set(f"k{n % 50}", n)
                cache.get(f"k{n % 50}")
                assert lookup(n % 100) == (n % 100) * 2
                if n % 10 == 0:
                    cache.delete(f"k{n % 50}")
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
            n += 1
        calls[index] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    swaps = 0
    try:
        ends = time.monotonic() + SECONDS
        while time.monotonic() < ends:
            if swaps % 4 == 3:
                tr.current().close()  # a close under traffic; calls reopen the client
            else:
                _configure(cache_url, key_prefix)  # a swap: the old cache is closed
            swaps += 1
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        reset_current()
    assert sum(calls) > 1000  # real traffic went through the swaps
    # Each configure() reads the settings files (tens of ms on a loaded 2-core machine,
    # more under 3.10): enough swaps to land many under traffic, not a speed figure.
    assert swaps >= 20
    assert dict(errors) == {}
    # Nor a failure swallowed as a miss (it would count against the breaker): no
    # connection was closed under a call.
    failed = [r.getMessage() for r in caplog.records if "failed on" in r.getMessage()]
    assert failed == []


def test_reconfiguring_during_asyncio_run_jobs_prints_no_loop_errors(
    cache_url: str, key_prefix: str
) -> None:
    """Jobs run by ``asyncio.run`` in worker threads while the main thread reconfigures:
    no "Event loop is closed", no exception printed from a destructor."""
    script = textwrap.dedent(
        f"""
        import asyncio, gc, threading, time
        import tasker_resilience as tr

        def configure():
            tr.configure(env="test", overrides={{"common": {{"cache": {{
                "backend": "redis", "key_prefix": {key_prefix!r},
                "redis": {{"url": {cache_url!r}}}}}}}}})

        @tr.cached(ttl=30)
        async def lookup(n):
            await asyncio.sleep(0)
            return n

        async def job(n):
            cache = tr.current().cache
            await cache.aset(f"k{{n % 10}}", n)
            await cache.aget(f"k{{n % 10}}")
            assert await lookup(n % 7) == n % 7

        failures = []
        stop = threading.Event()

        def worker():
            n = 0
            while not stop.is_set():
                try:
                    asyncio.run(job(n))
                except Exception as exc:
                    failures.append(repr(exc))
                n += 1

        configure()
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        ends = time.monotonic() + 3
        while time.monotonic() < ends:
            configure()
            gc.collect()
            time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join()
        gc.collect()
        print("failures", len(failures), failures[:3])
        """
    )
    result = run_python("-c", script, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "failures 0 []" in result.stdout
    assert "Event loop is closed" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_aclose_in_the_loop_closes_that_loops_connections(
    cache_url: str, key_prefix: str
) -> None:
    res = _configure(cache_url, key_prefix)
    await res.cache.aset("k", 1)
    backend: Any = res.cache.backend
    client = backend.async_client
    await res.cache.aclose()
    await asyncio.sleep(0)
    pool = client.connection_pool
    assert all(not connection.is_connected for connection in pool._available_connections)
    reset_current()

"""@cached origin protection: lock (a lease in the cache), early_refresh (XFetch),
stale_if_error; and that none of it changes a function that uses no option.

Cross-process behaviour is simulated here by a second holder of the lease (the backend
written directly, as another process would); tests/integration/test_cached_herd.py runs
real worker processes against a real server.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience import Resilience
from tasker_resilience._cache.backends.contract import LeaseBackend, unregister_backend
from tasker_resilience._cache.lease import LEASE_MARK, lease_seconds, poll_delays
from tasker_resilience._cache.refresh import Refreshes, early_beta, xfetch
from tasker_resilience.testing import (
    BackendConformance,
    Harness,
    ManualClock,
    configure_for_tests,
)

from .backend_suite import CountingBackend, Outage

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture(params=["memory", "fakeredis"])
def res(request: pytest.FixtureRequest) -> Resilience:
    return configure_for_tests(backend=request.param)


@pytest.fixture
def redis_res() -> Harness:
    return configure_for_tests(backend="fakeredis")


def lease_key(fn: Any, *args: Any) -> str:
    cache = tr.current().cache
    key = fn.cache_key(*args)[len(cache.key_prefix) + 1 :]
    return cache._prefix + LEASE_MARK + key


def hold_lease(fn: Any, *args: Any, seconds: float = 30, holder: bytes = b"another") -> None:
    """Take the lease of ``fn(*args)`` as another process would."""
    backend = tr.current().cache.backend
    assert isinstance(backend, LeaseBackend)
    assert backend.add(lease_key(fn, *args), holder, seconds)


def stats(name: str) -> dict[str, int]:
    return tr.current().cache.stats().get(name, {})


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lock": 0}, "lock must be True, False or the lease time"),
        ({"lock": -1.0}, "lock must be True, False or the lease time"),
        ({"lock": "yes"}, "lock must be True, False or the lease time"),
        ({"early_refresh": 0}, "early_refresh must be True, False or XFetch's beta"),
        ({"early_refresh": "soon"}, "early_refresh must be True, False or XFetch's beta"),
        ({"stale_if_error": 0}, "stale_if_error must be None or the seconds"),
        ({"stale_if_error": True}, "stale_if_error must be None or the seconds"),
        ({"stale_if_error": math.inf}, "stale_if_error must be None or the seconds"),
        ({"record": [ValueError]}, "record= chooses the errors stale_if_error answers"),
    ],
)
def test_bad_options_are_refused_at_decoration(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tr.cached(ttl=60, **kwargs)


def test_record_takes_classes_or_predicates_only() -> None:
    with pytest.raises(TypeError, match="record takes exception classes or predicates"):
        tr.cached(ttl=60, stale_if_error=10, record=["ValueError"])  # type: ignore[list-item]


def test_lease_and_beta_values() -> None:
    assert lease_seconds(False) is None
    assert lease_seconds(True) == 5.0
    assert lease_seconds(0.5) == 0.5
    assert early_beta(False) is None
    assert early_beta(True) == 1.0
    assert early_beta(2) == 2.0


def test_without_options_nothing_changes(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def plain(x: int) -> int:
        CALLS["plain"] += 1
        return x

    assert plain(1) == plain(1) == 1
    cache = res.cache
    raw = cache.backend.get(plain.cache_key(1))
    assert raw == b"J[1]"  # the plain envelope, nothing more
    assert "cached" not in cache.stats()  # no origin decision: no new row
    assert cache.stats()["lease"]["ok"] == 0
    assert not hasattr(plain, "origin_guard")


# --- lock: one computation per key across processes ---------------------------------------------


def test_a_lock_miss_takes_and_gives_back_the_lease(res: Resilience) -> None:
    # key=: the function captures the test's Resilience, which no key can encode.
    @tr.cached(ttl=60, lock=True, key=str)
    def f(x: int) -> int:
        CALLS["f"] += 1
        # While the function runs, the lease is held in the cache.
        CALLS["held"] += res.cache.backend.get(lease_key(f, x)) is not None
        return x * 2

    assert f(3) == 6
    assert f(3) == 6
    assert CALLS == {"f": 1, "held": 1}
    assert res.cache.backend.get(lease_key(f, 3)) is None  # released after the store
    assert res.cache.backend.get(f.cache_key(3)) == b"J[6]"  # lock alone: plain envelope
    assert stats("lease")["ok"] == 2  # taken, given back


def _store_as_another_process(fn: Any, value: Any, *args: Any) -> None:
    tr.current().cache.backend.set(fn.cache_key(*args), f"J[{value}]".encode(), 60)


def test_waiters_get_the_value_another_holder_stores(res: Resilience) -> None:
    @tr.cached(ttl=60, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        return -1

    hold_lease(f, 1, seconds=5)
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(f(1)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    assert answers == []  # waiting: the holder has not stored yet
    _store_as_another_process(f, 42, 1)
    waiter.join(5)
    assert answers == [42]
    assert CALLS["f"] == 0  # never computed here
    assert time.monotonic() - started < 3  # polls, not the whole lease time
    assert stats("cached")["lease_waited"] == 1


def test_a_dead_holder_costs_at_most_the_lease_time(res: Resilience) -> None:
    @tr.cached(ttl=60, lock=0.4)
    def f(x: int) -> int:
        CALLS["f"] += 1
        return x

    hold_lease(f, 1, holder=b"a process that died")  # held far beyond 0.4 s
    started = time.monotonic()
    assert f(1) == 1
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3  # waited its lease time, then computed itself
    assert CALLS["f"] == 1


def test_the_lease_is_given_back_when_the_function_raises(res: Resilience) -> None:
    @tr.cached(ttl=60, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        raise LookupError("origin down")

    with pytest.raises(LookupError):
        f(1)
    assert res.cache.backend.get(lease_key(f, 1)) is None  # the next caller need not wait
    started = time.monotonic()
    with pytest.raises(LookupError):
        f(1)
    assert time.monotonic() - started < 1
    assert CALLS["f"] == 2


def test_a_holder_never_releases_a_lease_it_lost(redis_res: Harness) -> None:
    @tr.cached(ttl=60, lock=0.2)
    def f(x: int) -> int:
        time.sleep(0.4)  # longer than the lease: it expires and another takes it
        hold_lease(f, 1, holder=b"next holder")
        return x

    assert f(1) == 1
    # compare-and-delete: the next holder's lease survived this holder's release.
    assert tr.current().cache.backend.get(lease_key(f, 1)) == b"next holder"


async def test_async_waiters_get_the_value_another_holder_stores(res: Resilience) -> None:
    @tr.cached(ttl=60, lock=True)
    async def f(x: int) -> int:
        CALLS["f"] += 1
        return -1

    backend = res.cache.backend
    assert isinstance(backend, LeaseBackend)
    assert await backend.aadd(lease_key(f, 1), b"another process", 5)
    waiter = asyncio.ensure_future(f(1))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    _store_as_another_process(f, 7, 1)
    assert await asyncio.wait_for(waiter, 5) == 7
    assert CALLS["f"] == 0


async def test_async_lock_computes_once_per_process_and_releases(res: Resilience) -> None:
    @tr.cached(ttl=60, lock=True)
    async def f(x: int) -> int:
        CALLS["f"] += 1
        await asyncio.sleep(0.05)
        return x + 1

    assert await asyncio.gather(*(f(1) for _ in range(10))) == [2] * 10
    assert CALLS["f"] == 1
    assert res.cache.backend.get(lease_key(f, 1)) is None


class LeasingBackend(CountingBackend):
    """CountingBackend with leases, whose lease calls alone can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.lease_failure: BaseException | None = None

    def _lease(self, op: str, *args: Any) -> Any:
        self.calls.append((op, *args))
        if self.lease_failure is not None:
            raise self.lease_failure
        return getattr(self.store, op)(*args)

    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        return self._lease("add", key, value, ttl_seconds)  # type: ignore[no-any-return]

    def delete_if_equal(self, key: str, value: bytes) -> bool:
        return self._lease("delete_if_equal", key, value)  # type: ignore[no-any-return]

    async def aadd(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        return self.add(key, value, ttl_seconds)

    async def adelete_if_equal(self, key: str, value: bytes) -> bool:
        return self.delete_if_equal(key, value)


@pytest.fixture
def leasing(clock: ManualClock) -> Iterator[LeasingBackend]:
    backend = LeasingBackend()
    tr.register_backend("leasing", lambda config: backend)
    configure_for_tests({"common": {"cache": {"backend": "leasing"}}}, clock=clock)
    backend.calls.clear()
    yield backend
    unregister_backend("leasing")


def test_a_failing_lease_call_means_single_flight_at_once(leasing: LeasingBackend) -> None:
    @tr.cached(ttl=60, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        time.sleep(0.1)
        return x

    leasing.lease_failure = Outage("lease refused: connection reset")
    threads = [threading.Thread(target=f, args=(1,)) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - started < 2  # no waiting for a lease that cannot be had
    assert CALLS["f"] == 1  # still once within the process
    assert stats("cached")["lease_unavailable"] == 1
    assert stats("lease")["error"] == 1


def test_an_open_circuit_asks_for_no_lease(leasing: LeasingBackend) -> None:
    @tr.cached(ttl=60, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        return x

    breaker = tr.current().cache.breaker
    assert breaker is not None
    breaker.force_open()
    assert f(1) == 1
    assert leasing.calls == []  # no read, no lease: not a single network call
    assert CALLS["f"] == 1


@pytest.mark.parametrize("how", ["open", "failing"])
def test_an_unreachable_cache_means_single_flight_with_lock(
    leasing: LeasingBackend, how: str
) -> None:
    @tr.cached(ttl=60, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        time.sleep(0.2)
        return x

    breaker = tr.current().cache.breaker
    assert breaker is not None
    if how == "open":
        breaker.force_open()
    else:
        leasing.failing = Outage("connection refused")  # the read itself fails
    threads = [threading.Thread(target=f, args=(1,)) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - started < 2
    assert CALLS["f"] <= 2  # once per process (a failing read may race the first one)
    assert not any(call[0] in ("add", "delete_if_equal") for call in leasing.calls)


def test_a_backend_without_leases_degrades_to_single_flight(clock: ManualClock) -> None:
    backend = CountingBackend()  # no add / delete_if_equal
    tr.register_backend("counting", lambda config: backend)
    try:
        configure_for_tests({"common": {"cache": {"backend": "counting"}}}, clock=clock)

        @tr.cached(ttl=60, lock=True)
        def f(x: int) -> int:
            CALLS["f"] += 1
            return x

        assert f(1) == f(1) == 1
        assert CALLS["f"] == 1
        assert stats("cached")["lease_unavailable"] == 1
        assert stats("lease")["ok"] == 0
    finally:
        unregister_backend("counting")


def test_waiting_stops_when_the_cache_goes_away(redis_res: Harness) -> None:
    @tr.cached(ttl=60, lock=5)
    def f(x: int) -> int:
        CALLS["f"] += 1
        return x

    hold_lease(f, 1)
    threading.Timer(0.2, redis_res.down).start()
    started = time.monotonic()
    assert f(1) == 1
    assert time.monotonic() - started < 3  # far less than the 5 s lease
    assert CALLS["f"] == 1
    redis_res.up()


def test_the_conformance_suite_refuses_half_a_lease() -> None:
    class HalfLeases(CountingBackend):
        def delete_if_equal(self, key: str, value: bytes) -> bool:
            return False

    assert BackendConformance.leases(CountingBackend()) is None  # none: fine, optional
    assert BackendConformance.leases(LeasingBackend()) is not None
    with pytest.raises(AssertionError, match="has delete_if_equal but not all of"):
        BackendConformance.leases(HalfLeases())


def test_poll_delays_double_up_to_a_cap() -> None:
    delays = [d for d, _ in zip(poll_delays(), range(8), strict=False)]
    assert delays == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05, 0.05, 0.05]


# --- early refresh -----------------------------------------------------------------------------


def test_xfetch_decision() -> None:
    assert xfetch(delta=1.0, beta=1.0, remaining=0.5, draw=math.exp(-1)) is True  # 1 >= 0.5
    assert xfetch(delta=1.0, beta=1.0, remaining=2.0, draw=math.exp(-1)) is False
    assert xfetch(delta=1.0, beta=3.0, remaining=2.0, draw=math.exp(-1)) is True
    assert xfetch(delta=1.0, beta=1.0, remaining=0.5, draw=1.0) is False  # -ln(1) = 0
    assert xfetch(delta=0.0, beta=1.0, remaining=0.5, draw=1e-9) is False
    assert xfetch(delta=0.1, beta=1.0, remaining=0.0, draw=1.0) is True  # expired


def test_xfetch_refreshes_about_once_per_ttl() -> None:
    """Readers at a steady rate: the expected first early refresh is within the last few
    ``delta`` of the TTL, not spread over it (a simulation of the decision)."""
    import random

    rng = random.Random(7)
    ttl, delta, beta, step = 10.0, 0.2, 1.0, 0.001
    firsts = []
    for _ in range(200):
        t = 0.0
        while not xfetch(delta, beta, ttl - t, 1.0 - rng.random()):
            t += step
        firsts.append(ttl - t)
    mean_left = sum(firsts) / len(firsts)
    assert 0.02 < mean_left < 2.0  # refreshed before expiry, but late in the TTL


def test_refreshes_are_one_per_key_and_bounded() -> None:
    refreshes = Refreshes(limit=2)
    assert refreshes.claim("a") is True
    assert refreshes.claim("a") is False  # already refreshing
    assert refreshes.claim("b") is True
    assert refreshes.claim("c") is False  # the table is full
    refreshes.done("a")
    assert refreshes.claim("c") is True
    refreshes.done("b")
    refreshes.done("c")
    assert len(refreshes) == 0


def _always_refresh(fn: Any) -> None:
    """The most eager draw (1e-12: -ln is ~27.6): with 0.1 s left, a function that took
    more than ~4 ms refreshes."""
    fn.origin_guard.random = lambda: 1.0 - 1e-12


def test_sync_early_refresh_runs_in_the_calling_thread(res: Resilience) -> None:
    @tr.cached(ttl=60, early_refresh=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        time.sleep(0.01)
        return CALLS["f"]

    assert f(1) == 1
    guard = f.origin_guard  # type: ignore[attr-defined]
    guard.clock = lambda: time.time() + 59.9  # 0.1 s left of a 60 s TTL
    _always_refresh(f)
    assert f(1) == 2  # this caller recomputed it, and answers with the new value
    guard.random = lambda: 0.0  # the draw is 1: never early
    assert f(1) == 2
    assert stats("cached")["early_refresh"] == 1


def test_early_refresh_leaves_fresh_entries_alone(res: Resilience) -> None:
    @tr.cached(ttl=60, early_refresh=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        return x

    f(1)
    _always_refresh(f)  # even the most eager draw cannot beat 60 s left of a 10 ms call
    for _ in range(20):
        assert f(1) == 1
    assert CALLS["f"] == 1
    assert stats("cached").get("early_refresh", 0) == 0


def test_early_refresh_entries_carry_expiry_and_compute_time(res: Resilience) -> None:
    @tr.cached(ttl=60, early_refresh=True)
    def f(x: int) -> int:
        time.sleep(0.02)
        return x

    before = time.time()
    f(1)
    value, expires_at, delta = res.cache.read(f.cache_key(1).split(":", 1)[1], res.cache.serializer)
    assert value == 1
    assert before + 59 < expires_at < time.time() + 61
    assert 0.015 < delta < 2


async def test_async_early_refresh_runs_in_the_background(res: Resilience) -> None:
    gate = asyncio.Event()

    # key=: the function captures an asyncio.Event, which no key can encode.
    @tr.cached(ttl=60, early_refresh=True, key=str)
    async def f(x: int) -> int:
        CALLS["f"] += 1
        if CALLS["f"] > 1:
            await gate.wait()
        else:
            await asyncio.sleep(0.02)  # what it costs decides how early it refreshes
        return CALLS["f"]

    assert await f(1) == 1
    guard = f.origin_guard  # type: ignore[attr-defined]
    guard.clock = lambda: time.time() + 59.9
    _always_refresh(f)
    assert await f(1) == 1  # answered at once with the value it had
    assert await f(1) == 1  # one refresh per key: the running one is not doubled
    assert len(guard.refreshes) == 1
    gate.set()
    for _ in range(100):
        if len(guard.refreshes) == 0:
            break
        await asyncio.sleep(0.01)
    assert len(guard.refreshes) == 0
    guard.clock = time.time
    guard.random = lambda: 0.0
    assert await f(1) == 2  # the background refresh stored its value
    assert CALLS["f"] == 2
    assert stats("cached")["early_refresh"] == 1


def test_a_failed_early_refresh_keeps_the_fresh_value(
    res: Resilience, caplog: pytest.LogCaptureFixture
) -> None:
    @tr.cached(ttl=60, early_refresh=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        if CALLS["f"] > 1:
            raise ConnectionError("origin down")
        time.sleep(0.02)  # what it costs decides how early it refreshes
        return 5

    assert f(1) == 5
    f.origin_guard.clock = lambda: time.time() + 59.9  # type: ignore[attr-defined]
    _always_refresh(f)
    with caplog.at_level("WARNING", logger="tasker_resilience.cache"):
        assert f(1) == 5  # the value is still fresh: no reason to fail this caller
    assert "early refresh failed" in caplog.text
    assert CALLS["f"] == 2


def test_early_refresh_with_lock_skips_when_another_process_refreshes(
    redis_res: Harness,
) -> None:
    @tr.cached(ttl=60, early_refresh=True, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        time.sleep(0.02)
        return 9

    assert f(1) == 9
    hold_lease(f, 1, holder=b"another process refreshing")
    f.origin_guard.clock = lambda: time.time() + 59.9  # type: ignore[attr-defined]
    _always_refresh(f)
    started = time.monotonic()
    assert f(1) == 9  # no wait, no second computation
    assert time.monotonic() - started < 1
    assert CALLS["f"] == 1
    assert stats("cached")["early_refresh"] == 1  # it was due, and skipped


# --- stale_if_error ---------------------------------------------------------------------------


def test_stale_if_error_serves_the_last_value_past_its_ttl(res: Resilience) -> None:
    @tr.cached(ttl=0.2, stale_if_error=30)
    def f(x: int) -> int:
        CALLS["f"] += 1
        if CALLS["f"] > 1:
            raise ConnectionError("origin down")
        return 11

    assert f(1) == 11
    time.sleep(0.3)  # past the TTL, within TTL + stale_if_error
    assert f(1) == 11
    assert f(1) == 11
    assert CALLS["f"] == 3  # each call tried the origin first
    assert stats("cached")["stale_served"] == 2


def test_stale_if_error_raises_when_there_is_no_value(res: Resilience) -> None:
    @tr.cached(ttl=60, stale_if_error=30)
    def f(x: int) -> int:
        raise ConnectionError("origin down")

    with pytest.raises(ConnectionError):
        f(1)
    assert "cached" not in res.cache.stats()


def test_stale_if_error_ends_after_its_window(res: Resilience) -> None:
    @tr.cached(ttl=0.1, stale_if_error=0.2)
    def f(x: int) -> int:
        CALLS["f"] += 1
        if CALLS["f"] > 1:
            raise ConnectionError("origin down")
        return 1

    f(1)
    time.sleep(0.45)  # past TTL + stale_if_error: the entry is gone
    with pytest.raises(ConnectionError):
        f(1)


def test_stale_if_error_only_answers_recorded_errors(res: Resilience) -> None:
    def is_outage(exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    @tr.cached(ttl=0.1, stale_if_error=30, record=[is_outage, TimeoutError])
    def f(kind: str) -> str:
        CALLS["f"] += 1
        if CALLS[kind] > 0:
            raise {"os": ConnectionError, "bug": KeyError}[kind]("boom")
        CALLS[kind] += 1
        return kind

    assert f("os") == "os"
    assert f("bug") == "bug"
    time.sleep(0.2)
    assert f("os") == "os"  # an outage of the origin: the stale value answers
    with pytest.raises(KeyError):
        f("bug")  # a bug is not hidden behind an old value
    assert stats("cached")["stale_served"] == 1


async def test_async_stale_if_error(res: Resilience) -> None:
    @tr.cached(ttl=0.1, stale_if_error=30)
    async def f(x: int) -> int:
        CALLS["f"] += 1
        if CALLS["f"] > 1:
            raise ConnectionError("origin down")
        return 3

    assert await f(1) == 3
    await asyncio.sleep(0.2)
    assert await f(1) == 3
    assert stats("cached")["stale_served"] == 1


def test_a_result_the_serializer_refuses_is_not_hidden_by_stale(res: Resilience) -> None:
    @tr.cached(ttl=0.1, stale_if_error=30)
    def f(x: int) -> Any:
        CALLS["f"] += 1
        return 1 if CALLS["f"] == 1 else object()

    f(1)
    time.sleep(0.2)
    with pytest.raises(tr.SerializationError):
        f(1)  # a caller mistake, not an origin failure: raised, never answered stale


def test_stale_if_error_with_lock(res: Resilience) -> None:
    @tr.cached(ttl=0.1, stale_if_error=30, lock=True)
    def f(x: int) -> int:
        CALLS["f"] += 1
        if CALLS["f"] > 1:
            raise ConnectionError("origin down")
        return 4

    f(1)
    time.sleep(0.2)
    assert f(1) == 4
    assert res.cache.backend.get(lease_key(f, 1)) is None
    assert stats("cached")["stale_served"] == 1


# --- bounds ------------------------------------------------------------------------------------


def test_nothing_stays_behind_after_calls(res: Resilience) -> None:
    @tr.cached(ttl=60, lock=True, early_refresh=True, stale_if_error=10)
    def f(x: int) -> int:
        time.sleep(0.01)
        return x

    threads = [threading.Thread(target=f, args=(i % 3,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    guard = f.origin_guard  # type: ignore[attr-defined]
    assert len(guard.refreshes) == 0
    for i in range(3):
        assert res.cache.backend.get(lease_key(f, i)) is None


def test_shared_hits_with_origin_options() -> None:
    configure_for_tests()  # the memory backend: shared=True hands out the stored object

    @tr.cached(ttl=60, lock=True, shared=True)
    def shared(x: int) -> list[int]:
        return [x]

    @tr.cached(ttl=60, lock=True)
    def copied(x: int) -> list[int]:
        return [x]

    shared(1)
    copied(1)
    assert shared(1) is shared(1)
    assert copied(1) is not copied(1)
    assert copied(1) == [1]


def test_lease_and_stale_times_take_a_timedelta() -> None:
    from datetime import timedelta

    from tasker_resilience._cache.origin import OriginOptions

    options = OriginOptions.build(
        lock=timedelta(seconds=2),
        early_refresh=False,
        stale_if_error=timedelta(minutes=5),
        record=None,
    )
    assert (options.lease_seconds, options.stale_seconds) == (2.0, 300.0)

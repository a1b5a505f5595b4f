"""The breaker state machine and call path, driven by a manual clock."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from tasker_resilience import Breaker, BreakerConfig, CircuitOpenError, failure_policy
from tasker_resilience.testing import ManualClock


class Boom(Exception):
    pass


def make(clock: ManualClock, failures: int = 3, timeout: float = 10, successes: int = 2) -> Breaker:
    return Breaker("dep", BreakerConfig(failures, timeout, successes), clock=clock)


def fail(breaker: Breaker) -> None:
    with pytest.raises(Boom):
        breaker.call(_raise)


def _raise() -> None:
    raise Boom("backend down")


def test_trips_at_exactly_the_threshold(clock: ManualClock) -> None:
    breaker = make(clock, failures=3)
    fail(breaker)
    fail(breaker)
    assert breaker.state == "closed"
    fail(breaker)  # the tripping call raises its own error, not CircuitOpenError
    assert breaker.state == "open"
    assert breaker.metrics()["failure_count"] == 3


def test_success_resets_the_consecutive_failure_count(clock: ManualClock) -> None:
    breaker = make(clock, failures=3)
    fail(breaker)
    fail(breaker)
    assert breaker.call(lambda: 7) == 7
    fail(breaker)
    fail(breaker)
    assert breaker.state == "closed"


def test_open_rejects_without_calling(clock: ManualClock) -> None:
    breaker = make(clock, failures=1, timeout=10)
    fail(breaker)
    calls: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(calls.append, 1)
    assert calls == []
    assert info.value.breaker_name == "dep"
    assert info.value.retry_after_seconds == pytest.approx(10)
    assert "dep" in str(info.value)
    assert breaker.metrics()["rejected_calls"] == 1


def test_half_open_after_timeout_then_closes_after_success_threshold(clock: ManualClock) -> None:
    breaker = make(clock, failures=1, timeout=10, successes=2)
    fail(breaker)
    clock.advance(9.9)
    assert breaker.state == "open"
    clock.advance(0.2)
    assert breaker.state == "half-open"
    assert breaker.call(lambda: "probe-1") == "probe-1"
    assert breaker.state == "half-open"
    assert breaker.call(lambda: "probe-2") == "probe-2"
    assert breaker.state == "closed"
    assert breaker.metrics()["opened_at"] is None


def test_half_open_failure_reopens_for_a_full_timeout(clock: ManualClock) -> None:
    breaker = make(clock, failures=1, timeout=10, successes=2)
    fail(breaker)
    clock.advance(10)
    fail(breaker)
    assert breaker.state == "open"
    assert breaker.retry_after_seconds == pytest.approx(10)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)


def test_stale_outcome_from_before_the_trip_is_ignored(clock: ManualClock) -> None:
    breaker = make(clock, failures=1, timeout=10, successes=1)
    slow = breaker.admit()  # admitted while closed ...
    assert slow is not None
    fail(breaker)  # ... the breaker trips meanwhile
    clock.advance(10)
    with slow:  # the slow call now succeeds: it is not a half-open probe
        pass
    assert breaker.state == "half-open"


def test_cancellation_and_interrupts_are_neutral(clock: ManualClock) -> None:
    breaker = make(clock, failures=1)
    for exc in (asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1)):
        with pytest.raises(type(exc)):
            breaker.call(_raiser(exc))
    assert breaker.state == "closed"
    assert breaker.metrics()["failure_count"] == 0
    assert breaker.metrics()["failed_calls"] == 0


def test_cancellation_frees_a_half_open_probe_slot(clock: ManualClock) -> None:
    breaker = make(clock, failures=1, timeout=1, successes=1)
    fail(breaker)
    clock.advance(1)
    with pytest.raises(asyncio.CancelledError):
        breaker.call(_raiser(asyncio.CancelledError()))
    assert breaker.state == "half-open"
    assert breaker.call(lambda: 1) == 1  # the slot was released, so this probe runs
    assert breaker.state == "closed"


def _raiser(exc: BaseException):  # type: ignore[no-untyped-def]
    def raise_it() -> None:
        raise exc

    return raise_it


def test_ignored_exceptions_are_neither_failure_nor_success(clock: ManualClock) -> None:
    breaker = make(clock, failures=2)
    breaker.failure_policy = failure_policy(ignore=[ValueError])
    fail(breaker)
    with pytest.raises(ValueError):
        breaker.call(_raiser(ValueError("caller bug")))
    fail(breaker)  # the ValueError did not reset the streak
    assert breaker.state == "open"


def test_record_predicates_choose_what_counts(clock: ManualClock) -> None:
    breaker = make(clock, failures=1)
    policy = failure_policy(record=[lambda exc: "timeout" in str(exc)])
    for message in ("bad request", "timeout"):
        admission = breaker.admit(policy)
        assert admission is not None
        with pytest.raises(Boom), admission:
            raise Boom(message)
    assert breaker.state == "open"
    assert breaker.metrics()["failed_calls"] == 1


def test_failure_policy_rejects_nonsense() -> None:
    with pytest.raises(TypeError, match="record takes exception classes or predicates"):
        failure_policy(record=[int])  # type: ignore[list-item]


def test_force_open_and_reset(clock: ManualClock) -> None:
    breaker = make(clock)
    breaker.force_open()
    assert breaker.is_open
    breaker.reset()
    assert breaker.state == "closed"
    assert breaker.call(lambda: "ok") == "ok"


def test_disabled_breaker_never_trips(clock: ManualClock) -> None:
    breaker = Breaker("dep", BreakerConfig(1, 10, 1), clock=clock, enabled=False)
    for _ in range(5):
        fail(breaker)
    assert breaker.state == "closed"


def test_metrics_count_every_outcome(clock: ManualClock) -> None:
    breaker = make(clock, failures=2, timeout=5)
    breaker.call(lambda: None)
    fail(breaker)
    fail(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    metrics = breaker.metrics()
    assert metrics["total_calls"] == 4
    assert metrics["successful_calls"] == 1
    assert metrics["failed_calls"] == 2
    assert metrics["rejected_calls"] == 1
    assert metrics["state"] == "open"
    assert metrics["retry_after_seconds"] == pytest.approx(5)
    assert isinstance(metrics["opened_at"], str)


def test_transitions_logged_at_info_and_rejections_at_debug(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make(clock, failures=2, timeout=1, successes=1)
    with caplog.at_level(logging.DEBUG, logger="tasker_resilience"):
        fail(breaker)
        fail(breaker)
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: None)
        clock.advance(1)
        breaker.call(lambda: None)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debugs = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert infos == [
        "circuit breaker 'dep': closed -> open (failure_count=2)",
        "circuit breaker 'dep': open -> half-open (failure_count=2)",
        "circuit breaker 'dep': half-open -> closed (failure_count=0)",
    ]
    assert len(debugs) == 1
    assert "'dep' is open: call skipped" in debugs[0]


def test_rejections_build_no_log_record_when_debug_is_off(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = make(clock, failures=1)
    fail(breaker)
    with caplog.at_level(logging.INFO, logger="tasker_resilience"):
        for _ in range(100):
            assert breaker.admit() is None
    assert [r for r in caplog.records if r.levelno < logging.INFO] == []


# --- concurrency: no lock held across the call ------------------------------------------


def test_sixteen_threads_run_concurrently() -> None:
    breaker = Breaker("dep", BreakerConfig(5, 30, 2))
    start = time.perf_counter()
    threads = [threading.Thread(target=breaker.call, args=(time.sleep, 0.1)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    # Serialised through a lock this would take 1.6 s; concurrent, about 0.1 s.
    assert elapsed < 0.8, elapsed
    assert breaker.metrics()["successful_calls"] == 16


async def test_sixteen_tasks_run_concurrently() -> None:
    breaker = Breaker("dep", BreakerConfig(5, 30, 2))
    start = time.perf_counter()
    await asyncio.gather(*(breaker.call_async(asyncio.sleep, 0.1) for _ in range(16)))
    elapsed = time.perf_counter() - start
    assert elapsed < 0.8, elapsed
    assert breaker.metrics()["successful_calls"] == 16


def test_half_open_admits_at_most_success_threshold_probes_across_threads(
    clock: ManualClock,
) -> None:
    breaker = make(clock, failures=1, timeout=1, successes=3)
    fail(breaker)
    clock.advance(1)
    inside = threading.Barrier(4)  # 3 probes + the test thread
    release = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def probe() -> None:
        def body() -> None:
            inside.wait(timeout=5)
            release.wait(timeout=5)

        try:
            breaker.call(body)
            result = "ran"
        except CircuitOpenError:
            result = "rejected"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=probe) for _ in range(10)]
    for thread in threads:
        thread.start()
    inside.wait(timeout=5)  # exactly three probes are inside the call
    time.sleep(0.05)  # let the other seven reach the breaker and be rejected
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("ran") == 3
    assert sorted(outcomes).count("rejected") == 7
    assert breaker.state == "closed"


async def test_half_open_admits_at_most_success_threshold_probes_across_tasks(
    clock: ManualClock,
) -> None:
    breaker = make(clock, failures=1, timeout=1, successes=2)
    fail(breaker)
    clock.advance(1)
    gate = asyncio.Event()

    async def body() -> str:
        await gate.wait()
        return "ran"

    tasks = [asyncio.ensure_future(breaker.call_async(body)) for _ in range(8)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ran") == 2
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 6
    assert breaker.state == "closed"


async def test_cancelled_task_is_neutral(clock: ManualClock) -> None:
    breaker = make(clock, failures=1)
    task = asyncio.ensure_future(breaker.call_async(asyncio.sleep, 10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == "closed"
    assert breaker.metrics()["failed_calls"] == 0

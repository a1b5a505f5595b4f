"""The rules beyond N failures in a row: failure rate, slow-call rate, growing open time.

Driven by a manual clock (a "slow" call advances it while it runs) and a fixed jitter
source, so every decision here is deterministic.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest

from tasker_resilience import Breaker, BreakerConfig, CircuitOpenError, breaker_guarded
from tasker_resilience._breakers.backoff import OpenTime
from tasker_resilience._breakers.window import BUCKETS, FAILURE_RATE, SLOW_CALL_RATE, SlidingWindow
from tasker_resilience.testing import ManualClock, configure_for_tests


class Boom(ConnectionError):
    pass


def rules(**overrides: Any) -> BreakerConfig:
    """A breaker whose consecutive rule stays out of the way (100 in a row)."""
    settings: dict[str, Any] = {
        "failure_threshold": 100,
        "timeout_seconds": 10.0,
        "success_threshold": 2,
        "window_seconds": 2.0,
        "minimum_calls": 10,
    }
    settings.update(overrides)
    return BreakerConfig(**settings)


def make(clock: ManualClock, rand: Callable[[], float] = lambda: 1.0, **overrides: Any) -> Breaker:
    return Breaker("dep", rules(**overrides), clock=clock, rand=rand)


def ok(breaker: Breaker, clock: ManualClock, seconds: float = 0.001) -> Any:
    """One successful call that takes ``seconds`` (on the manual clock)."""

    def work() -> str:
        clock.advance(seconds)
        return "value"

    return breaker.call(work)


def fail(breaker: Breaker, clock: ManualClock, seconds: float = 0.001) -> None:
    def work() -> None:
        clock.advance(seconds)
        raise Boom("down")

    with pytest.raises(Boom):
        breaker.call(work)


# --- the window on its own ---------------------------------------------------------------


def test_window_counts_what_ended_in_it_and_forgets_what_left() -> None:
    window = SlidingWindow(
        2.0, minimum_calls=1, failure_rate_threshold=0.5, slow_call_rate_threshold=0.5, now=0.0
    )
    window.add(failed=True, slow=False)
    window.add(failed=False, slow=True)
    assert window.counts(10) == (10, 1, 1)
    window.advance(1.0, 10)  # half the window later: all still in it
    assert window.counts(14) == (14, 1, 1)
    window.advance(2.05, 14)  # the first bucket (0-0.2 s) has left
    assert window.counts(14) == (4, 0, 0)
    window.advance(1000.0, 20)  # a long idle time: moved in at most BUCKETS steps
    assert window.counts(20) == (0, 0, 0)


def test_window_trips_only_from_minimum_calls_and_names_the_rule() -> None:
    window = SlidingWindow(
        2.0, minimum_calls=4, failure_rate_threshold=0.5, slow_call_rate_threshold=0.75, now=0.0
    )
    for _ in range(3):
        window.add(failed=False, slow=True)
    assert window.tripped(3) is None  # 100 % slow, but 3 calls < minimum_calls
    assert window.tripped(4) == SLOW_CALL_RATE  # 3 of 4 slow
    window.add(failed=True, slow=False)
    window.add(failed=True, slow=False)
    assert window.tripped(4) == FAILURE_RATE  # the failure rate is judged first
    assert window.rates(4) == {
        "seconds": 2.0,
        "calls": 4,
        "failure_rate": 0.5,
        "slow_call_rate": 0.75,
    }


def test_window_has_a_fixed_number_of_buckets() -> None:
    window = SlidingWindow(
        1.0, minimum_calls=1, failure_rate_threshold=1, slow_call_rate_threshold=1, now=0.0
    )
    assert window.width == pytest.approx(1.0 / BUCKETS)
    assert window.rotate_at == pytest.approx(window.width)


# --- the open time on its own ------------------------------------------------------------


def test_open_time_doubles_with_full_jitter_above_the_floor_up_to_the_cap() -> None:
    draws = iter([1.0, 1.0, 0.0, 0.5, 1.0, 1.0])
    open_time = OpenTime(10.0, 50.0, rand=lambda: next(draws))
    assert open_time.first() == 10.0
    assert open_time.reopen() == 20.0  # ceiling 20, drawn at the top
    assert open_time.reopen() == 40.0  # ceiling 40
    assert open_time.reopen() == 10.0  # ceiling 50 (capped), drawn at the floor
    assert open_time.reopen() == 30.0  # halfway between 10 and 50
    assert open_time.reopen() == 50.0
    open_time.reset()
    assert open_time.first() == 10.0
    assert open_time.reopen() == 20.0  # a close started the doubling over


def test_open_time_without_a_cap_never_grows() -> None:
    open_time = OpenTime(10.0, rand=lambda: 1.0)
    assert [open_time.first(), open_time.reopen(), open_time.reopen()] == [10.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="below the open time"):
        OpenTime(10.0, 5.0)


# --- the breaker: rates ------------------------------------------------------------------


def test_without_rate_rules_the_breaker_is_the_seed_breaker(clock: ManualClock) -> None:
    breaker = Breaker("dep", BreakerConfig(3, 10, 2), clock=clock)
    assert type(breaker) is Breaker
    assert isinstance(breaker._acquire(), int)  # a generation, as before
    assert "window" not in breaker.metrics()


def test_failure_rate_trips_once_minimum_calls_are_in(clock: ManualClock) -> None:
    breaker = make(clock, minimum_calls=10, failure_rate_threshold=0.5)
    assert isinstance(breaker, Breaker)
    for _ in range(4):
        ok(breaker, clock)
        fail(breaker, clock)  # never two failures in a row
    assert breaker.state == "closed"  # 4 of 8 failed, but fewer than 10 calls
    ok(breaker, clock)
    fail(breaker, clock)  # 5 of 10
    assert breaker.state == "open"
    metrics = breaker.metrics()
    assert metrics["opened_reason"] == "failure_rate"
    assert metrics["open_seconds"] == 10.0


def test_the_consecutive_rule_still_trips_first_when_it_is_first(clock: ManualClock) -> None:
    breaker = make(clock, failure_threshold=3, minimum_calls=50)
    for _ in range(3):
        fail(breaker, clock)
    assert breaker.metrics()["opened_reason"] == "consecutive_failures"


def test_slow_successes_return_their_value_and_trip_the_slow_rate(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, slow_call_rate_threshold=0.5, minimum_calls=10)
    values = []
    for _ in range(4):
        values.append(ok(breaker, clock, 0.12))  # slow, but a success: the caller gets it
        values.append(ok(breaker, clock, 0.01))
    assert values == ["value"] * 8
    assert breaker.state == "closed"
    ok(breaker, clock, 0.01)
    assert ok(breaker, clock, 0.12) == "value"  # the tripping call still returns its value
    assert breaker.state == "open"
    assert breaker.metrics()["opened_reason"] == "slow_call_rate"
    with pytest.raises(CircuitOpenError):
        ok(breaker, clock)


def test_a_call_just_over_the_slow_threshold_is_slow(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, minimum_calls=1, slow_call_rate_threshold=1.0)
    ok(breaker, clock, 0.049)
    assert breaker.metrics()["window"]["slow_call_rate"] == 0.0
    ok(breaker, clock, 0.051)
    assert breaker.metrics()["window"] == {
        "seconds": 2.0,
        "calls": 2,
        "failure_rate": 0.0,
        "slow_call_rate": 0.5,
    }


def test_bad_calls_older_than_the_window_do_not_count(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, minimum_calls=10, slow_call_rate_threshold=0.5)
    for _ in range(9):
        ok(breaker, clock, 0.1)  # 9 slow calls ...
    clock.advance(5)  # ... that leave the 2 s window
    for _ in range(9):
        ok(breaker, clock, 0.01)
    ok(breaker, clock, 0.1)
    assert breaker.state == "closed"
    assert breaker.metrics()["window"]["calls"] == 10
    assert breaker.metrics()["window"]["slow_call_rate"] == 0.1


def test_a_steady_trickle_of_slow_calls_below_the_rate_never_trips(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, minimum_calls=20, slow_call_rate_threshold=0.5)
    for i in range(2000):  # 20 s of 100 calls/s, every 10th slow
        ok(breaker, clock, 0.12 if i % 10 == 0 else 0.009)
    assert breaker.state == "closed"
    window = breaker.metrics()["window"]
    assert 0.05 < window["slow_call_rate"] < 0.2


def test_neutral_calls_count_toward_nothing(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, minimum_calls=2, slow_call_rate_threshold=0.5)

    def cancelled() -> None:
        clock.advance(1.0)  # slow, but cancelled: neither slow nor failed nor a call
        raise asyncio.CancelledError

    for _ in range(5):
        with pytest.raises(asyncio.CancelledError):
            breaker.call(cancelled)
    ok(breaker, clock)
    assert breaker.state == "closed"
    assert breaker.metrics()["window"]["calls"] == 1
    assert breaker.metrics()["neutral_calls"] == 5


def test_ignored_exceptions_are_neutral_for_the_rates_too(clock: ManualClock) -> None:
    breaker = make(clock, minimum_calls=2, failure_rate_threshold=0.5)
    admission = breaker.admit(lambda exc: not isinstance(exc, ValueError))
    assert admission is not None
    with pytest.raises(ValueError), admission:
        raise ValueError("a caller's mistake")
    ok(breaker, clock)
    ok(breaker, clock)
    assert breaker.metrics()["window"]["failure_rate"] == 0.0


def test_async_calls_are_timed_and_judged_alike(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, minimum_calls=4, slow_call_rate_threshold=0.5)

    async def slow() -> str:
        await asyncio.sleep(0)
        clock.advance(0.2)
        return "async value"

    async def run() -> list[str]:
        return [await breaker.call_async(slow) for _ in range(4)]

    assert asyncio.run(run()) == ["async value"] * 4
    assert breaker.state == "open"
    assert breaker.metrics()["opened_reason"] == "slow_call_rate"


def test_breaker_guarded_functions_feed_the_rate_rules(clock: ManualClock) -> None:
    harness = configure_for_tests(
        {
            "common": {
                "circuit_breakers": {
                    "component_configs": {
                        "reports": {
                            "window_seconds": 2,
                            "minimum_calls": 4,
                            "slow_call_seconds": 0.05,
                            "failure_threshold": 100,
                        }
                    }
                }
            }
        },
        clock=clock,
    )

    @breaker_guarded("reports", fallback="fallback")
    def report() -> str:
        clock.advance(0.3)
        return "fresh"

    assert [report() for _ in range(5)] == ["fresh"] * 4 + ["fallback"]
    assert harness.breakers.get("reports").metrics()["opened_reason"] == "slow_call_rate"


# --- probes and the growing open time ----------------------------------------------------


def trip(breaker: Breaker, clock: ManualClock) -> None:
    for _ in range(10):
        fail(breaker, clock)
    assert breaker.state == "open"


def test_each_failed_probe_doubles_the_open_time_up_to_the_cap(clock: ManualClock) -> None:
    breaker = make(clock, max_timeout_seconds=35.0)  # jitter drawn at the top (rand 1.0)
    trip(breaker, clock)
    seen = [breaker.metrics()["open_seconds"]]
    for _ in range(3):
        clock.advance(breaker.retry_after_seconds or 0)
        fail(breaker, clock)  # the probe fails: open again, longer
        assert breaker.state == "open"
        seen.append(breaker.metrics()["open_seconds"])
        assert breaker.retry_after_seconds == pytest.approx(seen[-1])
    assert seen == [10.0, 20.0, 35.0, 35.0]
    assert breaker.metrics()["opened_reason"] == "failure_rate"  # kept through re-opens
    clock.advance(35)
    ok(breaker, clock)
    ok(breaker, clock)  # two successful probes close it ...
    assert breaker.state == "closed"
    assert breaker.metrics()["open_seconds"] is None
    assert breaker.metrics()["opened_reason"] is None
    trip(breaker, clock)
    assert breaker.metrics()["open_seconds"] == 10.0  # ... and the next trip starts over


def test_jitter_spreads_the_open_time_between_the_floor_and_the_ceiling(
    clock: ManualClock,
) -> None:
    draws = iter([0.25])
    breaker = make(clock, max_timeout_seconds=100.0, rand=lambda: next(draws))
    trip(breaker, clock)
    clock.advance(10)
    fail(breaker, clock)
    assert breaker.metrics()["open_seconds"] == pytest.approx(12.5)  # 10 + 0.25 * (20 - 10)


def test_a_slow_probe_counts_as_a_failed_probe(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, max_timeout_seconds=40.0)
    trip(breaker, clock)
    clock.advance(10)
    assert ok(breaker, clock, 0.2) == "value"  # the caller still gets the value
    assert breaker.state == "open"
    assert breaker.metrics()["open_seconds"] == 20.0
    clock.advance(20)
    ok(breaker, clock, 0.01)
    ok(breaker, clock, 0.01)
    assert breaker.state == "closed"


def test_growth_applies_to_the_seed_rule_too(clock: ManualClock) -> None:
    breaker = Breaker(
        "dep", BreakerConfig(1, 5, 1, max_timeout_seconds=60), clock=clock, rand=lambda: 1.0
    )
    assert type(breaker) is Breaker  # no rate rules: the growth alone
    fail(breaker, clock)
    assert breaker.metrics()["opened_reason"] == "consecutive_failures"
    for expected in (10.0, 20.0, 40.0, 60.0):
        clock.advance(breaker.retry_after_seconds or 0)
        fail(breaker, clock)
        assert breaker.metrics()["open_seconds"] == expected


def test_force_open_says_so_and_starts_from_the_base_time(clock: ManualClock) -> None:
    breaker = make(clock, max_timeout_seconds=60.0)
    breaker.force_open()
    assert breaker.metrics()["opened_reason"] == "forced"
    assert breaker.retry_after_seconds == pytest.approx(10.0)


def test_a_stale_outcome_cannot_move_the_new_state(clock: ManualClock) -> None:
    breaker = make(clock, slow_call_seconds=0.05, success_threshold=1)
    slow = breaker.admit()  # admitted while closed ...
    assert slow is not None
    trip(breaker, clock)  # ... the breaker trips meanwhile
    clock.advance(10)
    with slow:  # a success, long after: not a half-open probe
        pass
    assert breaker.state == "half-open"
    assert breaker.metrics()["success_count"] == 0


def test_reset_clears_the_window(clock: ManualClock) -> None:
    breaker = make(clock, minimum_calls=7)
    for _ in range(3):
        ok(breaker, clock)
        fail(breaker, clock)
    breaker.reset()
    assert breaker.metrics()["window"]["calls"] == 0
    fail(breaker, clock)
    assert breaker.state == "closed"


def test_a_disabled_breaker_keeps_no_window(clock: ManualClock) -> None:
    breaker = Breaker("dep", rules(), clock=clock, enabled=False)
    assert type(breaker) is Breaker
    for _ in range(30):
        fail(breaker, clock)
    assert breaker.state == "closed"


def test_no_lock_is_held_across_a_timed_call() -> None:
    """Eight 50 ms calls at once take about 50 ms, not 400 (real clock)."""
    breaker = Breaker("dep", rules(slow_call_seconds=1.0))
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        breaker.call(time.sleep, 0.05)

    threads = [threading.Thread(target=one) for _ in range(8)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - began < 0.3
    assert breaker.metrics()["window"]["calls"] == 8


def test_health_shows_the_open_time_and_the_reason(clock: ManualClock) -> None:
    harness = configure_for_tests(
        {
            "common": {
                "circuit_breakers": {
                    "component_configs": {
                        "pgmq": {
                            "window_seconds": 2,
                            "minimum_calls": 2,
                            "timeout_seconds": 4,
                            "max_timeout_seconds": 16,
                        }
                    }
                }
            }
        },
        clock=clock,
    )
    breaker = harness.breakers.get("pgmq")
    fail(breaker, clock)
    fail(breaker, clock)
    entry = harness.health()["circuit_breakers"]["pgmq"]
    assert entry["state"] == "open"
    assert entry["opened_reason"] == "failure_rate"
    assert entry["open_seconds"] == 4.0
    assert entry["retry_after_seconds"] == pytest.approx(4.0)
    assert entry["opened_at"] is not None
    assert entry["window"]["failure_rate"] == 1.0
    closed = harness.health()["circuit_breakers"]["cache"]
    assert closed["opened_reason"] is None
    assert closed["open_seconds"] is None


def test_a_listener_may_read_metrics_inside_a_transition(clock: ManualClock) -> None:
    """Listeners run under the breaker's lock; metrics() must not take it (a deadlock)."""
    seen: list[dict[str, Any]] = []

    class Reader(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            seen.append(breaker.metrics())

    breaker = make(clock, minimum_calls=2)
    breaker.add_listener(Reader())
    done = threading.Event()

    def trip_it() -> None:
        fail(breaker, clock)
        fail(breaker, clock)
        done.set()

    threading.Thread(target=trip_it, daemon=True).start()
    assert done.wait(5), "a listener reading metrics() deadlocked the breaker"
    assert seen[-1]["state"] == "open"
    assert seen[-1]["window"]["failure_rate"] == 1.0


def test_window_counts_as_of_now_without_moving(clock: ManualClock) -> None:
    window = SlidingWindow(
        2.0, minimum_calls=1, failure_rate_threshold=1, slow_call_rate_threshold=1, now=0.0
    )
    window.add(failed=True, slow=False)
    assert window.counts(5, now=1.9) == (5, 1, 0)  # still in the window
    assert window.counts(5, now=2.05) == (0, 0, 0)  # the first bucket has left
    assert window.counts(5, now=100.0) == (0, 0, 0)
    assert window.counts(5) == (5, 1, 0)  # and nothing moved

"""Issue 10, hardening: the cases that need no real server (one test per numbered case).

The cases that involve a server are in ``tests/integration/test_hardening.py``.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from typing import Any

import pybreaker
import pytest

from tasker_resilience._breakers.breaker import Breaker, counter_value
from tasker_resilience._config.schema import BreakerConfig
from tasker_resilience._errors import ConfigurationError
from tasker_resilience.testing import ManualClock, configure_for_tests


class _Exploding(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        raise RuntimeError("listener bug")


def test_case15_a_raising_listener_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    breaker = Breaker("dep", BreakerConfig(1, 1.0, 1), clock=clock, listeners=[_Exploding()])
    breaker.add_listener(_Exploding())

    def boom() -> None:
        raise OSError("down")

    with caplog.at_level(logging.ERROR, "tasker_resilience.breaker"), pytest.raises(OSError):
        breaker.call(boom)  # the trip runs both listeners; only the call's own error escapes
    assert breaker.state == "open"
    clock.advance(1.5)
    assert breaker.call(lambda: 42) == 42  # half-open -> closed, listeners raising again
    assert breaker.state == "closed"
    raised = [r for r in caplog.records if "listener" in r.getMessage()]
    # Two listeners x three transitions (closed->open, open->half-open, half-open->closed).
    assert len(raised) == 6
    assert all(r.exc_info for r in raised)


def test_case15_raising_listener_on_the_cache_breaker_keeps_cache_calls_quiet() -> None:
    res = configure_for_tests()
    res.breakers.get("cache").add_listener(_Exploding())
    res.breakers.get("cache").force_open()  # a transition: the listener raised, logged
    assert res.cache.get("k") is None


def test_case19_counter_value_does_not_use_pickling() -> None:
    counter = itertools.count()
    for _ in range(7):
        next(counter)
    with warnings.catch_warnings():
        # 3.12/3.13 warn on itertools pickling (__reduce__), 3.14 removed it.
        warnings.simplefilter("error", DeprecationWarning)
        assert counter_value(counter) == 7
        assert counter_value(itertools.count(10**20)) == 10**20


def test_case6_hung_half_open_probes_time_out_and_free_their_slots() -> None:
    clock = ManualClock()
    config = BreakerConfig(1, 30.0, 1, probe_timeout_seconds=5.0)
    breaker = Breaker("dep", config, clock=clock)
    breaker.force_open()
    clock.advance(31)
    hung = breaker.admit()  # the one probe slot; its call never returns
    assert hung is not None
    assert breaker.admit() is None  # slot taken
    assert breaker.retry_after_seconds is None  # half-open, probe in flight
    clock.advance(4)
    assert breaker.admit() is None  # within the probe deadline: still waiting
    clock.advance(2)
    assert breaker.admit() is None  # past it: the probe counts as failed, circuit re-opens
    assert breaker.state == "open"
    assert breaker.retry_after_seconds == pytest.approx(30.0)
    clock.advance(31)
    probe = breaker.admit()  # a fresh probe gets the slot
    assert probe is not None
    with probe:
        pass
    assert breaker.state == "closed"
    with hung:  # the hung call finally returns: stale, moves nothing
        pass
    assert breaker.state == "closed"
    m = breaker.metrics()
    assert (
        m["total_calls"]
        == m["successful_calls"] + m["failed_calls"] + m["rejected_calls"] + m["neutral_calls"]
    )


def test_case6_probe_timeout_is_configurable_with_a_default() -> None:
    res = configure_for_tests(
        {"common": {"circuit_breakers": {"default_config": {"probe_timeout_seconds": 2.5}}}}
    )
    assert res.breakers.get("custom").config.probe_timeout_seconds == 2.5
    assert res.breakers.get("cache").config.probe_timeout_seconds == 10.0  # the default
    with pytest.raises(ConfigurationError, match="probe_timeout_seconds"):
        configure_for_tests(
            {"common": {"circuit_breakers": {"default_config": {"probe_timeout_seconds": 0}}}}
        )

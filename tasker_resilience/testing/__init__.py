"""Helpers for your own tests: reset process-wide state, short timeouts, a manual clock.

import tasker_resilience as tr
from tasker_resilience.testing import ManualClock, configure_for_tests, reset

@pytest.fixture(autouse=True)
def _resilience():
    clock = ManualClock()
    yield configure_for_tests(clock=clock)   # memory cache, 3 failures, 1 s open
    reset()
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from tasker_resilience._config.layers import deep_merge
from tasker_resilience._resilience import Resilience, configure, reset_current

__all__ = ["TEST_OVERRIDES", "ManualClock", "configure_for_tests", "reset"]

TEST_OVERRIDES: Mapping[str, Any] = {
    "common": {
        "circuit_breakers": {
            "default_config": {
                "failure_threshold": 3,
                "timeout_seconds": 1,
                "success_threshold": 1,
            },
            "component_configs": {
                name: {"failure_threshold": 3, "timeout_seconds": 1, "success_threshold": 1}
                for name in ("cache", "pgmq", "task_readiness")
            },
        },
        "cache": {"backend": "memory"},
    }
}
"""Small thresholds and a 1 s open timeout, and the in-process cache."""


class ManualClock:
    """A monotonic clock that moves only when told: ``clock.advance(30)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds


def configure_for_tests(
    overrides: Mapping[str, Any] | None = None,
    *,
    clock: ManualClock | None = None,
    root: str | None = None,
) -> Resilience:
    """``configure(env="test")`` with :data:`TEST_OVERRIDES` under your ``overrides``."""
    return configure(
        env="test",
        overrides=deep_merge(TEST_OVERRIDES, overrides or {}),
        clock=clock,
        root=root,
    )


def reset() -> None:
    """Drop the process-wide :class:`Resilience`; the next use configures afresh."""
    reset_current()

"""Helpers shared by the real-server tests: short-timeout configuration, waiting, timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pybreaker

from tasker_resilience import Resilience
from tasker_resilience.testing import configure_for_tests

BACKEND_NAMES = ["redis", "dragonfly"]
"""Both names run the same service class; each test runs under both."""

SOCKET_TIMEOUT = 0.15
"""What one call to a hung server costs before it counts as a failure."""


def configure_cache(
    url: str,
    backend_name: str,
    key_prefix: str,
    *,
    failure_threshold: int = 3,
    timeout_seconds: float = 0.5,
    success_threshold: int = 1,
    max_connections: int = 10,
    socket_timeout: float = SOCKET_TIMEOUT,
    connect_timeout: float = SOCKET_TIMEOUT,
) -> Resilience:
    """The process-wide Resilience with a real cache at ``url`` and a fast breaker."""
    return configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": backend_name,
                    "key_prefix": key_prefix,
                    "redis": {
                        "url": url,
                        "socket_timeout_seconds": socket_timeout,
                        "connect_timeout_seconds": connect_timeout,
                        "max_connections": max_connections,
                    },
                },
                "circuit_breakers": {
                    "component_configs": {
                        "cache": {
                            "failure_threshold": failure_threshold,
                            "timeout_seconds": timeout_seconds,
                            "success_threshold": success_threshold,
                        }
                    }
                },
            }
        }
    )


def wait_until(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class TransitionRecorder(pybreaker.CircuitBreakerListener):
    """Records every ``(from, to)`` state change of a breaker, from any thread."""

    def __init__(self) -> None:
        self.transitions: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        with self._lock:
            self.transitions.append((_name(old_state), _name(new_state)))


def _name(state: Any) -> str:
    # pybreaker says "half_open"; the breaker's own vocabulary is "half-open".
    return str(getattr(state, "name", state)).replace("_", "-")

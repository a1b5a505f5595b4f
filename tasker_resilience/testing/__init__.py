"""Test your own code against tasker-resilience: a fakeredis cache you can take down, a
manual clock for the breakers, the backend conformance suite, a fault proxy that makes a
real server slow, silent or rude (``FaultProxy``), and a pytest plugin.

    from tasker_resilience.testing import ManualClock, configure_for_tests, reset

    def test_my_service_survives_a_cache_outage():
        harness = configure_for_tests(backend="fakeredis", clock=ManualClock())
        with harness.outage():
            ...                      # the cache is down: your code must still answer
        reset()

With the pytest plugin (installed with the package), the fixtures ``tasker_harness``,
``tasker_cache`` and ``tasker_clock`` do the set-up and the reset. See the guide,
"Testing your own code".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasker_resilience._resilience import reset_current
from tasker_resilience.testing._harness import (
    FAKE_BACKENDS,
    TEST_OVERRIDES,
    Harness,
    ManualClock,
    configure_for_tests,
)

if TYPE_CHECKING:
    from tasker_resilience.testing.backend_suite import BackendConformance
    from tasker_resilience.testing.fault_proxy import FaultProxy

__all__ = [
    "FAKE_BACKENDS",
    "TEST_OVERRIDES",
    "BackendConformance",
    "FaultProxy",
    "Harness",
    "ManualClock",
    "configure_for_tests",
    "reset",
]


def reset() -> None:
    """Drop the process-wide :class:`~tasker_resilience.Resilience`; the next use
    configures afresh."""
    reset_current()


def __getattr__(name: str) -> Any:
    # The conformance suite needs pytest; configure_for_tests and the clock do not.
    # The fault proxy is imported on first use too (it needs only the standard library).
    if name == "BackendConformance":
        from tasker_resilience.testing.backend_suite import BackendConformance

        return BackendConformance
    if name == "FaultProxy":
        from tasker_resilience.testing.fault_proxy import FaultProxy

        return FaultProxy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazily imported names too, so editors, dir() and help() list them.
    return sorted({*globals(), *__all__})

"""Log lines for breaker events, as a pybreaker listener.

Transitions are rare and logged at INFO; rejected calls are frequent during an
outage and logged at DEBUG behind an ``isEnabledFor`` guard, so with DEBUG off the
hot path pays one cached level check and builds no message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import pybreaker

__all__ = [
    "BREAKER_LOGGER",
    "GuardedListener",
    "TransitionLogger",
    "log_rate_trip",
    "log_rejected",
]

BREAKER_LOGGER = logging.getLogger("tasker_resilience.breaker")


class _Rejecting(Protocol):
    """What a rejection line needs of a breaker (``Breaker`` has it; this module sits
    below ``breaker`` and must not import it)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def retry_after_seconds(self) -> float | None: ...


class TransitionLogger(pybreaker.CircuitBreakerListener):
    """Logs every state change with breaker name, old -> new state and failure count."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None) or "new"
        BREAKER_LOGGER.info(
            "circuit breaker %r: %s -> %s (failure_count=%d)",
            cb.name,
            old,
            new_state.name,
            cb.fail_counter,
        )


class GuardedListener(pybreaker.CircuitBreakerListener):
    """A user's listener whose exceptions are logged, never raised.

    Listeners run inside a transition, on the thread of the call that caused it: a
    listener that raises would turn a cache miss into the caller's exception and
    leave the transition half done.
    """

    def __init__(self, listener: pybreaker.CircuitBreakerListener) -> None:
        self.listener = listener

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        try:
            self.listener.state_change(cb, old_state, new_state)
        except Exception:
            BREAKER_LOGGER.exception(
                "circuit breaker %r: listener %r raised on %s -> %s; ignored",
                cb.name,
                self.listener,
                getattr(old_state, "name", None) or "new",
                getattr(new_state, "name", new_state),
            )


def log_rejected(breaker: _Rejecting) -> None:
    """One DEBUG line per rejected call; callers check ``isEnabledFor`` first."""
    BREAKER_LOGGER.debug(
        "circuit breaker %r is %s: call skipped (retry in %.3fs)",
        breaker.name,
        breaker.state,
        breaker.retry_after_seconds or 0.0,
    )


class _Thresholds(Protocol):
    """What a rate-trip line reads of a breaker's config."""

    @property
    def failure_rate_threshold(self) -> float: ...
    @property
    def slow_call_rate_threshold(self) -> float: ...
    @property
    def slow_call_seconds(self) -> float: ...


def log_rate_trip(
    name: str, reason: str, window: Mapping[str, float | int], config: _Thresholds
) -> None:
    """Why a rate rule tripped (INFO, before the transition line): that line's
    failure count says nothing about a slow-call trip."""
    slow = reason == "slow_call_rate"
    BREAKER_LOGGER.info(
        "circuit breaker %r: %s %.2f of %d calls in the last %gs%s reached %.2f; opening",
        name,
        "slow-call rate" if slow else "failure rate",
        window["slow_call_rate" if slow else "failure_rate"],
        window["calls"],
        window["seconds"],
        f" (slower than {config.slow_call_seconds:g}s)" if slow else "",
        config.slow_call_rate_threshold if slow else config.failure_rate_threshold,
    )

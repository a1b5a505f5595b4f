"""Log lines for breaker events, as a pybreaker listener.

Transitions are rare and logged at INFO; rejected calls are frequent during an
outage and logged at DEBUG behind an ``isEnabledFor`` guard, so with DEBUG off the
hot path pays one cached level check and builds no message.

Telemetry (``_operations/telemetry.py``, above this room) hears of each transition
through one slot, :func:`set_transition_hook`, that it fills on import; this module
imports nothing of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pybreaker

__all__ = [
    "BREAKER_LOGGER",
    "GuardedListener",
    "TransitionHook",
    "TransitionLogger",
    "log_rate_trip",
    "log_rejected",
    "set_transition_hook",
]

BREAKER_LOGGER = logging.getLogger("tasker_resilience.breaker")

TransitionHook = Callable[[str, str, str, int], None]
"""``hook(breaker_name, old_state, new_state, failure_count)``, on the thread of the call
that caused the transition."""

_hook: TransitionHook | None = None


def set_transition_hook(hook: TransitionHook | None) -> None:
    """Fill (or empty) the slot every breaker's :class:`TransitionLogger` reports to."""
    global _hook
    _hook = hook


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
        hook = _hook
        if hook is not None:
            try:
                hook(cb.name, old, new_state.name, cb.fail_counter)
            except Exception:  # never into the transition: see GuardedListener
                BREAKER_LOGGER.exception("circuit breaker %r: transition hook raised", cb.name)


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

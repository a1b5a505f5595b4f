"""One named circuit breaker: pybreaker keeps state, storage and listeners; we own the call path.

Why not ``pybreaker.CircuitBreaker.call``: it holds one lock across the guarded call
(concurrent calls run one at a time), has no asyncio support, counts cancellation as a
failure, lets every concurrent call through in half-open, and cannot count rejected
calls. Here the decision is two short critical sections, ``_acquire`` before the call
and ``_release`` after it, shared by sync and async callers; no lock is held while
the call runs.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import pybreaker

from tasker_resilience._breakers.policy import FailurePolicy, count_all_exceptions, is_neutral
from tasker_resilience._breakers.transitions import (
    BREAKER_LOGGER,
    GuardedListener,
    TransitionLogger,
    log_rejected,
)
from tasker_resilience._config.schema import BreakerConfig
from tasker_resilience._errors import CircuitOpenError
from tasker_resilience._forks import new_lock_after_fork

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Admission",
    "Breaker",
    "Clock",
    "StateName",
    "counter_value",
]

StateName = Literal["closed", "open", "half-open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"

Clock = Callable[[], float]
T = TypeVar("T")

_DEBUG = logging.DEBUG


def counter_value(counter: itertools.count[int]) -> int:
    """The current value of an ``itertools.count`` used as a lock-free counter."""
    # itertools.count is the cheapest thread-safe counter in CPython (next() is one
    # C call under the GIL). Its value is readable only through its repr,
    # "count(<n>)" for the integer counts made here: __reduce__ (pickling) warns on
    # 3.12/3.13 and is gone in 3.14.
    text = repr(counter)
    if not (text.startswith("count(") and text.endswith(")")):
        raise TypeError(f"not a plain itertools.count: {text}")
    return int(text[6:-1])


class Breaker:
    """A named circuit breaker. Get one from ``BreakerRegistry.get(name)``.

    States: ``closed`` (calls run; ``failure_threshold`` consecutive counted failures
    open it), ``open`` (calls are rejected without running until ``timeout_seconds``
    pass), ``half-open`` (at most ``success_threshold`` probe calls run at once;
    ``success_threshold`` successes close it, one failure re-opens it).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        enabled: bool = True,
        clock: Clock = time.monotonic,
        failure_policy: FailurePolicy = count_all_exceptions,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        self.name: Final = name
        self.config: Final = config
        self.enabled: Final = enabled
        self.failure_policy = failure_policy
        """Decides which exceptions count; ``@breaker_guarded(record=..., ignore=...)``
        may pass its own per call site."""
        self._clock = clock
        self._storage = storage or pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._shared = not isinstance(self._storage, pybreaker.CircuitMemoryStorage)
        self._cb = pybreaker.CircuitBreaker(
            fail_max=config.failure_threshold,
            reset_timeout=config.timeout_seconds,
            success_threshold=config.success_threshold,
            state_storage=self._storage,
            name=name,
            listeners=[TransitionLogger(), *map(GuardedListener, listeners)],
        )
        self._lock = threading.Lock()
        new_lock_after_fork(self)  # a child forked mid-call must not inherit it held
        self._state: StateName = CLOSED
        # Bumped on every transition: an outcome decided under an older state
        # (a slow call admitted while closed that returns after the trip) is stale
        # and must not move the new state.
        self._generation = 0
        self._retry_at = 0.0
        self._opened_at: float | None = None
        self._probes_in_flight = 0
        # When the probes now in flight (the first of them) must have finished by.
        self._probe_deadline = 0.0
        self._local_streak = 0  # this process's view of the failure streak (fast path only)
        self._calls = itertools.count()
        self._successes = itertools.count()
        self._failures = itertools.count()
        self._rejected = itertools.count()
        # Calls that ended neither as a success nor as a failure: cancelled, a caller's
        # mistake, or a local resource limit (an exhausted connection pool).
        self._neutral = itertools.count()
        self._transitions = itertools.count()
        if self._storage.state != pybreaker.STATE_CLOSED:
            # Shared storage may hold an open circuit from another process: honour it.
            self._enter(OPEN)

    # --- the decision, shared by sync and async callers ---------------------------------

    def _acquire(self) -> int | None:
        """Admit a call (returns its generation) or reject it (returns None)."""
        state = self._state
        if state is CLOSED:
            next(self._calls)
            return self._generation
        if self._rejects():
            return None
        next(self._calls)
        with self._lock:
            if self._state is OPEN and self._clock() >= self._retry_at:
                self._enter(HALF_OPEN)
            if self._state is HALF_OPEN:
                admitted = self._probes_in_flight < self.config.success_threshold
                if admitted:
                    if not self._probes_in_flight:
                        self._probe_deadline = self._clock() + self.config.probe_timeout_seconds
                    self._probes_in_flight += 1
                elif self._clock() >= self._probe_deadline:
                    # Every slot is held by probes that outlived probe_timeout_seconds
                    # (a call without a timeout of its own, hung): count that as the
                    # failed probe it is. Re-opening frees the slots; the hung calls'
                    # outcomes are stale when they return (older generation), and
                    # are counted then, as the calls they are.
                    self._storage.increment_counter()
                    self._enter(OPEN)
            else:
                admitted = self._state is CLOSED
            generation = self._generation
        if admitted:
            return generation
        next(self._rejected)  # the call itself was counted above
        if BREAKER_LOGGER.isEnabledFor(_DEBUG):
            log_rejected(self)
        return None

    def _rejects(self) -> bool:
        """Reject one call now (counted) if the circuit is open with no probe due.

        The cheapest complete decision for callers that do not need a generation
        (a fallback, a skipped cache read): a state check and, only while open, a
        clock read. False means: ask :meth:`_acquire`, which counts the call itself.
        """
        if self._state is OPEN and self._clock() < self._retry_at:
            next(self._calls)
            next(self._rejected)
            if BREAKER_LOGGER.isEnabledFor(_DEBUG):
                log_rejected(self)
            return True
        return False

    def _release(
        self, generation: int, exc: BaseException | None, policy: FailurePolicy | None = None
    ) -> None:
        """Record the outcome of a call admitted at ``generation``."""
        if exc is None:
            next(self._successes)
            # Fast path: a success while closed with no failure streak changes nothing.
            # The streak is mirrored locally because reading storage.counter can be a
            # network round trip (pybreaker's Redis storage); shared storage always
            # takes the slow path so one process's success resets the shared streak.
            if self._state is CLOSED and not self._local_streak and not self._shared:
                return
            failed = False
        elif is_neutral(exc) or not (policy or self.failure_policy)(exc):
            next(self._neutral)
            failed = None  # neutral: frees a probe slot, moves nothing else
        else:
            next(self._failures)
            failed = True
        with self._lock:
            if generation != self._generation:
                return
            if self._state is HALF_OPEN:
                self._probes_in_flight -= 1
                if failed:
                    self._storage.increment_counter()
                    self._enter(OPEN)
                elif failed is False:
                    self._storage.increment_success_counter()
                    if self._storage.success_counter >= self.config.success_threshold:
                        self._enter(CLOSED)
            elif self._state is CLOSED and self.enabled:
                if failed:
                    self._local_streak += 1
                    self._storage.increment_counter()
                    if self._storage.counter >= self.config.failure_threshold:
                        self._enter(OPEN)
                elif failed is False:
                    self._local_streak = 0
                    self._storage.reset_counter()

    def _enter(self, state: StateName) -> None:
        """Move to ``state``; the caller holds ``self._lock`` (or is ``__init__``)."""
        self._generation += 1
        self._probes_in_flight = 0
        self._local_streak = 0
        next(self._transitions)
        if state is OPEN:
            # Publish retry_at before the state: the lock-free fast path reads the
            # state first and must never see OPEN with a stale deadline.
            self._retry_at = self._clock() + self.config.timeout_seconds
            self._opened_at = time.time()
            self._state = OPEN
            self._cb.open()
        elif state is HALF_OPEN:
            self._state = HALF_OPEN
            self._cb.half_open()
        else:
            self._opened_at = None
            self._state = CLOSED
            self._cb.close()

    # --- calling ------------------------------------------------------------------------

    def admit(self, policy: FailurePolicy | None = None) -> Admission | None:
        """Ask to make one call: an :class:`Admission` to run it under, or None if rejected.

        ``with admission: ...`` records the block's outcome. Nothing is held while the
        block runs, so it may ``await``. ``policy`` overrides the breaker's own for
        this call.
        """
        generation = self._acquire()
        return None if generation is None else Admission(self, generation, policy)

    def call(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` through the breaker; raises
        :class:`CircuitOpenError` when rejected."""
        admission = self.admit()
        if admission is None:
            raise self.open_error()
        with admission:
            return func(*args, **kwargs)

    async def call_async(
        self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> T:
        """Await ``func(*args, **kwargs)`` through the breaker; raises
        :class:`CircuitOpenError` when rejected."""
        admission = self.admit()
        if admission is None:
            raise self.open_error()
        with admission:
            return await func(*args, **kwargs)

    # --- reading and steering -----------------------------------------------------------

    @property
    def state(self) -> StateName:
        """``closed``, ``open`` or ``half-open``; an open breaker past its timeout
        reads ``half-open`` (the next call will probe)."""
        state = self._state
        if state is OPEN and self._clock() >= self._retry_at:
            return HALF_OPEN
        return state

    @property
    def is_open(self) -> bool:
        """True while calls are being rejected without running."""
        return self._state is OPEN and self._clock() < self._retry_at

    @property
    def retry_after_seconds(self) -> float | None:
        """Seconds until the next half-open probe while open, else None."""
        if self._state is not OPEN:
            return None
        return max(0.0, self._retry_at - self._clock())

    def open_error(self) -> CircuitOpenError:
        """The exception a rejected call raises."""
        return CircuitOpenError(self.name, self.retry_after_seconds)

    def metrics(self) -> dict[str, Any]:
        """A JSON-ready snapshot of counters and state."""
        opened_at = self._opened_at
        retry_after = self.retry_after_seconds
        return {
            "state": self.state,
            "failure_count": self._storage.counter,
            "success_count": self._storage.success_counter,
            "total_calls": counter_value(self._calls),
            "successful_calls": counter_value(self._successes),
            "failed_calls": counter_value(self._failures),
            "rejected_calls": counter_value(self._rejected),
            "neutral_calls": counter_value(self._neutral),
            "transitions": counter_value(self._transitions),
            "opened_at": (
                None
                if opened_at is None
                else datetime.fromtimestamp(opened_at, timezone.utc).isoformat()
            ),
            "retry_after_seconds": None if retry_after is None else round(retry_after, 3),
        }

    def force_open(self) -> None:
        """Open now (maintenance, tests); probes start after ``timeout_seconds``."""
        with self._lock:
            self._enter(OPEN)

    def reset(self) -> None:
        """Close now and clear the failure streak."""
        with self._lock:
            self._storage.reset_counter()
            if self._state is not CLOSED:
                self._enter(CLOSED)

    def add_listener(self, listener: pybreaker.CircuitBreakerListener) -> None:
        """Add a pybreaker listener; its ``state_change`` sees every transition.
        An exception it raises is logged (ERROR, with its traceback) and ignored."""
        self._cb.add_listener(GuardedListener(listener))

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r} {self.state}>"


class Admission:
    """One admitted call: records its outcome when the ``with`` block ends."""

    __slots__ = ("_breaker", "_generation", "_policy")

    def __init__(self, breaker: Breaker, generation: int, policy: FailurePolicy | None) -> None:
        self._breaker = breaker
        self._generation = generation
        self._policy = policy

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._breaker._release(self._generation, exc, self._policy)

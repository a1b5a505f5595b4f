"""One named circuit breaker: pybreaker keeps state, storage and listeners; we own the call path.

Why not ``pybreaker.CircuitBreaker.call``: it holds one lock across the guarded call
(concurrent calls run one at a time), has no asyncio support, counts cancellation as a
failure, lets every concurrent call through in half-open, and cannot count rejected
calls. Here the decision is two short critical sections, ``_acquire`` before the call
and ``_release`` after it, shared by sync and async callers; no lock is held while
the call runs.

The rules beside pybreaker's consecutive-failure count live in their own modules and
are consulted here: ``window`` (the failure-rate and slow-call-rate rules over a
sliding time window, on with ``window_seconds > 0``) and ``backoff`` (the open time,
growing after each failed probe up to ``max_timeout_seconds``).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pybreaker

from tasker_resilience._breakers.backoff import OpenTime, Random
from tasker_resilience._breakers.policy import FailurePolicy, count_all_exceptions, is_neutral
from tasker_resilience._breakers.states import (
    CLOSED,
    CONSECUTIVE_FAILURES,
    FORCED,
    HALF_OPEN,
    OPEN,
    StateName,
)
from tasker_resilience._breakers.transitions import (
    BREAKER_LOGGER,
    GuardedListener,
    TransitionLogger,
    log_rate_trip,
    log_rejected,
)
from tasker_resilience._breakers.window import FAILURE_RATE, SLOW_CALL_RATE, SlidingWindow
from tasker_resilience._config.schema import BreakerConfig
from tasker_resilience._errors import CircuitOpenError
from tasker_resilience._forks import new_lock_after_fork

if TYPE_CHECKING:
    from tasker_resilience._breakers.host_sharing import HostChannel

__all__ = [
    "CLOSED",
    "CONSECUTIVE_FAILURES",
    "FAILURE_RATE",
    "FORCED",
    "HALF_OPEN",
    "OPEN",
    "SLOW_CALL_RATE",
    "Admission",
    "Breaker",
    "Clock",
    "StateName",
    "Ticket",
    "counter_value",
]

Clock = Callable[[], float]
Ticket = float
"""What ``_acquire`` hands out and ``_release`` takes back: the generation the call
was admitted in (an int), or, for a breaker with rate rules, the time it was admitted
at, which both dates its generation and times the call."""
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
    open it), ``open`` (calls are rejected without running until the open time
    passes), ``half-open`` (at most ``success_threshold`` probe calls run at once;
    ``success_threshold`` successes close it, one failure re-opens it).

    With ``window_seconds > 0`` (the rate rules) a closed breaker also opens when, once
    ``minimum_calls`` calls ended in the last ``window_seconds``, the fraction that
    failed reaches ``failure_rate_threshold`` or the fraction slower than
    ``slow_call_seconds`` reaches ``slow_call_rate_threshold``; a slow probe counts as
    a failed one. The open time is ``timeout_seconds``, growing after each failed
    probe up to ``max_timeout_seconds`` (see ``backoff``). ``rand`` is the jitter's
    random source (tests pass their own, as they pass ``clock``).
    """

    def __new__(
        cls, name: str, config: BreakerConfig, *, enabled: bool = True, **_: Any
    ) -> Breaker:
        # A breaker with rate rules is a _TimedBreaker: its own lock-free fast paths
        # (two clock reads a call) leave the plain breaker's exactly as they were.
        if cls is Breaker and config.rate_rules and enabled:
            cls = _TimedBreaker
        return super().__new__(cls)

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
        rand: Random = random.random,
        host: HostChannel | None = None,
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
        # When the current generation began: what dates a timed ticket (see Ticket).
        self._epoch = clock()
        # The generation before: a stale outcome of just that one may still answer for a
        # host-sharing suspect's probe (see _settle).
        self._previous_epoch = self._epoch
        self._retry_at = 0.0
        self._opened_at: float | None = None
        self._opened_reason: str | None = None
        self._open_time = OpenTime(config.timeout_seconds, config.max_timeout_seconds, rand=rand)
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
        # The rate rules (None: off). A disabled breaker never trips, so it keeps none.
        self._window: SlidingWindow | None = None
        if config.rate_rules and enabled:
            self._window = SlidingWindow(
                config.window_seconds,
                minimum_calls=config.minimum_calls,
                failure_rate_threshold=config.failure_rate_threshold,
                slow_call_rate_threshold=config.slow_call_rate_threshold,
                now=self._epoch,
            )
        self._slow_after = config.slow_call_seconds or math.inf
        # Host sharing (opt-in): what the other processes of this host learnt. Consulted
        # on slow paths only; ``_suspect``: a peer opened, the next call verifies.
        self._host = host
        self._suspect = False
        self._refresh_fast_path()
        if host is not None:
            host.attach(self)
        if self._storage.state != pybreaker.STATE_CLOSED:
            # Shared storage may hold an open circuit from another process: honour it.
            self._enter(OPEN, FORCED)

    # --- the decision, shared by sync and async callers ---------------------------------

    def _acquire(self) -> Ticket | None:
        """Admit a call (returns its :data:`Ticket`) or reject it (returns None)."""
        state = self._state
        if state is CLOSED:
            next(self._calls)
            return self._generation
        return self._admit()

    def _admit(self) -> Ticket | None:
        """:meth:`_acquire` when the circuit is not closed: reject, or admit a probe."""
        if self._rejects():
            return None
        next(self._calls)
        with self._lock:
            if (
                self._state is OPEN
                and self._clock() >= self._retry_at
                and (self._host is None or self._host.may_probe(self))
            ):
                self._enter(HALF_OPEN)
            if self._state is HALF_OPEN:
                limit = 1 if self._suspect else self.config.success_threshold
                admitted = self._probes_in_flight < limit
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
            # Read after any transition above: a timed ticket dates its generation.
            ticket = self._generation if self._window is None else self._clock()
        if admitted:
            return ticket
        next(self._rejected)  # the call itself was counted above
        if BREAKER_LOGGER.isEnabledFor(_DEBUG):
            log_rejected(self)
        return None

    def _rejects(self) -> bool:
        """Reject one call now (counted) if the circuit is open with no probe due.

        The cheapest complete decision for callers that do not need a ticket
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
        self, ticket: Ticket, exc: BaseException | None, policy: FailurePolicy | None = None
    ) -> None:
        """Record the outcome of a call admitted with ``ticket``."""
        if exc is None:
            next(self._successes)
            # Fast path: a success while closed with no failure streak changes nothing.
            # The streak is mirrored locally because reading storage.counter can be a
            # network round trip (pybreaker's Redis storage); shared storage always
            # takes the slow path so one process's success resets the shared streak.
            if self._state is CLOSED and not self._local_streak and not self._shared:
                return
        self._decide(ticket, exc, policy)

    def _decide(
        self, ticket: Ticket, exc: BaseException | None, policy: FailurePolicy | None
    ) -> None:
        """``_release`` past its fast path: count the outcome, then move the state under
        the lock. A failure is counted here; a success was counted by the caller."""
        failed: bool | None = False
        if exc is not None:
            if is_neutral(exc) or not (policy or self.failure_policy)(exc):
                next(self._neutral)
                failed = None  # neutral: frees a probe slot, moves nothing else
            else:
                next(self._failures)
                failed = True
        with self._lock:
            self._settle(ticket, failed)
            self._refresh_fast_path()

    def _refresh_fast_path(self) -> None:
        """After a decision under the lock: what a lock-free fast path reads (none here)."""

    def _settle(self, ticket: Ticket, failed: bool | None) -> None:
        """``_release`` under the lock: move the state for one call's outcome
        (``failed``: True, False, or None for a neutral one)."""
        window = self._window
        age = self._age(ticket)
        if age:  # admitted under an earlier state: stale
            if failed and self._suspect and age == 1:
                # Admitted just before a peer's hint made this process suspect: its
                # failure is the answer the probe was to give.
                self._storage.increment_counter()
                self._enter(OPEN)
            return
        now = slow = None
        if window is not None and failed is not None:
            now = self._clock()
            slow = now - ticket >= self._slow_after
        if self._state is HALF_OPEN:
            self._probes_in_flight -= 1
            if failed or slow:
                # A slow probe too: a dependency still slow would trip again at once.
                self._storage.increment_counter()
                self._enter(OPEN)
            elif failed is False:
                self._storage.increment_success_counter()
                if self._suspect or self._storage.success_counter >= self.config.success_threshold:
                    self._enter(CLOSED)
        elif self._state is CLOSED and self.enabled:
            if failed:
                self._local_streak += 1
                self._storage.increment_counter()
                if self._storage.counter >= self.config.failure_threshold or (
                    self._host is not None and self._host.failed(self)
                ):
                    self._enter(OPEN, CONSECUTIVE_FAILURES)
                    return
            elif failed is False:
                self._local_streak = 0
                self._storage.reset_counter()
                if self._host is not None:
                    self._host.recovered(self)
            if window is not None and now is not None:
                self._judge(window, now, bool(failed), bool(slow))

    def _judge(self, window: SlidingWindow, now: float, failed: bool, slow: bool) -> None:
        """Count one closed call's outcome in the window; trip if a rate rule says so."""
        calls = self._ended_calls()
        # The totals before this call: it ended at ``now``, in the window's newest bucket.
        window.advance(now, calls - 1)
        if not (failed or slow):
            return
        window.add(failed=failed, slow=slow)
        reason = window.tripped(calls)
        if reason is not None:
            log_rate_trip(self.name, reason, window.rates(calls), self.config)
            self._enter(OPEN, reason)

    def _age(self, ticket: Ticket) -> int:
        """How many generations ago ``ticket`` was admitted: 0 (this one), 1 (the one
        just before) or 2 (older). A generation number, or a time for a timed ticket."""
        if self._window is None:
            return min(2, int(self._generation - ticket))
        if ticket >= self._epoch:
            return 0
        return 1 if ticket >= self._previous_epoch else 2

    def _ended_calls(self) -> int:
        """Calls that ended as a success or a failure, ever: the window's running total."""
        return counter_value(self._successes) + counter_value(self._failures)

    def _enter(self, state: StateName, reason: str | None = None) -> None:
        """Move to ``state``; the caller holds ``self._lock`` (or is ``__init__``).

        ``OPEN`` with a ``reason`` is a trip (open for ``timeout_seconds``); without
        one, a failed probe re-opens it (for longer: see ``backoff``)."""
        previous = self._state
        self._generation += 1
        self._probes_in_flight = 0
        self._local_streak = 0
        next(self._transitions)
        now = self._clock()
        self._previous_epoch, self._epoch = self._epoch, now
        if state is OPEN:
            if reason is None:
                seconds = self._open_time.reopen()
            else:
                seconds = self._open_time.first()
                self._opened_reason = reason
            # Publish retry_at before the state: the lock-free fast path reads the
            # state first and must never see OPEN with a stale deadline.
            self._retry_at = now + seconds
            self._opened_at = time.time()
            self._state = OPEN
            self._cb.open()
        elif state is HALF_OPEN:
            self._state = HALF_OPEN
            self._cb.half_open()
        else:
            self._opened_at = None
            self._opened_reason = None
            self._open_time.reset()
            if self._window is not None:
                self._window.reset(now, self._ended_calls())
            self._state = CLOSED
            self._cb.close()
        if self._host is not None:
            self._host.entered(self, previous)
        self._suspect = False
        self._refresh_fast_path()

    def _enter_suspect(self) -> None:
        """Host sharing: a peer opened; the next call here is one probe (one success
        closes, one failure opens). The caller holds ``self._lock``."""
        self._enter(HALF_OPEN)
        self._suspect = True

    # --- calling ------------------------------------------------------------------------

    def admit(self, policy: FailurePolicy | None = None) -> Admission | None:
        """Ask to make one call: an :class:`Admission` to run it under, or None if rejected.

        ``with admission: ...`` records the block's outcome. Nothing is held while the
        block runs, so it may ``await``. ``policy`` overrides the breaker's own for
        this call.
        """
        ticket = self._acquire()
        return None if ticket is None else Admission(self, ticket, policy)

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

    @property
    def open_seconds(self) -> float | None:
        """How long the present open period lasts (it grows after each failed probe,
        see ``max_timeout_seconds``); None while closed."""
        return None if self._state is CLOSED else self._open_time.current

    @property
    def opened_reason(self) -> str | None:
        """Why the circuit opened: ``consecutive_failures``, ``failure_rate``,
        ``slow_call_rate`` or ``forced``; kept through its re-opens, None while closed."""
        return None if self._state is CLOSED else self._opened_reason

    def metrics(self) -> dict[str, Any]:
        """A JSON-ready snapshot of counters and state. ``open_seconds`` and
        ``opened_reason`` say how long it stays open and why (None while closed);
        with the rate rules on, ``window`` holds its calls and rates."""
        opened_at = self._opened_at
        retry_after = self.retry_after_seconds
        open_seconds = self.open_seconds
        report: dict[str, Any] = {
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
            "open_seconds": None if open_seconds is None else round(open_seconds, 3),
            "opened_reason": self.opened_reason,
        }
        window = self._window
        if window is not None:
            # Read as of now, without the lock: listeners call metrics() from inside a
            # transition, which holds it.
            report["window"] = window.rates(self._ended_calls(), self._clock())
        if self._host is not None:
            report["host"] = self._host.view(self)
        return report

    def force_open(self) -> None:
        """Open now (maintenance, tests); probes start after ``timeout_seconds``."""
        with self._lock:
            self._enter(OPEN, FORCED)

    def reset(self) -> None:
        """Close now and clear the failure streak (and the rate rules' window)."""
        with self._lock:
            self._storage.reset_counter()
            if self._state is not CLOSED:
                self._enter(CLOSED)
            elif self._window is not None:
                self._window.reset(self._clock(), self._ended_calls())
                self._refresh_fast_path()

    def add_listener(self, listener: pybreaker.CircuitBreakerListener) -> None:
        """Add a pybreaker listener; its ``state_change`` sees every transition.
        An exception it raises is logged (ERROR, with its traceback) and ignored."""
        self._cb.add_listener(GuardedListener(listener))

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r} {self.state}>"


class _TimedBreaker(Breaker):
    """A breaker with the rate rules on (``window_seconds > 0``): the same decisions,
    with lock-free fast paths that time each call. Its :data:`Ticket` is the time the
    call was admitted at; a closed success returns at once unless it was slow, the
    window's current bucket has ended, or a failure streak waits for a success to end
    it (see ``window``)."""

    _window: SlidingWindow
    _fast_until: float
    """A success that ends before this, and was not slow, changes nothing: the end of
    the window's current bucket while closed, or 0 (not closed, or a failure streak
    pending, which the next success must end). One comparison on the fast path stands
    for three checks."""

    # ``clock = self._clock; clock()`` below, not ``self._clock()``: a method-style call
    # of an instance attribute takes CPython's unspecialised lookup (about 120 more
    # instructions a call, a quarter of a clock read), and these are the two clock
    # reads every call of a breaker with rate rules pays.

    def _acquire(self) -> Ticket | None:
        if self._state is CLOSED:
            next(self._calls)
            clock = self._clock
            return clock()
        return self._admit()

    def _release(
        self, ticket: Ticket, exc: BaseException | None, policy: FailurePolicy | None = None
    ) -> None:
        if exc is None:
            next(self._successes)
            clock = self._clock
            now = clock()
            if now - ticket < self._slow_after and now < self._fast_until:
                return
        self._decide(ticket, exc, policy)

    def _refresh_fast_path(self) -> None:
        pending = self._local_streak or self._state is not CLOSED
        self._fast_until = 0.0 if pending else self._window.rotate_at


class Admission:
    """One admitted call: records its outcome when the ``with`` block ends."""

    __slots__ = ("_breaker", "_policy", "_ticket")

    def __init__(self, breaker: Breaker, ticket: Ticket, policy: FailurePolicy | None) -> None:
        self._breaker = breaker
        self._ticket = ticket
        self._policy = policy

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._breaker._release(self._ticket, exc, self._policy)

"""Origin protection for ``@cached``: ``lock``, ``early_refresh`` and ``stale_if_error``.

A plain ``@cached`` function protects the origin (the function: a database query, an
HTTP call) from concurrent misses within one process. The options here protect it
across processes and from its own failures:

- ``lock``: a miss takes a lease in the cache before computing (:mod:`.lease`); the
  other processes wait for the value, at most the lease time, then compute it
  themselves. With the circuit open or the lease call failing, per-process
  single-flight only, at once;
- ``early_refresh``: entries are stored with the time they took to compute and their
  logical expiry, and reads recompute them before they expire (XFetch, :mod:`.refresh`);
- ``stale_if_error``: entries are kept ``seconds`` past their TTL; when the function
  raises (an exception ``record`` matches), the value past its TTL answers instead,
  counted as ``stale_served`` in the ``cached`` row of ``stats()``.

With ``early_refresh`` or ``stale_if_error`` an entry is ``[result, expires_at, delta]``
(``expires_at`` wall-clock seconds, shared by the processes of a host; ``delta`` the
seconds the function took) instead of ``[result]``, and lives TTL + ``stale_if_error``
seconds in the backend.

One decision logic serves sync and async functions: :meth:`OriginGuard.fill` is a
generator that *asks* for each step (read the entry, take or give back the lease,
sleep, call the function, store); :func:`_drive` runs the steps in the calling thread,
:func:`_adrive` awaits them. No in-process lock is held across any step.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import random
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from tasker_resilience._breakers.policy import ExceptionMatcher, FailurePolicy, failure_policy
from tasker_resilience._cache.faults import UNAVAILABLE, RateLimitedWarnings
from tasker_resilience._cache.lease import Lease, lease_seconds, poll_delays
from tasker_resilience._cache.outcomes import CACHED
from tasker_resilience._cache.refresh import Refreshes, early_beta, xfetch
from tasker_resilience._cache.typed import JsonShapes

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tasker_resilience._cache.provider import CacheProvider
    from tasker_resilience._cache.serializers import Serializer

__all__ = ["OriginGuard", "OriginOptions"]

T = TypeVar("T")

MISS: Final[Any] = object()
NOTHING: Final[Any] = object()
"""No value to fall back on (no entry, or no ``stale_if_error``)."""

# What a read of the entry means (OriginGuard.judge).
_HIT: Final = "hit"
_REFRESH: Final = "refresh"  # a hit, and this caller recomputes it early
_FILL: Final = "fill"  # compute it (a stale value may stand by)
_UNREACHABLE: Final = "unreachable"  # the cache did not answer: call the function

# The steps fill() asks its driver for: (kind, argument, argument).
_READ: Final = "read"
_ACQUIRE: Final = "acquire"
_RELEASE: Final = "release"
_SLEEP: Final = "sleep"
_CALL: Final = "call"
_STORE: Final = "store"

Step = tuple[str, Any, Any]
Plan = Generator[Step, Any, Any]


@dataclass(frozen=True)
class OriginOptions:
    """``@cached``'s origin options, checked."""

    lease_seconds: float | None = None
    beta: float | None = None
    stale_seconds: float | None = None
    record: FailurePolicy | None = None

    @classmethod
    def build(
        cls,
        *,
        lock: bool | float | timedelta,
        early_refresh: bool | float,
        stale_if_error: float | timedelta | None,
        record: Iterable[ExceptionMatcher] | None,
    ) -> OriginOptions:
        # Seconds may come as a timedelta, as everywhere a TTL is taken.
        if isinstance(lock, timedelta):
            lock = lock.total_seconds()
        if isinstance(stale_if_error, timedelta):
            stale_if_error = stale_if_error.total_seconds()
        if stale_if_error is not None and (
            isinstance(stale_if_error, bool)
            or not isinstance(stale_if_error, (int, float))
            or not 0 < stale_if_error <= 365 * 24 * 3600
            or not math.isfinite(stale_if_error)
        ):
            raise ValueError(
                "@cached stale_if_error must be None or the seconds a value may be served "
                f"past its TTL when the function fails (0 < s <= one year), not {stale_if_error!r}"
            )
        if record is not None and stale_if_error is None:
            raise ValueError("@cached record= chooses the errors stale_if_error answers: set both")
        return cls(
            lease_seconds=lease_seconds(lock),
            beta=early_beta(early_refresh),
            stale_seconds=None if stale_if_error is None else float(stale_if_error),
            record=None if stale_if_error is None else failure_policy(record),
        )

    @property
    def active(self) -> bool:
        return (
            self.lease_seconds is not None
            or self.beta is not None
            or self.stale_seconds is not None
        )

    @property
    def rich(self) -> bool:
        """Entries carry their logical expiry and compute time."""
        return self.beta is not None or self.stale_seconds is not None


class _Flights(Protocol):
    def run(self, key: str, compute: Callable[[], Any]) -> Any: ...


class OriginGuard:
    """The options of one decorated function and the decisions they make."""

    def __init__(
        self,
        options: OriginOptions,
        *,
        func: Callable[..., Any],
        owner: str,
        ttl: float | None,
        condition: Callable[[Any], bool] | None,
        shapes: JsonShapes,
        shared: bool = False,
    ) -> None:
        self.options = options
        self.shared = shared  # @cached(shared=True): memory hits hand out the stored object
        self.func = func
        self.owner = owner
        self.ttl = ttl
        self.condition = condition
        self.shapes = shapes
        self.rich = options.rich
        self.refreshes = Refreshes()
        self.warnings = RateLimitedWarnings()
        # Injectable for tests: wall time (shared by the processes of a host), monotonic
        # time (for waiting), the XFetch draw, and the pause between polls.
        self.clock: Callable[[], float] = time.time
        self.monotonic: Callable[[], float] = time.monotonic
        self.random: Callable[[], float] = random.random
        self.sleep: Callable[[float], None] = time.sleep
        self.asleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # --- decisions shared by sync and async --------------------------------------------------

    def unpack(self, entry: Any) -> tuple[Any, float, float] | None:
        """``(value, expires_at, delta)`` of a read entry; None when it is not one."""
        if not self.rich:
            return entry, math.inf, 0.0  # an enveloped read: already the value
        if type(entry) in (list, tuple):
            if len(entry) == 3:
                value, expires_at, delta = entry
                if type(expires_at) in (float, int) and type(delta) in (float, int):
                    return value, float(expires_at), float(delta)
            elif len(entry) == 1:
                return entry[0], math.inf, 0.0  # stored without these options
        return None

    def judge(self, entry: Any, cache: CacheProvider) -> tuple[str, Any, float]:
        """What a read of the entry means: (decision, value, its expiry)."""
        if entry is UNAVAILABLE:
            return _UNREACHABLE, NOTHING, 0.0
        found = None if entry is MISS else self.unpack(entry)
        if found is None:
            return _FILL, NOTHING, 0.0
        value, expires_at, delta = found
        remaining = expires_at - self.clock()
        beta = self.options.beta
        if remaining > 0:
            if beta is not None and xfetch(delta, beta, remaining, 1.0 - self.random()):
                return _REFRESH, value, expires_at
            return _HIT, value, expires_at
        near = cache._near
        if near is not None and near.degraded:
            # The backend is unavailable and the near tier answered with what it holds:
            # its own stale-if-error rules apply (the cache's half of RFC 5861).
            return _HIT, value, expires_at
        stale_seconds = self.options.stale_seconds
        if stale_seconds is not None and -remaining <= stale_seconds:
            return _FILL, value, expires_at
        return _FILL, NOTHING, expires_at

    def fresh(self, entry: Any, seen: float) -> Any:
        """The value of a read entry if it is fresh and not the one seen before (expiry
        ``seen``); else NOTHING."""
        if entry is MISS or entry is UNAVAILABLE:
            return NOTHING
        found = self.unpack(entry)
        if found is None:
            return NOTHING
        value, expires_at, _ = found
        if expires_at <= self.clock() or (expires_at == seen and expires_at != math.inf):
            return NOTHING
        return value

    def fill(
        self,
        cache: CacheProvider,
        serializer: Serializer,
        stale: Any,
        seen: float,
        refreshing: bool,
    ) -> Plan:
        """Compute the entry and store it (see the module docstring); the result.

        ``stale``: the value to answer with if the function fails (NOTHING: raise);
        ``seen``: the expiry of the entry read before; ``refreshing``: an early refresh
        (the entry is still fresh: never wait for a lease, keep the value on failure)."""
        stats = cache._stats
        lease_time = self.options.lease_seconds
        holding = False
        if lease_time is not None:
            got = yield (_ACQUIRE, None, None)
            if got is False:
                if refreshing:
                    return stale  # another process is refreshing it
                deadline = self.monotonic() + lease_time
                for pause in poll_delays():
                    left = deadline - self.monotonic()
                    if left <= 0:
                        break  # the holder is slow or gone: compute it here
                    yield (_SLEEP, min(pause, left), None)
                    entry = yield (_READ, None, None)
                    if entry is UNAVAILABLE:
                        got = UNAVAILABLE  # the cache went away: no more waiting
                        break
                    value = self.fresh(entry, seen)
                    if value is not NOTHING:
                        stats.count(CACHED, "lease_waited")
                        return value
                    got = yield (_ACQUIRE, None, None)
                    if got is not False:
                        break
            if got is True:
                holding = True
                # Another holder may have stored it between our read and our lease.
                value = self.fresh((yield (_READ, None, None)), seen)
                if value is not NOTHING:
                    yield (_RELEASE, None, None)
                    return value
            elif got is UNAVAILABLE:
                stats.count(CACHED, "lease_unavailable")
        called = False
        try:
            started = self.monotonic()
            result = yield (_CALL, None, None)
            called = True
            yield from self._store(cache, serializer, result, self.monotonic() - started)
        except GeneratorExit:
            raise  # the driver dropped the plan: nothing more may be asked for
        except BaseException as exc:
            if holding:
                yield (_RELEASE, None, None)
            if called or stale is NOTHING or not isinstance(exc, Exception):
                raise
            if refreshing:
                self.warnings.warn(
                    "@cached %s: early refresh failed (%s: %s); the cached value stays "
                    "until it expires",
                    self.owner,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                return stale
            record = self.options.record
            if record is None or not record(exc):
                raise
            stats.count(CACHED, "stale_served")
            self.warnings.warn(
                "@cached %s raised %s: %s; answered with the value past its TTL (stale_if_error)",
                self.owner,
                type(exc).__name__,
                str(exc)[:200],
            )
            return stale
        if holding:
            yield (_RELEASE, None, None)
        return result

    def _store(
        self, cache: CacheProvider, serializer: Serializer, result: Any, delta: float
    ) -> Plan:
        condition = self.condition
        if condition is not None and not condition(result):
            return
        seconds: float | None = self.ttl
        envelope: list[Any] = [result]
        if self.rich:
            ttl = cache._ttl(self.ttl)
            envelope = [result, self.clock() + ttl, delta]
            seconds = ttl + (self.options.stale_seconds or 0.0)
        yield (_STORE, serializer.dumps(envelope), seconds)
        self.shapes.stored(serializer, result)

    def unreachable(
        self, full: str, flights: _Flights, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The cache cannot be asked (circuit open, read failed): call the function, no
        store (it would wait again). With ``lock``, once per key within the process
        (no lease can be had: single-flight, at once); an awaitable for an async one."""
        func = self.func
        if self.options.lease_seconds is None:
            return func(*args, **kwargs)
        return flights.run(full, lambda: func(*args, **kwargs))

    def _hit(self, value: Any) -> Any:
        if self.shapes.pending is not None:
            self.shapes.hit()
        return value

    def _refresh_failed(self, exc: BaseException) -> None:
        # A background refresh raised past fill() (a caller mistake such as a result
        # the serializer refuses): nobody awaits it, so it is logged here.
        self.warnings.warn(
            "@cached %s: background refresh failed (%s: %s)",
            self.owner,
            type(exc).__name__,
            str(exc)[:200],
        )

    # --- sync -------------------------------------------------------------------------------

    def call(self, steps: _SyncSteps, flights: _Flights) -> Any:
        cache, full, serializer = steps.cache, steps.full, steps.serializer
        decision, value, expires_at = self.judge(steps.read(), cache)
        if decision is _HIT:
            return self._hit(value)
        if decision is _UNREACHABLE:
            return self.unreachable(full, flights, steps.args, steps.kwargs)
        if decision is _REFRESH:
            if not self.refreshes.claim(full):
                return self._hit(value)  # refreshing already (or too many at once)
            cache._stats.count(CACHED, "early_refresh")
            try:
                return _drive(self.fill(cache, serializer, value, expires_at, True), steps)
            finally:
                self.refreshes.done(full)
        return flights.run(
            full, lambda: _drive(self.fill(cache, serializer, value, expires_at, False), steps)
        )

    # --- async: the same decisions, awaited ----------------------------------------------------

    async def acall(self, steps: _AsyncSteps, flights: _Flights) -> Any:
        cache, full, serializer = steps.cache, steps.full, steps.serializer
        decision, value, expires_at = self.judge(await steps.read(), cache)
        if decision is _HIT:
            return self._hit(value)
        if decision is _UNREACHABLE:
            return await self.unreachable(full, flights, steps.args, steps.kwargs)
        if decision is _REFRESH:
            # In the background: this caller answers with the fresh value it has.
            started = self.refreshes.spawn(
                (asyncio.get_running_loop(), full),
                lambda: _adrive(self.fill(cache, serializer, value, expires_at, True), steps),
                self._refresh_failed,
            )
            if started:
                cache._stats.count(CACHED, "early_refresh")
            return self._hit(value)
        return await flights.run(
            full, lambda: _adrive(self.fill(cache, serializer, value, expires_at, False), steps)
        )


# --- the drivers --------------------------------------------------------------------------------


class _Steps:
    """What fill()'s steps act on: one call of one decorated function."""

    __slots__ = ("_guard", "_lease", "args", "cache", "full", "kwargs", "serializer")

    def __init__(
        self,
        guard: OriginGuard,
        cache: CacheProvider,
        full: str,
        serializer: Serializer,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._guard = guard
        self.cache = cache
        self.full = full
        self.serializer = serializer
        self.args = args
        self.kwargs = kwargs
        self._lease: Lease | None = None

    def lease(self) -> Lease:
        lease = self._lease
        if lease is None:
            seconds = self._guard.options.lease_seconds
            assert seconds is not None
            lease = self._lease = Lease(self.cache, self.full, seconds)
        return lease


class _SyncSteps(_Steps):
    """Runs fill()'s steps in the calling thread."""

    __slots__ = ()

    def read(self) -> Any:
        guard = self._guard
        return self.cache._read(self.full, self.serializer, not guard.rich, MISS, guard.shared)

    def run(self, step: Step) -> Any:
        kind, first, second = step
        if kind is _READ:
            return self.read()
        if kind is _CALL:
            return self._guard.func(*self.args, **self.kwargs)
        if kind is _STORE:
            return self.cache._store(self.full, first, second, False)
        if kind is _SLEEP:
            return self._guard.sleep(first)
        if kind is _ACQUIRE:
            return self.lease().acquire()
        return self.lease().release()


class _AsyncSteps(_Steps):
    """The same steps, the backend and the function awaited."""

    __slots__ = ()

    async def read(self) -> Any:
        guard = self._guard
        return await self.cache._aread(
            self.full, self.serializer, not guard.rich, MISS, guard.shared
        )

    async def run(self, step: Step) -> Any:
        kind, first, second = step
        if kind is _READ:
            return await self.read()
        if kind is _CALL:
            return await self._guard.func(*self.args, **self.kwargs)
        if kind is _STORE:
            return await self.cache._astore(self.full, first, second, False)
        if kind is _SLEEP:
            return await self._guard.asleep(first)
        if kind is _ACQUIRE:
            return await self.lease().aacquire()
        return await self.lease().arelease()


def _advance(plan: Plan, answer: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Give the plan the last step's answer (or throw its exception in): ``(False,
    next step)``, or ``(True, result)`` when the plan is done."""
    try:
        return False, (plan.send(answer) if error is None else plan.throw(error))
    except StopIteration as done:
        return True, done.value


def _drive(plan: Plan, steps: _SyncSteps) -> Any:
    """Run ``plan`` to its result, each step in this thread; a step's exception is
    thrown into the plan (which decides: release the lease, serve stale, or raise)."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        finished, step = _advance(plan, answer, error)
        if finished:
            return step
        try:
            answer, error = steps.run(step), None
        except BaseException as exc:
            answer, error = None, exc


async def _adrive(plan: Plan, steps: _AsyncSteps) -> Any:
    """:func:`_drive`, awaiting each step."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        finished, step = _advance(plan, answer, error)
        if finished:
            return step
        try:
            answer, error = await steps.run(step), None
        except BaseException as exc:
            answer, error = None, exc


def guarded_wrapper(
    guard: OriginGuard,
    *,
    key_of: Callable[[tuple[Any, ...], dict[str, Any]], str],
    current_cache: Callable[[], CacheProvider],
    bypassed: Callable[[CacheProvider], bool],
    serializer_for: Callable[[CacheProvider], Serializer],
    flights: _Flights,
) -> Callable[..., Any]:
    """The ``@cached`` wrapper of a function with origin options (sync or async)."""
    func = guard.func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            cache = current_cache()
            if bypassed(cache):
                if guard.options.lease_seconds is None:
                    return await func(*args, **kwargs)
                return await guard.unreachable(key_of(args, kwargs), flights, args, kwargs)
            steps = _AsyncSteps(
                guard, cache, key_of(args, kwargs), serializer_for(cache), args, kwargs
            )
            return await guard.acall(steps, flights)

        async_wrapper.origin_guard = guard  # type: ignore[attr-defined]  # for tests and debugging
        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        cache = current_cache()
        if bypassed(cache):
            if guard.options.lease_seconds is None:
                return func(*args, **kwargs)
            return guard.unreachable(key_of(args, kwargs), flights, args, kwargs)
        steps = _SyncSteps(guard, cache, key_of(args, kwargs), serializer_for(cache), args, kwargs)
        return guard.call(steps, flights)

    sync_wrapper.origin_guard = guard  # type: ignore[attr-defined]  # for tests and debugging
    return sync_wrapper

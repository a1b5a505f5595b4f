"""``@breaker_guarded``: run a function through a named breaker."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from tasker_resilience import _resilience
from tasker_resilience._breakers.breaker import Breaker, StateName, Ticket
from tasker_resilience._breakers.policy import (
    FailurePolicy,
    Matchers,
    failure_policy,
    is_neutral,
    looks_like_io_error,
)
from tasker_resilience._breakers.registry import declare_guarded
from tasker_resilience._breakers.transitions import BREAKER_LOGGER
from tasker_resilience._resilience import Resilience, current

__all__ = ["NO_FALLBACK", "BreakerHandle", "FallbackGuard", "breaker_guarded"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F")
S_co = TypeVar("S_co", covariant=True)
A_co = TypeVar("A_co", covariant=True)


class _NoFallback:
    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Any = _NoFallback()
"""Sentinel: no fallback given, a rejected call raises :class:`CircuitOpenError`."""


class BreakerHandle:
    """The breaker behind a decorated function, found by name when used.

    Decorators run at import time, often before ``configure()``; the handle binds to
    the process-wide :class:`Resilience` on use and re-binds if it is replaced.
    """

    __slots__ = ("_bound", "_breaker", "_fixed", "name")

    def __init__(self, name: str, resilience: Resilience | None = None) -> None:
        self.name = name
        self._fixed = resilience
        self._bound: Resilience | None = None
        self._breaker: Breaker | None = None

    def get(self) -> Breaker:
        """The live :class:`Breaker`."""
        # The module global first: current() is a call, and this runs on every call.
        resilience = self._fixed or _resilience._current or current()
        breaker = self._breaker
        if breaker is None or resilience is not self._bound:
            breaker = resilience.breakers.get(self.name)
            self._bound, self._breaker = resilience, breaker
        return breaker

    @property
    def state(self) -> StateName:
        return self.get().state

    @property
    def is_open(self) -> bool:
        return self.get().is_open

    @property
    def retry_after_seconds(self) -> float | None:
        return self.get().retry_after_seconds

    def metrics(self) -> dict[str, Any]:
        return self.get().metrics()

    def reset(self) -> None:
        self.get().reset()

    def force_open(self) -> None:
        self.get().force_open()

    def __repr__(self) -> str:
        return f"<BreakerHandle {self.name!r}>"


class FallbackGuard(Protocol[S_co, A_co]):
    """What ``breaker_guarded(name, fallback=...)`` returns, for type checkers: a
    decorator whose function may also answer with the fallback's value.

    ``S_co`` is what a rejected plain call returns, ``A_co`` what a rejected ``async``
    call returns once awaited (they differ only for an ``async def`` fallback, which
    the async wrapper awaits). So with ``fallback=None`` a function returning ``int``
    is called as one returning ``int | None``; a fallback of type ``int`` keeps ``int``.
    """

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R | A_co]]: ...
    @overload
    def __call__(self, func: Callable[P, R], /) -> Callable[P, R | S_co]: ...


@overload
def breaker_guarded(
    name: str,
    *,
    record: Matchers | None = None,
    ignore: Matchers = (),
    resilience: Resilience | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
@overload
def breaker_guarded(
    name: str,
    *,
    fallback: Callable[..., Awaitable[F]],
    record: Matchers | None = None,
    ignore: Matchers = (),
    resilience: Resilience | None = None,
) -> FallbackGuard[Awaitable[F], F]: ...
@overload
def breaker_guarded(
    name: str,
    *,
    fallback: Callable[..., F],
    record: Matchers | None = None,
    ignore: Matchers = (),
    resilience: Resilience | None = None,
) -> FallbackGuard[F, F]: ...
@overload
def breaker_guarded(
    name: str,
    *,
    fallback: F,
    record: Matchers | None = None,
    ignore: Matchers = (),
    resilience: Resilience | None = None,
) -> FallbackGuard[F, F]: ...
def breaker_guarded(
    name: str,
    *,
    fallback: Any = NO_FALLBACK,
    record: Matchers | None = None,
    ignore: Matchers = (),
    resilience: Resilience | None = None,
) -> Any:  # the overloads above are the signature callers see
    """Guard a function (plain or ``async def``, also methods) with breaker ``name``.

    While the breaker is open the function is not called: ``fallback`` is returned
    (called with the same arguments if it is callable, awaited if that returns an
    awaitable in an async function), or :class:`CircuitOpenError` is raised. The call
    that trips the breaker raises its own exception, so the caller sees what went
    wrong. ``record``/``ignore`` (iterables of exception classes or predicates
    ``(exception) -> bool``) choose which exceptions count as failures for this
    function; by default every ``Exception`` counts (a bug's ``ValueError`` too: the
    first such non-I/O exception is logged at WARNING, once per breaker) and
    cancellation never does. The wrapper has ``.breaker``. Decorating declares
    ``name``: ``get_breaker(name)`` finds it from then on.

    Typed: with ``fallback=None`` a function returning ``int`` returns ``int | None``;
    a fallback of the function's own type keeps ``int``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"breaker_guarded needs a breaker name, not {name!r}")
    declare_guarded(name)
    policy: FailurePolicy | None = (
        None if record is None and not ignore else failure_policy(record, ignore)
    )
    handle = BreakerHandle(name, resilience)
    # Only the default rule (every Exception counts) deserves the warning: a caller who
    # chose ``record`` said what counts.
    warns = record is None

    def failed(breaker: Breaker, generation: Ticket, exc: BaseException) -> None:
        if warns and breaker not in _warned:
            _warn_if_not_io(breaker, exc, policy)
        breaker._release(generation, exc, policy)

    # What a rejected call does, decided once: call the fallback, return it, or raise.
    # No CircuitOpenError is built (and no clock read for its retry time) when a
    # fallback answers; a raised one is built in the raise statement itself, so no
    # frame holds it and its traceback forms no reference cycle.
    call_fallback = fallback if callable(fallback) else None
    raises = fallback is NO_FALLBACK

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[..., Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                breaker = handle.get()
                if breaker._rejects() or (generation := breaker._acquire()) is None:
                    if call_fallback is not None:
                        result = call_fallback(*args, **kwargs)
                        return await result if inspect.isawaitable(result) else result
                    if raises:
                        raise breaker.open_error()
                    return fallback
                try:
                    value = await async_func(*args, **kwargs)
                except BaseException as exc:
                    failed(breaker, generation, exc)
                    raise
                breaker._release(generation, None, policy)
                return value

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                breaker = handle.get()
                if breaker._rejects() or (generation := breaker._acquire()) is None:
                    if call_fallback is not None:
                        return call_fallback(*args, **kwargs)
                    if raises:
                        raise breaker.open_error()
                    return fallback
                try:
                    value = func(*args, **kwargs)
                except BaseException as exc:
                    failed(breaker, generation, exc)
                    raise
                breaker._release(generation, None, policy)
                return value

            wrapper = sync_wrapper
        wrapper.breaker = handle
        return cast(Callable[P, R], wrapper)

    return decorate


# Breakers already warned about a non-I/O exception (weak: a reconfigured process
# builds new breakers, which may warn again).
_warned: weakref.WeakSet[Breaker] = weakref.WeakSet()


def _warn_if_not_io(breaker: Breaker, exc: BaseException, policy: FailurePolicy | None) -> None:
    """WARNING, once per breaker, when an exception that does not look like I/O trouble
    is about to count as a failure under the default "every Exception" rule."""
    if is_neutral(exc) or looks_like_io_error(exc) or not (policy or breaker.failure_policy)(exc):
        return
    _warned.add(breaker)
    BREAKER_LOGGER.warning(
        "circuit breaker %r counted %s as a failure: @breaker_guarded counts every "
        "Exception by default, a bug's error too. If this is not the dependency failing, "
        "pass record=(...) with the exceptions that mean it is, or ignore=(%s,). "
        "Logged once per breaker.",
        breaker.name,
        type(exc).__name__,
        type(exc).__name__,
    )

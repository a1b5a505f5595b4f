"""Which exceptions count against a breaker.

A policy is a small callable ``(exception) -> bool``: True means "the dependency is
unwell, count a failure". Anything it declines is neutral: neither a failure nor a
success, so a caller's bug can neither trip a breaker nor close one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable
from typing import TypeAlias

__all__ = [
    "ExceptionMatcher",
    "FailurePolicy",
    "Matchers",
    "count_all_exceptions",
    "failure_policy",
    "is_neutral",
    "looks_like_io_error",
]

FailurePolicy = Callable[[BaseException], bool]
ExceptionMatcher: TypeAlias = type[BaseException] | Callable[[BaseException], bool]
Matchers: TypeAlias = ExceptionMatcher | Iterable[ExceptionMatcher]
"""What ``record=``/``ignore=`` take: matchers, or a single one."""

# Never a verdict on the dependency: the caller gave up, or the process is stopping.
_NEUTRAL: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


def is_neutral(exc: BaseException) -> bool:
    """True for cancellation and interpreter shutdown, which no policy may count."""
    return isinstance(exc, _NEUTRAL)


def count_all_exceptions(exc: BaseException) -> bool:
    """The default policy: every ``Exception`` counts."""
    return isinstance(exc, Exception)


# What a failing dependency raises: the OS's errors (ConnectionError, socket errors and
# TimeoutError are OSErrors) and the timeouts of asyncio and futures (separate classes
# before 3.11). Client libraries often have their own hierarchies (redis.ConnectionError,
# httpx.TransportError, psycopg's OperationalError), recognised by their class names.
_IO_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
)
_IO_WORDS = (
    "connect",
    "timeout",
    "timedout",
    "unavailable",
    "unreachable",
    "network",
    "socket",
    "transport",
    "operational",
    "refused",
    "reset",
    "busy",
)


def looks_like_io_error(exc: BaseException) -> bool:
    """True when ``exc`` looks like a dependency failing rather than a bug: an
    ``OSError``/timeout, or a class (or base class) named like one (``...Connection...``,
    ``...Timeout...``, ``...Unavailable...``). A heuristic for advice, never a policy."""
    if isinstance(exc, _IO_ERRORS):
        return True
    return any(word in cls.__name__.lower() for cls in type(exc).__mro__[:-2] for word in _IO_WORDS)


def _matches(exc: BaseException, matchers: tuple[ExceptionMatcher, ...]) -> bool:
    for matcher in matchers:
        if isinstance(matcher, type):
            if isinstance(exc, matcher):
                return True
        elif matcher(exc):
            return True
    return False


_ACCEPTS = "exception classes or predicates (exception) -> bool"


def _matchers(name: str, given: Matchers) -> tuple[ExceptionMatcher, ...]:
    """``given`` as a tuple of checked matchers. A single class or predicate is taken as
    a one-item tuple; a string (iterable, but never meant letter by letter) is refused."""
    if isinstance(given, type) or (callable(given) and not isinstance(given, Iterable)):
        return _matchers(name, (given,))
    value: object = given  # a string is not a Matchers to mypy; at run time it may come
    if isinstance(value, (str, bytes)) or not isinstance(given, Iterable):
        raise TypeError(
            f"{name} takes {_ACCEPTS}: one, or an iterable of them such as "
            f"{name}=(ConnectionError, TimeoutError); not {given!r}"
        )
    matchers = tuple(given)
    for matcher in matchers:
        is_exception_type = isinstance(matcher, type) and issubclass(matcher, BaseException)
        if not is_exception_type and (isinstance(matcher, type) or not callable(matcher)):
            raise TypeError(f"{name} takes {_ACCEPTS}, not {matcher!r}")
    return matchers


def failure_policy(record: Matchers | None = None, ignore: Matchers = ()) -> FailurePolicy:
    """Build a policy: an exception counts when it matches ``record`` and not ``ignore``.

    ``record`` defaults to every ``Exception``. Each entry is an exception class or a
    predicate (a single one needs no tuple). ``ignore`` wins over ``record``.
    """
    recorded = (Exception,) if record is None else _matchers("record", record)
    ignored = _matchers("ignore", ignore)

    def policy(exc: BaseException) -> bool:
        return _matches(exc, recorded) and not _matches(exc, ignored)

    return policy

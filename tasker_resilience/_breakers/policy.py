"""Which exceptions count against a breaker.

A policy is a small callable ``(exception) -> bool``: True means "the dependency is
unwell, count a failure". Anything it declines is neutral: neither a failure nor a
success, so a caller's bug can neither trip a breaker nor close one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeAlias

__all__ = [
    "ExceptionMatcher",
    "FailurePolicy",
    "count_all_exceptions",
    "failure_policy",
    "is_neutral",
]

FailurePolicy = Callable[[BaseException], bool]
ExceptionMatcher: TypeAlias = type[BaseException] | Callable[[BaseException], bool]

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


def _matches(exc: BaseException, matchers: tuple[ExceptionMatcher, ...]) -> bool:
    for matcher in matchers:
        if isinstance(matcher, type):
            if isinstance(exc, matcher):
                return True
        elif matcher(exc):
            return True
    return False


def _check(name: str, matchers: tuple[ExceptionMatcher, ...]) -> None:
    for matcher in matchers:
        is_exception_type = isinstance(matcher, type) and issubclass(matcher, BaseException)
        if not is_exception_type and (isinstance(matcher, type) or not callable(matcher)):
            raise TypeError(
                f"{name} takes exception classes or predicates (exception) -> bool, not {matcher!r}"
            )


def failure_policy(
    record: Iterable[ExceptionMatcher] | None = None,
    ignore: Iterable[ExceptionMatcher] = (),
) -> FailurePolicy:
    """Build a policy: an exception counts when it matches ``record`` and not ``ignore``.

    ``record`` defaults to every ``Exception``. Each entry is an exception class or a
    predicate. ``ignore`` wins over ``record``.
    """
    recorded: tuple[ExceptionMatcher, ...] = (Exception,) if record is None else tuple(record)
    ignored = tuple(ignore)
    _check("record", recorded)
    _check("ignore", ignored)

    def policy(exc: BaseException) -> bool:
        return _matches(exc, recorded) and not _matches(exc, ignored)

    return policy

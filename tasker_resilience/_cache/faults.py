"""The cache's open-circuit and failure policy: when a backend call may run, and what a
failed one costs the caller.

=================  ======================  =================================
operation          circuit open            backend failure while closed
=================  ======================  =================================
get / aget         ``None`` (a miss)       ``None`` (a miss), WARNING
set / aset         nothing, returns        swallowed, WARNING
delete / adelete   nothing, returns        swallowed, WARNING
delete_pattern     ``0``                   swallowed (``0``), WARNING
health_check       ``False``               ``False``
=================  ======================  =================================

Only failures the backend's ``is_backend_failure`` recognises count against the breaker
and are swallowed. A backend may also say (``is_pool_exhausted``) that a call found no
free connection in its own pool: that is this process's load, not an outage, so it is
swallowed like a failure but never counts against the breaker (``pool_exhausted`` in
the stats); caller mistakes (a value that cannot be serialised, a non-string key)
raise to the caller. Reads and health checks never raise for a backend error of any kind.

A programming error raised inside the backend (``AttributeError``, ``TypeError``,
``ImportError``: a dependency outside the supported range, or a bug) is not a backend
error: swallowed, it would be a silent miss on a healthy server for ever (at start-up,
a circuit held open). It is logged at ERROR, counted ``error``, never counted against
the breaker, and raised to the caller, reads and health checks included.

:class:`NodeUnavailable` (one node of a cluster is down) is answered like an open
circuit or a failure: the call is skipped, counted ``skipped_open`` (the node's own
breaker is open) or ``error`` (the node just failed), never counted against the
``cache`` breaker, and its invalidation stays with the backend, which replays it on
that node when the node is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from contextvars import Token
from types import TracebackType
from typing import Any, Final, TypeVar

from tasker_resilience._breakers.breaker import HALF_OPEN, Admission, Breaker, Ticket
from tasker_resilience._cache.backends.contract import (
    PROBE_BUDGET,
    CacheBackend,
    NodeUnavailable,
    WriteRejectedError,
)
from tasker_resilience._cache.outcomes import GET, HEALTH, CacheStats
from tasker_resilience._errors import ConfigurationError

__all__ = [
    "CACHE_LOGGER",
    "UNAVAILABLE",
    "UNGUARDED",
    "WARNING_INTERVAL_SECONDS",
    "CacheFaults",
    "Probe",
    "RateLimitedWarnings",
    "check_shared_state",
    "default_backend_failure",
    "handed_to_backend",
    "is_programming_error",
    "within_budget",
]

T = TypeVar("T")

CACHE_LOGGER = logging.getLogger("tasker_resilience.cache")
WARNING_INTERVAL_SECONDS: Final = 10.0
"""At most one failure WARNING per this many seconds; the next one says how many were held back."""


class _Unavailable:
    """A fetch that produced no answer (skipped while open, or failed)."""

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final[Any] = _Unavailable()
# A provider without a breaker runs every call under this do-nothing context.
UNGUARDED: Final = contextlib.nullcontext()


def _never(exc: BaseException) -> bool:
    return False


def default_backend_failure(exc: BaseException) -> bool:
    """For a backend without ``is_backend_failure``: I/O errors (``OSError``, which
    includes ``ConnectionError`` and ``TimeoutError``) count, mistakes do not."""
    return isinstance(exc, OSError)


# Raised inside a backend's own code, these say the code is wrong (or runs against a
# dependency it was not written for), not that the server is unwell. Caller mistakes
# of these types are raised before the backend is called (limits.py, the serializer).
_PROGRAMMING_ERRORS = (AttributeError, TypeError, ImportError)


def is_programming_error(exc: BaseException) -> bool:
    """True for an error that a backend call raised because of a bug, not an outage."""
    return isinstance(exc, _PROGRAMMING_ERRORS)


def handed_to_backend(exc: BaseException) -> bool:
    """True when the backend has remembered the refused call's invalidation itself
    (a cluster node that is down replays it when it is back)."""
    return isinstance(exc, NodeUnavailable)


class RateLimitedWarnings:
    """Failure WARNINGs, at most one per interval: an outage must not flood the logs."""

    def __init__(
        self, interval: float = WARNING_INTERVAL_SECONDS, level: int = logging.WARNING
    ) -> None:
        self.interval = interval
        self.level = level
        self._next_at = 0.0
        self._held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._held_back += 1
            return
        self._next_at = now + self.interval
        held_back, self._held_back = self._held_back, 0
        if held_back:
            message += " (%d similar warnings held back)"
            args = (*args, held_back)
        CACHE_LOGGER.log(self.level, message, *args)


class Probe:
    """The admission of a half-open probe: while its block runs, the backend's sync I/O
    gets the probe's own short budget (:data:`PROBE_BUDGET`); asyncio calls in it are
    bounded with :func:`within_budget`. Semian's half-open resource timeout: probing a
    server that is still broken costs ``budget``, not a full socket timeout."""

    __slots__ = ("_admission", "_token", "budget")

    def __init__(self, admission: Admission, budget: float) -> None:
        self._admission = admission
        self.budget = budget
        self._token: Token[float | None] | None = None

    def __enter__(self) -> None:
        self._token = PROBE_BUDGET.set(self.budget)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            PROBE_BUDGET.reset(self._token)
        self._admission.__exit__(exc_type, exc, tb)


def within_budget(guard: object, call: Awaitable[T]) -> Awaitable[T]:
    """``call``, bounded by the probe's budget when ``guard`` is a :class:`Probe`: the
    asyncio side of the budget (the redis asyncio client has no per-call deadline)."""
    if type(guard) is not Probe:
        return call
    return _bounded(call, guard.budget)


async def _bounded(call: Awaitable[T], budget: float) -> T:
    try:
        return await asyncio.wait_for(call, budget)
    except asyncio.TimeoutError as exc:
        # A builtin TimeoutError (an OSError) on every Python: a backend failure for
        # any backend's policy, as a timed-out socket is.
        raise TimeoutError(f"the half-open probe's I/O budget ({budget:g}s) ran out") from exc


class CacheFaults:
    """Admission through the ``cache`` breaker and the handling of failed backend calls."""

    def __init__(
        self,
        backend: object,
        backend_name: str,
        breaker: Breaker | None,
        stats: CacheStats,
    ) -> None:
        self.breaker = breaker
        self.backend_name = backend_name
        self.policy: Callable[[BaseException], bool] = getattr(
            backend, "is_backend_failure", default_backend_failure
        )
        self.pool_exhausted: Callable[[BaseException], bool] = getattr(
            backend, "is_pool_exhausted", _never
        )
        self.redact: Callable[[str], str] = getattr(backend, "redact", str)
        # The backend's I/O budget for half-open probes (the redis backend's
        # probe_socket_timeout_seconds); None: probes run like any call.
        self.probe_budget: float | None = getattr(backend, "probe_timeout_seconds", None)
        url = getattr(backend, "redacted_url", None)
        self.where = f" at {url}" if url else ""
        self.warnings = RateLimitedWarnings()
        self.errors = RateLimitedWarnings(level=logging.ERROR)
        self._stats = stats

    def admit(self, op: str) -> Admission | Probe | contextlib.nullcontext[None] | None:
        """The context to run one backend call under (a :class:`Probe` while the
        breaker is half-open), or None when the circuit is open."""
        breaker = self.breaker
        if breaker is None:
            return UNGUARDED
        admission = breaker.admit(self.policy)
        if admission is None:
            self._stats.count(op, "skipped_open")
        elif self.probe_budget is not None and breaker._state is HALF_OPEN:
            return Probe(admission, self.probe_budget)
        return admission

    def failed(self, op: str, exc: Exception) -> bool:
        """Count and log a failed backend call. True: swallow it (the caller sees a miss,
        a no-op or False); False: the caller made a mistake, re-raise. A programming
        error (:func:`is_programming_error`) is raised from here, whatever ``op``."""
        if is_programming_error(exc):
            self._stats.count(op, "error")
            frames = traceback.extract_tb(exc.__traceback__)
            raised_at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
            self.errors.warn(
                "cache %s on %r%s raised %s (%s)%s: a bug or a dependency outside the "
                "supported range, not an outage: raised to the caller, the circuit is "
                "unaffected",
                op,
                self.backend_name,
                self.where,
                type(exc).__name__,
                self.redact(str(exc)),
                raised_at,
            )
            raise exc
        if isinstance(exc, NodeUnavailable) and exc.cause is None:
            # One node's own circuit is open: its breaker logged the transition; a
            # WARNING per skipped call would flood the log for the whole outage.
            self._stats.count(op, "skipped_open")
            return True
        if self.pool_exhausted(exc):
            # Not the backend's fault: the breaker saw it as neutral (the backend's
            # policy declines it); the caller still gets a miss or a no-op.
            self._stats.count(op, "pool_exhausted")
            self.warnings.warn(
                "cache %s on %r%s found no free connection in this process's pool "
                "(max_connections); the call was %s, the circuit is unaffected",
                op,
                self.backend_name,
                self.where,
                "a miss" if op is GET else "skipped",
            )
            return True
        if isinstance(exc, WriteRejectedError):
            # This write's own problem (too large for the server): the caller's data
            # is not stored, the key is invalidated by the caller, nobody else pays.
            self._stats.count(op, "error")
            self.warnings.warn(
                "cache %s on %r%s was refused for this value (%s); the key is invalidated",
                op,
                self.backend_name,
                self.where,
                self.redact(str(exc)),
            )
            return True
        node_failed = isinstance(exc, NodeUnavailable)  # a failure of one node, not all
        if not (node_failed or self.policy(exc) or op is GET or op is HEALTH):
            return False
        self._stats.count(op, "error")
        self.warnings.warn(
            "cache %s failed on %r%s (%s: %s); the call was %s",
            op,
            self.backend_name,
            self.where,
            type(exc).__name__,
            self.redact(str(exc)),
            "a miss" if op is GET else "skipped",
        )
        return True

    def hot_read_raised(self, breaker: Breaker, generation: Ticket, exc: BaseException) -> Any:
        """A hot-path read raised: record it on the breaker, then a miss (or re-raise
        what is not an ``Exception``: cancellation, KeyboardInterrupt)."""
        breaker._release(generation, exc, self.policy)
        if not isinstance(exc, Exception):
            raise exc
        self.failed(GET, exc)
        return UNAVAILABLE


def check_shared_state(breaker: Breaker, backend: CacheBackend) -> None:
    """Refuse breaker state shared through the server the breaker guards.

    pybreaker's Redis storage is read and written on every call: kept on the cache
    server, a hung cache hangs the breaker too (its client has no timeouts: ~12 s a
    call) and the breaker never opens. Shared state must live elsewhere.
    """
    client = getattr(breaker._storage, "_redis", None)
    same_server = getattr(backend, "same_server", None)
    if client is not None and same_server is not None and same_server(client):
        raise ConfigurationError(
            "storage_factory",
            f"pybreaker Redis storage on {getattr(backend, 'redacted_url', 'the cache')}",
            "shared breaker state on a server other than the cache it guards: on the same "
            "server, a hung cache hangs the breaker meant to protect from it",
        )

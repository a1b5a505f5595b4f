"""Leases for ``@cached(lock=True)``: one computation of a missing value across every
process that shares the cache, not one per process.

On a miss the caller asks the backend for a short lease on the key (``SET NX PX`` with
a random token: :class:`~tasker_resilience._cache.backends.contract.LeaseBackend`).
The holder computes, stores the value, then gives the lease back by compare-and-delete
(only while the key still holds its own token, so a holder that outlived its lease
never deletes the next holder's). The others poll for the value (see
:func:`poll_delays`) and compute it themselves once the lease time has passed: a
holder that died or hangs costs them at most the lease time.

A lease is asked for through the provider, like every backend call: behind the
``cache`` breaker, counted under ``lease`` in ``stats()``. When it cannot be asked for
(circuit open: no network call at all; the call failed; a backend without leases),
the answer is :data:`~tasker_resilience._cache.faults.UNAVAILABLE` and the caller
computes at once, protected only by the per-process single-flight. Nothing here holds
an in-process lock, and nothing waits longer than the lease time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from tasker_resilience._cache.backends.contract import LeaseBackend
from tasker_resilience._cache.faults import UNAVAILABLE
from tasker_resilience._cache.outcomes import LEASE

if TYPE_CHECKING:
    from tasker_resilience._cache.provider import CacheProvider

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE_MARK",
    "Lease",
    "lease_seconds",
    "poll_delays",
]

DEFAULT_LEASE_SECONDS: Final = 5.0
"""``lock=True``: how long a lease holds. Longer than most origin calls; a longer
computation passes ``lock=<seconds>``, or the waiters compute too once it expires."""
FIRST_POLL_SECONDS: Final = 0.005
MAX_POLL_SECONDS: Final = 0.05
"""Waiters poll after 5 ms, then twice as long each time, at most every 50 ms: a value
computed in 200 ms is seen within ~50 ms of being stored, for ~8 round trips a waiter."""
LEASE_MARK: Final = ":lease:"
"""Between ``key_prefix:`` and the entry's key. No ``@cached`` key starts with ``:``
(its namespace is never empty), so a lease key never names an entry."""


def lease_seconds(lock: bool | float) -> float | None:
    """The lease time ``@cached(lock=...)`` asks for: None (no lease) for False,
    :data:`DEFAULT_LEASE_SECONDS` for True, else the number of seconds (> 0)."""
    if lock is False:
        return None
    if lock is True:
        return DEFAULT_LEASE_SECONDS
    if isinstance(lock, (int, float)) and 0 < lock <= 3600:
        return float(lock)
    raise ValueError(
        f"@cached lock must be True, False or the lease time in seconds (0 < s <= 3600), "
        f"not {lock!r}"
    )


def poll_delays() -> Iterator[float]:
    """How long a waiter sleeps before each look at the value: 5 ms doubling to 50 ms.
    The caller stops at its deadline (the lease time), whatever this yields."""
    delay = FIRST_POLL_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, MAX_POLL_SECONDS)


class Lease:
    """One caller's claim on the lease of one key: its own random token.

    :meth:`acquire` answers True (held), False (another holder has it) or
    ``UNAVAILABLE`` (no lease to be had: compute at once); :meth:`release` gives back a
    held lease. The ``a``-prefixed twins await the backend instead.
    """

    __slots__ = ("_backend", "_provider", "full", "seconds", "token")

    def __init__(self, provider: CacheProvider, key: str, seconds: float) -> None:
        self._provider = provider
        backend = provider._backend
        self._backend: Any = backend if isinstance(backend, LeaseBackend) else None
        self.full = provider._prefix + LEASE_MARK + key
        self.seconds = seconds
        self.token = secrets.token_bytes(16)

    def acquire(self) -> Any:
        backend = self._backend
        if backend is None:
            return UNAVAILABLE
        full, token, seconds = self.full, self.token, self.seconds
        try:
            return self._provider.command(
                LEASE, lambda: backend.add(full, token, seconds), skipped=UNAVAILABLE
            )
        except Exception as exc:
            return self._refused(exc)

    def release(self) -> None:
        backend = self._backend
        if backend is None:
            return
        full, token = self.full, self.token
        try:
            self._provider.command(
                LEASE, lambda: backend.delete_if_equal(full, token), skipped=False
            )
        except Exception as exc:
            self._refused(exc)

    async def aacquire(self) -> Any:
        backend = self._backend
        if backend is None:
            return UNAVAILABLE
        full, token, seconds = self.full, self.token, self.seconds
        try:
            return await self._provider.acommand(
                LEASE, lambda: backend.aadd(full, token, seconds), skipped=UNAVAILABLE
            )
        except Exception as exc:
            return self._refused(exc)

    async def arelease(self) -> None:
        backend = self._backend
        if backend is None:
            return
        full, token = self.full, self.token
        try:
            await self._provider.acommand(
                LEASE, lambda: backend.adelete_if_equal(full, token), skipped=False
            )
        except Exception as exc:
            self._refused(exc)

    def _refused(self, exc: Exception) -> Any:
        # The backend rejected the command itself (e.g. a server without EVAL): not an
        # outage, but no reason to fail the caller's call either. The lease is simply
        # not there; the caller computes, and an unreleased lease expires by itself.
        self._provider._faults.warnings.warn(
            "@cached lease call refused by %r (%s: %s); computing without the lease",
            self._provider.backend_name,
            type(exc).__name__,
            str(exc)[:200],
        )
        return UNAVAILABLE

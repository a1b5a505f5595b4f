"""``CacheProvider`` (``res.cache``): the breaker-guarded facade over one cache backend.

Every operation on a distributed backend asks the registry's ``cache`` breaker first:

=================  ======================  =================================
operation          circuit open            backend failure while closed
=================  ======================  =================================
get / aget         ``None`` (a miss)       ``None`` (a miss), WARNING
set / aset         nothing, returns        swallowed, WARNING
delete / adelete   nothing, returns        swallowed, WARNING
delete_pattern     ``0``                   swallowed (``0``), WARNING
health_check       ``False``               ``False``
=================  ======================  =================================

While open no backend call is made at all; the breaker DEBUG-logs the rejection and
``stats()`` counts it as ``skipped_open``. Only failures the backend's
``is_backend_failure`` recognises (connection errors, timeouts, busy, read-only...)
count against the breaker; caller mistakes (a value that cannot be serialised, a
non-string key, a bad TTL) raise to the caller and never touch the breaker.

Invalidations that could not reach the backend (``delete``, ``delete_pattern`` and a
write-through ``set``, skipped while open or failed) are remembered, bounded, and
replayed inside the next admitted call *before* it reads, so a recovered cache never
serves a value this process invalidated during the outage.

Sync and async share every decision (``_begin``, ``_failed``, ``_finish_get`` ...);
the twins differ only in the ``await`` on the backend call.

Reads from the in-process ``memory`` backend skip JSON decoding after the first hit
of an entry: the decoded value is kept next to the entry as a ``marshal`` image, and
every hit rebuilds a fresh object from it (about half the cost of ``json`` decoding).
Callers still get their own copy, equal to what the JSON decoder returns, so a
caller mutating a result never changes what the next hit sees, as with redis.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import marshal
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from tasker_resilience._breakers.breaker import CLOSED, Admission, Breaker, StateName, counter_value
from tasker_resilience._cache.backends.contract import CacheBackend, backend_factory
from tasker_resilience._cache.backends.memory_backend import MemoryBackend, MemoryEntry, NoopBackend
from tasker_resilience._cache.invalidations import (
    DELETE,
    DELETE_PATTERN,
    PendingInvalidations,
    ReplayPlan,
    Step,
)
from tasker_resilience._cache.keys import escape_glob
from tasker_resilience._cache.serializers import (
    JsonSerializer,
    SerializationError,
    Serializer,
    get_serializer,
)
from tasker_resilience._config.schema import CacheConfig

if TYPE_CHECKING:
    from tasker_resilience._breakers.registry import BreakerRegistry

__all__ = ["CACHE_BREAKER", "CACHE_LOGGER", "CacheProvider"]

T = TypeVar("T")

CACHE_BREAKER: Final = "cache"
CACHE_LOGGER = logging.getLogger("tasker_resilience.cache")

GET: Final = "get"
SET: Final = "set"
DELETE_OP: Final = "delete"
DELETE_PATTERN_OP: Final = "delete_pattern"
HEALTH: Final = "health_check"
OPERATIONS: Final = (GET, SET, DELETE_OP, DELETE_PATTERN_OP, HEALTH)
_OUTCOMES: Final = {
    GET: ("hit", "miss", "error", "skipped_open"),
    SET: ("ok", "error", "skipped_open"),
    DELETE_OP: ("ok", "error", "skipped_open"),
    DELETE_PATTERN_OP: ("ok", "error", "skipped_open"),
    HEALTH: ("ok", "error", "skipped_open"),
}
WARNING_INTERVAL_SECONDS: Final = 10.0
"""At most one failure WARNING per this many seconds; the next one says how many were held back."""


class _Unavailable:
    """A fetch that produced no answer (skipped while open, or failed)."""

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final[Any] = _Unavailable()
# A provider without a breaker runs every call under this do-nothing context.
_UNGUARDED: Final = contextlib.nullcontext()


def _default_backend_failure(exc: BaseException) -> bool:
    """For a backend without ``is_backend_failure``: I/O errors (``OSError``, which
    includes ``ConnectionError`` and ``TimeoutError``) count, mistakes do not."""
    return isinstance(exc, OSError)


class _Warnings:
    """Failure WARNINGs, at most one per interval: an outage must not flood the logs."""

    def __init__(self, interval: float = WARNING_INTERVAL_SECONDS) -> None:
        self.interval = interval
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
        CACHE_LOGGER.warning(message, *args)


class CacheProvider:
    """The cache of one process: ``res.cache``. Build it with :meth:`from_config`.

    Values are serialised (JSON by default) and stored under ``key_prefix:key``;
    ``ttl=None`` means ``default_ttl_seconds``. See the module docstring for what each
    operation does while the circuit is open or the backend fails.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        breaker: Breaker | None = None,
        key_prefix: str = "tasker",
        default_ttl_seconds: float = 3600,
        serializer: str | Serializer | None = None,
        max_pending_invalidations: int = 1000,
        backend_name: str | None = None,
        enabled: bool = True,
    ) -> None:
        self._backend = backend
        self._breaker = breaker
        self._enabled = enabled
        self._backend_name = backend_name or backend.name
        self._key_prefix = key_prefix
        self._prefix = key_prefix + ":"
        self._pattern_prefix = escape_glob(key_prefix) + ":"
        self._default_ttl = self._checked_ttl(default_ttl_seconds)
        self._serializer = get_serializer(serializer)
        self._policy: Callable[[BaseException], bool] = getattr(
            backend, "is_backend_failure", _default_backend_failure
        )
        self._redact: Callable[[str], str] = getattr(backend, "redact", str)
        url = getattr(backend, "redacted_url", None)
        self._where = f" at {url}" if url else ""
        self._pending = PendingInvalidations(max_pending_invalidations, self._pattern_prefix + "*")
        self._warnings = _Warnings()
        self._counts = {op: {o: itertools.count() for o in _OUTCOMES[op]} for op in OPERATIONS}
        # Bound once: the hit path pays one attribute read per count.
        self._get_hit = self._counts[GET]["hit"]
        self._get_miss = self._counts[GET]["miss"]
        # The in-process memory backend hands out its entries (see _read).
        self._get_entry: Callable[[str], MemoryEntry | None] | None = (
            backend.get_entry if isinstance(backend, MemoryBackend) and enabled else None
        )

    @classmethod
    def from_config(cls, config: CacheConfig, breakers: BreakerRegistry) -> CacheProvider:
        """Build the configured backend and, for a distributed one, guard it with the
        registry's ``cache`` breaker. One health check runs now: if it fails, the
        breaker starts open (a WARNING says so) and probes after ``timeout_seconds``."""
        common: dict[str, Any] = {
            "key_prefix": config.key_prefix,
            "default_ttl_seconds": config.default_ttl_seconds,
            "serializer": config.serializer,
            "max_pending_invalidations": config.max_pending_invalidations,
            "backend_name": config.backend,
        }
        if not config.enabled:
            return cls(NoopBackend(name=config.backend), enabled=False, **common)
        backend = backend_factory(config.backend)(config)
        breaker = breakers.get(CACHE_BREAKER) if backend.distributed else None
        provider = cls(backend, breaker=breaker, **common)
        if breaker is not None:
            provider._check_at_startup(breaker)
        return provider

    def _check_at_startup(self, breaker: Breaker) -> None:
        if self.health_check():
            return
        if not breaker.enabled:
            CACHE_LOGGER.warning(
                "cache backend %r%s is unreachable at start-up and circuit breakers are "
                "disabled: every cache call will wait for its timeout until it is back",
                self._backend_name,
                self._where,
            )
            return
        breaker.force_open()
        CACHE_LOGGER.warning(
            "cache backend %r%s is unreachable at start-up: the service starts degraded "
            "(cache circuit open, every cache read is a miss) and recovers by itself "
            "(a probe every %gs)",
            self._backend_name,
            self._where,
            breaker.config.timeout_seconds,
        )

    # --- properties ---------------------------------------------------------------------

    @property
    def backend(self) -> CacheBackend:
        return self._backend

    @property
    def backend_name(self) -> str:
        """The configured name (``"dragonfly"`` for the alias)."""
        return self._backend_name

    @property
    def breaker(self) -> Breaker | None:
        """The registry's ``cache`` breaker; None for an in-process or disabled cache."""
        return self._breaker

    @property
    def distributed(self) -> bool:
        return self._enabled and self._backend.distributed

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def key_prefix(self) -> str:
        return self._key_prefix

    @property
    def default_ttl_seconds(self) -> float:
        return self._default_ttl

    @property
    def serializer(self) -> Serializer:
        return self._serializer

    @property
    def circuit_state(self) -> StateName:
        """``closed``, ``open`` or ``half-open``; always ``closed`` without a breaker."""
        breaker = self._breaker
        return CLOSED if breaker is None else breaker.state

    def stats(self) -> dict[str, dict[str, int]]:
        """Per operation, how many calls ended as hit/miss (get), ok, error, skipped_open."""
        return {
            op: {outcome: counter_value(c) for outcome, c in outcomes.items()}
            for op, outcomes in self._counts.items()
        }

    def pending_invalidations(self) -> dict[str, int | bool]:
        """Invalidations waiting for the backend to come back (``pending``, ``overflowed``)."""
        return self._pending.snapshot()

    # --- shared decisions -----------------------------------------------------------------

    @staticmethod
    def _checked_ttl(ttl: float) -> float:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"ttl must be a number of seconds, not {ttl!r}")
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
        return ttl

    def _ttl(self, ttl: float | None) -> float:
        return self._default_ttl if ttl is None else self._checked_ttl(ttl)

    def _begin(self, op: str) -> Admission | contextlib.nullcontext[None] | None:
        """The context to run one backend call under, or None when the circuit is open."""
        breaker = self._breaker
        if breaker is None:
            return _UNGUARDED
        admission = breaker.admit(self._policy)
        if admission is None:
            next(self._counts[op]["skipped_open"])
        return admission

    def _failed(self, op: str, exc: Exception) -> bool:
        """Count and log a failed backend call. True: swallow it (the caller sees a miss,
        a no-op or False); False: the caller made a mistake, re-raise."""
        if not (self._policy(exc) or op is GET or op is HEALTH):
            return False
        next(self._counts[op]["error"])
        self._warnings.warn(
            "cache %s failed on %r%s (%s: %s); the call was %s",
            op,
            self._backend_name,
            self._where,
            type(exc).__name__,
            self._redact(str(exc)),
            "a miss" if op is GET else "skipped",
        )
        return True

    def _finish_get(self, raw: Any, serializer: Serializer, enveloped: bool, miss: Any) -> Any:
        """Decode what a fetch returned; ``miss`` when there is no usable value.

        ``enveloped`` values are one-item lists (``@cached`` stores ``[result]`` so a
        cached ``None`` is a hit).
        """
        if raw is None:
            next(self._get_miss)
            return miss
        if raw is UNAVAILABLE:
            return miss
        try:
            value = serializer.loads(raw)
        except SerializationError as exc:
            return self._unreadable(exc, miss)
        return self._hit(value, enveloped, miss)

    def _hit(self, value: Any, enveloped: bool, miss: Any) -> Any:
        """Count and return a decoded value (unwrapped from its ``@cached`` envelope)."""
        if enveloped:
            if type(value) is not list or len(value) != 1:
                return self._unreadable(
                    SerializationError("stored value is not a @cached entry"), miss
                )
            value = value[0]
        next(self._get_hit)
        return value

    def _unreadable(self, exc: SerializationError, miss: Any) -> Any:
        # Foreign or corrupt data: a miss (the caller recomputes and overwrites),
        # never an exception and never a breaker failure.
        next(self._counts[GET]["error"])
        self._warnings.warn("cache entry unreadable, treated as a miss: %s", exc)
        return miss

    def _read(self, key: str, serializer: Serializer, enveloped: bool, miss: Any) -> Any:
        """The decoded value under ``key`` or ``miss``: ``get`` and ``@cached`` reads."""
        get_entry = self._get_entry
        if get_entry is None:
            return self._finish_get(self._fetch(key), serializer, enveloped, miss)
        # The memory backend: no breaker, no I/O, nothing ever pending to replay.
        full = self._prefix + key if type(key) is str else self._full_key(key)
        try:
            entry = get_entry(full)
        except Exception as exc:
            self._failed(GET, exc)
            return miss
        if entry is None:
            next(self._get_miss)
            return miss
        image = entry.copy
        if image is not None and type(serializer) is JsonSerializer:
            value = marshal.loads(image)
            if enveloped:
                if type(value) is not list or len(value) != 1:
                    return self._hit(value, enveloped, miss)  # counted and logged there
                value = value[0]
            next(self._get_hit)
            return value
        try:
            value = serializer.loads(entry.value)
        except SerializationError as exc:
            return self._unreadable(exc, miss)
        if type(serializer) is JsonSerializer:
            # Decoded JSON holds only dict, list, str, int, float, bool, None and bytes,
            # which marshal rebuilds exactly (order, -0.0, nan, big ints, lone
            # surrogates), as new objects on every load. Any JsonSerializer decodes
            # alike, so the image serves them all; never other serializers.
            with contextlib.suppress(ValueError):  # deeper than marshal nests: no image
                entry.copy = marshal.dumps(value)
        return self._hit(value, enveloped, miss)

    def _replayed(self, plan: ReplayPlan) -> None:
        self._pending.done(plan)
        if plan.overflowed:
            CACHE_LOGGER.warning(
                "cache: more invalidations were missed during the outage than remembered; "
                "dropped the whole %r namespace",
                self._key_prefix,
            )
        else:
            CACHE_LOGGER.info("cache: replayed %d missed invalidation(s)", len(plan.steps))

    def _full_key(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"cache keys are strings, not {type(key).__name__}")
        return self._prefix + key

    def _full_pattern(self, pattern: str) -> str:
        if not isinstance(pattern, str):
            raise TypeError(f"cache key patterns are strings, not {type(pattern).__name__}")
        return self._pattern_prefix + pattern

    def _get_skipped(self) -> Any:
        next(self._counts[GET]["skipped_open"])
        return UNAVAILABLE

    def _get_raised(self, breaker: Breaker, generation: int, exc: BaseException) -> Any:
        """A hot-path read raised: record it on the breaker, then a miss (or re-raise
        what is not an ``Exception``: cancellation, KeyboardInterrupt)."""
        breaker._release(generation, exc, self._policy)
        if not isinstance(exc, Exception):
            raise exc
        self._failed(GET, exc)
        return UNAVAILABLE

    # --- sync -------------------------------------------------------------------------------

    def _replay(self) -> bool:
        """Replay missed invalidations; False while another caller's replay is in flight."""
        plan = self._pending.claim()
        if plan is None:
            return False
        try:
            for kind, target in plan.steps:
                if kind is DELETE:
                    self._backend.delete(target)
                else:
                    self._backend.delete_pattern(target)
            self._replayed(plan)
        finally:
            self._pending.release()
        return True

    def _fetch(self, key: str) -> Any:
        """The raw bytes under ``key``, None (absent) or UNAVAILABLE; never raises for
        backend trouble."""
        breaker = self._breaker
        if breaker is not None and type(key) is str and not self._pending.active:
            # The hot path (a guarded backend, nothing to replay): the breaker's two
            # decision points called directly. The same decisions as ``with admission``
            # without an Admission object and the context-manager protocol, which cost
            # about 1 us a call next to a ~35 us loopback GET.
            generation = breaker._acquire()
            if generation is None:
                return self._get_skipped()
            try:
                raw = self._backend.get(self._prefix + key)
            except BaseException as exc:
                return self._get_raised(breaker, generation, exc)
            breaker._release(generation, None, self._policy)
            return raw
        full = self._full_key(key)
        guard = self._begin(GET)
        if guard is None:
            return UNAVAILABLE
        try:
            with guard:
                if self._pending.active and not self._replay():
                    # Another caller is replaying: the server may still hold a value it
                    # is about to delete. Ask anyway (an honest probe), answer a miss.
                    self._backend.get(full)
                    return None
                return self._backend.get(full)
        except Exception as exc:
            self._failed(GET, exc)
            return UNAVAILABLE

    def _write(self, op: str, undo: Step | None, call: Callable[[], T], skipped: T) -> T:
        """Run one writing backend call; ``undo`` is the invalidation to remember if the
        call cannot reach the backend, ``skipped`` what the caller gets then."""
        guard = self._begin(op)
        if guard is None:
            if undo is not None:
                self._pending.add(*undo)
            return skipped
        try:
            with guard:
                if self._pending.active:
                    self._replay()
                result = call()
        except Exception as exc:
            if not self._failed(op, exc):
                raise
            if undo is not None:
                self._pending.add(*undo)
            return skipped
        next(self._counts[op]["ok"])
        return result

    def _store(self, key: str, data: bytes, ttl: float | None, remember: bool) -> None:
        full, seconds, backend = self._full_key(key), self._ttl(ttl), self._backend
        undo = Step(DELETE, full) if remember else None
        self._write(SET, undo, lambda: backend.set(full, data, seconds), None)

    def get(self, key: str) -> Any:
        """The value under ``key``, or None: absent, circuit open, or backend failing."""
        return self._read(key, self._serializer, False, None)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (``default_ttl_seconds`` when None).

        Raises :class:`SerializationError` (a ``TypeError``) for a value the serializer
        cannot store, whatever the circuit state. A set that cannot reach the backend is
        remembered as an invalidation of ``key``: a write-through update must not leave
        the old value to be read after recovery.
        """
        self._store(key, self._serializer.dumps(value), ttl, True)

    def delete(self, key: str) -> None:
        """Remove ``key``; remembered and replayed later if the backend is unreachable."""
        full, backend = self._full_key(key), self._backend
        self._write(DELETE_OP, Step(DELETE, full), lambda: backend.delete(full), None)

    def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching the glob ``pattern`` (under ``key_prefix``); returns
        how many were removed (0 while open or failing: then remembered for replay)."""
        full, backend = self._full_pattern(pattern), self._backend
        undo = Step(DELETE_PATTERN, full)
        return self._write(DELETE_PATTERN_OP, undo, lambda: backend.delete_pattern(full), 0)

    def health_check(self) -> bool:
        """True when the backend answers; False while open (no call made) or failing."""
        guard = self._begin(HEALTH)
        if guard is None:
            return False
        try:
            with guard:
                healthy = bool(self._backend.health_check())
        except Exception as exc:
            self._failed(HEALTH, exc)
            return False
        next(self._counts[HEALTH]["ok" if healthy else "error"])
        return healthy

    def close(self) -> None:
        """Release the backend's connections."""
        self._backend.close()

    # --- asyncio: the same decisions, awaiting the backend --------------------------------

    async def _areplay(self) -> bool:
        plan = self._pending.claim()
        if plan is None:
            return False
        try:
            for kind, target in plan.steps:
                if kind is DELETE:
                    await self._backend.adelete(target)
                else:
                    await self._backend.adelete_pattern(target)
            self._replayed(plan)
        finally:
            self._pending.release()
        return True

    async def _afetch(self, key: str) -> Any:
        breaker = self._breaker
        if breaker is not None and type(key) is str and not self._pending.active:
            # The hot path, as in _fetch.
            generation = breaker._acquire()
            if generation is None:
                return self._get_skipped()
            try:
                raw = await self._backend.aget(self._prefix + key)
            except BaseException as exc:
                return self._get_raised(breaker, generation, exc)
            breaker._release(generation, None, self._policy)
            return raw
        full = self._full_key(key)
        guard = self._begin(GET)
        if guard is None:
            return UNAVAILABLE
        try:
            with guard:
                if self._pending.active and not await self._areplay():
                    await self._backend.aget(full)  # as in _fetch: a probe, answered as a miss
                    return None
                return await self._backend.aget(full)
        except Exception as exc:
            self._failed(GET, exc)
            return UNAVAILABLE

    async def _awrite(
        self, op: str, undo: Step | None, call: Callable[[], Awaitable[T]], skipped: T
    ) -> T:
        guard = self._begin(op)
        if guard is None:
            if undo is not None:
                self._pending.add(*undo)
            return skipped
        try:
            with guard:
                if self._pending.active:
                    await self._areplay()
                result = await call()
        except Exception as exc:
            if not self._failed(op, exc):
                raise
            if undo is not None:
                self._pending.add(*undo)
            return skipped
        next(self._counts[op]["ok"])
        return result

    async def _astore(self, key: str, data: bytes, ttl: float | None, remember: bool) -> None:
        full, seconds, backend = self._full_key(key), self._ttl(ttl), self._backend
        undo = Step(DELETE, full) if remember else None
        await self._awrite(SET, undo, lambda: backend.aset(full, data, seconds), None)

    async def _aread(self, key: str, serializer: Serializer, enveloped: bool, miss: Any) -> Any:
        if self._get_entry is not None:
            return self._read(key, serializer, enveloped, miss)  # in-process: nothing to await
        return self._finish_get(await self._afetch(key), serializer, enveloped, miss)

    async def aget(self, key: str) -> Any:
        """Async :meth:`get`."""
        return await self._aread(key, self._serializer, False, None)

    async def aset(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Async :meth:`set`."""
        await self._astore(key, self._serializer.dumps(value), ttl, True)

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""
        full, backend = self._full_key(key), self._backend
        await self._awrite(DELETE_OP, Step(DELETE, full), lambda: backend.adelete(full), None)

    async def adelete_pattern(self, pattern: str) -> int:
        """Async :meth:`delete_pattern`."""
        full, backend = self._full_pattern(pattern), self._backend
        undo = Step(DELETE_PATTERN, full)
        return await self._awrite(DELETE_PATTERN_OP, undo, lambda: backend.adelete_pattern(full), 0)

    async def ahealth_check(self) -> bool:
        """Async :meth:`health_check`."""
        guard = self._begin(HEALTH)
        if guard is None:
            return False
        try:
            with guard:
                healthy = bool(await self._backend.ahealth_check())
        except Exception as exc:
            self._failed(HEALTH, exc)
            return False
        next(self._counts[HEALTH]["ok" if healthy else "error"])
        return healthy

    async def aclose(self) -> None:
        """Release the backend's connections held by the running event loop."""
        await self._backend.aclose()

    def __repr__(self) -> str:
        return (
            f"<CacheProvider backend={self._backend_name!r} enabled={self._enabled} "
            f"circuit={self.circuit_state}>"
        )

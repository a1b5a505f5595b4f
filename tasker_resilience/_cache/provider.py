"""``CacheProvider`` (``res.cache``): the breaker-guarded facade over one cache backend.

The provider composes the parts of one cache call, each in its own module:

- :mod:`~tasker_resilience._cache.faults`: may this call reach the backend (the
  ``cache`` breaker), and what a failure costs the caller (the open-circuit table);
- :mod:`~tasker_resilience._cache.replay`: invalidations the backend missed, replayed
  inside the next admitted call *before* it reads, so a recovered cache never serves a
  value this process invalidated during the outage;
- :mod:`~tasker_resilience._cache.reads`: decoding, envelopes, unreadable entries and
  the memory backend's copy-per-hit images;
- :mod:`~tasker_resilience._cache.outcomes`: the counters behind :meth:`stats`;
- :mod:`~tasker_resilience._cache.near` (opt-in, ``[common.cache.near]``): the in-process
  tier in front of a distributed backend, kept coherent by
  :mod:`~tasker_resilience._cache.tracking`; it answers fresh reads without a round trip
  and, while the backend is unavailable, serves stale entries instead of misses. With it
  off (the default) every path below is what it was: one attribute check per read.

What stays here are the operations themselves, in sync/async pairs that share every
decision (``_fetch``/``_afetch``, ``_write``/``_awrite``); the twins differ only in the
``await`` on the backend call.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from tasker_resilience._breakers.breaker import CLOSED, OPEN, Breaker, StateName, Ticket
from tasker_resilience._cache.backends.contract import (
    BackendFactory,
    CacheBackend,
    backend_factory,
)
from tasker_resilience._cache.backends.memory_backend import MemoryBackend, MemoryEntry, NoopBackend
from tasker_resilience._cache.faults import (
    CACHE_LOGGER,
    UNAVAILABLE,
    CacheFaults,
    check_shared_state,
    handed_to_backend,
    within_budget,
)
from tasker_resilience._cache.invalidations import (
    DELETE,
    DELETE_PATTERN,
    PendingInvalidations,
    Step,
)
from tasker_resilience._cache.keys import escape_glob
from tasker_resilience._cache.limits import checked_key, checked_ttl, key_error
from tasker_resilience._cache.near import NearTier, timed_reads
from tasker_resilience._cache.outcomes import (
    DELETE_OP,
    DELETE_PATTERN_OP,
    GET,
    HEALTH,
    SET,
    CacheStats,
)
from tasker_resilience._cache.probe import HealthProbe
from tasker_resilience._cache.reads import ReadDecoder
from tasker_resilience._cache.replay import InvalidationReplay
from tasker_resilience._cache.serializers import Serializer, get_serializer
from tasker_resilience._config.schema import CACHE_BREAKER, DEFAULT_CACHE

if TYPE_CHECKING:
    from tasker_resilience._breakers.registry import BreakerRegistry
    from tasker_resilience._cache.tracking import InvalidationListener
    from tasker_resilience._config.schema import CacheConfig

__all__ = ["CACHE_BREAKER", "CACHE_LOGGER", "CacheProvider"]

T = TypeVar("T")


class _Replay(enum.Enum):
    READ_BEFORE = "read before the replay"
    """What a read-marked command answers while another caller's replay is in flight."""


_READ_BEFORE_REPLAY: Final = _Replay.READ_BEFORE


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
        near: NearTier | None = None,
        health_probe_interval_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = DEFAULT_CACHE,
    ) -> None:
        self.name = name
        """The cache's name: ``default`` for ``[common.cache]``, else its
        ``[common.caches.<name>]`` (or an integration's alias); metrics and spans carry it."""
        self._backend = backend
        self._breaker = breaker
        self._enabled = enabled
        self._backend_name = backend_name or backend.name
        self._key_prefix = key_prefix
        self._prefix = key_prefix + ":"
        self._pattern_prefix = escape_glob(key_prefix) + ":"
        self._default_ttl = checked_ttl(default_ttl_seconds, "default_ttl_seconds")
        self._serializer = get_serializer(serializer)
        self._stats = CacheStats(self)  # the provider is what telemetry reports on
        self._faults = faults = CacheFaults(backend, self._backend_name, breaker, self._stats)
        self._policy = faults.policy
        self._where = faults.where
        self._pending = PendingInvalidations(max_pending_invalidations, self._pattern_prefix + "*")
        self._replays = InvalidationReplay(backend, self._pending, key_prefix)
        self._decoder = decoder = ReadDecoder(self._stats, faults.warnings)
        # Bound once: the hot paths call these without an attribute chain.
        self._begin = faults.admit
        self._failed = faults.failed
        self._finish_get = decoder.finish
        self._read_entry = decoder.entry
        self._replay = self._replays.replay
        self._areplay = self._replays.areplay
        # The in-process memory backend hands out its entries (see _read).
        self._get_entry: Callable[[str], MemoryEntry | None] | None = (
            backend.get_entry if isinstance(backend, MemoryBackend) and enabled else None
        )
        # The near tier: only in front of a distributed backend (an in-process one is near).
        self._near = near if enabled and self._get_entry is None else None
        # The backend reads of _fetch/_afetch. Behind a near tier each one also brings
        # the key's remaining TTL on the server (same round trip): see near.timed_reads.
        reads: tuple[Callable[[str], Any], Callable[[str], Awaitable[Any]]] = (
            (backend.get, backend.aget) if self._near is None else timed_reads(backend)
        )
        self._get_raw, self._aget_raw = reads
        # The breaker that decides alone whether a read is skipped (see _skips_reads):
        # with a near tier, an open circuit may still answer from it.
        self._read_breaker = breaker if self._near is None else None
        self._skipped_gets = self._stats.counter(GET, "skipped_open")
        self._listener: InvalidationListener | None = None
        self._probe = HealthProbe(self._probe_backend, health_probe_interval_seconds, clock)

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        breakers: BreakerRegistry,
        *,
        factory: BackendFactory | None = None,
        clock: Callable[[], float] | None = None,
        breaker_name: str = CACHE_BREAKER,
        name: str = DEFAULT_CACHE,
    ) -> CacheProvider:
        """Build the configured backend (with ``factory`` if given, else the one
        registered for ``config.backend``) and, for a distributed one, guard it with the
        registry's breaker ``breaker_name`` (``cache``; ``cache_<name>`` for a named
        cache). One health check runs now: if it fails, the breaker starts open (a
        WARNING says so) and probes after ``timeout_seconds``. With
        ``[common.cache.near] enabled``, the near tier goes in front of it."""
        timing = {} if clock is None else {"clock": clock}
        common: dict[str, Any] = {
            "key_prefix": config.key_prefix,
            "default_ttl_seconds": config.default_ttl_seconds,
            "serializer": config.serializer,
            "max_pending_invalidations": config.max_pending_invalidations,
            "backend_name": config.backend,
            "health_probe_interval_seconds": config.health_probe_interval_seconds,
            "name": name,
            **timing,
        }
        if not config.enabled:
            return cls(NoopBackend(name=config.backend), enabled=False, **common)
        backend = (factory or backend_factory(config.backend))(config)
        breaker = breakers.get(breaker_name) if backend.distributed else None
        if breaker is not None:
            check_shared_state(breaker, backend)
        near = None
        if config.near.enabled and backend.distributed:
            near = NearTier(config.near, **timing)
        provider = cls(backend, breaker=breaker, near=near, **common)
        if near is not None:
            from tasker_resilience._cache.tracking import start_near_coherence

            provider._listener = start_near_coherence(near, backend, config, provider._where)
        guard_nodes_with = getattr(backend, "guard_nodes_with", None)
        if breaker is not None and guard_nodes_with is not None:
            # A cluster's masters get breakers of their own with the cache breaker's
            # thresholds (see _cache/backends/nodes.py).
            guard_nodes_with(breaker)
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
        """The breaker of this cache (``cache``, or ``cache_<name>`` for a named one);
        None for an in-process or disabled cache."""
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
        """Per operation, how many calls ended as hit/miss (get), ok, error, skipped_open;
        with the near tier on, also ``near`` (its hits, misses, ``stale_served``,
        entries and estimated bytes)."""
        snapshot = self._stats.snapshot()
        if self._near is not None:
            snapshot["near"] = self._near.snapshot()
        return snapshot

    @property
    def near(self) -> NearTier | None:
        """The near tier (``[common.cache.near]``), or None when it is off."""
        return self._near

    def near_info(self) -> dict[str, Any] | None:
        """The near tier for health: mode, channel, entries, stale answers; None when off."""
        near = self._near
        if near is None:
            return None
        return {
            "enabled": True,
            "mode": near.mode,
            "tracking_connected": near.tracking_connected,
            "entries": len(near),
            "stale_served": near.snapshot()["stale_served"],
        }

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Per node of a multi-node backend (Redis Cluster masters, ``host:port``): its
        own breaker's state and counters. Empty for a single-server backend."""
        report: Callable[[], dict[str, dict[str, Any]]] | None = getattr(
            self._backend, "node_report", None
        )
        return {} if report is None or not self._enabled else report()

    def adopt_invalidations(self, other: CacheProvider) -> None:
        """Take over what ``other`` (the provider this one replaces) still has to
        replay; it is replayed here, before this provider serves a read."""
        for step in other._pending.steps():
            self._pending.add(*step)

    def pending_invalidations(self) -> dict[str, int | bool]:
        """Invalidations waiting for the backend to come back (``pending``, ``overflowed``)."""
        return self._pending.snapshot()

    # --- shared decisions -----------------------------------------------------------------

    def _ttl(self, ttl: float | timedelta | None) -> float:
        return self._default_ttl if ttl is None else checked_ttl(ttl)

    def _read(
        self, key: str, serializer: Serializer, enveloped: bool, miss: Any, shared: bool = False
    ) -> Any:
        """The decoded value under ``key`` or ``miss``: ``get`` and ``@cached`` reads.
        ``shared``: a memory-backend hit may hand out the stored object (see reads)."""
        get_entry = self._get_entry
        if get_entry is None:
            near = self._near
            if near is not None:
                # A near hit is an in-process hit: the key check and lookup inlined, as
                # for the memory backend below.
                full = self._prefix + key if type(key) is str else self._full_key(key)
                near_entry = near.fresh(full)
                if near_entry is not None:
                    return self._read_entry(near_entry, serializer, enveloped, miss, shared)
                token = near.begin(full)
                return self._near_end(full, token, self._fetch(key), serializer, enveloped, miss)
            return self._finish_get(self._fetch(key), serializer, enveloped, miss)
        # The memory backend: no breaker, no I/O, nothing ever pending to replay.
        full = self._prefix + key if type(key) is str else self._full_key(key)
        try:
            entry = get_entry(full)
        except Exception as exc:
            self._failed(GET, exc)
            return UNAVAILABLE if enveloped else miss
        return self._read_entry(entry, serializer, enveloped, miss, shared)

    # --- the near tier: decisions shared by the sync and async paths ---------------------

    def _near_end(
        self, full: str, token: Any, raw: Any, serializer: Serializer, enveloped: bool, miss: Any
    ) -> Any:
        """Answer a near miss from what the backend returned: fill the tier, or, when the
        backend is unavailable, serve a stale entry if it is recent enough."""
        near = self._near
        assert near is not None
        if raw is UNAVAILABLE:
            near.unavailable()
            stale = near.stale(full)
            if stale is not None:
                value = self._read_entry(stale, serializer, enveloped, miss)
                self._stats.note(GET, "stale_served")  # after the hit it was counted as
                return value
            return miss
        near.available()
        raw = near.fill_read(full, token, raw)
        return self._finish_get(raw, serializer, enveloped, miss)

    def _near_stored(self, full: str, token: Any, data: bytes, seconds: float, result: Any) -> None:
        """After a write of ``full``: the tier keeps what the backend now holds, or, if
        the write did not reach it, this process's own value (read your own writes)."""
        near = self._near
        assert near is not None
        if result is UNAVAILABLE:
            near.unavailable()
            near.put_local(full, data, seconds)
        else:
            near.available()
            near.fill(full, token, data, seconds)

    def _full_key(self, key: str) -> str:
        return self._prefix + checked_key(key)

    def _full_pattern(self, pattern: str) -> str:
        return self._pattern_prefix + checked_key(pattern, "cache key patterns")

    def _remember(self, undo: Sequence[Step]) -> None:
        for step in undo:
            self._pending.add(*step)

    def full_key(self, key: str) -> str:
        """``key`` as stored in the backend (``key_prefix:key``): what :meth:`command`
        calls and their ``undo`` steps work on."""
        return self._full_key(key)

    def full_pattern(self, pattern: str) -> str:
        """The glob ``pattern`` under ``key_prefix``, as :meth:`delete_pattern` applies it."""
        return self._full_pattern(pattern)

    def _skips_read_of(self, key: str) -> bool:
        """:meth:`_skips_reads` for a caller's key: the open circuit's miss in two calls
        instead of the read path's ten. Only for keys that cannot fail ``checked_key``
        (ASCII str): any other key takes the read path, which checks it first."""
        breaker = self._read_breaker
        if breaker is None or type(key) is not str or not key.isascii():
            return False
        if not breaker._rejects():
            return False
        next(self._skipped_gets)
        return True

    def _skips_reads(self) -> bool:
        """True when a read would be skipped now (circuit open, no probe due, no near
        tier to answer): counted as a skipped get. ``@cached`` asks this first and then
        calls the function without building a key, serialising or single-flight."""
        breaker = self._read_breaker
        if breaker is None or not breaker._rejects():
            return False
        next(self._skipped_gets)
        return True

    def _get_skipped(self, key: str) -> Any:
        # The open-circuit answer checks the key as a closed circuit would have.
        checked_key(key)
        self._stats.count(GET, "skipped_open")
        return UNAVAILABLE

    def _hot_read_raised(
        self, breaker: Breaker, generation: Ticket, key: str, exc: BaseException
    ) -> Any:
        error = key_error(key) if isinstance(exc, UnicodeError) else None
        if error is not None:
            # The key, not the backend: neutral for the breaker, the caller's error.
            breaker._release(generation, error, self._policy)
            raise error from None
        return self._faults.hot_read_raised(breaker, generation, exc)

    # --- sync -------------------------------------------------------------------------------

    def _fetch(self, key: str) -> Any:
        """The raw bytes under ``key``, None (absent) or UNAVAILABLE; never raises for
        backend trouble."""
        breaker = self._breaker
        if (
            breaker is not None
            and breaker._state is CLOSED
            and type(key) is str
            and not self._pending.active
        ):
            # The hot path (a guarded backend, closed, nothing to replay): the breaker's
            # two decision points called directly. The same decisions as ``with
            # admission`` without an Admission object and the context-manager protocol,
            # which cost about 1 us a call next to a ~35 us loopback GET. A half-open
            # probe takes the guarded path below: it runs under its own I/O budget.
            generation = breaker._acquire()
            if generation is None:
                return self._get_skipped(key)
            try:
                raw = self._get_raw(self._prefix + key)
            except BaseException as exc:
                return self._hot_read_raised(breaker, generation, key, exc)
            breaker._release(generation, None, self._policy)
            return raw
        full = self._full_key(key)
        guard = self._begin(GET)
        if guard is None:
            return UNAVAILABLE
        try:
            with guard:
                return self._get_after_replay(full)
        except Exception as exc:
            self._failed(GET, exc)
            return UNAVAILABLE

    def _get_after_replay(self, full: str) -> Any:
        if self._pending.active and not self._replay() and self._pending.covers(full):
            # The replay is not through this key yet (later slices, or another
            # caller's in flight): the server may still hold a value this
            # process invalidated. Ask anyway (an honest probe), answer a miss.
            self._get_raw(full)
            return None
        return self._get_raw(full)

    def _write(
        self,
        op: str,
        undo: Sequence[Step],
        call: Callable[[], T],
        skipped: T,
        read: bool = False,
    ) -> T:
        """Run one backend call; ``undo`` holds the invalidations to remember if the call
        cannot reach the backend, ``skipped`` what the caller gets then. A ``read`` that
        finds another caller's replay in flight still asks (an honest probe, as in
        ``_fetch``) but answers ``skipped``: the server may hold a value about to go."""
        guard = self._begin(op)
        if guard is None:
            self._remember(undo)
            return skipped
        try:
            with guard:
                result = self._call_after_replay(call, read)
            if result is _READ_BEFORE_REPLAY:
                return skipped
        except Exception as exc:
            if not self._failed(op, exc):
                raise
            if not handed_to_backend(exc):
                self._remember(undo)
            return skipped
        except BaseException:
            self._interrupted(undo)
            raise
        self._stats.count(op, "ok")
        return result

    def _call_after_replay(self, call: Callable[[], T], read: bool) -> T | _Replay:
        """``call()`` once the missed invalidations are replayed; a ``read`` that finds
        the replay still in flight runs, but answers :data:`_READ_BEFORE_REPLAY`."""
        if self._pending.active and not self._replay() and read:
            call()
            return _READ_BEFORE_REPLAY
        return call()

    def _interrupted(self, undo: Sequence[Step]) -> None:
        """A write cancelled or interrupted mid-call (``asyncio.wait_for``, Ctrl-C):
        it may or may not have reached the server, so it is remembered and replayed
        like a failed one. The breaker saw it as neutral (neither success nor failure)."""
        self._remember(undo)

    def _store(self, key: str, data: bytes, ttl: float | timedelta | None, remember: bool) -> None:
        full, seconds, backend = self._full_key(key), self._ttl(ttl), self._backend
        undo = (Step(DELETE, full),) if remember else ()
        near = self._near
        if near is None:
            self._write(SET, undo, lambda: backend.set(full, data, seconds), None)
            return
        token = near.begin(full)
        result = self._write(SET, undo, lambda: backend.set(full, data, seconds), UNAVAILABLE)
        self._near_stored(full, token, data, seconds, result)

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` on a miss: absent, circuit open, or
        backend failing. A stored ``None`` is a value, as with ``dict.get``."""
        breaker = self._read_breaker
        # The state read first: a closed circuit pays two attribute reads for this.
        if breaker is not None and breaker._state is OPEN and self._skips_read_of(key):
            return default
        if self._get_entry is None and self._near is None:
            # A distributed backend without a near tier: _read's own choice, made here
            # (a frame less on the path of every remote read).
            return self._finish_get(self._fetch(key), self._serializer, False, default)
        return self._read(key, self._serializer, False, default)

    def set(self, key: str, value: Any, ttl: float | timedelta | None = None) -> None:
        """Store ``value`` for ``ttl`` (seconds or a ``timedelta``; ``default_ttl_seconds``
        when None).

        Raises :class:`SerializationError` (a ``TypeError``) for a value the serializer
        cannot store, whatever the circuit state. A set that cannot reach the backend is
        remembered as an invalidation of ``key``: a write-through update must not leave
        the old value to be read after recovery.
        """
        self._store(key, self._serializer.dumps(value), ttl, True)

    def delete(self, key: str) -> None:
        """Remove ``key``; remembered and replayed later if the backend is unreachable."""
        full, backend = self._full_key(key), self._backend
        near = self._near
        if near is not None:
            near.forget(full)
        self._write(DELETE_OP, (Step(DELETE, full),), lambda: backend.delete(full), None)
        if near is not None:
            near.forget(full)  # a read that raced the delete may have filled the old value

    def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching the glob ``pattern`` (under ``key_prefix``); returns
        how many were removed (0 while open or failing: then remembered for replay)."""
        full, backend = self._full_pattern(pattern), self._backend
        undo = (Step(DELETE_PATTERN, full),)
        near = self._near
        if near is not None:
            near.forget_pattern(full)
        deleted = self._write(DELETE_PATTERN_OP, undo, lambda: backend.delete_pattern(full), 0)
        if near is not None:
            near.forget_pattern(full)  # as in delete
        return deleted

    def read(self, key: str, serializer: Serializer, default: Any = None) -> Any:
        """:meth:`get` decoded by ``serializer``, ``default`` for a miss (absent, open,
        failing, unreadable): integrations with their own value format use this."""
        return self._read(key, serializer, False, default)

    def command(
        self,
        op: str,
        call: Callable[[], T],
        *,
        skipped: T,
        undo: Sequence[Step] = (),
        changes: Sequence[str] = (),
        read: bool = False,
    ) -> T:
        """Run ``call``, a backend command beyond the contract (one of
        :data:`~tasker_resilience._cache.outcomes.COMMANDS`, on full keys), as every
        operation runs: admitted by the ``cache`` breaker after the missed invalidations
        are replayed, a backend failure swallowed and counted. While open or failing the
        caller gets ``skipped`` and the ``undo`` invalidations are remembered for replay;
        a caller mistake (e.g. a wrong-type reply) raises. ``changes``: the full keys
        whose values the command may change, dropped from the near tier as ``delete``
        does. ``read=True`` marks a command that reads values (see ``_write``)."""
        self._forget_near(changes)
        try:
            return self._write(op, undo, call, skipped, read)
        finally:
            self._forget_near(changes)  # a read that raced the command may have filled

    def _forget_near(self, keys: Sequence[str]) -> None:
        near = self._near
        if near is not None:
            for full in keys:
                near.forget(full)

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
        self._stats.count(HEALTH, "ok" if healthy else "error")
        return healthy

    def probe_health(self) -> bool:
        """What the health report says about the backend; never moves the breaker.

        Disabled: True (off on purpose). Circuit open or half-open: False with no I/O
        (the breaker's own probes test a recovering server; a health request adds no
        load). Closed: the backend's health check, run at most once per
        ``health_probe_interval_seconds`` outside the breaker, its answer reused in
        between (see :mod:`~tasker_resilience._cache.probe`)."""
        if not self._enabled:
            return True
        breaker = self._breaker
        if breaker is not None and breaker.state != CLOSED:
            self._stats.count(HEALTH, "skipped_open")
            return False
        return self._probe.result()

    def _probe_backend(self) -> bool:
        try:
            healthy = bool(self._backend.health_check())
        except Exception as exc:
            self._failed(HEALTH, exc)  # counted and logged (rate-limited), never raised
            return False
        self._stats.count(HEALTH, "ok" if healthy else "error")
        return healthy

    def close(self) -> None:
        """Release the backend's connections (and stop the near tier's listener)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._backend.close()

    # --- asyncio: the same decisions, awaiting the backend --------------------------------

    async def _afetch(self, key: str) -> Any:
        breaker = self._breaker
        if (
            breaker is not None
            and breaker._state is CLOSED
            and type(key) is str
            and not self._pending.active
        ):
            # The hot path, as in _fetch.
            generation = breaker._acquire()
            if generation is None:
                return self._get_skipped(key)
            try:
                raw = await self._aget_raw(self._prefix + key)
            except BaseException as exc:
                return self._hot_read_raised(breaker, generation, key, exc)
            breaker._release(generation, None, self._policy)
            return raw
        full = self._full_key(key)
        guard = self._begin(GET)
        if guard is None:
            return UNAVAILABLE
        try:
            with guard:
                return await within_budget(guard, self._aget_after_replay(full))
        except Exception as exc:
            self._failed(GET, exc)
            return UNAVAILABLE

    async def _aget_after_replay(self, full: str) -> Any:
        if self._pending.active and not await self._areplay() and self._pending.covers(full):
            await self._aget_raw(full)  # as in _fetch: a probe, answered as a miss
            return None
        return await self._aget_raw(full)

    async def _awrite(
        self,
        op: str,
        undo: Sequence[Step],
        call: Callable[[], Awaitable[T]],
        skipped: T,
        read: bool = False,
    ) -> T:
        guard = self._begin(op)
        if guard is None:
            self._remember(undo)
            return skipped
        try:
            with guard:
                result = await within_budget(guard, self._acall_after_replay(call, read))
            if result is _READ_BEFORE_REPLAY:
                return skipped
        except Exception as exc:
            if not self._failed(op, exc):
                raise
            if not handed_to_backend(exc):
                self._remember(undo)
            return skipped
        except BaseException:
            self._interrupted(undo)
            raise
        self._stats.count(op, "ok")
        return result

    async def _acall_after_replay(
        self, call: Callable[[], Awaitable[T]], read: bool
    ) -> T | _Replay:
        if self._pending.active and not await self._areplay() and read:
            await call()  # as in _write: a probe, answered as skipped
            return _READ_BEFORE_REPLAY
        return await call()

    async def _astore(
        self, key: str, data: bytes, ttl: float | timedelta | None, remember: bool
    ) -> None:
        full, seconds, backend = self._full_key(key), self._ttl(ttl), self._backend
        undo = (Step(DELETE, full),) if remember else ()
        near = self._near
        if near is None:
            await self._awrite(SET, undo, lambda: backend.aset(full, data, seconds), None)
            return
        token = near.begin(full)
        result = await self._awrite(
            SET, undo, lambda: backend.aset(full, data, seconds), UNAVAILABLE
        )
        self._near_stored(full, token, data, seconds, result)

    async def _aread(
        self, key: str, serializer: Serializer, enveloped: bool, miss: Any, shared: bool = False
    ) -> Any:
        if self._get_entry is not None:
            # In-process: nothing to await.
            return self._read(key, serializer, enveloped, miss, shared)
        near = self._near
        if near is not None:
            # As in _read: a near hit has nothing to await.
            full = self._prefix + key if type(key) is str else self._full_key(key)
            near_entry = near.fresh(full)
            if near_entry is not None:
                return self._read_entry(near_entry, serializer, enveloped, miss, shared)
            token = near.begin(full)
            raw = await self._afetch(key)
            return self._near_end(full, token, raw, serializer, enveloped, miss)
        return self._finish_get(await self._afetch(key), serializer, enveloped, miss)

    async def aget(self, key: str, default: Any = None) -> Any:
        """Async :meth:`get`."""
        breaker = self._read_breaker
        if breaker is not None and breaker._state is OPEN and self._skips_read_of(key):
            return default
        if self._get_entry is None and self._near is None:  # as in get
            return self._finish_get(await self._afetch(key), self._serializer, False, default)
        return await self._aread(key, self._serializer, False, default)

    async def aset(self, key: str, value: Any, ttl: float | timedelta | None = None) -> None:
        """Async :meth:`set`."""
        await self._astore(key, self._serializer.dumps(value), ttl, True)

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""
        full, backend = self._full_key(key), self._backend
        near = self._near
        if near is not None:
            near.forget(full)
        await self._awrite(DELETE_OP, (Step(DELETE, full),), lambda: backend.adelete(full), None)
        if near is not None:
            near.forget(full)  # as in delete

    async def adelete_pattern(self, pattern: str) -> int:
        """Async :meth:`delete_pattern`."""
        full, backend = self._full_pattern(pattern), self._backend
        undo = (Step(DELETE_PATTERN, full),)
        near = self._near
        if near is not None:
            near.forget_pattern(full)
        deleted = await self._awrite(
            DELETE_PATTERN_OP, undo, lambda: backend.adelete_pattern(full), 0
        )
        if near is not None:
            near.forget_pattern(full)  # as in delete
        return deleted

    async def aread(self, key: str, serializer: Serializer, default: Any = None) -> Any:
        """Async :meth:`read`."""
        return await self._aread(key, serializer, False, default)

    async def acommand(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        *,
        skipped: T,
        undo: Sequence[Step] = (),
        changes: Sequence[str] = (),
        read: bool = False,
    ) -> T:
        """Async :meth:`command`."""
        self._forget_near(changes)
        try:
            return await self._awrite(op, undo, call, skipped, read)
        finally:
            self._forget_near(changes)

    async def ahealth_check(self) -> bool:
        """Async :meth:`health_check`."""
        guard = self._begin(HEALTH)
        if guard is None:
            return False
        try:
            with guard:
                healthy = bool(await within_budget(guard, self._backend.ahealth_check()))
        except Exception as exc:
            self._failed(HEALTH, exc)
            return False
        self._stats.count(HEALTH, "ok" if healthy else "error")
        return healthy

    async def aclose(self) -> None:
        """Release the backend's connections held by the running event loop."""
        await self._backend.aclose()

    def __repr__(self) -> str:
        return (
            f"<CacheProvider backend={self._backend_name!r} enabled={self._enabled} "
            f"circuit={self.circuit_state}>"
        )

"""The near cache: an in-process tier in front of a distributed backend.

Opt-in (``[common.cache.near] enabled = true``). It holds the bytes the backend returned
(or this process wrote) under the full key, least recently used evicted first, and
answers a read without a round trip while the entry is *fresh*:

- with server-assisted invalidation in force (``tracking``), an entry is fresh until
  the server says its key changed (or this process's own TTL for it runs out);
- without it, for ``ttl_seconds`` after it was filled.

Trust is kept in *generations*. Every entry carries the generation it was filled in;
only entries of the current generation, while the tier is trusted, are fresh. The
generation ends whenever an invalidation may have been missed: the backend stopped
answering, the backend answered again after an outage, or the invalidation channel
dropped or came back. Ending a generation keeps its entries (they are the stale
values an outage may serve) but never serves them as fresh again: the next read
goes to the backend. While the backend is unavailable (circuit open or a failing
call) an entry is served up to ``stale_if_error_seconds`` past the end of its
freshness, and each such answer counts as ``stale_served``.

A fill races with invalidations: the backend may answer with a value another client
changes a moment later, and that invalidation may arrive before the answer. Each fill
therefore starts with :meth:`NearTier.begin` (a token per key); an invalidation of
the key, or the end of the generation, voids the token and the fill stores nothing.

No lock is held across a network call: the provider calls ``begin`` before and
``fill`` after the backend call. Callers never share a mutable result: entries are
:class:`~tasker_resilience._cache.backends.memory_backend.MemoryEntry` objects
decoded by the same :class:`~tasker_resilience._cache.reads.ReadDecoder` as the
memory backend (a fresh object per hit).
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from tasker_resilience._breakers.breaker import counter_value
from tasker_resilience._cache.backends.globs import PatternMatcher
from tasker_resilience._cache.backends.memory_backend import MemoryEntry
from tasker_resilience._forks import after_fork_in_child

if TYPE_CHECKING:
    from tasker_resilience._config.schema import NearConfig

__all__ = ["PENDING", "TRACKING", "TTL", "NearEntry", "NearTier", "timed_reads"]

TRACKING: Final = "tracking"
"""Entries are fresh until the server pushes an invalidation."""
TTL: Final = "ttl"
"""No invalidations from the server: entries are fresh for ``ttl_seconds``."""
PENDING: Final = "pending"
"""Waiting to learn whether the server can track (never fresh meanwhile)."""

_UNTRUSTED: Final = -1
"""The fresh generation while the tier is not trusted: no entry is ever filled in it."""
_KEPT_GENERATIONS: Final = 1024
"""End times remembered per generation (a generation ends only when trust changes:
an outage starts or ends, the channel drops or returns); entries of older ones are
no longer served stale."""
_ENTRY_OVERHEAD: Final = 200
"""Bytes counted per entry on top of its value and image (key, entry object, LRU links)."""


class NearEntry(MemoryEntry):
    """An entry of the near tier: a memory entry plus when and in which generation it
    was filled, and until when it is fresh."""

    __slots__ = ("fresh_until", "generation")

    def __init__(self, value: bytes, expires: float, generation: int, fresh_until: float) -> None:
        super().__init__(value, expires)
        self.generation: Final = generation
        self.fresh_until: Final = fresh_until


class _Fill:
    """A read (or write) in flight for one key; void once its key is invalidated."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class NearTier:
    """Bounded in-process entries with generation-based trust (see the module docstring)."""

    def __init__(self, config: NearConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.max_entries = config.max_entries
        self._ttl = config.ttl_seconds
        self._stale_for = config.stale_if_error_seconds
        self._clock = clock
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self._fills: dict[str, _Fill] = {}
        self._lock = threading.Lock()
        after_fork_in_child(self, NearTier.after_fork)
        self._generation = 0
        self._ended: dict[int, float] = {}
        self._degraded = False
        self._trusted = False
        self._fresh_generation = _UNTRUSTED
        self._fresh_for = math.inf
        self.mode = PENDING
        self.tracking_connected = False
        self._hits = itertools.count()
        self._misses = itertools.count()
        self._stale = itertools.count()
        self._invalidated = itertools.count()
        self._flushes = itertools.count()
        self._evicted = itertools.count()

    # --- modes and trust ------------------------------------------------------------------

    def use_ttl(self) -> None:
        """No server-assisted invalidation: fresh for ``ttl_seconds`` from each fill."""
        self._trust(TTL, self._ttl, trusted=True, connected=False)

    def tracking_up(self) -> None:
        """The invalidation channel is (back) in place: trust entries filled from now on."""
        self._trust(TRACKING, math.inf, trusted=True, connected=True)

    def tracking_down(self) -> None:
        """The invalidation channel dropped: nothing is fresh until it is back."""
        if not self._trusted and not self.tracking_connected:
            # Already distrusted (the listener retries while the server is away): ending
            # a generation per attempt would only age the entries an outage may serve.
            return
        self._trust(self.mode, self._fresh_for, trusted=False, connected=False)

    def _trust(self, mode: str, fresh_for: float, *, trusted: bool, connected: bool) -> None:
        # Every change of trust ends the generation: what was filled before is never
        # fresh again (see the module docstring).
        with self._lock:
            self.mode = mode
            self._fresh_for = fresh_for
            self._trusted = trusted
            self.tracking_connected = connected
            self._end_generation()

    def after_fork(self) -> None:
        """In a forked child: the parent's channel is not this process's, and a lock
        another thread held at the fork would never be released here (run by
        ``tasker_resilience._forks`` in every child; the listener restarts the channel)."""
        self._lock = threading.Lock()
        self._fills = {}
        if self.mode == TRACKING or self.tracking_connected:
            self.tracking_down()

    def unavailable(self) -> None:
        """The backend did not answer: invalidations may be missed from now on."""
        if not self._degraded:
            with self._lock:
                if not self._degraded:
                    self._degraded = True
                    self._end_generation()

    @property
    def degraded(self) -> bool:
        """True while the backend is unavailable: what the tier answers then is stale."""
        return self._degraded

    def available(self) -> None:
        """The backend answered: after an outage, what the tier holds is no longer fresh."""
        if self._degraded:
            with self._lock:
                if self._degraded:
                    self._degraded = False
                    self._end_generation()

    def _end_generation(self) -> None:
        # Under self._lock.
        ended = self._generation
        self._ended[ended] = self._clock()
        self._ended.pop(ended - _KEPT_GENERATIONS, None)
        self._generation = ended + 1
        self._fresh_generation = self._generation if self._trusted else _UNTRUSTED
        self._fills.clear()
        next(self._flushes)

    # --- reads ----------------------------------------------------------------------------

    def fresh(self, key: str) -> NearEntry | None:
        """The fresh entry under ``key`` (marked most recently used), or None."""
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.generation == self._fresh_generation
            and entry.fresh_until > self._clock()
        ):
            # A plain try: contextlib.suppress would cost a context manager per hit.
            try:  # noqa: SIM105
                self._entries.move_to_end(key)
            except KeyError:  # invalidated by another thread a moment ago: still a fair answer
                pass
            next(self._hits)
            return entry
        next(self._misses)
        return None

    def stale(self, key: str) -> NearEntry | None:
        """The entry to answer with while the backend is unavailable, if it is no more
        than ``stale_if_error_seconds`` past its freshness; counted as ``stale_served``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        fresh_until = entry.fresh_until
        if entry.generation != self._generation:
            fresh_until = min(fresh_until, self._ended.get(entry.generation, -math.inf))
        if self._clock() > fresh_until + self._stale_for:
            return None
        next(self._stale)
        return entry

    # --- fills and local writes -------------------------------------------------------------

    def begin(self, key: str) -> _Fill:
        """Start a backend read or write of ``key``; pass the token to :meth:`fill`."""
        token = _Fill(self._generation)
        fills = self._fills
        if len(fills) > self.max_entries:
            # Tokens of calls that never came back (cancelled, or a caller mistake
            # raised): voiding every fill in flight keeps the dict bounded and is safe.
            fills.clear()
        fills[key] = token
        return token

    def fill(self, key: str, token: _Fill, raw: bytes | None, ttl: float | None = None) -> None:
        """Store what the backend holds under ``key`` (None: nothing), unless ``key``
        was invalidated or the generation ended since :meth:`begin`."""
        with self._lock:
            if self._fills.get(key) is not token:
                return
            del self._fills[key]
            if token.generation != self._generation:
                return
            if raw is None:
                self._entries.pop(key, None)
                return
            self._put(key, raw, ttl)

    def fill_read(self, key: str, token: _Fill, fetched: Any) -> Any:
        """:meth:`fill` with what a read returned: ``(bytes, seconds left)`` from
        :func:`timed_reads`, or bare bytes / None from a backend that cannot say.
        Returns the bytes (or None)."""
        raw, ttl = fetched if type(fetched) is tuple else (fetched, None)
        self.fill(key, token, raw, ttl)
        return raw

    def put_local(self, key: str, raw: bytes, ttl: float | None) -> None:
        """This process wrote ``key`` but the backend did not take it (circuit open or
        failing): keep it, so this process reads its own write during the outage."""
        with self._lock:
            self._fills.pop(key, None)
            self._put(key, raw, ttl)

    def _put(self, key: str, raw: bytes, ttl: float | None) -> None:
        # Under self._lock.
        now = self._clock()
        expires = math.inf if ttl is None else now + ttl
        entry = NearEntry(raw, expires, self._generation, min(expires, now + self._fresh_for))
        entries = self._entries
        entries[key] = entry
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            next(self._evicted)

    # --- invalidation -------------------------------------------------------------------------

    def forget(self, key: str) -> None:
        """This process changed or deleted ``key``: drop it and void fills in flight."""
        with self._lock:
            self._entries.pop(key, None)
            self._fills.pop(key, None)

    def forget_pattern(self, pattern: str) -> None:
        """This process deleted keys matching the glob ``pattern`` (as the server
        matches it; where the server's reading of a range may differ by build, both
        readings are dropped: dropping one entry too many only costs a read)."""
        match = PatternMatcher(pattern, either_sign=True).fullmatch
        with self._lock:
            for key in [key for key in self._entries if match(key)]:
                del self._entries[key]
            self._fills.clear()

    def invalidate(self, keys: Iterable[str] | None) -> None:
        """The server says these keys changed (None: everything, e.g. ``FLUSHDB``)."""
        with self._lock:
            if keys is None:
                self._entries.clear()
                self._end_generation()
                return
            for key in keys:
                self._entries.pop(key, None)
                self._fills.pop(key, None)
                next(self._invalidated)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._fills.clear()

    # --- reporting ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def memory_bytes(self) -> int:
        """An estimate of the memory held: values, decoded images, keys and overhead."""
        with self._lock:
            items = list(self._entries.items())
        return sum(
            len(entry.value) + len(entry.copy or b"") + sys.getsizeof(key) + _ENTRY_OVERHEAD
            for key, entry in items
        )

    def snapshot(self) -> dict[str, int]:
        """``hit``/``miss`` (fresh lookups), ``stale_served``, ``invalidated`` (keys the
        server pushed), ``generations_ended``, ``evicted`` (LRU), ``entries``, ``bytes``."""
        return {
            "hit": counter_value(self._hits),
            "miss": counter_value(self._misses),
            "stale_served": counter_value(self._stale),
            "invalidated": counter_value(self._invalidated),
            "generations_ended": counter_value(self._flushes),
            "evicted": counter_value(self._evicted),
            "entries": len(self._entries),
            "max_entries": self.max_entries,
            "bytes": self.memory_bytes(),
        }

    def __repr__(self) -> str:
        return f"<NearTier mode={self.mode} entries={len(self)}/{self.max_entries}>"


def timed_reads(backend: object) -> tuple[Callable[[str], Any], Callable[[str], Awaitable[Any]]]:
    """The reads a provider with a near tier sends: the backend's ``get_with_ttl`` /
    ``aget_with_ttl`` (the value and its remaining TTL in one round trip) when it has
    them, else ``get`` / ``aget``.

    The server reports an expired key only when it deletes it: lazily, when the key is
    next touched, or when its sampling sweep gets to it, which with many keys holding
    TTLs may be many minutes after the TTL ran out. Tracking therefore says nothing
    about expiry in time, and an entry is bounded by the TTL read with it instead."""
    get: Any = getattr(backend, "get", None)
    aget: Any = getattr(backend, "aget", None)
    timed = getattr(backend, "get_with_ttl", None)
    atimed = getattr(backend, "aget_with_ttl", None)
    if callable(timed) and callable(atimed):
        return timed, atimed
    return get, aget

"""In-process backends: ``memory`` (a bounded TTL cache) and ``noop`` (stores nothing).

Neither does I/O nor can it be "down", so the provider puts no breaker in front of
them (``distributed = False``), and their async twins (``InProcessAsyncMixin``) simply
call the sync methods.

``memory`` is an ``OrderedDict`` in least-recently-used order (the capacity bound
and LRU eviction) of :class:`MemoryEntry`, each carrying its own expiry, plus a heap
of expiry times, behind one lock: a hit is one lookup, one ``move_to_end`` and one
clock read, all in C. (cachetools' ``TLRUCache``, then its ``LRUCache``, did the same
in four Python-level calls per hit: the largest part of a ``@cached`` hit.)
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from tasker_resilience._cache.backends.contract import InProcessAsyncMixin
from tasker_resilience._cache.backends.globs import glob_to_regex
from tasker_resilience._forks import new_lock_after_fork

if TYPE_CHECKING:
    from tasker_resilience._config.schema import CacheConfig

__all__ = ["UNSET", "MemoryBackend", "MemoryEntry", "NoopBackend", "glob_to_regex"]


_NEVER: Final = math.inf  # a global read on the hit path, not math's attribute


UNSET: Final[Any] = object()


class MemoryEntry:
    """One stored value. ``value`` and ``expires`` never change (a set makes a new
    entry); ``copy``, ``copier``, ``element_copier`` and ``shared`` are free for the
    provider to attach a faster-to-rebuild form of the decoded value, functions copying
    it (and its one element, for a ``@cached`` envelope) and the decoded value itself
    (see ``tasker_resilience._cache.reads``), valid for exactly this ``value``."""

    __slots__ = ("copier", "copy", "element_copier", "expires", "shared", "value")

    def __init__(self, value: bytes, expires: float) -> None:
        self.value: Final = value
        self.expires: Final = expires  # monotonic time; inf = never
        self.copy: bytes | None = None
        self.copier: Callable[[Any], Any] | None = None
        self.element_copier: Callable[[Any], Any] | None = None
        self.shared: Any = UNSET


class MemoryBackend(InProcessAsyncMixin):
    """A thread-safe, size-bounded cache honouring per-entry TTLs: when full, expired
    entries go first, then the least recently used. Data lives in this process only."""

    distributed: bool = False

    def __init__(
        self,
        max_capacity: int = 10_000,
        *,
        name: str = "memory",
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_capacity < 1:
            raise ValueError(f"max_capacity must be at least 1, not {max_capacity}")
        self.name = name
        self.max_capacity: Final = max_capacity
        self._timer = timer
        # Least recently used first.
        self._data: OrderedDict[str, MemoryEntry] = OrderedDict()
        # (expires, key) of every entry with a TTL, soonest first. Overwritten and
        # deleted entries leave stale items behind: _purge checks the live entry, and
        # _compact rebuilds the heap when stale items outnumber live ones.
        self._expiries: list[tuple[float, str]] = []
        # Every access (even a get, which reorders the LRU order) takes this lock;
        # nothing slow runs under it.
        self._lock = threading.Lock()
        new_lock_after_fork(self)

    @classmethod
    def from_config(cls, config: CacheConfig) -> MemoryBackend:
        return cls(config.memory.max_capacity, name=config.backend)

    # --- under the lock ---------------------------------------------------------------------

    def _purge(self, now: float) -> None:
        """Drop every entry expired at ``now``."""
        expiries, data = self._expiries, self._data
        while expiries and expiries[0][0] <= now:
            _, key = heapq.heappop(expiries)
            # A plain lookup: a purge must not reorder what it keeps.
            entry = data.get(key)
            # A stale item (the key was overwritten or deleted) must not drop a live entry.
            if entry is not None and entry.expires <= now:
                del data[key]

    def _compact(self) -> None:
        data = self._data
        entries = data.items()  # no reordering
        self._expiries = [
            (entry.expires, key) for key, entry in entries if entry.expires != math.inf
        ]
        heapq.heapify(self._expiries)

    # --- the backend protocol ---------------------------------------------------------------

    def get_entry(self, key: str) -> MemoryEntry | None:
        """The live entry under ``key`` (marked most recently used), or None."""
        data = self._data
        with self._lock:
            entry = data.get(key)
            if entry is None:
                return None
            expires = entry.expires
            if expires != _NEVER and expires <= self._timer():
                del data[key]
                return None
            data.move_to_end(key)  # most recently used
        return entry

    def get(self, key: str) -> bytes | None:
        entry = self.get_entry(key)
        return None if entry is None else entry.value

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        now = self._timer()
        entry = MemoryEntry(bytes(value), math.inf if ttl_seconds is None else now + ttl_seconds)
        with self._lock:
            self._put(key, entry, now)

    def _put(self, key: str, entry: MemoryEntry, now: float) -> None:
        # Under self._lock.
        data = self._data
        if len(data) >= self.max_capacity and key not in data:
            # Full: expired entries go first, then the least recently used live
            # entry if there is still no room.
            self._purge(now)
            if len(data) >= self.max_capacity:
                data.popitem(last=False)
        data[key] = entry
        data.move_to_end(key)
        if entry.expires != math.inf:
            heapq.heappush(self._expiries, (entry.expires, key))
            if len(self._expiries) > 2 * len(data) + 64:
                self._compact()

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    # --- leases (LeaseBackend): atomic under the one lock ---------------------------------

    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        """Store ``value`` only if ``key`` holds no live entry; True when stored."""
        now = self._timer()
        entry = MemoryEntry(bytes(value), math.inf if ttl_seconds is None else now + ttl_seconds)
        with self._lock:
            current = self._data.get(key)
            if current is not None and (current.expires == _NEVER or current.expires > now):
                return False
            self._put(key, entry, now)
        return True

    def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it holds ``value``; True when deleted."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry.value != value:
                return False
            del self._data[key]
            return True

    async def aadd(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        return self.add(key, value, ttl_seconds)

    async def adelete_if_equal(self, key: str, value: bytes) -> bool:
        return self.delete_if_equal(key, value)

    def delete_pattern(self, pattern: str) -> int:
        matcher = glob_to_regex(pattern).fullmatch
        with self._lock:
            self._purge(self._timer())  # expired entries are not there to delete or count
            doomed = [key for key in self._data if matcher(key)]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._data.clear()
            self._expiries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._timer())
            return len(self._data)

    def is_backend_failure(self, exc: BaseException) -> bool:
        return False  # nothing here can be "down"; any exception is a bug to see

    def __repr__(self) -> str:
        return f"<MemoryBackend {self.name!r} max_capacity={self.max_capacity}>"


class NoopBackend(InProcessAsyncMixin):
    """Stores nothing: every get is a miss. For ``backend = "noop"`` and a disabled cache."""

    distributed: bool = False

    def __init__(self, *, name: str = "noop") -> None:
        self.name = name

    @classmethod
    def from_config(cls, config: CacheConfig) -> NoopBackend:
        return cls(name=config.backend)

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def delete_pattern(self, pattern: str) -> int:
        return 0

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def is_backend_failure(self, exc: BaseException) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<NoopBackend {self.name!r}>"

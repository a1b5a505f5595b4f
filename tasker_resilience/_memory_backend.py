"""In-process backends: ``memory`` (a bounded TTL cache) and ``noop`` (stores nothing).

Neither does I/O nor can it be "down", so the provider puts no breaker in front of
them (``distributed = False``), and their async twins simply call the sync methods.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from cachetools import TLRUCache

if TYPE_CHECKING:
    from ._config import CacheConfig

__all__ = ["MemoryBackend", "NoopBackend", "glob_to_regex"]

_Entry = tuple[bytes, float]  # (value, monotonic expiry time; inf = never)


def _class(pattern: str, start: int) -> tuple[str, int] | None:
    """Translate the ``[...]`` class opening at ``start``; None if it never closes."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    items: list[str] = []
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            items.append(re.escape(pattern[i + 1]))
            i += 2
        elif i + 2 < n and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = sorted((pattern[i], pattern[i + 2]))  # Redis accepts [z-a]
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(pattern[i]))
            i += 1
    if i >= n:
        return None
    if not items:
        return ("." if negate else "(?!)"), i + 1
    return f"[{'^' if negate else ''}{''.join(items)}]", i + 1


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex that matches whole keys the way Redis ``SCAN MATCH`` does:
    ``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]`` and ``\\`` escapes."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and (translated := _class(pattern, i)) is not None:
            out.append(translated[0])
            i = translated[1]
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _expiry(_key: str, entry: _Entry, _now: float) -> float:
    return entry[1]


class MemoryBackend:
    """A thread-safe, size-bounded (least recently used first) cache honouring
    per-entry TTLs. Data lives in this process only."""

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
        self._data: TLRUCache[str, _Entry] = TLRUCache(max_capacity, _expiry, timer)
        # cachetools caches are not thread-safe; every access (even a get, which
        # reorders the LRU list) takes this lock. Nothing slow runs under it.
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: CacheConfig) -> MemoryBackend:
        return cls(config.memory.max_capacity, name=config.backend)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get(key)
        return None if entry is None else entry[0]

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        expires = math.inf if ttl_seconds is None else self._timer() + ttl_seconds
        with self._lock:
            self._data[key] = (bytes(value), expires)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def delete_pattern(self, pattern: str) -> int:
        matcher = glob_to_regex(pattern).fullmatch
        with self._lock:
            self._data.expire()  # expired entries are not there to delete or count
            doomed = [key for key in self._data if matcher(key)]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)

    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aset(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self.set(key, value, ttl_seconds)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def adelete_pattern(self, pattern: str) -> int:
        return self.delete_pattern(pattern)

    async def ahealth_check(self) -> bool:
        return True

    async def aclose(self) -> None:
        self.close()

    def is_backend_failure(self, exc: BaseException) -> bool:
        return False  # nothing here can be "down"; any exception is a bug to see

    def __repr__(self) -> str:
        return f"<MemoryBackend {self.name!r} max_capacity={self.max_capacity}>"


class NoopBackend:
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

    async def aget(self, key: str) -> bytes | None:
        return None

    async def aset(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        return None

    async def adelete(self, key: str) -> None:
        return None

    async def adelete_pattern(self, pattern: str) -> int:
        return 0

    async def ahealth_check(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    def is_backend_failure(self, exc: BaseException) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<NoopBackend {self.name!r}>"

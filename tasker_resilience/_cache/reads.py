"""Turning what a backend returned into the caller's value, or a miss.

``enveloped`` values are one-item lists: ``@cached`` stores ``[result]`` so a cached
``None`` is a hit. Foreign or corrupt data is a miss (the caller recomputes and
overwrites), never an exception and never a breaker failure.

The copy policy of the in-process ``memory`` backend (JSON values):

- **default, a copy per hit**: after the first hit of an entry the decoded value is
  kept next to it as a ``marshal`` image, and every hit rebuilds a fresh object from
  it (about half the cost of ``json`` decoding). Callers get their own copy, equal to
  what the JSON decoder returns, so a caller mutating a result never changes what the
  next hit sees, as with redis. The copy costs what the value's object count costs
  (a 6 KB list of 50 records: ~10-20 us); a value nothing can mutate (a str, a number,
  bytes, None) is not copied: every hit shares the one decoded object;
- **shared** (``@cached(shared=True)``): every hit hands out the one decoded object,
  as cachetools and dogpile.cache do. For callers that never mutate results; a
  mutation is then seen by every later hit of that entry in this process.
"""

from __future__ import annotations

import contextlib
import marshal
from typing import Any, Final

from tasker_resilience._cache.backends.memory_backend import UNSET, MemoryEntry
from tasker_resilience._cache.faults import UNAVAILABLE, RateLimitedWarnings
from tasker_resilience._cache.outcomes import GET, CacheStats
from tasker_resilience._cache.serializers import JsonSerializer, SerializationError, Serializer

__all__ = ["ReadDecoder"]


class ReadDecoder:
    """Decodes fetched bytes and memory entries; counts hits, misses and unreadable entries."""

    def __init__(self, stats: CacheStats, warnings: RateLimitedWarnings) -> None:
        # Bound once: the hit path pays one attribute read per count.
        self._hit_count = stats.counter(GET, "hit")
        self._miss_count = stats.counter(GET, "miss")
        self._error_count = stats.counter(GET, "error")
        self._warnings = warnings

    def finish(self, raw: Any, serializer: Serializer, enveloped: bool, miss: Any) -> Any:
        """Decode what a fetch returned; ``miss`` when there is no usable value.

        A ``@cached`` read (``enveloped``) gets ``UNAVAILABLE`` itself when the backend
        was skipped or failed: then it calls the function without storing the result,
        so one call during an outage waits at most once (its read), never twice."""
        if raw is None:
            next(self._miss_count)
            return miss
        if raw is UNAVAILABLE:
            return raw if enveloped else miss
        try:
            value = serializer.loads(raw)
        except Exception as exc:
            # SerializationError from ours; anything at all from a user's serializer
            # fed foreign bytes. An entry that cannot be read is a miss: the caller
            # recomputes and overwrites it.
            return self.unreadable(exc, miss)
        return self.hit(value, enveloped, miss)

    def hit(self, value: Any, enveloped: bool, miss: Any) -> Any:
        """Count and return a decoded value (unwrapped from its ``@cached`` envelope)."""
        if enveloped:
            if type(value) is not list or len(value) != 1:
                return self.unreadable(
                    SerializationError("stored value is not a @cached entry"), miss
                )
            value = value[0]
        next(self._hit_count)
        return value

    def unreadable(self, exc: Exception, miss: Any) -> Any:
        next(self._error_count)
        # Rate-limited: a poisoned hot key would otherwise log on every read.
        self._warnings.warn(
            "cache entry unreadable, treated as a miss: %s: %s",
            type(exc).__name__,
            str(exc)[:200],
        )
        return miss

    def entry(
        self,
        entry: MemoryEntry | None,
        serializer: Serializer,
        enveloped: bool,
        miss: Any,
        shared: bool = False,
    ) -> Any:
        """The value of a memory-backend entry (None: absent); see the module docstring
        for the copy policy. ``shared``: hand out the one decoded object."""
        if entry is None:
            next(self._miss_count)
            return miss
        image = entry.copy
        if image is not None and type(serializer) is JsonSerializer:
            if not image:  # IMMUTABLE: the decoded object serves every reader
                value = entry.shared
                if not enveloped and type(value) is list:
                    value = list(value)  # a plain get of an envelope: the list is mutable
            elif shared:
                value = entry.shared
                if value is UNSET:
                    entry.shared = value = marshal.loads(image)
            else:
                value = marshal.loads(image)
            if enveloped:
                if type(value) is not list or len(value) != 1:
                    return self.hit(value, enveloped, miss)  # counted and logged there
                value = value[0]
            next(self._hit_count)
            return value
        try:
            value = serializer.loads(entry.value)
        except Exception as exc:  # as in finish
            return self.unreadable(exc, miss)
        if type(serializer) is JsonSerializer:
            # Decoded JSON holds only dict, list, str, int, float, bool, None and bytes,
            # which marshal rebuilds exactly (order, -0.0, nan, big ints, lone
            # surrogates), as new objects on every load. Any JsonSerializer decodes
            # alike, so the image serves them all; never other serializers.
            if _immutable(value):
                entry.shared = value
                entry.copy = IMMUTABLE
            else:
                with contextlib.suppress(ValueError):  # deeper than marshal nests: no image
                    entry.copy = marshal.dumps(value)
                if shared:
                    entry.shared = value
        return self.hit(value, enveloped, miss)


IMMUTABLE: Final = b""
"""``MemoryEntry.copy`` of a value nothing can mutate (no marshal image is empty)."""
_SCALARS: Final[frozenset[type]] = frozenset({str, int, float, bool, type(None), bytes})


def _immutable(value: Any) -> bool:
    """A scalar, or a ``@cached`` envelope of one (whose list ``entry`` copies)."""
    cls = type(value)
    if cls is list:
        return len(value) == 1 and type(value[0]) in _SCALARS
    return cls in _SCALARS

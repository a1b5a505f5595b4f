"""Turning what a backend returned into the caller's value, or a miss.

``enveloped`` values are one-item lists: ``@cached`` stores ``[result]`` so a cached
``None`` is a hit. Foreign or corrupt data is a miss (the caller recomputes and
overwrites), never an exception and never a breaker failure.

Reads from the in-process ``memory`` backend skip JSON decoding after the first hit
of an entry: the decoded value is kept next to the entry as a ``marshal`` image, and
every hit rebuilds a fresh object from it (about half the cost of ``json`` decoding).
Callers still get their own copy, equal to what the JSON decoder returns, so a
caller mutating a result never changes what the next hit sees, as with redis.
"""

from __future__ import annotations

import contextlib
import marshal
from typing import Any

from tasker_resilience._cache.backends.memory_backend import MemoryEntry
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
        """Decode what a fetch returned; ``miss`` when there is no usable value."""
        if raw is None:
            next(self._miss_count)
            return miss
        if raw is UNAVAILABLE:
            return miss
        try:
            value = serializer.loads(raw)
        except SerializationError as exc:
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

    def unreadable(self, exc: SerializationError, miss: Any) -> Any:
        next(self._error_count)
        self._warnings.warn("cache entry unreadable, treated as a miss: %s", exc)
        return miss

    def entry(
        self, entry: MemoryEntry | None, serializer: Serializer, enveloped: bool, miss: Any
    ) -> Any:
        """The value of a memory-backend entry (None: absent), from its image when it has one."""
        if entry is None:
            next(self._miss_count)
            return miss
        image = entry.copy
        if image is not None and type(serializer) is JsonSerializer:
            value = marshal.loads(image)
            if enveloped:
                if type(value) is not list or len(value) != 1:
                    return self.hit(value, enveloped, miss)  # counted and logged there
                value = value[0]
            next(self._hit_count)
            return value
        try:
            value = serializer.loads(entry.value)
        except SerializationError as exc:
            return self.unreadable(exc, miss)
        if type(serializer) is JsonSerializer:
            # Decoded JSON holds only dict, list, str, int, float, bool, None and bytes,
            # which marshal rebuilds exactly (order, -0.0, nan, big ints, lone
            # surrogates), as new objects on every load. Any JsonSerializer decodes
            # alike, so the image serves them all; never other serializers.
            with contextlib.suppress(ValueError):  # deeper than marshal nests: no image
                entry.copy = marshal.dumps(value)
        return self.hit(value, enveloped, miss)

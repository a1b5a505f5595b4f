"""Turning what a backend returned into the caller's value, or a miss.

``enveloped`` values are one-item lists: ``@cached`` stores ``[result]`` so a cached
``None`` is a hit. Foreign or corrupt data is a miss (the caller recomputes and
overwrites), never an exception and never a breaker failure.

The copy policy of the in-process ``memory`` backend (JSON values):

- **default, a copy per hit**: callers get their own copy, equal to what the JSON
  decoder returns, so a caller mutating a result never changes what the next hit
  sees, as with redis. The first hit of an entry decodes it and attaches the fastest
  way to copy it: a value nothing can mutate (a str, a number, bytes, None) is shared,
  not copied; a value whose dicts and lists a short plan can rebuild (at most
  ``PLAN_STEPS`` steps, where a list of same-shaped records is one step plus one
  record's) is kept decoded with a copier built for its exact shape, which copies its
  dicts and lists and shares their immutable contents; any other is kept as a
  ``marshal`` image of the decoded value, which every hit loads: marshal's C loop
  rebuilds fresh dicts and lists faster than decoding the JSON again, and faster than
  a long Python-level plan. The image is made here, by this process, from the
  value it has just decoded, and lives only in this process's memory: it is never read
  from the backend or from anywhere else. The copy costs what the value's object
  count costs (``make bench``: ``cached_hit_6kb_vs_dogpile``);
- **shared** (``@cached(shared=True)``): every hit hands out the one decoded object,
  as cachetools and dogpile.cache do. For callers that never mutate results; a
  mutation is then seen by every later hit of that entry in this process.
"""

from __future__ import annotations

import contextlib
import marshal
from collections.abc import Callable
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
        if not enveloped:  # a plain get: hit() inlined (one frame less per read)
            next(self._hit_count)
            return value
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
        if type(serializer) is JsonSerializer:
            if enveloped:
                element_copier = entry.element_copier
                if element_copier is not None:
                    # A @cached hit: only the result inside the envelope is copied.
                    value = entry.shared[0]
                    next(self._hit_count)
                    return value if shared else element_copier(value)
            copier = entry.copier
            if copier is not None:
                value = entry.shared if shared else copier(entry.shared)
            elif (image := entry.copy) is not None:
                if shared:
                    value = entry.shared
                    if value is UNSET:
                        # An image _first made in this process (see the module docstring).
                        entry.shared = value = marshal.loads(image)  # nosec B302 # own image
                else:
                    # Never untrusted input: _first made this image in this process.
                    value = marshal.loads(image)  # nosec B302 # this process's own image
            else:
                return self._first(entry, serializer, enveloped, miss, shared)
            if enveloped:
                if type(value) is not list or len(value) != 1:
                    return self.hit(value, enveloped, miss)  # counted and logged there
                value = value[0]
            next(self._hit_count)
            return value
        return self._first(entry, serializer, enveloped, miss, shared)

    def _first(
        self, entry: MemoryEntry, serializer: Serializer, enveloped: bool, miss: Any, shared: bool
    ) -> Any:
        """Decode an entry (its first read, or a serializer with no faster form)."""
        try:
            value = serializer.loads(entry.value)
        except SerializationError as exc:
            return self.unreadable(exc, miss)
        if type(serializer) is JsonSerializer:
            # Decoded JSON holds only dict, list, str, int, float, bool, None and bytes.
            # Any JsonSerializer decodes alike, so what is attached here serves them
            # all; never other serializers.
            copier = copier_of(value)
            if copier is not None:
                # Published after the value they copy: a reader checks copiers first.
                entry.shared = value
                if type(value) is list and len(value) == 1:  # a @cached envelope
                    entry.element_copier = copier_of(value[0])
                entry.copier = copier
                value = value if shared else copier(value)
            else:
                # marshal rebuilds decoded JSON exactly (order, -0.0, nan, big ints,
                # lone surrogates), as new objects on every load.
                with contextlib.suppress(ValueError):  # deeper than marshal nests: no image
                    entry.copy = marshal.dumps(value)
                if shared:
                    entry.shared = value
        return self.hit(value, enveloped, miss)


_LEAVES: Final[frozenset[type]] = frozenset({str, int, float, bool, type(None), bytes})
"""What decoded JSON holds that nothing can mutate: shared, never copied."""
PLAN_STEPS: Final = 8
"""Values whose copy plan has at most this many steps are copied by it; others by
marshal, whose C loop wins once there is much to rebuild one piece at a time. A step is
one container of the plan: a list whose items all have one shape (a page of records)
is one step plus its item's, however long it is."""

# A value's shape: what of it a copy must rebuild. None for a leaf; ("L",) a list of
# leaves; ("D", ((key, shape), ...)) a dict and its container values; ("R", shape) a
# list whose items (containers) all have that shape; ("M", ((index, shape), ...)) any
# other list. Built for the exact value of one entry, which never changes.
_Shape = Any
_LIST_OF_LEAVES: Final = ("L",)


def _same(value: Any) -> Any:
    return value


def copier_of(value: Any) -> Callable[[Any], Any] | None:
    """A function that copies ``value``'s dicts and lists, sharing its immutable leaves
    (``_same`` for a leaf itself), or None when its plan would take more than
    ``PLAN_STEPS`` steps. Built once per entry for the exact shape of its value."""
    try:
        shape = _shape(value)
    except (_NotJson, RecursionError):
        return None
    if shape is None:
        return _same
    if _steps(shape) > PLAN_STEPS:
        return None
    return _copier(shape)


class _NotJson(Exception):
    pass


def _shape(value: Any) -> _Shape:
    cls = type(value)
    if cls in _LEAVES:
        return None
    if cls is dict:
        return ("D", tuple((key, s) for key, item in value.items() if (s := _shape(item))))
    if cls is not list:
        raise _NotJson
    shapes = [_shape(item) for item in value]
    if not any(shapes):
        return _LIST_OF_LEAVES
    first = shapes[0]
    if first is not None and all(s == first for s in shapes):
        return ("R", first)
    return ("M", tuple((index, s) for index, s in enumerate(shapes) if s))


def _steps(shape: _Shape) -> int:
    kind = shape[0]
    if kind == "L":
        return 1
    if kind == "R":
        return 1 + _steps(shape[1])
    return 1 + sum(_steps(inner) for _, inner in shape[1])


def _copier(shape: _Shape) -> Callable[[Any], Any]:
    kind = shape[0]
    if kind == "L":
        return list.copy
    if kind == "R":
        return _records(shape[1])
    nested = tuple((slot, _copier(inner)) for slot, inner in shape[1])
    shallow: Callable[[Any], Any] = dict.copy if kind == "D" else list.copy
    if not nested:
        return shallow

    def copy(original: Any) -> Any:
        fresh = shallow(original)
        for slot, inner in nested:
            fresh[slot] = inner(fresh[slot])
        return fresh

    return copy


def _records(item: _Shape) -> Callable[[Any], Any]:
    """The copier of a list whose items all have the shape ``item``."""
    if item[0] != "D" or not item[1]:
        # Lists, or dicts of leaves only: one C-level call per item.
        each = _copier(item)

        def copy_each(original: Any) -> Any:
            return list(map(each, original))

        return copy_each
    # Dicts with containers inside (a page of records): the loop written out, with no
    # call per record besides its copy (about half marshal's time on a 6 KB page).
    nested = tuple((key, _copier(inner)) for key, inner in item[1])
    copy_dict = dict.copy

    def copy_records(original: Any) -> Any:
        fresh = list(map(copy_dict, original))
        for record in fresh:
            for key, inner in nested:
                record[key] = inner(record[key])
        return fresh

    return copy_records

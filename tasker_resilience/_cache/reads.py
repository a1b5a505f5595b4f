"""Turning what a backend returned into the caller's value, or a miss.

``enveloped`` values are one-item lists: ``@cached`` stores ``[result]`` so a cached
``None`` is a hit. Foreign or corrupt data is a miss (the caller recomputes and
overwrites), never an exception and never a breaker failure.

The copy policy of the in-process ``memory`` backend (JSON values):

- **default, a copy per hit**: callers get their own copy, equal to what the JSON
  decoder returns, so a caller mutating a result never changes what the next hit
  sees, as with redis. The first hit of an entry decodes it and attaches the fastest
  way to copy it: a value nothing can mutate (a str, a number, bytes, None) is shared,
  not copied; a small value (at most ``PLAN_CONTAINERS`` dicts and lists) is kept
  decoded with a copier built for its exact shape, which copies its dicts and lists
  and shares their immutable contents; a larger one is kept as a ``marshal`` image
  that every hit rebuilds (cheaper than decoding the JSON again). An entry
  rebuilt ``COMPILE_AFTER`` times is hot: it gets a builder compiled from its value
  (a ``lambda`` whose body is the value as a literal, see :func:`compiled_copier`),
  which rebuilds it faster than marshal, with the same fresh dicts and lists and
  shared immutable leaves (``make bench``'s ``large_copy_6kb`` times both, and the
  compile, paid once by the hit that crosses the threshold); values it cannot spell
  as a literal (nan, infinities, ints past ``sys.get_int_max_str_digits``, deep
  nesting) and values over ``COMPILE_MAX_BYTES`` stay with marshal. Either way the
  copy costs what the value's object count costs;
- **shared** (``@cached(shared=True)``): every hit hands out the one decoded object,
  as cachetools and dogpile.cache do. For callers that never mutate results; a
  mutation is then seen by every later hit of that entry in this process.
"""

from __future__ import annotations

import contextlib
import marshal
from collections.abc import Callable
from math import isfinite
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
                        entry.shared = value = marshal.loads(image)
                else:
                    value = marshal.loads(image)
                    entry.rebuilds = rebuilds = entry.rebuilds + 1
                    if rebuilds == COMPILE_AFTER:
                        _compile_hot(entry, image)
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
PLAN_CONTAINERS: Final = 8
"""Values with at most this many dicts and lists are copied by a per-entry plan; larger
ones by marshal, whose C loop wins once there is much to rebuild."""


COMPILE_AFTER: Final = 64
"""marshal rebuilds of an entry after which it gets a compiled builder: compiling
costs about as much as a hundred rebuilds save, so only hot entries get one."""
COMPILE_MAX_BYTES: Final = 64 * 1024
"""Entries whose stored form is larger stay with marshal (compile time and the code
object grow with the value)."""
_LITERAL_LEAVES: Final[frozenset[type]] = frozenset({str, int, bool, type(None), bytes})
"""Leaves whose ``repr`` is a literal that evaluates back to an equal value of the same
type (float is checked per value: ``nan`` and ``inf`` are names, not literals)."""
_NO_BUILTINS: Final[dict[str, Any]] = {"__builtins__": {}}


def _compile_hot(entry: MemoryEntry, image: bytes) -> None:
    """Attach compiled copiers to a hot marshal-copied entry (nothing when it cannot
    have one). Published as in ``_first``: the value, then the copiers."""
    if len(entry.value) > COMPILE_MAX_BYTES:
        return
    value = marshal.loads(image)
    copier = compiled_copier(value)
    if copier is None:
        return
    entry.shared = value
    if type(value) is list and len(value) == 1:  # a @cached envelope
        entry.element_copier = compiled_copier(value[0])
    entry.copier = copier


def compiled_copier(value: Any) -> Callable[[Any], Any] | None:
    """A function returning a fresh copy of ``value`` (decoded JSON) each call: the
    value's ``repr`` compiled as the body of a ``lambda``, so CPython's own bytecode
    builds new dicts and lists around shared constant leaves. None when ``value``
    holds anything whose ``repr`` is not such a literal, or cannot be compiled.

    Only exact dict (str keys), list, str, int, bool, None, bytes and finite float
    pass the check, and the compiled code must read no name at all, so nothing but
    literals is ever evaluated."""
    if not _literal(value):
        return None
    try:
        code = compile("lambda _: " + repr(value), "<cached value>", "eval")
        build = eval(code, _NO_BUILTINS)  # literals only: checked above and below
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None  # nested past the parser's limit, or an int too long to spell
    if code.co_names or build.__code__.co_names or build(None) != value:
        return None
    return build  # type: ignore[no-any-return]  # a lambda evaluated from checked source


def _literal(value: Any) -> bool:
    """True when ``value`` is built only of what :func:`compiled_copier` can spell."""
    pending = [value]
    while pending:
        item = pending.pop()
        cls = type(item)
        if cls in _LITERAL_LEAVES:
            continue
        if cls is float:
            if not isfinite(item):
                return False
        elif cls is list:
            pending.extend(item)
        elif cls is dict:
            if not all(type(key) is str for key in item):
                return False
            pending.extend(item.values())
        else:
            return False
    return True


class _TooLarge(Exception):
    pass


def _same(value: Any) -> Any:
    return value


def copier_of(value: Any) -> Callable[[Any], Any] | None:
    """A function that copies ``value``'s dicts and lists, sharing its immutable leaves
    (``_same`` for a leaf itself), or None when it has more than ``PLAN_CONTAINERS``
    containers. Built once per entry for the exact shape of its value."""
    if type(value) in _LEAVES:
        return _same
    try:
        return _plan(value, [PLAN_CONTAINERS])
    except _TooLarge:
        return None


def _plan(value: Any, budget: list[int]) -> Callable[[Any], Any] | None:
    """The copier of a container (None for a leaf: nothing to copy)."""
    cls = type(value)
    if cls in _LEAVES:
        return None
    budget[0] -= 1
    if budget[0] < 0 or (cls is not dict and cls is not list):
        raise _TooLarge
    slots = value.items() if cls is dict else enumerate(value)
    nested = tuple((slot, inner) for slot, item in slots if (inner := _plan(item, budget)))
    shallow: Callable[[Any], Any] = dict.copy if cls is dict else list.copy
    if not nested:
        return shallow

    def copy(original: Any) -> Any:
        fresh = shallow(original)
        for slot, inner in nested:
            fresh[slot] = inner(fresh[slot])
        return fresh

    return copy

"""``@cached``: memoise a function's results in the process-wide cache.

import tasker_resilience as tr

@tr.cached(ttl=60, namespace="templates")
def render(name: str, *, locale: str = "en") -> str: ...

render("home")              # computed, stored under tasker:templates:app.render:1:<digest>
render("home", locale="en") # the same key: arguments are bound to the signature
render.invalidate("home")   # delete that entry (replayed later if the cache is down)
render.original("home")     # the undecorated function

The decorator may run at import time, before ``configure()``: each call looks up the
process-wide :class:`~tasker_resilience.Resilience` (a global read) and uses its
cache. A cached ``None`` is a hit (entries are stored as ``[result]``). When the cache
is open, failing or disabled, the function is simply called. Concurrent calls that
miss the same key in one process compute it once (single-flight): the other threads
or tasks wait for that result.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from tasker_resilience import _resilience
from tasker_resilience._breakers.policy import ExceptionMatcher
from tasker_resilience._cache.faults import UNAVAILABLE
from tasker_resilience._cache.keys import KeyBuilder, escape_glob, function_id
from tasker_resilience._cache.limits import checked_ttl
from tasker_resilience._cache.origin import OriginGuard, OriginOptions, guarded_wrapper
from tasker_resilience._cache.provider import CacheProvider
from tasker_resilience._cache.serializers import Serializer, get_serializer
from tasker_resilience._cache.typed import JsonShapes, ReturnTypes
from tasker_resilience._config.schema import DEFAULT_CACHE, check_cache_name
from tasker_resilience._forks import after_fork_in_child
from tasker_resilience._resilience import current

__all__ = ["CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")

_MISS: Any = object()


class CachedFunction(Protocol[P, R_co]):
    """What ``@cached`` returns: the function, plus cache controls."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> CachedFunction[P, R_co]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Callable[..., R_co]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        """A method: ``obj.method(...)`` calls it bound (invalidate through the class:
        ``Cls.method.invalidate(obj, ...)``)."""
        ...

    @property
    def original(self) -> Callable[P, R_co]:
        """The undecorated function (bypasses the cache)."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Delete the entry of this call."""
        ...

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Async :meth:`invalidate`."""
        ...

    def invalidate_all(self) -> int:
        """Delete every entry of this function (this ``namespace`` and ``version``)."""
        ...

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The full key (with ``key_prefix``) this call is stored under."""
        ...


# --- single-flight ---------------------------------------------------------------------------


class _LeaderGone(Exception):
    """The computing call was cancelled or interrupted: a waiter computes instead."""


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _ThreadFlights:
    """One computation per key at a time across threads; the others wait for its result."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}
        # A forked child must not wait for a computation another thread of the parent
        # was running: nothing in the child would ever finish it.
        after_fork_in_child(self, _ThreadFlights._forget)

    def _forget(self) -> None:
        self._flights = {}

    def run(self, key: str, compute: Callable[[], T]) -> T:
        while True:
            flight = _Flight()
            # dict.setdefault is atomic under the GIL: exactly one caller leads.
            leader = self._flights.setdefault(key, flight)
            if leader is flight:
                break
            leader.done.wait()
            if isinstance(leader.error, Exception):
                raise leader.error
            if leader.error is None:
                return cast(T, leader.value)
            # The leader was interrupted (KeyboardInterrupt, SystemExit): try again.
        try:
            flight.value = value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            # pop: a function that forks returns in the child too, where the table
            # was reset (see _forget).
            self._flights.pop(key, None)
            flight.done.set()
        return value


class _TaskFlights:
    """One computation per key at a time across the tasks of each event loop."""

    def __init__(self) -> None:
        # (loop, key): futures belong to one loop; entries live only while in flight.
        self._flights: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[Any]] = {}
        after_fork_in_child(self, _TaskFlights._forget)  # as for threads

    def _forget(self) -> None:
        self._flights = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        while (leader := self._flights.get(slot)) is not None:
            try:
                # shield: a cancelled waiter must not cancel the shared computation.
                return cast(T, await asyncio.shield(leader))
            except _LeaderGone:
                continue
        future: asyncio.Future[Any] = loop.create_future()
        self._flights[slot] = future
        try:
            value = await compute()
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            # Cancelled: this task's caller gave up, the waiters did not.
            future.set_exception(_LeaderGone())
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._flights[slot]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" noise without waiters


# --- the decorator ----------------------------------------------------------------------------


def _guarded(
    guard: OriginGuard,
    returns: ReturnTypes | None,
    fixed_serializer: Serializer | None,
    key_of: Callable[[tuple[Any, ...], dict[str, Any]], str],
    cache_of: Callable[[], CacheProvider],
) -> Any:
    """The wrapper of a function with origin options (``lock``, ``early_refresh``,
    ``stale_if_error``): its decisions live in ``_cache/origin.py``."""
    func = guard.func
    rich = guard.rich

    def serializer_for(cache: CacheProvider) -> Serializer:
        serializer = fixed_serializer or cache._serializer
        return serializer if returns is None else returns.serializer(serializer, rich)

    flights = _TaskFlights() if inspect.iscoroutinefunction(func) else _ThreadFlights()
    return guarded_wrapper(
        guard,
        key_of=key_of,
        current_cache=cache_of,
        bypassed=_bypassed,
        serializer_for=serializer_for,
        flights=flights,
    )


def _current_cache() -> CacheProvider:
    """``current().cache``, read straight from the attributes while both exist: a
    ``@cached`` hit is a few microseconds, and the two calls were a noticeable part."""
    resilience = _resilience._current
    cache = None if resilience is None else resilience._cache
    return current().cache if cache is None else cache


def _named_cache(name: str) -> CacheProvider:
    """``current().get_cache(name)``, read straight from the map once it is built."""
    resilience = _resilience._current
    cache = None if resilience is None else resilience._caches.get(name)
    return current().get_cache(name) if cache is None else cache


def _cache_lookup(name: str) -> Callable[[], CacheProvider]:
    """How a decorated function finds its cache on each call. An unknown name raises
    now if the process is configured, else at the first call (by ``get_cache``)."""
    if name == DEFAULT_CACHE:
        return _current_cache
    check_cache_name("@cached cache", name)
    resilience = _resilience._current
    if resilience is not None and name not in resilience.cache_names():
        raise resilience.unknown_cache(name)
    return functools.partial(_named_cache, name)


def _bypassed(cache: CacheProvider) -> bool:
    """The cache is disabled, or its circuit is open with nothing to answer from: the
    function is simply called (the plain wrappers below inline this)."""
    return not cache._enabled or (cache._read_breaker is not None and cache._skips_reads())


def _checked_ttl(ttl: float | timedelta | None) -> float | None:
    return None if ttl is None else checked_ttl(ttl, "@cached ttl")


@overload
def cached(func: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    ttl: float | timedelta | None = None,
    *,
    namespace: str = "default",
    key: Callable[..., Any] | None = None,
    condition: Callable[[Any], bool] | None = None,
    version: str | int = "1",
    serializer: str | Serializer | None = None,
    shared: bool = False,
    cache: str = DEFAULT_CACHE,
    lock: bool | float | timedelta = False,
    early_refresh: bool | float = False,
    stale_if_error: float | timedelta | None = None,
    record: Iterable[ExceptionMatcher] | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...
def cached(
    ttl: float | timedelta | Callable[P, R] | None = None,
    *,
    namespace: str = "default",
    key: Callable[..., Any] | None = None,
    condition: Callable[[Any], bool] | None = None,
    version: str | int = "1",
    serializer: str | Serializer | None = None,
    shared: bool = False,
    cache: str = DEFAULT_CACHE,
    lock: bool | float | timedelta = False,
    early_refresh: bool | float = False,
    stale_if_error: float | timedelta | None = None,
    record: Iterable[ExceptionMatcher] | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]] | CachedFunction[P, R]:
    """Cache a function's results (plain or ``async def``) in ``res.cache``, or in the
    cache named ``cache`` (a ``[common.caches.<name>]``; an unknown name raises here if
    the process is configured, else at the first call, with a "did you mean").

    ``@cached`` alone, like ``functools.cache``, uses every default. ``ttl`` in
    seconds or a ``timedelta`` per entry (``default_ttl_seconds`` when None). The key is
    ``key_prefix:namespace:module.qualname:version:digest(args)``; ``key`` replaces
    the digest with ``key(*args, **kwargs)`` (a string is used as is, anything else
    is digested). ``condition(result)`` decides whether a result is stored (all are by
    default). Bump ``version`` when the result's shape changes. ``serializer``
    (``"json"``, ``"pickle"`` or an object) overrides ``[common.cache] serializer``.

    Results must be storable by the serializer: JSON returns tuples as lists; a
    result JSON cannot store raises :class:`~tasker_resilience.SerializationError`.

    Every call gets its own result object (a copy per hit), unless ``shared=True``:
    then hits from the in-process ``memory`` backend hand out one stored object to
    every caller, which is faster for large results but only safe when no caller
    mutates them. Redis hits are decoded per call in either mode.

    A return annotation JSON does not keep (a tuple, a dataclass, a datetime...) is what
    hits return: decoded following it, with msgspec (``typed`` extra; see
    ``_cache/typed.py``). Protecting the origin (see ``_cache/origin.py``):

    - ``lock=True`` (or the lease time in seconds): one computation per missing key across
      every process sharing the cache; the others wait, at most the lease time;
    - ``early_refresh=True`` (or XFetch's beta): hot entries are recomputed before they
      expire, async ones in the background, sync ones by the calling thread;
    - ``stale_if_error=seconds``: entries are kept that long past their TTL and answer
      when the function raises an exception ``record`` matches (every ``Exception`` by
      default; classes or predicates, as for ``@breaker_guarded``).
    """
    if callable(ttl):
        # Bare ``@cached``: the function arrived where the TTL goes.
        return cached()(ttl)
    if not isinstance(shared, bool):
        raise TypeError(f"@cached shared must be True or False, not {shared!r}")
    ttl = _checked_ttl(ttl)
    fixed_serializer = None if serializer is None else get_serializer(serializer)
    if key is not None and not callable(key):
        raise TypeError(f"@cached key must be a callable building the key, not {key!r}")
    if condition is not None and not callable(condition):
        raise TypeError(f"@cached condition must be a callable, not {condition!r}")
    cache_of = _cache_lookup(cache)
    origin = OriginOptions.build(
        lock=lock, early_refresh=early_refresh, stale_if_error=stale_if_error, record=record
    )

    def decorate(func: Callable[P, R]) -> CachedFunction[P, R]:
        if isinstance(func, (classmethod, staticmethod)):
            # Above @classmethod / @staticmethod: cache the function inside and wrap the
            # result the same way (a classmethod object cannot be called directly).
            inner: Any = func.__func__
            return cast(CachedFunction[P, R], type(func)(decorate(inner)))
        keys = KeyBuilder(func, namespace=namespace, version=str(version), custom=key)
        all_entries = escape_glob(keys.base) + "*"
        # The bound method: calling the instance goes through its type's __call__ slot.
        key_of = keys.__call__
        owner = function_id(func)
        # None unless hits must follow the return annotation (most functions): then the
        # hit paths below pay one check for it.
        shapes = JsonShapes(owner)
        returns = ReturnTypes.of(func, owner, shapes)
        # The one WARNING a lossy result deserves, due at the next hit (see typed.py).
        notice: JsonShapes | None = None

        if origin.active:
            guard = OriginGuard(
                origin,
                func=func,
                owner=owner,
                ttl=ttl,
                condition=condition,
                shapes=shapes,
                shared=shared,
            )
            wrapper: Any = _guarded(guard, returns, fixed_serializer, key_of, cache_of)
        elif inspect.iscoroutinefunction(func):
            async_func = cast(Callable[..., Awaitable[Any]], func)
            task_flights = _TaskFlights()

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                nonlocal notice
                cache = cache_of()
                if not cache._enabled or (cache._read_breaker is not None and cache._skips_reads()):
                    return await async_func(*args, **kwargs)
                full = key_of(args, kwargs)
                serializer = fixed_serializer or cache._serializer
                if returns is not None:
                    last = returns.last
                    serializer = (
                        last[1] if last[0] is serializer else returns.serializer(serializer)
                    )
                value = await cache._aread(full, serializer, True, _MISS, shared)
                if value is _MISS:
                    return await task_flights.run(
                        full, lambda: _acompute(cache, full, serializer, args, kwargs)
                    )
                if value is UNAVAILABLE:
                    # The read was skipped or failed: no store (it would wait again).
                    return await async_func(*args, **kwargs)
                if notice is not None:
                    pending = notice
                    notice = None
                    pending.hit()
                return value

            async def _acompute(
                cache: CacheProvider,
                full: str,
                serializer: Serializer,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                nonlocal notice
                result = await async_func(*args, **kwargs)
                if condition is None or condition(result):
                    await cache._astore(full, serializer.dumps([result]), ttl, False)
                    if shapes.stored(serializer, result):
                        notice = shapes
                return result

            wrapper = async_wrapper
        else:
            thread_flights = _ThreadFlights()

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                nonlocal notice
                cache = cache_of()
                if not cache._enabled or (cache._read_breaker is not None and cache._skips_reads()):
                    return func(*args, **kwargs)
                full = key_of(args, kwargs)
                serializer = fixed_serializer or cache._serializer
                if returns is not None:
                    last = returns.last
                    serializer = (
                        last[1] if last[0] is serializer else returns.serializer(serializer)
                    )
                get_entry = cache._get_entry
                if get_entry is None:
                    value = cache._read(full, serializer, True, _MISS, shared)
                else:
                    # The memory backend: the provider's read without its own frame
                    # (a hit costs about a microsecond; the frame was a tenth of it).
                    try:
                        entry = get_entry(cache._prefix + full)
                    except Exception:
                        # Never expected; the provider's read handles and counts it.
                        value = cache._read(full, serializer, True, _MISS, shared)
                    else:
                        value = cache._read_entry(entry, serializer, True, _MISS, shared)
                if value is _MISS:
                    return thread_flights.run(
                        full, lambda: _compute(cache, full, serializer, args, kwargs)
                    )
                if value is UNAVAILABLE:
                    # The read was skipped or failed: no store (it would wait again).
                    return func(*args, **kwargs)
                if notice is not None:
                    pending = notice
                    notice = None
                    pending.hit()
                return value

            def _compute(
                cache: CacheProvider,
                full: str,
                serializer: Serializer,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                nonlocal notice
                result = func(*args, **kwargs)
                if condition is None or condition(result):
                    cache._store(full, serializer.dumps([result]), ttl, False)
                    if shapes.stored(serializer, result):
                        notice = shapes
                return result

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            cache_of().delete(keys(args, kwargs))

        async def ainvalidate(*args: Any, **kwargs: Any) -> None:
            await cache_of().adelete(keys(args, kwargs))

        def invalidate_all() -> int:
            return cache_of().delete_pattern(all_entries)

        def cache_key(*args: Any, **kwargs: Any) -> str:
            return f"{cache_of().key_prefix}:{keys(args, kwargs)}"

        wrapper.original = func
        wrapper.invalidate = invalidate
        wrapper.ainvalidate = ainvalidate
        wrapper.invalidate_all = invalidate_all
        wrapper.cache_key = cache_key
        return cast(CachedFunction[P, R], wrapper)

    return decorate

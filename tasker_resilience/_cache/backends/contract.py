"""The cache backend contract and the name -> factory registry.

A backend stores bytes under full keys (the provider has already applied
``key_prefix`` and serialised the value). It raises on failure; the provider and
the ``cache`` breaker decide what a failure means for the caller. Built-in backends
are imported lazily, by dotted path, so an unused client library is never imported.

Where a name is looked up, first wins: backends registered in code
(:func:`register_backend`, which may replace a built-in name when asked to), the
built-in names, then entry points in the ``tasker_resilience.cache_backends`` group.
Code registered in a module nobody imports is invisible to a process that only
reads settings (the ``tasker-resilience`` command): ``common.cache.plugins`` lists
modules that :func:`import_plugins` imports before the settings are validated.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from tasker_resilience._config.schema import BACKEND_REGISTRATION
from tasker_resilience._errors import ConfigurationError
from tasker_resilience._forks import new_lock_after_fork

if TYPE_CHECKING:
    from tasker_resilience._config.schema import CacheConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROBE_BUDGET",
    "BackendFactory",
    "CacheBackend",
    "InProcessAsyncMixin",
    "LeaseBackend",
    "NodeUnavailable",
    "WriteRejectedError",
    "backend_factory",
    "import_plugins",
    "known_backend_names",
    "register_backend",
    "registrations_restored",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "tasker_resilience.cache_backends"

PROBE_BUDGET: ContextVar[float | None] = ContextVar("tasker_resilience_probe_budget", default=None)
"""Seconds the I/O of the current call may take in all, while it is a half-open probe
of the ``cache`` breaker (the backend's optional ``probe_timeout_seconds``); None
otherwise. A sync backend that can bound its own I/O reads it (the redis backend does,
in ``deadline.py``); asyncio probes are bounded by the provider itself."""


class WriteRejectedError(Exception):
    """A backend refused this one write (e.g. a value over the server's size limit)
    while the backend itself is fine. The provider logs it and treats it as that
    caller's failed write: the key is invalidated, the breaker does not count it."""


class NodeUnavailable(Exception):
    """A multi-node backend could not serve a call because the node holding the key
    is down.

    Raised by a backend with per-node breakers (Redis Cluster): at once, without I/O,
    while the node's own circuit is open (``cause`` is None), or in place of the
    node's failure (``cause`` is the redis-py error; the node's breaker counted it).
    It is not a failure of the backend as a whole: the provider answers the call like
    an open circuit (a miss, a no-op, ``0``), counted ``skipped_open`` or ``error``,
    and never counts it against the ``cache`` breaker. An invalidation that did not
    reach the node this way has been remembered by the backend, which replays it on
    that node when the node is back.
    """

    def __init__(self, node: str, cause: BaseException | None = None) -> None:
        self.node = node
        self.cause = cause
        if cause is None:
            message = f"cache node {node} is unavailable (its circuit is open)"
        else:
            message = f"cache node {node} failed ({type(cause).__name__}: {cause})"
        super().__init__(message)


@runtime_checkable
class CacheBackend(Protocol):
    """What a cache backend provides: six operations, each with an ``a``-prefixed
    asyncio twin of the same signature, plus :meth:`is_backend_failure`.

    Keys are ``str`` (already prefixed: ``key_prefix:...``), values are ``bytes``
    (already serialised; ``b""`` is a value, not a miss). Operations raise when the
    backend fails; they never swallow errors (the provider does that, and counts them
    against the ``cache`` breaker when :meth:`is_backend_failure` says so). A backend
    with nothing to await subclasses :class:`InProcessAsyncMixin` for the twins.

    ``tasker_resilience.testing.BackendConformance`` checks all of this.
    """

    name: str
    """The configured name (``"dragonfly"`` for the alias, not ``"redis"``)."""
    distributed: bool
    """True when the data lives in another process; only then is a breaker needed."""

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``; ``None`` when absent or expired."""
        ...

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """Store ``value`` under ``key``, replacing any earlier value and TTL.

        ``ttl_seconds`` is a float > 0, kept to at least millisecond precision (0.5 means
        half a second, never rounded down to "no expiry" or "expired"); ``None`` means
        the entry never expires, clearing a TTL an earlier ``set`` gave it.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting an absent key is not an error."""
        ...

    def delete_pattern(self, pattern: str) -> int:
        """Remove every live key matching the glob ``pattern``; returns how many.

        The syntax is Redis ``SCAN MATCH``'s, matched against the whole key: ``*`` any
        run of characters (``:`` included), ``?`` one byte of the key's UTF-8,
        ``[abc]`` / ``[^abc]`` / ``[a-z]`` classes, and a backslash makes the next
        character literal (``user\\*`` matches only the key ``user*``). Every other
        character, regex metacharacters included, is literal. Expired keys are not
        counted. ``tasker_resilience.glob_to_regex(pattern).fullmatch(key)`` matches
        exactly as the server does, Redis's edge cases included (``[b-]`` is a range,
        an unclosed ``[`` still matches one byte): use it in in-process backends
        (``fnmatch`` does not: it has no escapes).
        """
        ...

    def health_check(self) -> bool:
        """True when the backend answers now (a ``PING``); False or an exception
        (a backend failure) when it does not."""
        ...

    def close(self) -> None:
        """Release connections (an in-process backend may drop its data); the backend
        may be used again afterwards: it reconnects."""
        ...

    async def aget(self: _SyncOperations, key: str) -> bytes | None: ...
    async def aset(
        self: _SyncOperations, key: str, value: bytes, ttl_seconds: float | None
    ) -> None: ...
    async def adelete(self: _SyncOperations, key: str) -> None: ...
    async def adelete_pattern(self: _SyncOperations, pattern: str) -> int: ...
    async def ahealth_check(self: _SyncOperations) -> bool: ...
    async def aclose(self: _SyncOperations) -> None:
        """Release the connections of the running event loop."""
        ...

    def is_backend_failure(self, exc: BaseException) -> bool:
        """True when ``exc`` (raised by one of the operations above) means the backend
        is unwell: unreachable, timed out, busy, read-only... Those count against the
        ``cache`` breaker and are answered as a miss. False for caller mistakes
        (``TypeError``, ``ValueError``, a rejected command), which propagate to the
        caller and never trip the breaker. ``asyncio.CancelledError`` and
        ``KeyboardInterrupt`` are never asked about."""
        ...


@runtime_checkable
class LeaseBackend(Protocol):
    """Optional: what a backend offers so that ``@cached(lock=True)`` computes a missing
    value once across every process sharing the cache (a lease per key).

    ``add`` stores ``value`` only when ``key`` is absent (Redis ``SET NX PX``) and says
    whether it did; ``delete_if_equal`` deletes ``key`` only while it still holds
    ``value`` (compare-and-delete), so a holder whose lease expired never removes the
    next holder's. Both must be atomic across every client of the backend, and both
    raise on failure like the contract's operations. A backend without them is still a
    backend: ``lock=True`` then degrades to single-flight within each process.
    The Redis backends and ``memory`` offer them; ``BackendConformance`` checks them
    when a backend has them.
    """

    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool: ...
    def delete_if_equal(self, key: str, value: bytes) -> bool: ...
    async def aadd(self, key: str, value: bytes, ttl_seconds: float | None) -> bool: ...
    async def adelete_if_equal(self, key: str, value: bytes) -> bool: ...


class _SyncOperations(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None: ...
    def delete(self, key: str) -> None: ...
    def delete_pattern(self, pattern: str) -> int: ...
    def health_check(self) -> bool: ...
    def close(self) -> None: ...


class InProcessAsyncMixin:
    """Async twins for a backend whose sync operations never block on I/O.

    An in-process backend (a dict, cachetools, a test double) has nothing to await;
    subclass this next to your sync methods and the ``a``-prefixed twins call them.
    A backend that does network I/O must implement real async methods instead, or it
    would block the event loop.
    """

    async def aget(self: _SyncOperations, key: str) -> bytes | None:
        return self.get(key)

    async def aset(
        self: _SyncOperations, key: str, value: bytes, ttl_seconds: float | None
    ) -> None:
        self.set(key, value, ttl_seconds)

    async def adelete(self: _SyncOperations, key: str) -> None:
        self.delete(key)

    async def adelete_pattern(self: _SyncOperations, pattern: str) -> int:
        return self.delete_pattern(pattern)

    async def ahealth_check(self: _SyncOperations) -> bool:
        return self.health_check()

    async def aclose(self: _SyncOperations) -> None:
        self.close()


BackendFactory = Callable[["CacheConfig"], CacheBackend]
"""Builds a backend from the cache config; ``config.backend`` is the configured name
and ``config.backend_options`` holds the ``[common.cache.<name>]`` table."""

_BUILTIN: dict[str, str] = {
    # One factory for every Redis topology: it picks the cluster backend for a
    # redis+cluster:// URL, the plain one otherwise.
    "redis": "tasker_resilience._cache.backends.redis_compat:redis_from_config",
    "dragonfly": "tasker_resilience._cache.backends.redis_compat:redis_from_config",
    "memory": "tasker_resilience._cache.backends.memory_backend:MemoryBackend.from_config",
    "noop": "tasker_resilience._cache.backends.memory_backend:NoopBackend.from_config",
}
_registered: dict[str, BackendFactory] = {}
_lock = threading.Lock()
new_lock_after_fork(sys.modules[__name__])


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``backend = "<name>"`` build its backend with ``factory(cache_config)``.

    A name already taken (a built-in such as ``redis``, or an earlier registration
    with another factory) is refused unless ``replace=True``: replacing ``redis`` must
    be a decision, not an accident. :func:`unregister_backend` undoes it.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if not key:
        raise ValueError(f"a backend name must be a non-empty string, not {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for backend {key!r} must be callable, not {factory!r}")
    with _lock:
        if not replace:
            if key in _BUILTIN and key not in _registered:
                raise ValueError(
                    f"{key!r} is a built-in backend name; choose another name, "
                    "or pass replace=True to replace the built-in"
                )
            earlier = _registered.get(key)
            if earlier is not None and earlier is not factory:
                raise ValueError(
                    f"backend {key!r} is already registered (factory {earlier!r}); "
                    "pass replace=True to replace it"
                )
        _registered[key] = factory


def unregister_backend(name: str) -> None:
    """Forget a backend added by :func:`register_backend`; a replaced built-in name
    means the built-in again."""
    with _lock:
        _registered.pop(name.strip().lower(), None)


@contextlib.contextmanager
def registrations_restored() -> Iterator[None]:
    """Inside the block, :func:`register_backend` calls are undone at its end (tests)."""
    with _lock:
        saved = dict(_registered)
    try:
        yield
    finally:
        with _lock:
            _registered.clear()
            _registered.update(saved)


def import_plugins(modules: Iterable[str], *, setting: str) -> None:
    """Import each module (which registers its backends when imported).

    Raises :class:`ConfigurationError` naming ``setting`` (where the list came from)
    and the module that failed, with the import error.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure of the user's module is a setting error
            raise ConfigurationError(
                setting,
                module,
                f"a module that can be imported; importing it failed with "
                f"{type(exc).__name__}: {exc}",
            ) from exc


def _entry_point_names() -> set[str]:
    return {ep.name.lower() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_backend_names() -> frozenset[str]:
    """Every name ``backend`` may take: built-in, registered, and entry points."""
    return frozenset(_BUILTIN) | frozenset(_registered) | _entry_point_names()


def _import_path(path: str) -> BackendFactory:
    module_name, _, attr_path = path.partition(":")
    target: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return cast(BackendFactory, target)  # callable checked; the contract is documented


def backend_factory(name: str) -> BackendFactory:
    """The factory for ``name``; raises ``LookupError`` naming the known names."""
    key = name.strip().lower()
    with _lock:
        factory = _registered.get(key)
    if factory is not None:
        return factory
    if key in _BUILTIN:
        return _import_path(_BUILTIN[key])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() == key:
            loaded: BackendFactory = ep.load()
            return loaded
    raise LookupError(
        f"unknown cache backend {name!r}; known: {', '.join(sorted(known_backend_names()))}; "
        f"{BACKEND_REGISTRATION}"
    )

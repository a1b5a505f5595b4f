"""The cache backend contract and the name -> factory registry.

A backend stores bytes under full keys (the provider has already applied
``key_prefix`` and serialised the value). It raises on failure; the provider and
the ``cache`` breaker decide what a failure means for the caller. Built-in backends
are imported lazily, by dotted path, so an unused client library is never imported.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from tasker_resilience._config.schema import CacheConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "CacheBackend",
    "InProcessAsyncMixin",
    "backend_factory",
    "known_backend_names",
    "register_backend",
]

ENTRY_POINT_GROUP = "tasker_resilience.cache_backends"


@runtime_checkable
class CacheBackend(Protocol):
    """What a cache backend provides. Sync and async twins of each operation."""

    name: str
    """The configured name (``"dragonfly"`` for the alias, not ``"redis"``)."""
    distributed: bool
    """True when the data lives in another process; only then is a breaker needed."""

    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None: ...
    def delete(self, key: str) -> None: ...
    def delete_pattern(self, pattern: str) -> int: ...
    def health_check(self) -> bool: ...
    def close(self) -> None: ...

    async def aget(self: _SyncOperations, key: str) -> bytes | None: ...
    async def aset(
        self: _SyncOperations, key: str, value: bytes, ttl_seconds: float | None
    ) -> None: ...
    async def adelete(self: _SyncOperations, key: str) -> None: ...
    async def adelete_pattern(self: _SyncOperations, pattern: str) -> int: ...
    async def ahealth_check(self: _SyncOperations) -> bool: ...
    async def aclose(self: _SyncOperations) -> None: ...

    def is_backend_failure(self, exc: BaseException) -> bool:
        """True when ``exc`` means the backend is unwell (counts against the breaker);
        False for caller mistakes, which propagate without tripping."""
        ...


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
    "redis": "tasker_resilience._cache.backends.redis_backend:RedisBackend.from_config",
    "dragonfly": "tasker_resilience._cache.backends.redis_backend:RedisBackend.from_config",
    "memory": "tasker_resilience._cache.backends.memory_backend:MemoryBackend.from_config",
    "noop": "tasker_resilience._cache.backends.memory_backend:NoopBackend.from_config",
}
_registered: dict[str, BackendFactory] = {}
_lock = threading.Lock()


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``backend = "<name>"`` build its backend with ``factory(cache_config)``.

    Built-in names cannot be replaced: ``redis`` must mean redis everywhere.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if not key:
        raise ValueError(f"a backend name must be a non-empty string, not {name!r}")
    if key in _BUILTIN:
        raise ValueError(f"{key!r} is a built-in backend name; choose another name")
    if not callable(factory):
        raise TypeError(f"factory for backend {key!r} must be callable, not {factory!r}")
    with _lock:
        _registered[key] = factory


def unregister_backend(name: str) -> None:
    """Forget a backend added by :func:`register_backend` (tests)."""
    with _lock:
        _registered.pop(name.strip().lower(), None)


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
    if key in _BUILTIN:
        return _import_path(_BUILTIN[key])
    with _lock:
        factory = _registered.get(key)
    if factory is not None:
        return factory
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() == key:
            loaded: BackendFactory = ep.load()
            return loaded
    raise LookupError(
        f"unknown cache backend {name!r}; known: {', '.join(sorted(known_backend_names()))}"
    )

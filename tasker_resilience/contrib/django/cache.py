"""``ResilientCache``: Django's cache API on the library's provider, a breaker per alias.

Every method runs through a :class:`~tasker_resilience.CacheProvider` of the
process-wide :class:`~tasker_resilience.Resilience`. An alias with a ``LOCATION`` of its
own is a cache of its own, named ``django_<alias>`` (health's ``caches``, the metrics'
``cache`` label): its provider, connection pool, replay list and breaker
(``cache_django_<alias>``, configured like any cache breaker) are built from that
``LOCATION`` and ``OPTIONS``, so nothing of the settings' cache (its URL, its start-up
check, its health probes, its breaker) can switch it off. An empty ``LOCATION`` uses the
settings' ``default`` cache and its ``cache`` breaker.

The breaker admits each call, invalidations missed during an outage are replayed
before the next admitted call, and a backend failure costs at most one socket timeout
until the breaker opens. After that each method answers at once, without a network call:

===================================  ===============================================
method (and its ``a``-prefixed twin)  while the circuit is open (or the call fails)
===================================  ===============================================
``get``                              ``default``
``get_many``                         ``{}``
``has_key``                          ``False``
``set``                              nothing stored; the key is invalidated on recovery
``set_many``                         nothing stored; returns every key (not inserted),
                                     each invalidated on recovery
``add``                              ``False`` (nothing stored)
``delete``                           ``False``; the delete is replayed on recovery
``delete_many``                      nothing; the deletes are replayed on recovery
``incr`` / ``decr``                  ``ValueError`` (the key cannot be shown to exist)
``touch``                            ``False``
``get_or_set``                       the default (computed, not stored)
``incr_version`` / ``decr_version``  ``ValueError`` (the key reads as missing)
``clear``                            nothing; the clear is replayed on recovery
``close``                            nothing (never touches the network)
===================================  ===============================================

Keys follow Django (``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION``, key validation
warnings) and are stored under ``<common.cache.key_prefix>:<NAMESPACE>:``, so
``clear()`` removes this cache's keys only (Django's own Redis backend flushes the
whole database). Timeouts follow Django: ``None`` never expires, ``0`` or less expires
at once, fractions of a second are kept. Values are stored as Django's ``RedisCache``
stores them: integers as their digits (so ``INCR`` works on them), everything else
pickled. Pickle runs code on load: as with Django's backend, only trusted processes
may write to this Redis.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import pickle
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from tasker_resilience._cache.backends.contract import backend_factory
from tasker_resilience._cache.backends.redis_backend import RedisBackend
from tasker_resilience._cache.faults import check_shared_state
from tasker_resilience._cache.invalidations import DELETE, Step
from tasker_resilience._cache.keys import escape_glob
from tasker_resilience._cache.limits import checked_ttl
from tasker_resilience._cache.provider import CacheProvider
from tasker_resilience._cache.serializers import SerializationError
from tasker_resilience._config.redact import redact_url
from tasker_resilience._config.schema import (
    CACHE_BREAKER,
    NearConfig,
    RedisConfig,
    cache_breaker_name,
    parse_redis_config,
)
from tasker_resilience._errors import ConfigurationError
from tasker_resilience._resilience import Resilience, current

__all__ = ["OPTIONS", "DjangoRedisSerializer", "ResilientCache", "bind_caches"]

T = TypeVar("T")

_log = logging.getLogger("tasker_resilience.contrib.django")

SETTING: Final = "CACHES[...] (ResilientCache)"
"""How errors name the setting (Django does not tell a backend its alias)."""

OPTIONS: Final[Mapping[str, str]] = {
    "NAMESPACE": "the key segment after common.cache.key_prefix (default 'django')",
    "max_connections": "pool size (default: common.cache.redis.max_connections)",
    "connect_timeout_seconds": "default: common.cache.redis.connect_timeout_seconds",
    "socket_timeout_seconds": "default: common.cache.redis.socket_timeout_seconds",
    # Django's RedisCache passes these to redis-py; same meaning here.
    "socket_timeout": "alias of socket_timeout_seconds",
    "socket_connect_timeout": "alias of connect_timeout_seconds",
    "db": "the database number (replaces the one in LOCATION)",
}
"""The ``OPTIONS`` keys ``ResilientCache`` understands."""

_ALIASES: Final = {
    "socket_timeout": "socket_timeout_seconds",
    "socket_connect_timeout": "connect_timeout_seconds",
}
_OVERRIDDEN: Final = frozenset({"retry_on_timeout", "retry", "health_check_interval"})
"""redis-py options Django users set that this library decides on purpose (no retries:
the breaker is the fail-fast policy): accepted, ignored, logged."""
_NAMESPACE_DEFAULT: Final = "django"


class DjangoRedisSerializer:
    """Values as Django's ``RedisSerializer`` stores them: an ``int`` as its digits
    (so ``INCR`` works), anything else pickled.

    ``dumps`` lets pickling errors through (Django's contract: ``set`` of an
    unpicklable value raises ``pickle.PickleError``); ``loads`` turns data it cannot
    read into :class:`SerializationError`, which the provider answers as a miss.
    """

    name = "django-redis"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        # type(), not isinstance(): a bool is pickled, as Django does.
        if type(value) is int:
            return str(value).encode()
        return pickle.dumps(value, self.protocol)

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            pass
        try:
            # Django's own cache format (every Django cache backend pickles); see the
            # module docstring.
            return pickle.loads(data)  # nosec B301 # Django's format, as Django's own backends
        except Exception as exc:
            # A class renamed since the value was stored, or foreign data: a miss.
            raise SerializationError(
                f"cached value is neither an integer nor a loadable pickle ({type(exc).__name__})"
            ) from exc


@dataclass(frozen=True)
class _Command(Generic[T]):
    """One backend command of a Django method, runnable sync or async: the decisions
    (keys, TTL, what to answer while open, what to replay) are made once, when it is
    built; ``run`` and ``arun`` differ only in the ``await``."""

    provider: CacheProvider
    backend: RedisBackend
    op: str
    """The stats row (``CacheProvider.stats()``) the call counts under."""
    method: str
    """A :class:`RedisBackend` method; ``"a" + method`` is its async twin."""
    args: tuple[Any, ...]
    skipped: T
    undo: tuple[Step, ...] = ()
    changes: tuple[str, ...] = ()
    """Full keys whose values the command may change (dropped from a near tier)."""
    read: bool = False

    def _call(self, twin: str) -> Callable[[], Any]:
        """The backend method (``twin=""``) or its async twin (``"a"``), bound to args."""
        return functools.partial(getattr(self.backend, twin + self.method), *self.args)

    def _guard(self) -> dict[str, Any]:
        """How the provider runs it: the same for both twins."""
        return {
            "skipped": self.skipped,
            "undo": self.undo,
            "changes": self.changes,
            "read": self.read,
        }

    def run(self) -> T:
        result: T = self.provider.command(self.op, self._call(""), **self._guard())
        return result

    async def arun(self) -> T:
        result: T = await self.provider.acommand(self.op, self._call("a"), **self._guard())
        return result


_SKIPPED: Final[Any] = object()


def _first_server(location: str | Sequence[str]) -> str | None:
    servers = re.split("[;,]", location) if isinstance(location, str) else list(location)
    servers = [s.strip() for s in servers if s and s.strip()]
    if len(servers) > 1:
        # Django reads from the others as replicas; one URL per topology here.
        _log.warning(
            "ResilientCache uses the first LOCATION only (%s); %d more ignored",
            redact_url(servers[0]),
            len(servers) - 1,
        )
    return servers[0] if servers else None


def _with_db(url: str, db: object) -> str:
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise ConfigurationError(f"{SETTING} OPTIONS['db']", db, "a database number, 0 or more")
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _redis_options(options: Mapping[str, Any]) -> tuple[str, dict[str, Any], object]:
    """``(namespace, [common.cache.redis]-shaped overrides, db or None)`` from OPTIONS."""
    unknown = sorted(set(options) - set(OPTIONS) - _OVERRIDDEN)
    if unknown:
        raise ConfigurationError(
            f"{SETTING} OPTIONS",
            unknown,
            f"known options: {', '.join(OPTIONS)} (redis-py pool options are chosen by "
            "the library: timeouts from common.cache.redis, no retries)",
        )
    ignored = sorted(set(options) & _OVERRIDDEN)
    if ignored:
        _log.warning(
            "ResilientCache ignores OPTIONS %s: the cache breaker is the retry policy",
            ignored,
        )
    namespace = options.get("NAMESPACE", _NAMESPACE_DEFAULT)
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError(f"{SETTING} OPTIONS['NAMESPACE']", namespace, "a non-empty string")
    overrides = {
        _ALIASES.get(name, name): value
        for name, value in options.items()
        if name not in ("NAMESPACE", "db") and name not in _OVERRIDDEN
    }
    return namespace, overrides, options.get("db")


def _redis_config(
    location: str | None,
    res: Resilience | None,
    overrides: Mapping[str, Any],
    db: object,
) -> RedisConfig:
    """The alias's server: its ``LOCATION`` and ``OPTIONS``; pool size and timeouts not
    in ``OPTIONS`` default to ``[common.cache.redis]``'s (``res`` None: the built-in
    defaults, for the check at start-up)."""
    base = RedisConfig() if res is None else res.settings.cache.redis
    url = location or base.url
    if db is not None:
        url = _with_db(url, db)
    raw = {
        "url": url,
        "max_connections": base.max_connections,
        "connect_timeout_seconds": base.connect_timeout_seconds,
        "socket_timeout_seconds": base.socket_timeout_seconds,
        **overrides,
    }
    return parse_redis_config(raw, SETTING)


def _alias_of(location: object, params: Mapping[str, Any]) -> str | None:
    """The ``CACHES`` alias Django built this cache from. Django passes a backend its
    entry without ``BACKEND`` and ``LOCATION`` (``CacheHandler.create_connection``),
    not its alias: the entry that matches is the one."""
    try:
        from django.core.cache import caches

        entries = caches.settings.items()
    except Exception:
        return None  # settings not configured: a cache built by hand
    for alias, entry in entries:
        rest = {key: value for key, value in entry.items() if key not in ("BACKEND", "LOCATION")}
        if entry.get("LOCATION", "") == location and rest == dict(params):
            return str(alias)
    return None


def _cache_name(location: object, params: Mapping[str, Any]) -> str:
    """``django_<alias>`` (lower case, other characters as ``_``: it is part of the
    breaker's name, a TOML key and a variable segment). A cache built by hand, outside
    ``CACHES``, is named after a digest of its location and options instead."""
    alias = _alias_of(location, params)
    if alias is None:
        digest = hashlib.sha256(repr((location, sorted(params.items()))).encode()).hexdigest()
        return f"django_{digest[:8]}"
    return "django_" + (re.sub("[^a-z0-9_]", "_", alias.lower()) or "alias")


class _SharedProviders:
    """One provider (and connection pool, and breaker) per alias and Resilience.

    Django builds a cache object per thread (and per async context); they all share
    the provider, so a process holds one pool per alias, not one per thread. A new
    ``configure()`` gets new providers (they take over what the previous one still had
    to replay on the same server); the previous one's connections are closed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._providers: dict[str, tuple[Resilience, tuple[Any, ...], CacheProvider]] = {}

    def get(
        self,
        res: Resilience,
        name: str,
        location: str | None,
        overrides: Mapping[str, Any],
        db: object,
    ) -> CacheProvider:
        if location is None and not overrides and db is None:
            return _configured_cache(res)
        key = (location, tuple(sorted(overrides.items())), db)
        with self._lock:
            entry = self._providers.get(name)
            if entry is not None and entry[0] is res and entry[1] == key:
                return entry[2]
            provider = _build_provider(res, name, _redis_config(location, res, overrides, db))
            if entry is not None and entry[1] == key:
                # The same server under a new Resilience: what the old provider could
                # not apply (an outage) is replayed here before this one reads.
                provider.adopt_invalidations(entry[2])
            self._providers[name] = (res, key, provider)
        res.attach_cache(name, provider)
        if entry is not None:
            entry[2].close()
        return provider


def _build_provider(res: Resilience, name: str, config: RedisConfig) -> CacheProvider:
    """A provider of its own for cache ``name``: its own backend on ``config``, its own
    breaker; defaults for the rest (key prefix, TTL, replay bound, probe interval) come
    from ``[common.cache]``, never its state."""
    cache_config = dataclasses.replace(
        res.settings.cache, backend="redis", redis=config, near=NearConfig()
    )
    # The registered factory: it picks the single-server, Sentinel or Cluster backend
    # from the URL, as for common.cache.redis.url.
    backend = backend_factory("redis")(cache_config)
    if not isinstance(backend, RedisBackend):
        raise ConfigurationError(
            f"{SETTING} LOCATION", redact_url(config.url), "a Redis-protocol URL"
        )
    breaker_name = cache_breaker_name(name)
    # Without an entry of its own in component_configs it takes the `cache` breaker's.
    res.breakers.declare(breaker_name, like=CACHE_BREAKER)
    breaker = res.breakers.get(breaker_name)
    check_shared_state(breaker, backend)
    return CacheProvider(
        backend,
        breaker=breaker,
        key_prefix=cache_config.key_prefix,
        default_ttl_seconds=cache_config.default_ttl_seconds,
        max_pending_invalidations=cache_config.max_pending_invalidations,
        health_probe_interval_seconds=cache_config.health_probe_interval_seconds,
        clock=res.clock,
    )


def _configured_cache(res: Resilience) -> CacheProvider:
    """``res.cache`` when it can serve Django (a redis or dragonfly backend)."""
    provider = res.cache
    if not provider.enabled or not isinstance(provider.backend, RedisBackend):
        raise ConfigurationError(
            f"{SETTING} LOCATION",
            "",
            "a redis:// URL, or common.cache.backend = 'redis' or 'dragonfly' (enabled) "
            f"to use common.cache.redis.url; the configured cache is {provider.backend_name!r}"
            f"{'' if provider.enabled else ' (disabled)'}",
        )
    return provider


_shared = _SharedProviders()


class ResilientCache(BaseCache):  # type: ignore[misc]  # Django ships no type hints
    """A Django cache backend that never lets a failing Redis slow a request down.

    ``LOCATION``: a ``redis://``, ``rediss://`` or ``unix://`` URL (passwords are
    masked wherever it is shown): a cache of its own, ``django_<alias>``, with its own
    breaker ``cache_django_<alias>``; or empty for the settings' ``default`` cache
    itself (``common.cache.redis.url``, breaker ``cache``). ``OPTIONS``: see
    :data:`OPTIONS`.
    """

    def __init__(self, location: str | Sequence[str] | None, params: dict[str, Any]) -> None:
        self.name = _cache_name(location, params)
        """The cache's name in health and metrics (``django_<alias>``)."""
        super().__init__(params)
        self._location = _first_server(location) if location else None
        namespace, self._overrides, self._db = _redis_options(params.get("OPTIONS") or {})
        if self._location is not None or self._overrides or self._db is not None:
            # Fail at start-up, not at the first request: the values are checked now
            # (the defaults come from the settings when the pool is built).
            _redis_config(self._location, None, self._overrides, self._db)
        self._namespace = namespace + ":"
        self._clear_pattern = escape_glob(namespace) + ":*"
        self._serializer = DjangoRedisSerializer()
        self._bound: tuple[Resilience, CacheProvider, RedisBackend] | None = None

    # --- binding -------------------------------------------------------------------------

    def _bind(self) -> tuple[CacheProvider, RedisBackend]:
        # current() per call: decorate (or configure Django) first, configure() later;
        # a new configure() is picked up by the next call.
        res = current()
        bound = self._bound
        if bound is None or bound[0] is not res:
            provider = _shared.get(res, self.name, self._location, self._overrides, self._db)
            backend = provider.backend
            assert isinstance(backend, RedisBackend)  # checked where the provider is made
            bound = self._bound = (res, provider, backend)
        return bound[1], bound[2]

    @property
    def has_own_server(self) -> bool:
        """True when ``LOCATION`` or ``OPTIONS`` name a server: a cache of its own."""
        return self._location is not None or bool(self._overrides) or self._db is not None

    @property
    def provider(self) -> CacheProvider:
        """The provider this cache runs through (stats, circuit state, pending replays)."""
        return self._bind()[0]

    def _key(self, key: Any, version: int | None) -> str:
        return self._namespace + str(self.make_and_validate_key(key, version=version))

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> float | None:
        """Seconds to keep a value: None forever, 0 for "expire now" (Django's rules;
        fractions kept, where Django's Redis backend truncates to whole seconds)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"cache timeout must be seconds (a number) or None, not {timeout!r}")
        if timeout <= 0:
            return 0.0
        # The library's one TTL check: finite, at most 100 years (Redis's expiry clock).
        return checked_ttl(float(timeout), "cache timeout")

    def _command(
        self,
        op: str,
        method: str,
        args: tuple[Any, ...],
        skipped: T,
        undo: Iterable[str] = (),
        changes: Iterable[str] = (),
        read: bool = False,
    ) -> _Command[T]:
        """``undo``: keys to invalidate on recovery if the command cannot run (they
        change too); ``changes``: other keys the command may change."""
        provider, backend = self._bind()
        undo = tuple(undo)
        steps = tuple(Step(DELETE, full) for full in undo)
        changed = (*undo, *changes)
        return _Command(provider, backend, op, method, args, skipped, steps, changed, read)

    # --- the decisions, made once for both twins ----------------------------------------

    def _full(self, key: Any, version: int | None) -> str:
        return self._bind()[0].full_key(self._key(key, version))

    def _add(self, key: Any, value: Any, timeout: Any, version: int | None) -> _Command[Any]:
        full = self._full(key, version)
        data = self._serializer.dumps(value)
        ttl = self.get_backend_timeout(timeout)
        if ttl == 0:
            # Stored and expired at once: only whether the key was free matters.
            return self._command("add", "exists", (full,), _SKIPPED, read=True)
        return self._command("add", "add", (full, data, ttl), False, changes=(full,))

    def _set(self, key: Any, value: Any, timeout: Any, version: int | None) -> _Command[Any]:
        full = self._full(key, version)
        data = self._serializer.dumps(value)
        ttl = self.get_backend_timeout(timeout)
        if ttl == 0:
            return self._command("delete", "delete_many", ([full],), 0, undo=(full,))
        return self._command("set", "set", (full, data, ttl), None, undo=(full,))

    def _touch(self, key: Any, timeout: Any, version: int | None) -> _Command[bool]:
        full = self._full(key, version)
        return self._command("touch", "touch", (full, self.get_backend_timeout(timeout)), False)

    def _delete(self, key: Any, version: int | None) -> _Command[int]:
        full = self._full(key, version)
        return self._command("delete", "delete_many", ([full],), 0, undo=(full,))

    def _get_many(
        self, keys: Iterable[Any], version: int | None
    ) -> tuple[_Command[Any], dict[str, Any]]:
        provider = self._bind()[0]
        fulls = {provider.full_key(self._key(key, version)): key for key in keys}
        command = self._command("get_many", "get_many", (list(fulls),), _SKIPPED, read=True)
        return command, fulls

    def _got_many(self, values: Any, fulls: dict[str, Any]) -> dict[Any, Any]:
        if values is _SKIPPED:
            return {}
        found: dict[Any, Any] = {}
        for key, raw in zip(fulls.values(), values, strict=True):
            if raw is None:
                continue
            try:
                found[key] = self._serializer.loads(raw)
            except SerializationError:
                continue  # unreadable: a miss, as for get()
        return found

    def _has_key(self, key: Any, version: int | None) -> _Command[bool]:
        full = self._full(key, version)
        return self._command("has_key", "exists", (full,), False, read=True)

    def _incr(self, key: Any, delta: int, version: int | None) -> _Command[int | None]:
        full = self._full(key, version)
        return self._command("incr", "incr", (full, delta), None, changes=(full,))

    @staticmethod
    def _incremented(key: Any, value: int | None) -> int:
        if value is None:
            # Absent, or the circuit is open: Django's contract for a missing key.
            raise ValueError(f"Key '{key}' not found.")
        return value

    def _set_many(
        self, data: Mapping[Any, Any], timeout: Any, version: int | None
    ) -> _Command[Any]:
        provider = self._bind()[0]
        items = {
            provider.full_key(self._key(key, version)): self._serializer.dumps(value)
            for key, value in data.items()
        }
        ttl = self.get_backend_timeout(timeout)
        if ttl == 0:
            return self._command("set_many", "delete_many", (list(items),), _SKIPPED, undo=items)
        return self._command("set_many", "set_many", (items, ttl), _SKIPPED, undo=items)

    def _delete_many(self, keys: Iterable[Any], version: int | None) -> _Command[int]:
        provider = self._bind()[0]
        fulls = [provider.full_key(self._key(key, version)) for key in keys]
        return self._command("delete_many", "delete_many", (fulls,), 0, undo=fulls)

    # --- Django's cache API -------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self._key(key, version)
        return self._bind()[0].read(key, self._serializer, default)

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self._key(key, version)
        return await self._bind()[0].aread(key, self._serializer, default)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        command = self._add(key, value, timeout, version)
        return _added(command, command.run())

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        command = self._add(key, value, timeout, version)
        return _added(command, await command.arun())

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        self._set(key, value, timeout, version).run()

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        await self._set(key, value, timeout, version).arun()

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._touch(key, timeout, version).run()

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        return await self._touch(key, timeout, version).arun()

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._delete(key, version).run() > 0

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self._delete(key, version).arun() > 0

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        command, fulls = self._get_many(keys, version)
        return self._got_many(command.run(), fulls)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        command, fulls = self._get_many(keys, version)
        return self._got_many(await command.arun(), fulls)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._has_key(key, version).run()

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self._has_key(key, version).arun()

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self._incremented(key, self._incr(key, delta, version).run())

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self._incremented(key, await self._incr(key, delta, version).arun())

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        if not data:
            return []
        result = self._set_many(data, timeout, version).run()
        return list(data) if result is _SKIPPED else []

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        if not data:
            return []
        result = await self._set_many(data, timeout, version).arun()
        return list(data) if result is _SKIPPED else []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        keys = list(keys)
        if keys:
            self._delete_many(keys, version).run()

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        keys = list(keys)
        if keys:
            await self._delete_many(keys, version).arun()

    def clear(self) -> None:
        """Remove this cache's keys (its NAMESPACE), not the whole database."""
        self._bind()[0].delete_pattern(self._clear_pattern)

    async def aclear(self) -> None:
        await self._bind()[0].adelete_pattern(self._clear_pattern)

    def close(self, **kwargs: Any) -> None:
        """Nothing: Django calls this after every request, and the pooled connections
        are shared by every thread and kept for the process's life, as Django's
        ``RedisCache`` keeps its pools (see the guide, "Django")."""

    async def aclose(self, **kwargs: Any) -> None:
        """Nothing, as :meth:`close`."""

    def __repr__(self) -> str:
        where = redact_url(self._location) if self._location else "common.cache.redis.url"
        return f"<ResilientCache {self.name} {where} namespace={self._namespace[:-1]!r}>"


def bind_caches() -> list[str]:
    """Bind every ``CACHES`` alias served by :class:`ResilientCache` to the process-wide
    Resilience (no network call), so the health report lists each before its first
    use; returns their names. The health view calls this."""
    from django.core.cache import caches

    names = []
    for alias, entry in caches.settings.items():
        backend = str(entry.get("BACKEND", ""))
        if backend.rsplit(".", 1)[-1] == ResilientCache.__name__:
            cache = caches[alias]
            # An alias without a server of its own is the settings' default cache,
            # which the report has anyway.
            if isinstance(cache, ResilientCache) and cache.has_own_server:
                cache._bind()
                names.append(cache.name)
    return names


def _added(command: _Command[Any], result: Any) -> bool:
    """What ``add`` answers: the zero-timeout form asked ``EXISTS`` (added when the key
    was absent); the other stored with ``SET NX``."""
    if result is _SKIPPED:
        return False
    return not result if command.method == "exists" else bool(result)

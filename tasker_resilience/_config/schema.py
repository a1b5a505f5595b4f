"""Typed, frozen, validated configuration.

Everything past this module receives these objects, never raw settings: a bad value
is reported once, here, with the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tasker_resilience._config.redact import REDACTED, redact_url, redact_value, withheld
from tasker_resilience._errors import ConfigurationError

__all__ = [
    "DEFAULT_COMPONENT_CONFIGS",
    "PLUGINS_KEY",
    "REDIS_URL_SCHEMES",
    "BreakerConfig",
    "BreakersConfig",
    "CacheConfig",
    "MemoryConfig",
    "NearConfig",
    "RedisConfig",
    "Settings",
    "parse_redis_config",
    "parse_settings",
    "plugin_modules",
]


@dataclass(frozen=True)
class BreakerConfig:
    """When one breaker trips and when it closes again."""

    failure_threshold: int = 5
    """Consecutive counted failures that open the circuit (1-100)."""
    timeout_seconds: float = 30.0
    """Seconds the circuit stays open before half-open probes are let through (>0, <=300)."""
    success_threshold: int = 2
    """Successful probes that close the circuit again (1-50); also the probe concurrency cap."""
    critical: bool = False
    """An open critical breaker makes the health report "unhealthy"."""
    probe_timeout_seconds: float = 10.0
    """A half-open probe not finished after this long counts as failed and frees its
    slot (the circuit re-opens): hung probes cannot wedge a breaker (>0, <=300)."""


DEFAULT_COMPONENT_CONFIGS: Mapping[str, BreakerConfig] = MappingProxyType(
    {
        "cache": BreakerConfig(5, 30.0, 2),
        "pgmq": BreakerConfig(5, 30.0, 2),
        "task_readiness": BreakerConfig(10, 60.0, 3),
    }
)


@dataclass(frozen=True)
class BreakersConfig:
    """The ``[common.circuit_breakers]`` section."""

    enabled: bool = True
    default_config: BreakerConfig = field(default_factory=BreakerConfig)
    component_configs: Mapping[str, BreakerConfig] = field(
        default_factory=lambda: DEFAULT_COMPONENT_CONFIGS
    )

    def for_component(self, name: str) -> BreakerConfig:
        """The config of breaker ``name``: its own entry, else ``default_config``."""
        return self.component_configs.get(name, self.default_config)


REDIS_URL_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


@dataclass(frozen=True)
class RedisConfig:
    """The ``[common.cache.redis]`` section, used by both ``redis`` and ``dragonfly``."""

    url: str = "redis://localhost:6379/0"
    max_connections: int = 10
    connect_timeout_seconds: float = 0.5
    socket_timeout_seconds: float = 0.25

    @property
    def redacted_url(self) -> str:
        """The URL with its password masked: the only form that may be logged or shown."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        # dataclass repr would print the password; repr reaches logs and tracebacks.
        return (
            f"RedisConfig(url={self.redacted_url!r}, max_connections={self.max_connections}, "
            f"connect_timeout_seconds={self.connect_timeout_seconds}, "
            f"socket_timeout_seconds={self.socket_timeout_seconds})"
        )


@dataclass(frozen=True)
class MemoryConfig:
    """The ``[common.cache.memory]`` section."""

    max_capacity: int = 10_000


NEAR_TRACKING_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class NearConfig:
    """The ``[common.cache.near]`` section: the in-process tier in front of a
    distributed backend (see the caching guide, "Near cache")."""

    enabled: bool = False
    """Off by default: without it an open circuit makes every read a miss."""
    max_entries: int = 10_000
    """Entries kept in process (least recently used evicted first); 1-10,000,000."""
    ttl_seconds: float = 5.0
    """How long an entry is fresh when the server cannot push invalidations (>0, <=86400)."""
    stale_if_error_seconds: float = 300.0
    """While the cache circuit is open, how far past its freshness an entry may still be
    served (0 turns stale serving off; at most 86400)."""
    tracking: str = "auto"
    """``auto`` (server-assisted invalidation where the server supports it, else
    ``ttl_seconds``), ``on`` (required: no fresh near hits without it) or ``off``."""


SERIALIZERS = ("json", "pickle")


@dataclass(frozen=True)
class CacheConfig:
    """The ``[common.cache]`` section."""

    enabled: bool = True
    backend: str = "redis"
    default_ttl_seconds: int = 3600
    key_prefix: str = "tasker"
    serializer: str = "json"
    """``json`` (default) or ``pickle``: pickle runs code from the cache on load; opt in only."""
    max_pending_invalidations: int = 1000
    """Invalidations skipped while open that are remembered and replayed on recovery."""
    redis: RedisConfig = field(default_factory=RedisConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    near: NearConfig = field(default_factory=NearConfig)
    backend_options: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    """The raw ``[common.cache.<backend>]`` table, for user-registered backends. Not in
    the repr: it is raw (a URL with its password, a token), and reprs reach logs."""
    plugins: tuple[str, ...] = ()
    """Modules imported before validation, so the backends they register are known."""


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` decided, in one immutable object."""

    env: str = "development"
    circuit_breakers: BreakersConfig = field(default_factory=BreakersConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


# --- parsing -----------------------------------------------------------------------------


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Table:
    """How an error shows a table's value: its keys are not the point (and may be secret)."""

    def __repr__(self) -> str:
        return "[table]"


_A_TABLE = _Table()
_COMMON_TABLES = ("cache", "circuit_breakers")
_CACHE_TABLES = ("redis", "memory", "near")


def _close(word: str, choices: Collection[str]) -> bool:
    return bool(difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75))


def _table(key: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(key, redact_value(value), "a table (mapping of keys to values)")
    return value


def _reject_unknown(key: str, table: Mapping[str, Any], allowed: Collection[str]) -> None:
    for name in table:
        if name not in allowed:
            value = table[name]
            raise ConfigurationError(
                f"{key}.{name}",
                # A string under a misspelt key may be the secret it was meant to set
                # ("pasword = ..."): never echoed. Numbers and booleans are.
                REDACTED if isinstance(value, str) else value,
                f"unknown key{_suggest(str(name), allowed)}; "
                f"known keys: {', '.join(sorted(allowed))}",
            )


def _number(key: str, value: object) -> float:
    # bool is an int subclass; "true" as a threshold is a mistake, not 1.
    if isinstance(value, bool):
        raise ConfigurationError(key, value, "a number, not a boolean")
    # What failed to read as a number is never echoed (withheld): it may be a URL or
    # a password set under the wrong name. A number out of range is shown as read.
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigurationError(key, withheld(value), "a number") from None
    else:
        raise ConfigurationError(key, withheld(value), "a number")
    if not math.isfinite(number):
        raise ConfigurationError(key, withheld(value), "a finite number")
    return number


def _read(value: object, number: float) -> object:
    # A number as given; a numeric string as the number read from it (not echoed).
    return value if isinstance(value, (int, float)) else number


def _int_in(key: str, value: object, low: int, high: int) -> int:
    number = _number(key, value)
    if not number.is_integer() or not low <= number <= high:
        raise ConfigurationError(key, _read(value, number), f"a whole number from {low} to {high}")
    return int(number)


def _seconds(key: str, value: object, high: float) -> float:
    number = _number(key, value)
    if not 0 < number <= high:
        raise ConfigurationError(
            key, _read(value, number), f"seconds greater than 0 and at most {high:g}"
        )
    return number


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigurationError(key, redact_value(value), "true or false")


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, redact_value(value), "a non-empty string")
    return value.strip()


_BREAKER_KEYS = (
    "failure_threshold",
    "timeout_seconds",
    "success_threshold",
    "critical",
    "probe_timeout_seconds",
)


def _breaker(key: str, raw: object, base: BreakerConfig) -> BreakerConfig:
    table = _table(key, raw)
    _reject_unknown(key, table, _BREAKER_KEYS)
    return BreakerConfig(
        failure_threshold=_int_in(
            f"{key}.failure_threshold",
            table.get("failure_threshold", base.failure_threshold),
            1,
            100,
        ),
        timeout_seconds=_seconds(
            f"{key}.timeout_seconds", table.get("timeout_seconds", base.timeout_seconds), 300
        ),
        success_threshold=_int_in(
            f"{key}.success_threshold",
            table.get("success_threshold", base.success_threshold),
            1,
            50,
        ),
        critical=_bool(f"{key}.critical", table.get("critical", base.critical)),
        probe_timeout_seconds=_seconds(
            f"{key}.probe_timeout_seconds",
            table.get("probe_timeout_seconds", base.probe_timeout_seconds),
            300,
        ),
    )


def _breakers(raw: object) -> BreakersConfig:
    key = "common.circuit_breakers"
    table = _table(key, raw)
    _reject_unknown(key, table, ("enabled", "default_config", "component_configs"))
    default = _breaker(f"{key}.default_config", table.get("default_config"), BreakerConfig())
    components_raw = _table(f"{key}.component_configs", table.get("component_configs"))
    components: dict[str, BreakerConfig] = {}
    for name in sorted(set(DEFAULT_COMPONENT_CONFIGS) | set(components_raw)):
        # A documented component keeps its documented defaults unless overridden;
        # any other component inherits default_config.
        base = DEFAULT_COMPONENT_CONFIGS.get(name, default)
        components[name] = _breaker(
            f"{key}.component_configs.{name}", components_raw.get(name), base
        )
    return BreakersConfig(
        enabled=_bool(f"{key}.enabled", table.get("enabled", True)),
        default_config=default,
        component_configs=MappingProxyType(components),
    )


def _redis(raw: object, key: str = "common.cache.redis") -> RedisConfig:
    table = _table(key, raw)
    _reject_unknown(
        key, table, ("url", "max_connections", "connect_timeout_seconds", "socket_timeout_seconds")
    )
    defaults = RedisConfig()
    url_value = table.get("url", defaults.url)
    if not isinstance(url_value, str) or "://" not in url_value:
        shown = redact_url(url_value) if isinstance(url_value, str) else url_value
        raise ConfigurationError(
            f"{key}.url",
            shown,
            f"a URL such as redis://host:6379/0 (schemes: {', '.join(REDIS_URL_SCHEMES)})",
        )
    scheme = url_value.split("://", 1)[0].lower()
    if scheme not in REDIS_URL_SCHEMES:
        raise ConfigurationError(
            f"{key}.url",
            redact_url(url_value),
            f"one of the schemes {', '.join(REDIS_URL_SCHEMES)}"
            f"{_suggest(scheme, REDIS_URL_SCHEMES)}",
        )
    _check_url(f"{key}.url", url_value, scheme)
    return RedisConfig(
        url=url_value,
        max_connections=_int_in(
            f"{key}.max_connections",
            table.get("max_connections", defaults.max_connections),
            1,
            10_000,
        ),
        connect_timeout_seconds=_seconds(
            f"{key}.connect_timeout_seconds",
            table.get("connect_timeout_seconds", defaults.connect_timeout_seconds),
            300,
        ),
        socket_timeout_seconds=_seconds(
            f"{key}.socket_timeout_seconds",
            table.get("socket_timeout_seconds", defaults.socket_timeout_seconds),
            300,
        ),
    )


MAX_DATABASE = 15
"""Redis's default ``databases 16``: a URL may name database 0-15."""

# Query parameters redis-py would apply over the settings that keep a hung cache
# cheap (or over TLS verification): the setting to use instead, or why not at all.
_URL_QUERY_OVERRIDES = {
    "socket_timeout": "socket_timeout_seconds",
    "socket_connect_timeout": "connect_timeout_seconds",
    "timeout": "connect_timeout_seconds (it also bounds the wait for a pooled connection)",
    "max_connections": "max_connections",
    "retry_on_timeout": "nothing: the breaker is the retry policy, retries stay off",
    "retry_on_error": "nothing: the breaker is the retry policy, retries stay off",
    "health_check_interval": "nothing: the breaker's probes check health",
    "ssl_cert_reqs": "nothing: TLS certificate verification stays on",
    "ssl_check_hostname": "nothing: TLS host name checking stays on",
}


def _check_url(key: str, url: str, scheme: str) -> None:
    """Reject what would otherwise fail at run time, or silently change a setting.

    ``redis://``, ``rediss://`` and the cluster schemes need a host, a port (if any)
    from 1 to 65535 and a database (if any) from 0 to :data:`MAX_DATABASE`; no scheme
    may set a client option in its query string (they would beat the settings).
    """
    shown = redact_url(url)
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    if at and any(char in userinfo for char in "#/?@"):
        # urlsplit would cut the password there and read the rest as host, path or
        # fragment: the client would send a wrong password, logs would show the rest.
        raise ConfigurationError(
            key,
            shown,
            "a URL whose user name and password are percent-encoded "
            "(# -> %23, / -> %2F, ? -> %3F, @ -> %40)",
        )
    query = url.partition("?")[2].partition("#")[0]
    for name in parse_qs(query, keep_blank_values=True):
        if name.lower() in _URL_QUERY_OVERRIDES:
            raise ConfigurationError(
                key,
                shown,
                f"no {name!r} in the URL's query string: it would override the "
                f"configured value; use {_URL_QUERY_OVERRIDES[name.lower()]}",
            )
    if "sentinel" in scheme:
        return  # its own shape, checked where it is parsed (topology.parse_sentinel_url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # Port "notaport", 99999, an unclosed "[::1": urlsplit's own words (which
        # never hold the password: the user info was checked above).
        raise ConfigurationError(
            key, shown, f"a well-formed URL such as redis://host:6379/0 ({exc})"
        ) from None
    database: str | None = None
    if scheme == "unix":
        databases = parse_qs(parts.query).get("db")
        database = databases[0] if databases else None
    elif scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        if not parts.hostname:
            # "redis://" and "redis://:pw@/0" would quietly mean localhost:6379.
            raise ConfigurationError(key, shown, "a URL with a host, e.g. redis://cache:6379/0")
        if port == 0:
            raise ConfigurationError(key, shown, "a port from 1 to 65535")
        database = parts.path.strip("/") or None
    if database is not None and not (database.isdigit() and 0 <= int(database) <= MAX_DATABASE):
        raise ConfigurationError(
            key,
            shown,
            f"a database number from 0 to {MAX_DATABASE} after the host "
            f"(redis://host:6379/0), not {database!r}",
        )


def _near(raw: object) -> NearConfig:
    key = "common.cache.near"
    table = _table(key, raw)
    _reject_unknown(
        key,
        table,
        ("enabled", "max_entries", "ttl_seconds", "stale_if_error_seconds", "tracking"),
    )
    defaults = NearConfig()
    stale_value = table.get("stale_if_error_seconds", defaults.stale_if_error_seconds)
    stale = _number(f"{key}.stale_if_error_seconds", stale_value)
    if not 0 <= stale <= 86_400:
        raise ConfigurationError(
            f"{key}.stale_if_error_seconds", _read(stale_value, stale), "seconds from 0 to 86400"
        )
    tracking_value = table.get("tracking", defaults.tracking)
    tracking = _text(f"{key}.tracking", tracking_value).lower()
    if tracking not in NEAR_TRACKING_MODES:
        raise ConfigurationError(
            f"{key}.tracking",
            redact_value(tracking_value),
            f"one of {', '.join(NEAR_TRACKING_MODES)}{_suggest(tracking, NEAR_TRACKING_MODES)}",
        )
    return NearConfig(
        enabled=_bool(f"{key}.enabled", table.get("enabled", defaults.enabled)),
        max_entries=_int_in(
            f"{key}.max_entries", table.get("max_entries", defaults.max_entries), 1, 10_000_000
        ),
        ttl_seconds=_seconds(
            f"{key}.ttl_seconds", table.get("ttl_seconds", defaults.ttl_seconds), 86_400
        ),
        stale_if_error_seconds=stale,
        tracking=tracking,
    )


def parse_redis_config(raw: Mapping[str, Any], key: str) -> RedisConfig:
    """A :class:`RedisConfig` from a ``[common.cache.redis]``-shaped mapping held
    elsewhere (Django's ``CACHES`` entry); errors name ``key`` as the setting."""
    return _redis(raw, key)


_CACHE_SCALARS = (
    "enabled",
    "backend",
    "default_ttl_seconds",
    "key_prefix",
    "serializer",
    "max_pending_invalidations",
    "plugins",
)

PLUGINS_KEY = "common.cache.plugins"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def plugin_modules(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """The module names in ``common.cache.plugins`` of merged raw settings.

    A list of dotted module names, or one string of comma-separated names (handy in
    ``TASKER_COMMON__CACHE__PLUGINS``). Nothing is imported here.
    """
    common = raw.get("common")
    cache = common.get("cache") if isinstance(common, Mapping) else None
    value = cache.get("plugins", ()) if isinstance(cache, Mapping) else ()
    items: object = value.split(",") if isinstance(value, str) else value
    allowed = 'a list of module names to import, e.g. ["myapp.cache"]'
    if not isinstance(items, (list, tuple)):
        raise ConfigurationError(PLUGINS_KEY, redact_value(value), allowed)
    names: list[str] = []
    for item in items:
        name = item.strip() if isinstance(item, str) else item
        if name == "" and isinstance(value, str):
            continue  # "a.b," or an empty variable: nothing to import
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
            raise ConfigurationError(PLUGINS_KEY, redact_value(item), allowed)
        names.append(name)
    return tuple(names)


def _cache(raw: object, known_backends: Collection[str]) -> CacheConfig:
    key = "common.cache"
    table = _table(key, raw)
    defaults = CacheConfig()
    # Sub-tables hold backend options (redis, memory, or a user backend's own);
    # scalars must be known keys, so a typo is an error rather than a silent default.
    scalars = {name: value for name, value in table.items() if not isinstance(value, Mapping)}
    for name, value in scalars.items():
        if name in _CACHE_TABLES or (name in known_backends and name not in _CACHE_SCALARS):
            # `redis = "redis://..."`: the right name, but a value where a table goes.
            raise ConfigurationError(
                f"{key}.{name}",
                REDACTED if isinstance(value, str) else value,
                f"a table, not a single value: [{key}.{name}] with its keys, e.g. "
                + ('url = "redis://host:6379/0"' if name == "redis" else "one key per line"),
            )
    _reject_unknown(key, scalars, _CACHE_SCALARS)
    backend = _text(f"{key}.backend", table.get("backend", defaults.backend)).lower()
    if backend not in known_backends:
        raise ConfigurationError(
            f"{key}.backend",
            redact_value(backend),
            f"a registered cache backend{_suggest(backend, known_backends)}; "
            f"known: {', '.join(sorted(known_backends))}",
        )
    # After the backend: an unknown backend's own table is best explained by that.
    tables = (*_CACHE_TABLES, *known_backends)
    for name, value in table.items():
        if isinstance(value, Mapping) and name not in tables:
            raise ConfigurationError(
                f"{key}.{name}",
                _A_TABLE,
                f"unknown table{_suggest(str(name), tables)}; tables here: "
                f"{', '.join(_CACHE_TABLES)} or a registered backend's name "
                f"({', '.join(sorted(set(known_backends) - set(_CACHE_TABLES)))})",
            )
    serializer = _text(f"{key}.serializer", table.get("serializer", defaults.serializer)).lower()
    if serializer not in SERIALIZERS:
        raise ConfigurationError(
            f"{key}.serializer", redact_value(serializer), f"one of {', '.join(SERIALIZERS)}"
        )
    memory_table = _table(f"{key}.memory", table.get("memory"))
    _reject_unknown(f"{key}.memory", memory_table, ("max_capacity",))
    options = _table(f"{key}.{backend}", table.get(backend))
    return CacheConfig(
        enabled=_bool(f"{key}.enabled", table.get("enabled", defaults.enabled)),
        backend=backend,
        default_ttl_seconds=_int_in(
            f"{key}.default_ttl_seconds",
            table.get("default_ttl_seconds", defaults.default_ttl_seconds),
            1,
            365 * 24 * 3600,
        ),
        key_prefix=_text(f"{key}.key_prefix", table.get("key_prefix", defaults.key_prefix)),
        serializer=serializer,
        max_pending_invalidations=_int_in(
            f"{key}.max_pending_invalidations",
            table.get("max_pending_invalidations", defaults.max_pending_invalidations),
            0,
            1_000_000,
        ),
        redis=_redis(table.get("redis")),
        memory=MemoryConfig(
            max_capacity=_int_in(
                f"{key}.memory.max_capacity",
                memory_table.get("max_capacity", MemoryConfig.max_capacity),
                1,
                100_000_000,
            )
        ),
        near=_near(table.get("near")),
        backend_options=MappingProxyType(dict(options)),
        plugins=plugin_modules({"common": {"cache": table}}),
    )


def parse_settings(
    raw: Mapping[str, Any], *, env: str, known_backends: Collection[str]
) -> Settings:
    """Validate merged raw settings (lower-case keys) into a :class:`Settings`.

    Only the ``common`` table is read; other top-level tables belong to the
    application that shares the settings files.
    """
    for name in raw:
        if name != "common" and _close(str(name), ("common",)):
            raise ConfigurationError(str(name), REDACTED, "unknown table (did you mean 'common'?)")
    common = _table("common", raw.get("common"))
    # Other tables under [common] may belong to the application sharing these files;
    # one spelt like a library table is a typo that would silently mean "defaults".
    for name in common:
        if name not in _COMMON_TABLES and _close(str(name), _COMMON_TABLES):
            raise ConfigurationError(
                f"common.{name}",
                _A_TABLE,
                f"unknown table{_suggest(str(name), _COMMON_TABLES)}; the library reads "
                f"{', '.join(f'common.{table}' for table in _COMMON_TABLES)}",
            )
    return Settings(
        env=env,
        circuit_breakers=_breakers(common.get("circuit_breakers")),
        cache=_cache(common.get("cache"), known_backends),
    )

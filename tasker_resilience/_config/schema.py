"""Typed, frozen, validated configuration.

Everything past this module receives these objects, never raw settings: a bad value
is reported once, here, with the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

from tasker_resilience._config.redact import REDACTED, redact_url, redact_value, withheld
from tasker_resilience._config.suggest import did_you_mean
from tasker_resilience._errors import ConfigurationError

__all__ = [
    "CACHE_BREAKER",
    "DEFAULT_CACHE",
    "DEFAULT_COMPONENT_CONFIGS",
    "HOST_SHARING_KEYS",
    "PLUGINS_KEY",
    "REDIS_BACKENDS",
    "REDIS_URL_SCHEMES",
    "BreakerConfig",
    "BreakersConfig",
    "CacheConfig",
    "HostSharingConfig",
    "MemoryConfig",
    "NearConfig",
    "RedisConfig",
    "Settings",
    "TelemetryConfig",
    "cache_breaker_name",
    "check_cache_name",
    "check_slow_calls_can_be_seen",
    "parse_redis_config",
    "parse_settings",
    "plugin_modules",
]

T = TypeVar("T")


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
    window_seconds: float = 0.0
    """The sliding time window of the rate rules (0: the rate rules are off; else
    0.1-3600). The breaker then also trips on the failure rate or the slow-call rate of
    the calls that ended in the last ``window_seconds``."""
    minimum_calls: int = 20
    """Calls in the window before a rate may trip the breaker (1-100000)."""
    failure_rate_threshold: float = 0.5
    """The fraction of failed calls in the window that trips it (0 < x <= 1)."""
    slow_call_seconds: float = 0.0
    """A call that takes longer is slow, even when it succeeds (0: off; else >0, <=300).
    A slow probe counts as a failed one."""
    slow_call_rate_threshold: float = 0.5
    """The fraction of slow calls in the window that trips it (0 < x <= 1)."""
    max_timeout_seconds: float | None = None
    """Each re-open after a failed probe doubles the open time, jittered, up to this
    (``timeout_seconds``-3600). None: every open lasts ``timeout_seconds``."""

    @property
    def rate_rules(self) -> bool:
        """True when the sliding window and its rate rules are on."""
        return self.window_seconds > 0


DEFAULT_COMPONENT_CONFIGS: Mapping[str, BreakerConfig] = MappingProxyType(
    {
        "cache": BreakerConfig(5, 30.0, 2),
        "pgmq": BreakerConfig(5, 30.0, 2),
        "task_readiness": BreakerConfig(10, 60.0, 3),
    }
)


@dataclass(frozen=True)
class HostSharingConfig:
    """The ``[common.circuit_breakers.host_sharing]`` section: worker processes of one
    host share what their breakers learn through a local channel (the caching guide,
    "Host sharing"). Off by default: with it off nothing changes."""

    enabled: bool = False
    directory: str = ""
    """Where the channel's files live; empty: ``$XDG_RUNTIME_DIR/tasker-resilience``, else
    ``/dev/shm/tasker-resilience-<uid>``. An absolute path; it must belong to this user
    and be private (mode 0700), or sharing is refused (one WARNING) and each process
    decides alone."""
    poll_interval_seconds: float = 0.02
    """How often a process looks at what the others published (0.001-1): the time a
    hint takes to reach an idle process."""
    scope: str = ""
    """Which processes share; empty: those of this user with the same key prefix, cache
    backend and URL (its password left out). A name of your own groups processes that
    reach one backend by different addresses (up to 200 printable characters)."""


HOST_SHARING_KEYS = ("enabled", "directory", "poll_interval_seconds", "scope")


@dataclass(frozen=True)
class BreakersConfig:
    """The ``[common.circuit_breakers]`` section."""

    enabled: bool = True
    default_config: BreakerConfig = field(default_factory=BreakerConfig)
    component_configs: Mapping[str, BreakerConfig] = field(
        default_factory=lambda: DEFAULT_COMPONENT_CONFIGS
    )
    host_sharing: HostSharingConfig = field(default_factory=HostSharingConfig)

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


REDIS_BACKENDS = ("redis", "dragonfly")
"""The built-in backends that ``[common.cache.redis]`` configures."""


@dataclass(frozen=True)
class RedisConfig:
    """The ``[common.cache.redis]`` section, used by both ``redis`` and ``dragonfly``."""

    url: str = "redis://localhost:6379/0"
    max_connections: int = 10
    connect_timeout_seconds: float = 0.5
    socket_timeout_seconds: float = 0.25
    probe_socket_timeout_seconds: float = 0.1
    """The I/O budget of a half-open probe (at most ``socket_timeout_seconds``; unset,
    0.1 or the socket timeout if that is shorter): probing a server that is still
    broken costs little."""

    @property
    def redacted_url(self) -> str:
        """The URL with its password masked: the only form that may be logged or shown."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        # dataclass repr would print the password; repr reaches logs and tracebacks.
        return (
            f"RedisConfig(url={self.redacted_url!r}, max_connections={self.max_connections}, "
            f"connect_timeout_seconds={self.connect_timeout_seconds}, "
            f"socket_timeout_seconds={self.socket_timeout_seconds}, "
            f"probe_socket_timeout_seconds={self.probe_socket_timeout_seconds})"
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
    health_probe_interval_seconds: float = 5.0
    """The health report checks the backend at most once per this many seconds and
    reuses the answer in between (>0, <=300): a storm of health requests costs the
    server one check per interval."""
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


DEFAULT_CACHE: Final = "default"
"""The name of the ``[common.cache]`` cache (``tr.get_cache()``, ``res.cache``)."""
CACHE_BREAKER: Final = "cache"
"""The breaker of the ``default`` cache; a named cache's is ``cache_<name>``."""
_CACHE_NAME = re.compile(r"[a-z][a-z0-9_]*")


def cache_breaker_name(cache: str) -> str:
    """The breaker guarding cache ``cache``: ``cache`` for the default one, else
    ``cache_<name>``. Underscores, not dots: the name is a bare key in TOML
    (``[common.circuit_breakers.component_configs.cache_sessions]``) and a segment of
    a variable (``TASKER_COMMON__CIRCUIT_BREAKERS__COMPONENT_CONFIGS__CACHE_SESSIONS__...``),
    where a dot cannot be written."""
    return CACHE_BREAKER if cache == DEFAULT_CACHE else f"{CACHE_BREAKER}_{cache}"


def check_cache_name(key: str, name: object) -> str:
    """``name`` if it can name a cache: lower-case letters, digits and underscores,
    starting with a letter (it becomes part of a breaker name and of variable names)."""
    if not isinstance(name, str) or not _CACHE_NAME.fullmatch(name):
        raise ConfigurationError(
            key,
            name,
            "a cache name of lower-case letters, digits and underscores, starting with a "
            "letter (e.g. sessions, page_fragments)",
        )
    return name


@dataclass(frozen=True)
class TelemetryConfig:
    """``[common.telemetry]``: what the process reports beyond logs and Prometheus."""

    opentelemetry: bool = True
    """Report through OpenTelemetry's global providers when its API is installed: metrics,
    span attributes per cache call, a span event per breaker transition. Read from the
    process-wide settings (``configure()``); false silences all three."""


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` decided, in one immutable object."""

    env: str = "development"
    circuit_breakers: BreakersConfig = field(default_factory=BreakersConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    """The ``default`` cache (``[common.cache]``)."""
    caches: Mapping[str, CacheConfig] = field(default_factory=lambda: MappingProxyType({}))
    """Every cache by name: ``default`` (always, the same object as :attr:`cache`) and
    each ``[common.caches.<name>]``."""
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def __post_init__(self) -> None:
        # `default` is `cache`, whichever of the two the caller filled in.
        named = sorted((name, c) for name, c in self.caches.items() if name != DEFAULT_CACHE)
        caches = MappingProxyType({DEFAULT_CACHE: self.cache, **dict(named)})
        object.__setattr__(self, "caches", caches)


# --- parsing -----------------------------------------------------------------------------


class _Table:
    """How an error shows a table's value: its keys are not the point (and may be secret)."""

    def __repr__(self) -> str:
        return "[table]"


_A_TABLE = _Table()
_COMMON_TABLES = ("cache", "caches", "circuit_breakers", "telemetry")
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
                f"unknown key{did_you_mean(str(name), allowed)}; "
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


def _seconds_between(key: str, value: object, low: float, high: float) -> float:
    """Seconds from ``low`` to ``high``, both allowed (0 included where ``low`` is 0)."""
    number = _number(key, value)
    if not low <= number <= high:
        raise ConfigurationError(key, _read(value, number), f"seconds from {low:g} to {high:g}")
    return number


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigurationError(key, redact_value(value), "true or false")


def _text(key: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # TASKER_COMMON__CACHE__KEY_PREFIX=123 arrives as the int 123: its digits are
        # the text that was meant (a float or a boolean may not be: "1e3", "True").
        value = str(value)
    if isinstance(value, (bool, float)):
        variable = "TASKER_" + key.upper().replace(".", "__")
        typed = str(value).lower() if isinstance(value, bool) else str(value)
        raise ConfigurationError(
            key,
            value,
            "a non-empty string; a TASKER_ variable that reads as a number or true/false "
            f"needs quotes inside the value, e.g. {variable}='\"{typed}\"'",
        )
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, redact_value(value), "a non-empty string")
    return value.strip()


_BREAKER_KEYS = (
    "failure_threshold",
    "timeout_seconds",
    "success_threshold",
    "critical",
    "probe_timeout_seconds",
    "window_seconds",
    "minimum_calls",
    "failure_rate_threshold",
    "slow_call_seconds",
    "slow_call_rate_threshold",
    "max_timeout_seconds",
)
_SEED_KEYS = _BREAKER_KEYS[:5]
"""The keys a documented component (cache, pgmq, task_readiness) takes from its own
documented defaults; the others (the rate rules, the open time's growth) it takes from
``default_config``, like every other breaker."""
MAX_OPEN_SECONDS = 3600
"""The longest ``max_timeout_seconds`` and ``window_seconds``."""


def _fraction(key: str, value: object) -> float:
    number = _number(key, value)
    if not 0 < number <= 1:
        raise ConfigurationError(
            key,
            _read(value, number),
            "a fraction greater than 0 and at most 1 (0.5: half the calls in the window)",
        )
    return number


def _seconds_or_off(key: str, value: object, low: float, high: float) -> float:
    """0 (the rule is off), or seconds from ``low`` (above 0 when ``low`` is 0) to ``high``."""
    number = _number(key, value)
    if number != 0 and not low <= number <= high:
        lowest = f"from {low:g} to" if low else "greater than 0 and at most"
        raise ConfigurationError(key, _read(value, number), f"0 (off) or seconds {lowest} {high:g}")
    return number


def _max_timeout(
    key: str, table: Mapping[str, Any], base: BreakerConfig, timeout: float
) -> float | None:
    """``max_timeout_seconds``: set here (checked against this table's timeout), or
    inherited; an inherited one below this breaker's own ``timeout_seconds`` means no
    growth for it (its documented open time stays what it is)."""
    name = f"{key}.max_timeout_seconds"
    if "max_timeout_seconds" not in table:
        inherited = base.max_timeout_seconds
        return inherited if inherited is not None and inherited > timeout else None
    value = table["max_timeout_seconds"]
    number = _number(name, value)
    if not timeout <= number <= MAX_OPEN_SECONDS:
        raise ConfigurationError(
            name,
            value,
            f"seconds from timeout_seconds ({timeout:g}) to {MAX_OPEN_SECONDS}: the open "
            "time starts at timeout_seconds and grows up to this",
        )
    return number


def _check_rules_can_trip(key: str, table: Mapping[str, Any], config: BreakerConfig) -> None:
    """A rule tuned here that can never trip is a mistake: say which key is missing."""
    defaults = BreakerConfig()
    if not config.rate_rules:
        for name in ("slow_call_seconds", "minimum_calls", "failure_rate_threshold"):
            if name in table and getattr(config, name) != getattr(defaults, name):
                raise ConfigurationError(
                    f"{key}.{name}",
                    table[name],
                    f"{key}.window_seconds > 0 as well: the rate rules are measured over "
                    "that window, and with window_seconds = 0 (off) this rule could never trip",
                )
    if (
        not config.slow_call_seconds
        and "slow_call_rate_threshold" in table
        and config.slow_call_rate_threshold != defaults.slow_call_rate_threshold
    ):
        raise ConfigurationError(
            f"{key}.slow_call_rate_threshold",
            table["slow_call_rate_threshold"],
            f"{key}.slow_call_seconds > 0 as well: with slow_call_seconds = 0 no call is "
            "slow, so this rule could never trip",
        )


def _breaker(key: str, raw: object, base: BreakerConfig) -> BreakerConfig:
    table = _table(key, raw)
    _reject_unknown(key, table, _BREAKER_KEYS)

    def read(name: str, check: Callable[..., T], *limits: float) -> T:
        """``name`` from this table, else from ``base``, checked by ``check``."""
        return check(f"{key}.{name}", table.get(name, getattr(base, name)), *limits)

    timeout = read("timeout_seconds", _seconds, 300)
    config = BreakerConfig(
        failure_threshold=read("failure_threshold", _int_in, 1, 100),
        timeout_seconds=timeout,
        success_threshold=read("success_threshold", _int_in, 1, 50),
        critical=read("critical", _bool),
        probe_timeout_seconds=read("probe_timeout_seconds", _seconds, 300),
        window_seconds=read("window_seconds", _seconds_or_off, 0.1, MAX_OPEN_SECONDS),
        minimum_calls=read("minimum_calls", _int_in, 1, 100_000),
        failure_rate_threshold=read("failure_rate_threshold", _fraction),
        slow_call_seconds=read("slow_call_seconds", _seconds_or_off, 0, 300),
        slow_call_rate_threshold=read("slow_call_rate_threshold", _fraction),
        max_timeout_seconds=_max_timeout(key, table, base, timeout),
    )
    _check_rules_can_trip(key, table, config)
    return config


def check_slow_calls_can_be_seen(
    breaker_key: str, breaker: BreakerConfig, redis_key: str, redis: RedisConfig
) -> None:
    """A cache's slow-call rule must fit under its socket timeout: a reply later than
    the timeout is a failed call, never a slow one, so ``slow_call_seconds`` at or
    above ``socket_timeout_seconds`` is a rule that can never trip."""
    slow = breaker.slow_call_seconds
    if breaker.rate_rules and slow and slow >= redis.socket_timeout_seconds:
        raise ConfigurationError(
            f"{breaker_key}.slow_call_seconds",
            slow,
            f"less than {redis_key}.socket_timeout_seconds ({redis.socket_timeout_seconds:g}): "
            "a reply later than the socket timeout is a failed call, never a slow one, so "
            "this slow-call rule could never trip",
        )


def _host_sharing(raw: object) -> HostSharingConfig:
    key = "common.circuit_breakers.host_sharing"
    table = _table(key, raw)
    _reject_unknown(key, table, HOST_SHARING_KEYS)
    defaults = HostSharingConfig()
    directory_value = table.get("directory", defaults.directory)
    if not isinstance(directory_value, str) or (
        directory_value.strip() and not directory_value.strip().startswith("/")
    ):
        raise ConfigurationError(
            f"{key}.directory",
            directory_value,
            'an absolute path such as "/run/user/1000/tasker-resilience", or "" for the '
            "default ($XDG_RUNTIME_DIR, else /dev/shm)",
        )
    interval = _seconds_between(
        f"{key}.poll_interval_seconds",
        table.get("poll_interval_seconds", defaults.poll_interval_seconds),
        0.001,
        1.0,
    )
    scope_value = table.get("scope", defaults.scope)
    if not isinstance(scope_value, str) or len(scope_value) > 200 or not scope_value.isprintable():
        raise ConfigurationError(
            f"{key}.scope", scope_value, 'up to 200 printable characters, or "" (the default)'
        )
    return HostSharingConfig(
        enabled=_bool(f"{key}.enabled", table.get("enabled", defaults.enabled)),
        directory=directory_value.strip(),
        poll_interval_seconds=interval,
        scope=scope_value.strip(),
    )


def _breakers(raw: object) -> BreakersConfig:
    key = "common.circuit_breakers"
    table = _table(key, raw)
    _reject_unknown(key, table, ("enabled", "default_config", "component_configs", "host_sharing"))
    default = _breaker(f"{key}.default_config", table.get("default_config"), BreakerConfig())
    components_raw = _table(f"{key}.component_configs", table.get("component_configs"))
    components: dict[str, BreakerConfig] = {}
    for name in sorted(set(DEFAULT_COMPONENT_CONFIGS) | set(components_raw)):
        # A documented component keeps its documented thresholds and timeouts unless
        # overridden, and takes the rest (rate rules, open time growth) from
        # default_config; any other component inherits default_config whole.
        documented = DEFAULT_COMPONENT_CONFIGS.get(name)
        base = (
            default
            if documented is None
            else replace(default, **{seed: getattr(documented, seed) for seed in _SEED_KEYS})
        )
        components[name] = _breaker(
            f"{key}.component_configs.{name}", components_raw.get(name), base
        )
    return BreakersConfig(
        enabled=_bool(f"{key}.enabled", table.get("enabled", True)),
        default_config=default,
        component_configs=MappingProxyType(components),
        host_sharing=_host_sharing(table.get("host_sharing")),
    )


def _redis(raw: object, key: str = "common.cache.redis") -> RedisConfig:
    table = _table(key, raw)
    _reject_unknown(
        key,
        table,
        (
            "url",
            "max_connections",
            "connect_timeout_seconds",
            "socket_timeout_seconds",
            "probe_socket_timeout_seconds",
        ),
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
            f"{did_you_mean(scheme, REDIS_URL_SCHEMES)}",
        )
    _check_url(f"{key}.url", url_value, scheme)
    socket_timeout = _seconds(
        f"{key}.socket_timeout_seconds",
        table.get("socket_timeout_seconds", defaults.socket_timeout_seconds),
        300,
    )
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
        socket_timeout_seconds=socket_timeout,
        probe_socket_timeout_seconds=_probe_timeout(key, table, socket_timeout),
    )


def _probe_timeout(key: str, table: Mapping[str, Any], socket_timeout: float) -> float:
    if "probe_socket_timeout_seconds" not in table:
        return min(RedisConfig.probe_socket_timeout_seconds, socket_timeout)
    value = table["probe_socket_timeout_seconds"]
    number = _number(f"{key}.probe_socket_timeout_seconds", value)
    if not 0 < number <= socket_timeout:
        raise ConfigurationError(
            f"{key}.probe_socket_timeout_seconds",
            value,
            f"seconds greater than 0 and at most socket_timeout_seconds ({socket_timeout:g}): "
            "a probe's budget is the short one",
        )
    return number


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


def _near(raw: object, key: str = "common.cache.near") -> NearConfig:
    table = _table(key, raw)
    _reject_unknown(
        key,
        table,
        ("enabled", "max_entries", "ttl_seconds", "stale_if_error_seconds", "tracking"),
    )
    defaults = NearConfig()
    stale = _seconds_between(
        f"{key}.stale_if_error_seconds",
        table.get("stale_if_error_seconds", defaults.stale_if_error_seconds),
        0,
        86_400,
    )
    tracking_value = table.get("tracking", defaults.tracking)
    tracking = _text(f"{key}.tracking", tracking_value).lower()
    if tracking not in NEAR_TRACKING_MODES:
        raise ConfigurationError(
            f"{key}.tracking",
            redact_value(tracking_value),
            f"one of {', '.join(NEAR_TRACKING_MODES)}{did_you_mean(tracking, NEAR_TRACKING_MODES)}",
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
    "health_probe_interval_seconds",
    "plugins",
)
_NAMED_CACHE_SCALARS = tuple(name for name in _CACHE_SCALARS if name != "plugins")
"""``plugins`` is read from ``[common.cache]`` only: imports are per process, not per cache."""

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


BACKEND_REGISTRATION = (
    "a backend of your own is known once tr.register_backend(name, factory) runs in a "
    "module listed in common.cache.plugins (or given to the CLI's --import MODULE), or "
    "through an entry point in the group tasker_resilience.cache_backends"
)
"""How a backend name becomes known: the end of every unknown-backend error."""


def _cache(
    raw: object,
    known_backends: Collection[str],
    key: str = "common.cache",
    defaults: CacheConfig | None = None,
) -> CacheConfig:
    """One cache's table: ``[common.cache]``, or ``[common.caches.<name>]`` (``key``)
    whose unset keys take ``defaults`` (the built-in ones with a key prefix of its own)."""
    table = _table(key, raw)
    named = defaults is not None
    defaults = defaults or CacheConfig()
    if named and "plugins" in table:
        raise ConfigurationError(
            f"{key}.plugins",
            table["plugins"],
            "plugins only in [common.cache]: they are imported once for the process, and "
            "the backends they register serve every cache",
        )
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
    _reject_unknown(key, scalars, _NAMED_CACHE_SCALARS if named else _CACHE_SCALARS)
    backend = _text(f"{key}.backend", table.get("backend", defaults.backend)).lower()
    if backend not in known_backends:
        raise ConfigurationError(
            f"{key}.backend",
            redact_value(backend),
            f"a registered cache backend{did_you_mean(backend, known_backends)}; "
            f"known: {', '.join(sorted(known_backends))}; {BACKEND_REGISTRATION}",
        )
    # After the backend: an unknown backend's own table is best explained by that.
    tables = (*_CACHE_TABLES, *known_backends)
    for name, value in table.items():
        if isinstance(value, Mapping) and name not in tables:
            raise ConfigurationError(
                f"{key}.{name}",
                _A_TABLE,
                f"unknown table{did_you_mean(str(name), tables)}; tables here: "
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
        health_probe_interval_seconds=_seconds(
            f"{key}.health_probe_interval_seconds",
            table.get("health_probe_interval_seconds", defaults.health_probe_interval_seconds),
            300,
        ),
        redis=_redis(table.get("redis"), f"{key}.redis"),
        memory=MemoryConfig(
            max_capacity=_int_in(
                f"{key}.memory.max_capacity",
                memory_table.get("max_capacity", MemoryConfig.max_capacity),
                1,
                100_000_000,
            )
        ),
        near=_near(table.get("near"), f"{key}.near"),
        backend_options=MappingProxyType(dict(options)),
        plugins=() if named else plugin_modules({"common": {"cache": table}}),
    )


def _named_caches(raw: object, known_backends: Collection[str]) -> dict[str, CacheConfig]:
    """``[common.caches.<name>]``: each a cache of its own, with the keys of
    ``[common.cache]``. Nothing is inherited from ``[common.cache]`` (a cache on another
    server must not pick up the default one's URL); the key prefix defaults to
    ``tasker-<name>`` so two caches on one server never share keys by accident."""
    key = "common.caches"
    table = _table(key, raw)
    caches: dict[str, CacheConfig] = {}
    for name, value in table.items():
        if name == DEFAULT_CACHE:
            raise ConfigurationError(
                f"{key}.{name}",
                _A_TABLE,
                "the cache named 'default' is [common.cache]; name this one otherwise",
            )
        check_cache_name(f"{key}.{name}", name)
        caches[name] = _cache(
            value,
            known_backends,
            f"{key}.{name}",
            CacheConfig(key_prefix=f"tasker-{name}"),
        )
    return caches


def _key_space(config: CacheConfig) -> tuple[str, str] | None:
    """Where a distributed cache keeps its keys: (server URL, key prefix)."""
    if not config.enabled or config.backend in ("memory", "noop"):
        return None
    return config.redis.url, config.key_prefix


def _check_apart(caches: Mapping[str, CacheConfig]) -> None:
    """Refuse two caches whose keys would mix: on one server with the same key prefix
    (or one prefix inside the other's ``prefix:*``), each one's ``delete_pattern``,
    replayed invalidations and overflow clean-up would remove the other's entries."""
    seen: list[tuple[str, tuple[str, str]]] = []
    for name, config in caches.items():
        space = _key_space(config)
        if space is None:
            continue
        url, prefix = space
        for other, (other_url, other_prefix) in seen:
            inside = prefix.startswith(other_prefix + ":") or other_prefix.startswith(prefix + ":")
            if url == other_url and (prefix == other_prefix or inside):
                raise ConfigurationError(
                    f"{_cache_key(name)}.key_prefix",
                    prefix,
                    f"a key prefix apart from cache {other!r} ({other_prefix!r}) on the same "
                    "server: their keys would mix and each one's clean-up would delete the "
                    "other's entries",
                )
        seen.append((name, space))


def _cache_key(name: str) -> str:
    return "common.cache" if name == DEFAULT_CACHE else f"common.caches.{name}"


def _telemetry(raw: object) -> TelemetryConfig:
    key = "common.telemetry"
    table = _table(key, raw)
    _reject_unknown(key, table, ("opentelemetry",))
    return TelemetryConfig(
        opentelemetry=_bool(
            f"{key}.opentelemetry", table.get("opentelemetry", TelemetryConfig.opentelemetry)
        )
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
                f"unknown table{did_you_mean(str(name), _COMMON_TABLES)}; the library reads "
                f"{', '.join(f'common.{table}' for table in _COMMON_TABLES)}",
            )
    default = _cache(common.get("cache"), known_backends)
    named = _named_caches(common.get("caches"), known_backends)
    _check_apart({DEFAULT_CACHE: default, **named})
    settings = Settings(
        env=env,
        circuit_breakers=_breakers(common.get("circuit_breakers")),
        cache=default,
        caches=MappingProxyType(named),
        telemetry=_telemetry(common.get("telemetry")),
    )
    breakers = settings.circuit_breakers
    for name, cache in settings.caches.items():
        if cache.backend not in REDIS_BACKENDS:
            continue
        # A named cache's breaker without an entry of its own takes the cache breaker's.
        breaker = cache_breaker_name(name)
        if breaker not in breakers.component_configs:
            breaker = CACHE_BREAKER
        check_slow_calls_can_be_seen(
            f"common.circuit_breakers.component_configs.{breaker}",
            breakers.for_component(breaker),
            f"{_cache_key(name)}.redis",
            cache.redis,
        )
    return settings

"""Which redis-py this library works with, checked before a Redis backend is built.

The Redis backend reaches into redis-py's clients, pools and connections, where a
release outside the tested range is most likely to break it. Found only at the first
cache call, such a break looks like an outage (the call fails, the cache stays a miss
for ever on a healthy server); found here, it fails ``configure()`` with the installed
version and the range that works. This module imports nothing of the backend itself,
so an incompatible redis-py cannot fail the check with an import error of its own.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import TYPE_CHECKING

from tasker_resilience._errors import ConfigurationError

if TYPE_CHECKING:
    from tasker_resilience._cache.backends.contract import CacheBackend
    from tasker_resilience._config.schema import CacheConfig

__all__ = ["SUPPORTED_REDIS", "check_redis_py", "redis_from_config", "redis_py_version"]

_LOGGER = logging.getLogger("tasker_resilience.cache")

SUPPORTED_REDIS = ">=7.4,!=8.0.0,<9"
"""The ``redis`` requirement of pyproject.toml (a test keeps the two equal): the range
the whole suite passes at both ends of (``make test-lowest``, ``make test-newest``)."""
# The releases inside the range the library cannot work with, and why.
_BROKEN = {
    "8.0.0": "its connections over a unix socket fail (maintenance notifications ask "
    "for a host); fixed in 8.0.1",
}

# What the backend calls that redis-py has not always had, checked by name so a
# missing one is reported here rather than as a failed cache call:
# (module, attribute path).
_NEEDED = (
    ("redis", "Redis.from_pool"),  # redis-py 5.0.1
    ("redis.asyncio", "Redis.from_pool"),  # 5.0.1
    ("redis.asyncio", "Redis.aclose"),  # 5.0.1
    ("redis", "BlockingConnectionPool"),
    ("redis.backoff", "NoBackoff"),
    ("redis.retry", "Retry"),
    ("redis.exceptions", "MaxConnectionsError"),
)


def redis_py_version() -> str:
    """The installed redis-py's version, as it reports it."""
    import redis

    return str(getattr(redis, "__version__", "unknown"))


def _release(version: str) -> tuple[int, ...]:
    """``"5.0.1"`` -> ``(5, 0, 1)``; pre-release and local parts are ignored."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _bound(operator: str) -> tuple[int, ...]:
    match = re.search(operator + r"([\d.]+)", SUPPORTED_REDIS)
    assert match is not None, SUPPORTED_REDIS
    return _release(match.group(1))


_LOWEST, _BELOW = _bound(">="), _bound("<")


_MISSING = object()


def _missing() -> list[str]:
    missing = []
    for module_name, attr_path in _NEEDED:
        try:
            target: object = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        for attr in attr_path.split("."):
            target = getattr(target, attr, _MISSING)
        if target is _MISSING:
            missing.append(f"{module_name}.{attr_path}")
    return missing


def check_redis_py() -> None:
    """Raise :class:`ConfigurationError` (and log it at ERROR) when the installed
    redis-py is below the supported range or lacks what the backend calls; log a
    WARNING when it is above the tested range but has everything."""
    version = redis_py_version()
    release = _release(version)
    missing = _missing()
    broken = _BROKEN.get(".".join(map(str, release)))
    if missing or release < _LOWEST or broken:
        lacks = f"it lacks {', '.join(missing)}" if missing else broken or "it is too old"
        error = ConfigurationError(
            "redis-py",
            version,
            f"tasker-resilience needs redis{SUPPORTED_REDIS} ({lacks}); "
            f"install a version in that range: pip install 'redis{SUPPORTED_REDIS}'",
        )
        _LOGGER.error("%s", error)
        raise error
    if release >= _BELOW:
        _LOGGER.warning(
            "redis-py %s is newer than the range tasker-resilience is tested with "
            "(redis%s); report any failure you see",
            version,
            SUPPORTED_REDIS,
        )


def redis_from_config(config: CacheConfig) -> CacheBackend:
    """The factory behind ``backend = "redis"`` and ``"dragonfly"``: the redis-py
    check first, then the backend modules (which import redis-py's internals)."""
    check_redis_py()
    from tasker_resilience._cache.backends.cluster_backend import redis_from_config as build

    return build(config)

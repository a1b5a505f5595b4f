"""tasker-resilience: circuit breakers that keep a service fast while its cache fails.

import tasker_resilience as tr

res = tr.configure()                       # layered settings for $TASKER_ENV

@tr.breaker_guarded("pgmq", fallback=None)
def publish(message: dict) -> str: ...

@tr.cached(ttl=600, cache="sessions")     # a [common.caches.sessions] cache
def load_session(token: str) -> dict: ...
"""

from __future__ import annotations

# The one place the version is written: pyproject.toml reads it (setuptools' dynamic
# version), and CHANGELOG.md's newest section names it when it is released.
__version__ = "0.2.0.dev0"

from tasker_resilience._breakers.breaker import Breaker
from tasker_resilience._breakers.guard import BreakerHandle, breaker_guarded
from tasker_resilience._breakers.policy import failure_policy
from tasker_resilience._breakers.registry import BreakerRegistry
from tasker_resilience._cache.backends.contract import (
    CacheBackend,
    InProcessAsyncMixin,
    register_backend,
    unregister_backend,
)
from tasker_resilience._cache.backends.memory_backend import glob_to_regex
from tasker_resilience._cache.cached import CachedFunction, cached
from tasker_resilience._cache.provider import CacheProvider
from tasker_resilience._cache.serializers import SerializationError
from tasker_resilience._config.schema import (
    BreakerConfig,
    CacheConfig,
    NearConfig,
    RedisConfig,
    Settings,
)
from tasker_resilience._errors import CircuitOpenError, ConfigurationError
from tasker_resilience._operations.http import health_asgi_app, health_wsgi_app
from tasker_resilience._operations.metrics import register_metrics
from tasker_resilience._operations.telemetry import install as _install_telemetry
from tasker_resilience._operations.telemetry import instrument_opentelemetry
from tasker_resilience._resilience import (
    Resilience,
    configure,
    current,
    get_breaker,
    get_cache,
)

__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerHandle",
    "BreakerRegistry",
    "CacheBackend",
    "CacheConfig",
    "CacheProvider",
    "CachedFunction",
    "CircuitOpenError",
    "ConfigurationError",
    "InProcessAsyncMixin",
    "NearConfig",
    "RedisConfig",
    "Resilience",
    "SerializationError",
    "Settings",
    "breaker_guarded",
    "cached",
    "configure",
    "current",
    "failure_policy",
    "get_breaker",
    "get_cache",
    "glob_to_regex",
    "health_asgi_app",
    "health_wsgi_app",
    "instrument_opentelemetry",
    "register_backend",
    "register_metrics",
    "unregister_backend",
]

# OpenTelemetry through the global providers when its API is installed (no call needed;
# [common.telemetry] opentelemetry = false silences it): see _operations/telemetry.py.
_install_telemetry()

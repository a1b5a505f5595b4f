"""tasker-resilience: circuit breakers that keep a service fast while its cache fails.

import tasker_resilience as tr

res = tr.configure()                       # layered settings for $TASKER_ENV

@tr.breaker_guarded("pgmq", fallback=None)
def publish(message: dict) -> str: ...
"""

from __future__ import annotations

from ._backend import CacheBackend, InProcessAsyncMixin, register_backend
from ._breaker import Breaker
from ._cached import CachedFunction, cached
from ._config import BreakerConfig, CacheConfig, RedisConfig, Settings
from ._errors import CircuitOpenError, ConfigurationError
from ._guard import BreakerHandle, breaker_guarded
from ._http import health_asgi_app, health_wsgi_app
from ._metrics import register_metrics
from ._policy import failure_policy
from ._provider import CacheProvider
from ._registry import BreakerRegistry
from ._resilience import Resilience, configure, current, get_breaker
from ._serializers import SerializationError

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
    "health_asgi_app",
    "health_wsgi_app",
    "register_backend",
    "register_metrics",
]

"""Django integration: the cache backend, the health view and its URL include.

.. code-block:: python

    CACHES = {"default": {
        "BACKEND": "tasker_resilience.contrib.django.ResilientCache",
        "LOCATION": "redis://127.0.0.1:6379/0",   # or "" for common.cache.redis.url
    }}   # each alias with a LOCATION: a cache and a breaker of its own (django_<alias>)

    urlpatterns = [path("ops/", include("tasker_resilience.contrib.django.urls"))]

See the guide (docs/guides/caching.md, "Django") for the options and for what each
cache method does while the circuit is open.
"""

from __future__ import annotations

from tasker_resilience.contrib.django.cache import DjangoRedisSerializer, ResilientCache
from tasker_resilience.contrib.django.views import (
    health_view,
    livez_view,
    metrics_view,
    readyz_view,
)

__all__ = [
    "DjangoRedisSerializer",
    "ResilientCache",
    "health_view",
    "livez_view",
    "metrics_view",
    "readyz_view",
]

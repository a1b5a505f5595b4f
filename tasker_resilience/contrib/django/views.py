"""``livez_view``, ``readyz_view``, ``health_view`` and ``metrics_view``: the WSGI app's
``/livez``, ``/readyz``, ``/health`` and ``/metrics`` as Django views (same JSON, same
status codes: 200 healthy or degraded, 503 unhealthy).

They answer for the process-wide Resilience, looked up on each request. The health
and readiness views first bind every ``CACHES`` alias served by ``ResilientCache`` (no
network call), so each alias's cache and breaker appear in the report from the start.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse

from tasker_resilience._operations.http import (
    HEALTH_PATH,
    LIVE_PATH,
    METRICS_PATH,
    READY_PATH,
    Endpoints,
)
from tasker_resilience.contrib.django.cache import bind_caches

__all__ = ["health_view", "livez_view", "metrics_view", "readyz_view"]

# One instance: it keeps the Prometheus registry of the /metrics view.
_endpoints = Endpoints(None)
_log = logging.getLogger("tasker_resilience.contrib.django")


def _bind_aliases() -> None:
    try:
        bind_caches()
    except Exception as exc:
        # The report goes on without the alias: a health view must answer. The alias's
        # own calls raise the same error, where it belongs. Only the type: the message
        # may hold a URL.
        _log.warning("a ResilientCache alias could not be bound for health: %s", type(exc))


def _respond(request: HttpRequest, path: str) -> HttpResponse:
    method = str(request.method or "GET").upper()
    if path != LIVE_PATH:
        _bind_aliases()
    response = _endpoints.handle(method, path, request.headers.get("Accept"))
    body = b"" if method == "HEAD" else response.body
    reply = HttpResponse(body, status=response.status, content_type=response.content_type)
    for name, value in response.headers():
        if name != "Content-Type":
            reply[name] = value
    return reply


def livez_view(request: HttpRequest) -> HttpResponse:
    """200 while the process answers (a liveness probe); nothing else is read."""
    return _respond(request, LIVE_PATH)


def readyz_view(request: HttpRequest) -> HttpResponse:
    """The critical breakers only, no I/O: 503 while one is open (a readiness probe)."""
    return _respond(request, READY_PATH)


def health_view(request: HttpRequest) -> HttpResponse:
    """``GET``/``HEAD``: the health report, every cache in ``caches``; other methods
    get 405 with ``Allow``."""
    return _respond(request, HEALTH_PATH)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition (404 naming the extra when ``prometheus`` is missing)."""
    return _respond(request, METRICS_PATH)

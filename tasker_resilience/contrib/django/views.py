"""``health_view`` and ``metrics_view``: the WSGI app's ``/health`` and ``/metrics`` as
Django views (same JSON, same status codes: 200 healthy or degraded, 503 unhealthy).

They answer for the process-wide Resilience, looked up on each request.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from tasker_resilience._operations.http import HEALTH_PATH, METRICS_PATH, Endpoints

__all__ = ["health_view", "metrics_view"]

# One instance: it keeps the Prometheus registry of the /metrics view.
_endpoints = Endpoints(None)


def _respond(request: HttpRequest, path: str) -> HttpResponse:
    method = str(request.method or "GET").upper()
    response = _endpoints.handle(method, path, request.headers.get("Accept"))
    body = b"" if method == "HEAD" else response.body
    reply = HttpResponse(body, status=response.status, content_type=response.content_type)
    for name, value in response.headers():
        if name != "Content-Type":
            reply[name] = value
    return reply


def health_view(request: HttpRequest) -> HttpResponse:
    """``GET``/``HEAD``: the health report; other methods get 405 with ``Allow``."""
    return _respond(request, HEALTH_PATH)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition (404 naming the extra when ``prometheus`` is missing)."""
    return _respond(request, METRICS_PATH)

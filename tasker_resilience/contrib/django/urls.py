"""``path("ops/", include("tasker_resilience.contrib.django.urls"))`` serves
``ops/livez``, ``ops/readyz``, ``ops/health`` and ``ops/metrics`` (URL names
``tasker_resilience:livez``, ``:readyz``, ``:health`` and ``:metrics``)."""

from __future__ import annotations

from django.urls import path

from tasker_resilience.contrib.django.views import (
    health_view,
    livez_view,
    metrics_view,
    readyz_view,
)

app_name = "tasker_resilience"

urlpatterns = [
    path("livez", livez_view, name="livez"),
    path("readyz", readyz_view, name="readyz"),
    path("health", health_view, name="health"),
    path("metrics", metrics_view, name="metrics"),
]

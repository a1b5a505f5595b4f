"""``path("ops/", include("tasker_resilience.contrib.django.urls"))`` serves
``ops/health`` and ``ops/metrics`` (URL names ``tasker_resilience:health`` and
``tasker_resilience:metrics``)."""

from __future__ import annotations

from django.urls import path

from tasker_resilience.contrib.django.views import health_view, metrics_view

app_name = "tasker_resilience"

urlpatterns = [
    path("health", health_view, name="health"),
    path("metrics", metrics_view, name="metrics"),
]

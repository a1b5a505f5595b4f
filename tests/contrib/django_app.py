"""The URLconf of the Django tests: a view that uses the cache, and the health include."""

from __future__ import annotations

import time

from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def answer_view(request: HttpRequest) -> JsonResponse:
    """A typical cached view: read-through with get_or_set, plus a hit counter.
    It reports how long its cache calls took, so tests can tell cache time apart
    from Django's own request handling."""
    started = time.perf_counter()
    value = cache.get_or_set("answer", 42, timeout=60)
    seen = cache.get("seen", 0)
    cache.set("seen", seen + 1)
    cache_seconds = time.perf_counter() - started
    return JsonResponse({"answer": value, "cache_seconds": cache_seconds})


async def async_answer_view(request: HttpRequest) -> JsonResponse:
    """The same under ASGI: the a* methods await the cache on the event loop."""
    started = time.perf_counter()
    value = await cache.aget_or_set("answer", 42, timeout=60)
    seen = await cache.aget("seen", 0)
    await cache.aset("seen", seen + 1)
    cache_seconds = time.perf_counter() - started
    return JsonResponse({"answer": value, "cache_seconds": cache_seconds})


urlpatterns = [
    path("answer", answer_view),
    path("async-answer", async_answer_view),
    path("ops/", include("tasker_resilience.contrib.django.urls")),
]

"""A FastAPI service whose cache can fail without slowing it down.

Run it (any ASGI server; uvicorn shown):

    TASKER_COMMON__CACHE__BACKEND=redis \
    TASKER_COMMON__CACHE__REDIS__URL=redis://127.0.0.1:6379/0 \
    uvicorn fastapi_app:app --app-dir docs/examples

- ``resilience_lifespan()`` runs ``configure()`` at start-up (off the event loop: its one
  health check may wait for the connect timeout) and closes the cache's connections at
  shutdown, inside the loop that opened them.
- ``/ops/health`` and ``/ops/metrics`` come from ``health_asgi_app()``, mounted as is.
- ``@cached`` and ``@breaker_guarded`` decorate ``async`` functions at import time; they
  bind to the Resilience that the lifespan configures, on first call.

Tested end to end (uvicorn, real HTTP, a frozen redis-server) by
``tests/contrib/test_asgi_example.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI

import tasker_resilience as tr
from tasker_resilience.contrib.asgi import resilience_lifespan

app = FastAPI(lifespan=resilience_lifespan())
app.mount("/ops", tr.health_asgi_app())

SLOW_QUERY_SECONDS = 0.05
"""What the stand-in database query costs; a cache hit skips it."""


@tr.cached(ttl=60, namespace="example")
async def product(product_id: int) -> dict[str, Any]:
    # Stands in for a database query worth caching.
    await asyncio.sleep(SLOW_QUERY_SECONDS)
    return {"id": product_id, "name": f"product {product_id}"}


@tr.breaker_guarded("recommendations", fallback=None)
async def recommendations(product_id: int) -> list[int]:
    # Stands in for a call to another service: while its breaker is open the endpoint
    # answers without recommendations instead of waiting for it.
    await asyncio.sleep(0)
    return [product_id + 1, product_id + 2]


@app.get("/products/{product_id}")
async def get_product(product_id: int) -> dict[str, Any]:
    return {
        "product": await product(product_id),
        "recommendations": await recommendations(product_id),
    }

"""ASGI apps (FastAPI, Starlette, any framework with a lifespan): configure at start-up,
release every connection at shutdown.

.. code-block:: python

    from fastapi import FastAPI
    import tasker_resilience as tr
    from tasker_resilience.contrib.asgi import resilience_lifespan

    app = FastAPI(lifespan=resilience_lifespan())
    app.mount("/ops", tr.health_asgi_app())  # /ops/livez, /ops/readyz, /ops/health, /ops/metrics

No framework is imported here: the lifespan is a plain ``async`` context manager
factory, which is what FastAPI and Starlette take. See ``docs/examples/fastapi_app.py``
and the guide's "ASGI" section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from os import PathLike
from typing import Any

from tasker_resilience._resilience import Resilience, configure

__all__ = ["aclose_resilience", "resilience_lifespan"]

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]


async def aclose_resilience(res: Resilience) -> None:
    """Close the connections of every cache of ``res`` (the default one, the named ones,
    attached ones) from inside the event loop that used them.

    redis-py's asyncio connections belong to the loop that opened them and can only be
    closed politely there (otherwise they are collected with "unclosed connection"
    warnings); the sync client, used by the health endpoint's worker thread, is closed
    after them.
    """
    for cache in res.built_caches().values():
        await cache.aclose()
    res.close()


def resilience_lifespan(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    root: str | PathLike[str] | None = None,
) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)``.

    At start-up it runs :func:`~tasker_resilience.configure` (arguments as there) in a
    worker thread, since its one start-up health check may wait for the cache's connect
    timeout; the app's state gets ``resilience`` (``request.state.resilience``). At
    shutdown it awaits :func:`aclose_resilience`. To combine it with a lifespan of your
    own, enter it there: ``async with resilience_lifespan()(app) as state: ...``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        res = await asyncio.to_thread(configure, env, overrides, root=root)
        try:
            yield {"resilience": res}
        finally:
            await aclose_resilience(res)

    return lifespan

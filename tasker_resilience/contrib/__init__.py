"""Optional integrations with web frameworks (public).

- :mod:`tasker_resilience.contrib.django`: ``ResilientCache`` (a Django cache backend
  behind the ``cache`` breaker), ``health_view`` and a URL include. Needs the
  ``django`` extra.
- :mod:`tasker_resilience.contrib.asgi`: ``resilience_lifespan`` for ASGI apps
  (FastAPI, Starlette): configure at start-up, close connections at shutdown. No
  framework needed.

``import tasker_resilience`` never imports this package, so no framework is imported
unless one of these modules is.
"""

"""The health report: one JSON-ready dict saying whether the service can do its job.

Status rules (the guide, "Health"):

- ``unhealthy``: a breaker marked ``critical = true`` is open. A dependency the
  service cannot work without is being refused: take the instance out of rotation.
- ``degraded``: any other breaker is open (its callers get their fallback or a miss),
  some breaker is half-open (recovering: probes are being let through), or a cache is
  in trouble (its health check failing, or one node of a Redis Cluster down:
  ``unavailable_nodes`` names it). The service answers, so load balancers should keep
  sending traffic: a readiness probe failing on an optional dependency would pull
  every instance out at once, the cascade the breakers exist to prevent.
- ``healthy``: otherwise.

A report never changes a breaker's counts: breaker states are read, and each cache's
backend is checked outside its breaker, at most once per its
``health_probe_interval_seconds`` (``CacheProvider.probe_health``), never while its
circuit is open. :func:`build_readiness` reads the critical breakers only and makes no
network call at all.

Nothing URL-like is reported: each cache block names the configured backend only, so
a password in a cache URL can never leak through the endpoint. Cluster nodes are named
``host:port`` as the cluster itself announces them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

if TYPE_CHECKING:
    from tasker_resilience._breakers.registry import BreakerRegistry
    from tasker_resilience._cache.provider import CacheProvider

__all__ = [
    "DEGRADED",
    "HEALTHY",
    "UNHEALTHY",
    "HealthStatus",
    "build_health",
    "build_readiness",
]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"

_log = logging.getLogger("tasker_resilience.health")

_NODE_FIELDS: Final = (
    "state",
    "failure_count",
    "total_calls",
    "rejected_calls",
    "opened_at",
    "retry_after_seconds",
    "pending_invalidations",
)


class Reporting(Protocol):
    """What the report reads: a ``Resilience`` (which sits above this module and calls
    it from ``health()``), or anything else holding caches and their breakers."""

    @property
    def caches(self) -> Mapping[str, CacheProvider]: ...
    @property
    def breakers(self) -> BreakerRegistry: ...


def _cache_healthy(cache: CacheProvider) -> bool:
    try:
        return bool(cache.probe_health())
    except Exception as exc:
        # A health endpoint that raises is worse than one that says "not healthy".
        # Only the type is logged: redis error messages may carry connection details.
        _log.warning("cache health check raised %s; reporting the cache unhealthy", type(exc))
        return False


def _status(breakers: Mapping[str, Mapping[str, Any]], caches_ok: bool) -> HealthStatus:
    status: HealthStatus = HEALTHY if caches_ok else DEGRADED
    for entry in breakers.values():
        if entry["state"] == "open":
            if entry["critical"]:
                return UNHEALTHY
            status = DEGRADED
        elif entry["state"] == "half-open":
            status = DEGRADED
    return status


def _breaker_entries(res: Reporting, *, critical_only: bool = False) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for breaker in sorted(res.breakers, key=lambda breaker: breaker.name):
        critical = breaker.config.critical
        # The config first: a breaker left out is not read at all (with shared state,
        # its metrics would be a round trip to the state's server).
        if critical or not critical_only:
            entries[breaker.name] = {**breaker.metrics(), "critical": critical}
    return entries


def _cache_block(cache: CacheProvider, healthy: bool) -> dict[str, Any]:
    breaker = cache.breaker
    block: dict[str, Any] = {
        "enabled": cache.enabled,
        "backend": cache.backend_name,
        "distributed": cache.distributed,
        "healthy": healthy,
        "circuit_state": cache.circuit_state,
    }
    if breaker is not None:
        block["breaker"] = breaker.name
    near = cache.near_info()
    if near is not None:
        # Only with the near tier on: the report of a service without it is unchanged.
        block["near"] = near
    nodes = cache.nodes()
    if nodes:
        # Only for a multi-node cache (Redis Cluster): each master's own breaker.
        block["nodes"] = {
            name: {key: node[key] for key in _NODE_FIELDS} for name, node in nodes.items()
        }
        block["unavailable_nodes"] = sorted(
            name for name, node in nodes.items() if node["state"] != "closed"
        )
    return block


def build_health(res: Reporting) -> dict[str, Any]:
    """The health report of ``res``; at most one short round trip per cache, and only
    when that cache's last check is older than its probe interval.

    ``{"status": ..., "cache": {...}, "caches": {name: {...}}, "circuit_breakers":
    {name: {...}}}``: ``cache`` is the ``default`` cache's block (also in ``caches``).
    Every value is a str, bool, int, float or None, so ``json.dumps`` needs no help.
    """
    caches = {
        name: _cache_block(cache, _cache_healthy(cache)) for name, cache in res.caches.items()
    }
    breakers = _breaker_entries(res)
    caches_ok = all(
        block["healthy"] and not block.get("unavailable_nodes") for block in caches.values()
    )
    report: dict[str, Any] = {"status": _status(breakers, caches_ok)}
    default = next(iter(caches.values()), None)
    if default is not None:
        report["cache"] = default
    report["caches"] = caches
    report["circuit_breakers"] = breakers
    return report


def build_readiness(res: Reporting) -> dict[str, Any]:
    """The readiness report: the critical breakers only, read without any I/O.

    ``unhealthy`` (HTTP 503: take this instance out of rotation) while one of them is
    open, ``degraded`` while one is half-open, else ``healthy``. Breakers not marked
    ``critical`` never appear: their callers have a fallback.
    """
    breakers = _breaker_entries(res, critical_only=True)
    return {"status": _status(breakers, True), "circuit_breakers": breakers}

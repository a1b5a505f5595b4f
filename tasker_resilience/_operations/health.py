"""The health report: one JSON-ready dict saying whether the service can do its job.

Status rules (the guide, "Health"):

- ``unhealthy``: a breaker other than ``cache`` is open, or any open breaker is marked
  ``critical = true``. A dependency the service needs is being refused.
- ``degraded``: only the cache is in trouble (its breaker open, its health check
  failing, or one node of a Redis Cluster down: ``cache.unavailable_nodes`` names it),
  or some breaker is half-open (recovering: probes are being let through).
  The service answers, more slowly, so load balancers should keep sending traffic.
- ``healthy``: otherwise.

Nothing URL-like is reported: the cache block names the configured backend only, so a
password in ``common.cache.redis.url`` can never leak through the endpoint. Cluster
nodes are named ``host:port`` as the cluster itself announces them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

if TYPE_CHECKING:
    from tasker_resilience._breakers.registry import BreakerRegistry
    from tasker_resilience._cache.provider import CacheProvider

__all__ = ["CACHE_BREAKER", "DEGRADED", "HEALTHY", "UNHEALTHY", "HealthStatus", "build_health"]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"

CACHE_BREAKER: Final = "cache"
"""The breaker guarding the cache: the one whose opening only degrades the service."""

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
    it from ``health()``), or anything else holding a cache and its breakers."""

    @property
    def cache(self) -> CacheProvider: ...
    @property
    def breakers(self) -> BreakerRegistry: ...


def _cache_healthy(res: Reporting) -> bool:
    cache = res.cache
    if not cache.enabled:
        # Switched off on purpose: nothing to be unhealthy about.
        return True
    try:
        # The provider answers False without any I/O while its circuit is open, so a
        # health probe hammering a hung cache costs nothing.
        return bool(cache.health_check())
    except Exception as exc:
        # A health endpoint that raises is worse than one that says "not healthy".
        # Only the type is logged: redis error messages may carry connection details.
        _log.warning("cache health check raised %s; reporting the cache unhealthy", type(exc))
        return False


def _status(
    breakers: dict[str, dict[str, Any]], cache_healthy: bool, unavailable_nodes: list[str]
) -> HealthStatus:
    status: HealthStatus = HEALTHY if cache_healthy and not unavailable_nodes else DEGRADED
    for name, entry in breakers.items():
        if entry["state"] == "open":
            if name != CACHE_BREAKER or entry["critical"]:
                return UNHEALTHY
            status = DEGRADED
        elif entry["state"] == "half-open":
            status = DEGRADED
    return status


def build_health(res: Reporting) -> dict[str, Any]:
    """The health report of ``res``; makes at most one short cache round trip.

    ``{"status": ..., "cache": {...}, "circuit_breakers": {name: {...}}}``; every value
    is a str, bool, int, float or None, so ``json.dumps`` needs no help.
    """
    cache = res.cache
    # The cache check runs first: it may move the cache breaker, and the breaker entries
    # below should show the state the check left behind.
    cache_healthy = _cache_healthy(res)
    breakers: dict[str, dict[str, Any]] = {}
    for name, metrics in res.breakers.snapshot().items():
        entry = dict(metrics)
        entry["critical"] = res.breakers.get(name).config.critical
        breakers[name] = entry
    cache_block: dict[str, Any] = {
        "enabled": cache.enabled,
        "backend": cache.backend_name,
        "distributed": cache.distributed,
        "healthy": cache_healthy,
        "circuit_state": cache.circuit_state,
    }
    near = cache.near_info()
    if near is not None:
        # Only with the near tier on: the report of a service without it is unchanged.
        cache_block["near"] = near
    nodes = cache.nodes()
    unavailable = sorted(name for name, node in nodes.items() if node["state"] != "closed")
    if nodes:
        # Only for a multi-node cache (Redis Cluster): each master's own breaker.
        cache_block["nodes"] = {
            name: {key: node[key] for key in _NODE_FIELDS} for name, node in nodes.items()
        }
        cache_block["unavailable_nodes"] = unavailable
    return {
        "status": _status(breakers, cache_healthy, unavailable),
        "cache": cache_block,
        "circuit_breakers": breakers,
    }

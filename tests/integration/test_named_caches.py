"""Two named caches on two private servers: freezing one opens only its breaker, the
other keeps serving hits (the issue's "Done when")."""

from __future__ import annotations

import time
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience._operations.http import health_wsgi_app
from tasker_resilience.testing import configure_for_tests
from tests.integration._support import SOCKET_TIMEOUT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.drill]


def _named(url: str) -> dict[str, Any]:
    return {
        "backend": "redis",
        "redis": {
            "url": url,
            "socket_timeout_seconds": SOCKET_TIMEOUT,
            "connect_timeout_seconds": SOCKET_TIMEOUT,
        },
    }


def _wsgi_health() -> tuple[int, dict[str, Any]]:
    import json

    captured: list[str] = []
    body = b"".join(
        health_wsgi_app()(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/health"},
            lambda status, headers: captured.append(status),
        )
    )
    return int(captured[0].split()[0]), json.loads(body)


def test_freezing_one_named_cache_opens_only_its_breaker(
    private_server: LocalServer, second_private_server: LocalServer
) -> None:
    res = configure_for_tests(
        {
            "common": {
                "caches": {
                    "sessions": _named(private_server.url),
                    "fragments": _named(second_private_server.url),
                },
                "circuit_breakers": {
                    # The `cache` entry: what cache breakers without their own take.
                    "component_configs": {"cache": {"failure_threshold": 3, "timeout_seconds": 1}}
                },
            }
        }
    )
    computed = {"sessions": 0, "fragments": 0}

    @tr.cached(ttl=60, cache="sessions")
    def session(token: str) -> dict[str, str]:
        computed["sessions"] += 1
        return {"user": token}

    @tr.cached(ttl=60, cache="fragments")
    def fragment(name: str) -> str:
        computed["fragments"] += 1
        return f"<div>{name}</div>"

    assert session("t1") == {"user": "t1"}
    assert fragment("nav") == "<div>nav</div>"
    assert session("t1") == {"user": "t1"}  # a hit
    assert computed == {"sessions": 1, "fragments": 1}
    sessions_breaker = res.breakers.get("cache_sessions")
    fragments_breaker = res.breakers.get("cache_fragments")
    assert res.get_cache("sessions").breaker is sessions_breaker
    assert res.get_cache("fragments").breaker is fragments_breaker

    private_server.freeze()  # SIGSTOP: every call to it now waits its socket timeout
    for _ in range(3):
        assert session("t1") == {"user": "t1"}  # a failed read: computed instead
    assert sessions_breaker.state == "open"
    assert fragments_breaker.state == "closed"
    assert res.breakers.get("cache").state == "closed"  # the default cache: untouched

    started = time.perf_counter()
    for _ in range(100):
        assert fragment("nav") == "<div>nav</div>"
        assert session("t1") == {"user": "t1"}  # open: the function runs, no waiting
    elapsed = time.perf_counter() - started
    assert computed["fragments"] == 1, "the other cache stopped serving hits"
    assert res.get_cache("fragments").stats()["get"]["hit"] >= 100
    assert elapsed < SOCKET_TIMEOUT * 10, f"{elapsed:.3f}s: a call waited on the frozen server"

    status, report = _wsgi_health()
    assert (status, report["status"]) == (200, "degraded")
    assert report["caches"]["sessions"]["circuit_state"] == "open"
    assert report["caches"]["fragments"]["circuit_state"] == "closed"
    assert report["caches"]["fragments"]["healthy"] is True
    assert report["circuit_breakers"]["cache_sessions"]["state"] == "open"

    private_server.thaw()
    # Traffic probes after timeout_seconds and closes it again.
    assert wait_until(
        lambda: session("t2") == {"user": "t2"} and sessions_breaker.state == "closed",
        timeout=10,
        interval=0.1,
    )
    assert fragments_breaker.metrics()["failed_calls"] == 0

"""ResilientCache on a private redis-server: the open-circuit table per Django method
(sync and async), replay after recovery, Django's value format, options, and a Django
view answering through a frozen server."""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasker_resilience import Resilience
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience._operations.http import health_wsgi_app
from tasker_resilience.testing import configure_for_tests
from tests.integration._support import wait_until

pytestmark = pytest.mark.integration

BACKEND = "tasker_resilience.contrib.django.ResilientCache"
SOCKET_TIMEOUT = 0.1
DJANGO_BREAKER = "cache_django_default"
"""The breaker of the ``default`` alias: its own, not the settings' ``cache`` breaker."""


def _configure(threshold: int = 3, open_seconds: float = 30) -> Resilience:
    breaker = {"failure_threshold": threshold, "timeout_seconds": open_seconds}
    return configure_for_tests(
        {"common": {"circuit_breakers": {"component_configs": {"cache": breaker}}}}
    )


def _caches(url: str, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": BACKEND,
            "LOCATION": url,
            "OPTIONS": {
                "socket_timeout_seconds": SOCKET_TIMEOUT,
                "connect_timeout_seconds": SOCKET_TIMEOUT,
                **options,
            },
        }
    }


@pytest.fixture
def res() -> Resilience:
    return _configure()


@pytest.fixture
def dj_cache(django_settings: Any, res: Resilience, private_server: LocalServer) -> Iterator[Any]:
    """The ``default`` Django cache, a ResilientCache on this test's private server."""
    from django.core.cache import caches
    from django.test import override_settings

    with override_settings(CACHES=_caches(private_server.url)):
        yield caches["default"]


def _raw_client(server: LocalServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=2)


# --- Django's cache API, natively async -----------------------------------------------------

ASYNC_METHODS = (
    "aget",
    "aset",
    "aadd",
    "adelete",
    "aget_many",
    "aset_many",
    "adelete_many",
    "ahas_key",
    "aincr",
    "atouch",
    "aclear",
    "aclose",
)


def test_async_methods_are_native_coroutines_of_resilient_cache(django_settings: Any) -> None:
    from django.core.cache.backends.base import BaseCache

    from tasker_resilience.contrib.django import ResilientCache

    for name in ASYNC_METHODS:
        method = ResilientCache.__dict__.get(name)
        # Defined here, not BaseCache's sync_to_async wrapper around the sync method.
        assert method is not None, name
        assert method is not getattr(BaseCache, name), name
        assert inspect.iscoroutinefunction(method), name


async def test_async_api_round_trips_without_worker_threads(
    dj_cache: Any, private_server: LocalServer
) -> None:
    threads_before = set(threading.enumerate())
    await dj_cache.aset("a", {"nested": [1, 2]}, timeout=None)
    assert await dj_cache.aget("a") == {"nested": [1, 2]}
    assert await dj_cache.aget("missing", "dflt") == "dflt"
    assert await dj_cache.aadd("a", 1) is False
    assert await dj_cache.aadd("b", 1) is True
    assert await dj_cache.aincr("b", 9) == 10
    assert await dj_cache.adecr("b") == 9
    assert await dj_cache.ahas_key("b") is True
    assert await dj_cache.atouch("b", 100) is True
    assert await dj_cache.aset_many({"c": "x", "d": 4}) == []
    assert await dj_cache.aget_many(["c", "d", "e"]) == {"c": "x", "d": 4}
    assert await dj_cache.aget_or_set("e", lambda: "made") == "made"
    assert await dj_cache.adelete("c") is True
    assert await dj_cache.adelete("c") is False
    await dj_cache.adelete_many(["d", "e"])
    assert await dj_cache.aget_many(["d", "e"]) == {}
    assert await dj_cache.aincr_version("a") == 2
    assert await dj_cache.aget("a", version=2) == {"nested": [1, 2]}
    await dj_cache.aclear()
    assert await dj_cache.aget("b") is None
    await dj_cache.provider.aclose()
    # Django's default a* methods run the sync ones in a thread (sync_to_async).
    assert set(threading.enumerate()) <= threads_before


# --- values and keys as Django defines them ------------------------------------------------


def test_values_are_stored_as_djangos_redis_backend_stores_them(
    dj_cache: Any, res: Resilience, private_server: LocalServer
) -> None:
    # <common.cache.key_prefix>:<NAMESPACE>:<Django's key: KEY_PREFIX:VERSION:key>
    p = f"{res.settings.cache.key_prefix}:django::1:"
    dj_cache.set("n", 41)
    dj_cache.set("flag", True)
    dj_cache.set("obj", {"a": (1, 2)})
    client = _raw_client(private_server)
    try:
        keys = {key.decode(): key for key in client.keys("*")}
        assert set(keys) == {p + "n", p + "flag", p + "obj"}
        assert client.get(p + "n") == b"41"  # raw digits: INCR works on it
        assert pickle.loads(client.get(p + "flag")) is True
        assert pickle.loads(client.get(p + "obj")) == {"a": (1, 2)}
        client.set(p + "junk", b"\x80not a pickle")
    finally:
        client.close()
    assert dj_cache.incr("n") == 42
    assert dj_cache.get("obj") == {"a": (1, 2)}
    # Unreadable data is a miss, never an exception in a view.
    assert dj_cache.get("junk", "dflt") == "dflt"


def test_timeouts_follow_django(
    dj_cache: Any, res: Resilience, private_server: LocalServer
) -> None:
    p = f"{res.settings.cache.key_prefix}:django::1:"
    client = _raw_client(private_server)
    try:
        dj_cache.set("forever", 1, timeout=None)
        assert client.pttl(p + "forever") == -1
        dj_cache.set("half", 1, timeout=0.5)
        assert 0 < client.pttl(p + "half") <= 500  # fractions are kept
        dj_cache.set("gone", 1, timeout=0)
        dj_cache.set("negative", 1, timeout=-3)
        assert client.exists(p + "gone", p + "negative") == 0
        dj_cache.set("default", 1)  # Django's TIMEOUT default: 300 s
        assert 299_000 < client.pttl(p + "default") <= 300_000
    finally:
        client.close()
    with pytest.raises(TypeError, match="cache timeout must be seconds"):
        dj_cache.set("k", 1, timeout="soon")


def test_clear_removes_this_caches_namespace_only(
    django_settings: Any, res: Resilience, private_server: LocalServer
) -> None:
    from django.core.cache import caches
    from django.test import override_settings

    settings = _caches(private_server.url)
    settings["other"] = {**settings["default"], "OPTIONS": {"NAMESPACE": "other"}}
    client = _raw_client(private_server)
    try:
        client.set("someone-elses-key", b"1")
        with override_settings(CACHES=settings):
            caches["default"].set("k", 1)
            caches["other"].set("k", 2)
            caches["default"].clear()
            assert caches["default"].get("k") is None
            assert caches["other"].get("k") == 2
        assert client.get("someone-elses-key") == b"1"
    finally:
        client.close()


def test_bad_options_fail_at_start_up_naming_key_value_and_allowed(django_settings: Any) -> None:
    from tasker_resilience import ConfigurationError
    from tasker_resilience.contrib.django import ResilientCache

    with pytest.raises(ConfigurationError, match=r"OPTIONS = \['sockettimeout'\].*known options"):
        ResilientCache("redis://127.0.0.1:1/0", {"OPTIONS": {"sockettimeout": 1}})
    with pytest.raises(ConfigurationError, match=r"socket_timeout_seconds = -1 .*not valid"):
        ResilientCache("redis://127.0.0.1:1/0", {"OPTIONS": {"socket_timeout": -1}})
    with pytest.raises(ConfigurationError) as caught:
        ResilientCache("http://user:hunter2@127.0.0.1/0", {})
    assert "hunter2" not in str(caught.value)
    cache = ResilientCache("redis://:hunter2@127.0.0.1:1/0", {"OPTIONS": {"db": 3}})
    assert "hunter2" not in repr(cache)


def test_without_location_it_uses_the_configured_redis_cache(
    django_settings: Any, private_server: LocalServer
) -> None:
    from tasker_resilience import ConfigurationError
    from tasker_resilience.contrib.django import ResilientCache

    res = configure_for_tests(
        {"common": {"cache": {"backend": "redis", "redis": {"url": private_server.url}}}}
    )
    cache = ResilientCache("", {})
    assert cache.provider is res.cache  # one provider, one breaker, one replay list
    cache.set("k", "v")
    assert cache.get("k") == "v"
    configure_for_tests()  # the memory backend cannot serve Django
    with pytest.raises(ConfigurationError, match=r"LOCATION.*configured cache is 'memory'"):
        cache.get("k")


# --- the open circuit, method by method ----------------------------------------------------

# (method, args, what Django's contract allows while the cache cannot be reached)
OPEN_TABLE: list[tuple[str, tuple[Any, ...], Any]] = [
    ("get", ("k",), None),
    ("get", ("k", "dflt"), "dflt"),
    ("get_many", (["k", "x"],), {}),
    ("has_key", ("k",), False),
    ("set", ("k", "new"), None),
    ("set_many", ({"m1": 1, "m2": 2},), ["m1", "m2"]),
    ("add", ("fresh", 1), False),
    ("delete", ("d",), False),
    ("delete_many", (["dm1", "dm2"],), None),
    ("incr", ("n",), ValueError),
    ("decr", ("n",), ValueError),
    ("touch", ("k", 10), False),
    ("get_or_set", ("k", 5), 5),
    ("incr_version", ("k",), ValueError),
    ("clear", (), None),
    ("close", (), None),
]


def _call(cache: Any, name: str, args: tuple[Any, ...], mode: str) -> Any:
    if mode == "sync":
        return getattr(cache, name)(*args)
    return asyncio.run(getattr(cache, "a" + name)(*args))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_open_circuit_answers_each_method_at_once_and_replays_on_recovery(
    dj_cache: Any, res: Resilience, private_server: LocalServer, mode: str
) -> None:
    for key in ("k", "d", "dm1", "dm2", "n"):
        dj_cache.set(key, 7)
    provider = dj_cache.provider
    breaker = provider.breaker
    assert breaker is res.breakers.get(DJANGO_BREAKER)
    private_server.freeze()  # any network call now costs a full socket timeout
    breaker.force_open()
    for name, args, expected in OPEN_TABLE:
        started = time.perf_counter()
        if expected is ValueError:
            with pytest.raises(ValueError, match="not found"):
                _call(dj_cache, name, args, mode)
        else:
            assert _call(dj_cache, name, args, mode) == expected, name
        # Far below the socket timeout: no network call was made.
        assert time.perf_counter() - started < SOCKET_TIMEOUT / 2, name
    assert provider.stats()["get"]["skipped_open"] >= 3
    # set k, set_many m1 m2, delete d, delete_many dm1 dm2, clear's pattern.
    assert provider.pending_invalidations() == {"pending": 7, "overflowed": False}

    private_server.thaw()
    breaker.reset()
    # The next admitted call replays first: the server still holds the old values.
    assert dj_cache.get("n") is None  # the replayed clear removed everything
    assert provider.pending_invalidations()["pending"] == 0
    assert dj_cache.get_many(["k", "d", "dm1"]) == {}


def test_failures_trip_the_alias_breaker_only(
    dj_cache: Any, res: Resilience, private_server: LocalServer
) -> None:
    dj_cache.set("k", 1)
    private_server.freeze()
    started = time.perf_counter()
    for _ in range(3):
        assert dj_cache.get("k", "dflt") == "dflt"  # each one waits for the timeout
    assert time.perf_counter() - started >= 3 * SOCKET_TIMEOUT * 0.8
    assert res.breakers.get(DJANGO_BREAKER).state == "open"
    assert res.breakers.get("cache").state == "closed"  # the settings' cache: untouched
    assert dj_cache.provider.stats()["get"]["error"] == 3
    # A caller mistake is not an outage: a wrong-type reply raises and does not count.
    private_server.thaw()
    res.breakers.get(DJANGO_BREAKER).reset()
    dj_cache.set("text", "not a number")
    with pytest.raises(redis.ResponseError):
        dj_cache.incr("text")
    assert res.breakers.get(DJANGO_BREAKER).state == "closed"


# --- a Django view through a frozen server --------------------------------------------------


def test_view_answers_through_a_frozen_server_in_microseconds_of_cache_time(
    django_settings: Any, private_server: LocalServer
) -> None:
    from django.test import Client, override_settings

    res = _configure(threshold=3, open_seconds=1)
    client = Client()
    with override_settings(CACHES=_caches(private_server.url)):
        assert client.get("/answer").json()["answer"] == 42
        private_server.freeze()
        # Until the breaker opens each cache call waits for its socket timeout.
        tripping = 0
        while res.breakers.get(DJANGO_BREAKER).state != "open":
            tripping += 1
            assert tripping <= 3, "the breaker did not open"
            response = client.get("/answer")
            assert response.status_code == 200
            assert response.json()["answer"] == 42  # computed: the cache read missed
        cache_times, request_times = [], []
        for _ in range(50):
            started = time.perf_counter()
            response = client.get("/answer")
            request_times.append(time.perf_counter() - started)
            assert response.status_code == 200
            assert response.json()["answer"] == 42
            cache_times.append(response.json()["cache_seconds"])
        # Four cache calls per request; a frozen-server call would cost 0.1 s each.
        assert statistics.median(cache_times) < 0.001
        assert max(request_times) < SOCKET_TIMEOUT
        health = client.get("/ops/health")
        assert health.status_code == 200  # an open cache breaker degrades, never fails
        assert health.json()["status"] == "degraded"

        private_server.thaw()
        # After timeout_seconds a probe goes through and the circuit closes again.
        assert wait_until(
            lambda: (
                client.get("/answer").status_code == 200
                and res.breakers.get(DJANGO_BREAKER).state == "closed"
            ),
            timeout=10,
            interval=0.1,
        )


async def test_async_view_answers_through_a_frozen_server(
    django_settings: Any, private_server: LocalServer
) -> None:
    from django.test import AsyncClient, override_settings

    res = _configure(threshold=3, open_seconds=30)
    client = AsyncClient()
    with override_settings(CACHES=_caches(private_server.url)):
        first = await client.get("/async-answer")
        assert first.json()["answer"] == 42
        private_server.freeze()
        for _ in range(3):  # get, add, get, get...: the breaker opens within them
            response = await client.get("/async-answer")
            assert response.status_code == 200
            assert response.json()["answer"] == 42
        assert res.breakers.get(DJANGO_BREAKER).state == "open"
        cache_times = []
        for _ in range(20):
            response = await client.get("/async-answer")
            assert response.status_code == 200
            cache_times.append(response.json()["cache_seconds"])
        assert statistics.median(cache_times) < 0.001
        private_server.thaw()
        from django.core.cache import caches

        # The asyncio connections belong to this test's loop: closed in it.
        await caches["default"].provider.aclose()


# --- health view ------------------------------------------------------------------------------


def _wsgi_get(path: str) -> tuple[str, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
    body = b"".join(health_wsgi_app()(environ, start_response))
    return captured["status"], captured["headers"], body


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    # Timestamps aside, the two reports must be the same document.
    for entry in report["circuit_breakers"].values():
        entry.pop("opened_at", None)
        entry.pop("retry_after_seconds", None)
    return report


@pytest.mark.parametrize("open_breaker", [None, "cache", "pgmq", "task_readiness"])
def test_health_view_matches_the_wsgi_app(django_settings: Any, open_breaker: str | None) -> None:
    from django.test import Client

    critical = {"task_readiness": {"critical": True}}
    res = configure_for_tests({"common": {"circuit_breakers": {"component_configs": critical}}})
    if open_breaker is not None:
        res.breakers.get(open_breaker).force_open()
    response = Client().get("/ops/health")
    status, headers, body = _wsgi_get("/health")
    assert response.status_code == int(status.split()[0])
    # Only the critical breaker takes the instance out; the others degrade it.
    assert response.status_code == (503 if open_breaker == "task_readiness" else 200)
    ready = Client().get("/ops/readyz")
    assert ready.status_code == (503 if open_breaker == "task_readiness" else 200)
    assert set(ready.json()["circuit_breakers"]) == {"task_readiness"}
    live = Client().get("/ops/livez")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert response["Content-Type"] == headers["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert _comparable(response.json()) == _comparable(json.loads(body))
    refused = Client().post("/ops/health")
    assert refused.status_code == 405
    assert refused["Allow"] == "GET, HEAD"


def test_health_urls_are_named(django_settings: Any) -> None:
    from django.urls import reverse

    assert reverse("tasker_resilience:health") == "/ops/health"
    assert reverse("tasker_resilience:metrics") == "/ops/metrics"
    assert reverse("tasker_resilience:livez") == "/ops/livez"
    assert reverse("tasker_resilience:readyz") == "/ops/readyz"


def test_commands_drop_what_they_change_from_the_near_tier(
    django_settings: Any, private_server: LocalServer
) -> None:
    from tasker_resilience.contrib.django import ResilientCache

    res = configure_for_tests(
        {
            "common": {
                "cache": {
                    "backend": "redis",
                    "redis": {"url": private_server.url},
                    # No server-side tracking: only the provider's own forgetting keeps
                    # this process's near copies in step with its writes.
                    "near": {"enabled": True, "ttl_seconds": 60, "tracking": "off"},
                }
            }
        }
    )
    cache = ResilientCache("", {})
    assert cache.provider is res.cache
    assert res.cache.near is not None
    cache.set("n", 1)
    assert cache.get("n") == 1
    assert cache.get("n") == 1  # served by the near tier now
    # Without dropping the near copy these would read the value from before the change.
    assert cache.incr("n", 5) == 6
    assert cache.get("n") == 6
    cache.delete_many(["n"])
    assert cache.get("n") is None
    assert cache.add("n", "added") is True
    assert cache.get("n") == "added"
    cache.set_many({"n": "many"})
    assert cache.get("n") == "many"


# --- a value over the server's size limit ---------------------------------------------------


@pytest.mark.parametrize("method", ["add", "set_many", "aadd", "aset_many"])
async def test_a_value_over_proto_max_bulk_len_is_that_callers_failed_write(
    django_settings: Any, res: Resilience, private_server: LocalServer, method: str
) -> None:
    # The server cuts an oversized bulk off and closes the connection: that is one
    # caller's failed write, not an outage (as for set), whichever command carried it.
    from django.core.cache import caches
    from django.test import override_settings

    _raw_client(private_server).config_set("proto-max-bulk-len", 1024 * 1024)
    # Timeouts well above the 0.1 s of the other tests: sending 2 MB on a loaded
    # machine can outlast 0.1 s, and a timeout is (rightly) an outage's failure, which
    # is not what this test is about.
    settings = _caches(private_server.url, socket_timeout_seconds=2.0, connect_timeout_seconds=2.0)
    with override_settings(CACHES=settings):
        await _write_oversized_values(caches["default"], res, method)


async def _write_oversized_values(dj_cache: Any, res: Resilience, method: str) -> None:
    big = "x" * (2 * 1024 * 1024)
    for _ in range(3):  # the breaker's threshold: three outages' worth of failures
        if method == "add":
            assert dj_cache.add("big", big) is False
        elif method == "aadd":
            assert await dj_cache.aadd("big", big) is False
        elif method == "set_many":
            dj_cache.set_many({"big": big, "small": 1})
        else:
            await dj_cache.aset_many({"big": big, "small": 1})
    assert res.cache.circuit_state == "closed"
    assert res.breakers.get("cache").metrics()["failed_calls"] == 0
    assert dj_cache.get("big") is None
    dj_cache.set("other", 1)
    assert dj_cache.get("other") == 1
    await dj_cache.aclose()


# --- an alias is a cache of its own ----------------------------------------------------------

DEAD_URL = "redis://127.0.0.1:1/0"
"""Port 1: nothing listens, every connection is refused."""


def test_the_alias_keeps_caching_through_100_health_probes_of_a_dead_settings_url(
    django_settings: Any, private_server: LocalServer
) -> None:
    from django.core.cache import caches
    from django.test import Client, override_settings

    # The issue's set-up: the settings' cache (common.cache.redis.url) has no server,
    # the project's CACHES LOCATION a healthy one.
    res = configure_for_tests(
        {"common": {"cache": {"backend": "redis", "redis": {"url": DEAD_URL}}}}
    )
    settings_breaker = res.breakers.get("cache")
    assert settings_breaker.state == "open"  # its start-up check failed
    client = Client()
    with override_settings(CACHES=_caches(private_server.url)):
        cache = caches["default"]
        for i in range(100):
            if i == 50:
                # "After recovery": the settings' breaker is closed again, its server
                # still dead. Health requests must not open it (nor touch the alias).
                settings_breaker.reset()
                counted = settings_breaker.metrics()
            reply = client.get("/ops/health")
            assert reply.status_code == 200, reply.content
            report = reply.json()
            assert report["status"] == "degraded"  # the settings' cache is down
            alias = report["caches"]["django_default"]
            assert (alias["healthy"], alias["circuit_state"]) == (True, "closed")
            cache.set(f"k{i}", i)
            assert cache.get(f"k{i}") == i
        assert cache.provider is not res.cache
        assert cache.provider.breaker is res.breakers.get(DJANGO_BREAKER)
        assert res.breakers.get(DJANGO_BREAKER).state == "closed"
        assert cache.provider.stats()["get"]["hit"] == 100
        assert settings_breaker.state == "closed"
        after = settings_breaker.metrics()
        for key in ("total_calls", "failed_calls", "failure_count"):
            assert after[key] == counted[key], key


def test_each_alias_has_its_own_breaker_and_health_shows_each(
    django_settings: Any, private_server: LocalServer, second_private_server: LocalServer
) -> None:
    from django.core.cache import caches
    from django.test import Client, override_settings

    res = _configure(threshold=3, open_seconds=30)
    sessions = _caches(second_private_server.url, NAMESPACE="sessions")["default"]
    client = Client()
    with override_settings(CACHES={**_caches(private_server.url), "sessions": sessions}):
        # Listed before their first use: the health view binds every alias.
        report = client.get("/ops/health").json()
        assert report["caches"]["django_default"]["breaker"] == DJANGO_BREAKER
        assert report["caches"]["django_sessions"]["breaker"] == "cache_django_sessions"
        default_cache, sessions_cache = caches["default"], caches["sessions"]
        default_cache.set("page", "html")
        sessions_cache.set("token", "user-7")
        second_private_server.freeze()
        for _ in range(3):  # each waits for its socket timeout, then the breaker opens
            assert sessions_cache.get("token") is None
        assert res.breakers.get("cache_django_sessions").state == "open"
        assert res.breakers.get(DJANGO_BREAKER).state == "closed"
        started = time.perf_counter()
        for _ in range(50):
            assert default_cache.get("page") == "html"
            assert sessions_cache.get("token") is None  # open: answered at once
        assert time.perf_counter() - started < SOCKET_TIMEOUT * 5  # no timeout was waited
        reply = client.get("/ops/health")
        assert reply.status_code == 200
        report = reply.json()
        assert report["status"] == "degraded"
        assert report["caches"]["django_sessions"]["circuit_state"] == "open"
        assert report["caches"]["django_default"]["circuit_state"] == "closed"
        assert report["caches"]["django_default"]["healthy"] is True
    second_private_server.thaw()


def test_the_django_views_over_real_http(django_settings: Any) -> None:
    import http.client
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.core.handlers.wsgi import WSGIHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    critical = {"task_readiness": {"critical": True}}
    res = configure_for_tests({"common": {"circuit_breakers": {"component_configs": critical}}})
    server = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def get(path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()

    try:
        res.breakers.get("pgmq").force_open()  # not critical: degraded, still ready
        status, report = get("/ops/health")
        assert (status, report["status"]) == (200, "degraded")
        assert _comparable(report) == _comparable(res.health())
        assert get("/ops/readyz")[0] == 200
        res.breakers.get("task_readiness").force_open()  # critical: out of rotation
        status, report = get("/ops/health")
        assert (status, report["status"]) == (503, "unhealthy")
        status, ready = get("/ops/readyz")
        assert (status, list(ready["circuit_breakers"])) == (503, ["task_readiness"])
        assert get("/ops/livez") == (200, {"status": "alive"})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""/health and /metrics over real HTTP: wsgiref for the WSGI app, uvicorn for the ASGI app."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

import tasker_resilience as tr
from tasker_resilience import Resilience
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience._operations.http import (
    _route_path,
    health_asgi_app,
    health_wsgi_app,
    make_server,
)
from tasker_resilience.testing import configure_for_tests

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base: str, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> Reply:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


@contextmanager
def wsgi_server(app: WSGIApplication | None = None, res: Resilience | None = None) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, res)
    if app is not None:
        server.set_app(app)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def uvicorn_server(app: Any, **config: Any) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn", reason="the ASGI app is served by uvicorn in tests")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(params=["wsgi", "asgi"])
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[[Resilience | None], str]]:
    """``serve(res)`` starts the app for ``res`` on a real server and returns its URL."""
    stack: list[Any] = []

    def start(res: Resilience | None) -> str:
        if request.param == "wsgi":
            manager = wsgi_server(res=res)
        else:
            manager = uvicorn_server(health_asgi_app(res))
        stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


def test_health_answers_200_with_json_and_no_store(serve: Callable[..., str]) -> None:
    res = configure_for_tests()
    base = serve(res)
    reply = request(base, "GET", "/health")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert reply.json() == res.health()


CRITICAL_PGMQ = {
    "common": {"circuit_breakers": {"component_configs": {"pgmq": {"critical": True}}}}
}


def test_an_open_critical_breaker_answers_503(serve: Callable[..., str]) -> None:
    res = configure_for_tests(CRITICAL_PGMQ)
    base = serve(res)
    res.breakers.get("pgmq").force_open()
    reply = request(base, "GET", "/health")
    assert reply.status == 503
    assert reply.json()["status"] == "unhealthy"
    ready = request(base, "GET", "/readyz")
    assert ready.status == 503
    assert ready.json()["circuit_breakers"]["pgmq"]["state"] == "open"
    assert request(base, "GET", "/livez").status == 200  # restarting would not help
    res.breakers.get("pgmq").reset()
    assert request(base, "GET", "/health").status == 200
    assert request(base, "GET", "/readyz").status == 200


@pytest.mark.parametrize("name", ["cache", "pgmq", "recommendations"])
def test_an_open_non_critical_breaker_answers_200_degraded(
    serve: Callable[..., str], name: str
) -> None:
    @tr.breaker_guarded("recommendations", fallback=None)
    def recommend() -> list[str]:
        raise ConnectionError("the recommendations service is down")

    res = configure_for_tests()
    base = serve(res)
    if name == "recommendations":
        for _ in range(3):  # the test thresholds: 3 failures open it
            with pytest.raises(ConnectionError):
                recommend()
        assert recommend() is None  # the fallback: the service still answers
    else:
        res.breakers.get(name).force_open()
    reply = request(base, "GET", "/health")
    assert reply.status == 200
    assert reply.json()["status"] == "degraded"
    assert reply.json()["circuit_breakers"][name]["state"] == "open"
    # Readiness reads the critical breakers only: none is, so the pod stays in rotation.
    ready = request(base, "GET", "/readyz")
    assert (ready.status, ready.json()) == (200, {"status": "healthy", "circuit_breakers": {}})


def test_livez_answers_without_reading_settings_or_breakers(
    serve: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasker_resilience import _resilience

    def broken(*args: object, **kwargs: object) -> None:
        raise tr.ConfigurationError("common.cache.backend", "x", "a test that breaks settings")

    # No process-wide Resilience, and none can be configured: only /livez can answer.
    monkeypatch.setattr(_resilience, "configure", broken)
    base = serve(None)
    reply = request(base, "GET", "/livez")
    assert (reply.status, reply.json()) == (200, {"status": "alive"})
    assert request(base, "HEAD", "/livez").body == b""
    assert request(base, "GET", "/health").status == 503  # the report had to configure
    assert request(base, "GET", "/readyz").status == 503


def test_health_requests_never_change_a_breakers_counts(serve: Callable[..., str]) -> None:
    res = configure_for_tests(backend="fakeredis")
    base = serve(res)
    breakers = res.breakers.snapshot()
    for path in ("/health", "/readyz", "/livez") * 20:
        assert request(base, "GET", path).status == 200
    assert res.breakers.snapshot() == breakers


def test_head_has_the_headers_and_no_body(serve: Callable[..., str]) -> None:
    base = serve(configure_for_tests())
    reply = request(base, "HEAD", "/health")
    assert reply.status == 200
    assert reply.body == b""
    assert int(reply.headers["content-length"]) > 0


def test_other_methods_are_405_and_other_paths_404(serve: Callable[..., str]) -> None:
    base = serve(configure_for_tests())
    reply = request(base, "POST", "/health")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert request(base, "DELETE", "/metrics").status == 405
    missing = request(base, "GET", "/healthz")
    assert missing.status == 404
    assert b"/livez, /readyz, /health, /metrics" in missing.body
    assert request(base, "POST", "/readyz").status == 405
    assert request(base, "PUT", "/livez").status == 405


def test_metrics_serve_the_prometheus_text_format(serve: Callable[..., str]) -> None:
    res = configure_for_tests()
    base = serve(res)
    res.cache.set("k", 1)
    res.cache.get("k")
    res.breakers.get("pgmq").force_open()
    reply = request(base, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    assert 'tasker_resilience_breaker_state{breaker="pgmq"} 2.0' in text
    assert 'tasker_resilience_breaker_state{breaker="cache"} 0.0' in text
    hits = 'tasker_resilience_cache_operations_total{cache="default",operation="get",outcome="hit"}'
    assert f"{hits} 1.0" in text


def test_metrics_negotiate_openmetrics(serve: Callable[..., str]) -> None:
    base = serve(configure_for_tests())
    reply = request(base, "GET", "/metrics", {"Accept": "application/openmetrics-text"})
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.body.rstrip().endswith(b"# EOF")


def test_metrics_without_prometheus_client_are_404_with_the_fix(
    serve: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = serve(configure_for_tests())
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    reply = request(base, "GET", "/metrics")
    assert reply.status == 404
    assert b"pip install 'tasker-resilience[prometheus]'" in reply.body
    assert request(base, "GET", "/health").status == 200


def test_without_a_resilience_each_request_reads_the_process_wide_one(
    serve: Callable[..., str],
) -> None:
    configure_for_tests()
    base = serve(None)
    assert request(base, "GET", "/health").json()["cache"]["backend"] == "memory"
    configure_for_tests({"common": {"cache": {"backend": "noop"}}})
    assert request(base, "GET", "/health").json()["cache"]["backend"] == "noop"
    assert b"tasker_resilience_breaker_state" in request(base, "GET", "/metrics").body


@pytest.mark.integration
@pytest.mark.drill
def test_a_slow_health_check_does_not_hold_up_other_requests(
    serve: Callable[..., str], private_server: LocalServer
) -> None:
    """The health check waits on a frozen server (1.5 s socket timeout); meanwhile the
    server (an event loop for ASGI, threads for WSGI) keeps answering."""
    redis_settings = {
        "url": private_server.url,
        "socket_timeout_seconds": 1.5,
        "connect_timeout_seconds": 1.5,
    }
    res = configure_for_tests({"common": {"cache": {"backend": "redis", "redis": redis_settings}}})
    base = serve(res)
    slow: list[Reply] = []
    private_server.freeze()
    try:
        started = time.perf_counter()
        worker = threading.Thread(target=lambda: slow.append(request(base, "GET", "/health")))
        worker.start()
        time.sleep(0.2)
        quick_started = time.perf_counter()
        quick = request(base, "GET", "/metrics")
        quick_seconds = time.perf_counter() - quick_started
        worker.join(10)
        slow_seconds = time.perf_counter() - started
    finally:
        private_server.thaw()
    assert quick.status == 200
    assert quick_seconds < 0.75, f"/metrics waited {quick_seconds:.2f}s behind /health"
    assert slow_seconds >= 1.4  # the health check really did wait on the frozen server
    assert slow[0].status == 200
    assert slow[0].json()["status"] == "degraded"
    assert slow[0].json()["cache"]["healthy"] is False


def _mount(prefix: str, app: WSGIApplication) -> WSGIApplication:
    """What werkzeug's DispatcherMiddleware (Flask) and Django's mounting do: move the
    prefix from PATH_INFO to SCRIPT_NAME."""

    def dispatcher(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(prefix + "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"the application's own 404"]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = path[len(prefix) :]
        return app(environ, start_response)

    return dispatcher


def test_the_wsgi_app_works_mounted_under_a_prefix() -> None:
    res = configure_for_tests()
    with wsgi_server(_mount("/ops", health_wsgi_app(res))) as base:
        assert request(base, "GET", "/ops/health").status == 200
        assert request(base, "GET", "/ops/metrics").status == 200
        assert request(base, "GET", "/health").body == b"the application's own 404"


def test_the_asgi_app_works_behind_a_root_path() -> None:
    res = configure_for_tests()
    with uvicorn_server(health_asgi_app(res), root_path="/ops") as base:
        reply = request(base, "GET", "/health")
        assert reply.status == 200
        assert reply.json()["status"] == "healthy"


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"path": "/health", "root_path": ""}, "/health"),
        ({"path": "/ops/health", "root_path": "/ops"}, "/health"),  # Starlette Mount
        ({"path": "/health", "root_path": "/ops"}, "/health"),  # prefix already stripped
        ({"path": "/opsx/health", "root_path": "/ops"}, "/opsx/health"),  # not a prefix
        ({"path": "/ops", "root_path": "/ops"}, "/"),
    ],
)
def test_route_path_strips_the_mount_prefix(scope: dict[str, str], expected: str) -> None:
    assert _route_path(scope) == expected


async def test_the_asgi_app_refuses_websockets() -> None:
    app = health_asgi_app(configure_for_tests())
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/health"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]

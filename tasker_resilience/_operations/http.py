"""``/livez``, ``/readyz``, ``/health`` and ``/metrics`` as a WSGI app and an ASGI app,
no web framework needed.

Mount either under a prefix of your own application (the guide shows Flask, Django,
FastAPI and Starlette), or run the standalone server: ``tasker-resilience health --serve``.

- ``/livez``: 200 while the process answers; no settings, no breakers, no I/O. For a
  Kubernetes liveness probe: restarting a process does not fix a dependency.
- ``/readyz``: the critical breakers only, read without I/O; 503 while one of them is
  open, else 200. For a readiness probe.
- ``/health``: the full report as JSON; 200 when healthy or degraded (an open breaker
  that is not ``critical`` degrades: keep the instance in rotation), 503 when unhealthy.
  Each cache's backend is checked at most once per ``health_probe_interval_seconds``.
- ``/metrics``: Prometheus exposition when the ``prometheus`` extra is installed, else 404
  saying how to install it.
- Any other path: 404. Any method but GET and HEAD: 405.

Routing and rendering live in :class:`Endpoints`, shared by both apps; the ASGI app runs
it in a worker thread because the health check makes a (short) blocking cache round trip,
which must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _wsgiref_make_server

from tasker_resilience._operations.health import UNHEALTHY, build_readiness
from tasker_resilience._resilience import Resilience

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HEALTH_PATH",
    "LIVE_PATH",
    "METRICS_PATH",
    "PATHS",
    "READY_PATH",
    "ASGIApp",
    "Endpoints",
    "health_asgi_app",
    "health_wsgi_app",
    "make_server",
    "serve",
]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8089

HEALTH_PATH: Final = "/health"
LIVE_PATH: Final = "/livez"
READY_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"
PATHS: Final = (LIVE_PATH, READY_PATH, HEALTH_PATH, METRICS_PATH)
_ALLOWED_METHODS: Final = ("GET", "HEAD")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("tasker_resilience.http")


@dataclass(frozen=True)
class _Response:
    status: int
    content_type: str
    body: bytes
    extra_headers: tuple[tuple[str, str], ...] = ()

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            # Health is a live reading: a cached 200 could hide an outage.
            ("Cache-Control", "no-store"),
            *self.extra_headers,
        ]

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def _json(status: int, payload: object) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    return _Response(status, "application/json", body)


def _text(status: int, message: str, *headers: tuple[str, str]) -> _Response:
    return _Response(status, "text/plain; charset=utf-8", f"{message}\n".encode(), headers)


class Endpoints:
    """What both apps (and the Django views) serve; one instance per app."""

    def __init__(self, resilience: Resilience | None) -> None:
        self._resilience = resilience
        self._registry: CollectorRegistry | None = None
        self._registry_lock = threading.Lock()

    def _resolve(self) -> Resilience:
        if self._resilience is not None:
            return self._resilience
        # Per request: a later configure() replaces the process-wide Resilience.
        from tasker_resilience._resilience import current

        return current()

    def handle(self, method: str, path: str, accept: str | None) -> _Response:
        if path not in PATHS:
            return _text(404, f"not found: {path} (try {', '.join(PATHS)})")
        if method not in _ALLOWED_METHODS:
            return _text(
                405, f"method {method} not allowed", ("Allow", ", ".join(_ALLOWED_METHODS))
            )
        if path == LIVE_PATH:
            # The process answers: that is all liveness means. Nothing else is read, so
            # a dependency's outage can never get the process restarted.
            return _json(200, {"status": "alive"})
        if path == READY_PATH:
            return self._report(build_readiness, "readiness")
        if path == HEALTH_PATH:
            return self._report(Resilience.health, "health")
        return self._metrics(accept)

    def _report(self, build: Callable[[Resilience], dict[str, Any]], what: str) -> _Response:
        try:
            report = build(self._resolve())
        except Exception as exc:
            # The type only at ERROR: messages of connection errors may name hosts or
            # carry settings; the traceback is there at DEBUG for whoever needs it.
            _log.error("%s report failed: %s", what, type(exc).__name__)
            _log.debug("%s report failed", what, exc_info=True)
            return _json(503, {"status": UNHEALTHY, "error": type(exc).__name__})
        return _json(503 if report["status"] == UNHEALTHY else 200, report)

    def _metrics(self, accept: str | None) -> _Response:
        from tasker_resilience._operations.metrics import (
            INSTALL_HINT,
            metrics_available,
            private_registry,
            render_metrics,
        )

        if not metrics_available():
            return _text(404, INSTALL_HINT)
        with self._registry_lock:
            if self._registry is None:
                self._registry = private_registry(self._resilience)
            registry = self._registry
        body, content_type = render_metrics(registry, accept)
        return _Response(200, content_type, body)


def health_wsgi_app(resilience: Resilience | None = None) -> WSGIApplication:
    """A WSGI app serving ``/livez``, ``/readyz``, ``/health`` and ``/metrics`` for ``resilience``
    (default: the process-wide one, looked up on each request)."""
    endpoints = Endpoints(resilience)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        # PATH_INFO is already relative to the mount point (SCRIPT_NAME holds the prefix).
        path = str(environ.get("PATH_INFO") or "/")
        response = endpoints.handle(method, path, environ.get("HTTP_ACCEPT"))
        start_response(response.status_line, response.headers())
        return [b"" if method == "HEAD" else response.body]

    return app


def _route_path(scope: Scope) -> str:
    """The path below the mount point: ASGI servers and routers put the prefix in
    ``root_path`` and may or may not leave it in ``path``."""
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        path = path[len(root) :] or "/"
    return path


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up: the Resilience is configured by the application itself.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def health_asgi_app(resilience: Resilience | None = None) -> ASGIApp:
    """An ASGI app serving ``/livez``, ``/readyz``, ``/health`` and ``/metrics`` for ``resilience``
    (default: the process-wide one, looked up on each request)."""
    endpoints = Endpoints(resilience)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            # A websocket to a health endpoint is a client mistake: refuse it.
            await send({"type": "websocket.close", "code": 1008})
            return
        method = str(scope.get("method", "GET")).upper()
        accept = next(
            (
                value.decode("latin-1")
                for name, value in scope.get("headers", ())
                if name == b"accept"
            ),
            None,
        )
        path = _route_path(scope)
        if path == LIVE_PATH:
            response = endpoints.handle(method, path, accept)  # nothing to wait for
        else:
            # A health check may wait up to a cache's socket timeout: off the loop.
            response = await asyncio.to_thread(endpoints.handle, method, path, accept)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in response.headers()],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if method == "HEAD" else response.body}
        )

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # One slow health check (a cache at its socket timeout) must not queue the next scrape.
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # stdlib's parameter name
        # Scrapes every few seconds would flood stderr; the access log is at DEBUG.
        _log.debug("%s - %s", self.address_string(), format % args)


def make_server(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, resilience: Resilience | None = None
) -> WSGIServer:
    """A threaded ``wsgiref`` server for the WSGI app, bound but not yet serving
    (``port=0`` picks a free port: read it from ``server.server_port``)."""
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    return _wsgiref_make_server(
        host,
        port,
        health_wsgi_app(resilience),
        server_class=server_class,
        handler_class=_QuietHandler,
    )


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    resilience: Resilience | None = None,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``/livez``, ``/readyz``, ``/health`` and ``/metrics`` until interrupted
    (KeyboardInterrupt propagates).

    ``on_ready`` receives the base URL once the socket is bound.
    """
    with make_server(host, port, resilience) as server:
        shown_host = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(f"http://{shown_host}:{server.server_port}")
        server.serve_forever()

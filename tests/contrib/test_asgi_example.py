"""The FastAPI example (docs/examples/fastapi_app.py) under a real uvicorn server, with
real HTTP requests, through a frozen redis-server: it keeps answering, the health app
says degraded, it recovers, and it shuts down without unclosed-connection warnings."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasker_resilience._operations.drill.local_server import LocalServer
from tests.integration._support import wait_until

pytest.importorskip("fastapi", reason="the fastapi extra is not installed")
pytest.importorskip("uvicorn", reason="uvicorn (test extra) is not installed")

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "docs" / "examples"
SOCKET_TIMEOUT = 0.1
SLOW_QUERY_SECONDS = 0.05  # docs/examples/fastapi_app.py


@dataclass
class Served:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def get(self, path: str) -> tuple[int, Any, float]:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        return status, json.loads(body), time.perf_counter() - started

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(url: str) -> dict[str, str]:
    cache = "TASKER_COMMON__CIRCUIT_BREAKERS__COMPONENT_CONFIGS__CACHE__"
    return {
        **os.environ,
        "TASKER_ENV": "test",
        "TASKER_COMMON__CACHE__BACKEND": "redis",
        "TASKER_COMMON__CACHE__REDIS__URL": url,
        "TASKER_COMMON__CACHE__REDIS__SOCKET_TIMEOUT_SECONDS": str(SOCKET_TIMEOUT),
        "TASKER_COMMON__CACHE__REDIS__CONNECT_TIMEOUT_SECONDS": str(SOCKET_TIMEOUT),
        cache + "FAILURE_THRESHOLD": "3",
        cache + "TIMEOUT_SECONDS": "1",
        cache + "SUCCESS_THRESHOLD": "1",
        # Unclosed sockets and redis-py clients warn when collected: show every one.
        "PYTHONWARNINGS": "always::ResourceWarning",
    }


@pytest.fixture
def served(private_server: LocalServer, tmp_path: Path) -> Iterator[Served]:
    port = _free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "fastapi_app:app",
                "--app-dir",
                str(EXAMPLES),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=_environment(private_server.url),
        )
    app = Served(f"http://127.0.0.1:{port}", process, log_path)
    try:

        def answers() -> bool:
            try:
                return app.get("/ops/health")[0] == 200
            except OSError:
                return process.poll() is None and False

        assert wait_until(answers, timeout=20, interval=0.1), app.log()
        yield app
    finally:
        private_server.thaw()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_fastapi_example_answers_over_http_through_an_outage(
    served: Served, private_server: LocalServer
) -> None:
    status, body, _ = served.get("/products/7")
    assert status == 200
    assert body == {"product": {"id": 7, "name": "product 7"}, "recommendations": [8, 9]}
    assert served.get("/ops/health")[1]["cache"]["circuit_state"] == "closed"

    private_server.freeze()
    # Until the breaker opens, cache calls wait for their socket timeout; the endpoint
    # still answers (the product is computed instead of read).
    for _ in range(3):
        status, body, _ = served.get("/products/7")
        assert status == 200
        assert body["product"] == {"id": 7, "name": "product 7"}
    status, health, _ = served.get("/ops/health")
    assert status == 200  # degraded, not unhealthy: keep the instance in rotation
    assert health["status"] == "degraded"
    assert health["cache"]["circuit_state"] == "open"

    latencies = []
    for product_id in range(20):
        status, body, seconds = served.get(f"/products/{product_id}")
        assert status == 200
        assert body["product"]["id"] == product_id
        latencies.append(seconds)
    # The query itself (50 ms) plus HTTP, but no cache timeout (0.1 s per call).
    assert statistics.median(latencies) < SLOW_QUERY_SECONDS + SOCKET_TIMEOUT

    private_server.thaw()
    # Traffic probes and closes the circuit; health requests only watch (they never
    # move a breaker, so a storm of them cannot open or close one).
    assert wait_until(
        lambda: (
            served.get("/products/7")[0] == 200
            and served.get("/ops/health")[1]["cache"]["circuit_state"] == "closed"
        ),
        timeout=10,
        interval=0.2,
    )

    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(15) == 0
    log = served.log()
    assert "Application shutdown complete" in log
    assert "ResourceWarning" not in log, log
    assert "nclosed" not in log, log  # redis-py: "Unclosed client", "Unclosed connection"

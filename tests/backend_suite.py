"""Doubles and servers the project's own failure tests share: a backend that counts its
calls and fails on demand, a TCP server that never answers, a private redis-server.

The conformance suite itself ships in the package: ``tasker_resilience.testing.BackendConformance``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from typing import Any

import redis

from tasker_resilience._cache.backends.contract import InProcessAsyncMixin
from tasker_resilience._cache.backends.memory_backend import MemoryBackend

__all__ = [
    "CountingBackend",
    "Outage",
    "PrivateRedis",
    "SilentServer",
    "closed_port",
]


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SilentServer:
    """Accepts TCP connections and never answers: a hung cache. Counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        self.sock.close()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()


class Outage(ConnectionError):
    """What the counting backend raises while "down"."""


class CountingBackend(InProcessAsyncMixin):
    """A distributed-looking backend over an in-memory store that records every call
    and can be switched to fail like an unreachable server."""

    distributed = True
    name = "counting"

    def __init__(self) -> None:
        self.store = MemoryBackend(1000)
        self.calls: list[tuple[Any, ...]] = []
        self.failing: BaseException | None = None

    def _call(self, op: str, *args: Any) -> Any:
        self.calls.append((op, *args))
        if self.failing is not None:
            raise self.failing
        return getattr(self.store, op)(*args)

    def ops(self) -> list[str]:
        return [call[0] for call in self.calls]

    def get(self, key: str) -> bytes | None:
        return self._call("get", key)  # type: ignore[no-any-return]

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self._call("set", key, value, ttl_seconds)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def delete_pattern(self, pattern: str) -> int:
        return self._call("delete_pattern", pattern)  # type: ignore[no-any-return]

    def health_check(self) -> bool:
        return self._call("health_check")  # type: ignore[no-any-return]

    def close(self) -> None:
        pass

    def is_backend_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, TimeoutError))


class PrivateRedis:
    """A private redis-server on a given loopback port (never the shared one)."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

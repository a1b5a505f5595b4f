"""TEMPORARY stand-in for tasker_resilience._local_server.LocalServer (interface 3).

Used only until the SERVERS engineer's module lands; same method names.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TmpServer:
    kind = "redis-server"

    def __init__(self) -> None:
        path = shutil.which("redis-server")
        if path is None:
            raise RuntimeError("redis-server not on PATH")
        self._path = path
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self._path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def version(self) -> str:
        return str(redis.Redis(port=self.port).info("server")["redis_version"])

    def freeze(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._proc.terminate()
            self._proc.wait(5)
            self._proc = None

    def __enter__(self) -> TmpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A private cache server process for tests, drills and benchmarks.

``LocalServer`` starts ``dragonfly``, ``redis-server`` or ``valkey-server`` on a free
127.0.0.1 port with persistence off, and keeps the ``Popen`` handle (no daemonizing)
so it can freeze (SIGSTOP), thaw (SIGCONT), kill (SIGKILL) and restart the process on
the same port. It exists so fault drills never touch a server somebody else relies on.

Every started server is stopped on ``stop()``, on leaving the ``with`` block, and, as
a safety net for a failed test or an interrupted run, when the interpreter exits.

Dragonfly is started with ``--port``, ``--bind 127.0.0.1``, ``--dbfilename=`` (empty:
no snapshot is loaded or saved), ``--dir <temp dir>``, ``--logtostderr`` and
``--proactor_threads=1`` (a test server does not need one thread per core).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["SERVER_KINDS", "LocalServer", "ServerStartError", "find_server_binary"]

SERVER_KINDS: tuple[str, ...] = ("dragonfly", "redis-server", "valkey-server")
"""Binaries looked for on PATH, in order of preference."""

_HOST = "127.0.0.1"
_START_TIMEOUT_SECONDS = 10.0
_PORT_BUSY_RETRY_SECONDS = 5.0
_STOP_GRACE_SECONDS = 5.0
_PING = b"*1\r\n$4\r\nPING\r\n"
_INFO_SERVER = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"


class ServerStartError(RuntimeError):
    """The server process could not be started or did not answer PING in time."""


def find_server_binary() -> tuple[str, str] | None:
    """``(kind, path)`` of the first of ``dragonfly``, ``redis-server``, ``valkey-server``
    on PATH, or ``None`` when there is none."""
    for kind in SERVER_KINDS:
        path = shutil.which(kind)
        if path is not None:
            return kind, path
    return None


def _kind_of(path: str) -> str:
    name = Path(path).name.lower()
    if "dragonfly" in name:
        return "dragonfly"
    if "valkey" in name:
        return "valkey-server"
    return "redis-server"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the servers set, so a port only in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def _command(port: int, request: bytes, timeout: float) -> bytes:
    """Send one RESP request and return the raw reply.

    A raw socket rather than redis-py: a readiness probe must not inherit a client's
    retries or pools, and must work before the package's own config exists.
    """
    with socket.create_connection((_HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
            if _reply_complete(reply):
                return reply
        raise TimeoutError(f"incomplete reply from {_HOST}:{port}")


def _reply_complete(reply: bytes) -> bool:
    header, sep, rest = reply.partition(b"\r\n")
    if not sep:
        return False
    if header.startswith(b"$"):
        length = int(header[1:])
        return length < 0 or len(rest) >= length + 2
    return True


def _server_args(kind: str, port: int, data_dir: str) -> list[str]:
    if kind == "dragonfly":
        return [
            f"--port={port}",
            f"--bind={_HOST}",
            "--dbfilename=",
            f"--dir={data_dir}",
            "--logtostderr",
            "--proactor_threads=1",
        ]
    # redis-server and valkey-server share their command line.
    return [
        "--port",
        str(port),
        "--bind",
        _HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        data_dir,
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]


class LocalServer:
    """A private server process on 127.0.0.1: ``with LocalServer() as server: server.url``.

    ``binary`` is a name on PATH or a path; by default the first of
    :data:`SERVER_KINDS` found on PATH. ``port`` pins the port (default: a free one,
    chosen at the first start and kept across restarts). ``extra_args`` go on the
    server's command line after the defaults (e.g. ``["--enable-debug-command",
    "local"]`` or ``["--rename-command", "UNLINK", ""]`` for a redis-server).
    ``config_text`` is written to ``server.conf`` in the data directory and passed
    first (sentinel mode needs a writable config file; a restart keeps the server's
    own rewrites of it).
    """

    port_retry_seconds: float = _PORT_BUSY_RETRY_SECONDS
    """How long a start on a busy port keeps retrying (a killed server's port may take
    a moment to be released) before it gives up."""

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        config_text: str | None = None,
    ) -> None:
        if binary is None:
            found = find_server_binary()
            if found is None:
                raise ServerStartError(
                    f"none of {', '.join(SERVER_KINDS)} is on PATH; install one "
                    "(e.g. apt-get install redis-server)"
                )
            path = found[1]
        else:
            resolved = shutil.which(binary)
            if resolved is None:
                raise ServerStartError(f"server binary {binary!r} not found")
            path = resolved
        self._path = path
        self._kind = _kind_of(path)
        self._extra_args = tuple(extra_args)
        self._port_pinned = port is not None
        # Topologies (tasker_resilience._operations.drill.topology) start sentinels from
        # a config file: sentinel mode only starts from a writable one.
        self._config_text = config_text
        self._port: int = port if port is not None else _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None
        self._version: str | None = None
        # Freeze/thaw may come from timer threads while the test thread restarts.
        self._lock = threading.RLock()

    # --- what it is --------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"dragonfly"``, ``"redis-server"`` or ``"valkey-server"``."""
        return self._kind

    @property
    def binary(self) -> str:
        return self._path

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def data_dir(self) -> str | None:
        """The server's working directory (its log, config and cluster state), while it exists."""
        return None if self._data_dir is None else self._data_dir.name

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """True while the process exists (a frozen process is still running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def is_frozen(self) -> bool:
        return self._frozen and self.is_running

    def version(self) -> str:
        """The server's version, e.g. ``"7.0.15"`` (``INFO server``, else ``--version``)."""
        if self._version is None:
            self._version = self._version_from_info() or self._version_from_binary()
        return self._version

    def _version_from_info(self) -> str | None:
        if not self.is_running or self._frozen:
            return None
        try:
            info = _command(self._port, _INFO_SERVER, timeout=2.0).decode("utf-8", "replace")
        except (OSError, ValueError):  # no answer, or not the reply shape expected
            return None
        fields = dict(
            line.split(":", 1) for line in info.splitlines() if ":" in line and line[0] != "#"
        )
        # Dragonfly and Valkey also report a redis_version for compatibility; the
        # server's own version is the one worth printing.
        for key in (f"{self._kind.split('-')[0]}_version", "redis_version"):
            if key in fields:
                return fields[key].strip().removeprefix("df-v")
        return None

    def _version_from_binary(self) -> str:
        try:
            output = subprocess.run(
                [self._path, "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        match = re.search(r"v=?(\d+(?:\.\d+)+)", output)
        return match.group(1) if match else (output.strip() or "unknown")

    # --- life cycle --------------------------------------------------------------

    def start(self) -> LocalServer:
        """Start the process (no-op if running) and wait until it answers PING."""
        with self._lock:
            if self.is_running:
                return self
            if self._data_dir is None:
                self._data_dir = tempfile.TemporaryDirectory(prefix=f"tasker-{self._kind}-")
            deadline = time.monotonic() + self.port_retry_seconds
            while True:
                self._claim_port(deadline)
                self._spawn()
                try:
                    self._wait_ready()
                    break
                except ServerStartError:
                    # Retry only a process that exited because someone took the port
                    # between the check and its bind.
                    port_taken = not self.is_running and not _port_is_free(self._port)
                    if not port_taken or time.monotonic() > deadline:
                        self._terminate()
                        raise
            _live.add(self)
            return self

    def _claim_port(self, deadline: float) -> None:
        """Start only on a port nothing listens on: the readiness PING must reach this
        process, not a server that already holds the port."""
        while not _port_is_free(self._port):
            if not self._port_pinned:
                self._port = _free_port()
            elif time.monotonic() > deadline:
                raise ServerStartError(
                    f"port {self._port} on {_HOST} is in use by another process "
                    f"(waited {self.port_retry_seconds:g} s)"
                )
            else:
                # A killed server's port can take a moment to be released.
                time.sleep(0.05)

    def _spawn(self) -> None:
        assert self._data_dir is not None
        data_dir = self._data_dir.name
        log_path = Path(data_dir) / "server.log"
        argv = [self._path]
        if self._config_text is not None:
            config_path = Path(data_dir) / "server.conf"
            if not config_path.exists():  # a restart keeps what the server rewrote
                config_path.write_text(self._config_text, "utf-8")
            argv.append(str(config_path))
        argv += [*_server_args(self._kind, self._port, data_dir), *self._extra_args]
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server.
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir.name,
            )
        self._frozen = False

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"{self._kind} exited with code {self._process.returncode} on port "
                    f"{self._port}: {self._log_tail()}"
                )
            try:
                answered = _command(self._port, _PING, timeout=0.5).startswith(b"+PONG")
            except OSError:
                answered = False
            if answered and self._process.poll() is None:
                return
            time.sleep(0.02)
        raise ServerStartError(
            f"{self._kind} did not answer PING on port {self._port} within "
            f"{_START_TIMEOUT_SECONDS:g} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self._data_dir is None:
            return ""
        try:
            text = (Path(self._data_dir.name) / "server.log").read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-5:]) or "(empty log)"

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung server)."""
        with self._lock:
            self._signal(signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        """SIGCONT: a frozen server resumes (harmless if it is not frozen)."""
        with self._lock:
            if self.is_running:
                self._signal(signal.SIGCONT)
            self._frozen = False

    def kill(self) -> None:
        """SIGKILL: the server crashes; ``restart()`` brings it back on the same port."""
        with self._lock:
            if self._process is None:
                return
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._frozen = False

    def restart(self) -> LocalServer:
        """Stop the process if it runs, then start it again on the same port (empty)."""
        with self._lock:
            self._terminate()
            # Restart means the same port: start() waits briefly for it to be released.
            pinned, self._port_pinned = self._port_pinned, True
            try:
                return self.start()
            finally:
                self._port_pinned = pinned

    def stop(self) -> None:
        """Terminate the process (thawing it first), then SIGKILL if it lingers."""
        with self._lock:
            self._terminate()
            _live.discard(self)
            if self._data_dir is not None:
                self._data_dir.cleanup()
                self._data_dir = None

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            # A stopped process queues SIGTERM until continued: thaw it first.
            self._signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._frozen = False

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise ServerStartError(f"{self._kind} on port {self._port} is not running")
        os.kill(self._process.pid, signum)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "frozen" if self.is_frozen else "running" if self.is_running else "stopped"
        return f"<LocalServer {self._kind} {self.url} {state}>"


_live: set[LocalServer] = set()
"""Servers started and not yet stopped; the exit hook stops whatever is left."""


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        # At exit, one server failing to stop must not keep the others running.
        with contextlib.suppress(Exception):
            server.stop()

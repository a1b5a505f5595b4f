"""``LocalServer``: a private server process that can be frozen, killed and restarted."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tasker_resilience._operations.drill.local_server import (
    LocalServer,
    ServerStartError,
    _server_args,
    find_server_binary,
)

from ._support import timed

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _ping(server: LocalServer, timeout: float = 0.3) -> bool:
    client = redis.Redis.from_url(
        server.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still has a pid; it is gone for every purpose that matters here.
    status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    return status != "Z"


def _running(server: LocalServer) -> bool:
    # Through a call: mypy would carry the narrowing of an earlier assert on the property.
    return server.is_running


def _executable(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_server_binary_prefers_dragonfly_then_redis_then_valkey(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binary() is None
    valkey = _executable(tmp_path, "valkey-server")
    assert find_server_binary() == ("valkey-server", str(valkey))
    redis_server = _executable(tmp_path, "redis-server")
    assert find_server_binary() == ("redis-server", str(redis_server))
    dragonfly = _executable(tmp_path, "dragonfly")
    assert find_server_binary() == ("dragonfly", str(dragonfly))


def test_kind_follows_the_binary_name(tmp_path: Path) -> None:
    for name, kind in [
        ("dragonfly-x86_64", "dragonfly"),
        ("valkey-server", "valkey-server"),
        ("redis-server", "redis-server"),
    ]:
        assert LocalServer(str(_executable(tmp_path, name))).kind == kind


def test_command_lines_bind_loopback_and_keep_nothing_on_disk() -> None:
    redis_args = _server_args("redis-server", 7000, "/tmp/x")
    assert redis_args[redis_args.index("--bind") + 1] == "127.0.0.1"
    assert redis_args[redis_args.index("--save") + 1] == ""
    assert redis_args[redis_args.index("--appendonly") + 1] == "no"
    assert redis_args[redis_args.index("--daemonize") + 1] == "no"
    dragonfly_args = _server_args("dragonfly", 7000, "/tmp/x")
    for flag in ("--port=7000", "--bind=127.0.0.1", "--dbfilename=", "--logtostderr"):
        assert flag in dragonfly_args


def test_missing_binaries_are_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ServerStartError, match="no-such-server"):
        LocalServer("no-such-server")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerStartError, match="redis-server"):
        LocalServer()


def test_a_server_that_exits_at_once_fails_fast_with_its_exit_code(tmp_path: Path) -> None:
    server = LocalServer(str(_executable(tmp_path, "x")))
    start = time.monotonic()
    with pytest.raises(ServerStartError, match="exited with code 1"):
        server.start()
    assert time.monotonic() - start < 2, "a process that exited is not waited for"


def test_life_cycle(private_server: LocalServer) -> None:
    server = private_server
    assert server.is_running
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert _ping(server)
    assert server.version()[0].isdigit()
    assert repr(server).endswith("running>")

    server.freeze()
    assert (server.is_frozen, server.is_running) == (True, True)
    elapsed, answered = timed(lambda: _ping(server))
    assert not answered
    assert elapsed >= 0.25, "a frozen server accepts the connection and says nothing"
    server.thaw()
    assert not server.is_frozen
    assert _ping(server, timeout=2)
    server.thaw()  # harmless when not frozen

    with redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
    port, pid = server.port, server.pid
    assert pid is not None
    server.kill()
    assert repr(server).endswith("stopped>")
    assert not _running(server)
    assert not _alive(pid)
    assert not _ping(server)

    server.restart()
    assert server.port == port
    assert server.pid != pid
    assert _ping(server)
    with redis.Redis.from_url(server.url) as client:
        assert client.get("k") is None, "persistence is off"


def test_restart_of_a_running_server_keeps_the_port(private_server: LocalServer) -> None:
    port, pid = private_server.port, private_server.pid
    private_server.restart()
    assert (private_server.port, _ping(private_server)) == (port, True)
    assert private_server.pid != pid


def test_stop_thaws_a_frozen_server_and_is_idempotent() -> None:
    server = LocalServer().start()
    pid = server.pid
    assert pid is not None
    server.freeze()
    elapsed, _ = timed(server.stop)
    assert elapsed < 3, "terminated, not left to time out"
    assert not _alive(pid)
    assert not server.is_running
    server.stop()


def test_a_pinned_port_is_used(private_server: LocalServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with LocalServer(port=port) as server:
        assert server.port == port
        assert _ping(server)
    assert not server.is_running


def test_a_pinned_port_held_by_another_server_is_an_error(private_server: LocalServer) -> None:
    intruder = LocalServer(port=private_server.port)
    intruder.port_retry_seconds = 0.5
    start = time.monotonic()
    with pytest.raises(ServerStartError, match=f"port {private_server.port} .* in use"):
        intruder.start()
    assert 0.5 <= time.monotonic() - start < 5, "retried briefly, then gave up"
    assert not intruder.is_running
    assert _ping(private_server), "the server already there is left alone"


def test_the_exit_hook_stops_a_server_nobody_stopped(tmp_path: Path) -> None:
    """A run that forgets (or fails before) ``stop()`` leaves no process behind."""
    script = textwrap.dedent(
        """
        from tasker_resilience._operations.drill.local_server import LocalServer
        server = LocalServer().start()
        server.freeze()
        print(server.pid, flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(result.stdout.strip())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)

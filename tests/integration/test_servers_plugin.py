"""The real-server fixture itself: resolution order, flushing policy, reporting, skipping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tasker_resilience._operations.drill.local_server import LocalServer
from tests import servers

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_SERVER_ENV = (servers.URL_ENV, servers.FLUSH_ENV, servers.REQUIRE_ENV, "DOCKER_HOST")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NO_SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_url_comes_first_and_an_empty_database_is_flushed(
    private_server: LocalServer, clean_env: pytest.MonkeyPatch
) -> None:
    # The server's default user has no password (nopass), which accepts any password
    # given with the user name: AUTH default hunter2 (RESP2, redis-py < 8's default) and
    # HELLO 3 AUTH default hunter2 (RESP3, redis-py 8's) alike. A password alone (":hunter2@")
    # is sent as the one-argument AUTH under RESP2, which a server without requirepass refuses.
    url = private_server.url.replace("redis://", "redis://default:hunter2@")
    clean_env.setenv(servers.URL_ENV, url)
    resolution = servers._resolve()
    assert resolution.server is not None
    assert resolution.server.url == url
    assert resolution.server.flush is True
    assert "TASKER_TEST_CACHE_URL" in resolution.server.description
    assert "empty at start" in resolution.server.description
    assert "hunter2" not in resolution.server.description
    assert "redis://default:***@127.0.0.1" in resolution.server.description


def test_a_database_holding_keys_is_never_flushed_unless_asked(
    private_server: LocalServer, clean_env: pytest.MonkeyPatch
) -> None:
    with redis.Redis.from_url(private_server.url) as client:
        client.set("someone-elses", "data")
    clean_env.setenv(servers.URL_ENV, private_server.url)
    resolution = servers._resolve()
    assert resolution.server is not None
    assert resolution.server.flush is False
    assert "held 1 keys" in resolution.server.description

    clean_env.setenv(servers.FLUSH_ENV, "1")
    forced = servers._resolve().server
    assert forced is not None
    assert forced.flush is True


def test_an_unreachable_url_is_an_error_not_a_skip(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(servers.URL_ENV, f"redis://:pw@127.0.0.1:{_closed_port()}/0")
    resolution = servers._resolve()
    assert resolution.server is None
    assert resolution.error is True
    assert "does not answer" in resolution.reason
    assert ":pw@" not in resolution.reason


def test_without_a_url_a_binary_on_path_is_started_privately(
    clean_env: pytest.MonkeyPatch,
) -> None:
    resolution = servers._resolve()
    server = resolution.server
    assert server is not None
    try:
        assert server.flush is True
        assert "(private process)" in server.description
        assert server.url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(server.url, socket_timeout=2) as client:
            assert client.ping()
    finally:
        server.close()
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(server.url) as client:
        client.ping()


def test_nothing_available_falls_through_fast_with_one_reason(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("PATH", "/nonexistent")
    start = time.monotonic()
    resolution = servers._resolve()
    assert time.monotonic() - start < 1
    assert resolution.server is None
    assert resolution.error is False
    assert resolution.reason.startswith("no real cache server:")


def test_a_docker_engine_that_does_not_answer_is_given_up_on_quickly(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    assert servers._docker_answers() is False
    assert time.monotonic() - start < servers.DOCKER_PING_TIMEOUT_SECONDS + 2


# --- the plugin in a pytest run of its own -----------------------------------------------


def _run_pytest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_uses_server.py").write_text(
        "def test_server(cache_server_url):\n"
        "    assert cache_server_url.startswith('redis://')\n"
        "def test_drill(private_server):\n"
        "    private_server.freeze()\n"
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k not in NO_SERVER_ENV}
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env.update(env)
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.servers", "-p", "no:cacheprovider"),
            *("-rs", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)),
        ],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_run_names_the_server_it_used(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cache server: redis-server" in result.stdout
    assert "(private process)" in result.stdout
    assert "fault drills: private redis-server" in result.stdout
    assert "2 passed" in result.stdout


def test_a_run_without_servers_skips_with_the_reason_or_fails_when_required(
    tmp_path: Path,
) -> None:
    skipped = _run_pytest(tmp_path, {"PATH": "/nonexistent"})
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "2 skipped" in skipped.stdout
    assert "no real cache server: TASKER_TEST_CACHE_URL is unset" in skipped.stdout
    assert "fault drills need a dragonfly, redis-server or valkey-server" in skipped.stdout

    required = _run_pytest(tmp_path, {"PATH": "/nonexistent", servers.REQUIRE_ENV: "1"})
    assert required.returncode == 1
    assert "2 errors" in required.stdout  # at fixture set-up
    assert "a missing server is an error" in required.stdout

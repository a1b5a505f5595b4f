"""Real cache servers for the integration tests and fault drills (a pytest plugin).

Fixtures:

- ``cache_server`` / ``cache_server_url`` (session): a server the integration tests
  talk to over TCP, resolved in this order:

  1. ``TASKER_TEST_CACHE_URL`` (e.g. a Dragonfly from ``docker/docker-compose.test.yml``
     or a CI service container). Its database is FLUSHED before every test that uses
     it when it was empty at the start of the session (or ``TASKER_TEST_CACHE_FLUSH=1``);
     a database that already held keys is never flushed (``TASKER_TEST_CACHE_FLUSH=0``
     forces that). Tests use unique key prefixes either way;
  2. a ``dragonfly``, ``redis-server`` or ``valkey-server`` binary on PATH, started
     privately on a free 127.0.0.1 port with persistence off;
  3. Dragonfly through testcontainers, when a Docker engine answers (checked with a
     short timeout so a machine without one falls through at once);
  4. otherwise the tests skip with one reason (or fail when
     ``TASKER_TEST_REQUIRE_SERVER=1``, as in ``.ci/run``).

- ``cache_url`` (function): ``cache_server_url`` with its database flushed first.
- ``key_prefix`` (function): a unique key prefix per test, even on a flushed database.
- ``private_server`` (function): a :class:`LocalServer` the test owns and may freeze,
  kill and restart. Never the shared URL: drills must not break a server someone
  else relies on. Stopped (thawed first) when the test ends, whatever happened.
- ``second_private_server`` (function): another one, for tests of two caches on two
  servers (one frozen, the other serving).

The server used is printed after collection and in the terminal summary, e.g.
``cache server: redis-server 7.0.15 at redis://127.0.0.1:40001/0 (private process)``.

Load it with ``pytest_plugins = ["tests.servers"]`` in a top-level conftest or
``-p tests.servers``; ``tests/integration/conftest.py`` imports the fixtures and hooks
instead (pytest refuses ``pytest_plugins`` in a conftest below the top level).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tasker_resilience._config.redact import redact_url
from tasker_resilience._operations.drill.local_server import (
    LocalServer,
    ServerStartError,
    find_server_binary,
)

__all__ = [
    "DRAGONFLY_IMAGE",
    "CacheServer",
    "cache_server",
    "cache_server_url",
    "cache_url",
    "key_prefix",
    "private_server",
    "pytest_configure",
    "pytest_report_collectionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    "second_private_server",
]

URL_ENV = "TASKER_TEST_CACHE_URL"
FLUSH_ENV = "TASKER_TEST_CACHE_FLUSH"
REQUIRE_ENV = "TASKER_TEST_REQUIRE_SERVER"
DRAGONFLY_IMAGE = "docker.dragonflydb.io/dragonflydb/dragonfly"
DOCKER_PING_TIMEOUT_SECONDS = 2
CONTAINER_READY_TIMEOUT_SECONDS = 60.0


@dataclass
class CacheServer:
    """The server the integration tests use, and how it was found."""

    url: str
    description: str
    """One line for the report; the URL in it is redacted."""
    flush: bool
    """Whether tests may FLUSHDB it (always for servers the suite started)."""
    _cleanup: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        while self._cleanup:
            self._cleanup.pop()()


@dataclass
class _Resolution:
    server: CacheServer | None = None
    reason: str = ""
    """Why there is no server (set when ``server`` is None)."""
    error: bool = False
    """The tests fail rather than skip: a server was asked for and does not answer."""


_STASH_KEY = pytest.StashKey[_Resolution]()


def _requires_server() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def _skip_or_fail(reason: str) -> None:
    if _requires_server():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: a missing server is an error)")
    pytest.skip(reason)


# --- resolution ---------------------------------------------------------------------------


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _server_version(url: str) -> str:
    """``"redis 7.2.4"``, ``"dragonfly 1.21.2"``, ``"valkey 8.0.1"`` as INFO reports it."""
    client = _client(url)
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    for kind in ("dragonfly", "valkey"):
        if f"{kind}_version" in info:
            return f"{kind} {str(info[f'{kind}_version']).removeprefix('df-v')}"
    return f"redis {info.get('redis_version', '(version unknown)')}"


def _flush_policy(url: str) -> tuple[bool, str]:
    """Whether tests may FLUSHDB the database behind ``TASKER_TEST_CACHE_URL``, and why.

    ``TASKER_TEST_CACHE_FLUSH=1`` / ``0`` decide; otherwise only a database that is
    empty when the session starts is flushed: keys already there belong to someone.
    """
    choice = os.environ.get(FLUSH_ENV, "").strip().lower()
    if choice in ("1", "true", "yes"):
        return True, f"flushed before each test ({FLUSH_ENV}=1)"
    if choice in ("0", "false", "no"):
        return False, f"never flushed ({FLUSH_ENV}=0)"
    client = _client(url)
    try:
        keys = int(client.dbsize())
    finally:
        client.close()
    if keys == 0:
        return True, "empty at start, so flushed before each test"
    return False, (
        f"held {keys} keys at start, so never flushed; set {FLUSH_ENV}=1 if it is yours to wipe"
    )


def _from_env_url(url: str) -> _Resolution:
    try:
        version = _server_version(url)
        flush, note = _flush_policy(url)
    except redis.RedisError as exc:
        # Asked for explicitly: an unreachable URL is an error, never a silent skip.
        reason = f"{URL_ENV}={redact_url(url)} does not answer ({type(exc).__name__})"
        return _Resolution(reason=reason, error=True)
    description = f"{version} at {redact_url(url)} ({URL_ENV}; {note})"
    return _Resolution(CacheServer(url, description, flush))


def _from_binary(path: str) -> CacheServer:
    local = LocalServer(path).start()
    description = f"{local.kind} {local.version()} at {local.url} (private process)"
    return CacheServer(local.url, description, True, [local.stop])


def _docker_answers() -> bool:
    """A quick yes/no: without a socket or DOCKER_HOST there is nothing to ask."""
    sockets = (Path("/var/run/docker.sock"), Path.home() / ".docker/run/docker.sock")
    if not os.environ.get("DOCKER_HOST") and not any(path.exists() for path in sockets):
        return False
    try:
        import docker

        # docker-py's re-exports are untyped: mypy cannot see from_env.
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)  # type: ignore[attr-defined]
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _from_container() -> CacheServer:
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(DRAGONFLY_IMAGE)
        .with_exposed_ports(6379)
        # The image entrypoint prepends "dragonfly --logtostderr" to flag arguments.
        .with_command("--dbfilename= --proactor_threads=1")
    )
    container.start()
    try:
        url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
        deadline = time.monotonic() + CONTAINER_READY_TIMEOUT_SECONDS
        while True:
            try:
                version = _server_version(url)
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    except BaseException:
        container.stop()
        raise
    description = f"{version} at {url} (testcontainers, {DRAGONFLY_IMAGE})"
    return CacheServer(url, description, True, [container.stop])


def _resolve() -> _Resolution:
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return _from_env_url(url)
    found = find_server_binary()
    if found is not None:
        try:
            return _Resolution(_from_binary(found[1]))
        except ServerStartError as exc:
            return _Resolution(reason=f"could not start {found[1]}: {exc}")
    if _docker_answers():
        try:
            return _Resolution(_from_container())
        except Exception as exc:
            return _Resolution(reason=f"could not start Dragonfly in Docker: {exc}")
    return _Resolution(
        reason=(
            f"no real cache server: {URL_ENV} is unset, none of dragonfly, redis-server, "
            "valkey-server is on PATH, and no Docker engine answers (install redis-server "
            f"or set {URL_ENV})"
        )
    )


def _resolution(config: pytest.Config) -> _Resolution:
    """Resolve once per session; the server lives until the session ends."""
    resolution = config.stash.get(_STASH_KEY, None)
    if resolution is None:
        resolution = config.stash[_STASH_KEY] = _resolve()
    return resolution


# --- hooks --------------------------------------------------------------------------------


def _summary(config: pytest.Config) -> str | None:
    resolution = config.stash.get(_STASH_KEY, None)
    if resolution is None:
        return None
    if resolution.server is not None:
        return f"cache server: {resolution.server.description}"
    return f"cache server: none ({resolution.reason})"


_DRILL_KEY = pytest.StashKey[str]()


def _drill_summary() -> str:
    found = find_server_binary()
    if found is None:
        return "fault drills: no dragonfly, redis-server or valkey-server on PATH"
    kind, path = found
    version = LocalServer(path).version()  # `--version`: nothing is started here
    return f"fault drills: private {kind} {version} processes ({path}), one per test"


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: list[pytest.Item]
) -> list[str]:
    """Name the servers right after collection (started now, only if a test needs one)."""
    used = {name for item in items for name in getattr(item, "fixturenames", ())}
    lines: list[str] = []
    if "cache_server" in used:
        _resolution(config)
        lines.append(_summary(config) or "")
    if "private_server" in used:
        config.stash[_DRILL_KEY] = _drill_summary()
        lines.append(config.stash[_DRILL_KEY])
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for line in (_summary(config), config.stash.get(_DRILL_KEY, None)):
        if line:
            terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    """Turn SIGTERM into an interrupt, so a terminated run still tears its servers down.

    By default SIGTERM ends the interpreter without running fixture teardowns or
    ``atexit`` hooks, and frozen private servers would outlive the run. Left alone if
    someone else already handles SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    resolution = config.stash.get(_STASH_KEY, None)
    if resolution is not None and resolution.server is not None:
        resolution.server.close()


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cache_server(pytestconfig: pytest.Config) -> CacheServer:
    """The real server of this session (see the module docstring for the order)."""
    resolution = _resolution(pytestconfig)
    if resolution.server is None:
        if resolution.error:
            pytest.fail(resolution.reason, pytrace=False)
        _skip_or_fail(resolution.reason)
    assert resolution.server is not None
    return resolution.server


@pytest.fixture(scope="session")
def cache_server_url(cache_server: CacheServer) -> str:
    return cache_server.url


@pytest.fixture
def cache_url(cache_server: CacheServer) -> str:
    """The session server's URL, its database flushed first (when allowed)."""
    if cache_server.flush:
        client = redis.Redis.from_url(cache_server.url, socket_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()
    return cache_server.url


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test uses: tests stay apart even on an unflushed server."""
    return f"it-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_server() -> Iterator[LocalServer]:
    """A started server process this test owns: freeze, thaw, kill, restart at will."""
    if find_server_binary() is None:
        _skip_or_fail(
            "fault drills need a dragonfly, redis-server or valkey-server binary on PATH: "
            f"they freeze and kill a private process (never {URL_ENV})"
        )
    server = LocalServer()
    try:
        server.start()
        yield server
    finally:
        # Thaws a frozen process before terminating it; no orphan survives the test.
        server.stop()


@pytest.fixture
def second_private_server(private_server: LocalServer) -> Iterator[LocalServer]:
    """A second started server process, of the same kind as ``private_server``."""
    server = LocalServer(private_server.binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()

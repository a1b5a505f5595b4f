"""Host sharing: what one process's breaker learns reaches the others of its host.

Several ``HostSharing`` objects in this process stand for several processes where the
decision logic is what is tested (each takes a slot of its own, as a process does);
real processes (fork, spawn, a killed and restarted one, a lock holder) where the
claim is about processes. The fleet of worker processes against a frozen server is in
``tests/integration/test_host_sharing_fleet.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience._breakers.breaker import Breaker
from tasker_resilience._breakers.host_file import default_directory
from tasker_resilience._breakers.host_sharing import SHARING_LOGGER, HostSharing, settings_scope
from tasker_resilience._config.schema import BreakerConfig, HostSharingConfig
from tasker_resilience._operations.metrics import private_registry, render_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = BreakerConfig(failure_threshold=5, timeout_seconds=8.0, success_threshold=2)


@pytest.fixture
def directory(tmp_path: Path) -> str:
    return str(tmp_path / "sharing")


@pytest.fixture
def sharing_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=SHARING_LOGGER.name)
    return caplog


class Hosts:
    """Builds "processes": a HostSharing and its breaker each; all closed afterwards."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._made: list[HostSharing] = []

    def sharing(self, scope: str = "svc", **options: Any) -> HostSharing:
        config = HostSharingConfig(enabled=True, directory=self.directory, **options)
        made = HostSharing(config, scope)
        self._made.append(made)
        return made

    def breaker(
        self, scope: str = "svc", name: str = "cache", config: BreakerConfig = CONFIG
    ) -> Breaker:
        channel = self.sharing(scope).channel(name)
        assert channel is not None, "the channel should open"
        return Breaker(name, config, host=channel)

    def close(self) -> None:
        for made in self._made:
            made.close()


@pytest.fixture
def hosts(directory: str) -> Iterator[Hosts]:
    made = Hosts(directory)
    yield made
    made.close()


def fail(breaker: Breaker, times: int = 1) -> None:
    for _ in range(times):
        generation = breaker._acquire()
        assert generation is not None, "a failing call was expected to be admitted"
        breaker._release(generation, OSError("backend down"))


def succeed(breaker: Breaker) -> bool:
    generation = breaker._acquire()
    if generation is None:
        return False
    breaker._release(generation, None)
    return True


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


# --- settings ----------------------------------------------------------------------------


def test_off_by_default_and_then_nothing_changes(tmp_path: Path) -> None:
    res = tr.configure(env="test", install=False)
    try:
        assert res.settings.circuit_breakers.host_sharing == HostSharingConfig()
        breaker = res.breakers.get("cache")
        assert breaker._host is None
        assert "host" not in breaker.metrics()
        assert "host" not in res.health()["circuit_breakers"]["cache"]
    finally:
        res.close()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("enabled", "perhaps", "true or false"),
        ("directory", "relative/dir", "an absolute path"),
        ("directory", 5, "an absolute path"),
        ("poll_interval_seconds", 0, "seconds from 0.001 to 1"),
        ("poll_interval_seconds", 2, "seconds from 0.001 to 1"),
        ("scope", "x" * 201, "up to 200 printable characters"),
        ("scope", "tab\there", "up to 200 printable characters"),
        ("enbled", True, "unknown key (did you mean 'enabled'?)"),
    ],
)
def test_bad_settings_name_the_key(key: str, value: object, allowed: str) -> None:
    with pytest.raises(tr.ConfigurationError) as caught:
        tr.configure(
            env="test",
            overrides={"common": {"circuit_breakers": {"host_sharing": {key: value}}}},
            install=False,
        )
    assert caught.value.key == f"common.circuit_breakers.host_sharing.{key}"
    assert allowed in str(caught.value)


def test_scope_leaves_the_password_out() -> None:
    one = settings_scope("app", "redis", "redis://:first-secret@cache:6379/0")
    other = settings_scope("app", "redis", "redis://:second-secret@cache:6379/0")
    assert one == other
    assert "secret" not in one
    assert settings_scope("app", "redis", "redis://cache:6379/1") != one
    assert settings_scope("other", "redis", "redis://cache:6379/0") != settings_scope(
        "app", "redis", "redis://cache:6379/0"
    )
    assert settings_scope("app", "redis", "redis://a:1/0", "mine") == settings_scope(
        "x", "memory", "redis://b:2/0", "mine"
    )


def test_default_directory_is_private_and_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    if not os.path.isdir("/dev/shm"):
        assert default_directory() is None
    else:
        assert default_directory() == f"/dev/shm/tasker-resilience-{os.geteuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/")
    assert default_directory() == "/tasker-resilience"


# --- the channel: where, and who may use it ------------------------------------------


def test_files_are_private_to_the_user(hosts: Hosts, directory: str) -> None:
    hosts.breaker()
    info = os.stat(directory)
    assert info.st_mode & 0o777 == 0o700
    assert info.st_uid == os.geteuid()
    (name,) = os.listdir(directory)
    assert name.startswith("breaker-")
    assert name.endswith(".v1")
    file_info = os.stat(os.path.join(directory, name))
    assert file_info.st_mode & 0o777 == 0o600
    assert file_info.st_uid == os.geteuid()


def _refused(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_directory_others_may_read_is_refused_once(
    hosts: Hosts, directory: str, sharing_logs: pytest.LogCaptureFixture
) -> None:
    os.mkdir(directory, 0o700)
    os.chmod(directory, 0o755)
    sharing = hosts.sharing()
    assert sharing.channel("cache") is None
    assert sharing.channel("pgmq") is None
    (warning,) = _refused(sharing_logs)
    assert "mode 0755" in warning
    assert "each process decides alone" in warning
    # Deciding alone: the breaker works as without sharing.
    breaker = Breaker("cache", CONFIG, host=sharing.channel("cache"))
    fail(breaker, 5)
    assert breaker.state == "open"


def test_a_symlinked_directory_is_refused(
    hosts: Hosts, tmp_path: Path, directory: str, sharing_logs: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    os.symlink(real, directory)
    assert hosts.sharing().channel("cache") is None
    assert "not a directory" in _refused(sharing_logs)[0]


def test_a_missing_parent_is_refused(
    tmp_path: Path, sharing_logs: pytest.LogCaptureFixture
) -> None:
    sharing = HostSharing(
        HostSharingConfig(enabled=True, directory=str(tmp_path / "no" / "such")), "svc"
    )
    assert sharing.channel("cache") is None
    assert "cannot create directory" in _refused(sharing_logs)[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_files_and_directories_of_another_user_are_refused(
    hosts: Hosts, directory: str, sharing_logs: pytest.LogCaptureFixture
) -> None:
    hosts.breaker()
    (name,) = os.listdir(directory)
    os.chown(os.path.join(directory, name), 65534, 65534)
    assert hosts.sharing().channel("cache") is None
    assert "belongs to uid 65534" in _refused(sharing_logs)[-1]
    os.chown(directory, 65534, 65534)
    assert hosts.sharing().channel("pgmq") is None
    assert f"directory {directory} belongs to uid 65534" in _refused(sharing_logs)[-1]


def test_a_file_that_is_not_a_channel_is_refused(
    hosts: Hosts, directory: str, sharing_logs: pytest.LogCaptureFixture
) -> None:
    hosts.breaker()
    (name,) = os.listdir(directory)
    path = os.path.join(directory, name)
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.write(b"not a channel file")
    assert hosts.sharing().channel("cache") is None
    assert "corrupt record at byte 0" in _refused(sharing_logs)[-1]
    os.truncate(path, size // 2)
    assert hosts.sharing().channel("cache") is None
    assert "not a channel file" in _refused(sharing_logs)[-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_directory_is_refused(
    tmp_path: Path, sharing_logs: pytest.LogCaptureFixture
) -> None:
    mount = tmp_path / "full"
    mount.mkdir(mode=0o700)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as filler:
            filler.write(b"x" * 65536)
        sharing = HostSharing(HostSharingConfig(enabled=True, directory=str(mount)), "svc")
        assert sharing.channel("cache") is None
        assert "directory full?" in _refused(sharing_logs)[0]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_corrupt_record_switches_sharing_off_with_one_warning(
    hosts: Hosts, directory: str, sharing_logs: pytest.LogCaptureFixture
) -> None:
    breaker = hosts.breaker()
    (name,) = os.listdir(directory)
    with open(os.path.join(directory, name), "r+b") as file:
        file.seek(64)  # the host record
        file.write(os.urandom(64))
    # The poller reads it, or the next hook does; nothing raises to the caller.
    assert eventually(lambda: breaker.metrics()["host"]["shared"] is False)
    fail(breaker, 5)
    assert breaker.state == "open"
    warnings = _refused(sharing_logs)
    assert len(warnings) == 1
    assert "corrupt record" in warnings[0]
    assert "decides alone" in warnings[0]
    assert "corrupt record" in breaker.metrics()["host"]["reason"]


# --- what one process's breaker tells the others -------------------------------------------


def test_a_peer_opening_makes_a_healthy_process_suspect_not_open(hosts: Hosts) -> None:
    first, second = hosts.breaker(), hosts.breaker()
    fail(first, 5)
    assert first.state == "open"
    assert eventually(lambda: second._suspect)
    assert second.state == "half-open"
    # Suspect: one probe at a time; one success closes.
    probe = second._acquire()
    assert probe is not None
    assert second._acquire() is None, "a second concurrent call while verifying"
    second._release(probe, None)
    assert second.state == "closed"
    # Its probe closed the host: the opener probes at once instead of waiting 8 s.
    assert eventually(lambda: first.state == "half-open")
    assert first.metrics()["host"]["closed_by"] == os.getpid()


def test_a_peer_opening_opens_a_process_whose_own_last_call_failed(hosts: Hosts) -> None:
    first, second = hosts.breaker(), hosts.breaker()
    fail(second)  # its own evidence: one failure, well below the threshold
    fail(first, 4)  # the host's fifth failure
    assert first.state == "open"
    assert eventually(lambda: second.state == "open")
    assert not second._suspect


def test_a_failure_in_flight_when_the_hint_came_answers_for_the_probe(hosts: Hosts) -> None:
    first, second = hosts.breaker(), hosts.breaker()
    in_flight = second._acquire()  # admitted while closed, still running
    assert in_flight is not None
    fail(first, 5)
    assert eventually(lambda: second._suspect)
    second._release(in_flight, OSError("timed out"))
    assert second.state == "open"


def test_failures_across_the_host_add_up_to_the_threshold(hosts: Hosts) -> None:
    breakers = [hosts.breaker() for _ in range(3)]
    fail(breakers[0], 2)
    fail(breakers[1], 2)
    assert all(b.state == "closed" for b in breakers)
    fail(breakers[2])  # the fifth failure of the host within a second
    assert breakers[2].state == "open"
    # A success resets a process's share of the streak.
    assert succeed(breakers[0]) or breakers[0].state != "closed"


def test_a_success_takes_a_process_out_of_the_host_streak(hosts: Hosts) -> None:
    one, two = hosts.breaker(), hosts.breaker()
    fail(one, 4)
    assert succeed(one)
    fail(two)
    assert two.state == "closed", "one's streak ended with its success"


def test_the_host_probes_on_one_schedule(hosts: Hosts) -> None:
    config = BreakerConfig(failure_threshold=1, timeout_seconds=2.0, success_threshold=1)
    breakers = [hosts.breaker(config=config) for _ in range(4)]
    for breaker in breakers:
        fail(breaker)
    assert all(b.state == "open" for b in breakers)
    view = breakers[0].metrics()["host"]
    assert view["open_processes"] == 4
    assert view["outage"] == 1

    # Four processes open: the host probes every 2 s / 4 = 0.5 s, the first 0.5 s after
    # the opening, instead of four probes together after 2 s.
    def retry_after() -> list[float]:
        return [b.retry_after_seconds or 0.0 for b in breakers]

    assert eventually(lambda: all(0.2 <= r <= 0.5 for r in retry_after())), retry_after()
    time.sleep(max(retry_after()) + 0.02)
    admitted = [b._acquire() for b in breakers]
    assert sum(1 for g in admitted if g is not None) == 1, "one probe per slot"
    waiting = [b for b, g in zip(breakers, admitted, strict=True) if g is None]
    assert all(0.3 <= (b.retry_after_seconds or 0.0) <= 0.55 for b in waiting)
    assert breakers[0].metrics()["host"]["host_probes"] == 1


def test_a_failed_probe_of_a_lone_process_starts_no_host_outage(hosts: Hosts) -> None:
    config = BreakerConfig(failure_threshold=1, timeout_seconds=0.2, success_threshold=1)
    lone, other = hosts.breaker(config=config), hosts.breaker(config=config)
    fail(lone)
    assert eventually(lambda: other._suspect)
    assert succeed(other)  # other's path works: the host's outage is over
    assert eventually(lambda: lone.state == "half-open")
    fail(lone)  # lone's own path is still broken: it re-opens alone
    assert lone.state == "open"
    time.sleep(0.1)
    assert other.state == "closed"
    assert not other._suspect
    assert other.metrics()["host"]["state"] == "closed"


def test_two_services_on_one_host_never_mix(hosts: Hosts) -> None:
    billing, shop = hosts.breaker(scope="billing"), hosts.breaker(scope="shop")
    pgmq_of_shop = hosts.breaker(scope="shop", name="pgmq")
    fail(billing, 5)
    assert billing.state == "open"
    time.sleep(0.2)
    assert shop.state == "closed"
    assert not shop._suspect
    assert pgmq_of_shop.state == "closed"
    assert shop.metrics()["host"]["outage"] == 0


def test_services_configured_alike_share_and_others_do_not(directory: str) -> None:
    def configure(prefix: str) -> tr.Resilience:
        return tr.configure(
            env="test",
            overrides={
                "common": {
                    "cache": {"key_prefix": prefix},
                    "circuit_breakers": {"host_sharing": {"enabled": True, "directory": directory}},
                }
            },
            install=False,
        )

    one, two, other = configure("shop"), configure("shop"), configure("billing")
    try:
        one.breakers.get("pgmq").force_open()
        assert eventually(lambda: two.breakers.get("pgmq").state == "half-open")
        time.sleep(0.1)
        assert other.breakers.get("pgmq").state == "closed"
        assert two.health()["circuit_breakers"]["pgmq"]["host"]["opened_by"] == os.getpid()
    finally:
        for res in (one, two, other):
            res.close()


def test_a_named_caches_breaker_shares_by_that_caches_own_identity(directory: str) -> None:
    def configure(sessions_prefix: str) -> tr.Resilience:
        return tr.configure(
            env="test",
            overrides={
                "common": {
                    "cache": {"key_prefix": "shop"},
                    "caches": {"sessions": {"backend": "memory", "key_prefix": sessions_prefix}},
                    "circuit_breakers": {"host_sharing": {"enabled": True, "directory": directory}},
                }
            },
            install=False,
        )

    # One default cache, but two different session caches: only the alike ones share.
    one, two, other = configure("sessions-a"), configure("sessions-a"), configure("sessions-b")
    try:
        one.breakers.get("cache_sessions").force_open()
        assert eventually(lambda: two.breakers.get("cache_sessions").state == "half-open")
        time.sleep(0.1)
        assert other.breakers.get("cache_sessions").state == "closed"
    finally:
        for res in (one, two, other):
            res.close()


def _sharing_resilience(directory: str) -> tr.Resilience:
    """A process's own Resilience with host sharing on (the test settings otherwise)."""
    return tr.configure(
        env="test",
        overrides={
            "common": {
                "circuit_breakers": {"host_sharing": {"enabled": True, "directory": directory}}
            }
        },
        install=False,
    )


def test_health_and_metrics_show_the_host_view(directory: str) -> None:
    one, two = _sharing_resilience(directory), _sharing_resilience(directory)
    try:
        fail(one.breakers.get("pgmq"), 5)
        view = two.health()["circuit_breakers"]["pgmq"]["host"]
        assert view["shared"] is True
        assert view["state"] == "open"
        assert view["opened_by"] == os.getpid()
        assert view["open_processes"] == 1
        assert view["processes"] == 2
        assert view["opened_at"] is not None
        text = render_metrics(private_registry(two), None)[0].decode()
        assert 'tasker_resilience_breaker_host_open_processes{breaker="pgmq"} 1.0' in text
        assert 'tasker_resilience_breaker_host_processes{breaker="pgmq"} 2.0' in text
        assert f'tasker_resilience_breaker_host_opened_by_pid{{breaker="pgmq"}} {os.getpid()}' in (
            text
        )
    finally:
        one.close()
        two.close()


def test_metrics_without_sharing_have_no_host_families() -> None:
    res = tr.configure(env="test", install=False)
    try:
        assert "breaker_host" not in render_metrics(private_registry(res), None)[0].decode()
    finally:
        res.close()


# --- real processes ---------------------------------------------------------------------


def _child_script(directory: str, body: str) -> str:
    return textwrap.dedent(
        f"""
        import json, os, sys, time
        from tasker_resilience._breakers.breaker import Breaker
        from tasker_resilience._breakers.host_sharing import HostSharing
        from tasker_resilience._config.schema import BreakerConfig, HostSharingConfig

        def breaker():
            sharing = HostSharing(
                HostSharingConfig(enabled=True, directory={directory!r}), "svc"
            )
            return Breaker("cache", BreakerConfig(5, 8.0, 2), host=sharing.channel("cache"))

        def wait(check, timeout=5.0):
            deadline = time.monotonic() + timeout
            while not check() and time.monotonic() < deadline:
                time.sleep(0.005)
            return check()
        """
    ) + textwrap.dedent(body)


def _start_child(directory: str, body: str) -> subprocess.Popen[str]:
    """A process of the scope running ``body``, its stdout a pipe of lines."""
    return subprocess.Popen(
        [sys.executable, "-c", _child_script(directory, body)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def _run_child(directory: str, body: str, timeout: float = 60) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", _child_script(directory, body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "DeprecationWarning" not in done.stderr, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_fork_children_share_with_their_parent_and_fork_cleanly(directory: str) -> None:
    """The parent configured before forking (gunicorn --preload, celery prefork): each
    child takes a slot of its own and hears the parent (the poller thread stops around
    the fork, so the child inherits no lock it held, and starts again in both)."""
    result = _run_child(
        directory,
        """
        parent = breaker()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            ok = wait(lambda: parent._suspect or parent.state == "half-open")
            os.write(write, json.dumps({
                "suspect": parent._suspect,
                "pid": os.getpid(),
                "slot_pid": parent._host._file.slot.pid,
            }).encode())
            os._exit(0)
        os.close(write)  # a child that dies gives EOF, not a hang
        time.sleep(0.3)
        for _ in range(5):
            g = parent._acquire(); parent._release(g, OSError("down"))
        child = json.loads(os.read(read, 4096))
        os.waitpid(pid, 0)
        print(json.dumps({"child": child, "parent_state": parent.state, "pid": os.getpid(),
                          "child_pid": pid}))
        """,
    )
    assert result["parent_state"] == "open"
    assert result["child"]["suspect"] is True
    assert result["child"]["slot_pid"] == result["child_pid"] != result["pid"]


def _spawned_worker(directory: str, queue: Any) -> None:
    res = _sharing_resilience(directory)
    breaker = res.breakers.get("pgmq")
    queue.put("ready")
    deadline = time.monotonic() + 10
    while breaker.state == "closed" and time.monotonic() < deadline:
        time.sleep(0.005)
    queue.put((breaker.state, breaker._suspect))
    res.close()


def test_spawned_processes_share(directory: str) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_spawned_worker, args=(directory, queue))
    process.start()
    try:
        assert queue.get(timeout=60) == "ready"
        res = _sharing_resilience(directory)
        try:
            fail(res.breakers.get("pgmq"), 5)
            assert queue.get(timeout=20) == ("half-open", True)
        finally:
            res.close()
    finally:
        process.join(20)
        if process.is_alive():
            process.kill()
    assert process.exitcode == 0


def test_a_killed_process_blocks_nothing_and_a_restarted_one_joins(
    hosts: Hosts, directory: str
) -> None:
    survivor = hosts.breaker()
    opener = _start_child(
        directory,
        """
        b = breaker()
        for _ in range(5):
            g = b._acquire(); b._release(g, OSError("down"))
        print(b.state, flush=True)
        time.sleep(60)
        """,
    )
    try:
        assert opener.stdout is not None
        assert opener.stdout.readline().strip() == "open"
        assert eventually(lambda: survivor._suspect)
        assert survivor.metrics()["host"]["open_processes"] == 1
        opener.kill()  # SIGKILL: no atexit, its slot still says "open"
        opener.wait(10)
    finally:
        if opener.poll() is None:
            opener.kill()
            opener.wait(10)
    # Nobody is left in that outage: it counts for nothing.
    view = survivor.metrics()["host"]
    assert view["open_processes"] == 0
    assert view["state"] == "closed"
    assert succeed(survivor)
    assert survivor.state == "closed"
    fail(survivor)
    assert survivor.state == "closed", "a dead opener is no evidence of an outage"
    # A restarted worker takes a slot (the dead one's is free) and hears a new outage.
    restarted = _start_child(
        directory,
        """
        b = breaker()
        print("ready", flush=True)
        wait(lambda: b._suspect, 20)
        view = b.metrics()["host"]
        print(json.dumps({"suspect": b._suspect, "processes": view["processes"]}))
        """,
    )
    try:
        assert restarted.stdout is not None
        assert restarted.stdout.readline().strip() == "ready"
        fail(survivor, 4)
        assert survivor.state == "open"
        assert json.loads(restarted.stdout.readline()) == {"suspect": True, "processes": 2}
    finally:
        restarted.kill()
        restarted.wait(10)


def test_a_lock_held_by_a_stopped_process_never_blocks_a_call(
    hosts: Hosts, directory: str, sharing_logs: pytest.LogCaptureFixture
) -> None:
    config = BreakerConfig(failure_threshold=1, timeout_seconds=0.3, success_threshold=1)
    breaker = hosts.breaker(config=config)
    (name,) = os.listdir(directory)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, signal, time
                fd = os.open({os.path.join(directory, name)!r}, os.O_RDWR)
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
                print("locked", flush=True)
                os.kill(os.getpid(), signal.SIGSTOP)  # stopped while holding it
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        slowest = 0.0
        deadline = time.monotonic() + 3.0
        fail(breaker)
        while time.monotonic() < deadline and breaker.metrics()["host"]["shared"]:
            started = time.monotonic()
            generation = breaker._acquire()
            if generation is not None:
                breaker._release(generation, OSError("down"))
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.01)
        assert slowest < 0.05, f"a call waited {slowest:.3f}s for the channel"
        assert breaker.metrics()["host"]["shared"] is False
        assert "locked for over 1s" in _refused(sharing_logs)[0]
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(10)


def test_closing_frees_the_slot(hosts: Hosts) -> None:
    one = hosts.breaker()
    sharing = hosts.sharing()
    channel = sharing.channel("cache")
    assert channel is not None
    Breaker("cache", CONFIG, host=channel)
    assert one.metrics()["host"]["processes"] == 2
    sharing.close()
    assert one.metrics()["host"]["processes"] == 1


def test_sharing_needs_no_lock_on_the_closed_path(hosts: Hosts) -> None:
    """The closed fast path does not consult the channel: with the channel's hooks made
    to explode, closed calls still run (the poller and the slow paths do the sharing)."""
    breaker = hosts.breaker()
    channel = breaker._host
    assert channel is not None

    def explode(*args: object) -> Any:
        raise AssertionError("the closed path touched the channel")

    for hook in ("may_probe", "failed", "entered", "recovered"):
        setattr(channel, hook, explode)
    for _ in range(1000):
        assert succeed(breaker)


# --- the drill's --workers mode: usage ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workers", "1"], "must be from 2 to 64"),
        (["--workers", "many"], "is not a whole number"),
        (["--workers", "4", "--url", "redis://127.0.0.1:6379/0"], "does not combine with"),
        (["--workers", "4", "--near"], "does not combine with"),
    ],
)
def test_drill_workers_usage_errors(args: list[str], says: str) -> None:
    from tests.test_cli import one_line, run_cli

    done = run_cli("drill", *args)
    assert done.returncode == 2, done.stderr
    assert says in one_line(done.stderr)

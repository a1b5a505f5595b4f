"""``FaultProxy`` itself, in front of a private redis-server: each fault, switched while
connections are open, and the proxy's own lifecycle.

Timing bounds are wide (a loaded 2-core machine); each fault is told apart from the
healthy path by a margin of several times the noise.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience.testing import FaultProxy

pytestmark = [pytest.mark.integration]
pytest_plugins = ["pytester"]


@pytest.fixture
def proxy(private_server: LocalServer) -> Iterator[FaultProxy]:
    with FaultProxy(private_server.url, seed=7) as started:
        yield started


def client(url: str, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def test_a_healthy_proxy_forwards_and_counts(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    assert cache.set("k", b"v" * 100)
    assert cache.get("k") == b"v" * 100
    stats = proxy.stats()
    assert stats["accepted"] == 1
    assert stats["open"] == 1
    assert stats["replies"] >= 3  # HELLO/handshake aside: SET, GET
    assert stats["bytes_to_client"] > 100
    assert stats["delayed_replies"] == 0
    cache.close()


def test_url_keeps_credentials_and_path(private_server: LocalServer) -> None:
    target = private_server.url.replace("redis://", "redis://user:secret@").replace("/0", "/3")
    with FaultProxy(target) as proxy:
        host, port = proxy.address
        assert proxy.url == f"redis://user:secret@{host}:{port}/3"
        assert port != private_server.port
    with FaultProxy(("127.0.0.1", private_server.port)) as bare:
        assert bare.url == f"tcp://127.0.0.1:{bare.port}"


def test_a_target_without_a_port_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="host and a port") as info:
        FaultProxy("redis://:hunter2@cache-host/0")
    assert "hunter2" not in str(info.value)


def test_fixed_latency_holds_every_reply_and_switches_off(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    cache.ping()
    assert timed(cache.ping) < 0.05
    proxy.latency(0.12)  # switched on with the connection open
    held = [timed(cache.ping) for _ in range(3)]
    assert min(held) >= 0.11
    proxy.latency(0)
    assert timed(cache.ping) < 0.05
    cache.close()


def test_latency_on_a_fraction_of_replies(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    cache.ping()
    proxy.latency(0.06, fraction=0.3)
    durations = [timed(cache.ping) for _ in range(100)]
    slow = sum(duration >= 0.055 for duration in durations)
    assert 12 <= slow <= 50  # 30 expected; seed 7 makes it repeatable, the bound is wide
    assert proxy.stats()["delayed_replies"] == slow
    assert statistics.median(durations) < 0.03
    cache.close()


def test_jitter_spreads_the_delay_above_the_fixed_part(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    cache.ping()
    proxy.latency(0.03, jitter=0.09)
    durations = [timed(cache.ping) for _ in range(30)]
    assert min(durations) >= 0.029
    assert max(durations) - min(durations) > 0.03  # spread, not a fixed delay
    assert max(durations) < 0.12 + 0.2  # latency + jitter, plus generous noise
    cache.close()


def test_blackhole_accepts_and_never_answers(proxy: FaultProxy) -> None:
    cache = client(proxy.url, timeout=0.2)
    cache.ping()
    proxy.blackhole()
    began = time.perf_counter()
    with pytest.raises(redis.TimeoutError):
        cache.ping()
    assert time.perf_counter() - began >= 0.19
    fresh = socket.create_connection(proxy.address, timeout=1)  # a new connection is accepted
    fresh.sendall(b"PING\r\n")
    fresh.settimeout(0.2)
    with pytest.raises(TimeoutError):
        fresh.recv(100)
    fresh.close()
    proxy.heal()
    assert client(proxy.url).ping()


def _ping_raw(address: tuple[str, int]) -> bytes:
    raw = socket.create_connection(address, timeout=1)
    try:
        raw.sendall(b"PING\r\n")
        return raw.recv(100)
    finally:
        raw.close()


def test_reset_connections_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    cache.ping()
    proxy.reset_connections()
    with pytest.raises(redis.ConnectionError):
        cache.ping()
    with pytest.raises(ConnectionResetError):  # at connect, send or receive: a race
        _ping_raw(proxy.address)
    assert proxy.stats()["resets"] >= 2
    proxy.heal()
    assert client(proxy.url).ping()


def test_close_after_cuts_a_reply_at_exactly_n_bytes(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    cache.set("big", b"x" * 5000)
    cache.close()
    proxy.close_after(1000)
    raw = socket.create_connection(proxy.address, timeout=2)
    raw.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    raw.close()
    assert len(received) == 1000
    assert received.startswith(b"$5000\r\nxxx")
    assert proxy.stats()["closed_after_bytes"] == 1
    proxy.close_after(None)
    assert client(proxy.url).get("big") == b"x" * 5000


def test_bandwidth_limits_a_slow_link(proxy: FaultProxy) -> None:
    cache = client(proxy.url, timeout=5)
    cache.set("blob", b"y" * 40_000)
    assert timed(lambda: cache.get("blob")) < 0.1
    proxy.bandwidth(100_000)  # 40 kB at 100 kB/s: about 0.4 s
    duration = timed(lambda: cache.get("blob"))
    assert 0.3 <= duration < 2.0
    proxy.bandwidth(None)
    assert timed(lambda: cache.get("blob")) < 0.1
    cache.close()


def test_faults_combine_and_heal_clears_them_all(proxy: FaultProxy) -> None:
    cache = client(proxy.url)
    cache.ping()
    proxy.latency(0.05).bandwidth(1_000_000)
    assert timed(cache.ping) >= 0.045
    proxy.heal()
    assert timed(cache.ping) < 0.04
    cache.close()


def test_a_down_server_looks_refused_through_the_proxy(private_server: LocalServer) -> None:
    with FaultProxy(private_server.url) as proxy:
        private_server.stop()
        with pytest.raises(redis.ConnectionError):
            client(proxy.url, timeout=0.5).ping()


def test_stop_closes_the_port_and_every_connection(private_server: LocalServer) -> None:
    proxy = FaultProxy(private_server.url).start()
    cache = client(proxy.url)
    cache.ping()
    proxy.stop()
    with pytest.raises(redis.ConnectionError):
        cache.ping()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=1)
    proxy.stop()  # idempotent


def test_bad_fault_values_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="latency"):
        proxy.latency(-1)
    with pytest.raises(ValueError, match="fraction"):
        proxy.latency(0.1, fraction=1.5)
    with pytest.raises(ValueError, match="bytes_per_second"):
        proxy.bandwidth(0)
    with pytest.raises(ValueError, match="n_bytes"):
        proxy.close_after(-1)


def test_the_pytest_fixture_starts_and_stops_proxies(
    tasker_fault_proxy: Callable[..., FaultProxy], private_server: LocalServer
) -> None:
    proxy = tasker_fault_proxy(private_server.url, seed=1)
    assert client(proxy.url).ping()
    assert "FaultProxy" in repr(proxy)


def test_the_fixture_stops_what_it_started(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
import socket
import threading

import pytest

SEEN = []


def test_uses_a_proxy(tasker_fault_proxy):
    server = socket.create_server(("127.0.0.1", 0))
    proxy = tasker_fault_proxy(server.getsockname())
    SEEN.append(proxy.address)
    server.close()


def test_the_proxy_is_gone():
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(SEEN[0], timeout=1)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_testing_lists_the_fault_proxy() -> None:
    import tasker_resilience.testing as testing

    assert "FaultProxy" in dir(testing)
    assert "FaultProxy" in testing.__all__
    assert testing.FaultProxy is FaultProxy

"""The conformance suite against every backend we ship, fakeredis, and a user's own;
plus what is specific to the Redis backend (client configuration, failure classes)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.exceptions as rex

import tasker_resilience as tr
from tasker_resilience import CacheBackend, CacheConfig, RedisConfig
from tasker_resilience._cache.backends.contract import backend_factory, unregister_backend
from tasker_resilience._cache.backends.memory_backend import (
    MemoryBackend,
    NoopBackend,
    glob_to_regex,
)
from tasker_resilience._cache.backends.redis_backend import RedisBackend, is_redis_failure
from tasker_resilience.testing import BackendConformance, configure_for_tests

from .backend_suite import PrivateRedis, SilentServer, closed_port

# --- the suite, per backend -----------------------------------------------------------------


class TestMemoryBackend(BackendConformance):
    expect_distributed = False

    @pytest.fixture
    def make_backend(self) -> MemoryBackend:
        return MemoryBackend.from_config(CacheConfig(backend="memory"))


class TestNoopBackend(BackendConformance):
    stores = False
    expect_distributed = False

    @pytest.fixture
    def make_backend(self) -> NoopBackend:
        return NoopBackend.from_config(CacheConfig(backend="noop"))


FAKE_SERVERS = ["redis", "valkey", "dragonfly"]
NAMES = ["redis", "dragonfly"]


class TestFakeRedisBackend(BackendConformance):
    """fakeredis speaking as Redis, Valkey and Dragonfly, behind both backend names."""

    expect_distributed = True

    @pytest.fixture(params=[(s, n) for s in FAKE_SERVERS for n in NAMES], ids=lambda p: "-".join(p))
    def make_backend(self, request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
        server_type, name = request.param
        server = fakeredis.FakeServer(server_type=server_type)
        backend = RedisBackend(
            RedisConfig(),
            name=name,
            client=fakeredis.FakeRedis(server=server),
            async_client_factory=lambda: fakeredis.FakeAsyncRedis(server=server),
        )
        assert backend.name == name
        yield backend
        backend.close()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: cannot start a private server")
    server = PrivateRedis(binary, closed_port())
    server.start()
    yield server
    server.stop()


class TestRealRedisBackend(BackendConformance):
    """The same suite over TCP against a private redis-server, database 3 from the URL."""

    expect_distributed = True

    @pytest.fixture(params=NAMES)
    def make_backend(
        self, request: pytest.FixtureRequest, private_redis: PrivateRedis
    ) -> Iterator[RedisBackend]:
        url = f"redis://127.0.0.1:{private_redis.port}/3"
        backend = RedisBackend(RedisConfig(url=url), name=request.param)
        yield backend
        backend.close()

    def test_database_number_comes_from_the_url(
        self, backend: CacheBackend, ns: str, private_redis: PrivateRedis
    ) -> None:
        backend.set(ns + "db", b"v", None)
        db0 = redis.Redis(port=private_redis.port, db=0)
        db3 = redis.Redis(port=private_redis.port, db=3)
        try:
            assert db0.get(ns + "db") is None
            assert db3.get(ns + "db") == b"v"
        finally:
            db0.close()
            db3.close()


class DictBackend(tr.InProcessAsyncMixin):
    """A user's own backend: a plain dict, registered with ``register_backend``."""

    distributed = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[str, tuple[bytes, float]] = {}

    def _live(self, key: str) -> bytes | None:
        entry = self.data.get(key)
        if entry is None or entry[1] < time.monotonic():
            self.data.pop(key, None)
            return None
        return entry[0]

    def get(self, key: str) -> bytes | None:
        return self._live(key)

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        expiry = float("inf") if ttl_seconds is None else time.monotonic() + ttl_seconds
        self.data[key] = (value, expiry)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def delete_pattern(self, pattern: str) -> int:
        match = glob_to_regex(pattern).fullmatch
        doomed = [k for k in list(self.data) if match(k) and self._live(k) is not None]
        for key in doomed:
            del self.data[key]
        return len(doomed)

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def is_backend_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError)


@pytest.fixture
def dict_backend_registered() -> Iterator[str]:
    tr.register_backend("dictstore", lambda config: DictBackend(config.backend))
    yield "dictstore"
    unregister_backend("dictstore")


class TestRegisteredBackend(BackendConformance):
    """A registered backend is built by name, and the same suite holds for it."""

    expect_distributed = True

    @pytest.fixture
    def make_backend(self, dict_backend_registered: str) -> CacheBackend:
        backend = backend_factory(dict_backend_registered)(CacheConfig(backend="dictstore"))
        assert isinstance(backend, DictBackend)
        return backend


def test_registered_backend_is_what_configure_builds(dict_backend_registered: str) -> None:
    res = configure_for_tests({"common": {"cache": {"backend": "dictstore"}}})
    assert isinstance(res.cache.backend, DictBackend)
    assert res.cache.backend_name == "dictstore"
    assert res.cache.distributed is True
    assert res.cache.breaker is res.breakers.get("cache")
    res.cache.set("k", {"a": 1})
    assert res.cache.get("k") == {"a": 1}
    backend = res.cache.backend
    assert isinstance(backend, DictBackend)
    assert "tasker-test:k" in backend.data


# --- redis and dragonfly are one class -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_both_names_build_the_same_class(name: str) -> None:
    config = CacheConfig(backend=name, redis=RedisConfig(url="redis://127.0.0.1:1/3"))
    backend = backend_factory(name)(config)
    assert type(backend) is RedisBackend
    assert backend.name == name
    assert backend.distributed is True


# --- how the client is built ------------------------------------------------------------------

CONFIG = RedisConfig(
    url="redis://:s3cret-pw@127.0.0.1:6390/5",
    max_connections=7,
    connect_timeout_seconds=0.4,
    socket_timeout_seconds=0.2,
)


def test_sync_client_is_configured_on_purpose() -> None:
    backend = RedisBackend(CONFIG)
    client = backend.client
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 7
    assert pool.timeout == 0.4  # a free connection is waited for at most this long
    kwargs = pool.connection_kwargs
    assert kwargs["db"] == 5
    assert kwargs["socket_connect_timeout"] == 0.4
    assert kwargs["socket_timeout"] == 0.2
    connection = pool.make_connection()  # type: ignore[no-untyped-call]  # redis-py
    try:
        assert connection.retry.get_retries() == 0
    finally:
        connection.disconnect()
    backend.close()


async def test_async_client_is_configured_on_purpose() -> None:
    backend = RedisBackend(CONFIG)
    client = backend.async_client
    pool = client.connection_pool  # type: ignore[attr-defined]  # redis.asyncio.Redis
    import redis.asyncio as aredis

    assert isinstance(pool, aredis.BlockingConnectionPool)
    assert pool.max_connections == 7
    assert pool.connection_kwargs["db"] == 5
    assert pool.connection_kwargs["socket_timeout"] == 0.2
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.4
    assert pool.connection_kwargs["retry"].get_retries() == 0
    assert backend.async_client is client  # one client per loop
    await backend.aclose()


def test_tls_url_uses_ssl_connections() -> None:
    backend = RedisBackend(RedisConfig(url="rediss://cache.example:6380/2"))
    pool = backend.client.connection_pool  # type: ignore[attr-defined]  # redis.Redis
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert pool.connection_kwargs["db"] == 2
    backend.close()


def test_cluster_urls_go_through_redis_cluster() -> None:
    backend = RedisBackend(RedisConfig(url="rediss+cluster://:pw@node1:7000"))
    assert backend.cluster_url == "rediss://:pw@node1:7000"
    assert backend.distributed is True
    with pytest.raises(tr.ConfigurationError) as caught:
        RedisBackend(RedisConfig(url="redis+cluster://:topsecret@node1:7000/3"))
    assert "database 0" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_cluster_client_is_built_lazily_and_fails_as_a_backend_failure() -> None:
    # Nothing listens on port 1: building the cluster client must happen on first use
    # (inside the breaker), and its failure must count as a backend failure.
    port = closed_port()
    backend = RedisBackend(
        RedisConfig(url=f"redis+cluster://127.0.0.1:{port}", connect_timeout_seconds=0.2)
    )
    with pytest.raises(Exception) as caught:
        backend.get("k")
    assert backend.is_backend_failure(caught.value)


def test_password_never_in_repr_or_redacted_text() -> None:
    backend = RedisBackend(CONFIG)
    assert "s3cret-pw" not in repr(backend)
    assert "s3cret-pw" not in backend.redacted_url
    assert backend.redact("auth s3cret-pw failed") == "auth *** failed"


# --- talking to something that is not a healthy server ----------------------------------------


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_hung_server_costs_one_socket_timeout_and_no_retry(
    silent_server: SilentServer,
) -> None:
    backend = RedisBackend(
        RedisConfig(
            url=f"redis://127.0.0.1:{silent_server.port}/0",
            socket_timeout_seconds=0.2,
            connect_timeout_seconds=0.2,
        )
    )
    started = time.monotonic()
    with pytest.raises(rex.TimeoutError) as caught:
        backend.get("k")
    elapsed = time.monotonic() - started
    assert backend.is_backend_failure(caught.value)
    # redis-py's defaults retry with back-off; ours must give up after one timeout.
    assert 0.15 <= elapsed < 1.0
    assert len(silent_server.accepted) == 1
    backend.close()


async def test_a_hung_server_costs_one_socket_timeout_async(
    silent_server: SilentServer,
) -> None:
    backend = RedisBackend(
        RedisConfig(url=f"redis://127.0.0.1:{silent_server.port}/0", socket_timeout_seconds=0.2)
    )
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        await backend.aget("k")
    assert backend.is_backend_failure(caught.value)
    assert time.monotonic() - started < 1.0
    assert len(silent_server.accepted) == 1
    await backend.aclose()


def test_refused_connection_is_a_backend_failure() -> None:
    backend = RedisBackend(RedisConfig(url=f"redis://127.0.0.1:{closed_port()}/0"))
    with pytest.raises(rex.ConnectionError) as caught:
        backend.set("k", b"v", None)
    assert backend.is_backend_failure(caught.value)
    backend.close()


def test_pool_exhaustion_fails_fast_instead_of_hanging(silent_server: SilentServer) -> None:
    backend = RedisBackend(
        RedisConfig(
            url=f"redis://127.0.0.1:{silent_server.port}/0",
            max_connections=1,
            socket_timeout_seconds=1.0,
            connect_timeout_seconds=0.2,
        )
    )
    blocker = threading.Thread(target=_ignoring_errors(backend.get, "k"))
    blocker.start()
    deadline = time.monotonic() + 2
    while not silent_server.accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(rex.ConnectionError) as caught:
        backend.get("k2")  # the only connection is busy for a second
    assert time.monotonic() - started < 0.8
    # This process's own pool ran dry: not a verdict on the server (issue 10, case 8).
    assert not backend.is_backend_failure(caught.value)
    assert backend.is_pool_exhausted(caught.value)
    blocker.join()
    backend.close()


def _ignoring_errors(func: Any, *args: Any) -> Any:
    def run() -> None:
        with contextlib.suppress(Exception):
            func(*args)

    return run


async def test_async_clients_are_per_event_loop() -> None:
    server = fakeredis.FakeServer()
    made: list[Any] = []

    def factory() -> Any:
        made.append(fakeredis.FakeAsyncRedis(server=server))
        return made[-1]

    backend = RedisBackend(RedisConfig(), async_client_factory=factory)
    await backend.aset("k", b"v", None)
    assert len(made) == 1

    def other_loop() -> bytes | None:
        async def run() -> bytes | None:
            value = await backend.aget("k")
            await backend.aclose()
            return value

        return asyncio.run(run())

    # Another thread with its own loop gets its own client, and sees the same data.
    value = await asyncio.to_thread(other_loop)
    assert value == b"v"
    assert len(made) == 2
    assert await backend.aget("k") == b"v"
    assert len(made) == 2  # this loop kept its client
    await backend.aclose()


# --- which exceptions count against the breaker -------------------------------------------------


def _with_status_code(exc: rex.ResponseError, code: str) -> rex.ResponseError:
    """An error reply as redis-py 8 builds it (the reply's first word kept apart in
    ``status_code``). Set as an attribute: the keyword of its constructor does not
    exist before redis-py 8, and the suite runs at the lowest version pyproject allows."""
    exc.status_code = code  # type: ignore[attr-defined, unused-ignore]
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        rex.ConnectionError("refused"),
        rex.TimeoutError("timed out"),
        rex.BusyLoadingError("loading"),
        rex.AuthenticationError("bad password"),
        rex.ReadOnlyError("You can't write against a read only replica."),
        rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        rex.ClusterDownError("The cluster is down"),
        rex.MasterDownError("Link with MASTER is down"),
        rex.TryAgainError("Multiple keys request during rehashing of slot"),
        rex.ResponseError("BUSY Redis is busy running a script."),
        rex.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        rex.ResponseError("LOADING Redis is loading the dataset in memory"),
        _with_status_code(rex.ResponseError("command not allowed when used memory"), "OOM"),
        rex.RedisClusterException("Redis Cluster cannot be connected."),
        OSError("network unreachable"),
        TimeoutError("timed out"),
        ConnectionResetError("reset by peer"),
        asyncio.TimeoutError(),
    ],
    ids=repr,
)
def test_backend_failures(exc: BaseException) -> None:
    assert is_redis_failure(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        rex.DataError("Invalid input of type: 'dict'"),
        rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        rex.ResponseError("ERR syntax error"),
        TypeError("unhashable"),
        ValueError("bad"),
        KeyError("k"),
        asyncio.CancelledError(),
    ],
    ids=repr,
)
def test_caller_mistakes_are_not_failures(exc: BaseException) -> None:
    assert is_redis_failure(exc) is False


# --- the in-process backends ------------------------------------------------------------------


def test_memory_backend_is_bounded_by_max_capacity() -> None:
    backend = MemoryBackend(3)
    for key in "abcd":
        backend.set(key, b"v", None)
    assert len(backend) == 3
    assert backend.get("a") is None  # least recently used went first
    assert backend.get("d") == b"v"


def test_memory_backend_honours_per_entry_ttl_with_its_timer() -> None:
    now = [100.0]
    backend = MemoryBackend(10, timer=lambda: now[0])
    backend.set("short", b"1", 5)
    backend.set("long", b"2", 50)
    now[0] += 10
    assert backend.get("short") is None
    assert backend.get("long") == b"2"
    now[0] += 100
    assert backend.get("long") is None


def test_memory_backend_evicts_expired_entries_before_live_ones() -> None:
    now = [0.0]
    backend = MemoryBackend(3, timer=lambda: now[0])
    backend.set("short", b"1", 5)
    backend.set("a", b"2", None)
    backend.set("b", b"3", 100)
    backend.get("short")  # most recently used, but expired by the next set
    now[0] = 10.0
    backend.set("c", b"4", None)
    assert [backend.get(k) for k in ("short", "a", "b", "c")] == [None, b"2", b"3", b"4"]


def test_memory_backend_overwrite_keeps_the_new_ttl() -> None:
    now = [0.0]
    backend = MemoryBackend(2, timer=lambda: now[0])
    backend.set("k", b"old", 5)
    backend.set("k", b"new", 50)  # the first expiry is now stale
    backend.set("other", b"x", None)
    now[0] = 10.0
    backend.set("third", b"y", None)  # full: purges what expired at 10, then LRU
    assert backend.get("k") is None  # evicted as least recently used, not as "expired"
    backend.set("k", b"again", 50)
    backend.set("k", b"again", None)  # a stale expiry for a key that now never expires
    now[0] = 100.0
    assert len(backend) == 2
    assert backend.get("k") == b"again"


def test_memory_backend_expiry_bookkeeping_stays_bounded() -> None:
    backend = MemoryBackend(10)
    for i in range(5000):
        backend.set(f"k{i % 4}", b"v", 60)
    assert len(backend._expiries) <= 2 * len(backend) + 64


def test_memory_backend_is_thread_safe() -> None:
    backend = MemoryBackend(500)
    errors: list[BaseException] = []

    def hammer(worker: int) -> None:
        try:
            for i in range(2000):
                key = f"{worker}:{i % 700}"
                backend.set(key, b"v", 60 if i % 2 else None)
                backend.get(key)
                if i % 97 == 0:
                    backend.delete_pattern(f"{worker}:1*")
        except BaseException as exc:  # pragma: no cover - the assertion shows it
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(backend) <= 500


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("a*", "abc", True),
        ("a*", "ba", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("[abc]x", "bx", True),
        ("[^abc]x", "bx", False),
        ("[^abc]x", "dx", True),
        ("[a-c]x", "cx", True),
        ("[a-c]x", "dx", False),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("a.b", "axb", False),  # regex characters are literal
        ("(x)", "(x)", True),
        ("line*", "line\nbreak", True),
    ],
)
def test_glob_matches_like_redis(pattern: str, key: str, matches: bool) -> None:
    assert (glob_to_regex(pattern).fullmatch(key) is not None) is matches


def test_a_waiter_never_takes_a_connection_a_failed_call_just_dropped() -> None:
    import threading
    from queue import Empty

    from tasker_resilience._cache.backends.redis_backend import FailFastQueue

    class Connection:
        def __init__(self, connected: bool) -> None:
            self._sock = object() if connected else None

    queue = FailFastQueue(2)
    dropped, healthy = Connection(False), Connection(True)
    queue.put_nowait(dropped)
    assert queue.get(timeout=1) is dropped  # no wait: reconnecting is this caller's job

    got: list[object] = []

    def waiter() -> None:
        try:
            got.append(queue.get(timeout=5))
        except Empty:
            got.append("gave up")

    def wait_then_return(returned: Connection) -> None:
        thread = threading.Thread(target=waiter)
        thread.start()
        for _ in range(5000):  # until the waiter is blocked in get (bounded)
            if queue.waiting:
                break
            threading.Event().wait(0.001)
        queue.put_nowait(returned)  # a call ends: its connection comes back
        thread.join(5)

    # A waiter handed a dropped connection gives up (a miss, never a second timeout on
    # a hung server); the dropped one stays for the next caller.
    wait_then_return(dropped)
    assert got == ["gave up"]
    assert queue.get(block=False) is dropped
    # A healthy connection serves the waiter.
    wait_then_return(healthy)
    assert got == ["gave up", healthy]


def test_the_pool_queue_is_a_bounded_lifo_queue() -> None:
    import time
    from queue import Empty, Full

    from tasker_resilience._cache.backends.redis_backend import FailFastQueue

    queue = FailFastQueue(2)
    with pytest.raises(Empty):
        queue.get(block=False)
    queue.put_nowait(None)
    queue.put_nowait("newest")
    with pytest.raises(Full):  # redis-py's pool relies on Full past max_connections
        queue.put_nowait("third")
    assert list(queue.queue) == [None, "newest"]
    assert queue.get() == "newest"  # last in, first out: the warmest connection
    assert queue.get(timeout=0) is None
    started = time.monotonic()
    with pytest.raises(Empty):
        queue.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 2
    assert queue.waiting == 0


def test_the_pool_queue_loses_no_return_and_no_wake_up_under_contention() -> None:
    import threading
    import time
    from queue import Empty

    from tasker_resilience._cache.backends.redis_backend import FailFastQueue

    class Connection:
        _sock = object()  # connected: the fail-fast rule never applies

    queue = FailFastQueue(3)
    items = [Connection() for _ in range(3)]
    for item in items:
        queue.put_nowait(item)
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(300):
            try:
                item = queue.get(timeout=10)  # 12 threads, 3 items: most calls wait
            except Empty as exc:  # a lost wake-up would end here after 10 s
                errors.append(exc)
                return
            time.sleep(0.0002)  # a command's worth of holding it: others must wait
            queue.put_nowait(item)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(map(id, queue.queue)) == sorted(map(id, items))
    assert queue.waiting == 0


def test_the_single_server_pool_uses_the_fail_fast_queue() -> None:
    from tasker_resilience._cache.backends.redis_backend import FailFastQueue

    backend = RedisBackend(CONFIG)
    pool = backend.client.connection_pool  # type: ignore[attr-defined]  # redis.Redis
    assert isinstance(pool.pool, FailFastQueue)
    backend.close()

"""The ``redis`` backend, also registered as ``dragonfly`` (same protocol, same code).

The client is configured on purpose rather than left to redis-py defaults (5 s
timeouts, several retries with back-off: about a minute per call against a hung
server):

- connect and socket timeouts from ``[common.cache.redis]``;
- no retries: the ``cache`` breaker is the fail-fast policy, a retry only multiplies
  the cost of a failing call;
- a bounded, *blocking* pool: at most ``max_connections`` sockets, and a caller waits
  at most ``connect_timeout_seconds`` for a free one, and not at all for one that a
  failed call just dropped (:class:`FailFastQueue`); either is a miss, not a failure;
- ``rediss://`` for TLS, the database number from the URL path, ``unix://`` sockets,
  ``redis+cluster://`` / ``rediss+cluster://`` for Redis Cluster through redis-py's
  own cluster clients (with a breaker per master: see ``cluster_backend``), and
  ``redis+sentinel://`` / ``rediss+sentinel://`` for a Sentinel-managed primary
  through redis-py's ``Sentinel`` clients (see ``topology`` for the URL);
- asyncio clients are per event loop: redis-py's asyncio connections belong to the
  loop that opened them, and tests (or ``asyncio.run`` per job) use many loops.

``delete_pattern`` walks the keyspace with ``SCAN MATCH`` and removes keys with
``UNLINK`` in batches; it never sends ``KEYS`` (which blocks the server). A server
that refuses ``UNLINK`` (renamed, or an ACL user without it) gets ``DEL`` instead.
A write the server cuts off for its size is a :class:`WriteRejectedError`: that
caller's failed write, not an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff

from tasker_resilience._cache.backends.abortive import make_abortive
from tasker_resilience._cache.backends.contract import WriteRejectedError
from tasker_resilience._cache.backends.deadline import (
    DeadlineConnection,
    DeadlineSentinelConnection,
    DeadlineSentinelSSLConnection,
    DeadlineSSLConnection,
    DeadlineUnixConnection,
)
from tasker_resilience._cache.backends.pool import FailFastQueue, close_gracefully
from tasker_resilience._cache.backends.redis_commands import (
    AsyncCommandClient,
    CommandClient,
    RedisCommands,
    ttl_milliseconds,
)
from tasker_resilience._cache.backends.topology import (
    SentinelTarget,
    cluster_url,
    parse_sentinel_url,
    topology_of,
)
from tasker_resilience._config.redact import REDACTED
from tasker_resilience._config.schema import RedisConfig
from tasker_resilience._errors import ConfigurationError
from tasker_resilience._forks import new_lock_after_fork

if TYPE_CHECKING:
    from tasker_resilience._config.schema import CacheConfig

__all__ = ["FailFastQueue", "RedisBackend", "is_pool_exhausted", "is_redis_failure"]

_LOGGER = logging.getLogger("tasker_resilience.cache")

SCAN_COUNT = 1000
"""``SCAN ... COUNT`` hint: keys the server examines per round trip."""
UNLINK_BATCH = 500
"""Keys removed per ``UNLINK``."""
LARGE_VALUE_BYTES = 1024 * 1024
"""The smallest ``proto-max-bulk-len`` a Redis server accepts (1 MiB): a write of at
least this size that the server cuts off may be over the server's limit."""


class SyncClient(CommandClient, Protocol):
    """The part of ``redis.Redis`` / ``redis.cluster.RedisCluster`` used here."""

    def get(self, name: str) -> Any: ...
    def delete(self, *names: str) -> Any: ...
    def scan(
        self, cursor: int = 0, match: str | None = None, count: int | None = None
    ) -> tuple[int, list[Any]]: ...
    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[Any]: ...
    def ping(self) -> Any: ...
    def close(self) -> None: ...


class AsyncClient(AsyncCommandClient, Protocol):
    """The part of ``redis.asyncio.Redis`` / ``redis.asyncio.cluster.RedisCluster`` used here."""

    def get(self, name: str) -> Awaitable[Any]: ...
    def delete(self, *names: str) -> Awaitable[Any]: ...
    def scan(
        self, cursor: int = 0, match: str | None = None, count: int | None = None
    ) -> Awaitable[tuple[int, list[Any]]]: ...
    def scan_iter(
        self, match: str | None = None, count: int | None = None
    ) -> AsyncIterator[Any]: ...
    def ping(self) -> Awaitable[Any]: ...
    def aclose(self) -> Awaitable[None]: ...


# --- which exceptions mean "the server is unwell" ------------------------------------------

_FAILURE_TYPES: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # refused, reset, AUTH, BusyLoadingError (not pool exhaustion)
    rex.TimeoutError,
    rex.ClusterError,  # CLUSTERDOWN, MASTERDOWN
    rex.RedisClusterException,  # no reachable node, slot not covered
    rex.InvalidResponse,  # not speaking RESP: a proxy or the wrong port
    OSError,  # socket errors, TLS errors, builtin TimeoutError
    asyncio.TimeoutError,  # not an OSError before Python 3.11
)
# Error replies whose first word says the server cannot serve us right now.
_UNWELL_REPLIES = frozenset(
    {
        "OOM",
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "READONLY",
        "MISCONF",
        "NOREPLICAS",
        "NOPERM",
    }
)


# What redis-py's blocking pools raise when no connection was free in time (sync and
# asyncio); the asyncio cluster client raises MaxConnectionsError at once instead.
_POOL_EXHAUSTED_MESSAGE = "No connection available"


def is_pool_exhausted(exc: BaseException) -> bool:
    """True when ``exc`` says the client's own pool had no free connection.

    That is this process's concurrency outgrowing ``max_connections``, not the
    server failing: it must never open the breaker (the server may be perfectly
    healthy and every other process still served).
    """
    return isinstance(exc, rex.MaxConnectionsError) or (
        type(exc) is rex.ConnectionError and str(exc).startswith(_POOL_EXHAUSTED_MESSAGE)
    )


def is_redis_failure(exc: BaseException) -> bool:
    """True when ``exc`` from redis-py means the server is unreachable or unwell.

    Connection errors, timeouts, busy/loading, read-only replicas, OOM, cluster-down
    and socket errors count; ``DataError``, ``TypeError``, serialisation errors and
    other error replies (a caller's mistake, not an outage) do not, and neither does
    an exhausted local pool (:func:`is_pool_exhausted`).
    """
    if is_pool_exhausted(exc):
        return False
    if isinstance(exc, _FAILURE_TYPES):
        return True
    if isinstance(exc, rex.ResponseError):
        if database_out_of_range(exc):
            return True  # every call on this URL fails alike: an outage for this process
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        return code.upper() in _UNWELL_REPLIES or isinstance(
            exc, (rex.ReadOnlyError, rex.OutOfMemoryError, rex.TryAgainError)
        )
    return False


def database_out_of_range(exc: BaseException) -> bool:
    """True for the server's answer to ``SELECT`` of a database it does not have."""
    return isinstance(exc, rex.ResponseError) and "db index is out of range" in str(exc).lower()


def unlink_refused(exc: BaseException) -> bool:
    """True when the server has no usable ``UNLINK``: renamed away (``rename-command``),
    or an ACL user without ``+unlink``. Deletes then fall back to ``DEL``."""
    if not isinstance(exc, rex.ResponseError):
        return False
    text = str(exc).lower()
    return "unlink" in text and ("unknown command" in text or "permission" in text)


def oversized_write(exc: BaseException, size: int) -> bool:
    """True when a failed write of ``size`` bytes looks refused for its size: the
    server answers an oversized bulk with a protocol error and closes the connection,
    which the client sees as a reset or broken pipe while writing, or as that reply."""
    if size < LARGE_VALUE_BYTES or isinstance(exc, rex.TimeoutError) or is_pool_exhausted(exc):
        return False
    if isinstance(exc, rex.ResponseError):
        return "bulk length" in str(exc).lower() or "protocol" in str(exc).lower()
    return isinstance(exc, rex.ConnectionError)


def _rejected(exc: BaseException, size: int) -> WriteRejectedError:
    return WriteRejectedError(
        f"a {size}-byte value was refused by the server ({type(exc).__name__}: {exc}); "
        "is it over the server's proto-max-bulk-len?"
    )


# --- building clients ----------------------------------------------------------------------


def _scan(client: SyncClient, pattern: str, cursor: int) -> tuple[int, list[Any]]:
    """One ``SCAN`` page: one bounded round trip."""
    return client.scan(cursor, match=pattern, count=SCAN_COUNT)


def _database(url: str) -> str:
    try:
        return urlsplit(url).path.strip("/") or "0"
    except ValueError:
        return "?"


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


class RedisBackend(RedisCommands):
    """A Redis-protocol backend (Redis, Valkey, Dragonfly, a Sentinel-managed primary).

    The configured ``redis``/``dragonfly`` backend of a ``redis+cluster://`` URL is a
    ``RedisClusterBackend`` (this class with a breaker per master).

    Besides the backend contract it offers the commands of :class:`RedisCommands`
    (add, incr, touch, batches) that framework integrations run through the provider.

    ``client`` and ``async_client_factory`` replace the clients built from ``config``
    (tests inject fakeredis this way); the factory is called once per event loop.
    """

    distributed: bool = True

    def __init__(
        self,
        config: RedisConfig,
        *,
        name: str = "redis",
        client: SyncClient | None = None,
        async_client_factory: Callable[[], AsyncClient] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        # A half-open probe's I/O budget: the provider sets PROBE_BUDGET to it, and the
        # sync connections' deadline (deadline.py) honours it.
        self.probe_timeout_seconds = config.probe_socket_timeout_seconds
        self.topology = topology_of(config.url)
        self.cluster_url = cluster_url(config.url)
        self.sentinel: SentinelTarget | None = (
            parse_sentinel_url(config.url) if self.topology == "sentinel" else None
        )
        if self.cluster_url is not None:
            path = urlsplit(self.cluster_url).path.strip("/")
            if path not in ("", "0"):
                raise ConfigurationError(
                    "common.cache.redis.url", config.redacted_url, "database 0 in cluster mode"
                )
        self._password = (
            self.sentinel.password if self.sentinel is not None else _password(config.url)
        )
        # False once the server refused UNLINK (renamed, or not in the ACL user's
        # commands): every later delete uses DEL.
        self._unlink = True
        self._database_error_logged = False
        self._client: SyncClient | None = None
        self._sync_factory: Callable[[], SyncClient] = (
            self._build_sync if client is None else lambda: client
        )
        self._async_factory = async_client_factory or self._build_async
        # loop -> its client; ``_last`` is read first, as one tuple, so a thread never
        # pairs its loop with another thread's client.
        self._async_clients: dict[asyncio.AbstractEventLoop, AsyncClient] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, AsyncClient | None] = (None, None)
        self._lock = threading.Lock()
        new_lock_after_fork(self)

    @classmethod
    def from_config(cls, config: CacheConfig) -> RedisBackend:
        """A backend for one server or a Sentinel-managed primary (the registered
        ``redis``/``dragonfly`` factory is ``cluster_backend.redis_from_config``, which
        also knows Redis Cluster)."""
        return cls(config.redis, name=config.backend)

    @property
    def redacted_url(self) -> str:
        return self.config.redacted_url

    def redact(self, text: str) -> str:
        """``text`` with the URL's password masked (for error messages that reach logs)."""
        return text.replace(self._password, REDACTED) if self._password else text

    def _connection_kwargs(self) -> dict[str, Any]:
        config = self.config
        return {
            "max_connections": config.max_connections,
            "socket_connect_timeout": config.connect_timeout_seconds,
            "socket_timeout": config.socket_timeout_seconds,
            # How long a caller waits for a free pooled connection.
            "timeout": config.connect_timeout_seconds,
            "health_check_interval": 0,
        }

    def _build_sync(self) -> SyncClient:
        from redis.retry import Retry

        kwargs = self._connection_kwargs()
        no_retry = Retry(NoBackoff(), 0)
        if self.cluster_url is not None:
            from redis.cluster import RedisCluster

            # Connects to discover the slots: built lazily, inside the breaker.
            cluster: SyncClient = RedisCluster.from_url(
                self.cluster_url,
                retry=no_retry,
                connection_pool_class=redis.BlockingConnectionPool,
                queue_class=FailFastQueue,
                **kwargs,
            )
            return make_abortive(cluster)  # type: ignore[no-any-return]
        if self.sentinel is not None:
            from redis.sentinel import Sentinel, SentinelConnectionPool

            class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
                """Sentinel's master discovery with the blocking pool's bounded wait."""

            # redis.sentinel was untyped before redis-py 8.2 (and is typed from it on):
            # `unused-ignore` keeps mypy quiet at both ends of the supported range.
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                self.sentinel.sentinels, **self._sentinel_kwargs(kwargs)
            )
            primary: SyncClient = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
                self.sentinel.service_name,
                connection_pool_class=BlockingSentinelPool,
                retry=no_retry,
                queue_class=FailFastQueue,
                **self._primary_kwargs(kwargs),
            )
            return make_abortive(primary)  # type: ignore[no-any-return]
        scheme = self.config.url.split("://", 1)[0].lower()
        # Each call's socket I/O shares one deadline (deadline.py): a trickling
        # reply cannot hold a call for longer than the guide promises.
        connection_class = {"rediss": DeadlineSSLConnection, "unix": DeadlineUnixConnection}.get(
            scheme, DeadlineConnection
        )
        pool = redis.BlockingConnectionPool.from_url(
            self.config.url,
            retry=no_retry,
            connection_class=connection_class,
            queue_class=FailFastQueue,
            **kwargs,
        )
        single: SyncClient = redis.Redis.from_pool(pool)
        return make_abortive(single)  # type: ignore[no-any-return]

    def _sentinel_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """For the ``Sentinel`` manager: the sentinels are asked with the same short
        timeouts (redis-py copies the ``socket_*`` options) and without credentials."""
        return {
            "socket_connect_timeout": kwargs["socket_connect_timeout"],
            "socket_timeout": kwargs["socket_timeout"],
        }

    def _primary_kwargs(
        self, kwargs: dict[str, Any], *, asyncio_client: bool = False
    ) -> dict[str, Any]:
        """For the primary's pool: the bounded-pool options, database and credentials."""
        target = self.sentinel
        assert target is not None
        options = dict(kwargs, db=target.db)
        if target.username:
            options["username"] = target.username
        if target.password:
            options["password"] = target.password
        # Sentinel's connection class (it asks the sentinels for the primary on
        # connect) with the per-call I/O deadline of deadline.py. The asyncio twin
        # needs no deadline (see there) and takes redis-py's own class.
        if asyncio_client:
            options["ssl"] = target.ssl
        else:
            options["connection_class"] = (
                DeadlineSentinelSSLConnection if target.ssl else DeadlineSentinelConnection
            )
        return options

    def _build_async(self) -> AsyncClient:
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry

        kwargs = self._connection_kwargs()
        no_retry = Retry(NoBackoff(), 0)
        if self.cluster_url is not None:
            from redis.asyncio.cluster import RedisCluster

            # redis-py's asyncio cluster raises MaxConnectionsError instead of waiting.
            del kwargs["timeout"]
            cluster: AsyncClient = RedisCluster.from_url(self.cluster_url, retry=no_retry, **kwargs)
            return make_abortive(cluster)  # type: ignore[no-any-return]
        if self.sentinel is not None:
            from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

            class BlockingSentinelPool(SentinelConnectionPool, aredis.BlockingConnectionPool):
                """Sentinel's master discovery with the blocking pool's bounded wait."""

            # redis.asyncio.sentinel was partly untyped before redis-py 8.2 (see above);
            # master_for gives a redis.asyncio.Redis.
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                self.sentinel.sentinels, **self._sentinel_kwargs(kwargs)
            )
            primary: AsyncClient = sentinel.master_for(
                self.sentinel.service_name,
                connection_pool_class=BlockingSentinelPool,
                retry=no_retry,
                **self._primary_kwargs(kwargs, asyncio_client=True),
            )
            return make_abortive(primary)  # type: ignore[no-any-return]
        pool = aredis.BlockingConnectionPool.from_url(self.config.url, retry=no_retry, **kwargs)
        single: AsyncClient = aredis.Redis.from_pool(pool)
        return make_abortive(single)  # type: ignore[no-any-return]

    @property
    def client(self) -> SyncClient:
        """The sync client (built on first use)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._sync_factory()
                client = self._client
        return client

    @property
    def async_client(self) -> AsyncClient:
        """The asyncio client of the running event loop (built on first use in it)."""
        loop = asyncio.get_running_loop()
        last_loop, last_client = self._last
        if last_loop is loop and last_client is not None:
            return last_client
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                # A closed loop's connections can no longer be closed politely; drop
                # the references so they are collected with their sockets.
                for old in [old for old in self._async_clients if old.is_closed()]:
                    del self._async_clients[old]
                client = self._async_clients[loop] = self._async_factory()
            self._last = (loop, client)
        return client

    # --- sync -----------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        # The attribute first: the property (and its lock) only until the client exists.
        value: bytes | None = (self._client or self.client).get(key)
        return value

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        with self._refusals_for_size(len(value)):
            self.client.set(key, value, px=ttl_milliseconds(ttl_seconds))

    @staticmethod
    @contextlib.contextmanager
    def _refusals_for_size(size: int) -> Iterator[None]:
        """Around a write whose largest value is ``size`` bytes (sync or async): the
        server cutting it off for its size is that caller's failed write
        (:class:`WriteRejectedError`), not an outage."""
        try:
            yield
        except rex.RedisError as exc:
            if oversized_write(exc, size):
                raise _rejected(exc, size) from None
            raise

    @contextlib.asynccontextmanager
    async def _arefusals_for_size(self, size: int) -> AsyncIterator[None]:
        """:meth:`_refusals_for_size` for an asyncio write, then the loop's idle
        connections are closed: the server closed the one that carried the value, and
        redis-py's asyncio pool takes a connection back after an error reply as if it
        were healthy. The next command on it would fail (under CPython 3.13 the
        reconnect right after can also wait out the connect timeout): one caller's
        oversized value would become other callers' failures against the breaker."""
        try:
            with self._refusals_for_size(size):
                yield
        except WriteRejectedError:
            # A cluster client keeps per-node connections and has no pool here.
            pool = getattr(self.async_client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
            raise

    def _remove(self, client: SyncClient, keys: list[str]) -> int:
        """``UNLINK`` (frees memory off the server's main thread), else ``DEL`` (from
        the first refusal on: a refusal is a quick reply, and each command has its own
        I/O deadline, see deadline.py)."""
        if self._unlink:
            try:
                return int(client.unlink(*keys))
            except rex.ResponseError as exc:
                if not unlink_refused(exc):
                    raise
                self._unlink = False
        return int(client.delete(*keys))

    def delete(self, key: str) -> None:
        self._remove(self.client, [key])

    def delete_pattern(self, pattern: str) -> int:
        # Each round trip (a SCAN page, an UNLINK batch) has its own deadline: a large
        # namespace takes as many as it needs, a trickling server cannot stretch one.
        client = self.client
        if self.cluster_url is not None:
            # A cluster's SCAN is per node; its scan_iter walks them all.
            keys = list(client.scan_iter(match=pattern, count=SCAN_COUNT))
            return self._remove_all(client, keys)
        deleted, cursor = 0, 0
        while True:
            cursor, count = self._page(client, pattern, cursor)
            deleted += count
            if not cursor:
                return deleted

    def delete_pattern_page(self, pattern: str, cursor: int) -> int:
        """One ``SCAN`` page of ``pattern`` from ``cursor``, its keys removed; returns
        the cursor to continue from (0: done). Lets a replay drop a large namespace
        in bounded slices. A cluster drops the whole pattern at once."""
        if self.cluster_url is not None:
            self.delete_pattern(pattern)
            return 0
        return self._page(self.client, pattern, cursor)[0]

    def _page(self, client: SyncClient, pattern: str, cursor: int) -> tuple[int, int]:
        cursor, keys = _scan(client, pattern, cursor)
        return int(cursor), self._remove_all(client, keys)

    def _remove_all(self, client: SyncClient, keys: list[str]) -> int:
        deleted = 0
        for start in range(0, len(keys), UNLINK_BATCH):
            deleted += self._remove(client, keys[start : start + UNLINK_BATCH])
        return deleted

    def health_check(self) -> bool:
        try:
            return bool(self.client.ping())
        except rex.ResponseError as exc:
            if database_out_of_range(exc) and not self._database_error_logged:
                # Valid in the URL (0-15), not on this server: a deployment mistake
                # that no retry fixes. ERROR once; the breaker keeps calls cheap.
                self._database_error_logged = True
                _LOGGER.error(
                    "cache backend %r at %s: the server has no database %s (%s); "
                    "every cache call is a miss until the URL names one it has",
                    self.name,
                    self.redacted_url,
                    _database(self.config.url),
                    exc,
                )
            raise

    def close(self) -> None:
        """Release the connections, while other threads may still be mid-call on them
        (a ``configure()`` that replaces this cache, a ``close()`` at shutdown): the
        idle ones now, each busy one when its call is done with it. A call arriving
        after this opens a client of its own."""
        with self._lock:
            client, self._client = self._client, None
            # Async clients of other loops cannot be awaited from here; ``aclose()``
            # in each loop closes them properly, else they go with their last call
            # (abortively, and never through a loop that has closed: abortive.py).
            self._async_clients.clear()
            self._last = (None, None)
        if client is not None:
            close_gracefully(client)

    # --- asyncio ----------------------------------------------------------------------------

    async def aget(self, key: str) -> bytes | None:
        value: bytes | None = await self.async_client.get(key)
        return value

    async def aset(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        async with self._arefusals_for_size(len(value)):
            await self.async_client.set(key, value, px=ttl_milliseconds(ttl_seconds))

    async def _aremove(self, client: AsyncClient, keys: list[str]) -> int:
        """Async :meth:`_remove`."""
        if self._unlink:
            try:
                return int(await client.unlink(*keys))
            except rex.ResponseError as exc:
                if not unlink_refused(exc):
                    raise
                self._unlink = False
        return int(await client.delete(*keys))

    async def adelete(self, key: str) -> None:
        await self._aremove(self.async_client, [key])

    async def adelete_pattern(self, pattern: str) -> int:
        client = self.async_client
        if self.cluster_url is not None:
            keys = [key async for key in client.scan_iter(match=pattern, count=SCAN_COUNT)]
            return await self._aremove_all(client, keys)
        deleted, cursor = 0, 0
        while True:
            cursor, count = await self._apage(client, pattern, cursor)
            deleted += count
            if not cursor:
                return deleted

    async def adelete_pattern_page(self, pattern: str, cursor: int) -> int:
        """Async :meth:`delete_pattern_page`."""
        if self.cluster_url is not None:
            await self.adelete_pattern(pattern)
            return 0
        return (await self._apage(self.async_client, pattern, cursor))[0]

    async def _apage(self, client: AsyncClient, pattern: str, cursor: int) -> tuple[int, int]:
        cursor, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT)
        return int(cursor), await self._aremove_all(client, keys)

    async def _aremove_all(self, client: AsyncClient, keys: list[str]) -> int:
        deleted = 0
        for start in range(0, len(keys), UNLINK_BATCH):
            deleted += await self._aremove(client, keys[start : start + UNLINK_BATCH])
        return deleted

    async def ahealth_check(self) -> bool:
        return bool(await self.async_client.ping())

    async def aclose(self) -> None:
        """Close the running loop's asyncio client (call it in every loop that used one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
            if self._last[0] is loop:
                self._last = (None, None)
        if client is not None:
            await client.aclose()

    def same_server(self, client: Any) -> bool:
        """True when the redis-py ``client`` talks to this backend's server (same
        host and port, or the same unix socket)."""
        pool = getattr(client, "connection_pool", None)
        theirs = getattr(pool, "connection_kwargs", None)
        if not isinstance(theirs, dict):
            return False
        try:
            ours = urlsplit(self.cluster_url or self.config.url)
        except ValueError:
            return False
        if ours.scheme == "unix":
            return bool(theirs.get("path")) and theirs.get("path") == ours.path
        hosts = {"localhost", "127.0.0.1", "::1"}
        mine, other = (ours.hostname or "").lower(), str(theirs.get("host", "")).lower()
        same_host = mine == other or (mine in hosts and other in hosts)
        return same_host and int(theirs.get("port", 6379)) == (ours.port or 6379)

    def is_backend_failure(self, exc: BaseException) -> bool:
        return is_redis_failure(exc)

    def is_pool_exhausted(self, exc: BaseException) -> bool:
        return is_pool_exhausted(exc)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.name!r} {self.redacted_url}>"

"""The ``redis+cluster://`` backend: redis-py's cluster clients with a breaker per master.

Every call finds the master serving its key (from the client's slot table, no I/O),
asks that master's breaker (:mod:`~tasker_resilience._cache.backends.nodes` explains
the design), and only then sends the command. ``delete_pattern`` and
``health_check`` visit each master in turn under its own breaker, so one master
being down costs its share only.

asyncio: redis-py's asyncio cluster client raises ``MaxConnectionsError`` as soon as
a node's pool is full instead of waiting for a connection. Here at most
``max_connections`` commands are in flight per event loop (so no node's pool can be
exhausted) and a caller beyond that waits for a slot, at most
``connect_timeout_seconds``, like the blocking pool of the sync clients: a burst of
a thousand concurrent ``aget()`` calls queues instead of failing.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import redis.exceptions as rex

from tasker_resilience._breakers.breaker import Breaker
from tasker_resilience._cache.backends.contract import NodeUnavailable
from tasker_resilience._cache.backends.nodes import NodeCall, NodeGuards
from tasker_resilience._cache.backends.redis_backend import (
    SCAN_COUNT,
    UNLINK_BATCH,
    AsyncClient,
    RedisBackend,
    SyncClient,
    is_redis_failure,
)
from tasker_resilience._cache.backends.topology import topology_of
from tasker_resilience._cache.invalidations import DELETE, DELETE_PATTERN, Step
from tasker_resilience._cache.keys import escape_glob
from tasker_resilience._config.schema import RedisConfig
from tasker_resilience._forks import after_fork_in_child

if TYPE_CHECKING:
    from tasker_resilience._config.schema import CacheConfig

__all__ = ["RedisClusterBackend", "redis_from_config"]

T = TypeVar("T")


class RedisClusterBackend(RedisBackend):
    """Redis Cluster through redis-py's ``RedisCluster`` (sync) and its asyncio twin,
    each master behind its own breaker (:attr:`nodes`)."""

    def __init__(
        self,
        config: RedisConfig,
        *,
        name: str = "redis",
        key_prefix: str = "tasker",
        max_pending_invalidations: int = 1000,
        client: SyncClient | None = None,
        async_client_factory: Callable[[], AsyncClient] | None = None,
    ) -> None:
        super().__init__(
            config, name=name, client=client, async_client_factory=async_client_factory
        )
        self.nodes = NodeGuards(
            is_redis_failure,
            namespace_pattern=escape_glob(key_prefix) + ":*",
            limit=max_pending_invalidations,
        )
        self._cache_breaker: Breaker | None = None
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._slots_lock = threading.Lock()
        after_fork_in_child(self, _renew_slots_lock)

    @classmethod
    def from_cluster_config(cls, config: CacheConfig) -> RedisClusterBackend:
        return cls(
            config.redis,
            name=config.backend,
            key_prefix=config.key_prefix,
            max_pending_invalidations=config.max_pending_invalidations,
        )

    def guard_nodes_with(self, breaker: Breaker) -> None:
        """Give every master a breaker with the ``cache`` breaker's thresholds; the
        ``cache`` breaker itself is opened when every master's is."""
        self.nodes.configure(breaker.config, enabled=breaker.enabled)
        self._cache_breaker = breaker

    def node_report(self) -> dict[str, dict[str, Any]]:
        """Per master (``host:port``): its breaker's state and counters, and the
        invalidations waiting for it. No I/O."""
        client: Any = self._client  # the cluster client, if built: its slot table
        masters = None if client is None else {node.name for node in client.get_primaries()}
        return self.nodes.snapshot(masters)

    def unavailable_nodes(self) -> list[str]:
        """Masters whose breaker is not closed."""
        return self.nodes.unavailable()

    # --- sync -----------------------------------------------------------------------

    def _cluster(self) -> Any:
        # RedisCluster: the slot-table methods are outside the SyncClient protocol.
        return self._client or self.client

    def _run(self, node: str, undo: Step | None, call: Callable[[], T]) -> T:
        """``call()`` under ``node``'s breaker, after replaying what the node missed."""
        guard = self.nodes.begin(node, undo)
        try:
            if guard.replay is not None:
                for step in guard.replay.steps:
                    self._apply(guard, step)
                self.nodes.replayed(guard)
            result = call()
        except BaseException as exc:
            raised = self._node_failed(guard, exc, self._cluster())
            if raised is exc:
                raise
            raise raised from exc
        self.nodes.end(guard, None)
        return result

    def _node_failed(self, guard: NodeCall, exc: BaseException, cluster: Any) -> BaseException:
        """Record a failed node call (see ``NodeGuards.failed``); when it leaves every
        master's breaker open, open the ``cache`` breaker too."""
        raised = self.nodes.failed(guard, exc)
        breaker = self._cache_breaker
        if raised is not exc and breaker is not None and guard.breaker.is_open:
            masters = {node.name for node in cluster.get_primaries()}
            if not breaker.is_open and self.nodes.none_closed(masters):
                breaker.force_open()
        return raised

    def _apply(self, guard: NodeCall, step: Step) -> None:
        cluster = self._cluster()
        if step.kind is DELETE:
            self._remove(cluster, [step.target])
        else:
            self._delete_on(cluster.get_node(node_name=guard.node), step.target)

    def _delete_on(self, node: Any, pattern: str) -> int:
        cluster = self._cluster()
        deleted = 0
        keys = cluster.scan_iter(match=pattern, count=SCAN_COUNT, target_nodes=node)
        for batch in _batches(keys):
            deleted += self._remove(cluster, batch)
        return deleted

    def get(self, key: str) -> bytes | None:
        cluster = self._cluster()
        node = cluster.get_node_from_key(key).name
        value: bytes | None = self._run(node, None, lambda: cluster.get(key))
        return value

    def get_with_ttl(self, key: str) -> tuple[bytes | None, float | None]:
        cluster = self._cluster()
        node = cluster.get_node_from_key(key).name
        return self._run(node, None, lambda: RedisBackend.get_with_ttl(self, key))

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        cluster = self._cluster()
        node = cluster.get_node_from_key(key).name
        # The single-server write (and its oversized-value check), under the node's breaker.
        store = functools.partial(RedisBackend.set, self, key, value, ttl_seconds)
        self._run(node, Step(DELETE, key), store)

    def delete(self, key: str) -> None:
        cluster = self._cluster()
        node = cluster.get_node_from_key(key).name
        self._run(node, Step(DELETE, key), lambda: self._remove(cluster, [key]))

    def delete_pattern(self, pattern: str) -> int:
        """Keys removed from the masters that are up; a master whose breaker is open
        remembers the pattern and applies it when it is back."""
        deleted = 0
        for node in self._cluster().get_primaries():
            undo = Step(DELETE_PATTERN, pattern)
            try:
                delete_on = functools.partial(self._delete_on, node, pattern)
                deleted += self._run(node.name, undo, delete_on)
            except NodeUnavailable:
                continue  # remembered by that node
        return deleted

    def health_check(self) -> bool:
        """True when every master answers PING; a master whose breaker is open makes
        it False without a network call."""
        cluster = self._cluster()
        masters = cluster.get_primaries()
        self.nodes.forget_except({node.name for node in masters})
        healthy = True
        for node in masters:
            try:
                ping = functools.partial(cluster.ping, target_nodes=node)
                answered = self._run(node.name, None, ping)
            except NodeUnavailable:
                answered = False
            healthy = healthy and bool(answered)
        return healthy

    # --- asyncio ----------------------------------------------------------------------

    async def _acluster(self) -> Any:
        cluster: Any = self.async_client
        # redis-py's own "slot table not loaded yet" flag: the first call of each loop
        # loads it (inside the breaker, like the sync client's constructor).
        if cluster._initialize:
            await cluster.initialize()
        return cluster

    def _slot_semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._slots.get(loop)
        if semaphore is None:
            with self._slots_lock:
                for old in [old for old in self._slots if old.is_closed()]:
                    del self._slots[old]
                semaphore = self._slots.setdefault(
                    loop, asyncio.Semaphore(self.config.max_connections)
                )
        return semaphore

    async def _arun(self, node: str, undo: Step | None, call: Callable[[], Awaitable[T]]) -> T:
        """Async :meth:`_run`, holding one of ``max_connections`` command slots."""
        guard = self.nodes.begin(node, undo)
        try:
            semaphore = self._slot_semaphore()
            if semaphore.locked():
                try:
                    await asyncio.wait_for(semaphore.acquire(), self.config.connect_timeout_seconds)
                except asyncio.TimeoutError:
                    raise rex.MaxConnectionsError(
                        f"no command slot came free within {self.config.connect_timeout_seconds} s "
                        f"({self.config.max_connections} in flight)"
                    ) from None
            else:
                await semaphore.acquire()
            try:
                if guard.replay is not None:
                    for step in guard.replay.steps:
                        await self._aapply(guard, step)
                    self.nodes.replayed(guard)
                result = await call()
            finally:
                semaphore.release()
        except BaseException as exc:
            raised = self._node_failed(guard, exc, self.async_client)
            if raised is exc:
                raise
            raise raised from exc
        self.nodes.end(guard, None)
        return result

    async def _aapply(self, guard: NodeCall, step: Step) -> None:
        cluster = await self._acluster()
        if step.kind is DELETE:
            await self._aremove(cluster, [step.target])
        else:
            await self._adelete_on(cluster.get_node(node_name=guard.node), step.target)

    async def _adelete_on(self, node: Any, pattern: str) -> int:
        cluster = await self._acluster()
        deleted = 0
        batch: list[Any] = []
        async for key in cluster.scan_iter(match=pattern, count=SCAN_COUNT, target_nodes=node):
            batch.append(key)
            if len(batch) >= UNLINK_BATCH:
                deleted += await self._aremove(cluster, batch)
                batch = []
        if batch:
            deleted += await self._aremove(cluster, batch)
        return deleted

    async def aget(self, key: str) -> bytes | None:
        cluster = await self._acluster()
        node = cluster.get_node_from_key(key).name
        value: bytes | None = await self._arun(node, None, lambda: cluster.get(key))
        return value

    async def aget_with_ttl(self, key: str) -> tuple[bytes | None, float | None]:
        cluster = await self._acluster()
        node = cluster.get_node_from_key(key).name
        return await self._arun(node, None, lambda: RedisBackend.aget_with_ttl(self, key))

    async def aset(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        cluster = await self._acluster()
        node = cluster.get_node_from_key(key).name
        store = functools.partial(RedisBackend.aset, self, key, value, ttl_seconds)
        await self._arun(node, Step(DELETE, key), store)

    async def adelete(self, key: str) -> None:
        cluster = await self._acluster()
        node = cluster.get_node_from_key(key).name
        await self._arun(node, Step(DELETE, key), lambda: self._aremove(cluster, [key]))

    async def adelete_pattern(self, pattern: str) -> int:
        """Async :meth:`delete_pattern`."""
        cluster = await self._acluster()
        deleted = 0
        for node in cluster.get_primaries():
            undo = Step(DELETE_PATTERN, pattern)
            try:
                deleted += await self._arun(
                    node.name, undo, functools.partial(self._adelete_on, node, pattern)
                )
            except NodeUnavailable:
                continue
        return deleted

    async def ahealth_check(self) -> bool:
        """Async :meth:`health_check`."""
        cluster = await self._acluster()
        masters = cluster.get_primaries()
        self.nodes.forget_except({node.name for node in masters})
        healthy = True
        for node in masters:
            try:
                answered = await self._arun(
                    node.name, None, functools.partial(cluster.ping, target_nodes=node)
                )
            except NodeUnavailable:
                answered = False
            healthy = healthy and bool(answered)
        return healthy

    def __repr__(self) -> str:
        return f"<RedisClusterBackend {self.name!r} {self.redacted_url}>"


def redis_from_config(config: CacheConfig) -> RedisBackend:
    """The factory behind ``backend = "redis"`` and ``backend = "dragonfly"``: the
    cluster backend for a ``redis+cluster://`` URL, the plain one for any other."""
    if topology_of(config.redis.url) == "cluster":
        return RedisClusterBackend.from_cluster_config(config)
    return RedisBackend.from_config(config)


def _batches(keys: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _renew_slots_lock(backend: RedisClusterBackend) -> None:
    backend._slots_lock = threading.Lock()  # in a forked child (see tasker_resilience._forks)

"""Redis commands beyond the backend contract, for integrations that need them.

The :class:`~tasker_resilience._cache.backends.contract.CacheBackend` contract is what
every backend must offer (get, set, delete, delete_pattern, health_check). Framework
caches such as Django's need more: an atomic add, counters, touch, and batches; and
``@cached(lock=True)`` takes its lease with ``add`` and gives it back with
``delete_if_equal`` (compare-and-delete, so a holder whose lease already expired never
deletes the next holder's). Those
are Redis commands, so they live here as a mixin of
:class:`~tasker_resilience._cache.backends.redis_backend.RedisBackend`, and the
provider runs them under the ``cache`` breaker like any other backend call
(``CacheProvider.command``).

Keys are full keys (prefix applied), values are bytes, TTLs are seconds: ``None``
means no expiry. Each sync method and its ``a``-prefixed twin send the same commands;
the twins differ only in the ``await``. Each method sends one command or one pipeline:
on the sync clients its I/O then shares one deadline however the server trickles
(see ``deadline.py``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Final, Protocol

__all__ = ["AsyncCommandClient", "CommandClient", "RedisCommands"]

# INCRBY only when the key exists: Django's contract is "incr on a missing key raises
# ValueError", and EXISTS then INCRBY as two commands could create the key if it expired
# in between. One script, one round trip, atomic. Returns nil for a missing key.
_INCR_EXISTING: Final = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "return redis.call('INCRBY', KEYS[1], ARGV[1]) end "
    "return false"
)
# DEL only when the value is still the caller's own (a lease token): GET then DEL as two
# commands could delete a lease that expired in between and was taken by another holder.
_DELETE_IF_EQUAL: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


class CommandClient(Protocol):
    """The part of a sync redis-py client these commands use."""

    def set(self, name: str, value: bytes, *, px: int | None = None, nx: bool = False) -> Any: ...
    def mget(self, keys: Sequence[str]) -> Any: ...
    def exists(self, *names: str) -> Any: ...
    def unlink(self, *names: str) -> Any: ...
    def persist(self, name: str) -> Any: ...
    def pexpire(self, name: str, time: int) -> Any: ...
    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...
    def pipeline(self, transaction: bool = True) -> Any: ...


class AsyncCommandClient(Protocol):
    """The part of an asyncio redis-py client these commands use."""

    def set(
        self, name: str, value: bytes, *, px: int | None = None, nx: bool = False
    ) -> Awaitable[Any]: ...
    def mget(self, keys: Sequence[str]) -> Awaitable[Any]: ...
    def exists(self, *names: str) -> Awaitable[Any]: ...
    def unlink(self, *names: str) -> Awaitable[Any]: ...
    def persist(self, name: str) -> Awaitable[Any]: ...
    def pexpire(self, name: str, time: int) -> Awaitable[Any]: ...
    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]: ...
    def pipeline(self, transaction: bool = True) -> Any: ...


class _Clients(Protocol):
    @property
    def client(self) -> CommandClient: ...
    @property
    def async_client(self) -> AsyncCommandClient: ...
    @property
    def cluster_url(self) -> str | None: ...
    # UNLINK, or DEL on a server that refuses UNLINK: the backend decides once.
    def _remove(self, client: Any, keys: list[str]) -> int: ...
    async def _aremove(self, client: Any, keys: list[str]) -> int: ...
    # A write the server cuts off for its size becomes WriteRejectedError, as for set.
    def _refusals_for_size(self, size: int) -> AbstractContextManager[None]: ...
    def _arefusals_for_size(self, size: int) -> AbstractAsyncContextManager[None]: ...


def ttl_milliseconds(ttl_seconds: float | None) -> int | None:
    """``PX`` for ``ttl_seconds`` (None: no expiry). Never 0, which ``SET`` rejects."""
    return None if ttl_seconds is None else max(1, math.ceil(ttl_seconds * 1000))


def _expire_milliseconds(ttl_seconds: float) -> int:
    # PEXPIRE accepts 0 (and negatives): the key is deleted at once, which is what a
    # zero timeout means.
    return max(0, math.ceil(ttl_seconds * 1000))


def _mget(client: Any, keys: Sequence[str], cluster: bool) -> Any:
    # A cluster client refuses MGET across slots; mget_nonatomic splits it per slot.
    return client.mget_nonatomic(keys) if cluster else client.mget(keys)


def _set_pipeline(client: Any, items: Mapping[str, bytes], ttl_seconds: float | None) -> Any:
    """One round trip of ``SET key value [PX ttl]``, no MULTI: the keys are independent."""
    pipe = client.pipeline(transaction=False)
    px = ttl_milliseconds(ttl_seconds)
    for key, value in items.items():
        pipe.set(key, value, px=px)
    return pipe


def _persist_pipeline(client: Any, key: str) -> Any:
    """``PERSIST`` then ``EXISTS`` in one round trip (one command's deadline):
    ``PERSIST`` answers 0 for a key without a TTL too, so existence is asked as well."""
    pipe = client.pipeline(transaction=False)
    pipe.persist(key)
    pipe.exists(key)
    return pipe


def _persisted(replies: Sequence[Any]) -> bool:
    persisted, exists = replies
    return bool(persisted) or bool(exists)


def _largest(items: Mapping[str, bytes]) -> int:
    """The size that decides whether a server refused a batch for size: its largest value."""
    return max(map(len, items.values()), default=0)


def _incr_result(value: Any) -> int | None:
    return None if value is None else int(value)


def _timed_pipeline(client: Any, key: str) -> Any:
    pipe = client.pipeline(transaction=False)
    pipe.get(key)
    pipe.pttl(key)
    return pipe


def _with_ttl(replies: Sequence[Any]) -> tuple[bytes | None, float | None]:
    """``(value, seconds left)`` from ``GET`` and ``PTTL`` replies: seconds None when the
    key never expires; ``(None, None)`` when it is absent (or went between the two)."""
    value, left = replies
    if value is None or left == -2:
        return None, None
    return value, (None if left < 0 else left / 1000)


class RedisCommands:
    """Extra commands of the Redis backend, each with its async twin."""

    def add(self: _Clients, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX``); True when stored."""
        with self._refusals_for_size(len(value)):
            return bool(self.client.set(key, value, px=ttl_milliseconds(ttl_seconds), nx=True))

    def delete_if_equal(self: _Clients, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it holds ``value``; True when deleted."""
        return bool(self.client.eval(_DELETE_IF_EQUAL, 1, key, value))

    def get_with_ttl(self: _Clients, key: str) -> tuple[bytes | None, float | None]:
        """``key``'s raw value and the seconds the server keeps it for (None: no expiry),
        in one round trip (``GET`` and ``PTTL`` pipelined): the near tier bounds its
        copy by the server's own expiry."""
        return _with_ttl(_timed_pipeline(self.client, key).execute())

    def get_many(self: _Clients, keys: Sequence[str]) -> list[bytes | None]:
        """The raw values of ``keys``, in order, None where absent."""
        return list(_mget(self.client, keys, self.cluster_url is not None))

    def set_many(self: _Clients, items: Mapping[str, bytes], ttl_seconds: float | None) -> None:
        with self._refusals_for_size(_largest(items)):
            _set_pipeline(self.client, items, ttl_seconds).execute()

    def delete_many(self: _Clients, keys: Sequence[str]) -> int:
        """Remove ``keys``; how many existed."""
        return self._remove(self.client, list(keys)) if keys else 0

    def exists(self: _Clients, key: str) -> bool:
        return bool(self.client.exists(key))

    def incr(self: _Clients, key: str, delta: int) -> int | None:
        """``key`` incremented by ``delta``; None (and nothing created) when absent."""
        return _incr_result(self.client.eval(_INCR_EXISTING, 1, key, delta))

    def touch(self: _Clients, key: str, ttl_seconds: float | None) -> bool:
        """Give ``key`` a new TTL (None: never expires; 0: expire now); False if absent."""
        client = self.client
        if ttl_seconds is None:
            return _persisted(_persist_pipeline(client, key).execute())
        return bool(client.pexpire(key, _expire_milliseconds(ttl_seconds)))

    async def aadd(self: _Clients, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        client = self.async_client
        async with self._arefusals_for_size(len(value)):
            return bool(await client.set(key, value, px=ttl_milliseconds(ttl_seconds), nx=True))

    async def adelete_if_equal(self: _Clients, key: str, value: bytes) -> bool:
        return bool(await self.async_client.eval(_DELETE_IF_EQUAL, 1, key, value))

    async def aget_with_ttl(self: _Clients, key: str) -> tuple[bytes | None, float | None]:
        return _with_ttl(await _timed_pipeline(self.async_client, key).execute())

    async def aget_many(self: _Clients, keys: Sequence[str]) -> list[bytes | None]:
        return list(await _mget(self.async_client, keys, self.cluster_url is not None))

    async def aset_many(
        self: _Clients, items: Mapping[str, bytes], ttl_seconds: float | None
    ) -> None:
        async with self._arefusals_for_size(_largest(items)):
            await _set_pipeline(self.async_client, items, ttl_seconds).execute()

    async def adelete_many(self: _Clients, keys: Sequence[str]) -> int:
        return await self._aremove(self.async_client, list(keys)) if keys else 0

    async def aexists(self: _Clients, key: str) -> bool:
        return bool(await self.async_client.exists(key))

    async def aincr(self: _Clients, key: str, delta: int) -> int | None:
        return _incr_result(await self.async_client.eval(_INCR_EXISTING, 1, key, delta))

    async def atouch(self: _Clients, key: str, ttl_seconds: float | None) -> bool:
        client = self.async_client
        if ttl_seconds is None:
            return _persisted(await _persist_pipeline(client, key).execute())
        return bool(await client.pexpire(key, _expire_milliseconds(ttl_seconds)))

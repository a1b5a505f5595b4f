"""Where the drill's outage happens: the three targets and how one is chosen.

Chosen in this order:

- ``local-server``: a private ``dragonfly``/``redis-server``/``valkey-server`` started on a
  free loopback port (``LocalServer``); the drill freezes it with SIGSTOP and thaws it
  with SIGCONT. The real thing: real sockets, real timeouts.
- ``in-process``: no server binary on PATH (or ``in_process=True``): the in-process
  memory backend behind a fault injector that, while "frozen", waits the socket timeout
  and raises ``TimeoutError``, as a hung server would. Said so in every report.
- ``observe`` (``url=...``): the user's own server. The drill never freezes a server it
  did not start; it runs the same load and reports what the breaker did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from tasker_resilience._config.redact import redact_url

if TYPE_CHECKING:
    from tasker_resilience._config.schema import CacheConfig

    # Annotations only: ``_drill`` imports this module, so a run-time import would be a cycle.
    from tasker_resilience._operations.drill.options import DrillOptions
    from tasker_resilience._operations.drill.progress import Progress

__all__ = [
    "INJECTOR_BACKEND",
    "IN_PROCESS",
    "LOCAL_SERVER",
    "OBSERVE",
    "DrillError",
    "Target",
    "check_reachable",
    "choose_target",
    "private_server_binary",
]

LOCAL_SERVER: Final = "local-server"
IN_PROCESS: Final = "in-process"
OBSERVE: Final = "observe"

INJECTOR_BACKEND: Final = "drill-fault-injector"
"""The backend name the in-process target registers (and health reports)."""


def private_server_binary(flag: str, server_binary: str | None) -> str:
    """``server_binary``, else the first server binary on PATH, for a drill mode
    (``flag``) that freezes a private server; :class:`DrillError` when there is none."""
    if server_binary is not None:
        return server_binary
    from tasker_resilience._operations.drill.local_server import find_server_binary

    found = find_server_binary()
    if found is None:
        raise DrillError(
            f"{flag} freezes a private server: install dragonfly, redis-server or "
            "valkey-server, or pass --server-binary"
        )
    return found[1]


class DrillError(Exception):
    """The drill could not run (unreachable ``--url``, no way to start a server, ...)."""


class Target(Protocol):
    """What the runner needs from a place to stage (or only watch) an outage."""

    mode: str
    description: str

    def cache_overrides(self) -> dict[str, Any]: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def raw_call(self, options: DrillOptions) -> tuple[float, str]: ...
    def close(self) -> None: ...


def _raw_client(url: str, *, socket_timeout: float, connect_timeout: float) -> Any:
    """A plain redis-py client with the drill's timeouts and no retries: what a service
    without the breaker, but with sensibly short timeouts, would use."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _timed(call: Callable[[], object]) -> tuple[float, str]:
    """``(seconds, outcome)`` of one call: ``answered`` or the exception's type name."""
    started = time.perf_counter()
    try:
        call()
        outcome = "answered"
    except Exception as exc:
        outcome = type(exc).__name__
    return time.perf_counter() - started, outcome


class _LocalServerTarget:
    mode = LOCAL_SERVER

    def __init__(self, binary: str | None) -> None:
        from tasker_resilience._operations.drill.local_server import LocalServer

        self._server = LocalServer(binary)
        self._server.start()
        try:
            version = self._server.version()
        except Exception:
            version = "version unknown"
        self.description = (
            f"{self._server.kind} {version}, a private server on 127.0.0.1:{self._server.port} "
            "started by the drill (frozen with SIGSTOP, thawed with SIGCONT)"
        )

    def cache_overrides(self) -> dict[str, Any]:
        return {"redis": {"url": self._server.url}}

    def freeze(self) -> None:
        self._server.freeze()

    def thaw(self) -> None:
        self._server.thaw()

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        client = _raw_client(
            self._server.url,
            socket_timeout=options.socket_timeout,
            connect_timeout=options.connect_timeout,
        )
        try:
            return _timed(lambda: client.get("tasker-drill:raw"))
        finally:
            client.close()

    def close(self) -> None:
        self._server.stop()


class _InjectedBackend:
    """The memory backend behind a switch: while frozen, every call waits the socket
    timeout and raises ``TimeoutError``, which is what a SIGSTOPped server does to a
    client."""

    distributed = True

    def __init__(self, inner: Any, delay: float, target: _InProcessTarget) -> None:
        self.name = INJECTOR_BACKEND
        self._inner = inner
        self._delay = delay
        self._target = target

    def _hang(self) -> None:
        if self._target.frozen:
            time.sleep(self._delay)
            raise TimeoutError(f"injected fault: no answer within {self._delay} s")

    async def _ahang(self) -> None:
        if self._target.frozen:
            import asyncio

            await asyncio.sleep(self._delay)
            raise TimeoutError(f"injected fault: no answer within {self._delay} s")

    def get(self, key: str) -> bytes | None:
        self._hang()
        result: bytes | None = self._inner.get(key)
        return result

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self._hang()
        self._inner.set(key, value, ttl_seconds)

    def delete(self, key: str) -> None:
        self._hang()
        self._inner.delete(key)

    def delete_pattern(self, pattern: str) -> int:
        self._hang()
        return int(self._inner.delete_pattern(pattern))

    def health_check(self) -> bool:
        self._hang()
        return bool(self._inner.health_check())

    def close(self) -> None:
        self._inner.close()

    async def aget(self, key: str) -> bytes | None:
        await self._ahang()
        result: bytes | None = await self._inner.aget(key)
        return result

    async def aset(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        await self._ahang()
        await self._inner.aset(key, value, ttl_seconds)

    async def adelete(self, key: str) -> None:
        await self._ahang()
        await self._inner.adelete(key)

    async def adelete_pattern(self, pattern: str) -> int:
        await self._ahang()
        return int(await self._inner.adelete_pattern(pattern))

    async def ahealth_check(self) -> bool:
        await self._ahang()
        return bool(await self._inner.ahealth_check())

    async def aclose(self) -> None:
        await self._inner.aclose()

    def is_backend_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, ConnectionError)) or bool(
            self._inner.is_backend_failure(exc)
        )


class _InProcessTarget:
    mode = IN_PROCESS
    description = (
        "IN-PROCESS fault injector (no server binary used): the memory backend; while "
        "'frozen' each call waits the socket timeout and raises TimeoutError"
    )

    def __init__(self, options: DrillOptions) -> None:
        from tasker_resilience._cache.backends.contract import backend_factory, register_backend

        self.frozen = False
        self.backend: _InjectedBackend | None = None
        memory_factory = backend_factory("memory")

        def factory(config: CacheConfig) -> _InjectedBackend:
            self.backend = _InjectedBackend(memory_factory(config), options.socket_timeout, self)
            return self.backend

        # Registered under a name of its own, so health and logs say what is behind the
        # cache; re-registering replaces the previous drill's factory.
        register_backend(INJECTOR_BACKEND, factory)

    def cache_overrides(self) -> dict[str, Any]:
        return {"backend": INJECTOR_BACKEND}

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        backend = self.backend
        assert backend is not None, "the cache is built before the outage starts"
        return _timed(lambda: backend.get("tasker-drill:raw"))

    def close(self) -> None:
        from tasker_resilience._cache.backends.contract import unregister_backend

        unregister_backend(INJECTOR_BACKEND)


class _ObservedTarget:
    mode = OBSERVE

    def __init__(self, url: str, options: DrillOptions) -> None:
        self._url = url
        # Up front, with a short timeout: a typo should cost a second, not a drill.
        self.description = (
            f"{check_reachable(url, timeout=max(1.0, options.connect_timeout))} at "
            f"{redact_url(url)} (observed only: the drill never freezes a server it did not "
            "start; keys under tasker-drill:* expire after 60 s)"
        )

    def cache_overrides(self) -> dict[str, Any]:
        return {
            "redis": {"url": self._url},
            "key_prefix": "tasker-drill",
            "default_ttl_seconds": 60,
        }

    def freeze(self) -> None:
        raise AssertionError("an observed server is never frozen")

    thaw = freeze

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        raise AssertionError("an observed server is never frozen")

    def close(self) -> None:
        return None


def check_reachable(url: str, *, timeout: float = 1.0) -> str:
    """PING ``url`` once with a short timeout; the server's name and version, or
    :class:`DrillError` with a one-line reason (password redacted)."""
    import redis

    try:
        client = _raw_client(url, socket_timeout=timeout, connect_timeout=timeout)
    except ValueError as exc:
        raise DrillError(f"not a usable Redis URL: {redact_url(url)} ({exc})") from None
    try:
        client.ping()
        info = client.info("server")
    except redis.RedisError as exc:
        reason = str(exc).replace(url, redact_url(url)) or type(exc).__name__
        raise DrillError(f"cannot reach {redact_url(url)}: {reason}") from None
    finally:
        client.close()
    if "dragonfly_version" in info:
        return f"dragonfly {info['dragonfly_version']}"
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '(version unknown)')}"


def choose_target(options: DrillOptions, progress: Progress) -> Target:
    if options.url is not None:
        return _ObservedTarget(options.url, options)
    if options.in_process:
        return _InProcessTarget(options)
    from tasker_resilience._operations.drill.local_server import find_server_binary

    if options.server_binary is None and find_server_binary() is None:
        progress.event(
            "no dragonfly, redis-server or valkey-server on PATH: "
            "using the in-process fault injector"
        )
        return _InProcessTarget(options)
    try:
        return _LocalServerTarget(options.server_binary)
    except Exception as exc:
        if options.server_binary is not None:
            # Asked for by name: falling back would hide the problem.
            raise DrillError(
                f"could not start {options.server_binary}: {type(exc).__name__}: {exc}"
            ) from None
        progress.event(
            f"could not start a private server ({type(exc).__name__}: {exc}); "
            "falling back to the in-process fault injector"
        )
        return _InProcessTarget(options)

"""``configure_for_tests`` and the :class:`Harness` it returns: the real Resilience
(settings, breakers, provider, serializer, replay), plus the switches a test needs.

``backend="redis"`` (or ``"fakeredis"``), ``"dragonfly"`` and ``"valkey"`` build the real
Redis backend over an in-process fakeredis server of that flavour, for sync and asyncio
callers; :meth:`Harness.down` / :meth:`Harness.up` / :meth:`Harness.outage` make that
server refuse connections the way a dead cache does. fakeredis is imported only then.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any, Final, Literal

from tasker_resilience._breakers.breaker import Clock
from tasker_resilience._config.layers import deep_merge
from tasker_resilience._config.schema import Settings
from tasker_resilience._resilience import Resilience, install_current, load_validated

if TYPE_CHECKING:
    from fakeredis import FakeRedis, FakeServer

    from tasker_resilience._cache.backends.contract import BackendFactory

__all__ = ["FAKE_BACKENDS", "TEST_OVERRIDES", "Harness", "ManualClock", "configure_for_tests"]

TEST_OVERRIDES: Mapping[str, Any] = {
    "common": {
        "circuit_breakers": {
            "default_config": {
                "failure_threshold": 3,
                "timeout_seconds": 1,
                "success_threshold": 1,
            },
            "component_configs": {
                name: {"failure_threshold": 3, "timeout_seconds": 1, "success_threshold": 1}
                for name in ("cache", "pgmq", "task_readiness")
            },
        },
        "cache": {"backend": "memory"},
    }
}
"""Small thresholds and a 1 s open timeout, and the in-process cache."""

Flavour = Literal["redis", "valkey", "dragonfly"]
"""The fakeredis ``server_type`` values the kit offers."""

FAKE_BACKENDS: Final[Mapping[str, tuple[Flavour, str]]] = {
    "fakeredis": ("redis", "redis"),
    "redis": ("redis", "redis"),
    "valkey": ("valkey", "redis"),
    "dragonfly": ("dragonfly", "dragonfly"),
}
"""``backend=`` of :func:`configure_for_tests` -> (fakeredis ``server_type``, the
configured backend name the cache reports)."""


class ManualClock:
    """A monotonic clock that moves only when told: ``clock.advance(30)``.

    It drives the breakers (open timeouts, ``retry_after_seconds``), not the fake
    server's TTLs, which follow the real time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds


class Harness(Resilience):
    """What :func:`configure_for_tests` returns: a real :class:`~tasker_resilience.Resilience`
    (``.cache``, ``.breakers``, ``.health()`` ...) with test switches.

    ``server`` is the fakeredis ``FakeServer`` behind the cache, or None for the
    in-process backends, which have no server to take down.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        sources: Mapping[str, str],
        server: FakeServer | None = None,
        backend_factory: BackendFactory | None = None,
    ) -> None:
        super().__init__(settings, clock=clock, sources=sources, backend_factory=backend_factory)
        self.server = server

    # --- the outage switch ---------------------------------------------------------------

    def _fake_server(self) -> FakeServer:
        if self.server is None:
            raise RuntimeError(
                f"the {self.settings.cache.backend!r} cache has no server to take down; "
                "use configure_for_tests(backend='fakeredis') (or 'dragonfly')"
            )
        return self.server

    def down(self) -> None:
        """From now on the fake server refuses every command with a redis-py
        ``ConnectionError``, as a crashed or unreachable cache does."""
        self._fake_server().connected = False

    def up(self) -> None:
        """The fake server answers again, with the data it held before."""
        self._fake_server().connected = True

    @property
    def is_down(self) -> bool:
        return not self._fake_server().connected

    @contextlib.contextmanager
    def outage(self) -> Iterator[Harness]:
        """``with harness.outage(): ...``: the cache is down inside the block."""
        self.down()
        try:
            yield self
        finally:
            self.up()

    # --- time and inspection -------------------------------------------------------------

    @property
    def manual_clock(self) -> ManualClock:
        """The :class:`ManualClock` the breakers read (``configure_for_tests(clock=...)``)."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError(
                "the breakers read the real clock; pass configure_for_tests(clock=ManualClock())"
            )
        return self.clock

    def advance(self, seconds: float | None = None) -> None:
        """Move the :class:`ManualClock` by ``seconds``; by default just past the cache
        breaker's open timeout, so the next cache call is a half-open probe."""
        if seconds is None:
            seconds = self.settings.circuit_breakers.for_component("cache").timeout_seconds
            seconds += 0.001
        self.manual_clock.advance(seconds)

    def redis_client(self) -> FakeRedis:
        """A redis-py client on the fake server, to look at what the code stored
        (keys carry ``key_prefix``; values are serialised)."""
        import fakeredis

        return fakeredis.FakeRedis(server=self._fake_server())

    def __repr__(self) -> str:
        state = ""
        if self.server is not None:
            state = " server=down" if self.is_down else " server=up"
        return f"<Harness cache={self.settings.cache.backend!r}{state}>"


def _fake_redis(flavour: Flavour) -> tuple[FakeServer, BackendFactory]:
    """A fakeredis server of ``flavour`` and a factory building the real RedisBackend on it."""
    try:
        import fakeredis
    except ImportError as exc:  # the plugin loads without it; say what to install
        raise ImportError(
            "a fakeredis-backed cache needs fakeredis: pip install 'tasker-resilience[pytest]'"
        ) from exc

    from tasker_resilience._cache.backends.contract import CacheBackend
    from tasker_resilience._cache.backends.redis_backend import RedisBackend
    from tasker_resilience._config.schema import CacheConfig

    server = fakeredis.FakeServer(server_type=flavour)

    def build(config: CacheConfig) -> CacheBackend:
        return RedisBackend(
            config.redis,
            name=config.backend,
            client=fakeredis.FakeRedis(server=server),
            # One client per event loop, as with a real server.
            async_client_factory=lambda: fakeredis.FakeAsyncRedis(server=server),
        )

    return server, build


def configure_for_tests(
    overrides: Mapping[str, Any] | None = None,
    *,
    backend: str | None = None,
    clock: Clock | None = None,
    root: str | PathLike[str] | None = None,
    install: bool = True,
) -> Harness:
    """``configure(env="test")`` with :data:`TEST_OVERRIDES` under your ``overrides``.

    ``backend`` picks the cache; it never opens a socket:

    - ``"fakeredis"`` (or ``"redis"``), ``"dragonfly"``, ``"valkey"``: the real Redis
      backend over a fresh fakeredis server of that flavour (``harness.server``); the
      cache reports ``backend_name`` ``"redis"`` (``"dragonfly"`` for Dragonfly);
    - ``"memory"`` (the default), ``"noop"``, or a registered backend's name: that backend.

    A real server is reached only through ``overrides`` (``common.cache.backend`` and
    ``common.cache.redis.url``), as in production. ``clock`` (a :class:`ManualClock`)
    replaces the breakers' monotonic clock. The result is the process-wide Resilience
    (what ``@cached`` and ``@breaker_guarded`` use) unless ``install=False``.
    """
    merged = deep_merge(TEST_OVERRIDES, overrides or {})
    server: FakeServer | None = None
    factory: BackendFactory | None = None
    if backend is not None:
        name = backend.strip().lower()
        fake = FAKE_BACKENDS.get(name)
        if fake is not None:
            flavour, name = fake
            server, factory = _fake_redis(flavour)
        merged = deep_merge(merged, {"common": {"cache": {"backend": name}}})
    loaded, settings = load_validated("test", merged, root=root)
    harness = Harness(
        settings,
        clock=clock or time.monotonic,
        sources=loaded.sources,
        server=server,
        backend_factory=factory,
    )
    harness.caches  # noqa: B018  # build now, as configure() does: start-up state is decided here
    if install:
        install_current(harness)
    return harness

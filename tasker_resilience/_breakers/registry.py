"""Name -> Breaker, one per name, configured from ``[common.circuit_breakers]``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker

from tasker_resilience._breakers.breaker import Breaker, Clock
from tasker_resilience._breakers.host_sharing import HostChannel, HostSharing
from tasker_resilience._config.schema import CACHE_BREAKER, BreakerConfig, BreakersConfig
from tasker_resilience._config.suggest import did_you_mean
from tasker_resilience._errors import ConfigurationError
from tasker_resilience._forks import new_lock_after_fork

__all__ = ["BreakerRegistry", "StorageFactory", "declare_guarded", "guarded_names"]

StorageFactory = Callable[[str], pybreaker.CircuitBreakerStorage]

# Names that some @breaker_guarded decorated, in any module imported so far. Process-wide:
# decorators run at import time, before any Resilience exists. set.add is atomic.
_guarded: set[str] = set()


def declare_guarded(name: str) -> None:
    """Make ``name`` a known breaker: ``@breaker_guarded(name)`` calls this when it
    decorates, so the breaker it will use is not mistaken for a typo."""
    _guarded.add(name)


def guarded_names() -> frozenset[str]:
    """The names ``@breaker_guarded`` has decorated with so far."""
    return frozenset(_guarded)


class BreakerRegistry:
    """Hands out one :class:`Breaker` per name, created on first use.

    ``component_configs.<name>`` configures a breaker; any other name gets
    ``default_config``, and a cache's breaker (:meth:`declare` ``like="cache"``) without
    an entry of its own gets the ``cache`` entry. Only known names are handed out: a
    configured one, a declared one (the caches' breakers), one ``@breaker_guarded``
    decorated, or one already made; any other raises :class:`ConfigurationError` with a
    "did you mean", unless ``create=True`` (a typo would otherwise become a breaker of
    its own, listed in health for ever and guarding nothing).

    ``storage_factory`` (opt-in) lets breakers share state across processes, on a Redis
    that is NOT the dependency they guard, with short timeouts::

        state = redis.Redis(host="breaker-state", socket_timeout=0.25,
                            socket_connect_timeout=0.25)
        storage_factory = lambda name: pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, state, namespace=name)

    State kept on the guarded server would hang with it (every call reads the state
    first) and the breaker would never open; ``configure()`` refuses it for the
    ``cache`` breaker (:class:`ConfigurationError`).
    """

    def __init__(
        self,
        config: BreakersConfig,
        *,
        clock: Clock = time.monotonic,
        storage_factory: StorageFactory | None = None,
        host_sharing: HostSharing | None = None,
    ) -> None:
        self.config = config
        # Opt-in ([common.circuit_breakers.host_sharing]): each breaker's channel to the
        # other processes of this host with the same settings.
        self.host_sharing = host_sharing
        self._clock = clock
        self._storage_factory = storage_factory
        self._breakers: dict[str, Breaker] = {}
        # Declared breaker -> the component whose config it takes without an entry of
        # its own (None: default_config, as any component).
        self._declared: dict[str, str | None] = {CACHE_BREAKER: None}
        self._lock = threading.Lock()
        new_lock_after_fork(self)

    def declare(self, name: str, *, like: str | None = None) -> None:
        """Make ``name`` known before its first use. ``like``: the component whose
        config it takes when ``component_configs`` has no entry for ``name`` (a cache's
        breaker takes the ``cache`` breaker's)."""
        _check_name(name)
        self._declared.setdefault(name, like)

    def known(self) -> set[str]:
        """Every name :meth:`get` hands out without ``create=True``."""
        return {*self.config.component_configs, *self._declared, *_guarded, *self._breakers}

    def config_of(self, name: str) -> BreakerConfig:
        """The config breaker ``name`` gets (see the class docstring)."""
        like = self._declared.get(name)
        if like is not None and name not in self.config.component_configs:
            return self.config.for_component(like)
        return self.config.for_component(name)

    def get(self, name: str, *, create: bool = False) -> Breaker:
        """The breaker called ``name`` (the same object every time). An unknown name
        raises :class:`ConfigurationError` unless ``create=True``."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        _check_name(name)
        if not create and name not in self.known():
            raise self._unknown(name)
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = Breaker(
                    name,
                    self.config_of(name),
                    enabled=self.config.enabled,
                    clock=self._clock,
                    storage=self._storage_factory(name) if self._storage_factory else None,
                    host=self._host_channel(name),
                )
                self._breakers[name] = breaker
            return breaker

    def _unknown(self, name: str) -> ConfigurationError:
        known = sorted(self.known())
        return ConfigurationError(
            "breaker",
            name,
            f"a breaker that is configured (common.circuit_breakers.component_configs), "
            f"guarded (@breaker_guarded) or a cache's{did_you_mean(name, known)}; known: "
            f"{', '.join(known)}. get_breaker(name, create=True) makes a new one",
        )

    def _host_channel(self, name: str) -> HostChannel | None:
        if self.host_sharing is None or not self.config.enabled:
            return None
        return self.host_sharing.channel(name)

    def close(self) -> None:
        """Leave the host's sharing channels (nothing else holds resources)."""
        if self.host_sharing is not None:
            self.host_sharing.close()

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[Breaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def names(self) -> list[str]:
        """Names of the breakers created so far, sorted."""
        return sorted(self._breakers)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Metrics of every breaker, by name."""
        return {name: self._breakers[name].metrics() for name in self.names()}

    def reset_all(self) -> None:
        """Close every breaker (tests, maintenance)."""
        for breaker in self:
            breaker.reset()


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a breaker name must be a non-empty string, not {name!r}")

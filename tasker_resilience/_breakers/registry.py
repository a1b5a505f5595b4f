"""Name -> Breaker, one per name, configured from ``[common.circuit_breakers]``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker

from tasker_resilience._breakers.breaker import Breaker, Clock
from tasker_resilience._config.schema import BreakersConfig
from tasker_resilience._forks import new_lock_after_fork

__all__ = ["BreakerRegistry", "StorageFactory"]

StorageFactory = Callable[[str], pybreaker.CircuitBreakerStorage]


class BreakerRegistry:
    """Hands out one :class:`Breaker` per name, created on first use.

    ``component_configs.<name>`` configures a breaker; any other name gets
    ``default_config``. ``storage_factory`` (opt-in) lets breakers share state across
    processes, on a Redis that is NOT the dependency they guard, with short timeouts::

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
    ) -> None:
        self.config = config
        self._clock = clock
        self._storage_factory = storage_factory
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()
        new_lock_after_fork(self)

    def get(self, name: str) -> Breaker:
        """The breaker called ``name`` (the same object every time)."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a breaker name must be a non-empty string, not {name!r}")
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = Breaker(
                    name,
                    self.config.for_component(name),
                    enabled=self.config.enabled,
                    clock=self._clock,
                    storage=self._storage_factory(name) if self._storage_factory else None,
                )
                self._breakers[name] = breaker
            return breaker

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

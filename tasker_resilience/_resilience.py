"""The per-process object that ties settings, breakers and the cache together."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

from tasker_resilience._breakers.breaker import Breaker, Clock
from tasker_resilience._breakers.registry import BreakerRegistry, StorageFactory
from tasker_resilience._cache.backends.contract import (
    BackendFactory,
    import_plugins,
    known_backend_names,
)
from tasker_resilience._config.layers import LoadedSettings, load_settings
from tasker_resilience._config.schema import (
    PLUGINS_KEY,
    Settings,
    parse_settings,
    plugin_modules,
)
from tasker_resilience._errors import ConfigurationError
from tasker_resilience._forks import after_fork_in_child

if TYPE_CHECKING:
    from tasker_resilience._cache.provider import CacheProvider

__all__ = [
    "Resilience",
    "configure",
    "current",
    "get_breaker",
    "install_current",
    "load_validated",
    "reset_current",
]


class Resilience:
    """Settings, the breaker registry and the cache provider of one process.

    Build it with :func:`configure`; decorators find the process-wide one through
    :func:`current`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        storage_factory: StorageFactory | None = None,
        sources: Mapping[str, str] | None = None,
        backend_factory: BackendFactory | None = None,
    ) -> None:
        self.settings = settings
        self.sources: Mapping[str, str] = dict(sources or {})
        """Dotted setting key -> the layer that set it (for ``tasker-resilience config``)."""
        self.clock = clock
        self.breakers = BreakerRegistry(
            settings.circuit_breakers, clock=clock, storage_factory=storage_factory
        )
        # Configured components exist from the start, so health lists them before
        # their first call.
        for name in settings.circuit_breakers.component_configs:
            self.breakers.get(name)
        self._cache: CacheProvider | None = None
        self._cache_lock = threading.Lock()
        after_fork_in_child(self, _renew_cache_lock)
        # None: the factory registered for settings.cache.backend (tests inject fakes).
        self._backend_factory = backend_factory

    @property
    def cache(self) -> CacheProvider:
        """The breaker-guarded cache (built on first use; ``configure()`` builds it)."""
        cache = self._cache
        if cache is None:
            with self._cache_lock:
                if self._cache is None:
                    from tasker_resilience._cache.provider import CacheProvider

                    self._cache = CacheProvider.from_config(
                        self.settings.cache,
                        self.breakers,
                        factory=self._backend_factory,
                        clock=self.clock,
                    )
                cache = self._cache
        return cache

    def health(self) -> dict[str, Any]:
        """The JSON-ready health report (see the guide, "Health")."""
        from tasker_resilience._operations.health import build_health

        return build_health(self)

    def close(self) -> None:
        """Release connections held by the cache."""
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def __repr__(self) -> str:
        return (
            f"<Resilience env={self.settings.env!r} cache={self.settings.cache.backend!r} "
            f"breakers={self.breakers.names()}>"
        )


_current: Resilience | None = None
_current_lock = threading.RLock()


def _renew_cache_lock(resilience: Resilience) -> None:
    resilience._cache_lock = threading.Lock()  # in a forked child (see _forks.py)


def _renew_current_lock(module: Any) -> None:
    module._current_lock = threading.RLock()


after_fork_in_child(sys.modules[__name__], _renew_current_lock)


def load_validated(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    root: str | PathLike[str] | None = None,
) -> tuple[LoadedSettings, Settings]:
    """Read the layered settings, import the ``common.cache.plugins`` modules (their
    backends become known names), and validate. Raises :class:`ConfigurationError`."""
    loaded = load_settings(env, overrides, root=root)
    import_plugins(plugin_modules(loaded.data), setting=PLUGINS_KEY)
    try:
        settings = parse_settings(loaded.data, env=loaded.env, known_backends=known_backend_names())
    except ConfigurationError as exc:
        raise _with_source(exc, loaded.sources) from None
    return loaded, settings


def _with_source(exc: ConfigurationError, sources: Mapping[str, str]) -> ConfigurationError:
    """``exc`` naming the environment variable that set its key, when one did: a
    variable is easier to find from its own name than from the dotted key."""
    prefix = exc.key + "."
    for key, layer in sources.items():
        if layer == "environment" and (key == exc.key or key.startswith(prefix)):
            variable = "TASKER_" + key.upper().replace(".", "__")
            return ConfigurationError(
                exc.key, exc.value, f"{exc.allowed} (set by the environment variable {variable})"
            )
    return exc


def configure(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    root: str | PathLike[str] | None = None,
    clock: Clock | None = None,
    storage_factory: StorageFactory | None = None,
    install: bool = True,
) -> Resilience:
    """Read the layered settings, validate them, and build the process-wide :class:`Resilience`.

    ``env`` defaults to ``$TASKER_ENV`` then ``development``; ``overrides`` is deep-merged
    over every layer; ``root`` is where ``config/tasker`` and ``settings.toml`` live
    (default ``$TASKER_CONFIG_ROOT``, else the working directory); ``clock`` replaces
    ``time.monotonic`` for breaker timing (tests). With ``install=False`` the result is
    returned without replacing the process-wide one. The modules listed in
    ``common.cache.plugins`` are imported first, so the backends they register are known.

    Raises :class:`ConfigurationError` naming the key, the value and what is allowed.
    """
    loaded, settings = load_validated(env, overrides, root=root)
    resilience = Resilience(
        settings,
        clock=clock or time.monotonic,
        storage_factory=storage_factory,
        sources=loaded.sources,
    )
    resilience.cache  # noqa: B018  # build now: start-up state is decided (and logged) here
    if install:
        install_current(resilience)
    return resilience


def install_current(resilience: Resilience) -> None:
    """Make ``resilience`` the process-wide one, closing the one it replaces."""
    global _current
    with _current_lock:
        previous, _current = _current, resilience
    if previous is not None and previous is not resilience:
        old_cache, new_cache = previous._cache, resilience._cache
        if old_cache is not None and new_cache is not None:
            # Invalidations the old cache could not apply (an outage) must survive a
            # reconfiguration, or the recovered cache serves what they removed.
            new_cache.adopt_invalidations(old_cache)
        previous.close()


def current() -> Resilience:
    """The process-wide :class:`Resilience`, configured from the defaults on first use."""
    resilience = _current
    if resilience is None:
        with _current_lock:
            if _current is None:
                configure()
            resilience = _current
            assert resilience is not None
    return resilience


def reset_current() -> None:
    """Forget (and close) the process-wide :class:`Resilience`."""
    global _current
    with _current_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.close()


def get_breaker(name: str) -> Breaker:
    """The breaker ``name`` of the process-wide :class:`Resilience`."""
    return current().breakers.get(name)

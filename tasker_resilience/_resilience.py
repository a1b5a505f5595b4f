"""The per-process object that ties settings, breakers and the cache together."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from os import PathLike
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tasker_resilience._breakers.breaker import Breaker, Clock
from tasker_resilience._breakers.host_sharing import HostSharing, settings_scope
from tasker_resilience._breakers.registry import BreakerRegistry, StorageFactory
from tasker_resilience._cache.backends.contract import (
    BackendFactory,
    import_plugins,
    known_backend_names,
)
from tasker_resilience._config.layers import LoadedSettings, load_settings
from tasker_resilience._config.schema import (
    CACHE_BREAKER,
    DEFAULT_CACHE,
    PLUGINS_KEY,
    Settings,
    cache_breaker_name,
    parse_settings,
    plugin_modules,
)
from tasker_resilience._config.suggest import did_you_mean
from tasker_resilience._errors import ConfigurationError
from tasker_resilience._forks import after_fork_in_child

if TYPE_CHECKING:
    from tasker_resilience._cache.provider import CacheProvider

__all__ = [
    "Resilience",
    "configure",
    "configure_loaded",
    "current",
    "get_breaker",
    "get_cache",
    "install_current",
    "load_validated",
    "reset_current",
]


class Resilience:
    """Settings, the breaker registry and the caches of one process.

    Build it with :func:`configure`; decorators find the process-wide one through
    :func:`current`. Each cache (``default`` from ``[common.cache]``, one per
    ``[common.caches.<name>]``, and those integrations attach) has a provider, a
    breaker, a replay list and a near tier of its own; they share nothing but the
    settings they were read from.
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
            settings.circuit_breakers,
            clock=clock,
            storage_factory=storage_factory,
            host_sharing=_host_sharing(settings),
        )
        for name in settings.caches:
            if name != DEFAULT_CACHE:
                # Known before first use; without an entry of its own it takes the
                # `cache` breaker's config.
                self.breakers.declare(cache_breaker_name(name), like=CACHE_BREAKER)
        # Configured components exist from the start, so health lists them before
        # their first call.
        for name in settings.circuit_breakers.component_configs:
            self.breakers.get(name)
        # The default cache, also in _caches: @cached's hot path reads this attribute.
        self._cache: CacheProvider | None = None
        self._caches: dict[str, CacheProvider] = {}
        self._cache_lock = threading.Lock()
        after_fork_in_child(self, _renew_cache_lock)
        # None: the factory registered for settings.cache.backend (tests inject fakes).
        # Only the default cache uses an injected factory.
        self._backend_factory = backend_factory

    @property
    def cache(self) -> CacheProvider:
        """The ``default`` cache (``[common.cache]``), built on first use;
        ``configure()`` builds it."""
        cache = self._cache
        return self.get_cache(DEFAULT_CACHE) if cache is None else cache

    def get_cache(self, name: str = DEFAULT_CACHE) -> CacheProvider:
        """The cache called ``name``: ``default`` or a ``[common.caches.<name>]`` one
        (built on first use), or one an integration attached. An unknown name raises
        :class:`ConfigurationError` with a "did you mean"."""
        cache = self._caches.get(name)
        if cache is not None:
            return cache
        config = self.settings.caches.get(name)
        if config is None:
            raise self.unknown_cache(name)
        with self._cache_lock:
            cache = self._caches.get(name)
            if cache is None:
                from tasker_resilience._cache.provider import CacheProvider

                cache = CacheProvider.from_config(
                    config,
                    self.breakers,
                    factory=self._backend_factory if name == DEFAULT_CACHE else None,
                    clock=self.clock,
                    breaker_name=cache_breaker_name(name),
                    name=name,
                )
                self._caches[name] = cache
                if name == DEFAULT_CACHE:
                    self._cache = cache
        return cache

    def cache_names(self) -> list[str]:
        """Every cache name: ``default`` first, then the others (configured and
        attached) sorted."""
        names = {*self.settings.caches, *self._caches} - {DEFAULT_CACHE}
        return [DEFAULT_CACHE, *sorted(names)]

    @property
    def caches(self) -> Mapping[str, CacheProvider]:
        """Every cache by name, in :meth:`cache_names` order (builds configured caches
        not used yet)."""
        return MappingProxyType({name: self.get_cache(name) for name in self.cache_names()})

    def built_caches(self) -> dict[str, CacheProvider]:
        """The caches built so far, by name (nothing is built here)."""
        return dict(self._caches)

    def attach_cache(self, name: str, provider: CacheProvider) -> None:
        """Add a cache built outside the settings (an integration's: Django's
        ``CACHES`` aliases) under ``name``: health, metrics, :meth:`close` and
        reconfiguration see it like the configured ones. A cache it replaces under the
        same name is closed."""
        if name in self.settings.caches:
            raise ConfigurationError(
                "cache", name, "a name no configured cache has ([common.caches.<name>])"
            )
        provider.name = name
        with self._cache_lock:
            previous = self._caches.get(name)
            self._caches[name] = provider
        if previous is not None and previous is not provider:
            previous.close()

    def unknown_cache(self, name: object) -> ConfigurationError:
        """The error for a cache name nobody configured."""
        names = self.cache_names()
        return ConfigurationError(
            "cache",
            name,
            f"a configured cache{did_you_mean(str(name), names)}; configured: {', '.join(names)} "
            "(default is [common.cache], the others [common.caches.<name>])",
        )

    def health(self) -> dict[str, Any]:
        """The JSON-ready health report (see the guide, "Health")."""
        from tasker_resilience._operations.health import build_health

        return build_health(self)

    def close(self) -> None:
        """Release connections held by every cache."""
        with self._cache_lock:
            caches, self._caches, self._cache = self._caches, {}, None
        for cache in caches.values():
            cache.close()
        self.breakers.close()

    def __repr__(self) -> str:
        return (
            f"<Resilience env={self.settings.env!r} cache={self.settings.cache.backend!r} "
            f"caches={self.cache_names()} breakers={self.breakers.names()}>"
        )


def _host_sharing(settings: Settings) -> HostSharing | None:
    """The host-sharing channels (opt-in), scoped to these settings' cache identity; a
    named cache's breaker to that cache's own identity."""
    config = settings.circuit_breakers.host_sharing
    scopes = {
        cache_breaker_name(name): settings_scope(
            cache.key_prefix, cache.backend, cache.redis.url, config.scope
        )
        for name, cache in settings.caches.items()
    }
    return HostSharing.start(config, scopes[cache_breaker_name(DEFAULT_CACHE)], scopes)


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
    return configure_loaded(
        loaded, settings, clock=clock, storage_factory=storage_factory, install=install
    )


def configure_loaded(
    loaded: LoadedSettings,
    settings: Settings,
    *,
    clock: Clock | None = None,
    storage_factory: StorageFactory | None = None,
    install: bool = True,
) -> Resilience:
    """:func:`configure` from settings :func:`load_validated` has already read (the CLI
    reads them first to say which server it checks): they are not read again."""
    resilience = Resilience(
        settings,
        clock=clock or time.monotonic,
        storage_factory=storage_factory,
        sources=loaded.sources,
    )
    resilience.caches  # noqa: B018  # build now: start-up state is decided (and logged) here
    if install:
        install_current(resilience)
    return resilience


def install_current(resilience: Resilience) -> None:
    """Make ``resilience`` the process-wide one, closing the one it replaces."""
    global _current
    with _current_lock:
        previous, _current = _current, resilience
    if previous is not None and previous is not resilience:
        # Invalidations an old cache could not apply (an outage) must survive a
        # reconfiguration, or the recovered cache serves what they removed. Per name:
        # each cache replays its own, on its own server.
        for name, old_cache in previous.built_caches().items():
            waiting = old_cache.pending_invalidations()
            if not (waiting["pending"] or waiting["overflowed"]):
                continue
            if name in resilience.settings.caches or name in resilience.built_caches():
                resilience.get_cache(name).adopt_invalidations(old_cache)
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


def get_breaker(name: str, *, create: bool = False) -> Breaker:
    """The breaker ``name`` of the process-wide :class:`Resilience`.

    ``name`` must be known: configured under ``component_configs``, guarded by a
    ``@breaker_guarded`` somewhere, or a cache's breaker; any other name raises
    :class:`ConfigurationError` with a "did you mean", unless ``create=True``.
    """
    return current().breakers.get(name, create=create)


def get_cache(name: str = DEFAULT_CACHE) -> CacheProvider:
    """The cache ``name`` of the process-wide :class:`Resilience` (``default``:
    ``[common.cache]``; others: ``[common.caches.<name>]``)."""
    return current().get_cache(name)

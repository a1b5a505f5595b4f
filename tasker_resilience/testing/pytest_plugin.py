"""The pytest plugin of tasker-resilience, registered as the ``pytest11`` entry point
``tasker_resilience``: installed with the package, active in every pytest run of that
environment (``-p no:tasker_resilience`` turns it off).

Fixtures (all sync, so they serve ``def`` and ``async def`` tests alike):

``tasker_clock``
    a :class:`~tasker_resilience.testing.ManualClock` for the breakers.
``tasker_harness``
    :func:`~tasker_resilience.testing.configure_for_tests` with ``tasker_backend``,
    ``tasker_overrides`` and ``tasker_clock``: the process-wide Resilience your
    ``@cached`` and ``@breaker_guarded`` functions use during the test, with the outage
    switch (``down()``, ``up()``, ``outage()``) and ``advance()``.
``tasker_cache``
    ``tasker_harness.cache``, the breaker-guarded cache (fakeredis by default).
``tasker_backend``
    ``"fakeredis"``; override the fixture, or parametrize it
    (``@pytest.mark.parametrize("tasker_backend", ["fakeredis", "dragonfly"])``).
``tasker_overrides``
    ``{}``; settings deep-merged over the test defaults (override the fixture).
``tasker_reset``
    drops the process-wide Resilience and forgets backends the test registered, before
    and after the test; the fixtures above use it. Add it to ``usefixtures`` (or an
    autouse fixture) to isolate tests that call ``configure()`` themselves.

A test that configures the library from the settings during its run (``configure()``,
or a ``@cached`` function configuring it on first use) and so talks to the cache server
the settings name (a URL from a settings file, a variable or the built-in default, not
from ``overrides``) gets one :class:`RealCacheServerWarning` naming ``tasker_harness``:
without it, a test run writes to a shared server (``localhost:6379`` by default).

Only pytest is imported when the plugin loads; the package is imported by the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tasker_resilience._cache.provider import CacheProvider
    from tasker_resilience._resilience import Resilience
    from tasker_resilience.testing import FaultProxy, Harness, ManualClock

__all__ = [
    "RealCacheServerWarning",
    "pytest_runtest_call",
    "tasker_backend",
    "tasker_cache",
    "tasker_clock",
    "tasker_harness",
    "tasker_overrides",
    "tasker_reset",
]


@pytest.fixture
def tasker_reset() -> Iterator[None]:
    """No process-wide Resilience and no extra registered backends before or after."""
    from tasker_resilience._cache.backends.contract import registrations_restored
    from tasker_resilience.testing import reset

    with registrations_restored():
        reset()
        yield
        reset()


@pytest.fixture
def tasker_clock() -> ManualClock:
    """A monotonic clock for the breakers that moves only with ``advance(seconds)``."""
    from tasker_resilience.testing import ManualClock

    return ManualClock()


@pytest.fixture
def tasker_backend() -> str:
    """The cache ``tasker_harness`` builds: a name :func:`configure_for_tests` takes."""
    return "fakeredis"


@pytest.fixture
def tasker_overrides() -> Mapping[str, Any]:
    """Settings deep-merged over the test defaults, e.g. ``{"common": {"cache": {...}}}``."""
    return {}


@pytest.fixture
def tasker_harness(
    tasker_reset: None,
    tasker_backend: str,
    tasker_overrides: Mapping[str, Any],
    tasker_clock: ManualClock,
) -> Iterator[Harness]:
    """The configured, process-wide Resilience of this test, with the outage switch."""
    from tasker_resilience.testing import configure_for_tests

    harness = configure_for_tests(tasker_overrides, backend=tasker_backend, clock=tasker_clock)
    yield harness
    if harness.server is not None:
        harness.up()  # a test that ends inside an outage leaves no trace


@pytest.fixture
def tasker_cache(tasker_harness: Harness) -> CacheProvider:
    """The breaker-guarded cache of ``tasker_harness``."""
    return tasker_harness.cache


class RealCacheServerWarning(UserWarning):
    """A test talked to the cache server named in the settings instead of a test cache."""


def _settings_servers(res: Resilience) -> list[str]:
    """The distributed caches of ``res`` whose URL the settings chose (a file, a
    variable or the built-in default): each as ``key -> redacted URL``. A URL passed in
    ``overrides`` was chosen by the test itself, on purpose."""
    from tasker_resilience._config.schema import DEFAULT_CACHE
    from tasker_resilience.testing._harness import Harness

    if isinstance(res, Harness):
        return []
    servers = []
    for name, cache in res.built_caches().items():
        config = res.settings.caches.get(name)
        if config is None or not cache.distributed:
            continue  # attached by an integration, or in-process
        key = ("common.cache" if name == DEFAULT_CACHE else f"common.caches.{name}") + ".redis.url"
        if res.sources.get(key) != "overrides":
            servers.append(f"{config.redis.redacted_url} ({key})")
    return servers


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Warn once for a test that configured the library from the settings and so talks
    to their real cache server (see the module docstring)."""
    from tasker_resilience import _resilience

    before = _resilience._current
    try:
        return (yield)
    finally:
        after = _resilience._current
        if after is not None and after is not before:
            servers = _settings_servers(after)
            if servers:
                item.warn(
                    RealCacheServerWarning(
                        f"this test talks to the settings' cache server {', '.join(servers)}: "
                        "use the tasker_harness fixture (or configure_for_tests()) so tests "
                        "get a cache of their own and never write to a shared server"
                    )
                )


# --- the fault proxy (tasker_resilience.testing.FaultProxy) -----------------------------

__all__ += ["tasker_fault_proxy"]


@pytest.fixture
def tasker_fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Start a :class:`~tasker_resilience.testing.FaultProxy` in front of a server:
    ``tasker_fault_proxy("redis://127.0.0.1:6379/0")`` returns it started (keyword
    arguments as for ``FaultProxy``); every proxy the test started is stopped after it::

        def test_a_slow_cache_is_skipped(tasker_fault_proxy):
            proxy = tasker_fault_proxy(my_redis_url)
            proxy.latency(0.12, fraction=0.6)
            ...  # point your cache at proxy.url
    """
    from tasker_resilience.testing import FaultProxy

    started: list[FaultProxy] = []

    def start(target: str | tuple[str, int], **options: Any) -> FaultProxy:
        proxy = FaultProxy(target, **options).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()

"""The backend contract: registering a user's backend, and the in-process async mixin."""

from __future__ import annotations

import fnmatch
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasker_resilience as tr
from tasker_resilience._cache.backends.contract import (
    backend_factory,
    known_backend_names,
    unregister_backend,
)
from tasker_resilience._config.schema import CacheConfig
from tasker_resilience.testing import configure_for_tests


class DictBackend(tr.InProcessAsyncMixin):
    """A user's in-process backend: sync methods only, async twins from the mixin."""

    distributed = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: dict[str, bytes] = {}
        self.closed = False

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def delete_pattern(self, pattern: str) -> int:
        doomed = [key for key in self.data if fnmatch.fnmatchcase(key, pattern)]
        for key in doomed:
            del self.data[key]
        return len(doomed)

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_backend_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError)


@pytest.fixture
def registered() -> Iterator[list[DictBackend]]:
    built: list[DictBackend] = []

    def factory(config: CacheConfig) -> DictBackend:
        backend = DictBackend(config.backend)
        built.append(backend)
        return backend

    tr.register_backend("dictstore", factory)
    yield built
    unregister_backend("dictstore")


def test_mixin_backend_satisfies_the_contract() -> None:
    assert isinstance(DictBackend("x"), tr.CacheBackend)


async def test_registered_backend_is_configurable_by_name(registered: list[DictBackend]) -> None:
    res = configure_for_tests({"common": {"cache": {"backend": "DictStore"}}})
    assert res.cache.backend_name == "dictstore"
    await res.cache.aset("k", {"v": 1})
    assert await res.cache.aget("k") == {"v": 1}
    assert res.cache.get("k") == {"v": 1}
    assert await res.cache.adelete_pattern("*") == 1
    assert await res.cache.ahealth_check() is True
    await res.cache.aclose()
    assert registered[0].closed


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(LookupError, match=r"unknown cache backend 'nope'; known: .*memory"):
        backend_factory("nope")


@pytest.mark.parametrize("name", ["redis", "dragonfly", "memory", "noop"])
def test_built_in_names_are_replaced_only_when_asked(name: str) -> None:
    with pytest.raises(ValueError, match=r"built-in backend name.*replace=True"):
        tr.register_backend(name, DictBackend)  # type: ignore[arg-type]
    builtin = backend_factory(name)
    tr.register_backend(name, DictBackend, replace=True)  # type: ignore[arg-type]
    try:
        assert backend_factory(name) is DictBackend
        assert name in known_backend_names()
    finally:
        tr.unregister_backend(name)
    # Unregistering a replacement brings the built-in back.
    assert backend_factory(name) == builtin


def test_replaced_built_in_is_what_configure_builds() -> None:
    built: list[DictBackend] = []

    def factory(config: CacheConfig) -> DictBackend:
        built.append(DictBackend(config.backend))
        return built[-1]

    tr.register_backend("noop", factory, replace=True)
    try:
        res = configure_for_tests({"common": {"cache": {"backend": "noop"}}})
        res.cache.set("k", [1])
        assert res.cache.backend is built[0]
        assert list(built[0].data) == ["tasker-test:k"]
        assert res.cache.get("k") == [1]
    finally:
        tr.unregister_backend("noop")


def test_a_registered_name_is_not_silently_taken_over(registered: list[DictBackend]) -> None:
    def other(config: CacheConfig) -> DictBackend:
        return DictBackend("other")

    with pytest.raises(ValueError, match=r"'dictstore' is already registered.*replace=True"):
        tr.register_backend("dictstore", other)
    tr.register_backend("DictStore", other, replace=True)
    assert backend_factory("dictstore") is other


def test_registering_the_same_factory_again_is_harmless() -> None:
    tr.register_backend("twice", DictBackend)  # type: ignore[arg-type]
    try:
        tr.register_backend("twice", DictBackend)  # type: ignore[arg-type]  # a re-import
        assert backend_factory("twice") is DictBackend
    finally:
        tr.unregister_backend("twice")


def test_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        tr.register_backend("broken", "not a factory")  # type: ignore[arg-type]


# --- common.cache.plugins: modules that register backends, imported before validation ---------


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module on sys.path that registers the ``pluggedstore`` backend when imported."""
    name = f"plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import tasker_resilience as tr
            from tasker_resilience._cache.backends.memory_backend import MemoryBackend

            tr.register_backend(
                "pluggedstore", lambda config: MemoryBackend(10, name=config.backend)
            )
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    tr.unregister_backend("pluggedstore")
    sys.modules.pop(name, None)


def test_plugins_are_imported_before_the_backend_name_is_checked(plugin_module: str) -> None:
    assert "pluggedstore" not in known_backend_names()
    res = configure_for_tests(
        {"common": {"cache": {"backend": "pluggedstore", "plugins": [plugin_module]}}}
    )
    assert res.settings.cache.plugins == (plugin_module,)
    assert res.cache.backend_name == "pluggedstore"
    res.cache.set("k", "v")
    assert res.cache.get("k") == "v"


def test_plugins_from_an_environment_variable(
    plugin_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One string, comma-separated: what fits in TASKER_COMMON__CACHE__PLUGINS.
    monkeypatch.setenv("TASKER_COMMON__CACHE__PLUGINS", f"{plugin_module}, json")
    monkeypatch.setenv("TASKER_COMMON__CACHE__BACKEND", "pluggedstore")
    res = tr.configure(env="test")
    assert res.settings.cache.plugins == (plugin_module, "json")
    assert res.cache.backend_name == "pluggedstore"


def test_a_plugin_that_fails_to_import_is_named() -> None:
    with pytest.raises(tr.ConfigurationError) as caught:
        configure_for_tests({"common": {"cache": {"plugins": ["json", "myapp_missing.cache"]}}})
    message = str(caught.value)
    assert caught.value.key == "common.cache.plugins"
    assert caught.value.value == "myapp_missing.cache"
    assert "ModuleNotFoundError" in message
    assert "myapp_missing" in message


def test_a_plugin_that_raises_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        tr.ConfigurationError, match=r"'broken_plugin_mod'.*RuntimeError: no config"
    ):
        configure_for_tests({"common": {"cache": {"plugins": ["broken_plugin_mod"]}}})
    sys.modules.pop("broken_plugin_mod", None)


@pytest.mark.parametrize("value", [5, ["ok", 3], ["not a module"], [""], {"a": 1}])
def test_plugins_must_be_module_names(value: object) -> None:
    with pytest.raises(tr.ConfigurationError, match=r"common\.cache\.plugins.*module names"):
        configure_for_tests({"common": {"cache": {"plugins": value}}})


# --- entry points: found without any import, after code registrations and built-ins ---------


@pytest.fixture
def entry_point_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution (a .dist-info on sys.path) whose entry point names
    ``epstore`` (and tries to take ``redis``, which a built-in keeps)."""
    module = f"ep_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from tasker_resilience._cache.backends.memory_backend import MemoryBackend

            def build(config):
                return MemoryBackend(10, name=config.backend)
            """
        ),
        encoding="utf-8",
    )
    info = tmp_path / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[tasker_resilience.cache_backends]\nepstore = {module}:build\nredis = {module}:build\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_entry_point_backends_keep_working(entry_point_distribution: str) -> None:
    assert "epstore" in known_backend_names()
    res = configure_for_tests({"common": {"cache": {"backend": "epstore"}}})
    assert res.cache.backend_name == "epstore"
    res.cache.set("k", 1)
    assert res.cache.get("k") == 1
    # A built-in name is not taken over by an entry point; a code registration wins over both.
    redis_backend = backend_factory("redis")(CacheConfig(backend="redis"))
    assert type(redis_backend).__name__ == "RedisBackend"
    redis_backend.close()
    assert backend_factory("epstore").__module__ == entry_point_distribution
    tr.register_backend("epstore", DictBackend)  # type: ignore[arg-type]
    try:
        assert backend_factory("epstore") is DictBackend
    finally:
        tr.unregister_backend("epstore")

"""The backend contract: registering a user's backend, and the in-process async mixin."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import pytest

import tasker_resilience as tr
from tasker_resilience._cache.backends.contract import backend_factory, unregister_backend
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
def test_built_in_names_cannot_be_replaced(name: str) -> None:
    with pytest.raises(ValueError, match="built-in backend name"):
        tr.register_backend(name, DictBackend)  # type: ignore[arg-type]


def test_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        tr.register_backend("broken", "not a factory")  # type: ignore[arg-type]

"""Our backend keeps the whole contract: the shipped conformance suite, in a few lines."""

from __future__ import annotations

import pytest
from quotes.dict_backend import DictBackend

import tasker_resilience as tr
from tasker_resilience.testing import BackendConformance, configure_for_tests


class TestDictBackend(BackendConformance):
    expect_distributed = False

    @pytest.fixture
    def make_backend(self) -> DictBackend:
        return DictBackend()


def test_configured_by_name_through_the_plugins_setting(tasker_reset: None) -> None:
    res = configure_for_tests(
        {"common": {"cache": {"backend": "quotes-dict", "plugins": ["quotes.dict_backend"]}}}
    )
    assert isinstance(res.cache.backend, DictBackend)
    res.cache.set("k", {"a": 1})
    assert res.cache.get("k") == {"a": 1}


def test_a_missing_plugin_module_is_named(tasker_reset: None) -> None:
    with pytest.raises(tr.ConfigurationError, match=r"quotes\.nope"):
        configure_for_tests({"common": {"cache": {"plugins": ["quotes.nope"]}}})

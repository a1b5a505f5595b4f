"""Two distinct functions never share ``@cached`` results; only an explicit ``key=`` may
make them. Keys stay the same in every process running the same code.

Closures made by one factory and lambdas in one module share ``module.qualname``: what
tells them apart is the definition site and the values a closure captures.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience.testing import configure_for_tests
from tests.package_python import run_python

FACTORIES = """
import functools

import tasker_resilience as tr

RATES = {"eur": 0.92, "usd": 1.0}


def converter(currency):
    rate = RATES[currency]

    @tr.cached(namespace="fx")
    def convert(amount):
        return round(amount * rate, 2)

    return convert


eur = converter("eur")
usd = converter("usd")

double = tr.cached()(lambda x: 2 * x)
triple = tr.cached()(lambda x: 3 * x)
pair = (tr.cached()(lambda x: x + 1), tr.cached()(lambda x: x - 1))


def scale(factor, x):
    return factor * x


by_two = tr.cached()(functools.partial(scale, 2))
by_ten = tr.cached()(functools.partial(scale, factor=10))


def keys():
    return [
        eur.cache_key(1000),
        usd.cache_key(1000),
        double.cache_key(5),
        triple.cache_key(5),
        pair[0].cache_key(5),
        pair[1].cache_key(5),
        by_two.cache_key(x=3),
        by_ten.cache_key(x=3),
    ]
"""


@pytest.fixture
def factories(tmp_path: Path) -> Iterator[ModuleType]:
    (tmp_path / "fx_factories.py").write_text(FACTORIES, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("fx_factories", tmp_path / "fx_factories.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fx_factories"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["fx_factories"]


def test_closures_from_one_factory_never_share_results(factories: ModuleType) -> None:
    configure_for_tests()
    assert factories.eur(1000) == 920
    assert factories.usd(1000) == 1000
    assert factories.eur(1000) == 920  # a hit of its own entry, not usd's
    assert factories.eur.cache_key(1000) != factories.usd.cache_key(1000)


def test_lambdas_in_one_module_never_share_results(factories: ModuleType) -> None:
    configure_for_tests()
    assert factories.double(5) == 10
    assert factories.triple(5) == 15
    assert factories.pair[0](5) == 6
    assert factories.pair[1](5) == 4  # two lambdas on one line


def test_partials_are_keyed_by_their_arguments_without_addresses(
    factories: ModuleType,
) -> None:
    configure_for_tests()
    assert factories.by_two(x=3) == 6
    assert factories.by_ten(x=3) == 30
    key = factories.by_two.cache_key(x=3)
    assert "object at" not in key
    assert "0x" not in key


def test_keys_are_the_same_in_another_process(factories: ModuleType, tmp_path: Path) -> None:
    configure_for_tests()
    here = factories.keys()
    assert len(set(here)) == len(here)  # eight functions, eight keys
    script = "import json, fx_factories; print(json.dumps(fx_factories.keys()))"
    result = run_python("-c", script, cwd=tmp_path, TASKER_COMMON__CACHE__BACKEND="memory")
    assert result.returncode == 0, result.stderr

    # The same keys after key_prefix (this process's test settings set another prefix).
    assert [key.split(":", 1)[1] for key in json.loads(result.stdout)] == [
        key.split(":", 1)[1] for key in here
    ]


def test_a_closure_over_a_value_that_cannot_be_encoded_is_refused_when_decorated() -> None:
    lock = threading.Lock()

    def factory() -> Any:
        @tr.cached()
        def guarded(x: int) -> int:
            with lock:
                return x

        return guarded

    with pytest.raises(TypeError) as info:
        factory()
    message = str(info.value)
    assert "lock" in message
    assert "key=" in message
    assert "namespace=" in message


def test_only_an_explicit_key_makes_two_closures_share() -> None:
    configure_for_tests()
    calls: list[str] = []

    def factory(label: str, lock: Any) -> Any:
        @tr.cached(namespace="shared", key=lambda x: f"item-{x}")
        def item(x: int) -> str:
            with lock:
                calls.append(label)
                return label

        return item

    first, second = factory("a", threading.Lock()), factory("b", threading.Lock())
    assert first(1) == "a"
    assert second(1) == "a"  # shared on purpose, through key=
    assert calls == ["a"]


def test_a_closure_capturing_a_helper_function_is_keyed_by_the_helper() -> None:
    configure_for_tests()

    def factory(rate: float) -> Any:
        def apply(x: float) -> float:
            return x * rate

        @tr.cached()
        def priced(x: float) -> float:
            return apply(x)

        return priced

    assert factory(2.0)(10.0) == 20.0
    assert factory(3.0)(10.0) == 30.0


def test_a_recursive_argument_raises_a_type_error_naming_it() -> None:
    configure_for_tests()

    @tr.cached()
    def f(label: str, items: Any) -> int:
        return len(items)

    looped: list[Any] = []
    looped.append(looped)
    nested: dict[str, Any] = {}
    nested["self"] = nested
    for value in (looped, nested, [looped]):
        with pytest.raises(TypeError) as info:
            f("x", value)
        assert "'items'" in str(info.value)
        assert not isinstance(info.value, RecursionError)


def test_cached_works_above_and_below_classmethod_and_staticmethod() -> None:
    class Prices:
        scale = 2

        @tr.cached()
        @classmethod
        def total(cls, amount: int) -> int:
            return amount * cls.scale

        @classmethod
        @tr.cached()
        def subtotal(cls, amount: int) -> int:
            return amount * cls.scale + 1

        @tr.cached()
        @staticmethod
        def tax(amount: int) -> int:
            return amount // 10

    configure_for_tests()
    assert Prices.total(5) == 10
    assert Prices.total(5) == 10
    assert Prices().total(6) == 12
    assert Prices.subtotal(5) == 11
    assert Prices.tax(50) == 5
    assert Prices().tax(50) == 5


def test_a_functools_partial_of_an_unencodable_value_is_refused() -> None:
    def apply(lock: Any, x: int) -> int:
        return x

    with pytest.raises(TypeError) as info:
        tr.cached()(functools.partial(apply, threading.Lock()))
    assert "key=" in str(info.value)


def test_keys_of_module_functions_and_methods_are_unchanged() -> None:
    """Only functions their name cannot tell apart get the site: existing entries of
    module-level functions and methods keep their keys across this change."""
    source = textwrap.dedent(
        """
        import tasker_resilience as tr

        @tr.cached(namespace="n")
        def plain(x):
            return x

        class Box:
            def __cache_key__(self):
                return "box"

            @tr.cached(namespace="n")
            def method(self, x):
                return super().__repr__()
        """
    )
    module = ModuleType("plain_module")
    exec(compile(source, "plain_module.py", "exec"), module.__dict__)
    configure_for_tests()
    assert module.plain.cache_key(1).split(":")[1:4] == ["n", "plain_module.plain", "1"]
    box_key = module.Box.method.cache_key(module.Box(), 1)
    assert box_key.split(":")[1:4] == ["n", "plain_module.Box.method", "1"]


def test_bound_methods_of_two_objects_never_share_results() -> None:
    configure_for_tests()

    class Rate:
        def __init__(self, rate: float) -> None:
            self.rate = rate

        def __cache_key__(self) -> float:
            return self.rate

        def apply(self, amount: float) -> float:
            return amount * self.rate

    half, double = tr.cached()(Rate(0.5).apply), tr.cached()(Rate(2.0).apply)
    assert half(10.0) == 5.0
    assert double(10.0) == 20.0

    class Opaque:
        def apply(self, amount: float) -> float:
            return amount

    with pytest.raises(TypeError, match="key="):
        tr.cached()(Opaque().apply)

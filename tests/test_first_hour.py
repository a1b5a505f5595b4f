"""What a new user tries in the first hour (issue 26): the forms people reach for first
work, and the errors point at the fix."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

import tasker_resilience as tr
from tasker_resilience.testing import Harness, configure_for_tests

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture
def fake() -> Harness:
    return configure_for_tests(backend="fakeredis")


# --- @cached without parentheses ---------------------------------------------------------------


@tr.cached  # decorated at import time, as people write it
def square(n: int) -> int:
    CALLS["square"] += 1
    return n * n


@tr.cached
async def asquare(n: int) -> int:
    CALLS["asquare"] += 1
    return n * n


class Prices:
    def __init__(self, currency: str) -> None:
        self.currency = currency

    def __cache_key__(self) -> str:
        return self.currency

    @tr.cached
    def price(self, sku: str) -> str:
        CALLS["price"] += 1
        return f"{sku}:{self.currency}"


def _ttl_of(harness: Harness, key: str) -> int:
    return int(harness.redis_client().ttl(key))


def test_bare_cached_caches_with_the_default_ttl(fake: Harness) -> None:
    assert [square(3), square(3)] == [9, 9]
    assert CALLS["square"] == 1
    assert square.original(3) == 9
    key = square.cache_key(3)
    assert key.startswith(f"{fake.cache.key_prefix}:default:")
    assert 0 < _ttl_of(fake, key) <= fake.cache.default_ttl_seconds
    assert _ttl_of(fake, key) > fake.cache.default_ttl_seconds - 60


async def test_bare_cached_on_an_async_function(fake: Harness) -> None:
    assert [await asquare(4), await asquare(4)] == [16, 16]
    assert CALLS["asquare"] == 1


def test_bare_cached_on_a_method(fake: Harness) -> None:
    eur, usd = Prices("EUR"), Prices("USD")
    assert [eur.price("a"), eur.price("a"), usd.price("a")] == ["a:EUR", "a:EUR", "a:USD"]
    assert CALLS["price"] == 2  # self is part of the key (its __cache_key__)
    assert Prices.price.invalidate(eur, "a") is None
    assert eur.price("a") == "a:EUR"
    assert CALLS["price"] == 3


# --- TTLs as timedelta -------------------------------------------------------------------------


def test_cached_ttl_takes_a_timedelta(fake: Harness) -> None:
    @tr.cached(ttl=timedelta(minutes=5))
    def hello(name: str) -> str:
        return f"hello {name}"

    hello("ann")
    assert 290 <= _ttl_of(fake, hello.cache_key("ann")) <= 300


async def test_set_and_aset_take_a_timedelta(fake: Harness) -> None:
    fake.cache.set("a", 1, ttl=timedelta(seconds=90))
    await fake.cache.aset("b", 2, ttl=timedelta(hours=1))
    assert 85 <= _ttl_of(fake, fake.cache.full_key("a")) <= 90
    assert 3590 <= _ttl_of(fake, fake.cache.full_key("b")) <= 3600


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_a_timedelta_ttl_is_checked_like_seconds(fake: Harness, ttl: timedelta) -> None:
    with pytest.raises(ValueError, match=r"greater than 0 .* not datetime\.timedelta"):
        fake.cache.set("a", 1, ttl=ttl)
    with pytest.raises(ValueError, match="@cached ttl must be"):
        tr.cached(ttl=ttl)


def test_a_wrong_ttl_type_says_what_is_accepted(fake: Harness) -> None:
    with pytest.raises(TypeError, match="a number of seconds or a timedelta, not '60'"):
        fake.cache.set("a", 1, ttl="60")  # type: ignore[arg-type]


# --- get(key, default=...) ---------------------------------------------------------------------


async def test_get_default_is_returned_on_a_miss_only(fake: Harness) -> None:
    cache = fake.cache
    assert cache.get("absent", default="d") == "d"
    assert await cache.aget("absent", default="d") == "d"
    assert cache.get("absent") is None
    cache.set("none", None)  # a stored None is a value, as with dict.get
    assert cache.get("none", default="d") is None
    assert await cache.aget("none", default="d") is None
    cache.set("zero", 0)
    assert cache.get("zero", default="d") == 0


async def test_get_default_while_the_cache_is_down_or_open(fake: Harness) -> None:
    fake.cache.set("k", "v")
    with fake.outage():
        assert fake.cache.get("k", default="d") == "d"  # a failing backend: a miss
        fake.breakers.get("cache").force_open()
        assert fake.cache.get("k", default="d") == "d"  # the open circuit: a miss
        assert await fake.cache.aget("k", default="d") == "d"


def test_get_default_on_the_memory_backend() -> None:
    cache = configure_for_tests().cache
    assert cache.get("absent", default=[]) == []
    cache.set("k", None)
    assert cache.get("k", default=[]) is None

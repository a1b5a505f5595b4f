"""What mypy infers for ``@cached`` functions and the cache's TTLs (checked by ``make lint``)."""

from __future__ import annotations

from datetime import timedelta

from typing_extensions import assert_type

import tasker_resilience as tr


@tr.cached(ttl=60, namespace="templates")
def render(name: str, *, locale: str = "en") -> str:
    return name


@tr.cached
def bare(n: int) -> list[int]:
    return [n]


@tr.cached(ttl=timedelta(minutes=5))
async def arender(name: str) -> str:
    return name


@tr.cached
async def abare(n: int) -> int:
    return n


class Catalog:
    @tr.cached
    def price(self, sku: str) -> float:
        return 1.0


async def check_calls(cache: tr.CacheProvider) -> None:
    assert_type(render("home", locale="fr"), str)
    assert_type(bare(1), list[int])
    assert_type(await arender("home"), str)
    assert_type(await abare(1), int)
    assert_type(Catalog().price("a"), float)
    assert_type(render.original("home"), str)
    render.invalidate("home", locale="fr")
    cache.set("k", 1, ttl=timedelta(seconds=30))
    await cache.aset("k", 1, ttl=30)
    cache.get("k", default=0)


# Negative checks: each line is an error, or mypy reports its ignore as unused.
def arguments_are_still_checked() -> None:
    render(1)  # type: ignore[arg-type]
    render("home", lang="fr")  # type: ignore[call-arg]
    bare("one")  # type: ignore[arg-type]
    render.invalidate(2)  # type: ignore[arg-type]


def ttl_is_seconds_or_a_timedelta() -> None:
    tr.cached(ttl="60")  # type: ignore[call-overload]

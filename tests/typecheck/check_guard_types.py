"""What mypy infers for calls through ``@breaker_guarded`` (checked by ``make lint``)."""

from __future__ import annotations

from typing_extensions import assert_type

import tasker_resilience as tr


@tr.breaker_guarded("pgmq")
def no_fallback(n: int) -> int:
    return n


@tr.breaker_guarded("pgmq", fallback=None)
def none_fallback(n: int) -> int:
    return n


@tr.breaker_guarded("pgmq", fallback=0)
def same_type_fallback(n: int) -> int:
    return n


@tr.breaker_guarded("pgmq", fallback="later")
def other_type_fallback(n: int) -> int:
    return n


def _zero(n: int) -> int:
    return 0


@tr.breaker_guarded("pgmq", fallback=_zero)
def callable_fallback(n: int) -> int:
    return n


@tr.breaker_guarded("pgmq")
async def async_no_fallback(n: int) -> int:
    return n


@tr.breaker_guarded("pgmq", fallback=None)
async def async_none_fallback(n: int) -> int:
    return n


@tr.breaker_guarded("pgmq", fallback=0)
async def async_same_type_fallback(n: int) -> int:
    return n


async def _azero(n: int) -> int:
    return 0


@tr.breaker_guarded("pgmq", fallback=_azero)
async def async_awaited_fallback(n: int) -> int:
    return n


class Queue:
    @tr.breaker_guarded("pgmq", fallback=None)
    def send(self, body: str) -> str:
        return body


async def check_calls() -> None:
    assert_type(no_fallback(1), int)
    assert_type(none_fallback(1), "int | None")
    assert_type(same_type_fallback(1), int)
    assert_type(other_type_fallback(1), "int | str")
    assert_type(callable_fallback(1), int)
    assert_type(await async_no_fallback(1), int)
    assert_type(await async_none_fallback(1), "int | None")
    assert_type(await async_same_type_fallback(1), int)
    assert_type(await async_awaited_fallback(1), int)
    assert_type(Queue().send("x"), "str | None")


# Negative checks: each line is an error, or mypy reports its ignore as unused.
def caller_must_handle_the_none() -> int:
    return none_fallback(1) + 1  # type: ignore[operator]


async def async_caller_must_handle_the_none() -> int:
    return await async_none_fallback(1) + 1  # type: ignore[operator]


def arguments_are_still_checked() -> None:
    none_fallback("one")  # type: ignore[arg-type]
    Queue().send(1)  # type: ignore[arg-type]


def record_takes_classes_or_predicates() -> None:
    tr.breaker_guarded("pgmq", record="notaclass")  # type: ignore[arg-type]
    tr.breaker_guarded("pgmq", record=ConnectionError)
    tr.breaker_guarded("pgmq", record=(ConnectionError, lambda exc: "503" in str(exc)))

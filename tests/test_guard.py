"""@breaker_guarded on plain and async functions and methods."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience.testing import ManualClock, configure_for_tests


class Unavailable(Exception):
    pass


# Decorated at import time, before any configure(): binds on first call.
@tr.breaker_guarded("pgmq")
def publish(queue: str, payload: dict[str, int]) -> str:
    """Publish a message."""
    if payload.get("fail"):
        raise Unavailable(queue)
    return f"{queue}:{payload['n']}"


@tr.breaker_guarded("pgmq", fallback=lambda queue, payload: f"deferred:{queue}")
async def apublish(queue: str, payload: dict[str, int]) -> str:
    await asyncio.sleep(0)
    if payload.get("fail"):
        raise Unavailable(queue)
    return f"{queue}:{payload['n']}"


def test_signature_and_metadata_are_preserved() -> None:
    assert publish.__name__ == "publish"
    assert publish.__doc__ == "Publish a message."
    assert str(inspect.signature(publish)) == "(queue: 'str', payload: 'dict[str, int]') -> 'str'"
    assert inspect.iscoroutinefunction(apublish)
    assert not inspect.iscoroutinefunction(publish)


def test_import_time_decoration_binds_to_the_configured_breaker(clock: ManualClock) -> None:
    res = configure_for_tests(clock=clock)  # pgmq: 3 failures, 1 s open
    assert publish("q", {"n": 1}) == "q:1"
    assert publish.breaker.get() is res.breakers.get("pgmq")  # type: ignore[attr-defined]
    assert tr.get_breaker("pgmq").metrics()["successful_calls"] == 1


def test_trip_reraises_the_original_then_rejects(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)
    for _ in range(2):
        with pytest.raises(Unavailable):
            publish("q", {"fail": 1})
    with pytest.raises(Unavailable):  # the tripping call: the real error
        publish("q", {"fail": 1})
    with pytest.raises(tr.CircuitOpenError) as info:
        publish("q", {"n": 2})
    assert info.value.breaker_name == "pgmq"
    assert info.value.retry_after_seconds == pytest.approx(1.0)
    clock.advance(1)
    assert publish("q", {"n": 3}) == "q:3"  # half-open probe; success_threshold 1
    assert tr.get_breaker("pgmq").state == "closed"


async def test_async_fallback_is_called_with_the_arguments(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)
    tr.get_breaker("pgmq").force_open()
    assert await apublish("orders", {"n": 1}) == "deferred:orders"


async def test_async_guard_counts_failures_and_trips(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await apublish("q", {"fail": 1})
    assert tr.get_breaker("pgmq").state == "open"
    assert await apublish("q", {"n": 1}) == "deferred:q"


async def test_awaitable_fallback_is_awaited(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)

    async def later(x: int) -> int:
        return -x

    @tr.breaker_guarded("readiness", fallback=later)
    async def check(x: int) -> int:
        return x

    check.breaker.force_open()  # type: ignore[attr-defined]
    assert await check(5) == -5


def test_plain_value_fallback(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)

    @tr.breaker_guarded("task_readiness", fallback=False)
    def ready() -> bool:
        return True

    assert ready() is True
    ready.breaker.force_open()  # type: ignore[attr-defined]
    assert ready() is False


def test_methods_are_guarded_and_bound(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)

    class Queue:
        def __init__(self, name: str) -> None:
            self.name = name

        @tr.breaker_guarded("pgmq", fallback=None)
        def send(self, body: str) -> str:
            return f"{self.name}<-{body}"

    queue = Queue("jobs")
    assert queue.send("x") == "jobs<-x"
    assert queue.send.breaker.name == "pgmq"  # type: ignore[attr-defined]
    tr.get_breaker("pgmq").force_open()
    assert queue.send("y") is None


def test_record_and_ignore_per_function(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)

    @tr.breaker_guarded("search", ignore=[KeyError])
    def lookup(key: str) -> str:
        raise KeyError(key)

    for _ in range(10):
        with pytest.raises(KeyError):
            lookup("missing")
    assert lookup.breaker.state == "closed"  # type: ignore[attr-defined]


def test_reconfigure_rebinds_the_wrapper(clock: ManualClock) -> None:
    first = configure_for_tests(clock=clock)
    publish("q", {"n": 1})
    second = configure_for_tests(clock=clock)
    publish("q", {"n": 1})
    assert first.breakers.get("pgmq").metrics()["successful_calls"] == 1
    assert second.breakers.get("pgmq").metrics()["successful_calls"] == 1


def test_guard_holds_no_lock_across_calls(clock: ManualClock) -> None:
    import threading

    configure_for_tests(clock=clock)

    @tr.breaker_guarded("slow")
    def slow() -> None:
        time.sleep(0.1)

    start = time.perf_counter()
    threads = [threading.Thread(target=slow) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - start < 0.8


def test_bad_names_are_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match="needs a breaker name"):
        tr.breaker_guarded("")


def test_a_rejection_answered_by_the_fallback_builds_no_error(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    @tr.breaker_guarded("pgmq", fallback="later")
    def send() -> str:
        return "sent"

    breaker = tr.get_breaker("pgmq")
    breaker.force_open()

    def no_error() -> tr.CircuitOpenError:
        raise AssertionError("a CircuitOpenError was built for a call the fallback answered")

    monkeypatch.setattr(breaker, "open_error", no_error)
    before = breaker.metrics()["rejected_calls"]
    gc.collect()
    gc.disable()
    try:
        assert [send() for _ in range(100)] == ["later"] * 100
        monkeypatch.undo()

        @tr.breaker_guarded("pgmq")
        def strict() -> str:
            return "sent"

        for _ in range(100):
            with pytest.raises(tr.CircuitOpenError):
                strict()
        assert gc.collect() == 0  # neither path leaves a reference cycle behind
    finally:
        gc.enable()
    assert breaker.metrics()["rejected_calls"] - before == 200


# --- what a new user tries first (issue 26) ----------------------------------------------


@pytest.mark.parametrize("argument", ["record", "ignore"])
def test_a_string_for_record_or_ignore_names_the_argument(argument: str) -> None:
    with pytest.raises(TypeError) as info:
        tr.breaker_guarded("pgmq", **{argument: "notaclass"})  # type: ignore[call-overload]
    message = str(info.value)
    assert f"{argument} takes exception classes or predicates" in message
    assert "an iterable of them" in message
    assert "'notaclass'" in message
    assert "'n'" not in message  # not the string's first letter


def test_a_non_matcher_inside_record_is_named() -> None:
    with pytest.raises(TypeError, match=r"record takes exception classes .*, not 42$"):
        tr.breaker_guarded("pgmq", record=[ConnectionError, 42])  # type: ignore[list-item]


def test_a_single_class_or_predicate_needs_no_tuple(clock: ManualClock) -> None:
    configure_for_tests(clock=clock)

    @tr.breaker_guarded("search", record=ConnectionError, ignore=lambda exc: "soft" in str(exc))
    def lookup(error: Exception) -> None:
        raise error

    for _ in range(5):
        with pytest.raises(ValueError):
            lookup(ValueError("not recorded"))
        with pytest.raises(ConnectionError):
            lookup(ConnectionError("soft failure, ignored"))
    assert tr.get_breaker("search").metrics()["failed_calls"] == 0
    for _ in range(tr.get_breaker("search").config.failure_threshold):
        with pytest.raises(ConnectionError):
            lookup(ConnectionError("down"))
    assert tr.get_breaker("search").state == "open"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "tasker_resilience.breaker" and record.levelname == "WARNING"
    ]


def test_a_bug_counting_toward_a_breaker_is_logged_once(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    configure_for_tests(clock=clock)

    @tr.breaker_guarded("search", fallback=None)
    def parse(text: str) -> int:
        return int(text)

    @tr.breaker_guarded("search", fallback=None)
    async def other(text: str) -> int:
        raise KeyError(text)

    with caplog.at_level("WARNING", logger="tasker_resilience.breaker"):
        for _ in range(2):
            with pytest.raises(ValueError):
                parse("x")
    [message] = _warnings(caplog)
    assert message.startswith("circuit breaker 'search' counted ValueError as a failure")
    assert "counts every Exception by default" in message
    assert "record=(...)" in message
    assert "ignore=(ValueError,)" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="tasker_resilience.breaker"), pytest.raises(KeyError):
        asyncio.run(other("k"))
    assert _warnings(caplog) == []  # once per breaker, not per exception type


_TransportError = type("TransportError", (Exception,), {})  # a client library's own


@pytest.mark.parametrize(
    ("options", "error", "failed"),
    [
        ({}, ConnectionRefusedError("refused"), 1),
        ({}, TimeoutError("slow"), 1),
        ({}, asyncio.TimeoutError(), 1),
        ({}, OSError("socket"), 1),
        ({}, Unavailable("named like one"), 1),
        ({}, _TransportError("a client library's own hierarchy"), 1),
        ({"record": (ValueError,)}, ValueError("chosen: counts, no advice needed"), 1),
        ({"ignore": KeyError}, KeyError("ignored: does not count"), 0),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_no_warning_for_io_errors_or_when_the_caller_chose(
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, Any],
    error: Exception,
    failed: int,
) -> None:
    configure_for_tests(clock=clock)

    guard: Callable[[Callable[[], None]], Callable[[], None]] = tr.breaker_guarded(
        "search", **options
    )

    @guard
    def call() -> None:
        raise error

    with caplog.at_level("WARNING", logger="tasker_resilience.breaker"), pytest.raises(type(error)):
        call()
    assert tr.get_breaker("search").metrics()["failed_calls"] == failed
    assert _warnings(caplog) == []

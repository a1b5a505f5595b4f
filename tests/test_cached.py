"""@cached: keys, collisions, None hits, single-flight, invalidation, failure behaviour."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import inspect
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience import Resilience, _resilience
from tasker_resilience._cache.backends.contract import unregister_backend
from tasker_resilience._cache.keys import canonical
from tasker_resilience._cache.serializers import SerializationError
from tasker_resilience.testing import ManualClock, configure_for_tests

from .backend_suite import CountingBackend, Outage

CALLS: Counter[str] = Counter()


# Decorated at import time, long before any configure() runs.
@tr.cached(ttl=60, namespace="import-time")
def double(x: int) -> int:
    CALLS["double"] += 1
    return x * 2


@tr.cached(ttl=60, namespace="import-time")
async def adouble(x: int) -> int:
    CALLS["adouble"] += 1
    return x * 2


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture
def res() -> Resilience:
    return configure_for_tests()  # the memory backend


def counted(name: str, result: Any = None) -> Any:
    CALLS[name] += 1
    return result


# --- binding to the configured cache ----------------------------------------------------------


def test_decorating_does_not_configure() -> None:
    assert _resilience._current is None

    @tr.cached()
    def f() -> int:
        return 1

    assert _resilience._current is None


def test_import_time_decoration_uses_the_cache_configured_later(res: Resilience) -> None:
    assert double(2) == 4
    assert double(2) == 4
    assert CALLS["double"] == 1
    assert res.cache.stats()["get"]["hit"] == 1
    # A new configuration brings a new (empty) cache: the decorator follows it.
    configure_for_tests()
    assert double(2) == 4
    assert CALLS["double"] == 2


async def test_import_time_decoration_async(res: Resilience) -> None:
    assert await adouble(3) == 6
    assert await adouble(3) == 6
    assert CALLS["adouble"] == 1


# --- keys -------------------------------------------------------------------------------------


def test_key_format(res: Resilience) -> None:
    @tr.cached(namespace="templates", version="7")
    def render(name: str) -> str:
        return name

    key = render.cache_key("home")
    qualname = render.__qualname__
    # A function defined inside another also names its definition site (@line).
    line = render.original.__code__.co_firstlineno
    base = rf"tasker-test:templates:{__name__}\.{re.escape(qualname)}@{line}:7:"
    assert re.fullmatch(base + r"x[0-9a-f]+", key)  # a short encoding, spelled out
    assert re.fullmatch(base + r"[0-9a-f]{32}", render.cache_key("x" * 40))  # hashed
    render("home")
    assert res.cache.backend.get(key) is not None  # stored exactly there


def test_arguments_are_bound_to_the_signature(res: Resilience) -> None:
    @tr.cached()
    def f(a: int, b: int = 2, *, c: int = 3) -> int:
        return counted("f", a + b + c)  # type: ignore[no-any-return]

    keys = {f.cache_key(1), f.cache_key(1, 2), f.cache_key(a=1), f.cache_key(1, b=2, c=3)}
    assert len(keys) == 1
    assert f(1) == f(a=1, c=3) == f(1, 2) == 6
    assert CALLS["f"] == 1
    assert f.cache_key(1, 3) != f.cache_key(1)


def test_kwargs_order_does_not_matter(res: Resilience) -> None:
    @tr.cached()
    def f(**options: Any) -> None:
        return None

    assert f.cache_key(x=1, y=2) == f.cache_key(y=2, x=1)
    assert f.cache_key(x=1, y=2) != f.cache_key(x=2, y=1)


def test_argument_shapes_do_not_collide(res: Resilience) -> None:
    @tr.cached()
    def f(*args: Any) -> None:
        return None

    shapes = [
        ("a b",),
        ("a", "b"),
        ("ab",),
        (1,),
        ("1",),
        (True,),
        (1.0,),
        (None,),
        ("None",),
        ([1],),
        ((1,),),
        ({1},),
        ({"a": 1},),
        ([["a", 1]],),
        (b"1",),
        (),
        ("",),
        ("a:b",),
        ("a", ":b"),
        ("as", "b"),  # without length prefixes these two would encode alike
        ("a", "sb"),
    ]
    keys = [f.cache_key(*shape) for shape in shapes]
    assert len(set(keys)) == len(shapes)


def test_remembered_keys_keep_equal_values_of_other_types_apart(res: Resilience) -> None:
    @tr.cached()
    def f(*args: Any) -> Any:
        return counted("f", [repr(a) for a in args])

    # Equal (1 == 1.0 == True, 0.0 == -0.0) but distinct arguments, each called twice
    # so the second round reads remembered keys.
    shapes: list[tuple[Any, ...]] = [(1,), (True,), (1.0,), ("1",), (b"1",), (0.0,), (-0.0,)]
    shapes += [(1, 2), (True, 2), (1, 2.0), (), (None,), (0,), (False,)]
    for _ in range(2):
        for shape in shapes:
            assert f(*shape) == [repr(a) for a in shape]
    assert CALLS["f"] == len(shapes)
    assert len({f.cache_key(*shape) for shape in shapes}) == len(shapes)


def test_a_mutable_default_is_read_on_every_call(res: Resilience) -> None:
    options: list[str] = []

    @tr.cached()
    def f(x: int, flags: list[str] = options) -> str:
        return counted("f", f"{x}{flags}")  # type: ignore[no-any-return]

    assert f(1) == "1[]"
    options.append("new")
    assert f(1) == "1['new']"
    assert CALLS["f"] == 2


def test_remembered_keys_stay_bounded(res: Resilience) -> None:
    from tasker_resilience._cache.keys import MEMO_SIZE, KeyBuilder

    def g(x: Any) -> None:
        return None

    builder = KeyBuilder(g, namespace="n", version="1")
    keys = {builder((i,), {}) for i in range(MEMO_SIZE * 3)}
    assert len(keys) == MEMO_SIZE * 3
    assert 0 < len(builder._ints) <= MEMO_SIZE  # ints: a memo of their own
    texts = {builder((f"user-{i}",), {}) for i in range(MEMO_SIZE * 3)}
    assert len(texts) == MEMO_SIZE * 3
    assert builder._memo is not None
    assert 0 < len(builder._memo) <= MEMO_SIZE
    builder._memo.clear()
    assert builder(("x" * 1000,), {}) == builder(("x" * 1000,), {})
    assert not builder._memo  # a long argument is not kept alive by the memo


@pytest.mark.parametrize(
    "value",
    [
        0,
        1,
        -1,
        2**31,
        2**62,
        2**200,
        -(2**200),
        True,
        False,
        None,
        0.0,
        -0.0,
        1.5,
        float("inf"),
        "1",
        b"1",
        (1, "a"),
        "",
    ],
    ids=repr,
)
def test_every_fast_key_path_gives_the_general_encodings_key(value: Any) -> None:
    # The single-argument shortcuts (an int memo, spelled-out numbers, the slot memo)
    # must give exactly the key the general path gives a keyword call, or f(1) and
    # f(x=1) would be two entries.
    from tasker_resilience._cache.keys import KeyBuilder, _digest, encode

    def g(x: Any) -> None:
        return None

    builder = KeyBuilder(g, namespace="n", version="1")
    expected = builder.base + _digest(encode((value,)))
    assert builder((value,), {}) == expected  # first call: computed
    assert builder((value,), {}) == expected  # second: remembered where it is
    assert builder((), {"x": value}) == expected


def _bound(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError:
        return TypeError
    bound.apply_defaults()
    return tuple(bound.arguments.values())


def _placed(builder: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return builder.values(args, kwargs)
    except TypeError:
        return TypeError


def test_precompiled_binding_matches_signature_bind() -> None:
    from tasker_resilience._cache.keys import KeyBuilder

    def f(a: Any, /, b: Any, c: Any = 3, *, d: Any = 4, e: Any) -> None: ...
    def g(a: Any, b: Any = 2, *, c: Any = 3) -> None: ...
    def h(a: Any, *rest: Any, k: Any = 1, **more: Any) -> None: ...
    def none() -> None: ...

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}),
        ((1,), {}),
        ((1, 2), {}),
        ((1, 2, 3), {}),
        ((1, 2, 3, 4), {}),  # too many positionals (d is keyword-only)
        ((1, 2), {"e": 5}),
        ((1,), {"b": 2, "e": 5}),
        ((1, 2), {"b": 2, "e": 5}),  # b given twice
        ((), {"a": 1, "b": 2, "e": 5}),  # a is positional-only
        ((1, 2), {"e": 5, "zz": 0}),  # unknown keyword
        ((1,), {"c": 9, "b": 2, "e": 5, "d": 8}),
        ((1,), {"b": 2}),
        ((1,), {"c": 7}),
        ((), {"a": 1}),
        ((), {"b": 1}),
        ((1, 2, 3), {"k": 0, "x": 1}),
    ]
    for func in (f, g, h, none):
        builder = KeyBuilder(func, namespace="n", version="1")
        for args, kwargs in calls:
            expected = _bound(func, args, kwargs)
            assert _placed(builder, args, kwargs) == expected, (func.__name__, args, kwargs)


def test_a_call_python_rejects_is_rejected_before_the_cache(res: Resilience) -> None:
    @tr.cached()
    def f(a: int, *, b: int = 2) -> int:
        return counted("f", a + b)  # type: ignore[no-any-return]

    assert f(1, b=2) == 3
    with pytest.raises(TypeError):
        f(1, 2)  # type: ignore[misc]  # b is keyword-only: never a hit for f(1, b=2)
    assert CALLS["f"] == 1


def test_plain_values_of_other_types_never_share_a_key(res: Resilience) -> None:
    class Text(str):
        pass

    @tr.cached()
    def f(x: Any, y: Any = None) -> None:
        return None

    values: list[Any] = [
        b"ab",
        "ab",
        Text("ab"),
        (1, 2),
        [1, 2],
        (1.0, 2),
        (True, 2),
        ((1,), 2),
        ([1], 2),
        0.0,
        -0.0,
        float("nan"),
        float("inf"),
        2**80,
        -(2**80),
        {"a": 1},
        {1, 2},
        frozenset({1, 2}),
        (1, {"a": 1}),
        ("\ud800",),
    ]
    keys = [f.cache_key(value) for value in values]
    assert len(set(keys)) == len(values)
    assert f.cache_key(1) == f.cache_key(1, None) == f.cache_key(x=1) == f.cache_key(y=None, x=1)
    assert f.cache_key({"a": 1, "b": 2}) == f.cache_key({"b": 2, "a": 1})
    with pytest.raises(TypeError, match="__cache_key__"):
        f.cache_key(...)  # Ellipsis marks canonical texts inside the encoding: refused


def test_functions_do_not_share_keys(res: Resilience) -> None:
    @tr.cached()
    def one(x: int) -> str:
        return "one"

    @tr.cached()
    def two(x: int) -> str:
        return "two"

    assert one(1) == "one"
    assert two(1) == "two"
    assert one.cache_key(1) != two.cache_key(1)


def test_version_and_namespace_change_the_key(res: Resilience) -> None:
    def f(x: int) -> int:
        return x

    v1 = tr.cached(version=1)(f)
    v2 = tr.cached(version=2)(f)
    other = tr.cached(namespace="other", version=1)(f)
    assert len({v1.cache_key(1), v2.cache_key(1), other.cache_key(1)}) == 3


def test_custom_key_function(res: Resilience) -> None:
    @tr.cached(namespace="users", key=lambda user_id, **_: f"user:{user_id}")
    def load(user_id: int, *, verbose: bool = False) -> dict[str, int]:
        return counted("load", {"id": user_id})  # type: ignore[no-any-return]

    site = f"@{load.original.__code__.co_firstlineno}"  # defined in a function: its site too
    assert load.cache_key(7).endswith(
        ":users:" + load.__module__ + "." + load.__qualname__ + site + ":1:user:7"
    )
    assert load(7) == {"id": 7}
    assert load(7, verbose=True) == {"id": 7}
    assert CALLS["load"] == 1

    @tr.cached(key=lambda a, b: (a, b))
    def pair(a: int, b: int) -> int:
        return a + b

    # Non-string keys are digested (short encodings spelled out in hex).
    assert re.search(r":(x[0-9a-f]+|[0-9a-f]{32})$", pair.cache_key(1, 2))
    assert pair.cache_key(1, 2) != pair.cache_key(2, 1)


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Account:
    def __init__(self, account_id: int) -> None:
        self.account_id = account_id

    def __cache_key__(self) -> int:
        return self.account_id

    @tr.cached()
    def balance(self) -> int:
        return counted(f"balance-{self.account_id}", self.account_id * 100)  # type: ignore[no-any-return]


def test_supported_argument_types_have_stable_distinct_keys() -> None:
    values = [Color.RED, Level.ONE, 1, Point(1, 2), Point(2, 1), (1, 2), Account(1), Account(2)]
    encoded = [canonical(v) for v in values]
    assert len(set(encoded)) == len(values)
    assert canonical(Point(1, 2)) == canonical(Point(1, 2))
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical({3, 1, 2}) == canonical({1, 2, 3})


def test_methods_key_on_cache_key_of_self(res: Resilience) -> None:
    first, again, other = Account(1), Account(1), Account(2)
    assert first.balance() == 100
    assert again.balance() == 100
    assert other.balance() == 200
    assert CALLS["balance-1"] == 1
    assert CALLS["balance-2"] == 1


def test_unsupported_argument_types_raise_with_advice(res: Resilience) -> None:
    @tr.cached()
    def f(x: Any) -> None:
        return None

    with pytest.raises(TypeError, match=r"__cache_key__.*key="):
        f(object())


# --- values ---------------------------------------------------------------------------------


def test_cached_none_is_a_hit(res: Resilience) -> None:
    @tr.cached()
    def nothing() -> None:
        return counted("nothing")  # type: ignore[no-any-return]

    assert nothing() is None
    assert nothing() is None
    assert CALLS["nothing"] == 1


@pytest.mark.parametrize("value", [0, "", [], {}, False, b"", b"\x00\xff", {"k": [1, None]}])
def test_falsy_and_binary_results_are_hits(res: Resilience, value: Any) -> None:
    @tr.cached()
    def f() -> Any:
        return counted("f", value)

    assert f() == value
    assert f() == value
    assert CALLS["f"] == 1


def test_a_plain_entry_under_a_cached_key_is_a_miss(res: Resilience) -> None:
    @tr.cached()
    def f(x: int) -> list[int]:
        return counted("f", [x])  # type: ignore[no-any-return]

    key = f.cache_key(1).removeprefix("tasker-test:")
    res.cache.set(key, [1, 2])  # not a one-item envelope
    assert res.cache.get(key) == res.cache.get(key) == [1, 2]  # read (and kept decoded)
    assert f(1) == [1]
    assert f(1) == [1]
    assert CALLS["f"] == 1  # the unreadable entry was overwritten by the computed one
    assert res.cache.stats()["get"]["error"] == 1


def test_condition_decides_what_is_stored(res: Resilience) -> None:
    @tr.cached(condition=lambda result: result is not None)
    def find(x: int) -> int | None:
        return counted("find", x if x > 0 else None)  # type: ignore[no-any-return]

    find(-1)
    find(-1)
    find(1)
    find(1)
    assert CALLS["find"] == 3


def test_ttl_expires_entries(res: Resilience) -> None:
    @tr.cached(ttl=0.2)
    def f() -> int:
        return counted("f", 1)  # type: ignore[no-any-return]

    f()
    f()
    assert CALLS["f"] == 1
    time.sleep(0.4)
    f()
    assert CALLS["f"] == 2


def test_default_ttl_when_none(clock: ManualClock) -> None:
    backend = CountingBackend()
    tr.register_backend("counting", lambda config: backend)
    try:
        configure_for_tests({"common": {"cache": {"backend": "counting"}}}, clock=clock)

        @tr.cached()
        def f() -> int:
            return 1

        @tr.cached(ttl=5)
        def g() -> int:
            return 1

        f()
        g()
        assert [c[3] for c in backend.calls if c[0] == "set"] == [3600, 5]
    finally:
        unregister_backend("counting")


def test_json_results_must_be_json(res: Resilience) -> None:
    @tr.cached()
    def f() -> Any:
        return {1, 2}

    with pytest.raises(SerializationError):
        f()


def test_pickle_serializer_keeps_python_types(res: Resilience) -> None:
    @tr.cached(serializer="pickle")
    def f() -> Any:
        return counted("f", (1, {2, 3}))

    assert f() == (1, {2, 3})
    assert f() == (1, {2, 3})
    assert CALLS["f"] == 1


# --- invalidate, original -----------------------------------------------------------------------


def test_invalidate_and_original(res: Resilience) -> None:
    @tr.cached()
    def f(x: int) -> int:
        return counted("f", x)  # type: ignore[no-any-return]

    f(1)
    f(2)
    f.invalidate(1)
    f(1)
    f(2)
    assert CALLS["f"] == 3
    assert f.original(1) == 1
    assert CALLS["f"] == 4  # the original bypasses the cache
    assert f.__name__ == "f"
    assert f.__wrapped__ is f.original


def test_invalidate_all(res: Resilience) -> None:
    @tr.cached(namespace="n")
    def f(x: int) -> int:
        return counted("f", x)  # type: ignore[no-any-return]

    @tr.cached(namespace="n")
    def g(x: int) -> int:
        return counted("g", x)  # type: ignore[no-any-return]

    def call_all() -> None:
        f(1)
        f(2)
        g(1)

    call_all()
    call_all()
    assert dict(CALLS) == {"f": 2, "g": 1}
    assert f.invalidate_all() == 2
    call_all()
    assert dict(CALLS) == {"f": 4, "g": 1}


async def test_async_invalidate(res: Resilience) -> None:
    @tr.cached()
    async def f(x: int) -> int:
        return counted("f", x)  # type: ignore[no-any-return]

    await f(1)
    await f.ainvalidate(1)
    await f(1)
    await f(1)
    assert CALLS["f"] == 2
    assert await f.original(5) == 5


# --- when the cache is open, failing or off ------------------------------------------------------


@pytest.fixture
def flaky(clock: ManualClock) -> Iterator[CountingBackend]:
    backend = CountingBackend()
    tr.register_backend("counting", lambda config: backend)
    configure_for_tests({"common": {"cache": {"backend": "counting"}}}, clock=clock)
    backend.calls.clear()
    yield backend
    unregister_backend("counting")


def test_failing_cache_means_the_function_is_called(flaky: CountingBackend) -> None:
    @tr.cached()
    def f(x: int) -> int:
        return counted("f", x)  # type: ignore[no-any-return]

    flaky.failing = Outage("down")
    assert f(1) == 1  # the get fails; the set is not tried (it would wait again)
    assert f(1) == 1
    assert flaky.ops() == ["get", "get"]  # one backend call per @cached call
    assert tr.current().cache.circuit_state == "closed"
    assert f(1) == 1  # the 3rd failure trips the breaker (test profile: 3)
    assert tr.current().cache.circuit_state == "open"
    calls_before = len(flaky.calls)
    for _ in range(10):
        assert f(1) == 1  # the function runs; the cache is not asked at all
    assert len(flaky.calls) == calls_before
    assert CALLS["f"] == 13
    skipped = tr.current().cache.stats()["get"]["skipped_open"]
    assert skipped == 10  # each skipped read is still counted


async def test_open_cache_async_function_is_called(flaky: CountingBackend) -> None:
    @tr.cached()
    async def f(x: int) -> int:
        return counted("f", x)  # type: ignore[no-any-return]

    cache = tr.current().cache
    assert cache.breaker is not None
    cache.breaker.force_open()
    for _ in range(5):
        assert await f(2) == 2
    assert CALLS["f"] == 5
    assert flaky.calls == []


def test_disabled_cache_calls_the_function_every_time() -> None:
    configure_for_tests({"common": {"cache": {"enabled": False}}})

    @tr.cached()
    def f() -> int:
        return counted("f", 1)  # type: ignore[no-any-return]

    f()
    f()
    assert CALLS["f"] == 2


# --- single-flight ----------------------------------------------------------------------------


def test_single_flight_across_threads(res: Resilience) -> None:
    threads_count = 8
    barrier = threading.Barrier(threads_count)

    @tr.cached()
    def slow(x: int) -> int:
        time.sleep(0.3)
        return counted("slow", x * 10)  # type: ignore[no-any-return]

    results: list[int] = []

    def worker() -> None:
        barrier.wait()
        results.append(slow(4))

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [40] * threads_count
    assert CALLS["slow"] == 1


def test_single_flight_shares_the_error_then_retries(res: Resilience) -> None:
    barrier = threading.Barrier(4)
    attempts = Counter[str]()

    @tr.cached()
    def fails() -> int:
        attempts["n"] += 1
        time.sleep(0.3)
        if attempts["n"] == 1:
            raise RuntimeError("first attempt fails")
        return 1

    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            fails()
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 4
    assert attempts["n"] == 1
    assert fails() == 1  # errors are not cached
    assert attempts["n"] == 2


async def test_single_flight_across_tasks(res: Resilience) -> None:
    @tr.cached()
    async def slow(x: int) -> int:
        await asyncio.sleep(0.1)
        return counted("slow", x + 1)  # type: ignore[no-any-return]

    results = await asyncio.gather(*(slow(1) for _ in range(20)))
    assert results == [2] * 20
    assert CALLS["slow"] == 1


async def test_a_cancelled_leader_does_not_fail_the_waiters(res: Resilience) -> None:
    started = asyncio.Event()

    # key=: an Event cannot be part of a key (a closure's captured values are).
    @tr.cached(key=lambda: "slow")
    async def slow() -> int:
        CALLS["slow"] += 1
        started.set()
        await asyncio.sleep(0.2)
        return 5

    leader = asyncio.create_task(slow())
    await started.wait()
    waiter = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await waiter == 5  # the waiter computed it itself
    assert CALLS["slow"] == 2
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_cancelled_waiter_does_not_cancel_the_leader(res: Resilience) -> None:
    @tr.cached()
    async def slow() -> int:
        await asyncio.sleep(0.2)
        return counted("slow", 7)  # type: ignore[no-any-return]

    leader = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    waiter.cancel()
    assert await leader == 7
    assert CALLS["slow"] == 1


def test_single_flight_per_event_loop(res: Resilience) -> None:
    @tr.cached()
    async def slow() -> int:
        await asyncio.sleep(0.05)
        return counted("slow", 1)  # type: ignore[no-any-return]

    # Two loops in two threads never share a future (that would fail across loops).
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(asyncio.run(slow()))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1, 1]


# --- decorator arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ttl": 0}, ValueError),
        ({"ttl": -5}, ValueError),
        ({"ttl": "60"}, TypeError),
        ({"namespace": "a:b"}, ValueError),
        ({"namespace": ""}, ValueError),
        ({"key": "not callable"}, TypeError),
        ({"condition": 1}, TypeError),
        ({"serializer": "yaml"}, ValueError),
    ],
)
def test_bad_decorator_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        tr.cached(**kwargs)(lambda: None)


def test_hits_hand_out_copies_unless_shared(res: Resilience) -> None:
    @tr.cached()
    def copied(x: int) -> dict[str, list[int]]:
        return {"items": [x]}

    @tr.cached(shared=True)
    def shared(x: int) -> dict[str, list[int]]:
        return {"items": [x]}

    @tr.cached()
    def text(x: int) -> str:
        return "x" * 100

    first = copied(1)
    first["items"].append(99)  # a caller mutating its result
    assert copied(1) == {"items": [1]} == copied(1)
    assert copied(1) is not copied(1)
    assert shared(1) == shared(1) == {"items": [1]}
    assert shared(1) is shared(1)  # one object for every hit: the caller's promise
    assert text(1) == text(1)  # computed, then the first hit decodes
    assert text(1) is text(1)  # an immutable result needs no copy
    with pytest.raises(TypeError, match="shared"):
        tr.cached(shared="yes")  # type: ignore[arg-type]


def test_a_plain_get_of_an_immutable_entry_gets_its_own_list(res: Resilience) -> None:
    res.cache.set("k", ["text"])
    assert res.cache.get("k") == ["text"]  # the first read decodes
    value = res.cache.get("k")
    value.append("mutated")
    assert res.cache.get("k") == ["text"]


async def test_a_failed_async_read_is_not_followed_by_a_store(flaky: CountingBackend) -> None:
    @tr.cached()
    async def f(x: int) -> int:
        return counted("f", x)  # type: ignore[no-any-return]

    flaky.failing = Outage("down")
    assert await f(3) == 3
    assert flaky.ops() == ["get"]  # one wait per call during an outage, not two
    flaky.failing = None
    assert await f(3) == 3  # healthy again: a miss, computed and stored
    assert await f(3) == 3
    assert flaky.ops() == ["get", "get", "set", "get"]
    assert CALLS["f"] == 2


@pytest.mark.parametrize(
    "result",
    [
        {"id": 1, "roles": ["a"], "meta": {"tags": ["x", {"deep": [1]}]}},
        [[1, 2], [3, [4, 5]], {"a": None}],
        [{"n": i, "items": [i]} for i in range(20)],  # records: one plan step per shape
        # Records whose containers differ: a plan per slot, or marshal when long.
        [{"a": [1]}, {"b": [2]}, {"a": {"x": [3]}}, {"a": 1}, [4, [5]], "leaf"],
        [{"n": i, "items": [i], "meta": {"tags": [str(i)]}} for i in range(30)],
        [[[i, [i]]] for i in range(12)],  # lists of lists of lists
        [{"k": i} if i % 2 else [i] for i in range(40)],  # 40 differing slots: marshal
        {"s": "text", "f": -0.0, "big": 2**80},
        # Large values with nan, infinities, -0.0 and deep nesting: marshal copies them exactly.
        [{"n": i, "x": float("nan") if i == 7 else 1.5} for i in range(20)],
        [{"n": i, "x": float("-inf") if i == 7 else -0.0} for i in range(20)],
        [
            {"n": i, "deep": functools.reduce(lambda acc, _: [acc], range(300), [i])}
            for i in range(9)
        ],
        [{"n": i, "b": b"\x00'\"", "s": "\\d'\"\n\u2028"} for i in range(20)],
    ],
)
@pytest.mark.parametrize("hits", [2, 100], ids=["first-hits", "hot-entry"])
def test_every_hit_is_a_deep_copy_equal_to_the_result(
    res: Resilience, result: Any, hits: int
) -> None:
    import copy

    @tr.cached()
    def f() -> Any:
        return copy.deepcopy(result)

    assert f() == result
    for _ in range(hits):  # a hot entry is copied as the first hits are
        assert _same_json(f(), result)
    first, second = f(), f()
    assert _same_json(first, result)
    assert _same_json(second, result)

    def containers(value: Any) -> list[int]:
        if isinstance(value, dict):
            return [id(value), *(i for v in value.values() for i in containers(v))]
        if isinstance(value, list):
            return [id(value), *(i for v in value for i in containers(v))]
        return []

    assert not set(containers(first)) & set(containers(second))  # nothing mutable shared
    first.clear() if isinstance(first, (dict, list)) else None
    assert _same_json(f(), result)


def _same_json(value: Any, expected: Any) -> bool:
    """Equal, with the same types, nan where nan, and -0.0 where -0.0."""
    if type(value) is not type(expected):
        return False
    if isinstance(value, dict):
        return list(value) == list(expected) and all(
            _same_json(value[k], expected[k]) for k in value
        )
    if isinstance(value, list):
        return len(value) == len(expected) and all(map(_same_json, value, expected))
    if isinstance(value, float):
        return repr(value) == repr(expected)  # nan, -0.0 and inf, exactly
    return bool(value == expected)


def test_remembered_single_arguments_keep_equal_values_apart(res: Resilience) -> None:
    @tr.cached()
    def f(x: Any) -> Any:
        return counted("f", repr(x))

    values: list[Any] = [1, True, 1.0, 0.0, -0.0, float("nan"), (1, 2), (True, 2), (1.0, 2)]
    values += [(1, "a"), (1, b"a"), ("x" * 1000,), ((1,), 2), (None,), ()]
    for _ in range(2):  # the second round reads remembered keys
        for value in values:
            assert f(value) == repr(value)
    assert CALLS["f"] == len(values)  # each computed once (nan: the same bits, one key)
    assert len({f.cache_key(value) for value in values}) == len(values)

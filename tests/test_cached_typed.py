"""Typed @cached hits: a hit returns the type the return annotation names (msgspec);
without an annotation, hits are as before plus one WARNING when JSON changed a result."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import logging
import subprocess
import sys
import textwrap
import typing
import uuid
from collections import Counter
from typing import Any, NamedTuple, TypedDict

import msgspec
import pytest

import tasker_resilience as tr
from tasker_resilience import Resilience
from tasker_resilience._cache.typed import (
    JsonShapes,
    ReturnTypes,
    TypedSerializer,
    json_changes,
    json_keeps,
)
from tasker_resilience.testing import configure_for_tests

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture(params=["memory", "fakeredis"])
def res(request: pytest.FixtureRequest) -> Resilience:
    return configure_for_tests(backend=request.param)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int
    tags: tuple[str, ...] = ()


class Event(msgspec.Struct):
    name: str
    at: datetime.datetime
    where: tuple[float, float]


class Movie(TypedDict):
    title: str
    cast: tuple[str, ...]


class Pair(NamedTuple):
    left: int
    right: str


def _hit_of(annotation: Any, value: Any) -> Any:
    """Store ``value`` through a function annotated ``-> annotation``, then hit it."""

    def compute(key: int) -> Any:
        CALLS["compute"] += 1
        return value

    compute.__annotations__ = {"key": int, "return": annotation}
    compute.__qualname__ = f"compute_{CALLS['defined']}"
    CALLS["defined"] += 1
    fn = tr.cached(ttl=60, namespace="typed")(compute)
    first = fn(1)
    hit = fn(1)
    assert CALLS["compute"] == 1, "the second call must be a hit"
    CALLS["compute"] = 0
    assert first == value
    return hit


NOW = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
ROUND_TRIPS = [
    (tuple[int, int], (1, 2)),
    (tuple[int, ...], (1, 2, 3)),
    (set[int], {1, 2}),
    (frozenset[str], frozenset({"a", "b"})),
    (dict[int, str], {1: "a", 2: "b"}),
    (Point, Point(1, 2, ("a",))),
    (list[Point], [Point(1, 2), Point(3, 4)]),
    (datetime.datetime, NOW),
    (datetime.date, NOW.date()),
    (datetime.timedelta, datetime.timedelta(seconds=90)),
    (Color, Color.BLUE),
    (Level, Level.LOW),
    (uuid.UUID, uuid.UUID(int=7)),
    (decimal.Decimal, decimal.Decimal("1.25")),
    (Event, Event("launch", NOW, (1.5, 2.5))),
    (Movie, Movie(title="Alien", cast=("Weaver",))),
    (Pair, Pair(1, "x")),
    (tuple[bytes, int], (b"\x00\xff", 3)),
    (typing.Optional[tuple[int, int]], None),  # noqa: UP045  # the typing spelling on purpose
    (tuple[int, int] | None, (4, 5)),
]


@pytest.mark.parametrize(("annotation", "value"), ROUND_TRIPS, ids=lambda v: repr(v)[:40])
def test_hits_return_the_annotated_type(res: Resilience, annotation: Any, value: Any) -> None:
    hit = _hit_of(annotation, value)
    assert hit == value
    assert type(hit) is type(value)


def test_pydantic_models_round_trip(res: Resilience) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic models are typed only with it")

    class User(pydantic.BaseModel):
        id: int
        roles: tuple[str, ...]
        seen: datetime.datetime

    user = User(id=1, roles=("admin",), seen=NOW)
    hit = _hit_of(User, user)
    assert hit == user
    assert type(hit) is User
    assert _hit_of(list[User], [user]) == [user]


async def test_async_functions_are_typed_too(res: Resilience) -> None:
    @tr.cached(ttl=60)
    async def pair(x: int) -> tuple[int, int]:
        CALLS["pair"] += 1
        return (x, x)

    assert await pair(1) == (1, 1)
    assert await pair(1) == (1, 1)
    assert type(await pair(1)) is tuple
    assert CALLS["pair"] == 1


def test_mutable_typed_hits_are_copies(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def members(x: int) -> set[int]:
        return {1, 2}

    first = members(1)
    hit = members(1)
    hit.add(3)
    assert members(1) == {1, 2}  # a caller's change never reaches the next hit
    assert first == {1, 2}


def test_typed_entries_are_json_for_other_readers(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def point(x: int) -> Point:
        return Point(x, x + 1, ("t",))

    point(1)
    raw = res.cache.backend.get(point.cache_key(1))
    assert raw is not None
    assert raw.startswith(b"J")  # the JSON format byte: still JSON
    key = point.cache_key(1)[len(res.cache.key_prefix) + 1 :]
    assert res.cache.get(key) == [{"x": 1, "y": 2, "tags": ["t"]}]


def test_a_result_that_would_not_read_back_raises_when_stored(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def pair(x: int) -> tuple[int, int]:
        CALLS["pair"] += 1
        return ("not an int", x)  # type: ignore[return-value]

    with pytest.raises(tr.SerializationError, match=r"would not read back as tuple\[int, int\]"):
        pair(1)
    with pytest.raises(tr.SerializationError):
        pair(1)  # nothing was stored: it computes (and raises) again, never on a hit
    assert CALLS["pair"] == 2
    assert res.cache.backend.get(pair.cache_key(1)) is None


def test_a_result_json_cannot_hold_raises_when_stored(res: Resilience) -> None:
    class Opaque:
        pass

    @tr.cached(ttl=60)
    def thing(x: int) -> tuple[int, Any]:
        return (x, Opaque())

    with pytest.raises(tr.SerializationError, match="cannot be stored as JSON"):
        thing(1)


def test_nan_does_not_silently_become_null(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def pair(x: int) -> tuple[float, float]:
        return (float("nan"), 1.0)

    with pytest.raises(tr.SerializationError):
        pair(1)  # msgspec writes nan as null: refused at the store, not a later hit


def test_an_unreadable_typed_entry_is_a_miss(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def pair(x: int) -> tuple[int, int]:
        CALLS["pair"] += 1
        return (x, x)

    res.cache.backend.set(pair.cache_key(1), b'J[["old", "shape"]]', 60)
    assert pair(1) == (1, 1)  # recomputed and overwritten, never raised
    assert pair(1) == (1, 1)
    assert CALLS["pair"] == 1
    assert res.cache.stats()["get"]["error"] == 1


def test_a_forward_reference_is_resolved_at_the_first_call(res: Resilience) -> None:
    @tr.cached(ttl=60)
    def later(x: int) -> DefinedLater:  # noqa: F821  # not defined yet when decorated
        return Point(x, x)  # type: ignore[return-value]

    globals()["DefinedLater"] = Point  # what a class defined further down does
    try:
        assert later(1) == Point(1, 1)
        hit = later(1)
    finally:
        del globals()["DefinedLater"]
    assert hit == Point(1, 1)
    assert type(hit) is Point


def test_an_unresolvable_annotation_warns_and_hits_as_json(
    res: Resilience, caplog: pytest.LogCaptureFixture
) -> None:
    def pair(x: int) -> Nowhere:  # noqa: F821  # never defined
        return (x, x)  # type: ignore[return-value]

    fn = tr.cached(ttl=60)(pair)
    with caplog.at_level(logging.WARNING, logger="tasker_resilience.cache"):
        assert fn(1) == (1, 1)
        assert fn(1) == [1, 1]  # as before typed hits: JSON
    assert "return annotation cannot be resolved" in caplog.text


def test_pickle_keeps_its_own_types(res: Resilience) -> None:
    @tr.cached(ttl=60, serializer="pickle")
    def point(x: int) -> Point:
        return Point(x, x)

    point(1)
    assert point(1) == Point(1, 1)
    assert res.cache.backend.get(point.cache_key(1)).startswith(b"P")  # type: ignore[union-attr]


def test_annotations_json_keeps_are_not_typed() -> None:
    for annotation in (
        int,
        str,
        float,
        bool,
        bytes,
        None,
        Any,
        list[int],
        dict[str, Any],
        dict[str, list[int]],
        typing.Optional[str],  # noqa: UP045
        int | None,
        typing.Literal["a", 1],
        dict,
    ):
        assert json_keeps(annotation), annotation
    for annotation in (tuple[int], set[int], dict[int, str], Point, Color, datetime.date, Movie):
        assert not json_keeps(annotation), annotation

    def plain(x: int) -> dict[str, Any]:
        return {}

    def none(x: int):  # type: ignore[no-untyped-def]
        return None

    assert ReturnTypes.of(plain, "plain", JsonShapes("plain")) is None
    assert ReturnTypes.of(none, "none", JsonShapes("none")) is None


def test_typed_serializer_refuses_foreign_data() -> None:
    serializer = TypedSerializer(tuple[int, int], "owner", rich=False)
    with pytest.raises(tr.SerializationError):
        serializer.loads(b"P\x80pickle")
    with pytest.raises(tr.SerializationError):
        serializer.loads(b"")
    assert serializer.loads(serializer.dumps([(1, 2)])) == [(1, 2)]


# --- no annotation: as before, plus one WARNING ---------------------------------------------------


def test_untyped_lossy_result_warns_once_at_its_first_hit(
    res: Resilience, caplog: pytest.LogCaptureFixture
) -> None:
    @tr.cached(ttl=60)
    def lookup(x):  # type: ignore[no-untyped-def]
        return {"pair": (x, x), 1: "one"}

    with caplog.at_level(logging.WARNING, logger="tasker_resilience.cache"):
        assert lookup(1) == {"pair": (1, 1), 1: "one"}  # the computed value, untouched
        assert caplog.records == []  # stored, not yet hit: nothing said
        assert lookup(1) == {"pair": [1, 1], "1": "one"}  # as today: JSON types
        lookup(1)
        lookup(2)
        lookup(2)
    warnings = [r for r in caplog.records if "a hit does not return" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "lookup" in message
    assert "result has the int key 1" in message or "result['pair'] is a tuple" in message


async def test_untyped_lossy_async_result_warns_once(
    res: Resilience, caplog: pytest.LogCaptureFixture
) -> None:
    @tr.cached(ttl=60)
    async def lookup(x):  # type: ignore[no-untyped-def]
        return [(x,)]

    with caplog.at_level(logging.WARNING, logger="tasker_resilience.cache"):
        await lookup(1)
        assert await lookup(1) == [[1]]
        await lookup(1)
    assert sum("a hit does not return" in r.getMessage() for r in caplog.records) == 1


def test_untyped_json_results_never_warn(res: Resilience, caplog: pytest.LogCaptureFixture) -> None:
    @tr.cached(ttl=60)
    def lookup(x):  # type: ignore[no-untyped-def]
        return {"a": [1, {"b": None}], "c": b"bytes"}

    with caplog.at_level(logging.WARNING, logger="tasker_resilience.cache"):
        lookup(1)
        lookup(1)
    assert caplog.records == []


def test_json_changes_names_the_place() -> None:
    tuple_in_a = "result['a'][1] is a tuple, which a hit returns as a list"
    assert json_changes({"a": [1, (2,)]}) == tuple_in_a
    assert json_changes([{"k": {3: "x"}}]) == (
        "result[0]['k'] has the int key 3, which a hit returns as the string '3'"
    )
    assert json_changes([Color.RED]) is None  # an Enum JSON refuses anyway (no str base)
    assert json_changes([Level.LOW]) == "result[0] is a Level, which a hit returns as a plain int"
    assert json_changes({"fine": [1, "2", None, 2.5, True]}) is None
    # At most 1000 items are looked at per result: a huge one is checked in part.
    assert json_changes([(1,), *range(5000)]) is None
    assert json_changes([(1,), *range(500)]) == tuple_in_a.replace("['a'][1]", "[0]")


def test_without_msgspec_untyped_functions_work_and_typed_ones_fall_back() -> None:
    script = textwrap.dedent(
        """
        import logging, sys
        sys.modules["msgspec"] = None  # as if it were not installed
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        import tasker_resilience as tr
        from tasker_resilience.testing import configure_for_tests
        configure_for_tests()

        @tr.cached(ttl=60)
        def plain(x):
            return {"x": [x]}

        @tr.cached(ttl=60)
        def pair(x: int) -> tuple[int, int]:
            return (x, x)

        print(plain(1), plain(1), pair(1), pair(1))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'x': [1]} {'x': [1]} (1, 1) [1, 1]"
    assert "until msgspec is installed (pip install 'tasker-resilience[typed]')" in done.stderr
    assert done.stderr.count("msgspec") == 1  # one WARNING, for the typed function only

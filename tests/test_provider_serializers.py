"""Serializers (JSON default, pickle opt-in) and the bounded memory of missed invalidations."""

from __future__ import annotations

import math
import pickle
import threading
from typing import Any

import pytest

from tasker_resilience._cache.invalidations import (
    DELETE,
    DELETE_PATTERN,
    PendingInvalidations,
    Step,
)
from tasker_resilience._cache.serializers import (
    BYTES_KEY,
    JSON,
    PICKLE,
    SerializationError,
    get_serializer,
)

# --- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**70),
        1.5,
        "",
        "ünïcödé ✓ 🔑",
        "\x00 and \n",
        [],
        {},
        [1, "2", None, [3.25, {"a": []}]],
        {"nested": {"deep": [True, None]}},
        b"",
        b"\x00\xff" * 1000,
        {"blob": b"\x00\x01", "list": [b"a", "a"]},
    ],
    ids=repr,
)
def test_json_round_trips(value: Any) -> None:
    data = JSON.dumps(value)
    assert isinstance(data, bytes)
    assert JSON.loads(data) == value
    assert type(JSON.loads(data)) is type(value)


def test_top_level_bytes_are_stored_raw() -> None:
    blob = bytes(range(256))
    data = JSON.dumps(blob)
    assert data == b"B" + blob  # no base64 inflation for the common binary case
    assert JSON.dumps(bytearray(blob)) == data


def test_json_documented_lossy_cases() -> None:
    # As with json.dumps: tuples come back as lists, non-str keys as strings.
    assert JSON.loads(JSON.dumps((1, 2))) == [1, 2]
    assert JSON.loads(JSON.dumps({1: "a"})) == {"1": "a"}
    assert math.isnan(JSON.loads(JSON.dumps(float("nan"))))


@pytest.mark.parametrize("value", [{1, 2}, object(), {"when": complex(1, 2)}])
def test_json_rejects_other_types_with_advice(value: Any) -> None:
    with pytest.raises(SerializationError, match="pickle"):
        JSON.dumps(value)


def test_json_rejects_circular_values() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        JSON.dumps(loop)


def test_json_rejects_lone_surrogates_as_a_serialization_error() -> None:
    # "\ud800" is a valid Python str that UTF-8 cannot encode: a caller mistake.
    with pytest.raises(SerializationError, match="cannot be stored as JSON"):
        JSON.dumps({"name": "\ud800"})


def test_the_bytes_tag_cannot_be_forged_by_user_data() -> None:
    with pytest.raises(SerializationError, match="reserved"):
        JSON.dumps({BYTES_KEY: "aGk="})
    with pytest.raises(SerializationError, match="reserved"):
        JSON.dumps([{"x": b"1"}, {BYTES_KEY: "aGk="}])
    # The tag as one key among others is ordinary data.
    value = {BYTES_KEY: "aGk=", "other": 1}
    assert JSON.loads(JSON.dumps(value)) == value


@pytest.mark.parametrize(
    "data", [b"", b"J", b"J{", b"J1 2", b"J\xff", b"Q{}", b"J" + b'{"__tasker_bytes__":"!!"}']
)
def test_unreadable_data_raises_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        JSON.loads(data)


def test_json_never_unpickles() -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (pytest.fail, ("pickle.loads ran code from the cache",))

    data = b"P" + pickle.dumps(Boom())
    with pytest.raises(SerializationError, match="never loads"):
        JSON.loads(data)


# --- pickle ---------------------------------------------------------------------------------------


def test_pickle_keeps_python_types_and_reads_json_entries() -> None:
    value = (1, {2, 3}, frozenset({"a"}), complex(1, 2))
    assert PICKLE.loads(PICKLE.dumps(value)) == value
    assert PICKLE.loads(JSON.dumps({"a": [1]})) == {"a": [1]}
    assert PICKLE.loads(JSON.dumps(b"raw")) == b"raw"


def test_unpicklable_values_raise_serialization_error() -> None:
    with pytest.raises(SerializationError):
        PICKLE.dumps(threading.Lock())
    with pytest.raises(SerializationError):
        PICKLE.dumps(lambda: None)


def test_get_serializer() -> None:
    assert get_serializer(None) is JSON
    assert get_serializer("PICKLE") is PICKLE
    assert get_serializer(PICKLE) is PICKLE
    with pytest.raises(ValueError, match="unknown serializer"):
        get_serializer("yaml")
    with pytest.raises(TypeError):
        get_serializer(42)  # type: ignore[arg-type]


# --- missed invalidations ---------------------------------------------------------------


def test_pending_is_ordered_and_deduplicated() -> None:
    pending = PendingInvalidations(10, "p:*")
    assert pending.snapshot() == {"pending": 0, "overflowed": False}
    assert not pending.active
    pending.add(DELETE, "p:a")
    pending.add(DELETE_PATTERN, "p:u*")
    pending.add(DELETE, "p:a")
    assert pending.snapshot() == {"pending": 2, "overflowed": False}
    plan = pending.take_all()
    assert plan.steps == (Step(DELETE, "p:a"), Step(DELETE_PATTERN, "p:u*"))
    assert plan.overflowed is False
    pending.settle(plan)
    assert pending.active is False
    assert len(pending) == 0


def test_overflow_becomes_one_namespace_drop() -> None:
    pending = PendingInvalidations(2, "p:*")
    for key in ("a", "b", "c", "d"):
        pending.add(DELETE, "p:" + key)
    assert pending.overflowed is True
    plan = pending.take_all()
    assert plan.steps == (Step(DELETE_PATTERN, "p:*"),)
    pending.settle(plan)
    assert pending.active is False
    assert pending.overflowed is False


def test_a_step_recorded_again_during_replay_stays_pending() -> None:
    pending = PendingInvalidations(10, "p:*")
    pending.add(DELETE, "p:a")
    pending.add(DELETE_PATTERN, "p:u*")
    plan = pending.take_all()
    pending.add(DELETE, "p:a")  # invalidated again while the replay was in flight
    pending.add(DELETE_PATTERN, "p:u*")
    pending.add(DELETE, "p:b")
    pending.settle(plan)
    assert pending.active is True
    assert pending.take_all().steps == (
        Step(DELETE, "p:a"),
        Step(DELETE, "p:b"),
        Step(DELETE_PATTERN, "p:u*"),
    )


def test_a_replay_given_back_is_first_in_line_again() -> None:
    pending = PendingInvalidations(10, "p:*")
    for key in ("a", "b", "c"):
        pending.add(DELETE, "p:" + key)
    epoch, taken = pending.take(2)
    assert taken == ["p:a", "p:b"]
    assert pending.covers("p:a")  # still pending while the replay holds it
    pending.untake(epoch, taken)  # the backend failed
    assert pending.take(3)[1] == ["p:a", "p:b", "p:c"]


def test_an_overflow_during_replay_keeps_the_namespace_drop() -> None:
    pending = PendingInvalidations(1, "p:*")
    pending.add(DELETE, "p:a")
    pending.add(DELETE, "p:b")
    plan = pending.take_all()
    pending.add(DELETE, "p:c")  # after the drop was planned: it may postdate the drop
    pending.settle(plan)
    assert pending.overflowed is True
    assert pending.active is True


def test_pending_is_thread_safe() -> None:
    pending = PendingInvalidations(100_000, "p:*")

    def record(worker: int) -> None:
        for i in range(2000):
            pending.add(DELETE, f"p:{worker}:{i}")

    threads = [threading.Thread(target=record, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pending) == 8000
    pending.settle(pending.take_all())
    assert pending.active is False

"""Values <-> bytes for the cache: JSON by default, pickle only when asked for.

Every stored value starts with one format byte, so a reader knows what it holds and
a JSON reader never feeds bytes written by pickle to ``pickle.loads``:

- ``J`` + UTF-8 JSON: str, int, float, bool, None, list, dict (str keys). As with
  ``json.dumps``, tuples come back as lists and non-str dict keys as strings.
  ``bytes`` nested inside a JSON value are stored as ``{"__tasker_bytes__": "<base64>"}``;
  a dict of the caller's own with that single key is refused rather than misread.
- ``B`` + the raw bytes: a top-level ``bytes``/``bytearray`` value is stored as is
  (binary-safe, no base64 overhead) and comes back as ``bytes``.
- ``P`` + a pickle: only the pickle serializer writes or reads these. Pickle runs code
  from the cache on load: use it only when nothing untrusted can write to the cache.
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "JSON",
    "PICKLE",
    "JsonSerializer",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "get_serializer",
]

_JSON_TAG: Final = b"J"
_BYTES_TAG: Final = b"B"
_PICKLE_TAG: Final = b"P"
_JSON_TAG_INT: Final = _JSON_TAG[0]
_BYTES_TAG_INT: Final = _BYTES_TAG[0]
_PICKLE_TAG_INT: Final = _PICKLE_TAG[0]
BYTES_KEY: Final = "__tasker_bytes__"
_BYTES_KEY_JSON: Final = b'"__tasker_bytes__"'
_BYTES_KEY_TEXT: Final = '"__tasker_bytes__"'


class SerializationError(TypeError):
    """A value cannot be stored with the configured serializer (a caller mistake:
    it propagates and never counts against the cache breaker), or stored data
    cannot be read back (the provider treats that as a miss)."""


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back. ``loads`` raises :class:`SerializationError`
    for data it cannot or must not read."""

    name: str

    def dumps(self, value: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


def _encode_nested(obj: Any) -> Any:
    # json's C encoder calls this only for objects it does not know.
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {BYTES_KEY: base64.b64encode(obj).decode("ascii")}
    raise SerializationError(
        f"a {type(obj).__name__} value cannot be stored as JSON; store JSON types "
        "(str, int, float, bool, None, list, dict) or bytes, or configure "
        'serializer = "pickle"'
    )


def _decode_nested(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and BYTES_KEY in obj:
        return base64.b64decode(obj[BYTES_KEY], validate=True)
    return obj


# Built once: json.dumps/loads with options build a new coder per call. Decoding with
# raw_decode is about three times faster than json.loads on small values (no bytes
# sniffing, no slicing): it is the hot path of every hit.
_ENCODER: Final = json.JSONEncoder(
    default=_encode_nested, ensure_ascii=False, separators=(",", ":")
)
_PLAIN_DECODER: Final = json.JSONDecoder()
_TAGGED_DECODER: Final = json.JSONDecoder(object_hook=_decode_nested)


def _reserved_key_used(value: Any) -> bool:
    """True when the caller's own data holds a dict shaped like our bytes tag."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if len(item) == 1 and BYTES_KEY in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


class JsonSerializer:
    """The default: JSON, plus binary-safe bytes (see the module docstring)."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _BYTES_TAG + bytes(value)
        try:
            data = _ENCODER.encode(value).encode("utf-8")
        except SerializationError:
            raise
        except (TypeError, ValueError) as exc:
            # circular reference, bad dict key type, a lone surrogate UTF-8 cannot hold
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc
        except RecursionError:
            raise SerializationError(
                "value cannot be stored as JSON: nested deeper than the encoder can go"
            ) from None
        # Only values that hold our tag string pay for this walk (nested bytes do).
        if _BYTES_KEY_JSON in data and _reserved_key_used(value):
            raise SerializationError(
                f"a dict whose only key is {BYTES_KEY!r} is reserved for bytes values"
            )
        return _JSON_TAG + data

    def loads(self, data: bytes) -> Any:
        tag = data[0] if data else None
        if tag == _JSON_TAG_INT:
            try:
                text = data.decode("utf-8")
                decoder = _TAGGED_DECODER if _BYTES_KEY_TEXT in text else _PLAIN_DECODER
                # raw_decode from index 1 skips the tag without copying the payload.
                value, end = decoder.raw_decode(text, 1)
            except (ValueError, binascii.Error, TypeError, RecursionError) as exc:
                # Written by someone else: not UTF-8 (a ValueError), a bytes tag around
                # a non-string (TypeError from b64decode), nesting deeper than the
                # decoder's stack (RecursionError). Each is a miss, never the caller's
                # exception.
                raise SerializationError(
                    f"stored JSON value is unreadable: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None
            if end != len(text):
                raise SerializationError("stored JSON value has trailing data")
            return value
        if tag == _BYTES_TAG_INT:
            return data[1:]
        if tag == _PICKLE_TAG_INT:
            # Never unpickle in JSON mode: whoever wrote it, it could run code here.
            raise SerializationError("stored value is a pickle; the JSON serializer never loads it")
        raise SerializationError("stored value was not written by tasker-resilience")


class PickleSerializer(JsonSerializer):
    """Opt-in pickle: exact Python types, but loading runs code from the cache."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        try:
            return _PICKLE_TAG + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"value cannot be pickled: {exc}") from exc
        except RecursionError:
            raise SerializationError("value cannot be pickled: nested too deeply") from None

    def loads(self, data: bytes) -> Any:
        if data and data[0] == _PICKLE_TAG_INT:
            try:
                # Opt-in (serializer = "pickle"), and the guide warns: anyone who can
                # write to the cache server can run code in every reader.
                return pickle.loads(data[1:])  # nosec B301 # opt-in, documented risk
            except Exception as exc:
                raise SerializationError(f"stored pickle is unreadable: {exc}") from exc
        # JSON and bytes entries (written before the switch to pickle) stay readable.
        return super().loads(data)


JSON: Final = JsonSerializer()
PICKLE: Final = PickleSerializer()
_BY_NAME: Final[dict[str, Serializer]] = {"json": JSON, "pickle": PICKLE}


def get_serializer(spec: str | Serializer | None, default: Serializer = JSON) -> Serializer:
    """A serializer from a name (``"json"``, ``"pickle"``), an object, or None (``default``)."""
    if spec is None:
        return default
    if isinstance(spec, str):
        try:
            return _BY_NAME[spec.strip().lower()]
        except KeyError:
            raise ValueError(
                f"unknown serializer {spec!r}; choose one of {', '.join(_BY_NAME)} "
                "or pass an object with dumps/loads"
            ) from None
    if isinstance(spec, Serializer):
        return spec
    raise TypeError(f"serializer must be a name or have dumps/loads, not {spec!r}")

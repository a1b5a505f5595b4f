"""Typed hits: a ``@cached`` hit returns the type the function's return annotation names.

JSON knows str, int, float, bool, None, lists and string-keyed dicts. A function
returning anything else used to get something else back on a hit: a tuple came back as
a list, ``{1: "a"}`` as ``{"1": "a"}``, and code broke only on hits. Now:

- **an annotation JSON keeps** (``-> int``, ``-> dict[str, Any]``, ``-> list[str] |
  None``, none at all...): stored and read exactly as before, through the configured
  serializer; the hit path pays nothing. If a result then holds something JSON changes
  (a tuple, a non-string dict key, an enum), one WARNING per function, at its first hit
  after such a result was stored, says what and where (:class:`JsonShapes`);
- **any other annotation** (tuples, sets, dataclasses, datetimes, enums, UUIDs,
  Decimals, msgspec Structs, ``TypedDict``, ``NamedTuple``, pydantic models where
  pydantic is installed, and containers of them): stored as JSON by msgspec and decoded
  following the annotation (:class:`TypedSerializer`). The format byte is JSON's (``J``):
  other readers still read the entry as plain JSON. A result that would not read back
  as the annotation says raises :class:`SerializationError` when it is stored, never
  on a later hit.

msgspec is an optional dependency (``pip install 'tasker-resilience[typed]'``). Without
it an annotation JSON cannot keep is read as JSON, as before, and one WARNING per
function says so. With the ``pickle`` serializer (or a serializer of your own) types are
that serializer's business: nothing here applies.

The annotation is read once, when the function is decorated, or at its first call if it
names something not yet defined then (``from __future__ import annotations`` with a
class defined further down).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import logging
import sys
import threading
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Final, Union

from tasker_resilience._cache.serializers import (
    JSON,
    JsonSerializer,
    SerializationError,
    Serializer,
)

__all__ = ["INSTALL_HINT", "JsonShapes", "ReturnTypes", "TypedSerializer", "json_changes"]

LOGGER = logging.getLogger("tasker_resilience.cache")
INSTALL_HINT: Final = "pip install 'tasker-resilience[typed]'"
_JSON_TAG: Final = b"J"
_JSON_TAG_INT: Final = _JSON_TAG[0]
_SCALARS: Final[frozenset[Any]] = frozenset(
    {Any, object, str, int, float, bool, bytes, type(None), None}
)
"""Annotations JSON returns as themselves (bytes through the serializer's own tag; an
int where float is annotated compares equal)."""
FROZEN_MAX_BYTES: Final = 512
FROZEN_ENTRIES: Final = 1024
"""Typed results nothing can mutate are shared per stored form: up to this many, each
stored in at most ``FROZEN_MAX_BYTES`` (the table starts over when full)."""
_FROZEN_LEAVES: Final[frozenset[type]] = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
    }
)
_SHAPE_BUDGET: Final = 1000
"""Items :func:`json_changes` looks at per stored result: a huge result is checked in
part, not walked whole on every miss."""


# --- which annotations JSON keeps --------------------------------------------------------------


def json_keeps(annotation: Any) -> bool:
    """True when JSON returns values of ``annotation`` as that type (see module docstring)."""
    if annotation in _SCALARS or isinstance(annotation, typing.TypeVar):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return json_keeps(args[0])
    if origin is Union or origin is getattr(types, "UnionType", None):
        return all(json_keeps(arg) for arg in args)
    if origin is typing.Literal:
        return all(type(arg) in (str, int, bool, type(None)) for arg in args)
    if annotation is list or origin is list:
        return all(json_keeps(arg) for arg in args)
    if annotation is dict or origin is dict:
        return not args or (args[0] in (str, Any) and json_keeps(args[1]))
    supertype = getattr(annotation, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return json_keeps(supertype)
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation)
        return all(json_keeps(hint) for hint in hints.values())
    return False


# --- typed storage ------------------------------------------------------------------------------


def _is_pydantic_model(cls: Any) -> bool:
    # Never imports pydantic: a model can only exist if pydantic was imported already.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and _plain_class(cls) and issubclass(cls, pydantic.BaseModel)


def _enc_hook(obj: Any) -> Any:
    if _is_pydantic_model(type(obj)):
        return obj.model_dump(mode="json")
    raise NotImplementedError(f"a {type(obj).__qualname__} cannot be stored as JSON")


def _dec_hook(annotation: Any, obj: Any) -> Any:
    if _is_pydantic_model(annotation):
        return annotation.model_validate(obj)
    raise NotImplementedError(f"cannot read {annotation!r} from JSON")


class TypedSerializer:
    """JSON by msgspec, decoded following one annotation: ``dumps`` takes a ``@cached``
    envelope (``[result]``, or ``[result, expires_at, delta]`` when ``rich``), ``loads``
    returns it with the result typed."""

    name = "json"

    def __init__(self, annotation: Any, owner: str, *, rich: bool) -> None:
        import msgspec

        self.annotation = annotation
        self._owner = owner
        self._encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode
        envelope: Any = tuple[annotation, float, float] if rich else list[annotation]
        self._decode = msgspec.json.Decoder(envelope, dec_hook=_dec_hook).decode
        # NotImplementedError: what the hooks raise for a type neither knows.
        self._errors: tuple[type[Exception], ...] = (
            msgspec.MsgspecError,
            TypeError,
            ValueError,
            NotImplementedError,
        )
        # Stored form -> decoded envelope whose result is immutable (see loads). The
        # envelope itself is only ever unwrapped by the reader, never handed out.
        self._frozen: dict[bytes, Any] = {}

    def dumps(self, value: Any) -> bytes:
        try:
            data = self._encode(value)
        except self._errors as exc:
            raise SerializationError(
                f"@cached {self._owner}: result cannot be stored as JSON: {exc}"
            ) from None
        try:
            # The round trip a hit will make, made now: a result that does not read back
            # as the annotation says fails its own call, not a later hit.
            self._decode(data)
        except self._errors as exc:
            raise SerializationError(
                f"@cached {self._owner}: result would not read back as "
                f"{_describe(self.annotation)}: {exc}"
            ) from None
        return _JSON_TAG + data

    def loads(self, data: bytes) -> Any:
        # A value nothing can mutate (a tuple of numbers, a frozenset, an enum...) is
        # decoded once per stored form and shared, as str and int hits are.
        known = self._frozen.get(data)
        if known is not None:
            return known
        if not data or data[0] != _JSON_TAG_INT:
            raise SerializationError(f"stored value is not typed JSON for {self._owner}")
        try:
            value = self._decode(data[1:])
        except self._errors as exc:
            # Written by an older version of the function, or by someone else: a miss
            # (the caller recomputes and overwrites), never the caller's exception.
            raise SerializationError(
                f"stored value does not read as {_describe(self.annotation)}: {exc}"
            ) from None
        if len(data) <= FROZEN_MAX_BYTES and _immutable(value[0]):
            frozen = self._frozen
            if len(frozen) >= FROZEN_ENTRIES:
                frozen.clear()
            frozen[data] = value
        return value

    def __repr__(self) -> str:
        return f"<TypedSerializer {_describe(self.annotation)} for {self._owner}>"


def _immutable(value: Any, depth: int = 0) -> bool:
    """True when nothing can change ``value``: exact immutable leaves (enum members too),
    and tuples and frozensets of them."""
    cls = type(value)
    if cls in _FROZEN_LEAVES or isinstance(value, enum.Enum):
        return True
    if (cls is tuple or cls is frozenset) and depth < 8:
        return all(_immutable(item, depth + 1) for item in value)
    return False


def _plain_class(annotation: Any) -> bool:
    # Not isinstance(annotation, type) alone: on 3.10 ``tuple[int, int]`` passes it.
    return isinstance(annotation, type) and typing.get_origin(annotation) is None


def _describe(annotation: Any) -> str:
    if _plain_class(annotation):
        return str(annotation.__qualname__)
    return repr(annotation).replace("typing.", "")


class ReturnTypes:
    """How one decorated function's results are stored: typed, or as plain JSON.

    Built by :meth:`of` only for functions whose annotation JSON may not keep; the
    wrapper asks :meth:`serializer` on every call (the answer is settled after the
    first)."""

    def __init__(self, func: Callable[..., Any], owner: str, shapes: JsonShapes) -> None:
        self._func = func
        self._owner = owner
        self._shapes = shapes
        self._settled = False
        self._lock = threading.Lock()
        self._plain: Serializer | None = None
        self._rich: Serializer | None = None
        # (None, ...) matches no serializer: the first call asks serializer().
        self.last: tuple[Serializer | None, Serializer] = (None, JSON)

    @classmethod
    def of(cls, func: Callable[..., Any], owner: str, shapes: JsonShapes) -> ReturnTypes | None:
        """None when hits need no typing: no return annotation, or one JSON keeps."""
        annotations = getattr(func, "__annotations__", None) or {}
        if "return" not in annotations:
            return None
        try:
            annotation = _return_annotation(func)
        except Exception:
            return cls(func, owner, shapes)  # a forward reference: settled at the first call
        return None if json_keeps(annotation) else cls(func, owner, shapes)

    @property
    def typed(self) -> bool:
        """True once settled with typed decoding (msgspec, an annotation JSON changes)."""
        return self._plain is not None

    def serializer(self, base: Serializer, rich: bool = False) -> Serializer:
        """What stores and reads this function's entries when ``base`` is configured.
        The last answer for plain entries is kept in :attr:`last` (``(base, chosen)``),
        which the hit path reads first (an identity check instead of this call)."""
        if not self._settled:
            self._settle()
        if type(base) is not JsonSerializer:
            chosen = base  # pickle, or the user's own: their types are theirs
        else:
            typed = self._rich if rich else self._plain
            chosen = base if typed is None else typed
        if not rich:
            self.last = (base, chosen)  # one tuple: a reader never sees half of it
        return chosen

    def _settle(self) -> None:
        with self._lock:
            if self._settled:
                return
            try:
                annotation = _return_annotation(self._func)
            except Exception as exc:
                self._shapes.done = True  # this WARNING is the one the function gets
                LOGGER.warning(
                    "@cached %s: its return annotation cannot be resolved (%s: %s); hits "
                    "return what JSON reads back",
                    self._owner,
                    type(exc).__name__,
                    exc,
                )
            else:
                if not json_keeps(annotation):
                    self._plain, self._rich = self._build(annotation)
            self._settled = True

    def _build(self, annotation: Any) -> tuple[Serializer | None, Serializer | None]:
        try:
            import msgspec  # noqa: F401  # optional: the 'typed' extra
        except ImportError:
            self._shapes.done = True  # this WARNING is the one the function gets
            LOGGER.warning(
                "@cached %s returns %s, which JSON does not keep: hits return JSON types "
                "(lists, string keys...) until msgspec is installed (%s)",
                self._owner,
                _describe(annotation),
                INSTALL_HINT,
            )
            return None, None
        try:
            return (
                TypedSerializer(annotation, self._owner, rich=False),
                TypedSerializer(annotation, self._owner, rich=True),
            )
        except TypeError as exc:
            self._shapes.done = True  # this WARNING is the one the function gets
            LOGGER.warning(
                "@cached %s: hits cannot be decoded as %s (%s); they return what JSON reads back",
                self._owner,
                _describe(annotation),
                exc,
            )
            return None, None


def _return_annotation(func: Callable[..., Any]) -> Any:
    return typing.get_type_hints(func).get("return", Any)


# --- what JSON would change, for untyped functions ----------------------------------------------

_PLAIN_LEAVES: Final[frozenset[type]] = frozenset(
    {str, int, float, bool, type(None), bytes, bytearray}
)


def json_changes(value: Any, budget: int = _SHAPE_BUDGET) -> str | None:
    """Where JSON would hand back ``value`` (a ``@cached`` result) as another type: the
    first such place found, described, or None. Looks at ``budget`` items at most."""
    # (item, index of its container, its key there): paths are spelled only when found.
    seen: list[tuple[Any, int, Any]] = [(value, -1, None)]
    pending = [0]
    while pending and budget > 0:
        at = pending.pop()
        item = seen[at][0]
        budget -= 1
        cls = type(item)
        if cls in _PLAIN_LEAVES:
            continue
        if cls is list:
            for i, inner in enumerate(item):
                pending.append(len(seen))
                seen.append((inner, at, i))
        elif cls is dict:
            for key, inner in item.items():
                if type(key) is not str:
                    return (
                        f"{_path(seen, at)} has the {type(key).__name__} key {key!r}, which "
                        f"a hit returns as the string {str(key)!r}"
                    )
                pending.append(len(seen))
                seen.append((inner, at, key))
        elif isinstance(item, tuple):
            return f"{_path(seen, at)} is a {cls.__name__}, which a hit returns as a list"
        elif isinstance(item, (str, int, float, list, dict)):
            # An enum of str/int, a str or dict subclass...: JSON keeps the plain value.
            return (
                f"{_path(seen, at)} is a {cls.__name__}, which a hit returns as a plain "
                f"{_base(item)}"
            )
        # Anything else JSON refuses when it is stored: nothing to warn about.
    return None


def _path(seen: list[tuple[Any, int, Any]], at: int) -> str:
    keys = []
    while at > 0:
        _, at, key = seen[at]
        keys.append(f"[{key!r}]")
    return "result" + "".join(reversed(keys))


def _base(item: Any) -> str:
    for base in (bool, int, float, str, list, dict):
        if isinstance(item, base):
            return base.__name__
    return type(item).__name__


class JsonShapes:
    """One WARNING per function, at its first hit after a result JSON changes was stored.

    Results are looked at (:func:`json_changes`) when they are stored, on a miss where
    the function just ran, until the warning has been given; :meth:`hit` gives it."""

    __slots__ = ("_owner", "done", "pending")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self.done = False
        self.pending: str | None = None

    def stored(self, serializer: Serializer, result: Any) -> bool:
        """Look at a result just stored; True when a warning now waits for the next hit."""
        if self.done or self.pending is not None or type(serializer) is not JsonSerializer:
            return False
        self.pending = json_changes(result)
        return self.pending is not None

    def hit(self) -> None:
        change = self.pending
        if change is None or self.done:
            return
        self.done = True
        self.pending = None
        LOGGER.warning(
            "@cached %s: a hit does not return what the function returned: %s. Annotate "
            "the return type (hits then follow it; needs msgspec: %s), return JSON types, "
            'or use serializer="pickle"',
            self._owner,
            change,
            INSTALL_HINT,
        )

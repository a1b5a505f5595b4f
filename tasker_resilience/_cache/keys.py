"""Cache keys for ``@cached`` and glob escaping for key patterns.

A ``@cached`` key is ``namespace:module.qualname:version:digest``; the provider puts
``key_prefix:`` in front. The digest hashes a canonical, type-tagged encoding of the
call's arguments *bound to the signature*, so:

- ``f(1, 2)``, ``f(1, b=2)`` and ``f(a=1, b=2)`` share a key, and so does ``f(1)``
  when ``b`` defaults to 2 (defaults are applied);
- ``f("a b")`` and ``f("a", "b")`` differ (strings are length-prefixed, arity is encoded);
- ``1``, ``1.0``, ``"1"`` and ``True`` differ (every value carries its type).

Supported argument types: None, bool, int, float, str, bytes, tuple, list, dict, set,
frozenset, Enum, date/time/datetime/timedelta, Decimal, UUID, paths, classes, and
dataclass instances (by type and fields). Any other object must define
``__cache_key__(self)`` returning a supported value; otherwise ``@cached`` raises
``TypeError`` and asks for ``key=``. Falling back to ``repr`` would put memory
addresses into keys: never a hit across processes, and two objects that reuse one
address would share an entry.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import inspect
import pathlib
import uuid
from collections.abc import Callable
from typing import Any, Final

__all__ = ["KeyBuilder", "canonical", "digest", "escape_glob", "function_id"]

_GLOB_SPECIAL: Final = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def escape_glob(text: str) -> str:
    """``text`` as a literal inside a Redis-style glob pattern (``*?[]\\`` escaped)."""
    return text.translate(_GLOB_SPECIAL)


def _text(tag: str, text: str) -> str:
    # Length-prefixing makes the encoding prefix-free: no two different argument
    # lists can concatenate to the same string.
    return f"{tag}{len(text)}:{text}"


_PLAIN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (int, int),
    (float, float),
    (str, str),
    (bytes, bytes),
    (tuple, tuple),
    (list, list),
    (dict, dict),
    (frozenset, frozenset),
    (set, set),
)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def canonical(value: Any) -> str:
    """An unambiguous, type-tagged text for ``value`` (raises ``TypeError`` if unsupported)."""
    if value is None:
        return "N"
    cls = type(value)
    if cls is bool:
        return "T" if value else "F"
    if isinstance(value, enum.Enum):
        # Before int/str: IntEnum/StrEnum members must not collide with their values.
        return "E" + _text("", _qualified(cls)) + canonical(value.value)
    if cls is int:
        return _text("i", str(value))
    if cls is float:
        return _text("f", repr(value))
    if cls is str:
        return _text("s", value)
    if cls is bytes:
        return _text("y", value.hex())
    if cls is tuple or cls is list:
        return f"{'t' if cls is tuple else 'l'}{len(value)}(" + "".join(map(canonical, value)) + ")"
    if cls is dict:
        items = sorted((canonical(k), canonical(v)) for k, v in value.items())
        return f"d{len(items)}(" + "".join(k + v for k, v in items) + ")"
    if cls is set or cls is frozenset:
        members = sorted(map(canonical, value))
        return f"{'S' if cls is set else 'Z'}{len(members)}(" + "".join(members) + ")"
    custom = getattr(value, "__cache_key__", None)
    if custom is not None and not isinstance(value, type):
        return "K" + _text("", _qualified(cls)) + canonical(custom())
    if isinstance(value, type):
        return _text("C", _qualified(value))
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date subclass
        return _text("D", _qualified(cls)) + _text("", value.isoformat())
    if isinstance(value, (datetime.timedelta, decimal.Decimal, uuid.UUID, pathlib.PurePath)):
        return _text("V", _qualified(cls)) + _text("", str(value))
    if dataclasses.is_dataclass(value):
        fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        return _text("A", _qualified(cls)) + canonical(fields)
    # Subclasses of the builtins (a str subclass, a defaultdict...) keep their type
    # in the key so they cannot collide with the plain builtin.
    for base, plain in _PLAIN:
        if isinstance(value, base):
            return _text("X", _qualified(cls)) + canonical(plain(value))
    raise TypeError(
        f"cannot build a cache key from a {_qualified(cls)} argument; define "
        f"__cache_key__(self) on it, or give @cached(key=...) a key function"
    )


def digest(text: str) -> str:
    """32 hex characters (128 bits) of BLAKE2b over ``text``."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def function_id(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, the part of the key that names it."""
    module = getattr(func, "__module__", None) or "<unknown>"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}.{qualname}"


_MEMO_TYPES: Final[frozenset[type]] = frozenset({str, int, bool, bytes, type(None)})
"""Argument types a key may be remembered for: within one of these exact types,
equal values have equal canonical texts (unlike float: ``0.0 == -0.0``), and their
hashes never raise or run user code. The memo is keyed by the types too, since
``1 == 1.0 == True``."""
MEMO_SIZE: Final = 1024
"""Remembered keys per decorated function; the memo starts over when full."""
_MEMO_MAX_TEXT: Final = 256
"""Longer str/bytes arguments are not remembered (the memo would keep them alive)."""


class KeyBuilder:
    """Builds the provider-level key (without ``key_prefix``) of one decorated function.

    Keys of positional calls with small str/int/bool/bytes/None arguments are
    remembered: building one (canonical text plus BLAKE2b) costs more than the rest
    of a memory-cache hit, and the same arguments come back on every hit.
    """

    __slots__ = (
        "_custom",
        "_defaults",
        "_labels",
        "_memo",
        "_required",
        "_signature",
        "base",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        namespace: str,
        version: str,
        custom: Callable[..., Any] | None = None,
    ) -> None:
        for label, part in (("namespace", namespace), ("version", version)):
            if not isinstance(part, str) or not part or ":" in part:
                raise ValueError(f"@cached {label} must be a non-empty string without ':'")
        self.base: Final = f"{namespace}:{function_id(func)}:{version}:"
        """``namespace:module.qualname:version:`` (for ``delete_pattern(base + "*")``)."""
        self._custom = custom
        self._signature = inspect.signature(func)
        # For the common shape (only positional-or-keyword parameters, called
        # positionally) the binding is a zip: ``Signature.bind`` + ``apply_defaults``
        # cost more than the rest of a memory-cache hit. Other shapes take the slow path.
        params = list(self._signature.parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        simple = all(p.kind in positional for p in params)
        self._labels: tuple[str, ...] | None = (
            tuple(_text("", p.name) for p in params) if simple else None
        )
        self._defaults = tuple(p.default for p in params)
        self._required = sum(p.default is inspect.Parameter.empty for p in params)
        # A key function may read more than its arguments, and a mutable default may
        # change between calls: then every call builds its key.
        memoisable = custom is None and all(
            p.default is inspect.Parameter.empty or type(p.default) in _MEMO_TYPES for p in params
        )
        self._memo: dict[tuple[Any, Any], str] | None = {} if memoisable else None

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        memo = self._memo
        if memo is None or kwargs:
            return self._build(args, kwargs)
        # (types, values): never a user __hash__ or __eq__, as only _MEMO_TYPES get in.
        if len(args) == 1:
            arg = args[0]
            slot: tuple[Any, Any] = (type(arg), arg)
            known = slot[0] in _MEMO_TYPES
        else:
            types = tuple(map(type, args))
            slot = (types, args)
            known = _MEMO_TYPES.issuperset(types)
        if not known:
            return self._build(args, kwargs)
        key = memo.get(slot)
        if key is None:
            key = self._build(args, kwargs)
            if all(type(arg) not in (str, bytes) or len(arg) <= _MEMO_MAX_TEXT for arg in args):
                if len(memo) >= MEMO_SIZE:
                    memo.clear()
                memo[slot] = key
        return key

    def _build(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self._custom is not None:
            made = self._custom(*args, **kwargs)
            # A string from the user's key function is used as is (readable keys,
            # patterns); anything else is digested like arguments.
            return self.base + (made if isinstance(made, str) else digest(canonical(made)))
        labels = self._labels
        if labels is not None and not kwargs and self._required <= len(args) <= len(labels):
            # Exactly what bind + apply_defaults yield: arguments in signature order,
            # missing trailing ones from their defaults.
            parts = [label + canonical(value) for label, value in zip(labels, args, strict=False)]
            for index in range(len(args), len(labels)):
                parts.append(labels[index] + canonical(self._defaults[index]))
            return self.base + digest("".join(parts))
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        parts = [_text("", name) + canonical(value) for name, value in bound.arguments.items()]
        return self.base + digest("".join(parts))

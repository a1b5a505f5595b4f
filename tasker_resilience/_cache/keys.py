"""Cache keys for ``@cached`` and glob escaping for key patterns.

A ``@cached`` key is ``namespace:module.qualname:version:digest``; the provider puts
``key_prefix:`` in front. The digest is BLAKE2b (128 bits, 32 hex digits) over a
canonical, type-tagged encoding (:func:`encode`) of the call's arguments *bound to
the signature*, or, for an encoding of at most ``RAW_MAX_BYTES`` bytes, the encoding
itself in hex after an ``x``, so:

- ``f(1, 2)``, ``f(1, b=2)`` and ``f(a=1, b=2)`` share a key, and so does ``f(1)``
  when ``b`` defaults to 2 (defaults are applied);
- ``f("a b")`` and ``f("a", "b")`` differ (lengths and arity are encoded);
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
import functools
import hashlib
import inspect
import marshal
import pathlib
import types
import uuid
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "KeyBuilder",
    "canonical",
    "digest",
    "encode",
    "escape_glob",
    "function_id",
    "function_identity",
]

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
    """``module.qualname`` of a function (of a callable object: of its class)."""
    named: Any = func if hasattr(func, "__qualname__") else type(func)
    return f"{getattr(named, '__module__', None) or '<unknown>'}.{named.__qualname__}"


def function_identity(func: Callable[..., Any], *, captured: bool = True) -> str:
    """The part of a ``@cached`` key that names ``func``: the same in every process
    running the same code, and different for any two functions that may compute
    different results.

    ``module.qualname`` names a module-level function or a method. A lambda, or a
    function defined inside another (``<locals>`` in its qualname), adds its definition
    site: ``@line``, and for a lambda a digest of its body (two lambdas may share a
    line). A closure adds a digest of the values it captures, encoded like arguments;
    a ``functools.partial``, of its bound arguments; a callable object, of itself (its
    ``__cache_key__``, or a dataclass's fields). ``captured=False`` (with an explicit
    ``key=``) leaves captured values out: such functions may share entries on purpose.

    Raises ``TypeError`` naming ``key=`` and ``namespace=`` when a captured value cannot
    be encoded: closures of one factory would otherwise share entries.
    """
    return _identity(func, captured, set())


def _identity(func: Any, captured: bool, seen: set[int]) -> str:
    if isinstance(func, types.MethodType):
        # A bound method: its object is state, as a closure's captured values are.
        name = _identity(func.__func__, captured, seen)
        if not captured:
            return name
        return name + "+" + _captured_digest(func, [("self", func.__self__)], seen)
    if isinstance(func, functools.partial):
        name = _identity(func.func, captured, seen)
        if not captured:
            return name
        bound = [("*", list(func.args)), ("**", dict(func.keywords))]
        return name + "+" + _captured_digest(func, bound, seen)
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType):
        name = function_id(func)
        if captured and not isinstance(func, (types.BuiltinFunctionType, type)):
            # A callable object: its state is what a closure's captured values are.
            name += "+" + _captured_digest(func, [("self", func)], seen)
        return name
    name = function_id(func)
    qualname = func.__qualname__
    local = "<locals>" in qualname
    if local or "<lambda>" in qualname:
        name += f"@{code.co_firstlineno}"
        if qualname.rsplit(".", 1)[-1] == "<lambda>":
            name += "~" + _body_digest(code)
    closure = func.__closure__
    if captured and local and closure:
        seen = seen | {id(func)}
        values = []
        for variable, cell in zip(code.co_freevars, closure, strict=True):
            try:
                values.append((variable, cell.cell_contents))
            except ValueError:  # not assigned yet (a function decorated before its name)
                values.append((variable, _UNASSIGNED))
        name += "+" + _captured_digest(func, values, seen)
    return name


_UNASSIGNED: Final = ("unassigned cell",)


def _body_digest(code: types.CodeType) -> str:
    """8 hex digits over a code object's bytecode, names and plain constants."""
    parts: list[Any] = [code.co_code, code.co_names]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            parts.append(_body_digest(constant))
        elif type(constant) in _SCALARS or constant is None:
            parts.append(constant)
    return hashlib.blake2b(marshal.dumps(tuple(parts), 2), digest_size=4).hexdigest()


def _captured_digest(func: Any, values: list[tuple[str, Any]], seen: set[int]) -> str:
    """16 hex digits over the encoded captured ``values`` of ``func``."""
    encoded = []
    for variable, value in values:
        try:
            encoded.append((variable, _captured_text(value, seen)))
        except (TypeError, RecursionError):
            raise TypeError(
                f"@cached cannot tell {function_id(func)} apart from other functions made "
                f"the same way: it captures {variable!r}, a {type(value).__qualname__}, which "
                "cannot be encoded into its cache key (closures of one factory, or partials "
                "of one function, would share entries). Give @cached(key=...) a key "
                "function (then every function with the same namespace= and key shares "
                "entries: give each a namespace= of its own if they must not), or give "
                "that value a __cache_key__(self) method"
            ) from None
    return digest(canonical(encoded))[:16]


def _captured_text(value: Any, seen: set[int]) -> str:
    """A captured value's canonical text; functions by their identity (cycles cut)."""
    if value is _UNASSIGNED:
        return "unassigned"
    if isinstance(value, types.ModuleType):
        return _text("M", value.__name__)
    if isinstance(value, (functools.partial, types.MethodType)) or inspect.isfunction(value):
        target = inspect.unwrap(value)  # a @cached function: the function it caches
        if id(target) in seen:
            return _text("R", function_id(target))  # itself, or a function calling it back
        return _text("F", _identity(target, True, seen | {id(target)}))
    if isinstance(value, types.BuiltinFunctionType):
        owner = getattr(value, "__self__", None)
        if not (owner is None or isinstance(owner, types.ModuleType)):
            raise TypeError("a bound built-in method")  # its object's state is not encodable
        return _text("B", function_id(value))
    return canonical(value)


_SCALARS: Final[frozenset[type]] = frozenset({type(None), bool, int, float, str, bytes})
"""Argument types encoded as themselves (by ``marshal``, which tags each with its type)."""
_SEQUENCES: Final[frozenset[type]] = frozenset({tuple, list})
_SPECIAL: Final = Ellipsis
"""Marks a value given by its canonical text. ``canonical`` rejects ``Ellipsis`` and
plain values never contain it, so no argument can encode like a marked value."""
_EMPTY: Final = inspect.Parameter.empty
MEMO_SIZE: Final = 1024
"""Remembered keys per decorated function; the memo starts over when full."""
_MEMO_MAX_BYTES: Final = 512
"""Encodings longer than this are not remembered (the memo would keep them alive)."""
_dumps = marshal.dumps


def _is_plain(value: Any) -> bool:
    """True for exact None/bool/int/float/str/bytes, and exact tuples/lists of those."""
    cls = type(value)
    if cls in _SCALARS:
        return True
    return cls in _SEQUENCES and all(map(_is_plain, value))


def _normal(value: Any) -> Any:
    """``value`` as it is encoded: plain values as themselves, anything else marked with
    its canonical text (so a dict, a set or a dataclass gets one stable encoding)."""
    cls = type(value)
    if cls in _SCALARS:
        return value
    if cls is tuple:
        return tuple(map(_normal, value))
    if cls is list:
        return list(map(_normal, value))
    return (_SPECIAL, canonical(value))


_NUMBERS: Final[frozenset[type]] = frozenset({float, bool, type(None)})
"""Single arguments spelled out on every call (at most 11 bytes of ``marshal``)."""
_MEMO_TYPES: Final[frozenset[type]] = frozenset({str, bytes})
"""Single arguments whose key is remembered by ``(type, value)``: within one of these
exact types, equal values have equal encodings, and their hashes never raise or run
user code."""
_TEXTS: Final = (str, bytes)
_MEMO_ITEMS: Final[frozenset[type]] = frozenset({str, int, bytes, type(None)})
"""Tuple items a remembered key allows: no two of these types have equal values."""
_MEMO_MAX_ITEMS: Final = 16
"""Longer tuple arguments are encoded instead (building the slot would cost as much)."""


def encode(values: tuple[Any, ...]) -> bytes:
    """The canonical bytes of a call's bound argument values (in signature order).

    ``marshal`` format 2 writes every value with its exact type (``1``, ``1.0``,
    ``True``, ``"1"``, ``b"1"``, ``(1,)`` and ``[1]`` all differ; ``-0.0`` is not
    ``0.0``), lengths before contents, and no back-references, so equal plain values
    give equal bytes in every process and different ones never do. Anything else goes
    through :func:`canonical` first (see :func:`_normal`).
    """
    if not _SCALARS.issuperset(map(type, values)):
        for value in values:
            cls = type(value)
            if cls in _SCALARS or (
                cls in _SEQUENCES
                and (_SCALARS.issuperset(map(type, value)) or all(map(_is_plain, value)))
            ):
                continue
            values = tuple(map(_normal, values))
            break
    return _dumps(values, 2)


class KeyBuilder:
    """Builds the provider-level key (without ``key_prefix``) of one decorated function.

    Precompiled per signature: the argument values are put in signature order
    (defaults applied, keywords placed by name) without ``Signature.bind``, which
    is kept for the shapes that need it (``*args``, ``**kwargs``, and calls that
    ``bind`` would reject, so the caller sees Python's own ``TypeError``). Keys of
    calls whose arguments are plain values are remembered by their encoding: the
    BLAKE2b digest costs more than the rest of a memory-cache hit.
    """

    __slots__ = (
        "_arity",
        "_custom",
        "_defaults",
        "_index",
        "_ints",
        "_memo",
        "_positional",
        "_raw",
        "_required",
        "_signature",
        "_simple",
        "_typed",
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
        identity = function_identity(func, captured=custom is None)
        self.base: Final = f"{namespace}:{identity}:{version}:"
        """``namespace:module.qualname:version:`` (for ``delete_pattern(base + "*")``)."""
        self._raw = self.base + "x"  # before a spelled-out encoding (see _digest)
        self._custom = custom
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())
        kinds = [p.kind for p in params]
        # Without *args/**kwargs every call binds to one value per parameter, which a
        # tuple in signature order says exactly.
        self._simple = inspect.Parameter.VAR_POSITIONAL not in kinds and (
            inspect.Parameter.VAR_KEYWORD not in kinds
        )
        self._positional = sum(
            kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for kind in kinds
        )
        self._defaults = tuple(p.default for p in params)
        # Positional-only parameters stay out: passing them by name is a TypeError.
        self._index = {
            p.name: i
            for i, p in enumerate(params)
            if p.kind is not inspect.Parameter.POSITIONAL_ONLY
        }
        # Fewest positional arguments a keyword-free call may have.
        self._required = max(
            (i + 1 for i, p in enumerate(params[: self._positional]) if p.default is _EMPTY),
            default=0,
        )
        required_keyword_only = any(
            p.default is _EMPTY and p.kind is inspect.Parameter.KEYWORD_ONLY for p in params
        )
        if required_keyword_only:
            self._required = len(params) + 1  # never satisfied without keywords
        # A key function may read more than its arguments: then every call builds its key.
        self._memo: dict[Any, str] | None = {} if custom is None else None
        self._ints: dict[int, str] = {}
        # Calls with exactly this many positional arguments and no keywords bind to
        # them as they are (-1: no such calls, e.g. with keyword-only parameters).
        self._arity = len(params) if self._simple and self._positional == len(params) else -1
        # Keys remembered by (type, value) must not depend on a default that can change.
        self._typed = all(p.default is _EMPTY or type(p.default) in _SCALARS for p in params)

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The call's argument values in signature order, defaults applied (what
        ``Signature.bind`` + ``apply_defaults`` give, without them where possible)."""
        count = len(args)
        # More positional arguments than positional parameters: bind raises.
        if self._simple and count <= self._positional:
            defaults = self._defaults
            if not kwargs:
                if count == len(defaults):
                    return args
                if self._required <= count:
                    return args + defaults[count:]
            else:
                placed = [*args, *defaults[count:]]
                index = self._index
                for name, value in kwargs.items():
                    at = index.get(name, -1)
                    if at < count:  # unknown name, or given twice: bind says which
                        break
                    placed[at] = value
                else:
                    # ``is``, not ``in``: a value's own __eq__ must not run here.
                    if not any(value is _EMPTY for value in placed):
                        return tuple(placed)
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments.values())

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        try:
            memo = self._memo
            if memo is None:
                return self._custom_key(args, kwargs)
            if not kwargs and len(args) == self._arity:
                # The common shape, a call with every argument in place.
                if self._arity == 1:
                    arg = args[0]
                    cls = type(arg)
                    if cls is int:
                        # Ids, the most common argument: remembered by value alone (only
                        # exact ints reach this dict, so True cannot find 1's key).
                        key = self._ints.get(arg)
                        if key is None:
                            # _digest and _remember written out: calling them costs ~0.18 us
                            # per new id (measured), a fifth of the key on the 100k-ids path.
                            data = _dumps(args, 2)
                            key = (
                                self._raw + data.hex()
                                if len(data) <= RAW_MAX_BYTES
                                else (self.base + _digest(data))
                            )
                            if len(self._ints) >= MEMO_SIZE:
                                self._ints.clear()
                            self._ints[arg] = key
                        return key
                    if cls in _NUMBERS:
                        # float (0.0 == -0.0 but they encode apart), bool, None: a few bytes
                        # to spell out, cheaper than remembering.
                        return self._raw + _dumps(args, 2).hex()
                    if self._typed:
                        # Within one of these exact types equal values encode alike, and the
                        # type in the slot keeps "1" and b"1" apart: no encoding needed.
                        slot: Any = None
                        if cls in _MEMO_TYPES:
                            if len(arg) <= _MEMO_MAX_BYTES:
                                slot = (cls, arg)
                        elif (
                            cls is tuple
                            and len(arg) <= _MEMO_MAX_ITEMS
                            and _MEMO_ITEMS.issuperset(map(type, arg))
                        ):
                            # Among int, str, bytes and None only equal values of one type are
                            # equal (bool, whose True == 1, is left out): the tuple is the slot.
                            slot = (cls, arg)
                            for item in arg:  # a plain loop: no generator frame
                                if type(item) in _TEXTS and len(item) > _MEMO_MAX_BYTES:
                                    slot = None
                                    break
                        if slot is not None:
                            key = memo.get(slot)
                            if key is None:
                                key = self.base + _digest(encode(args))
                                self._remember(memo, slot, key)
                            return key
                values = args
            else:
                values = self.values(args, kwargs)
            data = encode(values)
            if len(data) <= RAW_MAX_BYTES:
                return self._raw + data.hex()  # spelled out: cheaper than the memo
            key = memo.get(data)
            if key is None:
                key = self.base + _digest(data)
                if len(data) <= _MEMO_MAX_BYTES:
                    self._remember(memo, data, key)
            return key
        except RecursionError:
            # A value that contains itself (or nests past what can be encoded).
            raise self._unencodable(args, kwargs) from None

    def _unencodable(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TypeError:
        """The TypeError for a call whose key cannot be built, naming the argument."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            return exc
        what = "the value returned by the key= function"
        for name, value in bound.arguments.items():
            try:
                encode((value,))
            except (RecursionError, ValueError):
                what = f"argument {name!r}"
                break
        return TypeError(
            f"cannot build a cache key from {what}: it contains itself, or is nested too "
            "deeply to encode; give @cached(key=...) a key function"
        )

    @staticmethod
    def _remember(memo: dict[Any, str], slot: Any, key: str) -> None:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[slot] = key

    def _custom_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert self._custom is not None
        made = self._custom(*args, **kwargs)
        # A string from the user's key function is used as is (readable keys,
        # patterns); anything else is digested like arguments.
        if isinstance(made, str):
            return self.base + made
        return self.base + _digest(encode((made,)))


RAW_MAX_BYTES: Final = 24
"""Encodings up to this long are spelled out (``x`` + hex) instead of hashed: cheaper
than BLAKE2b, and injective, so never a collision. The ``x`` keeps them apart from
the 32-hex-digit digests of longer encodings."""


def _digest(data: bytes) -> str:
    if len(data) <= RAW_MAX_BYTES:
        return "x" + data.hex()
    return hashlib.blake2b(data, digest_size=16).hexdigest()

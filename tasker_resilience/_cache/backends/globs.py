"""Redis glob patterns, matched exactly as the server matches them.

Redis matches ``SCAN MATCH`` (and ``KEYS``) patterns with ``stringmatchlen`` in its
``util.c``, over the key's *bytes*. Its rules differ from ``fnmatch`` and from a naive
translation in ways that matter when an in-process tier must drop what a server-side
``delete_pattern`` dropped:

- ``?`` and a ``[...]`` class match one **byte** (a non-ASCII character is several);
- in a class, ``x-y`` is a range whenever two more pattern bytes follow the ``x``,
  the closing ``]`` included: ``[b-]`` is the range ``b``..``]`` (swapped, as every
  reversed range is: ``]^_`ab``), and the class goes on to the next ``]``;
- a class that never closes ends with the pattern and still matches one byte
  (``[ab`` matches ``a``; ``[^`` matches any byte); a lone ``[`` at the end matches
  nothing;
- ``\\`` makes the next byte literal, in and out of classes; a trailing ``\\`` is a
  literal backslash;
- range ends compare as C ``char``, signed on the x86-64 builds this targets: a range
  between an ASCII byte and a byte of 0x80 or more covers what signed comparison
  covers (``PatternMatcher(..., either_sign=True)`` covers both readings, for callers
  that must never match less than the server);
- an empty key matches only the empty pattern (``*`` included: no match);
- a pattern whose matching recurses through more than 1000 ``*`` (Redis's guard
  against abusive patterns) matches nothing.

The pattern is translated once into a regular expression over the key's bytes, each
byte seen as one character (``latin-1``), so a match costs one ``re`` call; ASCII keys,
whose bytes are their characters, are matched without re-encoding.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_STAR_NESTING", "PatternMatcher", "glob_to_regex"]

MAX_STAR_NESTING: Final = 1000
"""``stringmatchlen`` gives up (no match) past this many nested ``*`` recursions."""

_ALL_BYTES: Final = range(256)


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _in_range(byte: int, start: int, end: int, signed: bool) -> bool:
    if signed:
        byte, start, end = _signed(byte), _signed(start), _signed(end)
    low, high = (start, end) if start <= end else (end, start)
    return low <= byte <= high


def _byte_class(members: set[int]) -> str:
    """A regex matching one character whose code is in ``members`` (bytes 0-255)."""
    if not members:
        return "(?!)"
    if len(members) == len(_ALL_BYTES):
        return "."
    return "[" + "".join(re.escape(chr(byte)) for byte in sorted(members)) + "]"


def _literal(byte: int) -> str:
    return re.escape(chr(byte))


def _translate(pattern: bytes, either_sign: bool) -> str:
    """The regex of ``pattern``, consuming it exactly as ``stringmatchlen`` does (the
    consumption of a pattern never depends on the key, so it translates once)."""
    out: list[str] = []
    stars = 0  # star groups followed by more pattern: each is one level of recursion
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == ord("*"):
            while i + 1 < n and pattern[i + 1] == ord("*"):
                i += 1
            if i + 1 < n:
                stars += 1
            out.append(".*")
        elif char == ord("?"):
            out.append(".")
        elif char == ord("["):
            i, members = _class(pattern, i + 1, either_sign)
            out.append(_byte_class(members))
        else:
            if char == ord("\\") and n - i >= 2:
                i += 1
            out.append(_literal(pattern[i]))
        i += 1
    if stars > MAX_STAR_NESTING:
        return "(?!)"
    return "".join(out)


def _class(pattern: bytes, i: int, either_sign: bool) -> tuple[int, set[int]]:
    """Parse the class whose ``[`` was just before ``i``: the index of its last byte
    (the ``]``, or the pattern's last byte when it never closes) and the bytes it
    matches (with ``either_sign``: under either reading of its ranges' ends)."""
    n = len(pattern)
    negate = i < n and pattern[i] == ord("^")
    if negate:
        i += 1
    listed: set[int] = set()
    ranges: list[tuple[int, int]] = []
    while True:
        if i < n and pattern[i] == ord("\\") and n - i >= 2:
            i += 1
            listed.add(pattern[i])
        elif i < n and pattern[i] == ord("]"):
            break
        elif i >= n:
            i -= 1  # unclosed: the class ends with the pattern
            break
        elif n - i >= 3 and pattern[i + 1] == ord("-"):
            ranges.append((pattern[i], pattern[i + 2]))
            i += 2
        else:
            listed.add(pattern[i])
        i += 1
    matched: set[int] = set()
    for signed in (True, False) if either_sign else (True,):
        members = listed | {
            byte
            for byte in _ALL_BYTES
            for start, end in ranges
            if _in_range(byte, start, end, signed)
        }
        # Each reading negated on its own: the union is what either reading matches.
        matched |= set(_ALL_BYTES) - members if negate else members
    return i, matched


class PatternMatcher:
    """A compiled Redis glob. ``fullmatch(key)`` is a match object (truthy) when the
    server's ``SCAN MATCH pattern`` would return ``key``, else None (the interface
    of ``re.Pattern.fullmatch``, which this replaces)."""

    __slots__ = ("_empty_pattern", "pattern", "regex")

    def __init__(self, pattern: str, *, either_sign: bool = False) -> None:
        self.pattern: Final = pattern
        """The glob, as given."""
        self._empty_pattern = not pattern
        encoded = pattern.encode("utf-8", "surrogatepass")
        self.regex: Final = re.compile(_translate(encoded, either_sign), re.DOTALL)
        """The translation, over a key's bytes as ``latin-1`` characters."""

    def fullmatch(self, key: str) -> re.Match[str] | None:
        if not key:
            # stringmatchlen never enters its loop for an empty key: only an empty
            # pattern matches it ("*" does not).
            return self.regex.fullmatch(key) if self._empty_pattern else None
        if not key.isascii():
            key = key.encode("utf-8", "surrogatepass").decode("latin-1")
        return self.regex.fullmatch(key)

    def __repr__(self) -> str:
        return f"<PatternMatcher {self.pattern!r}>"


def glob_to_regex(pattern: str) -> PatternMatcher:
    """The matcher of a Redis glob ``pattern``: ``glob_to_regex(p).fullmatch(key)`` is
    truthy exactly when Redis's ``SCAN MATCH p`` returns ``key`` (see the module
    docstring for the rules). The name is kept from when this returned an
    ``re.Pattern``; the object has the same ``fullmatch``."""
    return PatternMatcher(pattern)

"""Suggestions for unknown names: the known names a misspelt or shortened one most likely meant.

A name is offered when the unknown word is within an edit or two of it (one for words
of up to four letters, where two edits reach too many names; only the nearest are
shown), else when the word starts it (``ttl`` -> ``ttl_seconds``) or is one of its
``_``-separated parts (``ttl`` -> ``default_ttl_seconds``). ``difflib``'s similarity
is the last resort, for longer words garbled beyond two edits.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

__all__ = ["did_you_mean", "suggestions"]

_MAX_SHOWN = 3


def _distance(a: str, b: str, limit: int) -> int:
    """Edit distance (insert, delete, substitute, swap two neighbours), or ``limit + 1``
    once it is certain to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        row = [i]
        for j, char_b in enumerate(b, 1):
            cost = row[j - 1] + 1
            cost = min(cost, previous[j] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                cost = min(cost, previous2[j - 2] + 1)
            row.append(cost)
        if min(row) > limit:
            return limit + 1
        previous2, previous = previous, row
    return previous[-1]


def suggestions(word: str, choices: Collection[str]) -> list[str]:
    """The known names ``word`` may have meant, likeliest first (at most three)."""
    word = word.strip().lower()
    if not word:
        return []
    names = sorted({str(choice) for choice in choices} - {word})
    limit = 1 if len(word) <= 4 else 2
    scored: list[tuple[int, int, str]] = []
    for name in names:
        lowered = name.lower()
        distance = _distance(word, lowered, limit)
        if distance <= limit:
            scored.append((0, distance, name))
        elif lowered.startswith(word) and len(word) >= 2:
            scored.append((1, len(lowered) - len(word), name))
        elif word in lowered.split("_"):
            scored.append((2, len(lowered), name))
    if not scored:
        return difflib.get_close_matches(word, names, n=1)
    scored.sort()
    if scored[0][0] == 0:
        # A near spelling says more than a shared part: only the nearest ones.
        scored = [entry for entry in scored if entry[:2] == scored[0][:2]]
    return [name for _, _, name in scored[:_MAX_SHOWN]]


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """`` (did you mean 'a'?)``, `` (did you mean 'a' or 'b'?)``, or ``""``."""
    found = suggestions(word, choices)
    if not found:
        return ""
    quoted = [repr(name) for name in found]
    shown = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f" (did you mean {shown}?)"

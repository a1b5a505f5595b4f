"""Quotes by author from a slow "database", cached for a minute.

The decorators bind to the process-wide Resilience on first call, so this module
imports before anything is configured (the tests configure it per test).
"""

from __future__ import annotations

import tasker_resilience as tr

DATABASE: dict[str, list[str]] = {
    "knuth": ["Premature optimization is the root of all evil."],
    "hopper": ["The most dangerous phrase is: we've always done it this way."],
}
LOOKUPS: list[str] = []
"""Every author the database was asked about (what the cache saves)."""


@tr.cached(ttl=60, namespace="quotes")
def quotes_by(author: str) -> list[str]:
    LOOKUPS.append(author)
    return list(DATABASE.get(author, []))


@tr.cached(ttl=60, namespace="quotes-async")
async def aquotes_by(author: str) -> list[str]:
    LOOKUPS.append(author)
    return list(DATABASE.get(author, []))


def add_quote(author: str, text: str) -> None:
    DATABASE.setdefault(author, []).append(text)
    # Remembered while the cache is down, replayed before it is read again.
    quotes_by.invalidate(author)

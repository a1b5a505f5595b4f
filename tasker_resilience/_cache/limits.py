"""What a caller may pass to the cache: keys, patterns and TTLs.

Checked before the breaker is asked, so a caller's mistake raises the same
``TypeError``/``ValueError`` (with the value and what is allowed) whether the circuit
is closed, open or half-open, and never reaches the backend as a raw
``UnicodeEncodeError``, ``OverflowError`` or a server's ``ResponseError``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Final

__all__ = ["MAX_TTL_SECONDS", "checked_key", "checked_ttl", "key_error"]

MAX_TTL_SECONDS: Final = 100 * 365 * 24 * 3600
"""The longest TTL accepted (100 years): longer ones overflow Redis's expiry clock."""


def checked_ttl(ttl: float | timedelta, what: str = "ttl") -> float:
    """``ttl`` in seconds if it is a usable number of seconds or a ``timedelta``; else
    TypeError/ValueError."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {ttl!r}")
    if not (seconds > 0 and math.isfinite(seconds)) or seconds > MAX_TTL_SECONDS:
        raise ValueError(
            f"{what} must be a number of seconds greater than 0 and at most "
            f"{MAX_TTL_SECONDS} (100 years), not {ttl!r}"
        )
    return seconds


def key_error(key: object, what: str = "cache keys") -> Exception | None:
    """The error a key (or pattern) deserves, or None when it is usable."""
    if not isinstance(key, str):
        return TypeError(f"{what} are strings, not {type(key).__name__}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate (e.g. from os.fsdecode of a bad file name).
            return ValueError(
                f"{what} must be encodable as UTF-8; {key!r} is not "
                f"({exc.reason} at index {exc.start})"
            )
    return None


def checked_key(key: str, what: str = "cache keys") -> str:
    """``key`` if usable, else the TypeError/ValueError of :func:`key_error`."""
    error = key_error(key, what)
    if error is not None:
        raise error
    return key

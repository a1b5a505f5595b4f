"""Keep secrets out of logs, errors and health output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "SECRET_WORDS",
    "Withheld",
    "is_secret_name",
    "redact_url",
    "redact_value",
    "withheld",
]

REDACTED = "***"

# Query parameters whose value is a secret (password, sentinel_password, token...).
_SECRET_PARAMS = ("password", "passwd", "secret", "token", "credential")


def redact_url(url: str) -> str:
    """Return ``url`` with any password (and a lone token user name) replaced by ``***``.

    ``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0``;
    ``redis://user:secret@host`` -> ``redis://user:***@host``. Query parameters that
    name a secret (``password``, ``sentinel_password``...) are masked too.

    Written without a URL parser on purpose: a password with an unencoded ``#``, ``/``,
    ``?`` or ``@`` makes ``urlsplit`` put part of it in the path or the fragment, where
    it would be shown. Everything between ``://`` and the *last* ``@`` is user info
    (a host never holds an ``@``), so it is masked however the URL is malformed; when
    in doubt, more is masked, never less.
    """
    if not isinstance(url, str):
        return REDACTED  # type: ignore[unreachable]  # settings values arrive untyped
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        # "redis://token@host" carries the secret in the user slot.
        rest = f"{user}:{REDACTED}@{after}" if colon else f"{REDACTED}@{after}"
    base, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{name}={REDACTED}"
            if any(word in name.lower() for word in _SECRET_PARAMS)
            else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in query.split("&"))
        )
        rest = f"{base}?{query}"
    return f"{scheme}{sep}{rest}"


SECRET_WORDS = ("password", "passwd", "secret", "token", "credential", "api_key")
"""A setting (or a table entry) whose name holds one of these is a secret: never shown."""


def is_secret_name(name: object) -> bool:
    """True for a setting name like ``password``, ``sentinel_password``, ``api_token``."""
    lowered = str(name).lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_value(value: Any) -> Any:
    """``value`` as it may be shown: every URL-shaped string in it (anything with
    ``://``, wherever it sits: a list of node URLs, a table inside a list, a sentence
    naming a URL) through :func:`redact_url`, and entries of tables whose names say
    they are secrets replaced by ``***``. Anything else is returned as it is."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_name(key) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item) for item in value)
    return value


class Withheld:
    """Stands for a value an error must not echo (its ``repr`` says what it was)."""

    __slots__ = ("description",)

    def __init__(self, value: object) -> None:
        size = f" of {len(value)} characters" if isinstance(value, str) else ""
        self.description = f"<a {type(value).__name__}{size}, not shown>"

    def __repr__(self) -> str:
        return self.description


def withheld(value: object) -> object:
    """For an error about a numeric setting: a number is shown as it is; anything else
    (a string that does not read as a number: maybe a URL or a password set under the
    wrong name) is never echoed."""
    if isinstance(value, (int, float)):
        return value
    return Withheld(value)

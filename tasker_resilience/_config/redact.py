"""Keep secrets out of logs, errors and health output."""

from __future__ import annotations

__all__ = ["REDACTED", "redact_url"]

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

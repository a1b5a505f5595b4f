"""Keep secrets out of logs, errors and health output."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_url"]

REDACTED = "***"


def redact_url(url: str) -> str:
    """Return ``url`` with any password (and a lone token user name) replaced by ``***``.

    ``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0``;
    ``redis://user:secret@host`` -> ``redis://user:***@host``. Query parameters named
    ``password`` are masked too. Anything that cannot be parsed is masked whole: an
    unparsable URL may still hold a secret, and a log line is not worth leaking it.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            # "redis://token@host" carries the secret in the user slot.
            userinfo = f"{user}:{REDACTED}" if sep else REDACTED
            netloc = f"{userinfo}@{hostinfo}"
        query = "&".join(
            f"{name}={REDACTED}" if name.lower() == "password" else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in parts.query.split("&") if item)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return REDACTED

"""Which Redis topology a cache URL names, and the parts of a Sentinel URL.

One URL per topology:

==================================================================  ===================
URL                                                                 topology
==================================================================  ===================
``redis://host:6379/0``, ``rediss://...``, ``unix:///path.sock``    one server
``redis+cluster://host:7000``, ``rediss+cluster://...``             Redis Cluster
``redis+sentinel://[:pw@]host:26379[,host:port...]/service[/db]``   Sentinel-managed
``rediss+sentinel://...``                                           the same over TLS
==================================================================  ===================

The Sentinel spelling follows the one Celery and Kombu users know, with every sentinel
in one comma-separated host list. The password (and user name) in the URL are the
*data node's*: the sentinels themselves are asked without authentication, as they are
in most deployments. A sentinel without a port listens on 26379.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

from tasker_resilience._config.redact import redact_url
from tasker_resilience._errors import ConfigurationError

__all__ = [
    "CLUSTER_SCHEMES",
    "SENTINEL_SCHEMES",
    "SentinelTarget",
    "TopologyKind",
    "cluster_url",
    "parse_sentinel_url",
    "topology_of",
]

TopologyKind = Literal["single", "cluster", "sentinel"]
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT: Final = 26379
_URL_KEY: Final = "common.cache.redis.url"
_SENTINEL_SHAPE: Final = "redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]"


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def topology_of(url: str) -> TopologyKind:
    """``"cluster"``, ``"sentinel"`` or ``"single"`` for a cache URL."""
    scheme = _scheme(url)
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    return "single"


def cluster_url(url: str) -> str | None:
    """``redis://...`` for a ``redis+cluster://`` URL (``rediss`` likewise), else None."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() in CLUSTER_SCHEMES:
        return scheme.lower().removesuffix("+cluster") + sep + rest
    return None


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL says."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int
    username: str | None
    password: str | None
    ssl: bool

    def __repr__(self) -> str:
        # The password must never reach a log line or a traceback.
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"SentinelTarget({hosts}/{self.service_name}/{self.db}, ssl={self.ssl})"


def _invalid(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(_URL_KEY, redact_url(url), f"{why}; expected {_SENTINEL_SHAPE}")


def _host_port(url: str, item: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise _invalid(url, f"sentinel address {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _invalid(url, f"sentinel address {item!r} has no valid port (1-65535)")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service name, database and credentials of a Sentinel URL.

    Raises :class:`ConfigurationError` (naming the redacted URL and the expected shape)
    for anything else.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise _invalid(url, f"the scheme must be one of {', '.join(SENTINEL_SCHEMES)}")
    if "?" in rest or "#" in rest:
        raise _invalid(url, "a sentinel URL takes no query string or fragment")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise _invalid(url, "no sentinel host is given")
    sentinels = tuple(_host_port(url, item.strip()) for item in hosts.split(","))
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise _invalid(url, "the service name (the sentinels' master name) is missing")
    if len(parts) > 2:
        raise _invalid(url, "the path is /service_name or /service_name/db")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise _invalid(url, f"the database {parts[1]!r} is not a number")
        db = int(parts[1])
    return SentinelTarget(
        sentinels=sentinels,
        service_name=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        ssl=scheme.lower() == "rediss+sentinel",
    )

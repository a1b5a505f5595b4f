"""Server-assisted invalidation for the near tier: Redis ``CLIENT TRACKING``.

One dedicated connection per process, owned by a daemon thread, never taken from the
cache's pool:

1. ``CLIENT ID`` (its own id), then ``CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX
   <key_prefix>:``: the server reports every change to a key under the prefix, made by
   any client (including expiry and eviction), to this connection;
2. ``SUBSCRIBE __redis__:invalidate``: the RESP2 form of those reports (works on every
   server with tracking, whatever protocol the cache's own connections speak);
3. each message evicts its keys from the :class:`~tasker_resilience._cache.near.NearTier`
   (a null key list, sent on ``FLUSHDB``/``FLUSHALL``, ends the tier's generation).

Broadcast mode is used because the cache reads through a pool of connections: in the
default mode the server remembers keys per *reading* connection, so every pooled
connection would need its own redirect. redis-py's own client-side cache
(``cache_config=``) is not used: it needs RESP3 on every connection, caches raw replies
per connection pool, and empties itself when its connections fail, which is exactly
when the near tier must still answer (stale-if-error).

The channel is watched: with no traffic for ``heartbeat_seconds`` the listener sends
``PING`` and expects the pong within the socket timeout. A dropped, silent or refused
connection calls ``NearTier.tracking_down()`` (nothing is fresh) and the listener
reconnects with a short back-off; once subscribed again it calls ``tracking_up()``,
which ends the generation so nothing filled before the gap is served as fresh.

``tracking = "auto"`` asks the server first: ``INFO server`` must report
``redis_version`` >= 6 and ``CLIENT TRACKING`` must be accepted, otherwise the tier
falls back to ``ttl_seconds`` and an INFO line says so. ``"on"`` insists: the tier never
serves a fresh near hit without the channel, and a WARNING says why.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from tasker_resilience._cache.backends.abortive import make_pool_abortive
from tasker_resilience._cache.near import NearTier
from tasker_resilience._forks import after_fork_in_child

if TYPE_CHECKING:
    from tasker_resilience._cache.backends.contract import CacheBackend
    from tasker_resilience._config.schema import CacheConfig

__all__ = [
    "CHANNEL",
    "InvalidationListener",
    "parse_version",
    "start_near_coherence",
    "tracking_connection_factory",
]

CHANNEL: Final = "__redis__:invalidate"
MIN_REDIS_MAJOR: Final = 6
_LOGGER = logging.getLogger("tasker_resilience.cache")


class TrackingUnsupported(Exception):
    """The server cannot (or will not) track keys for us."""


def parse_version(info: dict[str, Any]) -> tuple[int, ...]:
    """``redis_version`` from an ``INFO server`` reply as a tuple of ints ((0,) if absent)."""
    raw = str(info.get("redis_version", "0"))
    parts: list[int] = []
    for part in raw.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def tracking_connection_factory(
    url: str, connect_timeout: float, socket_timeout: float
) -> Callable[[], Any]:
    """A factory of single, unpooled, retry-free connections to ``url`` (``rediss://``
    and ``unix://`` included), built by redis-py from the same URL as the cache. Each
    closes abortively (``abortive.py``): a dropped channel sends nothing late."""
    pool = redis.ConnectionPool.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        # RESP2 on purpose (redis-py 8 defaults to RESP3): invalidations then arrive as
        # ordinary pubsub replies on this connection instead of push frames that
        # redis-py routes to handlers of its own.
        protocol=2,
    )
    make_pool_abortive(pool)
    return pool.make_connection


def _info(text: Any) -> dict[str, str]:
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    pairs = (line.split(":", 1) for line in str(text).splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


class InvalidationListener:
    """The thread that keeps the near tier coherent (see the module docstring)."""

    def __init__(
        self,
        tier: NearTier,
        connect: Callable[[], Any],
        prefix: str,
        *,
        required: bool,
        where: str = "",
        heartbeat_seconds: float = 1.0,
        max_backoff_seconds: float = 1.0,
    ) -> None:
        self._tier = tier
        self._connect = connect
        self._prefix = prefix
        self._required = required
        self._where = where
        self._heartbeat = heartbeat_seconds
        self._max_backoff = max_backoff_seconds
        self._stop = threading.Event()
        self._connection: Any = None
        self._announced = False
        self.server: str = "unknown"
        self._thread = self._new_thread()
        self._started = False
        # A child forked from this process (gunicorn --preload, multiprocessing "fork")
        # inherits the tier but not this thread: the tier stops trusting its entries
        # (its own reset), and this listener starts a channel of the child's own.
        after_fork_in_child(self, InvalidationListener._after_fork)

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._run, name="tasker-resilience-near-invalidations", daemon=True
        )

    def start(self) -> InvalidationListener:
        self._started = True
        self._thread.start()
        return self

    def _after_fork(self) -> None:
        self._connection = None  # the parent's socket: never read or closed from here
        if self._started and not self._stop.is_set():
            self._thread = self._new_thread()
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close its connection (bounded by ``timeout``)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._session()
            except TrackingUnsupported as exc:
                self._give_up(str(exc))
                return
            except (rex.ConnectionError, rex.TimeoutError, OSError, rex.ResponseError) as exc:
                if self._tier.tracking_connected:
                    _LOGGER.warning(
                        "near cache: invalidation channel%s lost (%s); near entries are "
                        "not served as fresh until it is back",
                        self._where,
                        type(exc).__name__,
                    )
                self._tier.tracking_down()
            except Exception:  # a bug must not end coherence silently
                _LOGGER.exception("near cache: invalidation listener failed; retrying")
                self._tier.tracking_down()
            finally:
                self._close()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)
        self._tier.tracking_down()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closing a broken socket may fail; there is nothing to do about it.
            with contextlib.suppress(Exception):
                connection.disconnect()

    def _session(self) -> None:
        self._connection = connection = self._connect()
        connection.connect()
        connection.send_command("INFO", "server")
        info = _info(connection.read_response())
        version = parse_version(info)
        self.server = (
            f"dragonfly {info['dragonfly_version']}"
            if "dragonfly_version" in info
            else f"redis-protocol server {'.'.join(map(str, version))}"
        )
        if version[0] < MIN_REDIS_MAJOR:
            raise TrackingUnsupported(f"{self.server} predates client tracking (Redis 6)")
        connection.send_command("CLIENT", "ID")
        client_id = int(connection.read_response())
        connection.send_command(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self._prefix
        )
        try:
            connection.read_response()
        except rex.ResponseError as exc:
            raise TrackingUnsupported(f"{self.server} refused CLIENT TRACKING: {exc}") from None
        connection.send_command("SUBSCRIBE", CHANNEL)
        self._expect_subscribed(connection.read_response())
        self._tier.tracking_up()
        if not self._announced:
            self._announced = True
            _LOGGER.info(
                "near cache: server-assisted invalidation in force (%s%s, CLIENT TRACKING "
                "BCAST on %r, RESP2 redirect to %s)",
                self.server,
                self._where,
                self._prefix,
                CHANNEL,
            )
        else:
            _LOGGER.info("near cache: invalidation channel%s is back", self._where)
        self._listen(connection)

    @staticmethod
    def _expect_subscribed(reply: Any) -> None:
        if not (isinstance(reply, list) and reply and _text(reply[0]) == "subscribe"):
            raise rex.ResponseError(f"unexpected reply to SUBSCRIBE: {reply!r}")

    def _listen(self, connection: Any) -> None:
        pong_due: float | None = None
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            if connection.can_read(timeout=min(0.2, self._heartbeat)):
                self._handle(connection.read_response())
                quiet_since = time.monotonic()
                pong_due = None
                continue
            now = time.monotonic()
            if pong_due is not None:
                if now >= pong_due:
                    raise rex.TimeoutError("no pong on the invalidation channel")
            elif now - quiet_since >= self._heartbeat:
                connection.send_command("PING")
                pong_due = now + self._heartbeat

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3 or _text(reply[0]) != "message":
            return  # pong and other replies only prove the channel is alive
        keys = reply[2]
        if keys is None:
            self._tier.invalidate(None)
            return
        if isinstance(keys, (bytes, str)):
            keys = [keys]
        self._tier.invalidate([_text(key) for key in keys])

    def _give_up(self, reason: str) -> None:
        if self._required:
            _LOGGER.warning(
                'near cache: tracking = "on" but %s%s; near entries are only served '
                "while the cache circuit is open (stale-if-error), never as fresh hits",
                reason,
                self._where,
            )
            self._tier.tracking_down()
            return
        self._tier.use_ttl()
        _LOGGER.info(
            "near cache: %s%s; entries are fresh for ttl_seconds=%g instead",
            reason,
            self._where,
            self._tier.config.ttl_seconds,
        )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_TRACKABLE_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})


def start_near_coherence(
    near: NearTier, backend: CacheBackend, config: CacheConfig, where: str
) -> InvalidationListener | None:
    """Decide how ``near`` learns of other processes' writes, per ``tracking``, and log
    which mode is in force. Returns the listener thread when one was started."""
    tracking = config.near.tracking
    found = getattr(getattr(backend, "config", None), "url", None)
    url = found if isinstance(found, str) else ""
    scheme = url.split("://", 1)[0].lower() if url else None
    # One server, one invalidation connection: cluster and sentinel topologies would
    # need a channel per node (and to follow failovers), which the tier does not do yet.
    if tracking == "off" or scheme not in _TRACKABLE_SCHEMES:
        reason = (
            'tracking = "off"'
            if tracking == "off"
            else "server-assisted invalidation is not available for "
            + (f"{scheme}:// URLs" if scheme else f"backend {backend.name!r}")
        )
        if tracking == "on":
            _LOGGER.warning(
                'near cache: tracking = "on" but %s; near entries are only served while '
                "the cache circuit is open (stale-if-error), never as fresh hits",
                reason,
            )
            near.tracking_down()
            return None
        near.use_ttl()
        _LOGGER.info(
            "near cache: %s; entries are fresh for ttl_seconds=%g",
            reason,
            config.near.ttl_seconds,
        )
        return None
    redis_config = config.redis
    connect = tracking_connection_factory(
        url, redis_config.connect_timeout_seconds, redis_config.socket_timeout_seconds
    )
    return InvalidationListener(
        near,
        connect,
        config.key_prefix + ":",
        required=tracking == "on",
        where=where,
        heartbeat_seconds=max(0.5, redis_config.socket_timeout_seconds * 2),
    ).start()

"""Host sharing: the worker processes of one host share what their breakers learn.

Opt-in (``[common.circuit_breakers.host_sharing] enabled = true``). Without it every
process learns of an outage on its own: W workers pay W x ``failure_threshold`` hung
calls before all are open, and each waits out its own open period, so the host probes
W times per period at about the same moment and resumes using the backend up to a whole
period after it is back.

The channel is one small file per scope, mapped into every process, in a private
per-user directory (``$XDG_RUNTIME_DIR/tasker-resilience``, else
``/dev/shm/tasker-resilience-<uid>``): never the network, never the guarded backend
(:mod:`~tasker_resilience._breakers.host_file` keeps its bytes). A scope is the user,
the settings' identity (key prefix, backend name and URL without its password, hashed)
and the breaker's name, so two services on one host never mix. The file holds a *host
record* (the outage's epoch, who opened it first and when, who closed it, the host's
probe schedule), changed under a lock nobody waits for, and one *slot* per process
(its state, failure streak, the outage it is in, a heartbeat), written by its owner.

What a process does with what it reads (the decisions; see the caching guide, "Host
sharing", for why):

- *A peer opened* (a new epoch): a closed process whose own last call failed opens at
  once (its own evidence agrees); any other closed process becomes **suspect**: its
  next call is one probe (at most one at a time), one success closes it again, one
  failure opens it. A hint alone never opens a process: a fault on one worker's own
  path (its proxy, its network namespace) costs the healthy workers one real call
  each, which succeeds, not an open period of misses.
- *A failure while closed* opens at once when the host is open, or when the failure
  streaks of the processes that failed in the last second add up to
  ``failure_threshold``: the host pays about ``failure_threshold`` hung calls, plus the
  calls already in flight, instead of ``failure_threshold`` per worker.
- *Probes* follow one host schedule: the host probes every ``timeout_seconds / W`` (W:
  the processes open in this outage), each probe claimed by whichever process calls
  first after the slot is due. The host makes as many probes as W processes on their
  own would (one per process per period), spread out, so it finds the backend back
  within about ``timeout_seconds / W``. The schedule only ever moves a process's probe
  earlier than its own ``timeout_seconds`` would.
- *A peer's probe closed it*: every open process probes at once (with its own
  ``success_threshold``); a process whose path is still broken re-opens on its own
  and does not start a new host outage (only a trip from closed does), so a fault on
  one path cannot make the host flap.

Records carry an epoch, the writer's pid and monotonic timestamps (``CLOCK_MONOTONIC``
is one clock for every process of the machine). A record older than a process's own
last transition is ignored; a slot whose heartbeat stopped (a dead, hung or stopped
process) counts for nothing; a host record whose openers are all gone is an outage
that ended. No lock is held across I/O and a call never waits for one: a busy lock
skips the update (the next call retries), and a lock busy for a whole second (its
holder was stopped mid-update) switches sharing off. Only joining the scope (at
start-up, or in a forked child) waits for the lock, at most 0.5 s. A missing or full
directory, a wrong owner or mode, a corrupt record or any unexpected error switches
sharing off for that breaker with one WARNING: it goes on deciding alone, as without
sharing. Nothing here raises to a caller. The closed fast path of the breaker does not
consult the channel at all: a poller thread (one per process) brings the news.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Final, Protocol

from tasker_resilience._breakers.host_file import (
    HOST_CLOSED,
    HOST_OPEN,
    SLOT_CLOSED,
    SLOT_HALF_OPEN,
    SLOT_OPEN,
    ChannelError,
    HostRecord,
    SharedFile,
    SlotRecord,
    channel_file,
    default_directory,
    private_directory,
    reset_file_locks,
)
from tasker_resilience._breakers.states import CLOSED, FORCED, HALF_OPEN, OPEN, StateName
from tasker_resilience._config.redact import redact_url
from tasker_resilience._config.schema import BreakerConfig, HostSharingConfig

__all__ = [
    "EVIDENCE_SECONDS",
    "SHARING_LOGGER",
    "HostChannel",
    "HostSharing",
    "settings_scope",
]

SHARING_LOGGER = logging.getLogger("tasker_resilience.breaker.host_sharing")

EVIDENCE_SECONDS: Final = 1.0
"""How recent another process's failure must be to count towards the host's streak."""
_HEARTBEAT_SECONDS: Final = 0.25
_LOCK_WEDGED_SECONDS: Final = 1.0
_SLOT_STATE = {CLOSED: SLOT_CLOSED, OPEN: SLOT_OPEN, HALF_OPEN: SLOT_HALF_OPEN}


class _SharedBreaker(Protocol):
    """What the channel reads and steers on a breaker (``Breaker`` has it; this module
    sits below ``breaker.py`` and must not import it). Every use holds ``_lock``."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> BreakerConfig: ...
    @property
    def enabled(self) -> bool: ...

    _lock: threading.Lock
    _state: StateName
    _retry_at: float
    _local_streak: int
    _suspect: bool
    _clock: Callable[[], float]

    def _enter(self, state: StateName, reason: str | None = None) -> None: ...
    def _enter_suspect(self) -> None: ...


def settings_scope(key_prefix: str, backend: str, url: str, explicit: str = "") -> str:
    """Which processes share: ``explicit`` (``host_sharing.scope``) when set, else the
    settings' identity: key prefix, backend name and its URL with the password masked
    (two services that differ only by password use one cache)."""
    if explicit:
        return "scope\x00" + explicit
    return "\x00".join(("settings", key_prefix, backend, redact_url(url)))


class HostChannel:
    """One breaker's view of its scope's file. Built by :meth:`HostSharing.channel`;
    the breaker calls the hooks below (always holding its own lock), the poller calls
    :meth:`poll`. Every hook returns the "decide alone" answer once sharing is off."""

    def __init__(self, path: str, digest: bytes, poll_interval: float) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.alive = True
        self.reason: str | None = None
        self._file = SharedFile(path, digest)
        self._breaker: weakref.ReferenceType[_SharedBreaker] | None = None
        self._seen: tuple[int, int] = (0, HOST_CLOSED)
        self._last_raw = b""
        self._changed_at = 0.0  # this process's own last transition (monotonic)
        self._next_beat = time.monotonic() + _HEARTBEAT_SECONDS
        self._lock_busy_since: float | None = None

    def attach(self, breaker: _SharedBreaker) -> None:
        self._breaker = weakref.ref(breaker)
        _POLLER.add(self)

    def close(self) -> None:
        """Leave the scope: free the slot (others stop counting this process)."""
        if not self.alive:
            return
        self.alive = False
        self.reason = "closed"
        self._file.close()

    def _after_fork(self) -> None:
        """In a forked child: the mapping is shared, the slot is the parent's. Take one."""
        if not self.alive:
            return
        try:
            self._file.claim_slot(wait=0.5)
        except Exception as exc:
            self._fail(f"the forked process could not join: {exc}")

    # --- the lock's health ------------------------------------------------------------

    def _busy(self, now: float) -> None:
        """The lock was busy: fine once, a failure if it stays busy (its holder stopped)."""
        if self._lock_busy_since is None:
            self._lock_busy_since = now
        elif now - self._lock_busy_since > _LOCK_WEDGED_SECONDS:
            raise ChannelError(f"{self.path} has been locked for over {_LOCK_WEDGED_SECONDS:g}s")

    # --- what the host looks like ---------------------------------------------------------

    def _in_outage(self, host: HostRecord, now: float, *, count_self: bool = True) -> int:
        """The live processes open (or probing) in the host's current outage; 0 when
        the host is closed or every process that was open in it is gone."""
        if host.state != HOST_OPEN:
            return 0
        return sum(
            1
            for slot in self._file.slots(host.used, others=not count_self)
            if slot.epoch == host.epoch
            and slot.state in (SLOT_OPEN, SLOT_HALF_OPEN)
            and slot.live(now)
        )

    def _host_streak(self, now: float) -> int:
        host = self._file.host()
        return sum(
            slot.streak
            for slot in self._file.slots(host.used)
            if slot.state == SLOT_CLOSED
            and slot.streak
            and now - slot.last_failure_at <= EVIDENCE_SECONDS
            and slot.live(now)
        )

    # --- hooks: the breaker calls these holding its own lock -----------------------------

    def _guarded(self, action: Callable[[], Any], default: Any) -> Any:
        if not self.alive:
            return default
        try:
            return action()
        except Exception as exc:
            self._fail(str(exc) if isinstance(exc, ChannelError) else repr(exc))
            return default

    def entered(self, breaker: _SharedBreaker, previous: str) -> None:
        """After every transition of ``breaker`` (``previous`` -> its ``_state``)."""
        self._guarded(lambda: self._entered(breaker, previous), None)

    def _entered(self, breaker: _SharedBreaker, previous: str) -> None:
        now = time.monotonic()
        self._changed_at = now
        state = breaker._state
        if state == OPEN:
            # A trip: from closed, or a suspect's probe that failed (see _apply). A
            # failed probe of an open process re-opens it alone.
            self._join(breaker, now, trip=previous == CLOSED or breaker._suspect)
            return
        if state == CLOSED and previous != CLOSED:
            self._publish_close(now)
        self._file.write_slot(
            replace(
                self._file.slot, state=_SLOT_STATE.get(state, SLOT_CLOSED), streak=0, changed_at=now
            )
        )

    def _join(self, breaker: _SharedBreaker, now: float, *, trip: bool) -> None:
        """An open ``breaker``: join the host's outage, or start one if ``trip``, and
        take the host's probe schedule; else it stays on its own schedule."""
        host, joined = self._open_in_host(breaker, now, trip=trip)
        self._file.write_slot(
            replace(
                self._file.slot,
                state=SLOT_OPEN,
                streak=0,
                epoch=host.epoch if joined else 0,
                changed_at=now,
            )
        )
        if joined:
            self._probe_by(breaker, host.next_probe_at, now)
        self._seen = (host.epoch, host.state)

    def _open_in_host(
        self, breaker: _SharedBreaker, now: float, *, trip: bool
    ) -> tuple[HostRecord, bool]:
        """The host record as left, and whether this process is in its outage."""
        with self._file.locked() as locked:
            host = self._file.host()
            if not locked:
                self._busy(now)  # the poller joins later (the host record still says open)
                return host, False
            self._lock_busy_since = None
            others = self._in_outage(host, now, count_self=False)
            timeout = breaker.config.timeout_seconds
            if host.state == HOST_OPEN and (others or self._file.slot.epoch == host.epoch):
                if not host.probes:
                    # Nobody probed yet: the first probe comes timeout / W after the
                    # opening, W counting this process too.
                    first = host.opened_at + timeout / (others + 1)
                    if first < host.next_probe_at:
                        host = replace(host, next_probe_at=max(first, now))
                        self._file.write_host(host)
                return host, True
            if not trip:
                return host, False
            host = replace(
                host,
                epoch=host.epoch + 1,
                state=HOST_OPEN,
                opened_by=self._file.pid,
                opened_at=now,
                opened_wall=time.time(),
                probes=0,
                next_probe_at=now + timeout,
            )
            self._file.write_host(host)
            return host, True

    def _publish_close(self, now: float) -> None:
        with self._file.locked() as locked:
            if not locked:
                self._busy(now)
                return
            self._lock_busy_since = None
            host = self._file.host()
            if host.state == HOST_OPEN:
                host = replace(host, state=HOST_CLOSED, closed_by=self._file.pid, closed_at=now)
                self._file.write_host(host)
            self._seen = (host.epoch, host.state)

    def _probe_by(self, breaker: _SharedBreaker, at: float, now: float) -> None:
        """Let ``breaker`` probe no later than monotonic ``at`` (never later than its own
        deadline: the host schedule only brings probes forward)."""
        retry_at = breaker._clock() + max(0.0, at - now)
        if retry_at < breaker._retry_at:
            breaker._retry_at = retry_at

    def may_probe(self, breaker: _SharedBreaker) -> bool:
        """``breaker`` is open and its probe time has come: may it probe now? While the
        host is open, only the process that claims the host's due probe slot does; the
        others wait for the next slot (``_retry_at`` moved to it)."""
        return bool(self._guarded(lambda: self._may_probe(breaker), True))

    def _may_probe(self, breaker: _SharedBreaker) -> bool:
        now = time.monotonic()
        host = self._file.host()
        if host.state != HOST_OPEN or self._file.slot.epoch != host.epoch:
            return True  # not in a host outage: this process's own schedule
        with self._file.locked() as locked:
            if not locked:
                self._busy(now)
                breaker._retry_at = breaker._clock() + self.poll_interval
                return False
            self._lock_busy_since = None
            host = self._file.host()
            if host.state != HOST_OPEN:
                return True
            if now + 0.001 < host.next_probe_at:
                breaker._retry_at = breaker._clock() + (host.next_probe_at - now)
                return False
            spacing = breaker.config.timeout_seconds / max(1, self._in_outage(host, now))
            self._file.write_host(
                replace(host, next_probe_at=now + spacing, probes=host.probes + 1)
            )
            return True

    def failed(self, breaker: _SharedBreaker) -> bool:
        """A counted failure while closed (the breaker's own streak below its threshold):
        does the host's evidence say "outage"? Publishes this process's streak."""
        return bool(self._guarded(lambda: self._failed(breaker), False))

    def _failed(self, breaker: _SharedBreaker) -> bool:
        now = time.monotonic()
        self._file.write_slot(
            replace(
                self._file.slot,
                state=SLOT_CLOSED,
                streak=min(breaker._local_streak, 0xFFFF),  # an unsigned short on file
                last_failure_at=now,
            )
        )
        host = self._file.host()
        if host.state == HOST_OPEN and self._in_outage(host, now, count_self=False):
            return True
        return self._host_streak(now) >= breaker.config.failure_threshold

    def recovered(self, breaker: _SharedBreaker) -> None:
        """A success ended this process's failure streak."""
        if self._file.slot.streak:
            self._guarded(lambda: self._file.write_slot(replace(self._file.slot, streak=0)), None)

    # --- the poller: what the others did --------------------------------------------------

    def poll(self) -> None:
        """Bring one breaker up to date with its scope (the poller thread calls this)."""
        if not self.alive:
            return
        breaker = self._breaker() if self._breaker is not None else None
        if breaker is None:
            self.close()
            return
        self._guarded(lambda: self._poll(breaker), None)

    def _poll(self, breaker: _SharedBreaker) -> None:
        now = time.monotonic()
        beat = now >= self._next_beat
        if not beat and self._file.host_bytes() == self._last_raw:
            return  # nothing new: the common case, one 64-byte compare
        # Under the breaker's lock, as the hooks are: the slot and what this process
        # has seen change in one place at a time.
        with breaker._lock:
            if beat:
                self._beat(now)
            raw = self._file.host_bytes()
            if raw != self._last_raw:
                host = self._file.host()
                self._last_raw = raw
                self._apply(breaker, host, now)

    def _beat(self, now: float) -> None:
        if not self._file.owns_slot():
            # Taken over while this process looked dead (stopped for seconds): rejoin,
            # without waiting for the lock (the breaker's lock is held here).
            self._file.claim_slot(wait=0.0)
            return
        self._file.write_slot(replace(self._file.slot, heartbeat_at=now))
        self._next_beat = now + _HEARTBEAT_SECONDS

    def _apply(self, breaker: _SharedBreaker, host: HostRecord, now: float) -> None:
        """React to the host record (holding the breaker's lock)."""
        if not breaker.enabled:
            return
        state = breaker._state
        news = (host.epoch, host.state) != self._seen
        self._seen = (host.epoch, host.state)
        if host.state == HOST_OPEN:
            if not self._in_outage(host, now):
                return  # everybody who was open in it is gone: an outage that ended
            if state == OPEN:
                if self._file.slot.epoch != host.epoch:
                    self._join(breaker, now, trip=False)  # a host outage began meanwhile
                else:
                    self._probe_by(breaker, host.next_probe_at, now)
            elif state == CLOSED and news and host.opened_at > self._changed_at:
                SHARING_LOGGER.info(
                    "circuit breaker %r: process %d opened it on this host (outage %d); %s",
                    breaker.name,
                    host.opened_by,
                    host.epoch,
                    "this process's last call failed too: open"
                    if breaker._local_streak
                    else "the next call here is a probe",
                )
                if breaker._local_streak:
                    breaker._enter(OPEN, FORCED)
                else:
                    breaker._enter_suspect()
        elif news and state == OPEN and host.closed_at > self._changed_at:
            # A peer's probe closed it: probe here at once (this path may still be broken).
            breaker._retry_at = breaker._clock()

    # --- reporting ------------------------------------------------------------------------

    def view(self, breaker: _SharedBreaker) -> dict[str, Any]:
        """The host's view for metrics and health (JSON-ready)."""
        if not self.alive:
            return {"shared": False, "reason": self.reason}
        try:
            now = time.monotonic()
            host = self._file.host()
            slots = [slot for slot in self._file.slots(host.used) if slot.live(now)]
        except Exception as exc:
            self._fail(str(exc) if isinstance(exc, ChannelError) else repr(exc))
            return {"shared": False, "reason": self.reason}
        is_open = host.state == HOST_OPEN and any(
            slot.epoch == host.epoch and slot.state in (SLOT_OPEN, SLOT_HALF_OPEN) for slot in slots
        )
        return {
            "shared": True,
            "state": OPEN if is_open else CLOSED,
            "outage": host.epoch,
            "opened_by": host.opened_by if host.epoch else None,
            "opened_at": (
                datetime.fromtimestamp(host.opened_wall, timezone.utc).isoformat()
                if host.epoch
                else None
            ),
            "closed_by": host.closed_by or None,
            "processes": len(slots),
            "open_processes": sum(1 for slot in slots if slot.state == SLOT_OPEN),
            "probing_processes": sum(1 for slot in slots if slot.state == SLOT_HALF_OPEN),
            "host_probes": host.probes,
            "suspect": bool(getattr(breaker, "_suspect", False)),
            "pid": self._file.pid,
        }

    def _fail(self, reason: str) -> None:
        """Switch sharing off for this breaker: one WARNING, then per-process decisions."""
        if not self.alive:
            return
        self.alive = False
        self.reason = reason
        breaker = self._breaker() if self._breaker is not None else None
        SHARING_LOGGER.warning(
            "circuit breaker %r: host sharing is off for this process (%s); it decides "
            "alone from now on",
            breaker.name if breaker is not None else "?",
            reason,
        )
        with contextlib.suppress(Exception):
            self._file.write_slot(SlotRecord())


# --- the process's channels and their poller ---------------------------------------------


class HostSharing:
    """The channels of one ``Resilience``: one per breaker name, one poller thread for
    the whole process. Build it with :meth:`start` (None when sharing is off)."""

    def __init__(
        self, config: HostSharingConfig, scope: str, scopes: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.scope = scope
        # Breakers whose identity is not the default cache's (a named cache's breaker):
        # their own scope, so two services that share only a default cache never mix them.
        self.scopes: Mapping[str, str] = dict(scopes or {})
        self._channels: dict[str, HostChannel] = {}
        self._lock = threading.Lock()
        self._directory: str | None = None
        self._refused: str | None = None

    @classmethod
    def start(
        cls, config: HostSharingConfig, scope: str, scopes: Mapping[str, str] | None = None
    ) -> HostSharing | None:
        return cls(config, scope, scopes) if config.enabled else None

    def _prepare(self) -> str:
        if self._directory is not None:
            return self._directory
        if self._refused is not None:
            raise ChannelError(self._refused)
        path = self.config.directory or default_directory()
        if path is None:
            raise ChannelError(
                "no private memory-backed directory ($XDG_RUNTIME_DIR or /dev/shm); "
                "set common.circuit_breakers.host_sharing.directory"
            )
        self._directory = private_directory(path)
        return self._directory

    def channel(self, name: str) -> HostChannel | None:
        """The channel for breaker ``name``; None (after one WARNING) when the channel
        cannot be used: the breaker then decides alone."""
        with self._lock:
            channel = self._channels.get(name)
            if channel is not None:
                return channel if channel.alive else None
            try:
                scope = self.scopes.get(name, self.scope)
                path, digest = channel_file(self._prepare(), scope, name)
                channel = HostChannel(path, digest, self.config.poll_interval_seconds)
            except Exception as exc:  # never raised to configure(): decide alone instead
                reason = str(exc) if isinstance(exc, (ChannelError, OSError)) else repr(exc)
                if self._directory is None:
                    if self._refused is not None:
                        return None  # the directory was refused already: said once
                    self._refused = reason
                SHARING_LOGGER.warning(
                    "circuit breaker %r: host sharing is off (%s); each process decides alone",
                    name,
                    reason,
                )
                return None
            self._channels[name] = channel
            return channel

    def close(self) -> None:
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


class _Poller:
    """One daemon thread per process that brings every live channel up to date.

    It is stopped before a fork and started again after it, in the parent and in the
    child: the child never inherits a lock the thread held (a breaker's, mid-poll).
    (Python 3.12 then sees a single-threaded process at the fork; 3.13 counts threads
    after the parent's fork handlers, where the poller is running again, and warns.)
    """

    def __init__(self) -> None:
        self._channels: weakref.WeakSet[HostChannel] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, channel: HostChannel) -> None:
        with self._lock:
            self._channels.add(channel)
            self._start()

    def _start(self) -> None:
        """Start the thread if it is not running (holding ``_lock``)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop,),
                name="tasker-resilience-host-sharing",
                daemon=True,
            )
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                channels = [channel for channel in self._channels if channel.alive]
            if not channels:
                return
            for channel in channels:
                channel.poll()
            stop.wait(min(channel.poll_interval for channel in channels))

    def before_fork(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            native_id = thread.native_id
            thread.join()
            _wait_until_gone(native_id)

    def after_fork_in_parent(self) -> None:
        with self._lock:
            if any(channel.alive for channel in self._channels):
                self._start()

    def after_fork_in_child(self) -> None:
        # The mapping is shared with the parent; the slots are the parent's: each
        # channel takes one of its own before polling starts.
        self._lock = threading.Lock()
        reset_file_locks()
        channels = [channel for channel in self._channels if channel.alive]
        for channel in channels:
            channel._after_fork()
        self.after_fork_in_parent()

    def close_all(self) -> None:
        for channel in list(self._channels):
            channel.close()


def _wait_until_gone(native_id: int | None) -> None:
    """``join()`` returns just before the OS thread has exited, and a fork counts OS
    threads (``/proc/self/task`` on Linux): wait for it to be gone, 50 ms at most."""
    task = f"/proc/self/task/{native_id}"
    deadline = time.monotonic() + 0.05
    while native_id is not None and os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.0005)


_POLLER = _Poller()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_POLLER.before_fork,
        after_in_parent=_POLLER.after_fork_in_parent,
        after_in_child=_POLLER.after_fork_in_child,
    )
# A process that exits frees its slots at once rather than when its heartbeat goes stale.
atexit.register(_POLLER.close_all)

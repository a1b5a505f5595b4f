"""The host-sharing channel's file: where it lives, its records, its lock.

One file per scope, mapped into every process of the scope (``mmap``, ``MAP_SHARED``),
in a private per-user directory. It holds fixed-size records of 64 bytes, each ending
with the CRC32 of the rest (an all-zero record is an empty one):

- record 0, the file header: magic, format version, slot count, record size and the
  scope's digest (a file of another scope or format is refused);
- record 1, the *host record*: written under a ``lockf`` lock on byte 0 that nobody
  waits for (:meth:`SharedFile.locked` yields False when another process holds it);
- records 2...: one *slot* per process, written only by its owner, so without a lock.

What the records mean and what a process does with them is
:mod:`~tasker_resilience._breakers.host_sharing`'s business; this module only keeps
the bytes honest: private files of this user, whole records (a torn read is read
again; a record still invalid is corrupt), a file fully written before it is mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import astuple, dataclass, replace
from typing import Final

try:  # POSIX only; elsewhere sharing is refused with one WARNING
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # checked before use

__all__ = [
    "HOST_CLOSED",
    "HOST_OPEN",
    "SLOTS",
    "SLOT_CLOSED",
    "SLOT_EMPTY",
    "SLOT_HALF_OPEN",
    "SLOT_OPEN",
    "ChannelError",
    "HostRecord",
    "SharedFile",
    "SlotRecord",
    "channel_file",
    "default_directory",
    "private_directory",
    "reset_file_locks",
]

SLOTS: Final = 128
"""Processes per scope; one more falls back to deciding alone (one WARNING)."""
_RECORD: Final = 64
_BODY: Final = _RECORD - 4  # the last 4 bytes of a record are the CRC32 of the first 60
_MAGIC: Final = b"TRHOST\x00\x01"
_VERSION: Final = 1
_HOST_AT: Final = _RECORD  # record 0: the file header; 1: the host; 2...: slots
_SLOTS_AT: Final = 2 * _RECORD
_SIZE: Final = _SLOTS_AT + SLOTS * _RECORD
_STALE_SECONDS: Final = 2.0
"""A slot whose heartbeat is older than this belongs to a dead, hung or stopped process."""
_READ_TRIES: Final = 3
_JOIN_WAIT_SECONDS: Final = 0.5

_FILE = struct.Struct("<8sHHH16s")
_HOST = struct.Struct("<QBxHIIIdddd")
_SLOT = struct.Struct("<IBxHQddd")

HOST_CLOSED: Final = 0
HOST_OPEN: Final = 1
SLOT_EMPTY: Final = 0
SLOT_CLOSED: Final = 1
SLOT_OPEN: Final = 2
SLOT_HALF_OPEN: Final = 3


class ChannelError(Exception):
    """The channel cannot be used (the message says why); sharing is switched off."""


@dataclass(frozen=True)
class HostRecord:
    """The host's outage: changed under :meth:`SharedFile.locked` by whoever changes it."""

    epoch: int = 0
    """The outage's number: 0 before the first one."""
    state: int = HOST_CLOSED
    used: int = 0
    """High-water mark of slots ever claimed: readers scan no further."""
    opened_by: int = 0
    closed_by: int = 0
    probes: int = 0
    opened_at: float = 0.0
    opened_wall: float = 0.0
    closed_at: float = 0.0
    next_probe_at: float = 0.0

    def pack(self) -> bytes:
        return _HOST.pack(*astuple(self))  # the fields in _HOST's order


@dataclass(frozen=True)
class SlotRecord:
    """One process: written by that process only. Times are ``time.monotonic()``."""

    pid: int = 0
    state: int = SLOT_EMPTY
    streak: int = 0
    """Its failure streak while closed (an unsigned short on file)."""
    epoch: int = 0
    """The host outage it is open in; 0: none."""
    last_failure_at: float = 0.0
    heartbeat_at: float = 0.0
    changed_at: float = 0.0

    def pack(self) -> bytes:
        return _SLOT.pack(*astuple(self))  # the fields in _SLOT's order

    def live(self, now: float) -> bool:
        """A process that is there: it beats, and (same pid namespace) it exists."""
        if self.state == SLOT_EMPTY or self.pid <= 0 or now - self.heartbeat_at > _STALE_SECONDS:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass  # EPERM: somebody's process; trust the heartbeat
        return True


def _record(body: bytes) -> bytes:
    padded = body.ljust(_BODY, b"\x00")
    return padded + struct.pack("<I", zlib.crc32(padded))


def _valid(record: bytes) -> bool:
    if record == bytes(_RECORD):
        return True  # never written: an empty slot, a host that never opened
    stored: int = struct.unpack_from("<I", record, _BODY)[0]
    return zlib.crc32(record[:_BODY]) == stored


# --- where the files live -------------------------------------------------------------


def default_directory() -> str | None:
    """``$XDG_RUNTIME_DIR/tasker-resilience``, else ``/dev/shm/tasker-resilience-<uid>``,
    else None (nowhere private and memory-backed to put the channel)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/") and os.path.isdir(runtime):
        return os.path.join(runtime, "tasker-resilience")
    # A fixed name in a shared place is safe here only because private_directory()
    # refuses it unless it is a real directory (no symlink) owned by us with mode 0700.
    shm = "/dev/shm"  # nosec B108 # checked by private_directory(), see above
    if os.path.isdir(shm):
        return f"{shm}/tasker-resilience-{os.geteuid()}"
    return None


def _check_private(path: str, info: os.stat_result, kind: str) -> None:
    uid = os.geteuid()
    if info.st_uid != uid:
        raise ChannelError(f"{kind} {path} belongs to uid {info.st_uid}, not to uid {uid}")
    if info.st_mode & 0o077:
        raise ChannelError(
            f"{kind} {path} has mode {stat.S_IMODE(info.st_mode):04o}; only its owner "
            f"may read or write it ({'0700' if kind == 'directory' else '0600'})"
        )


def private_directory(path: str) -> str:
    """``path``, created 0700 if missing (its parent must exist), checked otherwise."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ChannelError(f"cannot create directory {path}: {exc.strerror or exc}") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ChannelError(f"{path} is not a directory (a symlink or a file)")
    _check_private(path, info, "directory")
    return path


def channel_file(directory: str, scope: str, name: str) -> tuple[str, bytes]:
    """The file of breaker ``name`` in ``scope`` and the scope's digest: a hash of the
    user, the scope and the name (no host name or URL shows in the file name)."""
    text = "\x00".join((str(os.geteuid()), scope, name))
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]
    return os.path.join(directory, f"breaker-{digest.hex()}.v{_VERSION}"), digest


# One lock per file per process: POSIX record locks exclude processes, not the threads
# (or the several channels of tests) of one process.
_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


def reset_file_locks() -> None:
    """In a forked child: a lock another thread of the parent held stays held forever."""
    global _FILE_LOCKS_GUARD
    _FILE_LOCKS_GUARD = threading.Lock()
    _FILE_LOCKS.clear()


# --- one process's handle on one file ---------------------------------------------------


class SharedFile:
    """The mapped file of one scope and this process's slot in it. Raises
    :class:`ChannelError` (or ``OSError``) when the file cannot be used."""

    def __init__(self, path: str, digest: bytes) -> None:
        self.path = path
        self.pid = os.getpid()
        self.slot = SlotRecord()
        """This process's slot as last written."""
        self._digest = digest
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._slot_at = 0
        if fcntl is None:  # pragma: no cover - Windows
            raise ChannelError("no POSIX file locks on this platform")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise ChannelError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise ChannelError(f"{path} is not a regular file")
            _check_private(path, info, "file")
            self._initialise(info.st_size)
            self._mm = mmap.mmap(self._fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._check_header()
            self.claim_slot(_JOIN_WAIT_SECONDS)
        except BaseException:
            self.release()
            raise

    def _initialise(self, size: int) -> None:
        """Size and write the file once; whoever holds the lock first does it."""
        if size == _SIZE:
            return
        if size not in (0, _SIZE):
            raise ChannelError(f"{self.path} has {size} bytes, not {_SIZE}: not a channel file")
        with self.locked(wait=_JOIN_WAIT_SECONDS) as locked:
            if not locked:
                raise ChannelError(f"{self.path} stayed locked while being created")
            if os.fstat(self._fd).st_size == _SIZE:
                return  # another process finished it first
            header = _record(_FILE.pack(_MAGIC, _VERSION, SLOTS, _RECORD, self._digest))
            content = header + bytes(_SIZE - len(header))
            try:
                # Every byte written now, not a sparse file: a store into a hole of a
                # full tmpfs through the mapping would kill the process (SIGBUS).
                written = os.pwrite(self._fd, content, 0)
            except OSError as exc:
                written, reason = 0, exc.strerror or str(exc)
            else:
                reason = "short write"
            if written != _SIZE:
                os.ftruncate(self._fd, 0)  # leave no half-made file behind
                raise ChannelError(f"cannot size {self.path}: {reason} (directory full?)")

    def _check_header(self) -> None:
        magic, version, slots, size, digest = _FILE.unpack_from(self._read(0))
        if (magic, version, slots, size) != (_MAGIC, _VERSION, SLOTS, _RECORD):
            raise ChannelError(f"{self.path} is not a version {_VERSION} channel file")
        if digest != self._digest:
            raise ChannelError(f"{self.path} belongs to another scope")

    def claim_slot(self, wait: float = 0.0) -> bool:
        """Take a free slot (never used, or its process gone), keeping this process's
        own fields (a forked child starts with its parent's state). False: the lock was
        busy for ``wait`` seconds (0: try again later)."""
        now = time.monotonic()
        with self.locked(wait=wait) as locked:
            if not locked:
                if not wait:
                    return False
                raise ChannelError(f"{self.path} stayed locked while joining")
            host = self.host()
            for index in range(SLOTS):
                at = _SLOTS_AT + index * _RECORD
                if index >= host.used or not self._slot_record(at).live(now):
                    break
            else:
                raise ChannelError(f"all {SLOTS} process slots of {self.path} are in use")
            self._slot_at = at
            self.pid = os.getpid()
            self.write_slot(
                replace(
                    self.slot,
                    pid=self.pid,
                    state=self.slot.state or SLOT_CLOSED,
                    heartbeat_at=now,
                    changed_at=now,
                )
            )
            if index >= host.used:
                self.write_host(replace(host, used=index + 1))
        return True

    def owns_slot(self) -> bool:
        """False when another process took this slot (this one looked dead meanwhile)."""
        return self._slot_record(self._slot_at).pid == self.pid

    # --- records ----------------------------------------------------------------------

    def _mapping(self) -> mmap.mmap:
        mm = self._mm
        if mm is None:
            raise ChannelError("closed")
        return mm

    def _read(self, at: int) -> bytes:
        mm = self._mapping()
        for _ in range(_READ_TRIES):
            record = mm[at : at + _RECORD]
            if _valid(record):
                return record
            # A torn read: the writer (another process) was mid-copy. Read again.
        raise ChannelError(f"corrupt record at byte {at} of {self.path}")

    def host_bytes(self) -> bytes:
        """The host record as stored: comparing it is the cheapest "anything new?"."""
        return self._mapping()[_HOST_AT : _HOST_AT + _RECORD]

    def host(self) -> HostRecord:
        return HostRecord(*_HOST.unpack_from(self._read(_HOST_AT)))

    def _slot_record(self, at: int) -> SlotRecord:
        return SlotRecord(*_SLOT.unpack_from(self._read(at)))

    def slots(self, used: int, *, others: bool = False) -> Iterator[SlotRecord]:
        """The slots ever used; ``others``: all but this process's own."""
        for index in range(min(used, SLOTS)):
            at = _SLOTS_AT + index * _RECORD
            if not (others and at == self._slot_at):
                yield self._slot_record(at)

    def write_host(self, host: HostRecord) -> None:
        """Only under :meth:`locked`."""
        self._mapping()[_HOST_AT : _HOST_AT + _RECORD] = _record(host.pack())

    def write_slot(self, slot: SlotRecord | None = None) -> None:
        """This process's own slot (``slot``, or the last one written again): it is the
        only writer, so no lock."""
        if slot is not None:
            self.slot = slot
        self._mapping()[self._slot_at : self._slot_at + _RECORD] = _record(self.slot.pack())

    @contextlib.contextmanager
    def locked(self, wait: float = 0.0) -> Iterator[bool]:
        """The host record's lock, not waited for (``wait`` only when joining): yields
        False when another process holds it. Held for a few memory writes, no I/O."""
        assert fcntl is not None
        with _thread_lock(self.path):
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.001)
            try:
                yield True
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    def close(self) -> None:
        """Free this process's slot (others stop counting it) and unmap."""
        with contextlib.suppress(Exception):
            self.write_slot(SlotRecord())
        self.release()

    def release(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            with contextlib.suppress(Exception):
                mm.close()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

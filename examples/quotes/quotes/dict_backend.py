"""A cache backend of our own: a dict with per-entry TTLs, registered as "quotes-dict"
when this module is imported (name it in common.cache.plugins, or pass
``--import quotes.dict_backend`` to the tasker-resilience command)."""

from __future__ import annotations

import threading
import time

import tasker_resilience as tr


class DictBackend(tr.InProcessAsyncMixin):
    """In-process, so no breaker guards it (``distributed = False``)."""

    distributed = False

    def __init__(self, name: str = "quotes-dict") -> None:
        self.name = name
        self._data: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= now:
            del self._data[key]
            return None
        return value

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._live(key, time.monotonic())

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        expires = float("inf") if ttl_seconds is None else time.monotonic() + ttl_seconds
        with self._lock:
            self._data[key] = (value, expires)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def delete_pattern(self, pattern: str) -> int:
        matches = tr.glob_to_regex(pattern).fullmatch  # Redis glob syntax, escapes included
        now = time.monotonic()
        with self._lock:
            doomed = [k for k in list(self._data) if matches(k) and self._live(k, now)]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def is_backend_failure(self, exc: BaseException) -> bool:
        return False  # nothing here can be down; an exception is a bug to see


tr.register_backend("quotes-dict", lambda config: DictBackend(config.backend))

"""Live progress of a drill on a terminal (or plain lines where there is none)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Live progress on ``stream``: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._tty = enabled and self._stream.isatty()
        self._last_update = 0.0
        self._start = time.perf_counter()

    def event(self, message: str) -> None:
        """A line that stays: a phase change, a transition."""
        if not self._enabled:
            return
        elapsed = time.perf_counter() - self._start
        clear = "\r\033[K" if self._tty else ""
        self._stream.write(f"{clear}[{elapsed:5.1f}s] {message}\n")
        self._stream.flush()

    def status(self, phase: str, operations: int, state: str, retry_after: float | None) -> None:
        """The rewritten status line (terminals only; at most 10 times a second)."""
        now = time.perf_counter()
        if not self._tty or now - self._last_update < 0.1:
            return
        self._last_update = now
        retry = f", probe in {retry_after:.1f}s" if retry_after else ""
        self._stream.write(
            f"\r\033[K[{now - self._start:5.1f}s] {phase}: {operations} ops, breaker {state}{retry}"
        )
        self._stream.flush()

    def done(self) -> None:
        if self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()

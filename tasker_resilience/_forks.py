"""What a forked child must not inherit as it was: locks, events, in-flight tables.

``os.fork()`` copies the memory of every thread but runs only the one that forked
(gunicorn ``--preload``, multiprocessing's ``fork`` start method, Celery's prefork
pool). A lock another thread held at that moment is held for ever in the child; a
single-flight entry another thread was computing waits for ever on an event nothing
will set. Each object that owns such state registers a reset here; the child runs
every reset before it returns from ``fork()``.

One ``os.register_at_fork`` hook for the whole package (hooks cannot be unregistered,
so one per object would grow without bound); objects are held weakly. This module
sits below every room and imports nothing from the package.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["after_fork_in_child", "new_lock_after_fork"]

T = TypeVar("T")

_resets: list[tuple[weakref.ref[Any], Callable[[Any], None]]] = []
_prune_at = 64


def after_fork_in_child(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in every child forked from now on, while ``owner`` lives."""
    global _prune_at
    _resets.append((weakref.ref(owner), reset))
    if len(_resets) >= _prune_at:
        # Drop the entries of collected owners (amortised: when the list doubles).
        _resets[:] = [(ref, fn) for ref, fn in _resets if ref() is not None]
        _prune_at = max(64, 2 * len(_resets))


def _renew_lock(owner: Any) -> None:
    owner._lock = threading.Lock()


def new_lock_after_fork(owner: Any) -> None:
    """The common case: ``owner._lock`` (a ``threading.Lock``) is new in a child."""
    after_fork_in_child(owner, _renew_lock)


def _in_child() -> None:
    for ref, reset in list(_resets):
        owner = ref()
        if owner is not None:
            reset(owner)


os.register_at_fork(after_in_child=_in_child)

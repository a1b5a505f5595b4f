"""A child forked while other threads use the cache never hangs.

``os.fork()`` runs only the forking thread in the child: a lock another thread held,
or a ``@cached`` computation another thread was running, would stay held or pending in
the child for ever. Real forks, with another thread mid-call (holding the lock, or
inside the computation) at the moment of the fork.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience.testing import configure_for_tests

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

CHILD_SECONDS = 10


def _in_child(check: Callable[[], None]) -> int:
    """Run ``check`` in a forked child; its exit status (0: passed; a hang is killed)."""
    with warnings.catch_warnings():
        # 3.12+ warns that forking a multi-threaded process may deadlock the child:
        # exactly what this proves it does not.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            signal.alarm(CHILD_SECONDS)  # a hang ends the child (SIGALRM), not the suite
            check()
            status = 0
        except BaseException as exc:
            print(f"child failed: {exc!r}", file=sys.stderr)
        finally:
            os._exit(status)
    deadline = time.monotonic() + CHILD_SECONDS + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


@contextmanager
def _held(lock: Any) -> Iterator[None]:
    """Another thread holds ``lock`` (as it would, mid-call) until the block ends."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(5)
    try:
        yield
    finally:
        release.set()
        thread.join(5)


def test_a_cached_key_another_thread_was_computing_is_computed_in_the_child() -> None:
    configure_for_tests()
    inside, release = threading.Event(), threading.Event()

    @tr.cached(key=lambda x: str(x))
    def slow(x: int) -> int:
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            release.wait(30)
        return x * 2

    computing = threading.Thread(target=slow, args=(21,), daemon=True)
    computing.start()
    assert inside.wait(5)
    try:

        def check() -> None:
            assert slow(21) == 42  # not a wait on the parent thread's computation

        assert _in_child(check) == 0
    finally:
        release.set()
        computing.join(5)


def test_the_pending_invalidations_lock_held_at_fork_is_free_in_the_child() -> None:
    res = configure_for_tests(backend="fakeredis")
    res.breakers.get("cache").force_open()  # every delete is remembered for replay
    pending = res.cache._pending
    with _held(pending._lock):

        def check() -> None:
            res.cache.delete("k")  # records the invalidation: takes the lock
            assert res.cache.pending_invalidations()["pending"] == 1

        assert _in_child(check) == 0


def test_the_breaker_lock_held_at_fork_is_free_in_the_child() -> None:
    res = configure_for_tests(backend="fakeredis")
    res.cache.set("k", "v")
    breaker = res.breakers.get("cache")
    with _held(breaker._lock):  # another thread recording an outcome, mid-call

        def check() -> None:
            assert res.cache.get("k") == "v"
            breaker.force_open()  # a transition: takes the lock
            assert res.cache.get("k") is None

        assert _in_child(check) == 0


def test_the_memory_backend_lock_held_at_fork_is_free_in_the_child() -> None:
    res = configure_for_tests()  # the memory backend
    res.cache.set("k", "v")
    with _held(res.cache.backend._lock):  # type: ignore[attr-defined]

        def check() -> None:
            assert res.cache.get("k") == "v"

        assert _in_child(check) == 0


def test_a_replay_in_flight_at_fork_is_replayed_by_the_child() -> None:
    res = configure_for_tests(backend="fakeredis")
    res.cache.set("k", "old")
    res.breakers.get("cache").force_open()
    res.cache.delete("k")  # missed: remembered
    pending = res.cache._pending
    assert pending.claim()  # another thread's replay has taken the key, mid-call
    pending.take(10)
    try:

        def check() -> None:
            res.breakers.get("cache").reset()
            assert res.cache.get("k") is None  # replayed here, never the old value
            assert not res.cache._pending.active

        assert _in_child(check) == 0
    finally:
        pending.release()

"""A cache process driven over its stdin/stdout: a second (third...) service process for
the near-cache drills, tests and benchmarks, so cross-process coherence is shown
between real processes rather than two providers sharing one interpreter.

The parent starts one with :meth:`Peer.start` (``python -m
tasker_resilience._operations.drill.peer``) and sends one JSON request per line; the
peer configures its own :class:`~tasker_resilience.Resilience` from the settings it is
given and answers one JSON line per request. Times are ``time.monotonic()``, which on
Linux and macOS is one clock for every process of the machine, so the parent can
subtract a time measured in one peer from a time measured in another.

Requests (``op`` and its fields):

- ``get`` key -> ``value``; ``set`` key value [ttl]; ``delete`` key -> ``t`` (the
  monotonic time just before the call);
- ``watch`` key until timeout -> ``seen`` (bool) and ``t`` (when ``get`` first returned
  ``until``), polling ``get`` every 0.2 ms;
- ``settle`` key timeout -> ``ok`` once a read of ``key`` stays in the near tier;
- ``wait_near`` mode timeout -> ``ok`` once the near tier is in ``mode`` (tracking
  connected, for ``tracking``);
- ``recover`` timeout -> ``ok`` once the circuit is closed and nothing is pending (it
  keeps reading a probe key, which is what lets the breaker probe and the replay run);
- ``state`` -> ``circuit``, ``stats``, ``near`` (the health block);
- ``quit``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["Peer", "main"]

_POLL_SECONDS = 0.0002


def _serve(settings: Mapping[str, Any]) -> None:
    from tasker_resilience._resilience import configure

    res = configure(env=str(settings.get("env", "test")), overrides=settings["overrides"])
    cache = res.cache
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        reply: dict[str, Any]
        if op == "quit":
            break
        if op == "get":
            reply = {"value": cache.get(request["key"])}
        elif op == "set":
            t = time.monotonic()
            cache.set(request["key"], request["value"], request.get("ttl"))
            reply = {"t": t}
        elif op == "delete":
            t = time.monotonic()
            cache.delete(request["key"])
            reply = {"t": t}
        elif op == "watch":
            reply = _watch(cache, request["key"], request["until"], request["timeout"])
        elif op == "settle":
            reply = {"ok": _settle(cache, request["key"], request["timeout"])}
        elif op == "wait_near":
            reply = {"ok": _wait_near(cache, request["mode"], request["timeout"])}
        elif op == "recover":
            reply = {"ok": _recover(cache, request["timeout"])}
        elif op == "state":
            reply = {
                "circuit": cache.circuit_state,
                "stats": cache.stats(),
                "near": cache.near_info(),
            }
        else:
            reply = {"error": f"unknown op {op!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    res.close()


def _watch(cache: Any, key: str, until: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        value = cache.get(key)
        now = time.monotonic()
        if value == until:
            return {"seen": True, "t": now}
        if now >= deadline:
            return {"seen": False, "t": now, "value": value}
        time.sleep(_POLL_SECONDS)


def _settle(cache: Any, key: str, timeout: float) -> bool:
    """Read ``key`` until the near tier keeps it: an invalidation of the write this read
    observed may still be on its way and evict the first fill (which is safe, and what
    a test of stale serving must wait out)."""
    near = cache.near
    full = f"{cache.key_prefix}:{key}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cache.get(key)
        time.sleep(0.05)
        if near is not None and near.fresh(full) is not None:
            return True
    return False


def _wait_near(cache: Any, mode: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        near = cache.near
        if (
            near is not None
            and near.mode == mode
            and (mode != "tracking" or near.tracking_connected)
        ):
            return True
        time.sleep(0.01)
    return False


def _recover(cache: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cache.get("__peer_probe__")
        if cache.circuit_state == "closed" and not cache.pending_invalidations()["pending"]:
            return True
        time.sleep(0.02)
    return False


class Peer:
    """The parent's handle on one peer process."""

    def __init__(self, process: subprocess.Popen[str], name: str) -> None:
        self.process = process
        self.name = name

    @classmethod
    def start(cls, overrides: Mapping[str, Any], *, name: str = "peer", env: str = "test") -> Peer:
        """A new peer configured with ``overrides`` (``configure(env, overrides)``)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tasker_resilience._operations.drill.peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        peer = cls(process, name)
        peer._send({"env": env, "overrides": overrides})
        return peer

    def _send(self, message: Mapping[str, Any]) -> None:
        stdin = self._pipe(self.process.stdin)
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    def send(self, op: str, **fields: Any) -> None:
        """Send a request without waiting for its answer (see :meth:`reply`)."""
        self._send({"op": op, **fields})

    def reply(self) -> dict[str, Any]:
        line = self._pipe(self.process.stdout).readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (code {self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.send(op, **fields)
        return self.reply()

    @staticmethod
    def _pipe(pipe: IO[str] | None) -> IO[str]:
        if pipe is None:  # pragma: no cover - Popen was given PIPE for both
            raise RuntimeError("peer pipes are missing")
        return pipe

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the peer to quit; kill it if it does not within ``timeout``."""
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    settings = json.loads(sys.stdin.readline())
    _serve(settings)


if __name__ == "__main__":
    main()

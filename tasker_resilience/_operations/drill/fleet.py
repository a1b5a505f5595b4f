"""What one outage costs a host of worker processes, with and without host sharing.

``tasker-resilience drill --workers N`` and the host-sharing tests run the same fleet:
N worker processes (:mod:`~tasker_resilience._operations.drill.fleet_worker`, each
with its own ``Resilience``, as gunicorn, uvicorn or celery workers have), each reading
one key about ``rate`` times a second from a private server. The server is frozen
(SIGSTOP) after a warm-up and thawed after the outage; each worker's calls and breaker
transitions come back stamped with ``time.monotonic()`` (one clock for every process of
the machine), and :class:`FleetRun` reads the host's cost from them:

- ``slow_calls``: calls slower than 100 ms from the freeze until every worker was open
  (each of them is a request that waited for the socket timeout);
- ``open_spread``: from the first worker's opening to the last one's;
- ``probes``: probes the host made (open -> half-open transitions) while every worker
  was open and the server still frozen, and their rate against the per-process rate;
- ``recovery``: from the thaw until the last worker read from the cache again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

__all__ = [
    "SLOW_SECONDS",
    "FleetRun",
    "FleetSetup",
    "WorkerRecord",
    "fleet_overrides",
    "format_fleet_runs",
    "run_fleet",
    "run_fleet_drill",
]

SLOW_SECONDS: Final = 0.1
"""A call slower than this waited on the hung server."""
_START_TIMEOUT_SECONDS: Final = 60.0


@dataclass(frozen=True)
class FleetSetup:
    """The load and the breaker settings (the issue's measured set-up by default)."""

    workers: int = 8
    rate: float = 20.0
    """Cache reads per second per worker."""
    socket_timeout: float = 0.25
    failure_threshold: int = 5
    timeout_seconds: float = 8.0
    success_threshold: int = 2
    warmup: float = 1.5
    outage: float = 3.0
    """Seconds the server stays frozen."""
    recovery: float = 4.0
    """Seconds of load after the thaw."""


def fleet_overrides(
    setup: FleetSetup,
    url: str,
    key_prefix: str,
    *,
    sharing: bool,
    directory: str = "",
    scope: str = "",
) -> dict[str, Any]:
    """The settings every worker of the fleet runs with."""
    return {
        "common": {
            "cache": {
                "backend": "redis",
                "key_prefix": key_prefix,
                "redis": {
                    "url": url,
                    "socket_timeout_seconds": setup.socket_timeout,
                    "connect_timeout_seconds": setup.socket_timeout,
                },
            },
            "circuit_breakers": {
                "component_configs": {
                    "cache": {
                        "failure_threshold": setup.failure_threshold,
                        "timeout_seconds": setup.timeout_seconds,
                        "success_threshold": setup.success_threshold,
                    }
                },
                "host_sharing": {"enabled": sharing, "directory": directory, "scope": scope},
            },
        }
    }


@dataclass
class WorkerRecord:
    """What one worker saw: its calls ``(start, seconds, hit)`` and its transitions."""

    index: int
    pid: int
    calls: list[tuple[float, float, bool]]
    transitions: list[tuple[float, str, str]]
    host: dict[str, Any] | None = None

    def opened_at(self, after: float) -> float | None:
        """When this worker's breaker first opened after ``after``."""
        return next((t for t, _, new in self.transitions if new == "open" and t >= after), None)

    def first_hit(self, after: float) -> float | None:
        """When a read started after ``after`` first found the value."""
        return next((start for start, _, hit in self.calls if hit and start >= after), None)

    def misses(self, start: float, end: float) -> tuple[int, int]:
        """``(misses, reads)`` among the reads started in ``[start, end)``."""
        window = [hit for t, _, hit in self.calls if start <= t < end]
        return sum(1 for hit in window if not hit), len(window)


@dataclass
class FleetRun:
    """One run of the fleet through one outage."""

    setup: FleetSetup
    sharing: bool
    freeze_at: float
    thaw_at: float
    end_at: float
    workers: list[WorkerRecord] = field(default_factory=list)

    @property
    def first_open(self) -> float | None:
        times = [t for w in self.workers if (t := w.opened_at(self.freeze_at)) is not None]
        return min(times) if times else None

    @property
    def all_open(self) -> float | None:
        """When the last worker opened (None if one never did)."""
        times = [w.opened_at(self.freeze_at) for w in self.workers]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)

    @property
    def open_spread(self) -> float | None:
        first, last = self.first_open, self.all_open
        return None if first is None or last is None else last - first

    @property
    def slow_calls(self) -> int:
        """Calls slower than :data:`SLOW_SECONDS` started from the freeze until every
        worker was open (until the thaw if one never opened)."""
        until = self.all_open or self.thaw_at
        return sum(
            1
            for w in self.workers
            for start, seconds, _ in w.calls
            if self.freeze_at <= start <= until and seconds > SLOW_SECONDS
        )

    @property
    def probes(self) -> int:
        """Probes (open -> half-open) made while every worker was open and frozen."""
        start = self.all_open
        if start is None:
            return 0
        return sum(
            1
            for w in self.workers
            for t, old, new in w.transitions
            if start <= t < self.thaw_at and old == "open" and new == "half-open"
        )

    @property
    def probe_window(self) -> float:
        start = self.all_open
        return 0.0 if start is None else max(0.0, self.thaw_at - start)

    @property
    def per_process_probes(self) -> float:
        """What the same window costs at one probe per worker per open period (the rate
        without sharing, averaged over periods)."""
        return len(self.workers) * self.probe_window / self.setup.timeout_seconds

    def recovery_of(self, worker: WorkerRecord) -> float | None:
        hit = worker.first_hit(self.thaw_at)
        return None if hit is None else hit - self.thaw_at

    @property
    def recovery(self) -> float | None:
        """From the thaw until the last worker read from the cache (None: one never did
        before the run ended)."""
        times = [self.recovery_of(w) for w in self.workers]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sharing": self.sharing,
            "workers": len(self.workers),
            "slow_calls": self.slow_calls,
            "open_spread_seconds": _rounded(self.open_spread),
            "probes": self.probes,
            "probe_window_seconds": round(self.probe_window, 3),
            "per_process_probes": round(self.per_process_probes, 2),
            "recovery_seconds": _rounded(self.recovery),
            "recovery_limit_seconds": round(self.thaw_limit, 3),
        }

    @property
    def thaw_limit(self) -> float:
        """How long after the thaw the run watched."""
        return self.end_at - self.thaw_at


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _Worker:
    def __init__(self, index: int, overrides: dict[str, Any], rate: float) -> None:
        self.index = index
        # Closed in stop(); a file rather than a pipe, so a chatty worker never blocks.
        self.log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tasker_resilience._operations.drill.fleet_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._send({"overrides": overrides, "rate": rate})

    def _send(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    def _line(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            raise RuntimeError(
                f"fleet worker {self.index} exited (code {self.process.wait()}): {tail}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ready(self) -> int:
        return int(self._line()["ready"])

    def go(self, start_at: float, end_at: float) -> None:
        self._send({"start_at": start_at, "end_at": end_at})

    def record(self) -> WorkerRecord:
        answer = self._line()
        return WorkerRecord(
            index=self.index,
            pid=int(answer["pid"]),
            calls=[(float(a), float(b), bool(c)) for a, b, c in answer["calls"]],
            transitions=[(float(a), str(b), str(c)) for a, b, c in answer["transitions"]],
            host=answer.get("host"),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.log.close()


def run_fleet(
    setup: FleetSetup,
    *,
    urls: Sequence[str],
    key_prefix: str,
    sharing: bool,
    freeze: Callable[[], None],
    thaw: Callable[[], None],
    directory: str = "",
    scope: str = "",
    say: Callable[[str], None] | None = None,
) -> FleetRun:
    """Start one worker per URL in ``urls`` (the fleet's size), run the load, call
    ``freeze`` after the warm-up and ``thaw`` after the outage, and collect."""
    workers: list[_Worker] = []
    try:
        for index, url in enumerate(urls):
            overrides = fleet_overrides(
                setup, url, key_prefix, sharing=sharing, directory=directory, scope=scope
            )
            workers.append(_Worker(index, overrides, setup.rate))
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        for worker in workers:
            worker.ready()
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet's workers took over a minute to start")
        start_at = time.monotonic() + 0.2
        freeze_at = start_at + setup.warmup
        thaw_at = freeze_at + setup.outage
        end_at = thaw_at + setup.recovery
        for worker in workers:
            worker.go(start_at, end_at)
        if say is not None:
            say(f"{len(workers)} workers reading, sharing {'on' if sharing else 'off'}")
        _sleep_until(freeze_at)
        freeze()
        if say is not None:
            say("server frozen")
        try:
            _sleep_until(thaw_at)
        finally:
            thaw()
        if say is not None:
            say("server back")
        run = FleetRun(setup, sharing, freeze_at, thaw_at, end_at)
        run.workers = [worker.record() for worker in workers]
        return run
    finally:
        for worker in workers:
            worker.stop()


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


_ROWS: Final = (
    ("calls slower than 100 ms at the onset", "slow_calls", "{}"),
    ("from the first worker open to the last", "open_spread_seconds", "{:.2f} s"),
    ("probes while frozen (all open)", "probes", "{}"),
    ("  at one per worker per open period", "per_process_probes", "{:.1f}"),
    ("cache read again, after the return", "recovery_seconds", "{:.2f} s"),
)


def format_fleet_runs(runs: Sequence[FleetRun]) -> str:
    """The runs side by side: what the host paid for one outage."""
    setup = runs[0].setup
    lines = [
        f"one outage, one host: {setup.workers} worker processes, {setup.rate:g} reads/s "
        f"each, socket timeout {setup.socket_timeout:g} s, failure_threshold "
        f"{setup.failure_threshold}, timeout_seconds {setup.timeout_seconds:g}",
        f"{'':<42}" + "".join(f"{_label(run):>18}" for run in runs),
    ]
    for text, key, shape in _ROWS:
        row = f"{text:<42}"
        for run in runs:
            value = run.as_dict()[key]
            shown = (
                shape.format(value)
                if value is not None
                else f"not within {run.thaw_limit:.0f} s"
                if key == "recovery_seconds"
                else "-"
            )
            row += f"{shown:>18}"
        lines.append(row)
    return "\n".join(lines)


def _label(run: FleetRun) -> str:
    return "sharing on" if run.sharing else "sharing off"


def run_fleet_drill(
    setup: FleetSetup,
    *,
    server_binary: str | None,
    say: Callable[[str], None] | None = None,
) -> list[FleetRun]:
    """``tasker-resilience drill --workers N``: the same outage on one private server,
    without host sharing and then with it. The run without sharing watches the
    recovery for a whole open period (that is how long it may take)."""
    from tasker_resilience._operations.drill.local_server import LocalServer, ServerStartError
    from tasker_resilience._operations.drill.targets import DrillError, private_server_binary

    server_binary = private_server_binary("--workers", server_binary)
    runs: list[FleetRun] = []
    try:
        with LocalServer(server_binary) as server, tempfile.TemporaryDirectory() as base:
            directory = os.path.join(base, "sharing")
            for sharing in (False, True):
                recovery = setup.recovery
                if not sharing:
                    recovery = max(recovery, setup.timeout_seconds + 1.5)
                runs.append(
                    run_fleet(
                        FleetSetup(**{**setup.__dict__, "recovery": recovery}),
                        urls=[server.url] * setup.workers,
                        key_prefix=f"drill-workers-{'on' if sharing else 'off'}-{os.getpid()}",
                        sharing=sharing,
                        freeze=server.freeze,
                        thaw=server.thaw,
                        directory=directory,
                        say=say,
                    )
                )
    except ServerStartError as exc:
        raise DrillError(f"cannot start {server_binary}: {exc}") from None
    return runs

"""The outage drill: freeze a cache server under a steady load and watch the breaker work.

Three targets, chosen in this order:

- ``local-server``: a private ``dragonfly``/``redis-server``/``valkey-server`` started on a
  free loopback port (``LocalServer``); the drill freezes it with SIGSTOP and thaws it
  with SIGCONT. The real thing: real sockets, real timeouts.
- ``in-process``: no server binary on PATH (or ``in_process=True``): the in-process
  memory backend behind a fault injector that, while "frozen", waits the socket timeout
  and raises ``TimeoutError``, as a hung server would. Said so in every report.
- ``observe`` (``url=...``): the user's own server. The drill never freezes a server it
  did not start; it runs the same load and reports what the breaker did.

Phases with a server it controls: warm-up, hang (server frozen until the breaker opens),
open (still frozen), thaw (server back, breaker still open until its probe time),
half-open (probes), closed. The load is paced (``rate`` operations per second, one
worker), so every phase offers the same demand and the "without the breaker"
comparison counts operations that real callers would really have made.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import pybreaker

from ._redact import redact_url

if TYPE_CHECKING:
    from ._breaker import Breaker
    from ._config import CacheConfig
    from ._resilience import Resilience

__all__ = [
    "DrillError",
    "DrillOptions",
    "DrillReport",
    "PhaseResult",
    "Progress",
    "check_reachable",
    "format_report",
    "run_drill",
]

LOCAL_SERVER: Final = "local-server"
IN_PROCESS: Final = "in-process"
OBSERVE: Final = "observe"

INJECTOR_BACKEND: Final = "drill-fault-injector"
"""The backend name the in-process target registers (and health reports)."""

FROZEN_PHASES: Final = ("hang", "open")
"""Phases during which the server does not answer at all."""


class DrillError(Exception):
    """The drill could not run (unreachable ``--url``, no way to start a server, ...)."""


@dataclass(frozen=True)
class DrillOptions:
    """How the drill runs. Durations in seconds; defaults finish in about 10 s."""

    url: str | None = None
    """A server of yours to observe (never frozen). None: the drill brings its own."""
    in_process: bool = False
    """Use the in-process fault injector even when a server binary is on PATH."""
    server_binary: str | None = None
    """Path of the server binary to start (default: the first found on PATH)."""
    rate: float = 200.0
    """Operations offered per second (80 % get, 20 % set, one worker)."""
    warmup: float = 1.5
    outage: float = 3.0
    """Seconds the server stays frozen after the breaker has opened."""
    cooldown: float = 1.5
    """Seconds of load after the breaker has closed again."""
    duration: float = 10.0
    """Observe mode only: how long to run the load against ``url``."""
    socket_timeout: float = 0.2
    connect_timeout: float = 0.2
    failure_threshold: int = 5
    open_timeout: float = 1.5
    """The breaker's ``timeout_seconds``: time open before a half-open probe."""
    success_threshold: int = 2
    raw_samples: int = 3
    """Calls made with a plain redis-py client against the frozen server, for the
    "without the breaker" comparison."""

    @property
    def phase_limit(self) -> float:
        """How long a phase that waits for the breaker may take before the drill gives up."""
        return 4 * self.open_timeout + 20 * self.socket_timeout * self.failure_threshold + 5


@dataclass
class PhaseResult:
    """What one phase measured."""

    name: str
    seconds: float = 0.0
    operations: int = 0
    hits: int = 0
    misses: int = 0
    stored: int = 0
    """Sets the backend accepted."""
    skipped: int = 0
    """Answered at once without a network call (circuit open)."""
    errors: int = 0
    """Backend failures: each waited for a timeout (or a refused connection)."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    waited_seconds: float = 0.0
    """Sum of all operation latencies in the phase."""
    breaker_state: str = "closed"
    """The cache breaker's state when the phase ended."""
    reached: bool = True
    """False when the phase gave up waiting for the breaker."""


@dataclass
class DrillReport:
    """Everything the drill measured; ``asdict`` gives the ``--json`` output."""

    mode: str
    target: str
    settings: dict[str, Any]
    phases: list[PhaseResult] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    without_breaker: dict[str, Any] | None = None
    stale_read_check: str = "not run"
    invalidations_remembered: dict[str, int | bool] | None = None
    """Deletes and sets skipped during the outage, held for replay when it ends."""
    opened: bool = False
    closed_again: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Did the drill show what it set out to show?"""
        if self.mode == OBSERVE:
            return True
        return self.opened and self.closed_again and self.stale_read_check != "failed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


# --- progress --------------------------------------------------------------------------


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


# --- targets ---------------------------------------------------------------------------


class _Target(Protocol):
    mode: str
    description: str

    def cache_overrides(self) -> dict[str, Any]: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def raw_call(self, options: DrillOptions) -> tuple[float, str]: ...
    def close(self) -> None: ...


def _raw_client(url: str, options: DrillOptions) -> Any:
    """A plain redis-py client with the drill's timeouts and no retries: what a service
    without the breaker, but with sensibly short timeouts, would use."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=options.socket_timeout,
        socket_connect_timeout=options.connect_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _timed(call: Callable[[], object]) -> tuple[float, str]:
    """``(seconds, outcome)`` of one call: ``answered`` or the exception's type name."""
    started = time.perf_counter()
    try:
        call()
        outcome = "answered"
    except Exception as exc:
        outcome = type(exc).__name__
    return time.perf_counter() - started, outcome


class _LocalServerTarget:
    mode = LOCAL_SERVER

    def __init__(self, binary: str | None) -> None:
        from ._local_server import LocalServer

        self._server = LocalServer(binary)
        self._server.start()
        try:
            version = self._server.version()
        except Exception:
            version = "version unknown"
        self.description = (
            f"{self._server.kind} {version}, a private server on 127.0.0.1:{self._server.port} "
            "started by the drill (frozen with SIGSTOP, thawed with SIGCONT)"
        )

    def cache_overrides(self) -> dict[str, Any]:
        return {"redis": {"url": self._server.url}}

    def freeze(self) -> None:
        self._server.freeze()

    def thaw(self) -> None:
        self._server.thaw()

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        client = _raw_client(self._server.url, options)
        try:
            return _timed(lambda: client.get("tasker-drill:raw"))
        finally:
            client.close()

    def close(self) -> None:
        self._server.stop()


class _InjectedBackend:
    """The memory backend behind a switch: while frozen, every call waits the socket
    timeout and raises ``TimeoutError``, which is what a SIGSTOPped server does to a
    client."""

    distributed = True

    def __init__(self, inner: Any, delay: float, target: _InProcessTarget) -> None:
        self.name = INJECTOR_BACKEND
        self._inner = inner
        self._delay = delay
        self._target = target

    def _hang(self) -> None:
        if self._target.frozen:
            time.sleep(self._delay)
            raise TimeoutError(f"injected fault: no answer within {self._delay} s")

    async def _ahang(self) -> None:
        if self._target.frozen:
            import asyncio

            await asyncio.sleep(self._delay)
            raise TimeoutError(f"injected fault: no answer within {self._delay} s")

    def get(self, key: str) -> bytes | None:
        self._hang()
        result: bytes | None = self._inner.get(key)
        return result

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self._hang()
        self._inner.set(key, value, ttl_seconds)

    def delete(self, key: str) -> None:
        self._hang()
        self._inner.delete(key)

    def delete_pattern(self, pattern: str) -> int:
        self._hang()
        return int(self._inner.delete_pattern(pattern))

    def health_check(self) -> bool:
        self._hang()
        return bool(self._inner.health_check())

    def close(self) -> None:
        self._inner.close()

    async def aget(self, key: str) -> bytes | None:
        await self._ahang()
        result: bytes | None = await self._inner.aget(key)
        return result

    async def aset(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        await self._ahang()
        await self._inner.aset(key, value, ttl_seconds)

    async def adelete(self, key: str) -> None:
        await self._ahang()
        await self._inner.adelete(key)

    async def adelete_pattern(self, pattern: str) -> int:
        await self._ahang()
        return int(await self._inner.adelete_pattern(pattern))

    async def ahealth_check(self) -> bool:
        await self._ahang()
        return bool(await self._inner.ahealth_check())

    async def aclose(self) -> None:
        await self._inner.aclose()

    def is_backend_failure(self, exc: BaseException) -> bool:
        return isinstance(exc, (TimeoutError, ConnectionError)) or bool(
            self._inner.is_backend_failure(exc)
        )


class _InProcessTarget:
    mode = IN_PROCESS
    description = (
        "IN-PROCESS fault injector (no server binary used): the memory backend; while "
        "'frozen' each call waits the socket timeout and raises TimeoutError"
    )

    def __init__(self, options: DrillOptions) -> None:
        from ._backend import backend_factory, register_backend

        self.frozen = False
        self.backend: _InjectedBackend | None = None
        memory_factory = backend_factory("memory")

        def factory(config: CacheConfig) -> _InjectedBackend:
            self.backend = _InjectedBackend(memory_factory(config), options.socket_timeout, self)
            return self.backend

        # Registered under a name of its own, so health and logs say what is behind the
        # cache; re-registering replaces the previous drill's factory.
        register_backend(INJECTOR_BACKEND, factory)

    def cache_overrides(self) -> dict[str, Any]:
        return {"backend": INJECTOR_BACKEND}

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        backend = self.backend
        assert backend is not None, "the cache is built before the outage starts"
        return _timed(lambda: backend.get("tasker-drill:raw"))

    def close(self) -> None:
        from ._backend import unregister_backend

        unregister_backend(INJECTOR_BACKEND)


class _ObservedTarget:
    mode = OBSERVE

    def __init__(self, url: str, options: DrillOptions) -> None:
        self._url = url
        # Up front, with a short timeout: a typo should cost a second, not a drill.
        self.description = (
            f"{check_reachable(url, timeout=max(1.0, options.connect_timeout))} at "
            f"{redact_url(url)} (observed only: the drill never freezes a server it did not "
            "start; keys under tasker-drill:* expire after 60 s)"
        )

    def cache_overrides(self) -> dict[str, Any]:
        return {
            "redis": {"url": self._url},
            "key_prefix": "tasker-drill",
            "default_ttl_seconds": 60,
        }

    def freeze(self) -> None:
        raise AssertionError("an observed server is never frozen")

    thaw = freeze

    def raw_call(self, options: DrillOptions) -> tuple[float, str]:
        raise AssertionError("an observed server is never frozen")

    def close(self) -> None:
        return None


def check_reachable(url: str, *, timeout: float = 1.0) -> str:
    """PING ``url`` once with a short timeout; the server's name and version, or
    :class:`DrillError` with a one-line reason (password redacted)."""
    import redis

    try:
        client = _raw_client(url, DrillOptions(socket_timeout=timeout, connect_timeout=timeout))
    except ValueError as exc:
        raise DrillError(f"not a usable Redis URL: {redact_url(url)} ({exc})") from None
    try:
        client.ping()
        info = client.info("server")
    except redis.RedisError as exc:
        reason = str(exc).replace(url, redact_url(url)) or type(exc).__name__
        raise DrillError(f"cannot reach {redact_url(url)}: {reason}") from None
    finally:
        client.close()
    if "dragonfly_version" in info:
        return f"dragonfly {info['dragonfly_version']}"
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '(version unknown)')}"


def _choose_target(options: DrillOptions, progress: Progress) -> _Target:
    if options.url is not None:
        return _ObservedTarget(options.url, options)
    if options.in_process:
        return _InProcessTarget(options)
    from ._local_server import find_server_binary

    if options.server_binary is None and find_server_binary() is None:
        progress.event(
            "no dragonfly, redis-server or valkey-server on PATH: "
            "using the in-process fault injector"
        )
        return _InProcessTarget(options)
    try:
        return _LocalServerTarget(options.server_binary)
    except Exception as exc:
        if options.server_binary is not None:
            # Asked for by name: falling back would hide the problem.
            raise DrillError(
                f"could not start {options.server_binary}: {type(exc).__name__}: {exc}"
            ) from None
        progress.event(
            f"could not start a private server ({type(exc).__name__}: {exc}); "
            "falling back to the in-process fault injector"
        )
        return _InProcessTarget(options)


# --- running ---------------------------------------------------------------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class _TransitionListener(pybreaker.CircuitBreakerListener):
    """Records transitions; printing happens in the drill loop, not under the breaker's lock."""

    def __init__(self, record: Callable[[str, str], None]) -> None:
        self._record = record

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._record(getattr(old_state, "name", None) or "new", new_state.name)


def _stats_totals(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    get = stats.get("get", {})
    return {
        "hits": get.get("hit", 0),
        "misses": get.get("miss", 0),
        "stored": stats.get("set", {}).get("ok", 0),
        "skipped": sum(outcomes.get("skipped_open", 0) for outcomes in stats.values()),
        "errors": sum(outcomes.get("error", 0) for outcomes in stats.values()),
    }


class _Drill:
    def __init__(
        self, options: DrillOptions, target: _Target, res: Resilience, progress: Progress
    ) -> None:
        self.options = options
        self.target = target
        self.res = res
        self.progress = progress
        self.breaker: Breaker = res.breakers.get("cache")
        self.started = time.perf_counter()
        self.transitions: list[dict[str, Any]] = []
        self._reported_transitions = 0
        self._op = 0
        self._interval = 1.0 / options.rate
        self._next_at = time.perf_counter()
        self.breaker.add_listener(_TransitionListener(self._on_transition))

    def _on_transition(self, old: str, new: str) -> None:
        self.transitions.append(
            {
                "at_seconds": round(time.perf_counter() - self.started, 3),
                "from": old,
                "to": new,
                "failure_count": self.breaker.metrics()["failure_count"],
            }
        )

    def _report_transitions(self) -> None:
        for entry in self.transitions[self._reported_transitions :]:
            why = (
                " (probe failed)" if entry["from"] == "half-open" and entry["to"] == "open" else ""
            )
            self.progress.event(f"breaker 'cache': {entry['from']} -> {entry['to']}{why}")
        self._reported_transitions = len(self.transitions)

    def _wait_for_slot(self) -> None:
        """Sleep until the paced load's next operation is due."""
        now = time.perf_counter()
        if now < self._next_at:
            time.sleep(self._next_at - now)

    def _one_operation(self) -> float:
        """Run the due cache call (80 % get, 20 % set); returns its latency."""
        # No catch-up burst after a slow call: a caller that waited is a caller lost.
        self._next_at = max(self._next_at + self._interval, time.perf_counter())
        index = self._op
        self._op += 1
        key = f"drill:{index % 64}"
        cache = self.res.cache
        started = time.perf_counter()
        if index % 5 == 4:
            cache.set(key, {"n": index}, ttl=60)
        else:
            cache.get(key)
        return time.perf_counter() - started

    def phase(
        self, name: str, until: Callable[[float], bool], *, limit: float | None = None
    ) -> PhaseResult:
        """Run the load until ``until(seconds_in_phase)`` or ``limit`` seconds pass."""
        result = PhaseResult(name)
        latencies: list[float] = []
        before = _stats_totals(self.res.cache.stats())
        started = time.perf_counter()
        while True:
            # Wait first, decide after: the breaker's state may change while we sleep
            # (an open timeout elapsing), and the call must land in the phase it belongs to.
            self._wait_for_slot()
            elapsed = time.perf_counter() - started
            if until(elapsed):
                break
            if limit is not None and elapsed >= limit:
                result.reached = False
                self.progress.event(f"{name}: gave up after {elapsed:.1f}s")
                break
            latencies.append(self._one_operation())
            self._report_transitions()
            self.progress.status(
                name, len(latencies), self.breaker.state, self.breaker.retry_after_seconds
            )
        self._report_transitions()
        after = _stats_totals(self.res.cache.stats())
        result.seconds = round(time.perf_counter() - started, 3)
        result.operations = len(latencies)
        result.hits = after["hits"] - before["hits"]
        result.misses = after["misses"] - before["misses"]
        result.stored = after["stored"] - before["stored"]
        result.skipped = after["skipped"] - before["skipped"]
        result.errors = after["errors"] - before["errors"]
        result.waited_seconds = round(sum(latencies), 3)
        if latencies:
            latencies.sort()
            result.p50_ms = round(_percentile(latencies, 0.50) * 1000, 3)
            result.p99_ms = round(_percentile(latencies, 0.99) * 1000, 3)
            result.max_ms = round(latencies[-1] * 1000, 3)
        result.breaker_state = self.breaker.state
        return result


@contextmanager
def _private_resilience(options: DrillOptions, target: _Target) -> Iterator[Resilience]:
    from ._resilience import configure
    from ._settings import deep_merge

    breaker = {
        "failure_threshold": options.failure_threshold,
        "timeout_seconds": options.open_timeout,
        "success_threshold": options.success_threshold,
    }
    overrides = {
        "common": {
            "circuit_breakers": {"enabled": True, "component_configs": {"cache": breaker}},
            "cache": deep_merge(
                {
                    "enabled": True,
                    "backend": "redis",
                    "key_prefix": "tasker-drill",
                    "redis": {
                        "socket_timeout_seconds": options.socket_timeout,
                        "connect_timeout_seconds": options.connect_timeout,
                    },
                },
                target.cache_overrides(),
            ),
        }
    }
    # An empty root: the drill's settings are its own, whatever config/ or settings.toml
    # the current directory holds (TASKER_* variables still apply beneath the overrides).
    with tempfile.TemporaryDirectory(prefix="tasker-drill-") as root:
        res = configure(env="test", overrides=overrides, root=root, install=False)
        try:
            yield res
        finally:
            res.close()


def _settings_summary(options: DrillOptions, target: _Target) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rate_ops_per_second": options.rate,
        "socket_timeout_seconds": options.socket_timeout,
        "connect_timeout_seconds": options.connect_timeout,
        "failure_threshold": options.failure_threshold,
        "open_timeout_seconds": options.open_timeout,
        "success_threshold": options.success_threshold,
    }
    if target.mode == OBSERVE:
        summary["duration_seconds"] = options.duration
    else:
        summary.update(
            warmup_seconds=options.warmup,
            outage_seconds=options.outage,
            cooldown_seconds=options.cooldown,
        )
    return summary


def _measure_raw(
    target: _Target, options: DrillOptions, samples: list[tuple[float, str]]
) -> threading.Thread:
    def run() -> None:
        for _ in range(options.raw_samples):
            samples.append(target.raw_call(options))

    thread = threading.Thread(target=run, name="tasker-drill-raw-client", daemon=True)
    thread.start()
    return thread


def _without_breaker(
    report: DrillReport, options: DrillOptions, samples: list[tuple[float, str]]
) -> dict[str, Any]:
    frozen = [phase for phase in report.phases if phase.name in FROZEN_PHASES]
    operations = sum(phase.operations for phase in frozen)
    errors = sum(phase.errors for phase in frozen)
    frozen_seconds = sum(phase.seconds for phase in frozen)
    timed_out = [seconds for seconds, outcome in samples if outcome != "answered"]
    measured = statistics.median(timed_out) if timed_out else None
    return {
        "frozen_seconds": round(frozen_seconds, 3),
        "operations": operations,
        "with_breaker_waited": errors,
        "with_breaker_wait_seconds": round(sum(phase.waited_seconds for phase in frozen), 3),
        "without_breaker_waited": operations,
        "without_breaker_wait_seconds_configured": round(operations * options.socket_timeout, 3),
        "raw_client_samples": [
            {"seconds": round(seconds, 4), "outcome": outcome} for seconds, outcome in samples
        ],
        "raw_client_median_seconds": None if measured is None else round(measured, 4),
        "without_breaker_wait_seconds_measured": (
            None if measured is None else round(operations * measured, 3)
        ),
        "one_worker_max_ops_per_second": round(1.0 / options.socket_timeout, 1),
    }


def _stale_check(res: Resilience, report: DrillReport) -> None:
    value = res.cache.get("drill:stale-check")
    report.stale_read_check = "passed" if value is None else "failed"
    if value is not None:
        report.notes.append(
            "a key deleted while the circuit was open was served after recovery (stale read)"
        )


def _run_controlled(drill: _Drill, report: DrillReport) -> None:
    options, target, breaker, progress = drill.options, drill.target, drill.breaker, drill.progress
    cache = drill.res.cache
    cache.set("drill:stale-check", "before the outage", ttl=300)

    progress.event(f"warm-up: {options.rate:g} ops/s for {options.warmup:g}s")
    report.phases.append(drill.phase("warm-up", lambda t: t >= options.warmup))

    progress.event("hang: server frozen; waiting for the breaker to open")
    samples: list[tuple[float, str]] = []
    target.freeze()
    try:
        report.phases.append(
            drill.phase("hang", lambda t: breaker.state == "open", limit=options.phase_limit)
        )
        report.opened = report.phases[-1].reached
        progress.event(f"open: server still frozen for {options.outage:g}s")
        raw = _measure_raw(target, options, samples)
        # Skipped while open: the provider must remember it and replay it on recovery.
        cache.delete("drill:stale-check")
        report.phases.append(drill.phase("open", lambda t: t >= options.outage))
        raw.join(
            timeout=options.raw_samples * (options.socket_timeout + options.connect_timeout) + 5
        )
    finally:
        target.thaw()
    progress.event("thaw: server running again; the breaker waits for its probe time")
    report.phases.append(
        drill.phase("thaw", lambda t: breaker.state != "open", limit=options.phase_limit)
    )
    report.invalidations_remembered = cache.pending_invalidations()
    progress.event("half-open: probe time reached; the next calls are probes")
    report.phases.append(
        drill.phase("half-open", lambda t: breaker.state == "closed", limit=options.phase_limit)
    )
    report.closed_again = report.phases[-1].reached and breaker.state == "closed"
    progress.event(f"closed: {options.cooldown:g}s of normal load")
    report.phases.append(drill.phase("closed", lambda t: t >= options.cooldown))
    report.without_breaker = _without_breaker(report, options, samples)
    _stale_check(drill.res, report)


def _run_observed(drill: _Drill, report: DrillReport) -> None:
    options, breaker = drill.options, drill.breaker
    drill.progress.event(
        f"observing for {options.duration:g}s at {options.rate:g} ops/s "
        "(freeze the server yourself, e.g. docker pause, to see the breaker open)"
    )
    deadline = time.perf_counter() + options.duration

    def segment_over(state: str) -> Callable[[float], bool]:
        # One row per stretch of one breaker state, so a pause of your own shows up
        # as closed / open / half-open / closed rows.
        return lambda _: breaker.state != state or time.perf_counter() >= deadline

    while time.perf_counter() < deadline:
        state = breaker.state
        report.phases.append(drill.phase(state, segment_over(state)))
    report.opened = any(entry["to"] == "open" for entry in drill.transitions)
    report.closed_again = breaker.state == "closed"


def run_drill(options: DrillOptions, progress: Progress | None = None) -> DrillReport:
    """Run the drill described by ``options``; raises :class:`DrillError` if it cannot."""
    progress = progress or Progress(enabled=False)
    target = _choose_target(options, progress)
    try:
        report = DrillReport(
            mode=target.mode,
            target=target.description,
            settings=_settings_summary(options, target),
        )
        progress.event(f"target: {target.description}")
        with _private_resilience(options, target) as res:
            drill = _Drill(options, target, res, progress)
            if target.mode == OBSERVE:
                _run_observed(drill, report)
            else:
                _run_controlled(drill, report)
            report.transitions = drill.transitions
    finally:
        target.close()
        progress.done()
    return report


# --- the report ------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


_COLUMNS: Final = (
    ("phase", "<", 9),
    ("seconds", ">", 7),
    ("ops", ">", 6),
    ("hits", ">", 6),
    ("misses", ">", 6),
    ("stored", ">", 6),
    ("skipped", ">", 7),
    ("errors", ">", 6),
    ("p50 ms", ">", 8),
    ("p99 ms", ">", 8),
    ("max ms", ">", 8),
    ("breaker", "<", 9),
)


def _row(cells: list[str]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def format_report(report: DrillReport) -> str:
    """The human-readable report: the phase table and the comparison."""
    s = report.settings
    lines = [
        f"tasker-resilience drill ({report.mode}): {report.target}",
        f"load: {s['rate_ops_per_second']:g} ops/s (80% get, 20% set), one worker; "
        f"socket timeout {s['socket_timeout_seconds']:g}s; breaker opens after "
        f"{s['failure_threshold']} failures, probes after {s['open_timeout_seconds']:g}s, "
        f"closes after {s['success_threshold']} successful probes",
        "",
        _row([name for name, _, _ in _COLUMNS]),
    ]
    for phase in report.phases:
        state = phase.breaker_state if phase.reached else f"{phase.breaker_state} (gave up)"
        lines.append(
            _row(
                [
                    phase.name,
                    f"{phase.seconds:.2f}",
                    str(phase.operations),
                    str(phase.hits),
                    str(phase.misses),
                    str(phase.stored),
                    str(phase.skipped),
                    str(phase.errors),
                    _ms(phase.p50_ms),
                    _ms(phase.p99_ms),
                    _ms(phase.max_ms),
                    state,
                ]
            )
        )
    lines.append("")
    lines.extend(_comparison_lines(report))
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append(_verdict(report))
    return "\n".join(lines)


def _comparison_lines(report: DrillReport) -> list[str]:
    cmp = report.without_breaker
    if cmp is None:
        return [
            "no outage was staged: the drill does not freeze a server it did not start.",
            f"breaker transitions seen: {len(report.transitions)}",
        ]
    timeout = report.settings["socket_timeout_seconds"]
    lines = [
        f"Same outage without the breaker (server frozen {cmp['frozen_seconds']:.2f}s, "
        "phases hang + open):",
        f"  with the breaker:    {cmp['with_breaker_waited']} of {cmp['operations']} operations "
        f"waited for a timeout; {cmp['with_breaker_wait_seconds']:.2f}s spent waiting in all",
        f"  without the breaker: all {cmp['without_breaker_waited']} would have waited: "
        f"{cmp['operations']} x {timeout:g}s (configured) = "
        f"{cmp['without_breaker_wait_seconds_configured']:.1f}s",
    ]
    measured = cmp["raw_client_median_seconds"]
    samples = cmp["raw_client_samples"]
    if measured is not None:
        client = "plain redis-py client" if report.mode == LOCAL_SERVER else "injected fault"
        lines.append(
            f"                       {cmp['operations']} x {measured:.3f}s (measured: median of "
            f"{len(samples)} calls, {client}, same timeout, no retries) = "
            f"{cmp['without_breaker_wait_seconds_measured']:.1f}s"
        )
    else:
        lines.append(
            f"                       (the {len(samples)} measured raw calls did not time out: "
            f"{samples})"
        )
    lines.append(
        f"  one worker making one call at a time could finish at most "
        f"{cmp['one_worker_max_ops_per_second']:g} ops/s while the server hangs "
        f"(offered: {report.settings['rate_ops_per_second']:g} ops/s)"
    )
    thaw = next((phase for phase in report.phases if phase.name == "thaw"), None)
    if thaw is not None and thaw.skipped:
        lines.append(
            f"cost of the breaker: {thaw.skipped} operations answered as misses in the "
            f"{thaw.seconds:.2f}s between thaw and the next probe"
        )
    remembered = report.invalidations_remembered
    if remembered is not None:
        overflow = " (overflowed: the whole key prefix is dropped instead)" * bool(
            remembered["overflowed"]
        )
        lines.append(
            f"writes skipped while the circuit was open: {remembered['pending']} keys remembered"
            f"{overflow}, replayed by the first probe before it read"
        )
    lines.append(f"stale-read check (key deleted during the outage): {report.stale_read_check}")
    return lines


def _verdict(report: DrillReport) -> str:
    if report.mode == OBSERVE:
        return "result: observed (no outage staged)"
    if report.ok:
        return "result: PASS: the breaker opened during the outage and closed again after it"
    missing = []
    if not report.opened:
        missing.append("the breaker did not open")
    if not report.closed_again:
        missing.append("the breaker did not close again")
    if report.stale_read_check == "failed":
        missing.append("a stale value was served")
    return f"result: FAIL: {'; '.join(missing)}"

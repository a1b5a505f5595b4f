"""How a drill runs: the options every part of the drill reads (runner, targets, CLI)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DrillOptions"]


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
    window_seconds: float = 0.0
    """The cache breaker's rate rules (0: off, the seed's rule alone); with
    ``minimum_calls``, ``slow_call_seconds`` and ``slow_call_rate_threshold``."""
    minimum_calls: int = 20
    slow_call_seconds: float = 0.0
    slow_call_rate_threshold: float = 0.5
    max_open_timeout: float | None = None
    """The breaker's ``max_timeout_seconds``: the open time grows up to this."""
    probe_timeout: float | None = None
    """``probe_socket_timeout_seconds``: a half-open probe's I/O budget."""

    @property
    def phase_limit(self) -> float:
        """How long a phase that waits for the breaker may take before the drill gives up."""
        return 4 * self.open_timeout + 20 * self.socket_timeout * self.failure_threshold + 5

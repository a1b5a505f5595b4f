"""The exceptions users catch."""

from __future__ import annotations

__all__ = ["CircuitOpenError", "ConfigurationError"]


class ConfigurationError(ValueError):
    """Settings that cannot be used: names the key, the value and what is allowed.

    ``message`` replaces the ``key = value is not valid: allowed`` sentence where it
    does not fit (a settings file that is not valid TOML names a file and a line)."""

    def __init__(
        self, key: str, value: object, allowed: str, *, message: str | None = None
    ) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(message or f"{key} = {value!r} is not valid: {allowed}")


class CircuitOpenError(RuntimeError):
    """A guarded call was refused because its breaker is open (or its probes are busy)."""

    def __init__(self, breaker_name: str, retry_after_seconds: float | None) -> None:
        self.breaker_name = breaker_name
        self.retry_after_seconds = retry_after_seconds
        when = (
            f"next probe in {retry_after_seconds:.3f}s"
            if retry_after_seconds is not None and retry_after_seconds > 0
            else "half-open probes are in flight"
        )
        super().__init__(f"circuit breaker {breaker_name!r} is open; {when}")

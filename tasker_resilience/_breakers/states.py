"""The three breaker states and why a breaker opened, shared by the breaker and the
modules it consults.

Kept apart from ``breaker.py`` so a module the breaker calls into (``host_sharing``)
can name the states without importing the breaker: the breaker compares states with
``is``, so everyone must hold these very objects.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["CLOSED", "CONSECUTIVE_FAILURES", "FORCED", "HALF_OPEN", "OPEN", "StateName"]

StateName = Literal["closed", "open", "half-open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"

# Why a breaker opened (``metrics()["opened_reason"]``); the rate rules' two are
# window.FAILURE_RATE and window.SLOW_CALL_RATE.
CONSECUTIVE_FAILURES: Final = "consecutive_failures"
FORCED: Final = "forced"
"""``force_open()``: maintenance, a cache unreachable at start-up, or shared state
that another process opened."""

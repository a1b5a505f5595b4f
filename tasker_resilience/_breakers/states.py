"""The three breaker states, shared by the breaker and the modules it consults.

Kept apart from ``breaker.py`` so a module the breaker calls into (``host_sharing``)
can name the states without importing the breaker: the breaker compares states with
``is``, so everyone must hold these very objects.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "StateName"]

StateName = Literal["closed", "open", "half-open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"

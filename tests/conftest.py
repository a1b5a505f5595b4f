"""Suite-wide set-up: the test environment, and no process-wide state between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasker_resilience as tr
from tasker_resilience import testing
from tasker_resilience._cache.backends.contract import unregister_backend
from tests.backend_suite import CountingBackend
from tests.servers import (  # noqa: F401  # fixtures: LocalServers the test owns
    private_server,
    second_private_server,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Layered settings resolve against the repository's config/ and the "test" overlay,
# whatever directory pytest was started from.
os.environ.setdefault("TASKER_ENV", "test")
os.environ.setdefault("TASKER_CONFIG_ROOT", str(REPO_ROOT))


@pytest.fixture(autouse=True)
def _fresh_resilience() -> Iterator[None]:
    """Each test starts without a process-wide Resilience and leaves none behind."""
    testing.reset()
    yield
    testing.reset()


@pytest.fixture
def clock() -> testing.ManualClock:
    """A monotonic clock that moves only when the test says so."""
    return testing.ManualClock()


@pytest.fixture
def backend() -> Iterator[CountingBackend]:
    """``backend = "counting"``: a distributed-looking in-memory backend that records
    every call and can be switched to fail like an unreachable server."""
    instance = CountingBackend()
    tr.register_backend("counting", lambda config: instance)
    yield instance
    unregister_backend("counting")

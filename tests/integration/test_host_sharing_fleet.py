"""The host-sharing goals, measured: 8 spawned worker processes, a private redis-server.

The set-up of the issue: about 20 cache gets/s per worker, socket timeout 0.25 s,
``failure_threshold = 5``, ``timeout_seconds = 8``. The goals (and what each test
asserts, with a margin for a loaded 2-core machine):

- at most 5 + 8 calls slower than 100 ms across the workers at the onset (40 without
  sharing);
- every worker open within 0.5 s of the first;
- every worker reading from the cache within 2.5 s of the server's return
  (``timeout_seconds / 8`` plus a margin), with no more probes than the workers would
  make on their own;
- with the fault on half the workers' path only (a hung proxy), the other half misses
  at most 5 % of its reads.

Each run starts 8 Python processes and lasts about 10 s.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasker_resilience._operations.drill.fleet import FleetRun, FleetSetup, run_fleet
from tasker_resilience._operations.drill.local_server import LocalServer
from tests.integration._hung_proxy import HungProxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.drill,
    pytest.mark.scenario,
    pytest.mark.timeout(240),
]

SETUP = FleetSetup(workers=8, warmup=1.5, outage=3.0, recovery=3.5)

# Wide margins over the goals: 2 cores shared by several test runs.
SLOW_CALLS_GOAL = 5 + 8
SLOW_CALLS_BOUND = SLOW_CALLS_GOAL + 4
OPEN_SPREAD_BOUND = 0.5 + 0.5
RECOVERY_BOUND = 2.5 + 1.0


def _describe(run: FleetRun) -> str:
    return str(run.as_dict())


def test_one_outage_is_paid_once_per_host(private_server: LocalServer, tmp_path: Path) -> None:
    run = run_fleet(
        SETUP,
        urls=[private_server.url] * SETUP.workers,
        key_prefix=f"fleet-on-{os.getpid()}",
        sharing=True,
        freeze=private_server.freeze,
        thaw=private_server.thaw,
        directory=str(tmp_path / "sharing"),
    )
    print(_describe(run))  # the figures, for the log of a run that passes too
    assert run.all_open is not None, f"a worker never opened: {_describe(run)}"
    assert run.slow_calls <= SLOW_CALLS_BOUND, _describe(run)
    assert run.open_spread is not None
    assert run.open_spread <= OPEN_SPREAD_BOUND, _describe(run)
    assert run.recovery is not None, f"a worker never read from the cache: {_describe(run)}"
    assert run.recovery <= RECOVERY_BOUND, _describe(run)
    # The host probed on one schedule: no more than one probe per worker per open
    # period (what the workers would spend on their own), plus the slot in progress.
    assert run.probes <= run.per_process_probes + 1, _describe(run)
    # The host view each worker reported at the end: one outage, opened by one of them.
    views = [w.host for w in run.workers]
    assert all(view is not None and view["shared"] for view in views)
    openers = {view["opened_by"] for view in views if view is not None}
    assert len(openers) == 1
    assert openers <= {w.pid for w in run.workers}


def test_without_sharing_each_worker_pays_alone(
    private_server: LocalServer, tmp_path: Path
) -> None:
    """The same onset without sharing: every worker pays its own failure_threshold
    hung calls (the comparison the goal was measured against)."""
    run = run_fleet(
        FleetSetup(workers=8, warmup=1.5, outage=2.5, recovery=0.5),
        urls=[private_server.url] * 8,
        key_prefix=f"fleet-off-{os.getpid()}",
        sharing=False,
        freeze=private_server.freeze,
        thaw=private_server.thaw,
    )
    print(_describe(run))
    assert run.slow_calls >= 8 * 4, _describe(run)
    assert all(w.host is None for w in run.workers)


def test_a_fault_on_half_the_paths_spares_the_other_half(
    private_server: LocalServer, tmp_path: Path
) -> None:
    with HungProxy(private_server.port) as proxy:
        run = run_fleet(
            FleetSetup(workers=8, warmup=1.5, outage=4.0, recovery=0.5),
            urls=[proxy.url] * 4 + [private_server.url] * 4,
            key_prefix=f"fleet-half-{os.getpid()}",
            sharing=True,
            freeze=proxy.hang,
            thaw=proxy.resume,
            directory=str(tmp_path / "sharing"),
            # The proxied and the direct workers reach one server by two addresses:
            # the scope names them one group (by default the URL would split them).
            scope="fleet-half",
        )
    print(_describe(run))
    faulty, healthy = run.workers[:4], run.workers[4:]
    assert all(w.opened_at(run.freeze_at) is not None for w in faulty), _describe(run)
    for worker in healthy:
        misses, reads = worker.misses(run.freeze_at, run.thaw_at)
        assert reads >= 20, f"worker {worker.index} made only {reads} reads"
        assert misses <= 0.05 * reads, f"worker {worker.index}: {misses}/{reads} misses"
        # A hint costs a healthy worker one verifying call at most, never an open period.
        assert worker.opened_at(run.freeze_at) is None, worker.transitions


def test_the_drill_shows_the_host_cost_with_and_without_sharing() -> None:
    """``tasker-resilience drill --workers N`` as a user runs it (2 workers here to keep
    the suite short; the run without sharing watches a whole open period of 8 s)."""
    import json

    from tests.test_cli import run_cli

    done = run_cli("drill", "--workers", "2", "--outage", "1.5", "--json", "--quiet", timeout=180)
    assert done.returncode == 0, done.stderr
    without, with_sharing = json.loads(done.stdout)["workers"]
    assert (without["sharing"], with_sharing["sharing"]) == (False, True)
    assert with_sharing["slow_calls"] < without["slow_calls"]
    assert with_sharing["recovery_seconds"] is not None

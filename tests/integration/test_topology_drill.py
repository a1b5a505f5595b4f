"""``tasker-resilience drill --topology cluster|sentinel`` end to end, on private local
topologies it starts and stops itself (short phases: a few seconds each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasker_resilience._operations.drill.runner import DrillOptions
from tasker_resilience._operations.drill.topology import topology_binaries
from tasker_resilience._operations.drill.topology_drill import run_topology_drill
from tests.servers import _skip_or_fail

pytestmark = [pytest.mark.integration, pytest.mark.drill, pytest.mark.scenario]

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = DrillOptions(
    warmup=0.2,
    outage=0.6,
    cooldown=0.2,
    socket_timeout=0.1,
    connect_timeout=0.1,
    failure_threshold=3,
    open_timeout=0.5,
    success_threshold=1,
)


@pytest.fixture(autouse=True)
def _binaries() -> None:
    if topology_binaries() is None:
        _skip_or_fail("redis-server and redis-cli are not on PATH: no local cluster or sentinel")


def test_cluster_drill_shows_each_lost_master_costing_a_fraction_of_calls() -> None:
    report = run_topology_drill(FAST, "cluster")
    assert report.ok, report.summary
    assert report.mode == "local-cluster"
    names = [phase.name for phase in report.phases]
    assert names == [
        "warm-up",
        "freeze",
        "freeze+2s",
        "freeze:back",
        "kill",
        "kill+2s",
        "kill:back",
        "closed",
    ]
    for name in ("freeze+2s", "kill+2s"):
        phase = next(p for p in report.phases if p.name == name)
        # Past the first 2 s only the lost master's probes fail: one per open timeout.
        assert phase.errors <= phase.seconds / FAST.open_timeout + 1, (name, phase)
        assert phase.skipped > phase.errors, "the lost master's calls are answered at once"
        assert phase.hits > 0, "the healthy masters kept serving"
    assert report.stale_read_check == "passed"
    assert any("unavailable_nodes=['127.0.0.1:" in line for line in report.summary)
    opened = {t["breaker"] for t in report.transitions if t["to"] == "open"}
    assert len(opened - {"cache"}) == 2, "each lost master's own breaker opened"


def _drill(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    command = [sys.executable, "-m", "tasker_resilience", "drill", *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )


def test_sentinel_drill_through_the_cli() -> None:
    result = _drill(
        "--topology",
        "sentinel",
        "--json",
        "--quiet",
        "--warmup=0.3",
        "--cooldown=0.3",
        "--socket-timeout=0.1",
        "--failure-threshold=3",
        "--open-timeout=0.5",
        "--success-threshold=1",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["mode"] == "local-sentinel"
    assert report["stale_read_check"] == "passed"
    failover = next(p for p in report["phases"] if p["name"] == "failover")
    assert failover["reached"] is True
    assert "failover: the cache resumed on the new primary" in report["summary"][0]


def test_topology_does_not_combine_with_url() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasker_resilience",
            "drill",
            "--topology",
            "cluster",
            "--url",
            "redis://127.0.0.1:1/0",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--topology" in result.stderr

"""``tasker-resilience drill --near``: origin load per phase with and without the tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasker_resilience._operations.drill.local_server import find_server_binary
from tasker_resilience._operations.drill.near_load import zipf_keys

from .conftest import REPO_ROOT


def _drill(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    return subprocess.run(
        [sys.executable, "-m", "tasker_resilience", "drill", "--near", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.skipif(find_server_binary() is None, reason="needs a server binary to freeze")
@pytest.mark.scenario
def test_near_drill_shows_origin_load_with_and_without_the_tier() -> None:
    result = _drill("--json", "--quiet", "--warmup=1", "--outage=1.5", "--rate=200")
    assert result.returncode == 0, result.stderr
    loads = json.loads(result.stdout)["near"]
    assert [load["near"] for load in loads] == [True, False]
    for load in loads:
        assert [phase["name"] for phase in load["phases"]] == ["warm-up", "healthy", "outage"]
        assert all(phase["requests"] > 0 for phase in load["phases"])
    with_near, without = loads
    outage_with = with_near["phases"][2]
    outage_without = without["phases"][2]
    # Without the tier every read in the outage reaches the origin; with it, far fewer.
    # (A call in flight when the phase changes is counted on both sides of the boundary:
    # at most one per worker.)
    assert abs(outage_without["origin_calls"] - outage_without["requests"]) <= 4
    # (Cold keys, never read before the outage, still reach it: how many depends on the
    # load the machine allowed before, so the bound is wide.)
    assert outage_with["origin_calls"] < outage_with["requests"] * 0.8
    assert with_near["stale_served"] > 0


@pytest.mark.skipif(find_server_binary() is None, reason="needs a server binary to freeze")
@pytest.mark.scenario
def test_near_drill_prints_a_table() -> None:
    result = _drill("--quiet", "--warmup=0.25", "--outage=0.75", "--rate=100")
    assert result.returncode == 0, result.stderr
    assert "near on" in result.stdout
    assert "near off" in result.stdout
    assert "outage/healthy" in result.stdout


def test_near_drill_refuses_a_server_it_may_not_freeze() -> None:
    result = _drill("--url", "redis://127.0.0.1:1/0", timeout=30)
    assert result.returncode == 2
    assert "--near freezes a private server" in result.stderr


def test_zipf_keys_favour_the_head_and_stay_in_range() -> None:
    keys = zipf_keys(20_000, keys=10_000, s=1.1, seed=1)
    assert min(keys) >= 0
    assert max(keys) < 10_000
    assert keys.count(0) > keys.count(9) > keys.count(999)
    assert zipf_keys(100, keys=10_000, s=1.1, seed=1) == keys[:100]

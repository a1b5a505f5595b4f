"""``explain`` against ``drill``: for three different settings, what ``tasker-resilience
explain --json`` predicts for one worker is within 15% of what ``tasker-resilience drill
--json`` measures (its ``outage_cost`` block) with a real redis-server frozen by SIGSTOP.

Both are run as the real commands. The settings reach ``explain`` through a settings
file, and the drill through its flags (the drill brings its own settings on purpose).
Each outage lasts long enough for at least three complete open periods.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import run_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.drill,
    pytest.mark.scenario,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="the drill freezes a private redis-server: none on PATH",
    ),
]

TOLERANCE = 0.15
RATE_OF = {"A": 100.0, "B": 50.0, "C": 200.0}
# (failure_threshold, timeout_seconds, socket timeout)
SETTINGS = {"A": (3, 0.5, 0.15), "B": (5, 0.8, 0.25), "C": (8, 0.3, 0.15)}


def _explain(
    tmp_path: Path, threshold: int, open_seconds: float, socket: float, rate: float
) -> Any:
    (tmp_path / "settings.toml").write_text(
        "[common.circuit_breakers.component_configs.cache]\n"
        f"failure_threshold = {threshold}\ntimeout_seconds = {open_seconds}\n"
        "success_threshold = 1\n"
        "[common.cache.redis]\n"
        f"socket_timeout_seconds = {socket}\nconnect_timeout_seconds = {socket}\n",
        encoding="utf-8",
    )
    result = run_cli("explain", "--root", str(tmp_path), "--json", "--rate", str(rate))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _drill(threshold: int, open_seconds: float, socket: float, rate: float) -> Any:
    outage = 3.6 * (open_seconds + socket)  # at least three complete open periods
    result = run_cli(
        "drill",
        "--json",
        "--quiet",
        "--server-binary",
        str(shutil.which("redis-server")),
        "--rate",
        str(rate),
        "--failure-threshold",
        str(threshold),
        "--open-timeout",
        str(open_seconds),
        "--socket-timeout",
        str(socket),
        "--success-threshold",
        "1",
        "--warmup",
        "0.3",
        "--outage",
        f"{outage:.2f}",
        "--cooldown",
        "0.3",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_explain_predicts_what_the_drill_measures(name: str, tmp_path: Path) -> None:
    threshold, open_seconds, socket = SETTINGS[name]
    rate = RATE_OF[name]
    predicted = _explain(tmp_path, threshold, open_seconds, socket, rate)
    report = _drill(threshold, open_seconds, socket, rate)
    measured = report["outage_cost"]
    assert report["mode"] == "local-server"
    assert measured["open_periods"]["complete"] >= 3, report["transitions"]

    onset = predicted["onset"]["per_process"]
    first = predicted["open_period"]["first"]
    pairs = {
        "hung calls at onset": (onset["hung_calls"], measured["onset"]["hung_calls"]),
        "worker-seconds at onset": (onset["worker_seconds"], measured["onset"]["worker_seconds"]),
        "time to trip": (
            onset["time_to_trip_seconds"],
            measured["onset"]["time_to_trip_seconds"],
        ),
        "open period": (first["period_seconds"], measured["open_periods"]["period_seconds"]),
        "probe cost per period": (
            predicted["open_period"]["probe_seconds"],
            measured["open_periods"]["probe_seconds"],
        ),
        "half-open share": (first["half_open_share"], measured["open_periods"]["half_open_share"]),
        "worst request (one cache call)": (
            predicted["worst_request"]["expected_seconds"],
            measured["worst_call_seconds"],
        ),
    }
    off = {
        what: (want, got)
        for what, (want, got) in pairs.items()
        if got is None or abs(got - want) > TOLERANCE * want
    }
    assert off == {}, f"settings {name}: predicted vs measured beyond ±15%: {off}"
    # Three settings that really differ: the predictions are not one number three times.
    assert onset["hung_calls"] == threshold

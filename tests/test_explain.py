"""``tasker-resilience explain``: the arithmetic, the command's arguments and settings.

The check against a real outage (``drill --json``) is in
``tests/integration/test_explain_vs_drill.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasker_resilience._config.schema import parse_settings
from tasker_resilience._operations.explain import Load, explain
from tests.test_cli import one_line, run_cli


def _settings(**common: Any) -> Any:
    return parse_settings({"common": common}, env="test", known_backends=("redis", "memory"))


def _breaker(threshold: int, open_seconds: float, socket: float, connect: float = 0.5) -> Any:
    return _settings(
        circuit_breakers={
            "component_configs": {
                "cache": {"failure_threshold": threshold, "timeout_seconds": open_seconds}
            }
        },
        cache={"redis": {"socket_timeout_seconds": socket, "connect_timeout_seconds": connect}},
    )


def test_a_saturated_worker_hangs_back_to_back_until_the_trip() -> None:
    # 20 requests/s, 250 ms per hung call: the worker cannot keep up, so the 5 calls
    # run back to back after the first arrives (half an interval after the onset).
    result = explain(_breaker(5, 30, 0.25), Load(rate=20))
    process = result["onset"]["per_process"]
    assert process == {"hung_calls": 5, "worker_seconds": 1.25, "time_to_trip_seconds": 1.275}
    assert result["per_call"] == {"hung_seconds": 0.25, "bound_seconds": 1.5}


def test_an_idle_worker_trips_when_the_calls_have_arrived() -> None:
    # 1 request/s, 100 ms calls: the 3rd failure comes at 2.5 s + 0.1 s.
    result = explain(_breaker(3, 30, 0.1), Load(rate=1))
    assert result["onset"]["per_process"]["time_to_trip_seconds"] == pytest.approx(2.6)
    assert result["onset"]["per_process"]["worker_seconds"] == pytest.approx(0.3)


def test_several_calls_per_request_and_workers_per_host() -> None:
    result = explain(_breaker(5, 30, 0.25), Load(rate=20, cache_calls=3, workers=8))
    host = result["onset"]["per_host"]
    assert host["without_sharing"]["hung_calls"] == 40
    assert host["without_sharing"]["worker_seconds"] == 10.0
    assert host["with_sharing"]["hung_calls"] == 13  # failure_threshold + W
    assert result["onset"]["per_host_as_configured"] == host["without_sharing"]
    worst = result["worst_request"]
    assert (worst["hung_calls"], worst["expected_seconds"], worst["bound_seconds"]) == (
        3,
        0.75,
        4.5,
    )
    assert result["open_period"]["probes_per_host"] == 8
    assert result["throughput"]["without_breaker_max_per_worker"] == pytest.approx(1.3333)


def test_the_worst_request_stops_hanging_at_the_trip() -> None:
    worst = explain(_breaker(2, 30, 0.1), Load(cache_calls=10))["worst_request"]
    assert (worst["hung_calls"], worst["expected_seconds"]) == (2, 0.2)
    assert worst["without_breaker_seconds"] == 1.0


def test_probe_share_is_the_probe_over_the_whole_period() -> None:
    period = explain(_breaker(5, 1.0, 0.2), Load(rate=10))["open_period"]["first"]
    # open 1.0 s, then the next request (0.05 s on average), then the probe: bounded by
    # probe_socket_timeout_seconds (0.1 s by default), not the 0.2 s socket timeout.
    assert period["period_seconds"] == pytest.approx(1.15)
    assert period["half_open_share"] == pytest.approx(0.1 / 1.15, abs=0.001)  # rounded


def test_origin_amplification_with_and_without_the_near_tier() -> None:
    without = explain(_settings(), Load(hit_ratio=0.75))["origin"]
    assert without["amplification_without_near"] == 4.0
    assert without["amplification_with_near"] == 4.0
    near = _settings(cache={"near": {"enabled": True, "stale_if_error_seconds": 120}})
    with_near = explain(near, Load(hit_ratio=0.75))["origin"]
    assert (with_near["amplification_with_near"], with_near["near_covers_seconds"]) == (
        1.0,
        120,
    )


def test_the_command_reads_the_merged_settings(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        "[common.circuit_breakers.component_configs.cache]\nfailure_threshold = 7\n",
        encoding="utf-8",
    )
    result = run_cli(
        "explain",
        "--root",
        str(tmp_path),
        "--json",
        "--rate",
        "50",
        TASKER_COMMON__CACHE__REDIS__SOCKET_TIMEOUT_SECONDS="0.1",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["settings"]["failure_threshold"] == 7
    assert found["settings"]["socket_timeout_seconds"] == 0.1
    assert found["onset"]["per_process"]["worker_seconds"] == pytest.approx(0.7)


def test_the_text_names_every_prediction() -> None:
    result = run_cli("explain", "--workers", "4", "--cache-calls-per-request", "2")
    assert result.returncode == 0, result.stderr
    for words in (
        "onset, per process: 5 hung calls",
        "onset, per host: 20 hung calls",
        "each open period",
        "worst request (2 cache call(s))",
        "origin load while open: x5.00",
    ):
        assert words in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rate", "0"), "argument --rate: '0' must be greater than 0"),
        (("--workers", "two"), "argument --workers: 'two' is not a number"),
        (("--cache-calls-per-request", "1.5"), "'1.5' is not a number"),
        (("--hit-ratio", "1"), "'1' must be from 0 up to (not including) 1"),
    ],
)
def test_bad_arguments_are_one_line_naming_what_is_allowed(
    args: tuple[str, ...], message: str
) -> None:
    result = run_cli("explain", *args)
    assert result.returncode == 2
    assert message in one_line(result.stderr)


def test_bad_settings_exit_3_naming_the_key(tmp_path: Path) -> None:
    result = run_cli(
        "explain",
        "--root",
        str(tmp_path),
        TASKER_COMMON__CIRCUIT_BREAKERS__COMPONENT_CONFIGS__CACHE__FAILURE_THRESHOLD="0",
    )
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert "common.circuit_breakers.component_configs.cache.failure_threshold" in line

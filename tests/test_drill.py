"""The outage drill: in-process runs of ``run_drill``, and the real command against a
private redis-server (frozen with SIGSTOP) and against a server it only observes."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from typing import Any

import pytest
import redis

from tasker_resilience._config.schema import REDIS_URL_SCHEMES
from tasker_resilience._operations.drill.local_server import LocalServer
from tasker_resilience._operations.drill.runner import (
    IN_PROCESS,
    DrillOptions,
    DrillReport,
    PhaseResult,
    Progress,
    _percentile,
    _stale_check,
    format_report,
    run_drill,
)
from tasker_resilience.testing import configure_for_tests

from .conftest import REPO_ROOT

PHASES = ["warm-up", "hang", "open", "thaw", "half-open", "closed"]

# Small numbers: the whole drill takes about 3 s.
FAST = DrillOptions(
    rate=200,
    warmup=0.3,
    outage=1.0,
    cooldown=0.3,
    socket_timeout=0.05,
    connect_timeout=0.05,
    failure_threshold=3,
    open_timeout=0.5,
    success_threshold=2,
)
FAST_FLAGS = [
    "--warmup=0.3",
    "--outage=1.0",
    "--cooldown=0.3",
    "--socket-timeout=0.1",
    "--failure-threshold=3",
    "--open-timeout=0.5",
]


def _cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    return subprocess.run(
        [sys.executable, "-m", "tasker_resilience", "drill", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _phase(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(phase for phase in report["phases"] if phase["name"] == name)


@pytest.fixture
def server(private_server: LocalServer) -> LocalServer:
    """A private server the test owns (the drill under test may only observe it)."""
    return private_server


# --- in process ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_process_run() -> tuple[DrillReport, str]:
    progress = io.StringIO()
    report = run_drill(replace(FAST, in_process=True), Progress(progress))
    return report, progress.getvalue()


def test_the_in_process_drill_opens_and_closes(in_process_run: tuple[DrillReport, str]) -> None:
    report, _ = in_process_run
    assert report.mode == IN_PROCESS
    assert "IN-PROCESS" in report.target
    assert [phase.name for phase in report.phases] == PHASES
    assert report.opened
    assert report.closed_again
    assert report.ok
    assert all(phase.reached for phase in report.phases)
    assert report.stale_read_check == "passed"
    # At least the stale-check key, deleted while open, waited for replay.
    assert report.invalidations_remembered is not None
    assert report.invalidations_remembered["pending"] >= 1
    transitions = [(t["from"], t["to"]) for t in report.transitions]
    assert transitions[0] == ("closed", "open")
    assert transitions[-1] == ("half-open", "closed")


def test_the_hang_costs_exactly_the_failure_threshold(
    in_process_run: tuple[DrillReport, str],
) -> None:
    report, _ = in_process_run
    hang = report.phases[1]
    assert hang.operations == hang.errors == FAST.failure_threshold
    assert hang.breaker_state == "open"
    assert hang.p50_ms is not None
    assert hang.p50_ms >= FAST.socket_timeout * 1000 * 0.9


def test_while_open_calls_answer_without_waiting(in_process_run: tuple[DrillReport, str]) -> None:
    report, _ = in_process_run
    opened = report.phases[2]
    assert opened.operations > 50
    # Every call is skipped except the failed probes (one per open_timeout).
    assert opened.skipped + opened.errors == opened.operations
    assert opened.errors <= opened.seconds / FAST.open_timeout + 1
    assert opened.p50_ms is not None
    assert opened.p50_ms < FAST.socket_timeout * 1000 / 2
    closed = report.phases[-1]
    assert closed.hits > 0
    assert closed.skipped == closed.errors == 0


def test_the_comparison_counts_every_frozen_operation(
    in_process_run: tuple[DrillReport, str],
) -> None:
    report, _ = in_process_run
    cmp = report.without_breaker
    assert cmp is not None
    frozen_ops = report.phases[1].operations + report.phases[2].operations
    assert cmp["operations"] == cmp["without_breaker_waited"] == frozen_ops
    assert cmp["without_breaker_wait_seconds_configured"] == pytest.approx(
        frozen_ops * FAST.socket_timeout, abs=0.01
    )
    assert cmp["with_breaker_waited"] == report.phases[1].errors + report.phases[2].errors
    assert len(cmp["raw_client_samples"]) == FAST.raw_samples
    assert {s["outcome"] for s in cmp["raw_client_samples"]} == {"TimeoutError"}
    assert cmp["raw_client_median_seconds"] >= FAST.socket_timeout * 0.9


def test_plain_progress_lines_off_a_terminal(in_process_run: tuple[DrillReport, str]) -> None:
    _, progress = in_process_run
    assert "\r" not in progress
    for marker in ("warm-up:", "hang: server frozen", "breaker 'cache': closed -> open"):
        assert marker in progress
    assert "using the in-process" not in progress  # asked for explicitly, not a fallback


def test_the_report_table_and_json(in_process_run: tuple[DrillReport, str]) -> None:
    report, _ = in_process_run
    text = format_report(report)
    rows = [
        line.split()[0] for line in text.splitlines() if line.split()[:1] in [[p] for p in PHASES]
    ]
    assert rows == PHASES
    assert "Same outage without the breaker" in text
    assert text.rstrip().endswith(
        "result: PASS: the breaker opened during the outage and closed again after it"
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is True
    assert [phase["name"] for phase in data["phases"]] == PHASES
    # --json carries the comparison the text prints under the table, not "summary": [].
    assert data["summary"][0].startswith("Same outage without the breaker")
    assert all(line in text for line in data["summary"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_rewritten_status_line() -> None:
    stream = _Terminal()
    progress = Progress(stream)
    progress.status("open", 12, "open", 0.8)
    progress.event("breaker 'cache': closed -> open")
    progress.done()
    output = stream.getvalue()
    assert output.startswith("\r\033[K[")
    assert "open: 12 ops, breaker open, probe in 0.8s" in output
    assert output.endswith("\r\033[K")


def test_a_stale_value_after_recovery_fails_the_drill() -> None:
    res = configure_for_tests()
    res.cache.set("drill:stale-check", "served after being deleted")
    report = DrillReport(mode=IN_PROCESS, target="t", settings={}, opened=True, closed_again=True)
    _stale_check(res, report)
    assert report.stale_read_check == "failed"
    assert not report.ok


def test_a_breaker_that_never_opened_fails_the_drill() -> None:
    settings = {
        "rate_ops_per_second": 1,
        "socket_timeout_seconds": 0.1,
        "failure_threshold": 3,
        "open_timeout_seconds": 1,
        "success_threshold": 1,
    }
    report = DrillReport(
        mode=IN_PROCESS,
        target="t",
        settings=settings,
        phases=[PhaseResult("hang", reached=False, breaker_state="closed")],
        closed_again=True,
    )
    assert not report.ok
    text = format_report(report)
    assert "closed (gave up)" in text
    assert text.endswith("result: FAIL: the breaker did not open")


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([1.0], 0.99, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
    ],
)
def test_nearest_rank_percentile(values: list[float], fraction: float, expected: float) -> None:
    assert _percentile(values, fraction) == expected


# --- the command against real servers ----------------------------------------------


@pytest.mark.integration
@pytest.mark.drill
@pytest.mark.usefixtures("private_server")  # proves a binary is there (skip or CI failure)
def test_drill_json_against_a_private_server() -> None:
    result = _cli("--json", "--quiet", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "local-server"
    assert report["ok"] is True
    assert [phase["name"] for phase in report["phases"]] == PHASES
    assert "started by the drill" in report["target"]
    assert _phase(report, "hang")["errors"] == 3
    assert _phase(report, "open")["breaker_state"] == "open"
    assert _phase(report, "closed")["breaker_state"] == "closed"
    assert _phase(report, "closed")["hits"] > 0
    samples = report["without_breaker"]["raw_client_samples"]
    # A plain redis-py client against the frozen server waits its whole timeout.
    assert {sample["outcome"] for sample in samples} == {"TimeoutError"}
    assert all(sample["seconds"] >= 0.09 for sample in samples)
    assert report["stale_read_check"] == "passed"
    # The private server is gone: its port refuses connections.
    port = int(report["target"].split("127.0.0.1:")[1].split()[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.integration
@pytest.mark.drill
@pytest.mark.usefixtures("private_server")
def test_drill_text_report_with_progress() -> None:
    result = _cli(*FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "hang: server frozen" in result.stderr
    assert "breaker 'cache': half-open -> closed" in result.stderr
    assert "Same outage without the breaker" in result.stdout
    assert "plain redis-py client" in result.stdout
    assert "result: PASS" in result.stdout


def test_without_a_server_binary_the_drill_says_it_runs_in_process() -> None:
    bin_dir = os.path.dirname(sys.executable)  # the venv: python, no cache server
    result = _cli("--json", *FAST_FLAGS, PATH=bin_dir)
    assert result.returncode == 0, result.stderr
    assert "no dragonfly, redis-server or valkey-server on PATH" in result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "in-process"
    assert report["ok"] is True


@pytest.mark.integration
def test_observing_a_server_never_freezes_it(server: LocalServer) -> None:
    result = _cli("--url", server.url, "--duration", "1", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "observe"
    assert [phase["name"] for phase in report["phases"]] == ["closed"]
    assert report["phases"][0]["operations"] > 50
    assert report["without_breaker"] is None
    assert report["transitions"] == []
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    # The load's keys expire by themselves: the user's server is left as it was.
    ttl = client.ttl("tasker-drill:drill:0")
    assert 0 < ttl <= 60


@pytest.mark.integration
@pytest.mark.drill
def test_observing_shows_an_outage_caused_by_someone_else(server: LocalServer) -> None:
    # The outage starts once the drill's load is running, not at a fixed time: a slow
    # interpreter start-up (a busy machine) would otherwise freeze the server before the
    # drill's reachability check and turn the test into "cannot reach".
    stop = threading.Event()

    def outage() -> None:
        client = redis.Redis.from_url(server.url, socket_timeout=1)
        while not stop.is_set() and not client.exists("tasker-drill:drill:0"):
            stop.wait(0.01)
        if stop.is_set():
            return
        server.freeze()
        stop.wait(1.2)
        server.thaw()

    saboteur = threading.Thread(target=outage, daemon=True)
    saboteur.start()
    try:
        result = _cli(
            "--url",
            server.url,
            "--duration=3.5",
            "--json",
            "--quiet",
            "--socket-timeout=0.1",
            "--failure-threshold=3",
            "--open-timeout=0.5",
        )
    finally:
        stop.set()
        saboteur.join(5)
        server.thaw()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [phase["name"] for phase in report["phases"]]
    assert names[0] == "closed"
    assert "open" in names
    assert names[-1] == "closed"
    assert report["opened"] is True


def test_an_unreachable_url_exits_4_with_one_redacted_line() -> None:
    result = _cli("--url", "redis://:hunter2@127.0.0.1:1/0", timeout=20)
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach redis://:***@127.0.0.1:1/0" in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_case14_a_url_that_is_not_redis_is_a_usage_error_listing_the_schemes() -> None:
    result = _cli("--url", "http://127.0.0.1:1/")
    assert result.returncode == 2  # usage, not "unreachable"
    assert "not a cache URL" in result.stderr
    for scheme in REDIS_URL_SCHEMES:
        assert f"{scheme}://" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

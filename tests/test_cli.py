"""The ``tasker-resilience`` command, run as a real subprocess: health, config, errors.

The drill's own tests are in test_drill.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import tasker_resilience as tr

from .conftest import REPO_ROOT

ENV_BASE = {"TASKER_ENV": "test", "TASKER_CONFIG_ROOT": str(REPO_ROOT)}


def cli_env(**extra: str) -> dict[str, str]:
    # No TASKER_* from the developer's shell: the test decides every layer.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    return {**env, **ENV_BASE, **extra}


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasker_resilience", *args],
        cwd=REPO_ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


# --- arguments ---------------------------------------------------------------------


def test_help_lists_the_three_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("drill", "health", "config"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "a COMMAND is required: one of drill, health, config"),
        (("explode",), "invalid choice: 'explode'"),
        (("drill", "--rate", "-5"), "'-5' must be greater than 0"),
        (("drill", "--failure-threshold", "two"), "'two' is not a number"),
        (("health", "--port", "http"), "invalid int value: 'http'"),
        (("config", "--frobnicate"), "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert message in line
    assert "--help" in line
    assert result.stdout == ""


def test_the_console_script_entry_point_is_main() -> None:
    from tasker_resilience.__main__ import main

    assert main(["config", "--json"]) == 0


# --- health --------------------------------------------------------------------------


def test_health_prints_the_report_and_exits_0() -> None:
    result = run_cli("health")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "healthy"
    assert report["cache"]["backend"] == "memory"  # from config/tasker/environments/test
    assert {"cache", "pgmq", "task_readiness"} <= set(report["circuit_breakers"])


def test_health_exits_1_when_unhealthy() -> None:
    # A critical cache that refuses connections: the start-up check opens its breaker.
    result = run_cli(
        "health",
        TASKER_COMMON__CACHE__BACKEND="redis",
        TASKER_COMMON__CACHE__REDIS__URL="redis://:pw-in-url@127.0.0.1:1/0",
        TASKER_COMMON__CIRCUIT_BREAKERS__COMPONENT_CONFIGS__CACHE__CRITICAL="true",
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "unhealthy"
    assert report["circuit_breakers"]["cache"]["state"] == "open"
    assert "pw-in-url" not in result.stdout + result.stderr


def test_health_degraded_exits_0() -> None:
    result = run_cli(
        "health",
        TASKER_COMMON__CACHE__BACKEND="dragonfly",
        TASKER_COMMON__CACHE__REDIS__URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "degraded"
    assert report["cache"]["backend"] == "dragonfly"


def _start_serving(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tasker_resilience", "health", "--serve", *args],
        cwd=REPO_ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the socket is bound
    assert line.startswith("serving http://127.0.0.1:"), (line, process.stderr)
    return process, line.split()[1].removesuffix("/health")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_health_serve_answers_http_then_stops_cleanly(stop: signal.Signals) -> None:
    process, base = _start_serving("--host", "127.0.0.1", "--port", "0")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            report: dict[str, Any] = json.loads(response.read())
        assert report["status"] == "healthy"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            assert b"tasker_resilience_breaker_state" in response.read()
        for path, body in (("/livez", {"status": "alive"}), ("/readyz", None)):
            with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
                assert response.status == 200
                answer = json.loads(response.read())
            assert body is None or answer == body
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout.strip() == "stopped"
    assert "Traceback" not in stderr


def test_health_serve_on_a_busy_port_exits_4_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("health", "--serve", "--port", str(port))
    assert result.returncode == 4
    line = one_line(result.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in line


# --- config --------------------------------------------------------------------------


def test_config_redacts_the_password_and_names_each_layer() -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"
    result = run_cli("config", TASKER_COMMON__CACHE__REDIS__URL=url)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines() if " = " in line}
    url_line = lines["common.cache.redis.url"]
    assert '"redis://:***@127.0.0.1:1/0"' in url_line
    assert url_line.endswith("# environment (TASKER_COMMON__CACHE__REDIS__URL)")
    assert lines["common.cache.backend"].endswith("# config/tasker/environments/test/cache.toml")
    assert '"memory"' in lines["common.cache.backend"]
    assert lines["common.circuit_breakers.default_config.critical"].endswith("# default")
    # every typed setting is listed, including per-component breaker configs
    assert "common.circuit_breakers.component_configs.task_readiness.failure_threshold" in lines


def test_config_json_and_env_flag() -> None:
    result = run_cli("config", "--json", "--env", "production")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["env"] == "production"
    settings = payload["settings"]
    assert settings["common.cache.redis.socket_timeout_seconds"]["value"] == pytest.approx(0.25)
    assert set(settings["common.cache.enabled"]) == {"value", "source"}


def test_config_names_a_settings_file_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text(
        "[common.cache.memory]\nmax_capacity = 5\n", encoding="utf-8"
    )
    result = run_cli("config", "--root", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["common.cache.memory.max_capacity"] == {"value": 5, "source": "settings.toml"}


def test_config_redacts_secret_options_of_a_custom_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasker_resilience._cache.backends.contract import backend_factory, unregister_backend
    from tasker_resilience._operations.cli import main

    (tmp_path / "settings.toml").write_text(
        textwrap.dedent(
            """
            [common.cache]
            backend = "vault-cache"
            [common.cache.vault-cache]
            endpoint = "https://reader:pw-one@vault.internal/v1"
            api_token = "tok-two"
            shards = 4
            """
        ),
        encoding="utf-8",
    )
    tr.register_backend("vault-cache", backend_factory("memory"))
    try:
        assert main(["config", "--root", str(tmp_path), "--json"]) == 0
    finally:
        unregister_backend("vault-cache")
    out = capsys.readouterr().out
    assert "pw-one" not in out
    assert "tok-two" not in out
    settings = json.loads(out)["settings"]
    assert settings["common.cache.vault-cache.api_token"]["value"] == "***"
    assert settings["common.cache.vault-cache.endpoint"]["value"] == (
        "https://reader:***@vault.internal/v1"
    )
    assert settings["common.cache.vault-cache.shards"]["value"] == 4


def test_a_bad_setting_exits_3_naming_the_key() -> None:
    result = run_cli(
        "config", TASKER_COMMON__CIRCUIT_BREAKERS__DEFAULT_CONFIG__FAILURE_THRESHOLD="0"
    )
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert "common.circuit_breakers.default_config.failure_threshold" in line
    assert "configuration error" in line


def test_a_bad_env_exits_3_naming_where_it_came_from() -> None:
    result = run_cli("health", "--env", "staging")
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert "--env = 'staging' is not valid" in line
    assert "(development, production, test)" in line  # the folders that exist
    result = run_cli("config", TASKER_ENV="stagign")
    assert result.returncode == 3
    assert "TASKER_ENV = 'stagign' is not valid" in one_line(result.stderr)


def test_any_environment_with_a_folder_is_valid(tmp_path: Path) -> None:
    overlay = tmp_path / "config/tasker/environments/staging/cache.toml"
    overlay.parent.mkdir(parents=True)
    overlay.write_text('[common.cache]\nkey_prefix = "staged"\n')
    result = run_cli("config", "--json", "--env", "staging", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["env"] == "staging"
    assert payload["settings"]["common.cache.key_prefix"]["value"] == "staged"


def test_a_settings_file_that_is_not_toml_exits_3_naming_file_line_and_column(
    tmp_path: Path,
) -> None:
    (tmp_path / "settings.toml").write_text('[common.cache]\nbackend = "memory\nx = 1\n')
    result = run_cli("config", "--root", str(tmp_path))
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert f"{tmp_path / 'settings.toml'}: line 2, column 18: not valid TOML" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", [True, False])
def test_a_root_that_does_not_exist_exits_3(tmp_path: Path, flag: bool) -> None:
    missing = str(tmp_path / "nowhere")
    if flag:
        result = run_cli("config", "--root", missing)
        named = "--root"
    else:
        result = run_cli("config", TASKER_CONFIG_ROOT=missing)
        named = "TASKER_CONFIG_ROOT"
    assert result.returncode == 3
    assert f"{named} = '{missing}' is not valid: an existing folder" in one_line(result.stderr)
    assert result.stdout == ""  # no defaults printed as if all were well


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("TASKER_CACHE__BACKEND", "TASKER_COMMON__CACHE__BACKEND"),
        ("TASKER_COMMON_CACHE_BACKEND", "TASKER_COMMON__CACHE__BACKEND"),
    ],
)
def test_a_variable_the_library_would_not_read_exits_3_with_the_spelling(
    variable: str, meant: str
) -> None:
    result = run_cli("config", **{variable: "memory"})
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert f"{variable} is not read by tasker-resilience; did you mean {meant}?" in line


def test_a_bad_url_in_settings_is_reported_redacted() -> None:
    result = run_cli("config", TASKER_COMMON__CACHE__REDIS__URL="http://:leaky@example/0")
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert "leaky" not in line
    assert "common.cache.redis.url" in line


def test_case14_every_command_exits_quietly_when_its_output_is_closed() -> None:
    """`tasker-resilience config | head -1`, many times: a closed pipe is no traceback."""
    for _ in range(10):
        with subprocess.Popen(
            [sys.executable, "-m", "tasker_resilience", "config"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TASKER_ENV": "test"},
        ) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            process.stdout.readline()
            process.stdout.close()  # the reader is gone, output still coming
            stderr = process.stderr.read().decode()
            process.wait(30)
        assert "BrokenPipeError" not in stderr
        assert "Traceback" not in stderr
        assert process.returncode == 0, stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:S3cr3tPW@cache.invalid:6379/0",
        "redis://app:S3cr3tPW@cache.invalid:6379/0",
        "redis://:S3cr3t#PW@cache.invalid:6379/0",
        "redis://:S3cr3t/PW@cache.invalid:6379/0",
        "redis://:S3cr3t?PW@cache.invalid:6379/0",
        "redis://cache.invalid:6379/0?password=S3cr3tPW",
        "rediss://S3cr3tPW@cache.invalid:6379/0",
    ],
)
def test_case13_config_output_and_errors_never_show_a_url_secret(url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tasker_resilience", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "TASKER_ENV": "test",
            "TASKER_COMMON__CACHE__BACKEND": "redis",
            "TASKER_COMMON__CACHE__REDIS__URL": url,
        },
    )
    assert result.returncode in (0, 3), result.stderr  # shown, or refused as malformed
    assert "S3cr3t" not in result.stdout + result.stderr
    assert "PW" not in result.stdout + result.stderr

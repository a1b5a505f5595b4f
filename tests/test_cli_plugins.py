"""Backends registered in code reach the ``tasker-resilience`` command: ``--import MODULE``
and ``common.cache.plugins``. Run as real subprocesses from the user's project directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = """
import tasker_resilience as tr


class DictBackend(tr.InProcessAsyncMixin):
    distributed = False

    def __init__(self, name):
        self.name, self.data = name, {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value, ttl_seconds):
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)

    def delete_pattern(self, pattern):
        doomed = [k for k in self.data if tr.glob_to_regex(pattern).fullmatch(k)]
        for key in doomed:
            del self.data[key]
        return len(doomed)

    def health_check(self):
        return True

    def close(self):
        pass

    def is_backend_failure(self, exc):
        return isinstance(exc, OSError)


tr.register_backend("myapp-store", lambda config: DictBackend(config.backend))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: myapp/cache.py registers a backend; settings.toml selects it."""
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "myapp" / "cache.py").write_text(PLUGIN, encoding="utf-8")
    (tmp_path / "settings.toml").write_text(
        '[common.cache]\nbackend = "myapp-store"\n[common.cache.myapp-store]\nshards = 2\n',
        encoding="utf-8",
    )
    return tmp_path


def run_in(project: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_ENV="test", **extra)
    env.pop("PYTHONPATH", None)  # myapp must be found from the working directory alone
    # The console script's own way in: its sys.path does not start with the cwd.
    script = Path(sys.executable).with_name("tasker-resilience")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tasker_resilience"]
    return subprocess.run(
        [*command, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_the_import_the_backend_is_unknown(project: Path) -> None:
    result = run_in(project, "config")
    assert result.returncode == 3
    assert "myapp-store" in result.stderr
    assert "common.cache.backend" in result.stderr


@pytest.mark.parametrize("command", ["config", "health"])
def test_import_option_makes_the_backend_known(project: Path, command: str) -> None:
    result = run_in(project, command, "--import", "myapp.cache", "--root", str(project))
    assert result.returncode == 0, result.stderr
    if command == "config":
        line = next(x for x in result.stdout.splitlines() if x.startswith("common.cache.backend"))
        assert '"myapp-store"' in line
        assert "common.cache.myapp-store.shards = 2" in result.stdout
    else:
        report = json.loads(result.stdout)
        assert report["cache"]["backend"] == "myapp-store"
        assert report["status"] == "healthy"


def test_plugins_setting_makes_the_backend_known(project: Path) -> None:
    settings = project / "settings.toml"
    settings.write_text(
        settings.read_text(encoding="utf-8").replace(
            "[common.cache]\n", '[common.cache]\nplugins = ["myapp.cache"]\n'
        ),
        encoding="utf-8",
    )
    result = run_in(project, "health", "--root", str(project))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cache"]["backend"] == "myapp-store"
    config = run_in(project, "config", "--json", "--root", str(project))
    rows = json.loads(config.stdout)["settings"]
    assert rows["common.cache.plugins"] == {"value": ["myapp.cache"], "source": "settings.toml"}


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--import", "myapp.cach"], {}, "--import = 'myapp.cach'"),
        (
            [],
            {"TASKER_COMMON__CACHE__PLUGINS": "myapp.nope"},
            "common.cache.plugins = 'myapp.nope'",
        ),
    ],
)
def test_a_module_that_fails_to_import_is_named(
    project: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_in(project, "config", *args, "--root", str(project), **env)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "ModuleNotFoundError" in lines[0]


def test_help_mentions_the_import_option(project: Path) -> None:
    result = run_in(project, "health", "--help")
    assert result.returncode == 0
    assert "--import MODULE" in result.stdout

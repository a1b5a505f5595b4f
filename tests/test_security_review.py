"""What a security review checks: secrets never rendered, no ``eval`` of data, bandit clean.

The CLI runs as a real subprocess, with the same package as this test process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience.testing import configure_for_tests
from tests.package_python import run_python

PACKAGE_DIR = Path(tr.__file__).resolve().parent
SECRET = "Pw0rdXyZ"

PLUGIN = """
import tasker_resilience as tr
from tasker_resilience._cache.backends.memory_backend import MemoryBackend

tr.register_backend("nodes-store", lambda config: MemoryBackend(name=config.backend))
"""


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # This test's own package, then the project (its plugin module).
    return run_python("-m", "tasker_resilience", *args, cwd=cwd, **env)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose custom backend's own table lists node URLs with passwords."""
    (tmp_path / "nodes_plugin.py").write_text(PLUGIN, encoding="utf-8")
    (tmp_path / "settings.toml").write_text(
        textwrap.dedent(
            f"""
            [common.cache]
            backend = "nodes-store"
            plugins = ["nodes_plugin"]
            [common.cache.nodes-store]
            nodes = ["redis://:{SECRET}@node-a:6379/0", "redis://app:{SECRET}@node-b:6379/0"]
            replicas = [{{ url = "rediss://{SECRET}@replica:6380", weight = 2 }}]
            description = "primary at redis://:{SECRET}@node-a:6379 (see runbook)"
            shards = 4
            """
        ),
        encoding="utf-8",
    )
    return tmp_path


def test_config_masks_urls_inside_a_custom_backend_table(project: Path) -> None:
    text = _cli(project, "config", "--root", str(project))
    assert text.returncode == 0, text.stderr
    as_json = _cli(project, "config", "--root", str(project), "--json")
    assert as_json.returncode == 0, as_json.stderr
    for result in (text, as_json):
        assert SECRET not in result.stdout + result.stderr
    settings = json.loads(as_json.stdout)["settings"]
    assert settings["common.cache.nodes-store.nodes"]["value"] == [
        "redis://:***@node-a:6379/0",
        "redis://app:***@node-b:6379/0",
    ]
    assert settings["common.cache.nodes-store.replicas"]["value"] == [
        {"url": "rediss://***@replica:6380", "weight": 2}
    ]
    assert settings["common.cache.nodes-store.shards"]["value"] == 4
    assert "node-b:6379" in text.stdout  # masked, not dropped


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKER_COMMON__CACHE__REDIS__MAX_CONNECTIONS", f"redis://:{SECRET}@cache:6379/0"),
        ("TASKER_COMMON__CACHE__REDIS__SOCKET_TIMEOUT_SECONDS", f"rediss://u:{SECRET}@c:1"),
        ("TASKER_COMMON__CACHE__NEAR__TTL_SECONDS", f"{SECRET}"),
        ("TASKER_COMMON__CACHE__DEFAULT_TTL_SECONDS", f"http://x?token={SECRET}"),
        ("TASKER_COMMON__CIRCUIT_BREAKERS__DEFAULT_CONFIG__FAILURE_THRESHOLD", f"{SECRET}"),
    ],
)
def test_an_error_for_a_numeric_key_never_echoes_its_value(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = _cli(tmp_path, "config", **{variable: value})
    assert result.returncode == 3, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    key = variable.removeprefix("TASKER_").lower().replace("__", ".")
    assert key in result.stderr  # still says which setting is wrong, and what it wants
    assert "number" in result.stderr


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("cache", "near", "tracking"), f"redis://:{SECRET}@cache:6379/0"),
        (("cache", "enabled"), f"redis://:{SECRET}@cache:6379/0"),
        (("cache", "serializer"), f"redis://u:{SECRET}@cache:6379/0"),
        (("cache", "backend"), f"redis://:{SECRET}@cache:6379/0"),
        (("cache", "near"), f"redis://:{SECRET}@cache:6379/0"),
    ],
)
def test_a_url_put_where_it_does_not_belong_is_masked_in_the_error(
    path: tuple[str, ...], value: str
) -> None:
    overrides: dict[str, Any] = value  # type: ignore[assignment]
    for part in reversed(path):
        overrides = {part: overrides}
    with pytest.raises(tr.ConfigurationError) as info:
        tr.configure(env="test", overrides={"common": overrides}, install=False)
    # Lower-cased: a value may be shown lower-cased (backend names are).
    assert SECRET.lower() not in str(info.value).lower()
    assert SECRET.lower() not in repr(info.value.value).lower()


def test_a_hot_memory_entry_is_never_rebuilt_by_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    """No code is compiled or evaluated from a cached value, however hot its entry."""
    from tasker_resilience._cache import reads

    called: list[str] = []

    def spy(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            return real(*args, **kwargs)

        return call

    # A module global shadows the builtin for code in that module.
    monkeypatch.setattr(reads, "eval", spy("eval", eval), raising=False)
    monkeypatch.setattr(reads, "compile", spy("compile", compile), raising=False)
    monkeypatch.setattr(reads, "exec", spy("exec", exec), raising=False)
    configure_for_tests()

    @tr.cached()
    def page() -> Any:
        return [{"n": i, "name": f"user-{i}", "roles": ["reader"]} for i in range(50)]

    expected = page()
    for _ in range(300):
        hit = page()
        assert hit == expected
        assert hit is not expected
    assert called == []


def test_bandit_reports_nothing_and_every_nosec_says_why() -> None:
    bandit = shutil.which("bandit") or shutil.which("bandit", path=str(Path(sys.executable).parent))
    if bandit is None:
        pytest.skip("bandit is not installed (it comes with the `lint` extra)")
    result = subprocess.run(
        [bandit, "-r", str(PACKAGE_DIR), "-ll", "-q", "-f", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    findings = [
        f"{item['filename']}:{item['line_number']} {item['test_id']}" for item in report["results"]
    ]
    assert findings == []
    # `# nosec B301 # why`: an ID and a reason after it, on every one.
    bare = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "# nosec" in line and not re.search(r"# nosec B\d+(, ?B\d+)* # \S", line):
                bare.append(f"{path}:{number}")
    assert bare == []

"""examples/quotes, run the way a user runs it: its own tests, in a virtual environment
where tasker-resilience is installed from a built wheel (not editable, not this checkout
on sys.path), so everything the docs and the example use must be in the wheel.

The environment is cached in ``.venv-example/py<version>`` (built once with the
``pytest`` extra's dependencies, a minute on a first run); every run reinstalls the
package itself from a copy of the current sources, so it never tests a stale wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "quotes"
VENV = REPO_ROOT / ".venv-example" / f"py{sys.version_info.major}{sys.version_info.minor}"
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "tasker_resilience")
INSTALL_TIMEOUT = 600  # a first install downloads the dependencies
# Set by the Makefile: the lock the running environment was installed from, so the
# example's venv gets the same pins (unset: the newest releases, as a user would).
CONSTRAINTS = os.environ.get("TASKER_TEST_CONSTRAINTS")
RUN_TIMEOUT = 300


def _clean_env() -> dict[str, str]:
    # Nothing from this checkout's test run may leak in: no TASKER_* settings, no
    # PYTHONPATH pointing at the sources, no pip prompts.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKER_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if CONSTRAINTS:  # every install, the wheel's build environment too
        env["PIP_CONSTRAINT"] = CONSTRAINTS
    return env


def _run(args: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _copy_sources(target: Path) -> Path:
    """The files a wheel is built from, without build debris or caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def _dependencies_key() -> str:
    digest = hashlib.sha256()
    for path in (REPO_ROOT / "pyproject.toml", EXAMPLE / "pyproject.toml"):
        digest.update(path.read_bytes())
    digest.update(Path(CONSTRAINTS).read_bytes() if CONSTRAINTS else b"unpinned")
    return digest.hexdigest()


@pytest.fixture(scope="module")
def example_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example venv's interpreter, with the current package installed from a wheel."""
    source = _copy_sources(tmp_path_factory.mktemp("tasker-resilience-src"))
    python = VENV / "bin" / "python"
    stamp = VENV / ".dependencies"
    key = _dependencies_key()
    if not python.exists() or not stamp.exists() or stamp.read_text() != key:
        shutil.rmtree(VENV, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(VENV)], cwd=REPO_ROOT, timeout=120)
        _run(
            [str(python), "-m", "pip", "install", "-q", f"{source}[pytest]"],
            cwd=source,
            timeout=INSTALL_TIMEOUT,
        )
        stamp.write_text(key)
    else:
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--force-reinstall",
                str(source),
            ],
            cwd=source,
            timeout=INSTALL_TIMEOUT,
        )
    return python


def test_the_package_is_installed_not_linked(example_python: Path, tmp_path: Path) -> None:
    probe = (
        "import json, importlib.metadata as m, tasker_resilience, tasker_resilience.testing; "
        "d = m.distribution('tasker-resilience'); "
        "print(json.dumps({'file': tasker_resilience.__file__, "
        "'direct_url': json.loads(d.read_text('direct_url.json') or '{}'), "
        "'plugins': [e.value for e in m.entry_points(group='pytest11')]}))"
    )
    result = _run([str(example_python), "-c", probe], cwd=tmp_path, timeout=60)
    info = json.loads(result.stdout)
    assert Path(info["file"]).is_relative_to(VENV)
    assert "site-packages" in info["file"]
    assert info["direct_url"].get("dir_info", {}).get("editable", False) is False
    assert "tasker_resilience.testing.pytest_plugin" in info["plugins"]


def test_the_example_projects_own_tests_pass(example_python: Path, tmp_path: Path) -> None:
    project = tmp_path / "quotes"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    result = _run(
        [str(example_python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        timeout=RUN_TIMEOUT,
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary
    assert "skipped" not in summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 30  # the conformance suite included

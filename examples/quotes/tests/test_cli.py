"""The tasker-resilience command knows our backend when told to import its module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
COMMAND = Path(sys.executable).with_name("tasker-resilience")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    env.update(TASKER_ENV="test", TASKER_COMMON__CACHE__BACKEND="quotes-dict")
    return subprocess.run(
        [str(COMMAND), *args], cwd=HERE, env=env, capture_output=True, text=True, timeout=60
    )


def test_health_with_the_import_option() -> None:
    result = run("health", "--import", "quotes.dict_backend")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cache"]["backend"] == "quotes-dict"


def test_config_without_it_names_the_unknown_backend() -> None:
    result = run("config")
    assert result.returncode == 3
    assert "quotes-dict" in result.stderr

"""The core package never imports a web framework; contrib modules import only theirs."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("django", "fastapi", "starlette", "uvicorn")

_PROBE = """
import sys
import {module}
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & {frameworks!r})
print(",".join(loaded))
"""


def _frameworks_loaded_by(module: str) -> set[str]:
    code = _PROBE.format(module=module, frameworks=set(FRAMEWORKS))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    return set(out.split(",")) - {""}


@pytest.mark.parametrize(
    "module",
    [
        "tasker_resilience",
        "tasker_resilience.testing",
        "tasker_resilience.contrib",
        "tasker_resilience.contrib.asgi",
    ],
)
def test_module_imports_no_web_framework(module: str) -> None:
    assert _frameworks_loaded_by(module) == set()


def test_django_integration_imports_django_only() -> None:
    pytest.importorskip("django", reason="the django extra is not installed")
    assert _frameworks_loaded_by("tasker_resilience.contrib.django") == {"django"}

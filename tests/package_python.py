"""Run Python in a subprocess with the package this test process imported.

The subprocess sees the same ``tasker_resilience`` as the tests (a working tree, or the
tree under test when the suite runs against another one), the directory ``cwd`` on its
path (a project's own modules), and no ``TASKER_*`` variable but those given.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tasker_resilience

PACKAGE_PARENT = Path(tasker_resilience.__file__).resolve().parent.parent


def run_python(
    *args: str, cwd: Path | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python *args`` (e.g. ``-c`` and a script, or ``-m tasker_resilience ...``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
    paths = [str(PACKAGE_PARENT), *([str(cwd)] if cwd is not None else [])]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment.update(TASKER_ENV="test", **env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

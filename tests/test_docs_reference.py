"""The API reference (``make docs``): every public name is documented, and the site builds
with ``--strict``.

A public name is one in the ``__all__`` of ``tasker_resilience``, ``.testing``,
``.testing.pytest_plugin``, ``.contrib.django`` or ``.contrib.asgi``. Each must have a
docstring where it is defined (a class, a function, or a string under a module-level
assignment), and its module must be rendered by a ``:::`` directive of a page in
docs/reference/. The build itself runs when the ``docs`` extra is installed (``make
docs`` installs it).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference"
PUBLIC_MODULES = (
    "tasker_resilience",
    "tasker_resilience.testing",
    "tasker_resilience.testing.pytest_plugin",
    "tasker_resilience.contrib.django",
    "tasker_resilience.contrib.asgi",
)


def _assignment_docstrings(module_name: str) -> dict[str, str]:
    """Module-level ``NAME = ...`` followed by a string: the attribute docstrings
    mkdocstrings renders (``inspect`` cannot see them)."""
    source = inspect.getsource(importlib.import_module(module_name))
    body = ast.parse(source).body
    found = {}
    for node, following in itertools.pairwise(body):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = following.value.value
    return found


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            if not inspect.getdoc(obj):
                missing.append(name)
            continue
        # Data: documented by a string under its assignment, in the module that defines
        # it (the public module, or a private one under it that it re-exports from).
        homes = [
            loaded
            for loaded, mod in list(sys.modules.items())
            if (loaded == module_name or loaded.startswith(module_name + "."))
            and getattr(mod, name, None) is obj
        ]
        if not any(name in _assignment_docstrings(home) for home in homes):
            missing.append(name)
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    assert _undocumented(module_name) == []


def test_the_check_sees_a_missing_docstring() -> None:
    # The check above must be able to fail: a name without one is reported.
    assert "counter_value" not in _assignment_docstrings("tasker_resilience._breakers.breaker")
    from tasker_resilience._breakers import breaker

    assert inspect.getdoc(breaker.Breaker._acquire)
    assert _assignment_docstrings("tasker_resilience._cache.faults")["WARNING_INTERVAL_SECONDS"]


def test_every_public_module_is_rendered_by_a_reference_page() -> None:
    directives = {
        line.removeprefix(":::").strip()
        for page in REFERENCE.glob("*.md")
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith(":::")
    }
    assert set(PUBLIC_MODULES) <= directives, sorted(set(PUBLIC_MODULES) - directives)


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None
    or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="the docs extra (mkdocs, mkdocstrings) is not installed; `make docs` installs it",
)
def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    import tasker_resilience

    for name in tasker_resilience.__all__:
        assert f'id="tasker_resilience.{name}"' in api, name

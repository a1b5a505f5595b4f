"""The release path's facts kept in step: one version, the redis range the backend
checks equals the one pyproject declares, the lowest lock sits at pyproject's floors,
and the changelog has the section other changes are added to."""

from __future__ import annotations

import importlib.metadata
import re
import sys

import pytest

import tasker_resilience as tr
from tasker_resilience._cache.backends.redis_compat import SUPPORTED_REDIS

from .conftest import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli below 3.11
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The runtime dependencies make test-lowest installs at their floors (Django: the extra).
RUNTIME = [
    *PYPROJECT["project"]["dependencies"],
    *PYPROJECT["project"]["optional-dependencies"]["django"],
]


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement.strip())
    assert match is not None, requirement
    return match.group(1).lower(), match.group(2).replace(" ", "")


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_the_version_is_written_once() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tasker_resilience.__version__"
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", tr.__version__)
    assert importlib.metadata.version("tasker-resilience") == tr.__version__


def test_the_redis_range_checked_at_configure_is_the_declared_one() -> None:
    declared = dict(_split(r) for r in PYPROJECT["project"]["dependencies"])
    assert declared["redis"] == SUPPORTED_REDIS


@pytest.mark.parametrize("requirement", RUNTIME)
def test_the_lowest_lock_pins_each_runtime_dependency_at_its_floor(requirement: str) -> None:
    name, spec = _split(requirement)
    floor = re.search(r">=([\d.]+)", spec)
    assert floor is not None, f"{requirement} has no lower bound"
    lock = (REPO_ROOT / "requirements" / "lowest.txt").read_text(encoding="utf-8")
    pinned = re.findall(rf"(?im)^{re.escape(name)}==([\d.]+)", lock)
    assert pinned, f"{name} is not in requirements/lowest.txt: run `make lock`"
    assert {_release(v) for v in pinned} == {_release(floor.group(1))}, (
        f"requirements/lowest.txt pins {name} at {pinned}, pyproject's floor is "
        f"{floor.group(1)}: run `make lock`"
    )


def test_the_changelog_has_an_unreleased_section_first() -> None:
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"(?m)^## \[([^\]]+)\]", changelog)
    assert sections[0] == "Unreleased"
    assert "0.1.0" in sections
    released = tr.__version__.split(".dev")[0]
    # A released version is the newest released section; a .dev one is not released yet.
    if ".dev" in tr.__version__:
        assert released not in sections[1:]
    else:
        assert sections[1] == released

"""Django's generic cache tests (``BaseCacheTests`` from the Django sdist) against
``ResilientCache`` on a private redis-server: a project switching ``BACKEND`` keeps the
behaviour Django's own test suite asks of every cache backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasker_resilience._operations.drill.local_server import LocalServer
from tests.contrib.conftest import SUMMARY

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

EXPECTED_SKIPS = {
    # Django's own reason, as for its RedisCache (the same aliases are excluded):
    # eviction is the server's job (maxmemory policy), not the client's.
    "test_cull": "Culling isn't implemented.",
    "test_zero_cull": "Culling isn't implemented.",
    "test_cull_delete_when_store_empty": "Culling isn't implemented.",
}


def test_djangos_generic_cache_tests_pass(
    private_server: LocalServer, django_cache_tests: Path, tmp_path: Path
) -> None:
    out = tmp_path / "django-suite.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.contrib.django_suite",
            str(django_cache_tests),
            private_server.url,
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    outcomes = report["tests"]
    broken = {
        name: o["detail"][-1500:]
        for name, o in outcomes.items()
        if o["outcome"] in ("failed", "error")
    }
    skipped = {name: o["reason"] for name, o in outcomes.items() if o["outcome"] == "skipped"}
    passed = sorted(name for name, o in outcomes.items() if o["outcome"] == "passed")
    SUMMARY.append(
        f"Django {report['django']} BaseCacheTests on ResilientCache: {len(passed)} passed, "
        f"{len(broken)} failed, {len(skipped)} skipped in {report['seconds']} s"
    )
    SUMMARY.extend(f"  skipped {name}: {reason}" for name, reason in sorted(skipped.items()))
    assert not broken, "\n\n".join(f"{name}:\n{detail}" for name, detail in broken.items())
    assert skipped == EXPECTED_SKIPS
    # 54 tests in Django 4.2 and 5.2: all but the culling ones must have run and passed.
    assert len(passed) >= 51
    assert {"test_incr", "test_touch", "test_zero_timeout", "test_forever_timeout"} <= set(passed)

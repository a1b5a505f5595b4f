"""Fixtures for the framework integrations: Django's own cache test suite, fetched once.

Django's wheel does not ship its test suite; the sdist does. ``django_cache_tests``
downloads the sdist of the installed Django version with pip (``pip download
--no-binary :all: --no-deps``), bounded in time, extracts ``tests/cache`` into the
virtualenv (``<sys.prefix>/django-tests/<version>/``) and reuses it on every later run.
Without PyPI the tests that need it skip, saying so, or fail when
``TASKER_TEST_REQUIRE_SERVER=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

DOWNLOAD_TIMEOUT_SECONDS = 300
REQUIRE_ENV = "TASKER_TEST_REQUIRE_SERVER"

SUMMARY: list[str] = []
"""Lines for the terminal summary (which Django tests ran, which were skipped and why)."""


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def _extract_cache_tests(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        members = [
            m for m in tar.getmembers() if "/tests/cache/" in m.name and (m.isfile() or m.isdir())
        ]
        if not members:
            raise RuntimeError(f"{archive.name} holds no tests/cache directory")
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            # "data": no absolute paths, links or special files out of an archive.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12 without extraction filters; members are plain files
                tar.extractall(staging, members=members)
            (source,) = staging.glob("*/tests")
            source.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def django_tests_root() -> Path:
    """The directory holding Django's ``cache`` test app for the installed version."""
    import django

    version = django.get_version()
    target = Path(sys.prefix) / "django-tests" / version
    if (target / "cache" / "tests.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--disable-pip-version-check",
            "--dest",
            download,
            f"django=={version}",
        ]
        subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_SECONDS
        )
        (archive,) = Path(download).glob("*.tar.gz")
        _extract_cache_tests(archive, target)
    return target


@pytest.fixture
def django_cache_tests() -> Path:
    """Function-scoped, so a test asks for its server first and a machine without one
    skips before downloading anything (the download itself is cached on disk)."""
    pytest.importorskip("django", reason="the django extra is not installed")
    try:
        return django_tests_root()
    except (subprocess.SubprocessError, OSError, RuntimeError, ValueError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        reason = f"could not fetch Django's sdist test suite from PyPI: {str(detail)[-500:]}"
        if _required():
            pytest.fail(f"{reason} ({REQUIRE_ENV} is set)", pytrace=False)
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def django_settings() -> Any:
    """Django configured once for this process (no database, the test URLconf);
    each test points ``CACHES`` at its own server with ``override_settings``."""
    django = pytest.importorskip("django", reason="the django extra is not installed")
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="tests-only",
            ROOT_URLCONF="tests.contrib.django_app",
            ALLOWED_HOSTS=["testserver"],
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            USE_TZ=True,
            CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
        )
        django.setup()
    return settings

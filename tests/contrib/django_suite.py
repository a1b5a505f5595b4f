"""Run Django's own generic cache tests against ``ResilientCache`` in a fresh process.

``python -m tests.contrib.django_suite <dir holding Django's tests/cache> <redis url> <out.json>``

Django's test suite is not shipped in its wheel; the sdist has ``tests/cache/tests.py``
with ``BaseCacheTests``, the mixin every built-in backend's test class uses. This script
configures Django the way that suite expects (the ``cache`` test app with its ``Poll``
model on an in-memory SQLite database), subclasses ``BaseCacheTests`` for
``ResilientCache`` exactly as Django's ``RedisCacheTests`` does for ``RedisCache``, runs
it with Django's test runner set-up, and writes every test's outcome as JSON.

A separate process because Django's settings are process-wide and can be configured
once; the pytest side (``test_django_suite.py``) reads the JSON.
"""

from __future__ import annotations

import json
import sys
import time
import unittest
from pathlib import Path
from typing import Any

BACKEND = "tasker_resilience.contrib.django.ResilientCache"
# Django's RedisCacheTests exclude these aliases: culling is Redis's job (maxmemory).
EXCLUDED_CACHES = {"cull", "zero_cull"}


class _Recorder(unittest.TextTestResult):
    """Keeps every test's outcome by name, for the JSON report."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, str]] = {}

    def _name(self, test: unittest.TestCase) -> str:
        return test.id().rsplit(".", 1)[-1]

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self.outcomes.setdefault(self._name(test), {"outcome": "passed"})

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self.outcomes[self._name(test)] = {"outcome": "skipped", "reason": reason}

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        detail = self._exc_info_to_string(err, test)
        self.outcomes[self._name(test)] = {"outcome": "failed", "detail": detail}

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        detail = self._exc_info_to_string(err, test)
        self.outcomes[self._name(test)] = {"outcome": "error", "detail": detail}

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            detail = f"{subtest.id()}: {self._exc_info_to_string(err, test)}"
            self.outcomes[self._name(test)] = {"outcome": "failed", "detail": detail}


def run(tests_root: Path, url: str) -> dict[str, Any]:
    # The sdist's tests/ directory holds the "cache" test app; import it as Django's
    # runtests.py does, with tests/ on sys.path.
    sys.path.insert(0, str(tests_root))
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "cache"],
        CACHES={"default": {"BACKEND": BACKEND, "LOCATION": url}},
        SECRET_KEY="django-suite-only",
        USE_TZ=True,
        MIDDLEWARE=[],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

    import redis
    from django.test import TestCase, override_settings
    from django.test.runner import DiscoverRunner

    from tasker_resilience.testing import configure_for_tests

    # The process-wide Resilience the cache binds to: real breaker thresholds, and the
    # library's own cache in memory (the Django cache has its LOCATION).
    configure_for_tests(
        {
            "common": {
                "circuit_breakers": {
                    "component_configs": {"cache": {"failure_threshold": 5, "timeout_seconds": 30}}
                }
            }
        }
    )

    from cache.tests import BaseCacheTests, caches_setting_for_tests

    @override_settings(
        CACHES=caches_setting_for_tests(
            base={"BACKEND": BACKEND, "LOCATION": url}, exclude=EXCLUDED_CACHES
        )
    )
    class ResilientCacheTests(BaseCacheTests, TestCase):
        # As for Django's RedisCache: INCR of a pickled value is a server error reply.
        incr_decr_type_error = redis.ResponseError

    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    old_config = runner.setup_databases()
    started = time.monotonic()
    try:
        suite = unittest.TestLoader().loadTestsFromTestCase(ResilientCacheTests)
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1, resultclass=_Recorder).run(
            suite
        )
    finally:
        runner.teardown_databases(old_config)
        runner.teardown_test_environment()
    assert isinstance(result, _Recorder)
    return {
        "django": django.get_version(),
        "seconds": round(time.monotonic() - started, 2),
        "tests": result.outcomes,
    }


def main(argv: list[str]) -> int:
    tests_root, url, out = Path(argv[0]), argv[1], Path(argv[2])
    out.write_text(json.dumps(run(tests_root, url), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

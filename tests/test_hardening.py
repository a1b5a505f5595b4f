"""Issue 10, hardening: the cases that need no real server (one test per numbered case).

The cases that involve a server are in ``tests/integration/test_hardening.py``.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from pathlib import Path
from typing import Any

import pybreaker
import pytest

from tasker_resilience import configure
from tasker_resilience._breakers.breaker import Breaker, counter_value
from tasker_resilience._config.redact import redact_url
from tasker_resilience._config.schema import BreakerConfig, parse_settings
from tasker_resilience._errors import ConfigurationError
from tasker_resilience.testing import ManualClock, configure_for_tests


class _Exploding(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        raise RuntimeError("listener bug")


def test_case15_a_raising_listener_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    breaker = Breaker("dep", BreakerConfig(1, 1.0, 1), clock=clock, listeners=[_Exploding()])
    breaker.add_listener(_Exploding())

    def boom() -> None:
        raise OSError("down")

    with caplog.at_level(logging.ERROR, "tasker_resilience.breaker"), pytest.raises(OSError):
        breaker.call(boom)  # the trip runs both listeners; only the call's own error escapes
    assert breaker.state == "open"
    clock.advance(1.5)
    assert breaker.call(lambda: 42) == 42  # half-open -> closed, listeners raising again
    assert breaker.state == "closed"
    raised = [r for r in caplog.records if "listener" in r.getMessage()]
    # Two listeners x three transitions (closed->open, open->half-open, half-open->closed).
    assert len(raised) == 6
    assert all(r.exc_info for r in raised)


def test_case15_raising_listener_on_the_cache_breaker_keeps_cache_calls_quiet() -> None:
    res = configure_for_tests()
    res.breakers.get("cache").add_listener(_Exploding())
    res.breakers.get("cache").force_open()  # a transition: the listener raised, logged
    assert res.cache.get("k") is None


def test_case19_counter_value_does_not_use_pickling() -> None:
    counter = itertools.count()
    for _ in range(7):
        next(counter)
    with warnings.catch_warnings():
        # 3.12/3.13 warn on itertools pickling (__reduce__), 3.14 removed it.
        warnings.simplefilter("error", DeprecationWarning)
        assert counter_value(counter) == 7
        assert counter_value(itertools.count(10**20)) == 10**20


def test_case6_hung_half_open_probes_time_out_and_free_their_slots() -> None:
    clock = ManualClock()
    config = BreakerConfig(1, 30.0, 1, probe_timeout_seconds=5.0)
    breaker = Breaker("dep", config, clock=clock)
    breaker.force_open()
    clock.advance(31)
    hung = breaker.admit()  # the one probe slot; its call never returns
    assert hung is not None
    assert breaker.admit() is None  # slot taken
    assert breaker.retry_after_seconds is None  # half-open, probe in flight
    clock.advance(4)
    assert breaker.admit() is None  # within the probe deadline: still waiting
    clock.advance(2)
    assert breaker.admit() is None  # past it: the probe counts as failed, circuit re-opens
    assert breaker.state == "open"
    assert breaker.retry_after_seconds == pytest.approx(30.0)
    clock.advance(31)
    probe = breaker.admit()  # a fresh probe gets the slot
    assert probe is not None
    with probe:
        pass
    assert breaker.state == "closed"
    with hung:  # the hung call finally returns: stale, moves nothing
        pass
    assert breaker.state == "closed"
    m = breaker.metrics()
    assert (
        m["total_calls"]
        == m["successful_calls"] + m["failed_calls"] + m["rejected_calls"] + m["neutral_calls"]
    )


def test_case6_probe_timeout_is_configurable_with_a_default() -> None:
    res = configure_for_tests(
        {"common": {"circuit_breakers": {"default_config": {"probe_timeout_seconds": 2.5}}}}
    )
    assert res.breakers.get("custom", create=True).config.probe_timeout_seconds == 2.5
    assert res.breakers.get("cache").config.probe_timeout_seconds == 10.0  # the default
    with pytest.raises(ConfigurationError, match="probe_timeout_seconds"):
        configure_for_tests(
            {"common": {"circuit_breakers": {"default_config": {"probe_timeout_seconds": 0}}}}
        )


# --- cases 9, 10, 13: URLs --------------------------------------------------------------

BAD_URLS = {
    "redis://cache:notaport/0": "well-formed",
    "redis://cache:99999/0": "well-formed",
    "redis://[::1/0": "well-formed",
    "redis://cache:6379/abc": "database number from 0 to 15",
    "redis://cache:6379/99": "database number from 0 to 15",
    "redis://cache:6379/-1": "database number from 0 to 15",
    "redis://": "with a host",
    "redis://:pw@/0": "with a host",
    "unix:///run/redis.sock?db=x": "database number",
    "redis://cache:6379/0?socket_timeout=3": "use socket_timeout_seconds",
    "redis://cache:6379/0?socket_connect_timeout=3": "use connect_timeout_seconds",
    "redis://cache:6379/0?timeout=3": "use connect_timeout_seconds",
    "redis://cache:6379/0?max_connections=500": "use max_connections",
    "rediss://cache:6379/0?ssl_cert_reqs=none": "verification stays on",
}


@pytest.mark.parametrize(("url", "says"), BAD_URLS.items(), ids=list(BAD_URLS))
def test_case9_and_10_malformed_urls_fail_configure_naming_key_and_rule(
    url: str, says: str
) -> None:
    overrides = {"common": {"cache": {"backend": "redis", "redis": {"url": url}}}}
    with pytest.raises(ConfigurationError, match=says) as caught:
        configure_for_tests(overrides)
    assert caught.value.key == "common.cache.redis.url"
    assert "pw" not in str(caught.value)


SECRET_URLS = [
    "redis://:S3cr3t#PW@cache:6379/0",
    "redis://:S3cr3t/PW@cache:6379/0",
    "redis://:S3cr3t?PW@cache:6379/0",
    "redis://app:S3cr3t@PW@cache:6379/0",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_case13_unencoded_passwords_are_refused_and_never_shown(url: str) -> None:
    with pytest.raises(ConfigurationError, match="percent-encoded") as caught:
        configure_for_tests({"common": {"cache": {"backend": "redis", "redis": {"url": url}}}})
    assert "S3cr3t" not in str(caught.value)
    assert "PW" not in str(caught.value)
    assert "S3cr3t" not in redact_url(url)
    assert "PW" not in redact_url(url)


def test_case13_no_secret_in_settings_repr_or_unknown_key_errors() -> None:
    url = "redis://app:S3cr3tPW@cache.invalid:6379/0"
    settings = parse_settings(
        {"common": {"cache": {"backend": "redis", "redis": {"url": url}}}},
        env="test",
        known_backends={"redis", "memory"},
    )
    assert "S3cr3tPW" not in repr(settings)
    assert "S3cr3tPW" not in str(settings)
    with pytest.raises(ConfigurationError) as caught:
        configure_for_tests(
            {"common": {"cache": {"backend": "memory", "redis": {"password": "S3cr3tPW"}}}}
        )
    assert "common.cache.redis.password" in str(caught.value)
    assert "S3cr3tPW" not in str(caught.value)


# --- cases 11, 12, 18: configuration typos, types, tokens ---------------------------------


def _write(root: Path, text: str) -> str:
    (root / "settings.toml").write_text(text)
    return str(root)


TYPO_TABLES = {
    "[common.cahce]\nbackend = 'memory'\n": ("common.cahce", "did you mean 'cache'"),
    "[common.cache.reddis]\nurl = 'redis://h:1/0'\n": ("common.cache.reddis", "'redis'"),
    "[common.circuit_breaker.default_config]\nfailure_threshold = 1\n": (
        "common.circuit_breaker",
        "'circuit_breakers'",
    ),
    "[comon.cache]\nbackend = 'memory'\n": ("comon", "'common'"),
}


@pytest.mark.parametrize("toml", TYPO_TABLES, ids=[v[0] for v in TYPO_TABLES.values()])
def test_case11_misspelt_tables_fail_configure_with_did_you_mean(toml: str, tmp_path: Path) -> None:
    key, says = TYPO_TABLES[toml]
    with pytest.raises(ConfigurationError) as caught:
        configure(env="test", root=_write(tmp_path, toml))
    assert caught.value.key == key
    assert says in str(caught.value)


def test_case11_a_misspelt_environment_variable_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_COMMON__CAHCE__BACKEND", "memory")
    with pytest.raises(ConfigurationError) as caught:
        configure(env="test", root=str(tmp_path))
    assert "did you mean 'cache'" in str(caught.value)
    assert "TASKER_COMMON__CAHCE__BACKEND" in str(caught.value)


def test_case11_the_applications_own_tables_stay_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHE__BACKEND", "memory")  # no server to reach
    root = _write(tmp_path, "[common.database]\nurl = 'postgres://x'\n[myapp]\nx = 1\n")
    assert configure(env="test", root=root).settings.cache.backend  # no error


def test_case18_a_backend_table_given_as_a_string_says_a_table_is_needed(tmp_path: Path) -> None:
    root = _write(tmp_path, "[common.cache]\nredis = 'redis://:S3cr3t@h:6379/0'\n")
    with pytest.raises(ConfigurationError) as caught:
        configure(env="test", root=root)
    assert caught.value.key == "common.cache.redis"
    assert "a table, not a single value" in str(caught.value)
    assert "unknown key" not in str(caught.value)
    assert "S3cr3t" not in str(caught.value)


def _verdict(attempt: Any) -> str:
    """ "ok", or "rejected" when the error names the key and asks for a number."""
    try:
        attempt()
    except ConfigurationError as exc:
        named = exc.key == "common.circuit_breakers.default_config.failure_threshold"
        return "rejected" if named and "a number" in exc.allowed else f"other: {exc}"
    return "ok"


@pytest.mark.parametrize(
    ("value", "ok"), [("5", True), ("5.0", True), ("five", False), ("true", False)]
)
def test_case12_the_same_type_rules_in_toml_environment_and_overrides(
    value: str, ok: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHE__BACKEND", "memory")  # no server to reach
    toml_root = _write(
        tmp_path, f'[common.circuit_breakers.default_config]\nfailure_threshold = "{value}"\n'
    )
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    table = {"common": {"circuit_breakers": {"default_config": {"failure_threshold": value}}}}
    results = {
        "toml": _verdict(lambda: configure(env="test", root=toml_root)),
        "overrides": _verdict(lambda: configure(env="test", root=str(empty_root), overrides=table)),
    }
    monkeypatch.setenv("TASKER_COMMON__CIRCUIT_BREAKERS__DEFAULT_CONFIG__FAILURE_THRESHOLD", value)
    results["environment"] = _verdict(lambda: configure(env="test", root=str(empty_root)))
    assert set(results.values()) == {"ok" if ok else "rejected"}, results


def test_case12_format_and_jinja_tokens_in_environment_values_are_not_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHE__BACKEND", "memory")
    monkeypatch.setenv("TASKER_COMMON__CACHE__KEY_PREFIX", "@format {env[HOME]}")
    res = configure(env="test", root=str(tmp_path))
    assert res.settings.cache.key_prefix == "@format {env[HOME]}"
    monkeypatch.setenv("TASKER_COMMON__CACHE__KEY_PREFIX", "@jinja {{ env.HOME }}")
    res = configure(env="test", root=str(tmp_path))
    assert res.settings.cache.key_prefix == "@jinja {{ env.HOME }}"

"""The settings of the rate rules, the open time's growth and the probe budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tasker_resilience import ConfigurationError
from tasker_resilience._cache.backends.contract import known_backend_names
from tasker_resilience._config.schema import BreakerConfig, Settings, parse_settings

from .conftest import REPO_ROOT
from .test_config import settings_for

BREAKERS = "common.circuit_breakers"


def parse(common: Mapping[str, Any]) -> Settings:
    return parse_settings({"common": common}, env="test", known_backends=known_backend_names())


def breakers(table: str, **keys: Any) -> dict[str, Any]:
    section: dict[str, Any] = keys
    for part in reversed(table.split(".")):
        section = {part: section}
    return {"circuit_breakers": section, "cache": {"backend": "memory"}}


def test_no_new_key_means_the_seed_breakers() -> None:
    settings = parse({"cache": {"backend": "memory"}})
    for name in ("cache", "pgmq", "task_readiness", "anything"):
        config = settings.circuit_breakers.for_component(name)
        assert not config.rate_rules
        assert config.max_timeout_seconds is None
        assert config.slow_call_seconds == 0
    assert settings_for(REPO_ROOT, env="production").circuit_breakers.default_config == (
        BreakerConfig()
    )


def test_the_issue_example_parses() -> None:
    config = parse(
        breakers(
            "default_config",
            failure_threshold=5,
            window_seconds=2,
            minimum_calls=20,
            failure_rate_threshold=0.5,
            slow_call_seconds=0.05,
            slow_call_rate_threshold=0.5,
            max_timeout_seconds=30,
        )
    ).circuit_breakers.default_config
    assert config.rate_rules
    assert (config.window_seconds, config.minimum_calls) == (2, 20)
    assert (config.slow_call_seconds, config.max_timeout_seconds) == (0.05, 30)


def test_documented_components_take_the_new_keys_from_default_config() -> None:
    settings = parse(
        breakers(
            "default_config", window_seconds=10, slow_call_seconds=0.1, max_timeout_seconds=120
        )
    ).circuit_breakers
    cache, task = settings.for_component("cache"), settings.for_component("task_readiness")
    assert (cache.window_seconds, cache.slow_call_seconds) == (10, 0.1)
    assert cache.max_timeout_seconds == 120
    # ... while keeping their documented thresholds and timeouts.
    assert (task.failure_threshold, task.timeout_seconds, task.success_threshold) == (10, 60, 3)
    assert task.window_seconds == 10


def test_an_inherited_cap_below_a_components_own_timeout_means_no_growth() -> None:
    # default_config's cap (30) is below task_readiness's documented 60 s: no error, no growth.
    settings = parse(breakers("default_config", max_timeout_seconds=30)).circuit_breakers
    assert settings.for_component("task_readiness").max_timeout_seconds is None
    assert settings.for_component("pgmq").max_timeout_seconds is None  # 30 = its timeout
    assert settings.default_config.max_timeout_seconds == 30


def test_a_component_can_turn_inherited_rules_off() -> None:
    settings = parse(
        {
            "cache": {"backend": "memory"},
            "circuit_breakers": {
                "default_config": {"window_seconds": 5, "slow_call_seconds": 0.2},
                "component_configs": {"pgmq": {"window_seconds": 0}},
            },
        }
    ).circuit_breakers
    assert not settings.for_component("pgmq").rate_rules
    assert settings.for_component("cache").rate_rules


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("window_seconds", -1, "0 (off) or seconds from 0.1 to 3600"),
        ("window_seconds", 0.05, "0 (off) or seconds from 0.1 to 3600"),
        ("window_seconds", 3601, "0 (off) or seconds from 0.1 to 3600"),
        ("window_seconds", "soon", "a number"),
        ("minimum_calls", 0, "from 1 to 100000"),
        ("minimum_calls", 2.5, "whole number"),
        ("minimum_calls", True, "not a boolean"),
        ("failure_rate_threshold", 0, "greater than 0 and at most 1"),
        ("failure_rate_threshold", 1.5, "greater than 0 and at most 1"),
        ("failure_rate_threshold", "half", "a number"),
        ("slow_call_seconds", -0.1, "0 (off) or seconds greater than 0 and at most 300"),
        ("slow_call_seconds", 301, "0 (off) or seconds greater than 0 and at most 300"),
        ("slow_call_rate_threshold", 0, "greater than 0 and at most 1"),
        ("slow_call_rate_threshold", -0.5, "greater than 0 and at most 1"),
        ("max_timeout_seconds", 10, "from timeout_seconds (30) to 3600"),
        ("max_timeout_seconds", 3601, "from timeout_seconds (30) to 3600"),
        ("max_timeout_seconds", float("inf"), "a finite number"),
    ],
)
def test_new_keys_are_checked(key: str, value: Any, allowed: str) -> None:
    keys = {key: value}
    if key not in ("window_seconds", "max_timeout_seconds"):
        keys["window_seconds"] = 2  # so the key is about a rule that is on
    if key == "slow_call_rate_threshold":
        keys["slow_call_seconds"] = 0.1
    for table in ("default_config", "component_configs.pgmq"):
        with pytest.raises(ConfigurationError) as info:
            parse(breakers(table, **keys))
        error = info.value
        assert error.key == f"{BREAKERS}.{table}.{key}"
        if isinstance(value, str):
            # What failed to read as a number is never echoed (it may be a secret).
            assert value not in str(error)
        else:
            assert error.value == value
        assert allowed in str(error)


@pytest.mark.parametrize(
    ("keys", "bad", "why"),
    [
        ({"slow_call_seconds": 0.1}, "slow_call_seconds", "window_seconds > 0 as well"),
        ({"minimum_calls": 50}, "minimum_calls", "window_seconds > 0 as well"),
        ({"failure_rate_threshold": 0.2}, "failure_rate_threshold", "could never trip"),
        (
            {"window_seconds": 5, "slow_call_rate_threshold": 0.3},
            "slow_call_rate_threshold",
            "slow_call_seconds > 0 as well",
        ),
    ],
)
def test_a_rule_that_can_never_trip_is_an_error_saying_why(
    keys: dict[str, Any], bad: str, why: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(breakers("component_configs.payments", **keys))
    assert info.value.key == f"{BREAKERS}.component_configs.payments.{bad}"
    assert why in str(info.value)


def test_the_documented_defaults_written_out_are_not_an_error() -> None:
    # Copying the defaults block (rate rules off) into a settings file is harmless.
    config = parse(
        breakers(
            "default_config",
            window_seconds=0,
            minimum_calls=20,
            failure_rate_threshold=0.5,
            slow_call_seconds=0,
            slow_call_rate_threshold=0.5,
        )
    ).circuit_breakers.default_config
    assert not config.rate_rules


@pytest.mark.parametrize("backend", ["redis", "dragonfly"])
def test_a_cache_slow_call_rule_at_or_above_the_socket_timeout_can_never_trip(
    backend: str,
) -> None:
    common: dict[str, Any] = {
        "cache": {"backend": backend, "redis": {"socket_timeout_seconds": 0.25}},
        "circuit_breakers": {
            "component_configs": {"cache": {"window_seconds": 2, "slow_call_seconds": 0.25}}
        },
    }
    with pytest.raises(ConfigurationError) as info:
        parse(common)
    assert info.value.key == f"{BREAKERS}.component_configs.cache.slow_call_seconds"
    message = str(info.value)
    assert "common.cache.redis.socket_timeout_seconds (0.25)" in message
    assert "never a slow one" in message
    common["circuit_breakers"]["component_configs"]["cache"]["slow_call_seconds"] = 0.05
    assert parse(common).circuit_breakers.for_component("cache").slow_call_seconds == 0.05


def test_an_inherited_slow_rule_is_checked_against_the_cache_too() -> None:
    common = {
        "cache": {"backend": "redis"},
        "circuit_breakers": {"default_config": {"window_seconds": 2, "slow_call_seconds": 1}},
    }
    with pytest.raises(ConfigurationError, match="socket_timeout_seconds"):
        parse(common)
    # The memory backend has no socket timeout: nothing to check against.
    common["cache"] = {"backend": "memory"}
    assert parse(common).circuit_breakers.for_component("cache").slow_call_seconds == 1


def test_probe_socket_timeout_defaults_short_and_never_above_the_socket_timeout() -> None:
    assert parse({}).cache.redis.probe_socket_timeout_seconds == 0.1
    short = parse({"cache": {"redis": {"socket_timeout_seconds": 0.05}}}).cache.redis
    assert short.probe_socket_timeout_seconds == 0.05
    chosen = parse({"cache": {"redis": {"probe_socket_timeout_seconds": 0.02}}}).cache.redis
    assert chosen.probe_socket_timeout_seconds == 0.02
    assert "probe_socket_timeout_seconds=0.02" in repr(chosen)


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (0.3, "at most socket_timeout_seconds (0.25)"),
        (0, "greater than 0"),
        ("quick", "a number"),
    ],
)
def test_probe_socket_timeout_is_checked(value: Any, allowed: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse({"cache": {"redis": {"probe_socket_timeout_seconds": value}}})
    assert info.value.key == "common.cache.redis.probe_socket_timeout_seconds"
    assert allowed in str(info.value)

"""Layered settings (files, overlay, env vars, overrides) and every validation error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tasker_resilience import ConfigurationError
from tasker_resilience._cache.backends.contract import known_backend_names
from tasker_resilience._config.layers import load_settings
from tasker_resilience._config.schema import Settings, parse_settings

from .conftest import REPO_ROOT


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("TASKER_COMMON"):
            monkeypatch.delenv(name)
    write(
        tmp_path / "config/tasker/base/breakers.toml",
        "[common.circuit_breakers.default_config]\nfailure_threshold = 4\n"
        "[common.circuit_breakers.component_configs.pgmq]\ntimeout_seconds = 12\n",
    )
    write(
        tmp_path / "config/tasker/base/cache.toml",
        '[common.cache]\nbackend = "redis"\nkey_prefix = "base"\n'
        '[common.cache.redis]\nurl = "redis://base:6379/0"\n',
    )
    write(
        tmp_path / "config/tasker/environments/production/cache.toml",
        '[common.cache]\nkey_prefix = "prod"\n[common.cache.redis]\nmax_connections = 40\n',
    )
    write(tmp_path / "settings.toml", '[common.cache]\nbackend = "dragonfly"\n')
    return tmp_path


def settings_for(root: Path, env: str = "production", overrides: Any = None) -> Settings:
    loaded = load_settings(env, overrides, root=root)
    return parse_settings(loaded.data, env=loaded.env, known_backends=known_backend_names())


def parse(common: Mapping[str, Any]) -> Settings:
    return parse_settings({"common": common}, env="test", known_backends=known_backend_names())


def test_layers_apply_in_order(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHE__REDIS__SOCKET_TIMEOUT_SECONDS", "0.1")
    settings = settings_for(
        root,
        overrides={"common": {"circuit_breakers": {"default_config": {"success_threshold": 4}}}},
    )
    cache = settings.cache
    assert cache.key_prefix == "prod"  # environment overlay over base
    assert cache.backend == "dragonfly"  # settings.toml over the overlay
    assert cache.redis.url == "redis://base:6379/0"  # base survives the deep merge
    assert cache.redis.max_connections == 40
    assert cache.redis.socket_timeout_seconds == 0.1  # env var over files
    assert settings.circuit_breakers.default_config.failure_threshold == 4
    assert settings.circuit_breakers.default_config.success_threshold == 4  # overrides


def test_other_environment_skips_the_overlay(root: Path) -> None:
    assert settings_for(root, env="development").cache.key_prefix == "base"


def test_env_var_beats_settings_toml_and_overrides_beat_env(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHE__BACKEND", "memory")
    assert settings_for(root).cache.backend == "memory"
    overrides = {"common": {"cache": {"backend": "noop"}}}
    assert settings_for(root, overrides=overrides).cache.backend == "noop"


def test_sources_name_the_layer_of_each_value(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHE__KEY_PREFIX", "from-env")
    loaded = load_settings("production", {"common": {"cache": {"enabled": False}}}, root=root)
    assert loaded.sources["common.cache.backend"].endswith("settings.toml")
    assert loaded.sources["common.cache.redis.max_connections"].endswith(
        "environments/production/cache.toml"
    )
    assert loaded.sources["common.cache.redis.url"].endswith("base/cache.toml")
    assert loaded.sources["common.cache.key_prefix"] == "environment"
    assert loaded.sources["common.cache.enabled"] == "overrides"


def test_tasker_env_selects_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_ENV", "production")
    loaded = load_settings(root=root)
    assert loaded.env == "production"
    assert loaded.data["common"]["cache"]["key_prefix"] == "prod"


def test_unknown_environment_is_an_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From the argument: named as such, listing the folders that exist.
    with pytest.raises(
        ConfigurationError,
        match=r"env = 'staging' .*environments \(production\), or one of test, development",
    ):
        load_settings("staging", root=root)
    monkeypatch.setenv("TASKER_ENV", "prodution")
    with pytest.raises(
        ConfigurationError, match=r"TASKER_ENV = 'prodution' .*did you mean 'production'"
    ):
        load_settings(root=root)


def test_missing_breaker_section_means_documented_defaults() -> None:
    breakers = parse({"cache": {"backend": "memory"}}).circuit_breakers
    assert breakers.enabled is True
    assert breakers.for_component("cache").failure_threshold == 5
    assert breakers.for_component("pgmq").timeout_seconds == 30
    task = breakers.for_component("task_readiness")
    assert (task.failure_threshold, task.timeout_seconds, task.success_threshold) == (10, 60, 3)
    assert breakers.for_component("anything-else") == breakers.default_config


def test_unlisted_component_inherits_default_config() -> None:
    breakers = parse(
        {"circuit_breakers": {"default_config": {"failure_threshold": 9}}}
    ).circuit_breakers
    assert breakers.for_component("payments").failure_threshold == 9
    assert breakers.for_component("cache").failure_threshold == 5  # documented component


def test_repository_settings_are_valid() -> None:
    for env in ("test", "development", "production"):
        settings = settings_for(REPO_ROOT, env=env)
        assert settings.env == env
    assert settings_for(REPO_ROOT, env="test").cache.backend == "memory"


@pytest.mark.parametrize(
    ("table", "key", "value", "allowed"),
    [
        ("default_config", "failure_threshold", 0, "from 1 to 100"),
        ("default_config", "failure_threshold", 101, "from 1 to 100"),
        ("default_config", "failure_threshold", 2.5, "whole number"),
        ("default_config", "success_threshold", 51, "from 1 to 50"),
        ("default_config", "timeout_seconds", 0, "greater than 0 and at most 300"),
        ("default_config", "timeout_seconds", -1, "greater than 0 and at most 300"),
        ("default_config", "timeout_seconds", 301, "greater than 0 and at most 300"),
        ("default_config", "timeout_seconds", "soon", "a number"),
        ("default_config", "failure_threshold", "five", "a number"),
        ("default_config", "failure_threshold", True, "not a boolean"),
        ("component_configs.cache", "success_threshold", 0, "from 1 to 50"),
    ],
)
def test_breaker_values_out_of_range(table: str, key: str, value: Any, allowed: str) -> None:
    section: dict[str, Any] = {key: value}
    for part in reversed(table.split(".")):
        section = {part: section}
    with pytest.raises(ConfigurationError) as info:
        parse({"circuit_breakers": section})
    error = info.value
    assert error.key == f"common.circuit_breakers.{table}.{key}"
    if isinstance(value, str):
        # What does not read as a number is never echoed: it may be a misplaced secret.
        assert value not in str(error)
        assert "not shown" in str(error)
    else:
        assert error.value == value
    assert allowed in str(error)
    assert f"common.circuit_breakers.{table}.{key}" in str(error)


def test_numeric_strings_are_accepted() -> None:
    config = parse({"circuit_breakers": {"default_config": {"failure_threshold": "7"}}})
    assert config.circuit_breakers.default_config.failure_threshold == 7


def test_unknown_backend_lists_known_names_and_suggests() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse({"cache": {"backend": "dragonfy"}})
    message = str(info.value)
    assert "common.cache.backend = 'dragonfy'" in message
    assert "did you mean 'dragonfly'?" in message
    for name in ("dragonfly", "memory", "noop", "redis"):
        assert name in message


def test_misspelt_key_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigurationError, match=r"failure_treshold.*did you mean 'failure_threshold'"
    ):
        parse({"circuit_breakers": {"default_config": {"failure_treshold": 3}}})


def test_password_never_appears_in_url_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse({"cache": {"redis": {"url": "redsi://:hunter2@cache:6379/0"}}})
    message = str(info.value)
    assert "hunter2" not in message
    assert "redsi://:***@cache:6379/0" in message
    assert "did you mean 'redis'?" in message
    assert "hunter2" not in repr(info.value.value)


def test_password_is_redacted_from_config_repr() -> None:
    redis = parse({"cache": {"redis": {"url": "rediss://user:hunter2@cache:6380/2"}}}).cache.redis
    assert redis.url == "rediss://user:hunter2@cache:6380/2"
    assert "hunter2" not in repr(redis)
    assert redis.redacted_url == "rediss://user:***@cache:6380/2"


@pytest.mark.parametrize(
    ("common", "key"),
    [
        ({"cache": {"enabled": "maybe"}}, "common.cache.enabled"),
        ({"cache": {"serializer": "yaml"}}, "common.cache.serializer"),
        ({"cache": {"key_prefix": ""}}, "common.cache.key_prefix"),
        ({"cache": {"default_ttl_seconds": 0}}, "common.cache.default_ttl_seconds"),
        ({"cache": {"memory": {"max_capacity": 0}}}, "common.cache.memory.max_capacity"),
        ({"cache": {"redis": {"max_connections": 0}}}, "common.cache.redis.max_connections"),
        (
            {"cache": {"redis": {"socket_timeout_seconds": "fast"}}},
            "common.cache.redis.socket_timeout_seconds",
        ),
        ({"cache": "redis"}, "common.cache"),
    ],
)
def test_cache_values_are_validated(common: Mapping[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(common)
    assert info.value.key == key

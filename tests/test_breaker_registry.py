"""Registry, process-wide access, redaction and the public testing aid."""

from __future__ import annotations

import pytest

import tasker_resilience as tr
from tasker_resilience import BreakerRegistry
from tasker_resilience._config.redact import redact_url
from tasker_resilience._config.schema import BreakerConfig, BreakersConfig
from tasker_resilience.testing import ManualClock, configure_for_tests, reset


def test_registry_returns_the_same_breaker_per_name() -> None:
    registry = BreakerRegistry(BreakersConfig())
    assert registry.get("pgmq") is registry.get("pgmq")
    assert registry.get("pgmq") is not registry.get("cache")
    assert registry.names() == ["cache", "pgmq"]
    assert set(registry.snapshot()) == {"cache", "pgmq"}


def test_registry_configures_from_component_or_default() -> None:
    config = BreakersConfig(
        default_config=BreakerConfig(7, 11, 3),
        component_configs={"pgmq": BreakerConfig(2, 5, 1)},
    )
    registry = BreakerRegistry(config)
    assert registry.get("pgmq").config == BreakerConfig(2, 5, 1)
    assert registry.get("other", create=True).config == BreakerConfig(7, 11, 3)


def test_registry_rejects_empty_names() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        BreakerRegistry(BreakersConfig()).get("  ")


def test_configured_components_exist_before_first_use(clock: ManualClock) -> None:
    res = configure_for_tests(clock=clock)
    assert {"cache", "pgmq", "task_readiness"} <= set(res.breakers.names())
    assert res.breakers.get("task_readiness").config.failure_threshold == 3  # test overrides


def test_get_breaker_uses_the_process_wide_resilience(clock: ManualClock) -> None:
    res = configure_for_tests(clock=clock)
    assert tr.get_breaker("pgmq") is res.breakers.get("pgmq")
    assert tr.current() is res


def test_reset_drops_process_wide_state(clock: ManualClock) -> None:
    first = configure_for_tests(clock=clock)
    reset()
    assert tr.current() is not first  # configured afresh from the layered files


def test_configure_install_false_leaves_the_current_one(clock: ManualClock) -> None:
    installed = configure_for_tests(clock=clock)
    private = tr.configure(env="test", install=False)
    assert tr.current() is installed
    assert private is not installed


def test_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(start=5)
    clock.advance(2.5)
    assert clock() == 7.5
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:s3cret@cache:6380/1", "rediss://user:***@cache:6380/1"),
        ("redis://token@cache:6379", "redis://***@cache:6379"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)

"""Named caches (``[common.caches.<name>]``): settings, a breaker each, lookup errors,
health, metrics, and reconfiguration; and breakers nobody declared."""

from __future__ import annotations

import json
from typing import Any

import pytest

import tasker_resilience as tr
from tasker_resilience._config.schema import CacheConfig, Settings, parse_settings
from tasker_resilience.testing import configure_for_tests

DEAD_URL = "redis://127.0.0.1:1/0"
"""Nothing listens on port 1: a cache there starts with its circuit open."""

KNOWN = ("redis", "dragonfly", "memory", "noop")


def _parse(common: dict[str, Any]) -> Settings:
    return parse_settings({"common": common}, env="test", known_backends=KNOWN)


def _caches(**caches: dict[str, Any]) -> dict[str, Any]:
    return {"common": {"caches": caches}}


# --- settings --------------------------------------------------------------------------------


def test_a_named_cache_takes_the_built_in_defaults_not_the_default_caches() -> None:
    settings = _parse(
        {
            "cache": {"key_prefix": "app", "redis": {"url": "redis://main:6379/0"}},
            "caches": {"sessions": {"redis": {"url": "redis://sessions:6379/0"}}},
        }
    )
    assert list(settings.caches) == ["default", "sessions"]
    assert settings.caches["default"] is settings.cache
    sessions = settings.caches["sessions"]
    assert sessions.redis.url == "redis://sessions:6379/0"
    assert sessions.key_prefix == "tasker-sessions"  # its own, never the default's
    assert sessions.default_ttl_seconds == CacheConfig().default_ttl_seconds
    assert sessions.health_probe_interval_seconds == 5.0


def test_settings_built_by_hand_always_hold_the_default_cache() -> None:
    default = CacheConfig(backend="memory")
    settings = Settings(cache=default, caches={"sessions": CacheConfig(key_prefix="s")})
    assert settings.caches["default"] is default
    assert list(settings.caches) == ["default", "sessions"]


@pytest.mark.parametrize(
    ("caches", "message"),
    [
        ({"default": {}}, r"common\.caches\.default = \[table\].*is \[common\.cache\]"),
        ({"se-ssions": {}}, r"common\.caches\.se-ssions .*lower-case letters, digits"),
        (
            {"sessions": {"plugins": ["m"]}},
            r"caches\.sessions\.plugins .*only in \[common\.cache\]",
        ),
        ({"sessions": {"backend": "redsi"}}, r"caches\.sessions\.backend .*did you mean 'redis'"),
        ({"sessions": {"redis": {"url": "nope"}}}, r"common\.caches\.sessions\.redis\.url"),
        ({"sessions": {"near": {"tracking": "x"}}}, r"common\.caches\.sessions\.near\.tracking"),
        ({"sessions": {"ttl": 5}}, r"common\.caches\.sessions\.ttl .*unknown key"),
        ({"sessions": "redis://x"}, r"common\.caches\.sessions .*a table"),
    ],
)
def test_a_bad_named_cache_names_its_own_key(caches: dict[str, Any], message: str) -> None:
    with pytest.raises(tr.ConfigurationError, match=message):
        _parse({"caches": caches})


@pytest.mark.parametrize("prefix", ["tasker", "tasker:sessions"])
def test_two_caches_whose_keys_would_mix_are_refused(prefix: str) -> None:
    with pytest.raises(tr.ConfigurationError, match=r"key_prefix = '.*apart from cache 'def"):
        _parse({"caches": {"sessions": {"key_prefix": prefix}}})
    # On another server, or another database, the same prefix is fine.
    other = {"key_prefix": prefix, "redis": {"url": "redis://localhost:6379/1"}}
    assert _parse({"caches": {"sessions": other}}).caches["sessions"].key_prefix == prefix


@pytest.mark.parametrize("value", [0, -1, 301, "soon"])
def test_the_health_probe_interval_is_validated(value: object) -> None:
    with pytest.raises(tr.ConfigurationError, match=r"health_probe_interval_seconds"):
        _parse({"cache": {"health_probe_interval_seconds": value}})


def test_a_named_cache_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKER_COMMON__CACHES__SESSIONS__BACKEND", "memory")
    monkeypatch.setenv(
        "TASKER_COMMON__CIRCUIT_BREAKERS__COMPONENT_CONFIGS__CACHE_SESSIONS__TIMEOUT_SECONDS", "7"
    )
    res = tr.configure(env="test")
    assert res.get_cache("sessions").backend_name == "memory"
    assert res.breakers.config_of("cache_sessions").timeout_seconds == 7


# --- a cache, and a breaker, each ------------------------------------------------------------


def test_each_named_cache_has_its_own_provider_breaker_and_replay() -> None:
    res = configure_for_tests(
        {
            "common": {
                "caches": {
                    "sessions": {"redis": {"url": DEAD_URL}},
                    "pages": {"backend": "memory"},
                },
                "circuit_breakers": {
                    "component_configs": {"cache_sessions": {"timeout_seconds": 9}}
                },
            }
        }
    )
    sessions, pages = res.get_cache("sessions"), tr.get_cache("pages")
    assert tr.get_cache() is res.cache is res.get_cache("default")
    assert len({id(res.cache), id(sessions), id(pages)}) == 3
    assert sessions.breaker is res.breakers.get("cache_sessions")
    assert sessions.breaker.config.timeout_seconds == 9  # its own entry
    assert pages.breaker is None  # in-process: nothing to guard
    # The start-up check failed for sessions only.
    assert sessions.circuit_state == "open"
    assert res.breakers.get("cache").state == "closed"
    sessions.delete("k")  # skipped while open: remembered, for sessions only
    assert sessions.pending_invalidations()["pending"] == 1
    assert res.cache.pending_invalidations()["pending"] == 0
    assert res.cache_names() == ["default", "pages", "sessions"]


def test_a_cache_breaker_without_an_entry_takes_the_cache_entry() -> None:
    res = configure_for_tests(
        {
            "common": {
                "caches": {"sessions": {"redis": {"url": DEAD_URL}}},
                "circuit_breakers": {
                    "default_config": {"failure_threshold": 9},
                    "component_configs": {"cache": {"failure_threshold": 2, "critical": True}},
                },
            }
        }
    )
    config = res.get_cache("sessions").breaker.config  # type: ignore[union-attr]
    assert (config.failure_threshold, config.critical) == (2, True)


def test_cached_uses_the_named_cache() -> None:
    res = configure_for_tests(_caches(pages={"backend": "memory"}))
    calls: list[int] = []

    @tr.cached(ttl=60, cache="pages")
    def page(number: int) -> str:
        calls.append(number)
        return f"page {number}"

    assert page(1) == page(1) == "page 1"
    assert calls == [1]
    assert res.get_cache("pages").stats()["get"]["hit"] == 1
    assert res.cache.stats()["get"].get("hit", 0) == 0
    assert page.cache_key(1).startswith("tasker-pages:")
    page.invalidate(1)
    assert page(1) == "page 1"
    assert calls == [1, 1]


@pytest.mark.parametrize(
    "origin",
    [{"lock": True}, {"early_refresh": True}, {"stale_if_error": 30}],
    ids=["lock", "early_refresh", "stale_if_error"],
)
def test_cached_with_origin_options_uses_the_named_cache(origin: dict[str, Any]) -> None:
    res = configure_for_tests(_caches(pages={"backend": "memory"}))
    calls: list[int] = []

    @tr.cached(ttl=60, cache="pages", **origin)
    def page(number: int) -> str:
        calls.append(number)
        return f"page {number}"

    assert page(2) == page(2) == "page 2"
    assert calls == [2]
    assert res.get_cache("pages").stats()["get"]["hit"] >= 1
    assert res.cache.stats()["get"].get("hit", 0) == 0


def test_an_unknown_cache_name_raises_with_did_you_mean() -> None:
    res = configure_for_tests(_caches(sessions={"backend": "memory"}))
    with pytest.raises(tr.ConfigurationError, match=r"did you mean 'sessions'.*default, sessions"):
        res.get_cache("sesions")
    with pytest.raises(tr.ConfigurationError, match=r"did you mean 'sessions'"):
        tr.get_cache("sesions")
    # Configured: the decorator refuses at once.
    with pytest.raises(tr.ConfigurationError, match=r"did you mean 'sessions'"):
        tr.cached(cache="sesions")
    with pytest.raises(tr.ConfigurationError, match=r"lower-case letters"):
        tr.cached(cache="Sessions!")


def test_before_configure_an_unknown_cache_name_raises_at_the_first_call() -> None:
    @tr.cached(cache="sesions")
    def page() -> str:
        return "p"

    configure_for_tests(_caches(sessions={"backend": "memory"}))
    with pytest.raises(tr.ConfigurationError, match=r"did you mean 'sessions'"):
        page()


def test_reconfiguring_hands_each_caches_pending_invalidations_to_its_successor() -> None:
    overrides = _caches(sessions={"redis": {"url": DEAD_URL}})
    first = configure_for_tests(overrides)
    first.get_cache("sessions").delete_pattern("user:*")
    first.get_cache("sessions").delete("k")
    second = configure_for_tests(overrides)
    assert second.get_cache("sessions").pending_invalidations()["pending"] == 2
    assert second.cache.pending_invalidations()["pending"] == 0


# --- health and metrics ----------------------------------------------------------------------


def test_health_lists_every_cache_and_keeps_the_default_block() -> None:
    res = configure_for_tests(
        _caches(
            sessions={"redis": {"url": "redis://:s3cret@127.0.0.1:1/0"}},
            pages={"backend": "memory"},
        )
    )
    report = res.health()
    assert report["cache"] == report["caches"]["default"]
    assert list(report["caches"]) == ["default", "pages", "sessions"]
    sessions = report["caches"]["sessions"]
    assert sessions["breaker"] == "cache_sessions"
    assert (sessions["healthy"], sessions["circuit_state"]) == (False, "open")
    assert report["status"] == "degraded"
    assert "s3cret" not in json.dumps(report)


def test_metrics_carry_a_cache_label() -> None:
    pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")
    from tasker_resilience._operations.metrics import private_registry

    res = configure_for_tests(_caches(pages={"backend": "memory"}))
    res.get_cache("pages").get("absent")
    registry = private_registry(res)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"tasker_resilience_{name}", labels)

    assert sample("cache_operations_total", cache="pages", operation="get", outcome="miss") == 1
    assert sample("cache_operations_total", cache="default", operation="get", outcome="miss") == 0
    info = {"backend": "memory", "enabled": "true", "distributed": "false", "breaker": ""}
    assert sample("cache_info", cache="pages", **info) == 1
    assert sample("cache_info", cache="default", **info) == 1


# --- breakers nobody declared ----------------------------------------------------------------


def test_get_breaker_of_an_undeclared_name_is_an_error_with_did_you_mean() -> None:
    @tr.breaker_guarded("inventory", fallback=None)
    def reserve() -> None: ...

    res = configure_for_tests()
    with pytest.raises(
        tr.ConfigurationError, match=r"breaker = 'inventroy'.*did you mean 'inventory'"
    ):
        tr.get_breaker("inventroy")
    with pytest.raises(tr.ConfigurationError, match=r"create=True"):
        res.breakers.get("inventroy")
    assert "inventroy" not in res.health()["circuit_breakers"]  # no phantom
    assert tr.get_breaker("inventory") is reserve.breaker.get()  # type: ignore[attr-defined]
    for name in ("pgmq", "task_readiness", "cache"):
        assert tr.get_breaker(name).name == name
    made = tr.get_breaker("payments", create=True)
    assert tr.get_breaker("payments") is made


def test_a_configured_breaker_and_a_named_caches_breaker_are_known() -> None:
    res = configure_for_tests(
        {
            "common": {
                "caches": {"sessions": {"backend": "memory"}},
                "circuit_breakers": {"component_configs": {"search": {"critical": True}}},
            }
        }
    )
    assert res.breakers.get("search").config.critical is True
    # In-process cache: no breaker is made, but its name is not a typo.
    assert res.breakers.get("cache_sessions").name == "cache_sessions"

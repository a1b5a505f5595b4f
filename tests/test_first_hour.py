"""What a new user tries in the first hour (issue 26): the forms people reach for first
work, and the errors point at the fix."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

import tasker_resilience as tr
from tasker_resilience.testing import Harness, configure_for_tests

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@pytest.fixture
def fake() -> Harness:
    return configure_for_tests(backend="fakeredis")


# --- @cached without parentheses ---------------------------------------------------------------


@tr.cached  # decorated at import time, as people write it
def square(n: int) -> int:
    CALLS["square"] += 1
    return n * n


@tr.cached
async def asquare(n: int) -> int:
    CALLS["asquare"] += 1
    return n * n


class Prices:
    def __init__(self, currency: str) -> None:
        self.currency = currency

    def __cache_key__(self) -> str:
        return self.currency

    @tr.cached
    def price(self, sku: str) -> str:
        CALLS["price"] += 1
        return f"{sku}:{self.currency}"


def _ttl_of(harness: Harness, key: str) -> int:
    return int(harness.redis_client().ttl(key))


def test_bare_cached_caches_with_the_default_ttl(fake: Harness) -> None:
    assert [square(3), square(3)] == [9, 9]
    assert CALLS["square"] == 1
    assert square.original(3) == 9
    key = square.cache_key(3)
    assert key.startswith(f"{fake.cache.key_prefix}:default:")
    assert 0 < _ttl_of(fake, key) <= fake.cache.default_ttl_seconds
    assert _ttl_of(fake, key) > fake.cache.default_ttl_seconds - 60


async def test_bare_cached_on_an_async_function(fake: Harness) -> None:
    assert [await asquare(4), await asquare(4)] == [16, 16]
    assert CALLS["asquare"] == 1


def test_bare_cached_on_a_method(fake: Harness) -> None:
    eur, usd = Prices("EUR"), Prices("USD")
    assert [eur.price("a"), eur.price("a"), usd.price("a")] == ["a:EUR", "a:EUR", "a:USD"]
    assert CALLS["price"] == 2  # self is part of the key (its __cache_key__)
    Prices.price.invalidate(eur, "a")
    assert eur.price("a") == "a:EUR"
    assert CALLS["price"] == 3


# --- TTLs as timedelta -------------------------------------------------------------------------


def test_cached_ttl_takes_a_timedelta(fake: Harness) -> None:
    @tr.cached(ttl=timedelta(minutes=5))
    def hello(name: str) -> str:
        return f"hello {name}"

    hello("ann")
    assert 290 <= _ttl_of(fake, hello.cache_key("ann")) <= 300


async def test_set_and_aset_take_a_timedelta(fake: Harness) -> None:
    fake.cache.set("a", 1, ttl=timedelta(seconds=90))
    await fake.cache.aset("b", 2, ttl=timedelta(hours=1))
    assert 85 <= _ttl_of(fake, fake.cache.full_key("a")) <= 90
    assert 3590 <= _ttl_of(fake, fake.cache.full_key("b")) <= 3600


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_a_timedelta_ttl_is_checked_like_seconds(fake: Harness, ttl: timedelta) -> None:
    with pytest.raises(ValueError, match=r"greater than 0 .* not datetime\.timedelta"):
        fake.cache.set("a", 1, ttl=ttl)
    with pytest.raises(ValueError, match="@cached ttl must be"):
        tr.cached(ttl=ttl)


def test_a_wrong_ttl_type_says_what_is_accepted(fake: Harness) -> None:
    with pytest.raises(TypeError, match="a number of seconds or a timedelta, not '60'"):
        fake.cache.set("a", 1, ttl="60")  # type: ignore[arg-type]


# --- get(key, default=...) ---------------------------------------------------------------------


async def test_get_default_is_returned_on_a_miss_only(fake: Harness) -> None:
    cache = fake.cache
    assert cache.get("absent", default="d") == "d"
    assert await cache.aget("absent", default="d") == "d"
    assert cache.get("absent") is None
    cache.set("none", None)  # a stored None is a value, as with dict.get
    assert cache.get("none", default="d") is None
    assert await cache.aget("none", default="d") is None
    cache.set("zero", 0)
    assert cache.get("zero", default="d") == 0


async def test_get_default_while_the_cache_is_down_or_open(fake: Harness) -> None:
    fake.cache.set("k", "v")
    with fake.outage():
        assert fake.cache.get("k", default="d") == "d"  # a failing backend: a miss
        fake.breakers.get("cache").force_open()
        assert fake.cache.get("k", default="d") == "d"  # the open circuit: a miss
        assert await fake.cache.aget("k", default="d") == "d"


def test_get_default_on_the_memory_backend() -> None:
    cache = configure_for_tests().cache
    assert cache.get("absent", default=[]) == []
    cache.set("k", None)
    assert cache.get("k", default=[]) is None


# --- errors that point at the fix --------------------------------------------------------------


def _configuration_error(common: dict[str, object], **env: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(tr.ConfigurationError) as info:
            tr.configure(env="test", overrides={"common": common}, install=False)
    return str(info.value)


def test_an_unknown_backend_names_every_way_to_register_one() -> None:
    from tasker_resilience._cache.backends.contract import ENTRY_POINT_GROUP, backend_factory

    message = _configuration_error({"cache": {"backend": "mine"}})
    with pytest.raises(LookupError) as info:
        backend_factory("mine")
    for text in (message, str(info.value)):
        assert "tr.register_backend(name, factory)" in text
        assert "common.cache.plugins" in text
        assert "--import MODULE" in text
        assert f"entry point in the group {ENTRY_POINT_GROUP}" in text


@pytest.mark.parametrize(
    ("common", "suggestion"),
    [
        ({"cache": {"near": {"ttl": 5}}}, "(did you mean 'ttl_seconds'?)"),  # a prefix
        ({"cache": {"ttl": 5}}, "(did you mean 'default_ttl_seconds'?)"),  # a part
        ({"cache": {"prefix": "x"}}, "(did you mean 'key_prefix'?)"),
        ({"cache": {"memory": {"max": 5}}}, "(did you mean 'max_capacity'?)"),
        ({"cache": {"redis": {"ulr": "redis://h/0"}}}, "(did you mean 'url'?)"),  # a swap
        ({"cache": {"max_pending_invalidation": 5}}, "(did you mean 'max_pending_invalidations'?)"),
        (
            {"circuit_breakers": {"default_config": {"failure_treshold": 5}}},
            "(did you mean 'failure_threshold'?)",
        ),
        (
            {"circuit_breakers": {"default_config": {"timeout": 5}}},
            "(did you mean 'timeout_seconds', 'max_timeout_seconds' or 'probe_timeout_seconds'?)",
        ),
    ],
)
def test_did_you_mean_for_near_spellings_prefixes_and_parts(
    common: dict[str, object], suggestion: str
) -> None:
    assert suggestion in _configuration_error(common)


def test_no_suggestion_for_a_word_unlike_any_key() -> None:
    message = _configuration_error({"cache": {"redis": {"hostname": "x"}}})
    assert "did you mean" not in message
    assert "known keys: connect_timeout_seconds, max_connections" in message


def test_suggestions_keep_only_the_nearest_spelling() -> None:
    from tasker_resilience._config.suggest import did_you_mean, suggestions

    assert suggestions("redsi", ["redis", "rediss", "unix"]) == ["redis"]
    assert suggestions("ttl", ["ttl_seconds", "url", "enabled"]) == ["ttl_seconds"]
    assert suggestions("", ["a"]) == []
    assert did_you_mean("zzz", ["redis"]) == ""
    assert did_you_mean("a_b", ["a_bc", "a_bd"]) == " (did you mean 'a_bc' or 'a_bd'?)"


def test_a_numeric_key_prefix_from_the_environment_is_a_string() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKER_COMMON__CACHE__KEY_PREFIX", "123")
        res = tr.configure(env="test", install=False)
    assert res.settings.cache.key_prefix == "123"
    assert res.cache.full_key("k") == "123:k"


@pytest.mark.parametrize(("value", "quoted"), [("1.5", "'\"1.5\"'"), ("true", "'\"true\"'")])
def test_a_value_that_is_not_plainly_text_says_how_to_quote_it(value: str, quoted: str) -> None:
    message = _configuration_error({}, TASKER_COMMON__CACHE__KEY_PREFIX=value)
    assert "common.cache.key_prefix" in message
    assert f"e.g. TASKER_COMMON__CACHE__KEY_PREFIX={quoted}" in message
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKER_COMMON__CACHE__KEY_PREFIX", f'"{value}"')  # the advice works
        assert tr.configure(env="test", install=False).settings.cache.key_prefix == value


def test_only_string_keys_take_numbers_as_text() -> None:
    # A number where a boolean goes is still an error, not the text "1".
    message = _configuration_error({}, TASKER_COMMON__CACHE__ENABLED="1")
    assert "common.cache.enabled = 1 is not valid: true or false" in message


# --- what people see first ---------------------------------------------------------------------


def test_dir_of_the_testing_package_lists_the_lazy_names() -> None:
    import subprocess
    import sys

    from tasker_resilience import testing

    names = dir(testing)
    assert set(testing.__all__) <= set(names)
    assert "BackendConformance" in names
    assert names == sorted(names)
    # Listing it does not import it (the suite needs pytest; the harness does not).
    script = (
        "import sys, tasker_resilience.testing as t; "
        "assert 'BackendConformance' in dir(t); "
        "assert 'tasker_resilience.testing.backend_suite' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# --- the command line --------------------------------------------------------------------------


def test_an_unknown_flag_is_named_before_a_missing_command() -> None:
    from .test_cli import one_line, run_cli

    result = run_cli("--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in one_line(result.stderr)
    result = run_cli()
    assert result.returncode == 2
    assert "a COMMAND is required: one of drill, health" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("redis://host:99999", "Port out of range"),
        ("redis://:s3cret@host:0/0", "a port from 1 to 65535"),
        ("redis://:s3cret@host:6379/99", "a database number from 0 to 15"),
        ("redis://", "a URL with a host"),
    ],
)
def test_drill_url_that_cannot_be_a_server_is_a_bad_argument(url: str, allowed: str) -> None:
    from .test_cli import one_line, run_cli

    result = run_cli("drill", "--url", url, "--duration", "1", timeout=30)
    assert result.returncode == 2, result.stderr  # the guide: bad arguments exit 2
    line = one_line(result.stderr)
    assert "--url" in line
    assert allowed in line
    assert "s3cret" not in line


def test_health_says_which_server_it_checks_and_why(tmp_path: Path) -> None:
    from .test_cli import run_cli

    # No settings at all (an empty root): the built-in default URL, said so.
    result = run_cli("health", TASKER_CONFIG_ROOT=str(tmp_path), TASKER_ENV="production")
    first = result.stderr.splitlines()[0]
    assert first.startswith("tasker-resilience health: checking the redis cache at ")
    assert "redis://localhost:6379/0" in first
    assert "common.cache.redis.url from the built-in default" in first
    assert "TASKER_COMMON__CACHE__REDIS__URL" in first
    # Set by a variable: named, password masked.
    result = run_cli(
        "health",
        TASKER_COMMON__CACHE__BACKEND="dragonfly",
        TASKER_COMMON__CACHE__REDIS__URL="redis://:s3cret@127.0.0.1:1/0",
    )
    first = result.stderr.splitlines()[0]
    assert "checking the dragonfly cache at redis://:***@127.0.0.1:1/0" in first
    assert "from environment (TASKER_COMMON__CACHE__REDIS__URL)" in first
    assert "s3cret" not in result.stderr + result.stdout
    # An in-process cache has no server to name: nothing is added.
    assert run_cli("health").stderr == ""


# --- the docs and the type checks ----------------------------------------------------------------


def test_make_lint_type_checks_the_typing_tests() -> None:
    # `make lint` runs bare `mypy`: the files it checks are pyproject's [tool.mypy] files.
    from .conftest import REPO_ROOT

    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    files = re.search(r"(?m)^\[tool\.mypy\][^[]*?^files = (\[.*\])$", pyproject)
    assert files is not None
    assert '"tests/typecheck"' in files.group(1)
    checks = sorted(path.name for path in (REPO_ROOT / "tests" / "typecheck").glob("check_*.py"))
    assert checks == ["check_cached_types.py", "check_guard_types.py"]


def test_the_docs_show_the_forms_people_try_first() -> None:
    from .conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    guide = (REPO_ROOT / "docs" / "guides" / "caching.md").read_text(encoding="utf-8")
    for text in (readme, guide):
        assert re.search(r"(?m)^@tr\.cached(  #.*)?$", text)  # bare, like functools.cache
        assert re.search(r"(?m)^@tr\.breaker_guarded\(\"\w+\", fallback=None\)", text)
        assert re.search(r"(?i)by default every `Exception`", text)
        assert "int | None" in text
        assert "timedelta" in text
    assert "default=..." in guide
    assert "default=None" in readme

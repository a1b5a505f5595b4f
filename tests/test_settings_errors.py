"""Settings mistakes that used to pass without a word: each now names what to write."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import tasker_resilience as tr
from tasker_resilience._config.layers import load_settings


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty settings root, and no TASKER_ variable from the caller but TASKER_ENV."""
    for name in list(__import__("os").environ):
        if name.startswith("TASKER_") and name != "TASKER_ENV":
            monkeypatch.delenv(name)
    return tmp_path


def test_a_toml_syntax_error_names_the_file_the_line_and_the_column(root: Path) -> None:
    broken = root / "config/tasker/base/breakers.toml"
    broken.parent.mkdir(parents=True)
    broken.write_text("[common.circuit_breakers]\nenabled = true\nfailure_threshold 5\n")
    with pytest.raises(tr.ConfigurationError) as caught:
        tr.configure(root=root)
    assert str(caught.value) == (
        f"{broken}: line 3, column 19: not valid TOML: Expected '=' after a key in a key/value pair"
    )
    assert caught.value.key == str(broken)


def test_a_file_that_is_not_utf8_is_named(root: Path) -> None:
    (root / "settings.toml").write_bytes(b'[common.cache]\nkey_prefix = "caf\xe9"\n')
    with pytest.raises(tr.ConfigurationError, match=r"settings\.toml: not UTF-8 text \(byte 32\)"):
        tr.configure(root=root)


def test_an_environment_with_a_folder_is_valid(root: Path) -> None:
    overlay = root / "config/tasker/environments/staging/cache.toml"
    overlay.parent.mkdir(parents=True)
    overlay.write_text('[common.cache]\nkey_prefix = "staged"\n')
    assert load_settings("staging", root=root).data["common"]["cache"]["key_prefix"] == "staged"
    assert load_settings("Staging", root=root).env == "staging"
    # The built-in names stay valid without a folder (an empty root prints the defaults).
    assert load_settings("production", root=root).env == "production"
    with pytest.raises(tr.ConfigurationError, match=r"environments \(staging\).*'staging'\?"):
        load_settings("stagin", root=root)
    with pytest.raises(tr.ConfigurationError, match=r"env = '\.\./x'"):
        load_settings("../x", root=root)  # only a folder's own name is an environment


def test_a_root_that_does_not_exist_is_an_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = root / "nowhere"
    with pytest.raises(tr.ConfigurationError, match=r"root = '.*nowhere' .*\(it does not exist\)"):
        tr.configure(root=missing)
    monkeypatch.setenv("TASKER_CONFIG_ROOT", str(root / "settings.toml"))
    (root / "settings.toml").write_text("")
    with pytest.raises(tr.ConfigurationError, match=r"TASKER_CONFIG_ROOT = .*\(it is a file\)"):
        tr.configure()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TASKER_CACHE__BACKEND",
            "memory",
            "TASKER_CACHE__BACKEND is not read by tasker-resilience; did you mean "
            "TASKER_COMMON__CACHE__BACKEND? Every level is joined by two underscores, "
            "starting at COMMON",
        ),
        (
            "TASKER_COMMON_CACHE_BACKEND",
            "memory",
            "TASKER_COMMON_CACHE_BACKEND is not read by tasker-resilience; did you mean "
            "TASKER_COMMON__CACHE__BACKEND?",
        ),
        (
            "TASKER_COMMON__CACHE__DEFAULT_TTL_SECONDS_",  # trailing: still under common
            "5",
            "did you mean TASKER_COMMON__CACHE__DEFAULT_TTL_SECONDS?",
        ),
        (
            "TASKER_COMMON_CIRCUIT_BREAKERS_COMPONENT_CONFIGS_CACHE_SESSIONS_TIMEOUT_SECONDS",
            "5",
            "did you mean TASKER_COMMON__CIRCUIT_BREAKERS__COMPONENT_CONFIGS__CACHE_SESSIONS"
            "__TIMEOUT_SECONDS?",
        ),
        (
            "TASKER_COMMON__CACHE",
            '{backend = "memory", redis = {url = "redis://:hunter2@cache:6379/0"}}',
            "TASKER_COMMON__CACHE holds an inline table, which is not read as settings; set "
            "one variable per key, levels joined by two underscores: "
            "TASKER_COMMON__CACHE__BACKEND=..., TASKER_COMMON__CACHE__REDIS__URL=...",
        ),
        (
            "TASKER_COMMON__CACHE__NEAR",
            '{"enabled": true}',  # JSON, not TOML: text that looks like a table
            "TASKER_COMMON__CACHE__NEAR holds an inline table",
        ),
    ],
)
def test_a_variable_the_library_would_not_read_is_refused_with_the_spelling_that_works(
    root: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(tr.ConfigurationError) as caught:
        tr.configure(root=root)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_an_applications_own_variables_are_left_alone(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKER_MYAPP__DEBUG", "true")
    monkeypatch.setenv("TASKER_FEATURES", "{beta = true}")
    monkeypatch.setenv("TASKER_COMMON__CACHES__SESSIONS__BACKEND", "memory")
    res = tr.configure(root=root, install=False)
    assert res.get_cache("sessions").backend_name == "memory"
    res.close()


@pytest.mark.parametrize("table", ["cache", "caches", "circuit_breakers"])
def test_a_library_table_outside_common_in_a_file_warns_naming_the_file(
    root: Path, caplog: pytest.LogCaptureFixture, table: str
) -> None:
    settings = root / "settings.toml"
    settings.write_text(f"[{table}]\nbackend = 'memory'\n")
    with caplog.at_level(logging.WARNING, logger="tasker_resilience.config"):
        res = tr.configure(root=root, install=False)
    res.close()
    assert [record.getMessage() for record in caplog.records] == [
        f"[{table}] in {settings} is not read by tasker-resilience: its settings live under "
        f"[common], so write [common.{table}] (ignore this if the table is your "
        "application's own)"
    ]

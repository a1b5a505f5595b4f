"""Read the layered settings files. The only module that imports dynaconf.

Layers, later wins: ``config/tasker/base/*.toml`` -> ``config/tasker/environments/<env>/*.toml``
-> ``settings.toml`` -> ``TASKER_*`` environment variables (``__`` nests) -> ``overrides``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENVIRONMENTS",
    "ENV_VAR",
    "ROOT_VAR",
    "LoadedSettings",
    "deep_merge",
    "load_settings",
    "resolve_env",
]

ENV_VAR = "TASKER_ENV"
ROOT_VAR = "TASKER_CONFIG_ROOT"
ENVVAR_PREFIX = "TASKER"
ENVIRONMENTS = ("test", "development", "production")
DEFAULT_ENV = "development"

# Variables that steer loading itself; they are not settings.
_LOADER_VARIABLES = frozenset({"env", "config_root"})


@dataclass(frozen=True)
class LoadedSettings:
    """The merged raw settings and where they came from."""

    env: str
    root: Path
    files: tuple[Path, ...]
    data: Mapping[str, Any]
    sources: Mapping[str, str]
    """Dotted key -> the layer that set it last (file path, ``environment`` or ``overrides``)."""


def resolve_env(env: str | None) -> str:
    """``env`` if given, else ``$TASKER_ENV``, else ``development``."""
    chosen = (env or os.environ.get(ENV_VAR) or DEFAULT_ENV).strip().lower()
    if chosen not in ENVIRONMENTS:
        # Imported here: _errors has no dependencies, and this keeps the import graph flat.
        from tasker_resilience._errors import ConfigurationError

        raise ConfigurationError(ENV_VAR, chosen, f"one of {', '.join(ENVIRONMENTS)}")
    return chosen


def _lower_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``top`` over ``base``, tables merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _layer_files(root: Path, env: str) -> list[Path]:
    base = sorted((root / "config" / "tasker" / "base").glob("*.toml"))
    overlay = sorted((root / "config" / "tasker" / "environments" / env).glob("*.toml"))
    top = [root / "settings.toml"] if (root / "settings.toml").is_file() else []
    return [*base, *overlay, *top]


def _read(files: list[Path]) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged settings, and for each dotted key the layer that last changed it."""
    # Imported here, not at the top: dynaconf imports django.conf (and tries flask) on
    # import when they are installed, and ``import tasker_resilience`` must not import a
    # web framework. Only reading the settings pays for it.
    from dynaconf import Dynaconf
    from dynaconf.utils.inspect import get_history

    settings = Dynaconf(
        settings_files=[str(path) for path in files],
        envvar_prefix=ENVVAR_PREFIX,
        environments=False,
        merge_enabled=True,
        core_loaders=["TOML"],
        # No environment loader: TASKER_ variables are read by _environment(), which
        # never evaluates dynaconf's @format/@jinja tokens (a variable's text is data).
        loaders=[],
    )
    data: dict[str, Any] = _lower_keys(settings.as_dict())
    for name in _LOADER_VARIABLES:
        data.pop(name, None)
    # dynaconf records each loader's cumulative result; a key belongs to the first
    # layer whose result changed it.
    sources: dict[str, str] = {}
    previous: dict[str, Any] = {}
    for entry in get_history(settings):
        if entry.get("loader") != "toml":
            continue
        layer = str(entry["identifier"])
        # Entries usually hold the cumulative result; merge rather than replace.
        current = {**previous, **_flatten(_lower_keys(entry.get("value") or {}))}
        for key, value in current.items():
            if key not in previous or previous[key] != value:
                sources[key] = layer
        previous = current
    env_data, env_sources = _environment()
    data = deep_merge(data, env_data)
    sources.update(env_sources)
    for name in _LOADER_VARIABLES:
        data.pop(name, None)
        sources.pop(name, None)
    return data, sources


def _environment() -> tuple[dict[str, Any], dict[str, str]]:
    """``TASKER_*`` variables as nested settings (``__`` nests), and their sources.

    Values are typed as TOML, the same rules as the settings files: ``5`` is a number,
    ``true`` a boolean, ``["a", "b"]`` a list, anything else text. A value starting
    with ``@`` (dynaconf's ``@format``, ``@jinja``, ``@json``... tokens) stays the text
    it is: an environment variable is never evaluated.
    """
    from dynaconf.utils.parse_conf import parse_conf_data

    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    prefix = ENVVAR_PREFIX + "_"
    for name, text in sorted(os.environ.items()):
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__")]
        if not all(path):
            continue  # "TASKER_A____B": no key to set
        value: Any = text if text.lstrip().startswith("@") else parse_conf_data(text, tomlfy=True)
        table = data
        for part in path[:-1]:
            below = table.get(part)
            if not isinstance(below, dict):
                below = table[part] = {}
            table = below
        table[path[-1]] = _lower_keys(value)
        sources[".".join(path)] = "environment"
    return data, sources


def load_settings(
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
) -> LoadedSettings:
    """Merge every layer for ``env`` under ``root`` (default ``$TASKER_CONFIG_ROOT`` or cwd)."""
    chosen_env = resolve_env(env)
    root_path = Path(root or os.environ.get(ROOT_VAR) or Path.cwd()).resolve()
    files = _layer_files(root_path, chosen_env)

    data, sources = _read(files)
    if overrides:
        lowered = _lower_keys(overrides)
        data = deep_merge(data, lowered)
        for key in _flatten(lowered):
            sources[key] = "overrides"
    return LoadedSettings(
        env=chosen_env, root=root_path, files=tuple(files), data=data, sources=sources
    )

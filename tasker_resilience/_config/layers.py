"""Read the layered settings files. The only module that imports dynaconf.

Layers, later wins: ``config/tasker/base/*.toml`` -> ``config/tasker/environments/<env>/*.toml``
-> ``settings.toml`` -> ``TASKER_*`` environment variables (``__`` nests) -> ``overrides``.

Mistakes in finding or reading the layers raise :class:`ConfigurationError` here, each
naming what to fix: a root folder that does not exist, an environment with no folder
(listing those that exist), a file that is not valid TOML (file, line and column), and
the spellings :mod:`~tasker_resilience._config.spelling` catches.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasker_resilience._errors import ConfigurationError

__all__ = [
    "ENVIRONMENTS",
    "ENV_VAR",
    "ROOT_VAR",
    "LoadedSettings",
    "deep_merge",
    "environment_folders",
    "load_settings",
    "resolve_env",
    "resolve_root",
]

ENV_VAR = "TASKER_ENV"
ROOT_VAR = "TASKER_CONFIG_ROOT"
ENVVAR_PREFIX = "TASKER"
ENVIRONMENTS = ("test", "development", "production")
"""Always valid, with or without a folder of their own; any folder under
``config/tasker/environments`` is an environment too."""
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


def environment_folders(root: Path) -> list[str]:
    """The folders under ``<root>/config/tasker/environments``, sorted."""
    try:
        return sorted(path.name for path in _environments_dir(root).iterdir() if path.is_dir())
    except OSError:
        return []


def _environments_dir(root: Path) -> Path:
    return root / "config" / "tasker" / "environments"


def resolve_env(env: str | None, root: Path | None = None) -> str:
    """``env`` if given, else ``$TASKER_ENV``, else ``development``: one of
    :data:`ENVIRONMENTS` or any environment with a folder under
    ``<root>/config/tasker/environments``. An unknown one lists the folders that exist;
    the error's key is ``env`` when it came from the argument, else ``TASKER_ENV``."""
    key = "env" if env else ENV_VAR
    chosen = (env or os.environ.get(ENV_VAR) or DEFAULT_ENV).strip()
    folders = environment_folders(root) if root is not None else []
    by_name = {name.lower(): name for name in (*ENVIRONMENTS, *folders)}
    found = by_name.get(chosen.lower())
    if found is None:
        close = difflib.get_close_matches(chosen.lower(), list(by_name), n=1)
        where = _environments_dir(root) if root is not None else "config/tasker/environments"
        raise ConfigurationError(
            key,
            chosen,
            f"an environment with a folder under {where} "
            f"({', '.join(folders) if folders else 'there is none'}), or one of "
            f"{', '.join(ENVIRONMENTS)}"
            + (f" (did you mean {by_name[close[0]]!r}?)" if close else ""),
        )
    return found


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """``root`` if given, else ``$TASKER_CONFIG_ROOT``, else the working directory; a
    given folder that does not exist is an error (it would silently mean "defaults")."""
    given = root if root is not None else (os.environ.get(ROOT_VAR) or None)
    if given is None:
        return Path.cwd().resolve()
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise ConfigurationError(
            "root" if root is not None else ROOT_VAR,
            str(given),
            "an existing folder holding config/tasker and/or settings.toml "
            + ("(it is a file)" if path.exists() else "(it does not exist)"),
        )
    return path


# tomllib's (and dynaconf's vendored copy's) messages end with "(at line 3, column 9)".
_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _check_toml(path: Path) -> None:
    """Parse ``path`` once on its own, so a syntax error names the file (dynaconf's
    own error names neither the file nor the setting)."""
    from dynaconf.vendor import tomllib

    try:
        tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            str(path),
            f"byte {exc.start}",
            "UTF-8 text",
            message=f"{path}: not UTF-8 text (byte {exc.start}); settings files are UTF-8 TOML",
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            str(path), None, "a readable file", message=f"{path}: cannot be read ({exc.strerror})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        text = str(exc)
        where = _WHERE.search(text)
        line, column = (where.group(1), where.group(2)) if where else ("?", "?")
        reason = _WHERE.sub("", text) if where else text
        raise ConfigurationError(
            str(path),
            f"line {line}, column {column}",
            "valid TOML",
            message=f"{path}: line {line}, column {column}: not valid TOML: {reason}",
        ) from None


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

    from tasker_resilience._config.spelling import warn_misplaced_tables

    for path in files:
        _check_toml(path)

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
    warn_misplaced_tables(data, sources)
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

    from tasker_resilience._config.spelling import check_variable

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
        if path[0] not in _LOADER_VARIABLES:
            check_variable(name, path, value)
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
    root_path = resolve_root(root)
    chosen_env = resolve_env(env, root_path)
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

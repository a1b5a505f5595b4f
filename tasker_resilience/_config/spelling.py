"""Settings written where the library never reads them, and the spelling that works.

Each of these used to be ignored without a word, the service running on defaults:

- a ``TASKER_`` variable without the ``COMMON`` level (``TASKER_CACHE__BACKEND``) or
  with single underscores between levels (``TASKER_COMMON_CACHE_BACKEND``): refused,
  naming the variable that works (``TASKER_COMMON__CACHE__BACKEND``);
- an inline table in a variable (``TASKER_COMMON__CACHE='{backend = "memory"}'``):
  refused, naming one variable per key (the value is never echoed: it may hold a
  password);
- a ``[cache]``, ``[caches]`` or ``[circuit_breakers]`` table at the top of a settings
  file, outside ``[common]``: a WARNING naming the file and ``[common.<table>]``. Only
  a warning: top-level tables other than ``common`` belong to the application sharing
  the files, and one may be its own.

The library's keys are read from the config dataclasses themselves, so a key added
there is known here without a second list.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

from tasker_resilience._config.redact import REDACTED
from tasker_resilience._config.schema import (
    BreakerConfig,
    CacheConfig,
    MemoryConfig,
    NearConfig,
    RedisConfig,
)
from tasker_resilience._errors import ConfigurationError

__all__ = ["check_variable", "warn_misplaced_tables"]

_log = logging.getLogger("tasker_resilience.config")

ANY: Final = "*"
"""A level whose keys are names the user chooses (caches, breaker components)."""

Tree = Mapping[str, Any]
"""Key -> the tree below it, or None for a value."""

_LIBRARY_TABLES: Final = ("cache", "caches", "circuit_breakers")


def _leaves(cls: type[Any], *skip: str) -> dict[str, Any]:
    return {item.name: None for item in dataclasses.fields(cls) if item.name not in skip}


@functools.cache
def _tree() -> Tree:
    cache: dict[str, Any] = _leaves(CacheConfig, "backend_options", "redis", "memory", "near")
    cache.update(redis=_leaves(RedisConfig), memory=_leaves(MemoryConfig), near=_leaves(NearConfig))
    breaker = _leaves(BreakerConfig)
    breakers = {"enabled": None, "default_config": breaker, "component_configs": {ANY: breaker}}
    return {"common": {"cache": cache, "caches": {ANY: cache}, "circuit_breakers": breakers}}


def _walks(path: list[str], node: Tree | None) -> bool:
    """True when ``path`` names a key (or a table) of the library as written."""
    for segment in path:
        if node is None:
            return False
        if segment in node:
            node = node[segment]
        elif ANY in node:
            node = node[ANY]
        else:
            return False
    return True


def _parse(tokens: list[str], node: Tree | None) -> list[str] | None:
    """The levels of a value's key spelt as ``tokens`` (its name split at every
    underscore), or None. Longest names first, backtracking: ``default_ttl_seconds`` is
    one key, ``caches_sessions_backend`` is ``caches.sessions.backend``."""
    if node is None:
        return [] if not tokens else None
    for size in range(len(tokens), 0, -1):
        segment = "_".join(tokens[:size])
        below = node[segment] if segment in node else node.get(ANY, False)
        if below is False:
            continue
        rest = _parse(tokens[size:], below)
        if rest is not None:
            return [segment, *rest]
    return None


def _spelt(tokens: list[str]) -> list[str] | None:
    """The key ``tokens`` most likely meant: as written, or under ``common``."""
    tree = _tree()
    as_written = _parse(tokens, tree)
    if as_written is not None:
        return as_written
    under_common = _parse(tokens, tree["common"])
    return None if under_common is None else ["common", *under_common]


def _variable(path: list[str]) -> str:
    return "TASKER_" + "__".join(segment.upper() for segment in path)


def _flat(value: Mapping[str, Any], path: list[str]) -> list[list[str]]:
    keys: list[list[str]] = []
    for key, below in value.items():
        if isinstance(below, Mapping):
            keys.extend(_flat(below, [*path, str(key).lower()]))
        else:
            keys.append([*path, str(key).lower()])
    return keys


def check_variable(name: str, path: list[str], value: Any) -> None:
    """Refuse a ``TASKER_`` variable that would set nothing the library reads although
    it was plainly meant to (see the module docstring). ``path``: its ``__`` levels,
    lower case; ``value``: as parsed (a mapping for an inline table)."""
    tree = _tree()
    library = _walks(path, tree) and path[0] == "common"
    looks_like_table = isinstance(value, Mapping) or (
        isinstance(value, str) and value.strip().startswith("{") and value.strip().endswith("}")
    )
    if library and looks_like_table:
        keys = _flat(value, path) if isinstance(value, Mapping) else [[*path, "<key>"]]
        examples = ", ".join(_variable(key) + "=..." for key in keys[:4])
        allowed = "one variable per key, levels joined by two underscores: " + examples
        raise ConfigurationError(
            name,
            REDACTED,
            allowed + (" ..." if len(keys) > 4 else ""),
            message=f"{name} holds an inline table, which is not read as settings; set "
            f"{allowed}{' ...' if len(keys) > 4 else ''}",
        )
    if library:
        return
    tokens = [token for token in "_".join(path).split("_") if token]
    meant = _spelt(tokens)
    if meant is None or meant == path:
        return  # not the library's: an application's own variable
    raise ConfigurationError(
        name,
        REDACTED,
        f"{_variable(meant)} (every level joined by two underscores, starting at COMMON)",
        message=f"{name} is not read by tasker-resilience; did you mean {_variable(meant)}? "
        "Every level is joined by two underscores, starting at COMMON",
    )


def warn_misplaced_tables(data: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """A WARNING for each library table written at the top level of a settings file."""
    for table in _LIBRARY_TABLES:
        if not isinstance(data.get(table), Mapping):
            continue
        files = sorted({layer for key, layer in sources.items() if key.split(".", 1)[0] == table})
        _log.warning(
            "[%s] in %s is not read by tasker-resilience: its settings live under "
            "[common], so write [common.%s] (ignore this if the table is your "
            "application's own)",
            table,
            ", ".join(files) or "the settings",
            table,
        )

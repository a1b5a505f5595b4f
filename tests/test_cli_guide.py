"""Every command and flag of ``tasker-resilience`` is in the guide's command reference.

The flags come from each command's ``--help`` (argparse's own text, so a flag added
anywhere in ``_operations/cli.py`` is seen here without editing this test)."""

from __future__ import annotations

import argparse
import re

import pytest

from tasker_resilience._operations.cli import _build_parser

from .conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "guides" / "caching.md"
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
NOT_DOCUMENTED = {"-h", "--help"}  # argparse's own, on every command


def _reference() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("\n## Command reference")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no commands")


def _helps(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # Wide enough that argparse never wraps a flag at its hyphen.
    monkeypatch.setenv("COLUMNS", "1000")
    parser = _build_parser()
    helps = {"tasker-resilience": parser.format_help()}
    for name, command in _commands(parser).items():
        helps[name] = command.format_help()
    return helps


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_every_command_is_in_the_command_reference() -> None:
    reference = _reference()
    missing = [name for name in _commands(_build_parser()) if not _mentions(reference, name)]
    assert not missing, f"commands missing from {GUIDE.name}'s command reference: {missing}"


def test_every_flag_in_help_is_in_the_command_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _reference()
    missing = sorted(
        f"{command} {flag}"
        for command, text in _helps(monkeypatch).items()
        for flag in set(OPTION.findall(text)) - NOT_DOCUMENTED
        if not _mentions(reference, flag)
    )
    assert not missing, f"flags missing from {GUIDE.name}'s command reference: {missing}"


def test_the_check_sees_every_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    # The help text is a fair source: each option string argparse knows is in it.
    helps = _helps(monkeypatch)
    parser = _build_parser()
    for name, command in {"tasker-resilience": parser, **_commands(parser)}.items():
        known = {flag for action in command._actions for flag in action.option_strings}
        assert known <= set(OPTION.findall(helps[name])), name

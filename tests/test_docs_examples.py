"""The docs' "Testing your own code" examples run, exactly as written.

In README.md's "Testing your own code" section and in docs/guides/testing.md, every fenced
block is preceded by a marker: ``<!-- file: NAME -->`` (the block is written to NAME in a
fresh project directory; blocks naming the same file are joined) or ``<!-- not run:
REASON -->``. Each document's project is then tested by pytest in a subprocess, with the
installed plugin and no settings from this repository, as a user's project would be.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass

import pytest

from .conftest import REPO_ROOT

pytest_plugins = ["pytester"]

MARKER = re.compile(r"<!--\s*(file:\s*(?P<file>[\w./-]+)|not run:\s*(?P<reason>[^>]+?))\s*-->")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    text: str
    file: str | None


def _blocks(text: str, where: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.fullmatch(lines[start - 1].strip()) if start > 0 else None
        assert marker is not None, (
            f"{where}:{start + 1}: a code block without <!-- file: NAME --> or "
            "<!-- not run: REASON --> on the line before it"
        )
        blocks.append(
            Block(start + 1, fence["lang"], "\n".join(lines[start + 1 : end]), marker["file"])
        )
        i = end + 1
    return blocks


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    return text[start : following if following != -1 else len(text)]


DOCUMENTS = {
    "README": lambda: _section(
        (REPO_ROOT / "README.md").read_text(encoding="utf-8"), "## Testing your own code"
    ),
    "guide": lambda: (REPO_ROOT / "docs" / "guides" / "testing.md").read_text(encoding="utf-8"),
}


@pytest.mark.parametrize("document", sorted(DOCUMENTS))
def test_every_example_runs(
    document: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _blocks(DOCUMENTS[document](), document)
    files: dict[str, list[str]] = defaultdict(list)
    for block in blocks:
        if block.file is not None:
            files[block.file].append(block.text)
    assert any(name.startswith("test_") for name in files), f"{document}: nothing to run"
    for name, parts in files.items():
        (pytester.path / name).write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    # A user's project has none of this repository's settings.
    for variable in [v for v in os.environ if v.startswith("TASKER_")]:
        monkeypatch.delenv(variable)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    outcomes = result.parseoutcomes()
    tests = sum(
        text.count("\ndef test_") + text.count("\nasync def test_")
        for text in ("\n" + "\n".join(parts) for parts in files.values())
    )
    assert outcomes.get("passed", 0) >= tests, result.stdout.str()
    assert set(outcomes) <= {"passed", "seconds"}, result.stdout.str()


def test_unmarked_blocks_are_refused() -> None:
    with pytest.raises(AssertionError, match="doc:3: a code block without"):
        _blocks("text\n\n```python\nx = 1\n```\n", "doc")
    marked = _blocks(
        "<!-- not run: shell -->\n```sh\nls\n```\n<!-- file: a.py -->\n```\n1\n```", "d"
    )
    assert [(b.lang, b.file) for b in marked] == [("sh", None), ("", "a.py")]

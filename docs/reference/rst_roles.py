"""A griffe extension for ``make docs``: the docstrings' reStructuredText roles as code.

The docstrings are written for ``help()`` and editors, with Sphinx roles
(``:class:`~tasker_resilience.Resilience```); mkdocstrings renders Markdown, where those
roles would show as literal text. Each role becomes inline code naming its target
(the last part only, with a leading ``~``, as Sphinx shows it).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class RstRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and ":" in docstring.value:
            docstring.value = _ROLE.sub(_as_code, docstring.value)

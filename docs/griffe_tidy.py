"""Griffe extension for the documentation build: tidy two docstring habits.

- ``Example:`` is read as ``Examples:``. Google style allows both headings, but
  griffe turns only ``Examples:`` into an examples section (doctests rendered as
  code); ``Example:`` would become a plain admonition whose ``>>>`` lines render
  as quotes.
- Sphinx roles such as ``:func:`read_idx``` render as inline code, without the
  role's name (Markdown has no roles).
"""

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):`~?([^`]+)`")


class DocstringTidy(griffe.Extension):
    """Rewrite each docstring before griffe parses it."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)

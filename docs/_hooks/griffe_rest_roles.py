"""A griffe extension: reST leftovers in the docstrings, rewritten as Markdown.

The docstrings of xpo_sim are numpy-style with a few reST habits (``:func:`name```, ``::``
before an indented block). mkdocstrings reads docstrings as Markdown, so before rendering:

* ``:func:`xpo_sim.run``` (also ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``,
  ``:exc:``, ``:obj:``) becomes an *optional* cross-reference: a link where the target has an
  API entry, plain code where it has none (a private helper), never a build warning;
* ``~pkg.mod.Name`` shows as ``Name``, as reST does;
* a paragraph ending in ``::`` ends in ``:`` (the indented block below it is a code block in
  Markdown too);
* a closing paragraph of prose after the entries of a numpy ``Parameters`` (or
  ``Attributes``) section, which the numpy parser would read as more parameters, gets a
  ``Notes`` heading of its own.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`(~?)([^`<>]+?)`")


def _link(match: re.Match, scope: str) -> str:
    short, target = match.group(1), match.group(2).strip()
    shown = target.rsplit(".", 1)[-1] if short else target
    if target.startswith("."):
        target = target.lstrip(".")
    if "." not in target and scope:
        target = f"{scope}.{target}"  # a bare name: a member of the documented module
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


ENTRY_SECTIONS = {"Parameters", "Other Parameters", "Attributes"}
ENTRY = re.compile(r"^\*{0,2}[A-Za-z_]\w*(\s*,\s*\*{0,2}[A-Za-z_]\w*)*(\s+:(\s.*)?)?$")


def _close_entry_sections(text: str) -> str:
    lines, out, section = text.split("\n"), [], None
    for i, line in enumerate(lines):
        underline = i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip() or "x")
        if underline and line.strip():
            section = line.strip()
        elif (section in ENTRY_SECTIONS and line and not line[0].isspace() and i > 0 and not lines[i - 1].strip()
              and not re.fullmatch(r"-{3,}", line.strip()) and not ENTRY.match(line.strip())):
            out += ["Notes", "-----"]
            section = "Notes"
        out.append(line)
    return "\n".join(out)


def rewrite(text: str, scope: str = "") -> str:
    """The docstring text with its reST roles and ``::`` markers made Markdown."""
    text = ROLE.sub(lambda m: _link(m, scope), text)
    text = re.sub(r"(\S)::\n", r"\1:\n", text)
    return _close_entry_sections(text)


class RestRoles(griffe.Extension):
    def on_object(self, *, obj, loader, **kwargs):  # noqa: ARG002 - griffe's hook signature
        if obj.is_alias or obj.docstring is None:
            return
        scope = obj.path if obj.is_module else (obj.parent.path if obj.parent else "")
        if obj.is_class:
            scope = obj.path
        obj.docstring.value = rewrite(obj.docstring.value, scope)

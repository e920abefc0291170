"""A Griffe extension for the API reference: Sphinx roles in docstrings become Markdown.

flowfn's docstrings use Sphinx's ``:class:`~flowfn.Event``` roles, which read well in
``help()``. On the site, a role naming a public flowfn object becomes a cross-reference
(autorefs checks it: a broken one fails ``properdocs build --strict``); any other role
becomes inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

import flowfn

_ROLE = re.compile(r":(?:class|func|meth|attr|exc|mod|data|obj):`(~?)([\w.]+)(\(\))?`")
_PUBLIC = set(flowfn.__all__)


def _target(path: str) -> str | None:
    """The reference id of ``path`` if it names a documented public object."""
    head, _, rest = path.partition(".")
    if head == "flowfn":
        head, _, rest = rest.partition(".")
    if head in _PUBLIC:
        return f"flowfn.{head}" + (f".{rest}" if rest else "")
    if path.startswith(("flowfn.compat", "flowfn.otel", "flowfn.ray")):
        return path
    return None


def _replace(match: re.Match[str]) -> str:
    short, path, call = match.group(1), match.group(2), match.group(3) or ""
    shown = (path.rsplit(".", 1)[-1] if short else path) + call
    target = _target(path)
    return f"[`{shown}`][{target}]" if target else f"`{shown}`"


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of the objects Griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_replace, obj.docstring.value)

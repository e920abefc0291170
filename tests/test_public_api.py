"""The public API: every name is in the reference, states its contract, and says ``flowfn``.

The reference pages (``docs/reference/*.md``) are generated from the docstrings by
mkdocstrings; ``.ci/run`` builds them with ``properdocs build --strict``, so a cross-reference
that no longer resolves fails CI. These tests catch what a build cannot: a public name left
out of the reference, or one with nothing to say.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import flowfn
import flowfn.compat
import flowfn.otel
import flowfn.ray

DOCS = Path(__file__).resolve().parent.parent / "docs"
REFERENCE = DOCS / "reference"

#: Public objects that live outside ``flowfn.__all__``: the integrations' modules.
INTEGRATIONS = {
    "flowfn.otel.OTelObserver": flowfn.otel.OTelObserver,
    "flowfn.ray.RayWorkers": flowfn.ray.RayWorkers,
}


def documented() -> dict[str, Any]:
    """Each ``::: dotted.path`` of the reference pages, resolved to its object."""
    found: dict[str, Any] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)$", page.read_text(), re.MULTILINE):
            module_path, _, attr = path.rpartition(".")
            try:
                found[path] = importlib.import_module(path)
            except ImportError:
                found[path] = getattr(importlib.import_module(module_path), attr)
    return found


def public_objects() -> dict[str, Any]:
    objects = {f"flowfn.{name}": getattr(flowfn, name) for name in flowfn.__all__}
    return {**objects, **INTEGRATIONS}


def test_the_reference_documents_every_public_name() -> None:
    reference = documented()
    prose = "".join(page.read_text() for page in REFERENCE.glob("*.md"))
    missing = []
    for path, obj in public_objects().items():
        if path in reference:
            continue
        # An alias (ParallelBatchNode is AsyncParallelBatchNode) is named in the prose of
        # the page that documents what it stands for.
        alias_of = [p for p, o in reference.items() if o is obj]
        if not (alias_of and path.rsplit(".", 1)[1] in prose):
            missing.append(path)
    assert missing == [], f"public names missing from docs/reference/*.md: {missing}"
    assert isinstance(reference["flowfn.compat"], ModuleType)


def test_every_reference_entry_is_public() -> None:
    public = public_objects()
    private = [path for path in documented() if path not in public and path != "flowfn.compat"]
    assert private == [], f"the reference documents names users cannot import: {private}"


def _own_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties that flowfn defines on ``cls`` or its flowfn bases."""
    members = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("flowfn"):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_"):
                continue
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if inspect.isfunction(func):
                members.append((f"{klass.__name__}.{attr}", func))
    return members


def _alias_docstrings() -> dict[str, str]:
    """Docstrings of module-level assignments (``EventKind = Literal[...]`` then a string)."""
    docs = {}
    for source in Path(flowfn.__file__).parent.rglob("*.py"):
        body = ast.parse(source.read_text()).body
        for stmt, after in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.Assign | ast.AnnAssign)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        docs[target.id] = after.value.value
    return docs


def test_every_public_name_states_its_contract() -> None:
    aliases = _alias_docstrings()
    silent = []
    for path, obj in public_objects().items():
        name = path.rsplit(".", 1)[1]
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                silent.append(path)
            if inspect.isclass(obj):
                silent += [m for m, f in _own_members(obj) if not (f.__doc__ or "").strip()]
        elif name not in aliases and not isinstance(obj, int):
            silent.append(path)
    assert sorted(set(silent)) == []
    assert "callable" in aliases["Observer"].lower() or "callback" in aliases["Observer"]


def test_a_missing_docstring_would_be_caught() -> None:
    class Quiet(flowfn.Node):  # type: ignore[type-arg]
        def exec(self, prep_res: Any) -> Any:
            return prep_res

    Quiet.__module__ = "flowfn"
    members = dict(_own_members(Quiet))
    assert members["Quiet.exec"].__doc__ is None
    assert "BaseNode.post" in members  # the bases' members are checked too


@pytest.mark.parametrize("name", [n for n in flowfn.__all__ if inspect.isclass(getattr(flowfn, n))])
def test_public_classes_report_module_flowfn(name: str) -> None:
    cls = getattr(flowfn, name)
    assert cls.__module__ == "flowfn"
    assert repr(cls) in (f"<class 'flowfn.{name}'>", f"<class 'flowfn.{cls.__name__}'>")


def test_public_functions_report_module_flowfn() -> None:
    functions = [
        getattr(flowfn, n) for n in flowfn.__all__ if inspect.isfunction(getattr(flowfn, n))
    ]
    assert len(functions) >= 8  # node, batch, parallel_batch, emit, ask, echo, ...
    wrong = {f.__qualname__: f.__module__ for f in functions if f.__module__ != "flowfn"}
    assert wrong == {}
    with pytest.raises(flowfn.FlowError) as caught:
        flowfn.Flow(None).run({})
    assert caught.type.__module__ == "flowfn"
    assert "flowfn.FlowError" in repr(caught.type)


def test_the_site_config_lists_every_reference_page() -> None:
    config = (DOCS.parent / "properdocs.yml").read_text()
    for page in REFERENCE.glob("*.md"):
        assert f"reference/{page.name}" in config, f"properdocs.yml's nav misses {page.name}"
    assert "strict: true" in config
    assert "properdocs build --strict" in (DOCS.parent / ".ci" / "run").read_text()

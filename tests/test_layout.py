"""The layout of src/flowfn: the engine in a wing of its own, and no import circle.

``flowfn._engine`` (nodes, flows, the pool, hooks, ...) imports nothing outside itself; the
wings above it (``_durable``, ``_workers``, ``_observe``, ``_dsl``) and the public modules use
it and plug into it through ``flowfn._engine.hooks``. Read from the source with ``ast``: every
import counts, those inside functions and ``if TYPE_CHECKING:`` blocks too. Importing a
submodule also runs its packages' ``__init__`` (every module of flowfn runs flowfn's own,
which imports all the wings): that implicit edge is left out, or everything would be one
circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import flowfn

SRC = Path(flowfn.__file__).resolve().parent
ENGINE = "flowfn._engine"
#: The wing of a module: its subpackage, or the public package it belongs to. The public
#: ``flowfn.persistence`` package holds stores of the durable wing (postgres.py imports the
#: store protocol from ``_durable``; ``_durable`` loads it for a ``postgresql://`` URL).
WING_OF_PACKAGE = {"persistence": "_durable"}
#: Import circles between modules that remain, each inside one wing, with the reason.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def modules() -> dict[str, Path]:
    """Every module of src/flowfn by its dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ("flowfn", *path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_package(name: str, known: dict[str, Path]) -> bool:
    return known.get(name, Path()).name == "__init__.py"


def imports_of(name: str, known: dict[str, Path]) -> set[str]:
    """The flowfn modules that module ``name`` imports, by name, relative imports resolved."""
    package = name if _is_package(name, known) else name.rpartition(".")[0]
    found: set[str] = set()
    for stmt in ast.walk(ast.parse(known[name].read_text())):
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from package import module`` imports the module; ``from m import name``, m.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in stmt.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, known) for name in known}


def wing(name: str) -> str:
    """``flowfn._engine.pool`` -> ``_engine``; a top-level module is a wing of its own."""
    parts = name.split(".")
    if len(parts) == 1:
        return "flowfn"
    return WING_OF_PACKAGE.get(parts[1], parts[1])


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_reader_resolves_imports() -> None:
    """The test's own reader: relative imports, ``from package import module``, lazy ones."""
    edges = graph()
    assert "flowfn._engine.hooks" in edges["flowfn._engine.pool"]  # from . import events, hooks
    assert "flowfn._engine.events" in edges["flowfn._engine.pool"]
    assert "flowfn._durable.store" in edges["flowfn.persistence.postgres"]  # from .._durable...
    assert "flowfn.persistence.postgres" in edges["flowfn._durable.journal"]  # inside a function
    assert "flowfn._engine.flows" in edges["flowfn._durable.journal"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_the_engine_imports_nothing_outside_itself() -> None:
    edges = graph()
    engine = [name for name in edges if name == ENGINE or name.startswith(f"{ENGINE}.")]
    assert {"flowfn._engine.flows", "flowfn._engine.nodes", "flowfn._engine.pool"} <= set(engine)
    outside = {
        name: sorted(other for other in edges[name] if not other.startswith(ENGINE))
        for name in engine
    }
    assert {name: found for name, found in outside.items() if found} == {}


def test_no_import_circle_between_wings() -> None:
    edges = graph()
    between: dict[str, set[str]] = {}
    for name, targets in edges.items():
        between.setdefault(wing(name), set()).update(
            wing(t) for t in targets if wing(t) != wing(name)
        )
    assert circles(between) == []


def test_no_import_circle_between_modules() -> None:
    found = {circle: KNOWN_CIRCLES.get(circle) for circle in circles(graph())}
    assert {c: why for c, why in found.items() if why is None} == {}
    for circle in found:
        assert len({wing(name) for name in circle}) == 1, circle


def test_each_module_imports_alone() -> None:
    """Each module of flowfn imports in an interpreter that has imported no other module of
    flowfn (one child process, its flowfn modules forgotten before each import); and each
    engine module, imported without flowfn's ``__init__`` (so without the wings), loads no
    module outside the engine."""
    script = textwrap.dedent(
        """
        import importlib, sys, types
        names = sys.argv[1:]
        def forget():
            for name in [n for n in sys.modules if n == "flowfn" or n.startswith("flowfn.")]:
                del sys.modules[name]
        failed = []
        for name in names:
            forget()
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
        import flowfn
        path = flowfn.__path__
        for name in [n for n in names if n.startswith("flowfn._engine")]:
            forget()
            bare = types.ModuleType("flowfn")  # the package, without its __init__
            bare.__path__ = list(path)
            sys.modules["flowfn"] = bare
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append(f"{name} (bare): {type(exc).__name__}: {exc}")
                continue
            loaded = sorted(
                n for n in sys.modules
                if n.startswith("flowfn.") and not n.startswith("flowfn._engine")
            )
            if loaded:
                failed.append(f"{name} (bare) loaded {loaded}")
        print("\\n".join(failed))
        """
    )
    names = [name for name in modules() if name != "flowfn.__main__"]
    done = subprocess.run(
        [sys.executable, "-c", script, *names],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_import_flowfn_leaves_the_heavy_modules_for_when_they_are_used() -> None:
    """``import flowfn`` (and ``flowfn.compat``) brings no process pool, no database driver,
    no pictures or IR tooling beyond what it needs: multiprocessing comes with the first
    item sent to a process, psycopg with the first postgresql:// checkpoint."""
    code = (
        "import sys, flowfn, flowfn.compat; "
        "print(sorted(m for m in ('multiprocessing', 'concurrent.futures.process', "
        "'psycopg', 'sqlite3', 'tempfile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

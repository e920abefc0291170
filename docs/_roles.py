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


# -- public signatures ------------------------------------------------------------------

#: Private names a public signature may mention, shown as what a user can name instead.
_SHOWN_AS = {
    "RemoteWorkers": "RayWorkers",  # the public kind of remote workers (flowfn.ray)
    "_Job": "Any",  # what a FunctionNode's prep hands its own exec: opaque to users
}
#: What the parameters of ``@batch``/``@parallel_batch`` that are not node options mean.
_BATCH_PARAMETERS = {
    "items": "the items: a shared-store key, or a function of shared returning them",
    "limit": "at most this many items at once (None: no limit)",
    "errors": '"fail_fast" cancels the rest at the first failure; "collect" runs every item',
}
_DECORATORS = ("node", "batch", "parallel_batch")
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")
_OPTION = re.compile(r"^\s+(\w+): (.+?)\s+# (.*)$")
_MORE = re.compile(r"^\s+# (.*)$")
_POP = re.compile(r"options\.pop\(\"(\w+)\", (.+?)\)")


def _aliases(pkg: griffe.Module) -> dict[str, str]:
    """Private type aliases of flowfn's modules (``Workers = ...``), by name, as source;
    a private TypeVar (``_Successor``) as its bound."""
    found: dict[str, str] = {}
    for module in _modules(pkg):
        private = any(part.startswith("_") for part in module.path.split(".")[1:])
        for name, member in module.members.items():
            if member.is_alias or not member.is_attribute or name in _PUBLIC:
                continue
            text = str(member.value)
            if text.startswith("TypeVar("):
                bound = re.search(r"bound=['\"](.+?)['\"]", text)
                if name.startswith("_") and bound:
                    found[name] = bound.group(1)
            elif private and name.lstrip("_")[:1].isupper() and ("[" in text or "|" in text):
                found[name] = text
    return found


def _modules(package: griffe.Module) -> list[griffe.Module]:
    """The modules of ``package``, those of its subpackages (the wings) included."""
    found = []
    for module in package.modules.values():
        found.append(module)
        found += _modules(module)  # a wing's modules (none for a plain module)
    return found


def _option_defaults(pkg: griffe.Module) -> dict[str, str]:
    """Each node option's default: ``options.pop(key, default)`` in ``FunctionNode``, else
    the matching parameter of ``Node.__init__`` (the retry policy)."""
    defaults = {p.name: str(p.default) for p in pkg["_engine.nodes"]["Node"]["__init__"].parameters}
    source = "\n".join(pkg["_dsl.decorators"]["FunctionNode"]["__init__"].lines)
    defaults.update(_POP.findall(source))
    return defaults


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"  # a | inside `code` does not split a cell


def _signature_text(function: griffe.Function) -> str:
    texts = [str(p.annotation) for p in function.parameters if p.annotation is not None]
    return " ".join([*texts, str(function.returns or "")])


class PublicSignatures(griffe.Extension):
    """Public signatures name only public types, and the decorators list their options.

    A private type alias (``Workers``, ``Items``) is shown as its value; ``**options:
    Unpack[NodeOptions]`` becomes the keyword parameters it stands for, with their defaults,
    and ``@node``, ``@batch`` and ``@parallel_batch`` get a table of them (type, default,
    meaning: the comments in ``NodeOptions``' source). A public method that still needs an
    underscored class (``Progress.line(bar: _Bar)``, an internal helper) is left out.
    """

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "flowfn":
            return
        self.aliases = _aliases(pkg)
        self.options = self._node_options(pkg)
        for name in _DECORATORS:
            function = pkg["_dsl.decorators"][name]
            tables = self._table(name, function)
            for each in [function, *(function.overloads or [])]:
                self._clean(each)
            assert function.docstring is not None
            function.docstring.value += "\n\n" + tables
        for module in _modules(pkg):
            public = not any(part.startswith("_") for part in module.path.split(".")[1:])
            for cls in module.classes.values():
                if not cls.is_alias and (cls.name in _PUBLIC or public):
                    self._clean_class(cls)
            for function in module.functions.values():
                if function.is_alias or function.name in _DECORATORS:
                    continue
                if function.name in _PUBLIC or public:
                    for each in [function, *(function.overloads or [])]:
                        self._clean(each)

    def _clean_class(self, cls: griffe.Class) -> None:
        for member in list(cls.members.values()):
            if member.is_alias or not member.is_function:
                continue
            for each in [member, *(member.overloads or [])]:
                self._clean(each)
            names = set(_NAME.findall(_signature_text(member)))
            if not member.name.startswith("_") and any(n.startswith("_") for n in names):
                cls.del_member(member.name)  # an internal helper: users cannot call it

    def _clean(self, function: griffe.Function) -> None:
        parameters = []
        for parameter in function.parameters:
            if str(parameter.annotation) == "Unpack[NodeOptions]":
                parameters += [
                    griffe.Parameter(
                        key,
                        annotation=kind,
                        kind=griffe.ParameterKind.keyword_only,
                        default=default,
                    )
                    for key, (kind, default, _) in self.options.items()
                ]
                continue
            if parameter.name.startswith("_") and parameter.default is not None:
                continue  # flowfn's own knob (next(_stacklevel=)), not the caller's
            if parameter.annotation is not None:
                parameter.annotation = self._shown(str(parameter.annotation))
            parameters.append(parameter)
        function.parameters = griffe.Parameters(*parameters)
        if function.returns is not None:
            function.returns = self._shown(str(function.returns))

    def _shown(self, text: str) -> str:
        """``text`` (an annotation) with private aliases replaced by what they stand for."""
        for _ in range(5):  # aliases of aliases
            replaced = _NAME.sub(
                lambda m: _SHOWN_AS.get(m.group(0), self.aliases.get(m.group(0), m.group(0))),
                text,
            )
            if replaced == text:
                break
            text = replaced
        return text

    def _node_options(self, pkg: griffe.Module) -> dict[str, tuple[str, str, str]]:
        """``NodeOptions``' keys: (type, default, meaning) from its source and comments."""
        options: dict[str, tuple[str, str, str]] = {}
        defaults = _option_defaults(pkg)
        for cls in (pkg["_dsl.decorators"]["NodeOptions"], pkg["_engine.retry"]["RetryOptions"]):
            last = None
            for line in cls.lines:
                if match := _OPTION.match(line):
                    last = match.group(1)
                    kind = self._shown(match.group(2))
                    options[last] = (kind, defaults[last], match.group(3))
                elif (more := _MORE.match(line)) and last:
                    kind, default, meaning = options[last]
                    options[last] = (kind, default, f"{meaning} {more.group(1)}")
                elif line.strip() and not line.lstrip().startswith(("class ", '"""')):
                    raise ValueError(f"{cls.name}: an option without a '# meaning': {line}")
        return options

    def _table(self, decorator: str, function: griffe.Function) -> str:
        """The Markdown table of ``decorator``'s options (before its signature is cleaned)."""
        rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
        if decorator != "node":
            with_items = [o for o in function.overloads or [] if "items" in o.parameters]
            for parameter in with_items[0].parameters:
                if parameter.name in _BATCH_PARAMETERS:
                    kind = self._shown(str(parameter.annotation))
                    default = str(parameter.default).replace("'", '"')  # as the signature
                    meaning = _BATCH_PARAMETERS[parameter.name]
                    rows.append(_row(f"`{parameter.name}`", f"`{kind}`", f"`{default}`", meaning))
        rows += [
            _row(f"`{key}`", f"`{kind}`", f"`{default}`", meaning)
            for key, (kind, default, meaning) in self.options.items()
        ]
        return "Options (keyword arguments):\n\n" + "\n".join(rows)

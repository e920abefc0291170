"""Flows as data: a JSON document that becomes a flow, and a flow that becomes the document.

The format follows pflow's workflow IR where it has a field (``ir_version``, ``nodes`` with
``id``/``type``/``params``/``batch``, ``edges`` with ``from``/``to``/``action``,
``start_node``) and adds flowfn's options (``into``, ``retries``, ``timeout``, ...). A node's
``type`` names an entry of the registry the caller passes: loading a document never imports
or runs anything else. The whole document is checked before anything is built; a problem
is a :class:`~flowfn.FlowError` that gives its JSON path (``$.nodes[2].batch.items``) and
the fix. docs/ir.md describes the format; :func:`ir_schema` is its JSON Schema.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import inspect
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from .._engine.binding import is_async_callable
from .._engine.errors import FlowError, node_name
from .._engine.flows import AsyncFlow, Flow
from .._engine.nodes import BaseNode
from .._engine.pool import DEFAULT_LIMIT
from .branches import Parallel
from .decorators import (
    FunctionBatchFlow,
    FunctionBatchNode,
    FunctionNode,
    FunctionParallelBatchNode,
)

__all__ = ["IR_VERSION", "document_hash", "from_ir", "ir_schema", "to_ir"]

#: The format version this flowfn writes; documents of a newer major version are refused.
IR_VERSION = "1.0"

_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)*)\}")
_WHOLE_TEMPLATE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\}$")
_RESERVED_TYPES = ("flow", "parallel")
_RESERVED_IDS = ("shared", "item")
_WORKERS = ("thread", "process", "inline")
_ERRORS = {"fail_fast": "fail_fast", "continue": "collect"}

Registry = Mapping[str, Any]

# -- the JSON Schema ---------------------------------------------------------------------

_NUMBER_OR_NULL = {"type": ["number", "null"], "minimum": 0}
_CONCURRENCY = {"type": ["integer", "null"], "minimum": 1}
_SUBFLOW_REF = {"$ref": "#/$defs/subflow"}

_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://flowfn.dev/ir/1.0/schema.json",
    "title": "flowfn workflow document",
    "type": "object",
    "required": ["ir_version", "nodes"],
    "additionalProperties": False,
    "properties": {
        "ir_version": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+){0,2}$"},
        "name": {"type": "string", "minLength": 1},
        "nodes": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
        "edges": {"type": "array", "items": {"$ref": "#/$defs/edge"}},
        "start_node": {"type": "string", "pattern": _ID},
    },
    "$defs": {
        "subflow": {
            "type": "object",
            "required": ["nodes"],
            "additionalProperties": False,
            "properties": {
                "nodes": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
                "edges": {"type": "array", "items": {"$ref": "#/$defs/edge"}},
                "start_node": {"type": "string", "pattern": _ID},
            },
        },
        "edge": {
            "type": "object",
            "required": ["from", "to"],
            "additionalProperties": False,
            "properties": {
                "from": {"type": "string", "pattern": _ID},
                "to": {"type": ["string", "null"], "pattern": _ID},
                "action": {"type": "string", "minLength": 1, "default": "default"},
            },
        },
        "node": {
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "pattern": _ID, "not": {"enum": list(_RESERVED_IDS)}},
                "type": {"type": "string", "minLength": 1},
            },
            "oneOf": [
                {"$ref": "#/$defs/function_node"},
                {"$ref": "#/$defs/flow_node"},
                {"$ref": "#/$defs/parallel_node"},
            ],
        },
        "function_node": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "id": True,
                "type": {"not": {"enum": list(_RESERVED_TYPES)}},
                "params": {"type": "object"},
                "batch": {"$ref": "#/$defs/batch"},
                "into": {"type": "string", "minLength": 1},
                "overwrite": {"type": "boolean"},
                "retries": {"type": "integer", "minimum": 0},
                "wait": {"type": "number", "minimum": 0},
                "backoff": {"type": "number", "minimum": 1},
                "max_wait": _NUMBER_OR_NULL,
                "jitter": {"type": "number", "minimum": 0, "maximum": 1},
                "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "per_second": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "cache": {"type": "boolean"},
                "workers": {"enum": list(_WORKERS)},
            },
        },
        "batch": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "items": {
                    "oneOf": [
                        {"type": "string", "pattern": _WHOLE_TEMPLATE.pattern},
                        {"type": "array"},
                    ]
                },
                "as": {"type": "string", "pattern": _ID},
                "parallel": {"type": "boolean", "default": False},
                "max_concurrent": _CONCURRENCY,
                "error_handling": {"enum": list(_ERRORS), "default": "fail_fast"},
                "max_retries": {"type": "integer", "minimum": 1},
                "retry_wait": {"type": "number", "minimum": 0},
                "flow": _SUBFLOW_REF,
            },
        },
        "flow_node": {
            "type": "object",
            "required": ["flow"],
            "additionalProperties": False,
            "properties": {"id": True, "type": {"const": "flow"}, "flow": _SUBFLOW_REF},
        },
        "parallel_node": {
            "type": "object",
            "required": ["branches"],
            "additionalProperties": False,
            "properties": {
                "id": True,
                "type": {"const": "parallel"},
                "branches": {"type": "array", "minItems": 2, "items": _SUBFLOW_REF},
                "merge": {"enum": ["update", "append"]},
                "max_concurrent": _CONCURRENCY,
                "error_handling": {"enum": list(_ERRORS)},
                "into": {"type": "string", "minLength": 1},
            },
        },
    },
}


def ir_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a workflow document, as a new dict each call.

    :func:`from_ir` checks more than the schema can say (that types are in the registry,
    that edges and templates name nodes that exist); a document it accepts always
    validates against this schema.
    """
    return copy.deepcopy(_SCHEMA)


def document_hash(document: Mapping[str, Any]) -> str:
    """The document's canonical hash: SHA-256 of its JSON with sorted keys and no spaces.

    Two documents that differ only in key order or whitespace have the same hash; a flow
    built by :func:`from_ir` carries it as ``flow.ir_hash``, and a durable run records it
    in the flow's shape, so a checkpoint refuses a changed document.
    """
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- checking a document -----------------------------------------------------------------

_FUNCTION_KEYS = tuple(_SCHEMA["$defs"]["function_node"]["properties"])
_BATCH_KEYS = tuple(_SCHEMA["$defs"]["batch"]["properties"])
_FLOW_KEYS = tuple(_SCHEMA["$defs"]["flow_node"]["properties"])
_PARALLEL_KEYS = tuple(_SCHEMA["$defs"]["parallel_node"]["properties"])
_TOP_KEYS = tuple(_SCHEMA["properties"])
_BATCH_FLOW_KEYS = ("id", "type", "batch", "into", "overwrite", "retries", "wait", "workers")
_SUBFLOW_KEYS = tuple(_SCHEMA["$defs"]["subflow"]["properties"])


class _Checker:
    """Checks a whole document (the registry included) before anything is built."""

    def __init__(self, source: str, registry: Registry) -> None:
        self.source, self.registry = source, registry
        self.ids: dict[str, str] = {}  # node id -> its JSON path
        self.stores: dict[str, str | None] = {}  # node id -> its into= key
        self.templates: list[tuple[str, str, str | None]] = []  # (text, path, item alias)

    def fail(self, path: str, message: str) -> FlowError:
        return FlowError(f"{self.source}: {path}: {message}")

    def keys(self, obj: Mapping[str, Any], known: tuple[str, ...], path: str, what: str) -> None:
        for key in obj:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "remove it"
                raise self.fail(
                    f"{path}.{key}",
                    f"unknown field {key!r} in {what}; {hint} (the fields: {', '.join(known)})",
                )

    def kind(self, value: Any, types: type | tuple[type, ...], path: str, what: str) -> None:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise self.fail(path, f"must be {what}, got {_json_name(value)} {value!r:.60}")

    def document(self, doc: Any) -> None:
        self.kind(doc, dict, "$", "a JSON object (the workflow document)")
        self.keys(doc, _TOP_KEYS, "$", "the document")
        if "ir_version" not in doc:
            raise self.fail("$", f'missing "ir_version": add "ir_version": "{IR_VERSION}"')
        self.version(doc["ir_version"])
        if "name" in doc:
            self.kind(doc["name"], str, "$.name", "a string (the flow's name)")
        self.scope(doc, "$")
        for text, path, alias in self.templates:
            self.template(text, path, alias)

    def version(self, version: Any) -> None:
        self.kind(version, str, "$.ir_version", f'a version string such as "{IR_VERSION}"')
        if not re.match(r"^[0-9]+(\.[0-9]+){0,2}$", version):
            raise self.fail("$.ir_version", f'{version!r} is not a version: write "{IR_VERSION}"')
        major, mine = int(version.split(".")[0]), int(IR_VERSION.split(".")[0])
        if major > mine:
            raise self.fail(
                "$.ir_version",
                f"the document is format {version}, newer than this flowfn reads "
                f"({IR_VERSION}); upgrade flowfn",
            )

    def scope(self, scope: Mapping[str, Any], path: str) -> None:
        """A list of nodes with its edges and start node (the document, or a sub-flow)."""
        if path != "$":
            self.kind(scope, dict, path, 'a sub-flow: an object with "nodes" and "edges"')
            self.keys(scope, _SUBFLOW_KEYS, path, "a sub-flow")
        nodes = scope.get("nodes")
        if nodes is None:
            raise self.fail(path, 'missing "nodes": give the list of nodes')
        self.kind(nodes, list, f"{path}.nodes", "a list of nodes")
        if not nodes:
            raise self.fail(f"{path}.nodes", "is empty: a flow needs at least one node")
        here = [self.node(n, f"{path}.nodes[{i}]") for i, n in enumerate(nodes)]
        self.kind(scope.get("edges", []), list, f"{path}.edges", "a list of edges")
        wired: set[tuple[str, str]] = set()
        for i, edge in enumerate(scope.get("edges", [])):
            self.edge(edge, f"{path}.edges[{i}]", here, wired)
        if "start_node" in scope and scope["start_node"] not in here:
            raise self.fail(
                f"{path}.start_node",
                f"{scope['start_node']!r} is not a node of this flow; {_one_of(here)}",
            )

    def edge(self, edge: Any, path: str, here: list[str], wired: set[tuple[str, str]]) -> None:
        self.kind(edge, dict, path, 'an object {"from": ..., "to": ..., "action": ...}')
        self.keys(edge, ("from", "to", "action"), path, "an edge")
        for end in ("from", "to"):
            if end not in edge:
                raise self.fail(path, f'missing "{end}": name a node id of this flow')
            if edge[end] is None and end == "to":
                continue  # the flow ends there on purpose
            if edge[end] not in here:
                raise self.fail(
                    f"{path}.{end}", f"{edge[end]!r} is not a node of this flow; {_one_of(here)}"
                )
        action = edge.get("action", "default")
        self.kind(action, str, f"{path}.action", "a string (the action)")
        if (edge["from"], action) in wired:
            raise self.fail(
                path,
                f"node {edge['from']!r} already has an edge for action {action!r}; "
                f"give this edge another action, or remove one of them",
            )
        wired.add((edge["from"], action))

    def node(self, node: Any, path: str) -> str:
        self.kind(node, dict, path, 'an object with "id" and "type"')
        for field in ("id", "type"):
            if field not in node:
                raise self.fail(path, f'missing "{field}" in a node')
        node_id, kind = node["id"], node["type"]
        self.kind(node_id, str, f"{path}.id", "a string")
        self.kind(kind, str, f"{path}.type", "a string naming an entry of the registry")
        if not re.match(_ID, node_id) or node_id in _RESERVED_IDS:
            raise self.fail(
                f"{path}.id",
                f"{node_id!r} is not a usable id: letters, digits, '_' and '-', starting with "
                f"a letter or '_', and not {' or '.join(map(repr, _RESERVED_IDS))}",
            )
        if node_id in self.ids:
            raise self.fail(
                f"{path}.id",
                f"duplicate id {node_id!r} (also at {self.ids[node_id]}); ids are unique in "
                f"the whole document: rename one",
            )
        self.ids[node_id] = path
        self.stores[node_id] = node.get("into") if isinstance(node.get("into"), str) else None
        if kind == "flow":
            self.keys(node, _FLOW_KEYS, path, 'a "flow" node')
            if "flow" not in node:
                raise self.fail(path, 'missing "flow": give the nested flow\'s nodes and edges')
            self.scope(node["flow"], f"{path}.flow")
        elif kind == "parallel":
            self.parallel(node, path)
        else:
            self.function(node, path)
        return str(node_id)

    def parallel(self, node: Mapping[str, Any], path: str) -> None:
        self.keys(node, _PARALLEL_KEYS, path, 'a "parallel" node')
        branches = node.get("branches")
        if not isinstance(branches, list) or len(branches) < 2:
            raise self.fail(f"{path}.branches", "must list two or more sub-flows to run at once")
        for i, branch in enumerate(branches):
            self.scope(branch, f"{path}.branches[{i}]")
        self.options(node, path, ("merge", "max_concurrent", "error_handling", "into"))

    def function(self, node: Mapping[str, Any], path: str) -> None:
        kind = node["type"]
        if kind not in self.registry:
            close = difflib.get_close_matches(kind, list(self.registry), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                f"{path}.type",
                f"unknown type {kind!r}: {hint}register it, as from_ir(doc, nodes={{{kind!r}: "
                f"...}}) (the registry has: {', '.join(sorted(self.registry)) or 'nothing'}; "
                f'"flow" and "parallel" are built in)',
            )
        self.keys(node, _FUNCTION_KEYS, path, "a node")
        entry = self.registry[kind]
        batch = node.get("batch")
        if isinstance(entry, type):
            extra = [k for k in node if k not in ("id", "type")]
            if extra:
                raise self.fail(
                    f"{path}.{extra[0]}",
                    f"type {kind!r} is the node class {entry.__name__}, built with no "
                    f"arguments; a class node takes no {extra[0]!r} (set it in the class)",
                )
            return
        wants = _batch_kind(entry)
        if wants == "node" and batch is not None:
            raise self.fail(
                f"{path}.batch",
                f"type {kind!r} is a @node function, which runs once; register a function "
                f'decorated with @batch or @parallel_batch, or remove "batch"',
            )
        if wants in ("items", "flow") and batch is None:
            raise self.fail(
                path,
                f'type {kind!r} is a batch function: add "batch": '
                + ('{"flow": {...}}' if wants == "flow" else '{"items": "${shared.key}"}'),
            )
        self.options(node, path, _FUNCTION_KEYS[2:])
        if isinstance(batch, dict) and "flow" in batch:
            for key in node:
                if key not in _BATCH_FLOW_KEYS:
                    raise self.fail(
                        f"{path}.{key}",
                        f"a batch with a sub-flow takes only {', '.join(_BATCH_FLOW_KEYS[2:])}; "
                        f"give {key!r} to the sub-flow's nodes",
                    )
        alias = None
        if batch is not None:
            alias = self.batch(batch, f"{path}.batch", node, wants)
        self.params(node, path, entry, alias)

    def batch(self, batch: Any, path: str, node: Mapping[str, Any], wants: str) -> str | None:
        self.kind(batch, dict, path, "an object (the batch settings)")
        self.keys(batch, _BATCH_KEYS, path, '"batch"')
        self.options(batch, path, ("parallel", "max_concurrent", "error_handling", "max_retries"))
        self.options(batch, path, ("retry_wait",))
        if "flow" in batch:
            if wants == "items":
                raise self.fail(
                    f"{path}.flow",
                    f"type {node['type']!r} runs a function per item; a sub-flow per param "
                    f"dict needs a function registered with @batch(flow=...) or "
                    f"@parallel_batch(flow=...)",
                )
            for key in ("items", "as"):
                if key in batch:
                    raise self.fail(
                        f"{path}.{key}",
                        "a batch with a sub-flow runs it once per param dict the function "
                        f'returns: remove "{key}"',
                    )
            self.scope(batch["flow"], f"{path}.flow")
        elif wants == "flow":
            raise self.fail(path, f'type {node["type"]!r} runs a sub-flow per item: add "flow"')
        if batch.get("error_handling") == "continue" and not batch.get("parallel"):
            raise self.fail(
                f"{path}.error_handling",
                '"continue" collects failures of a parallel batch: add "parallel": true, or '
                'write "fail_fast"',
            )
        for ours, theirs in (("retries", "max_retries"), ("wait", "retry_wait")):
            if ours in node and theirs in batch:
                raise self.fail(
                    f"{path}.{theirs}",
                    f'the node also gives "{ours}": keep one of them ("{theirs}" is pflow\'s name)',
                )
        alias = batch.get("as", "item")
        self.kind(alias, str, f"{path}.as", "a string (the item's name in templates)")
        if alias in self.ids or alias == "shared":
            raise self.fail(
                f"{path}.as", f"{alias!r} is a node id or 'shared': choose another name"
            )
        items = batch.get("items")
        if isinstance(items, str):
            if not _WHOLE_TEMPLATE.match(items):
                raise self.fail(
                    f"{path}.items",
                    f'must be a template such as "${{shared.key}}" or "${{node.key}}", or a '
                    f"list, got {items!r}",
                )
            self.templates.append((items, f"{path}.items", None))
        elif items is not None:
            self.kind(items, list, f"{path}.items", "a template string or a list of items")
        return str(alias)

    def options(self, obj: Mapping[str, Any], path: str, names: tuple[str, ...]) -> None:
        for name in names:
            if name in obj and name not in ("params", "batch"):
                _check_option(self, name, obj[name], f"{path}.{name}")

    def params(self, node: Mapping[str, Any], path: str, entry: Any, alias: str | None) -> None:
        params = node.get("params")
        if params is None:
            return
        self.kind(params, dict, f"{path}.params", "an object: parameter name -> value")
        if node.get("workers") == "process":
            raise self.fail(
                f"{path}.params",
                "params are given to the function by a wrapper, which a worker process cannot "
                'import: use "workers": "thread", or drop "params"',
            )
        accepts = _named_parameters(_function_of(entry), skip=0 if alias is None else 1)
        for name, value in params.items():
            if accepts is not None and name not in accepts:
                raise self.fail(
                    f"{path}.params.{name}",
                    f"the function of type {node['type']!r} has no parameter {name!r}; its "
                    f"parameters: {', '.join(accepts) or 'none'}",
                )
            for text, where in _strings(value, f"{path}.params.{name}"):
                for match in _TEMPLATE.finditer(text):
                    self.templates.append((match.group(0), where, alias))

    def template(self, text: str, path: str, alias: str | None) -> None:
        match = cast(re.Match[str], _TEMPLATE.match(text))
        root, rest = match.group(1), match.group(2)
        if root == "shared":
            if not rest:
                raise self.fail(path, f"{text} reads the whole store: name a key, ${{shared.key}}")
            return
        if alias is not None and root in (alias, "item"):
            return
        if root in self.ids:
            if self.stores[root] is None:
                raise self.fail(
                    path,
                    f"{text} reads what node {root!r} stores, but it stores nothing: give "
                    f'node {root!r} "into": "key", or read the store with ${{shared.key}}',
                )
            return
        item = "" if alias is None else f", the item ({alias!r} or 'item')"
        raise self.fail(
            path,
            f"{text} names no node: a template starts with a node id{item} or 'shared.' "
            f"(ids: {', '.join(self.ids)})",
        )


def _check_option(checker: _Checker, name: str, value: Any, path: str) -> None:
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {
        "into": (lambda v: isinstance(v, str) and bool(v), "a non-empty string (a shared key)"),
        "overwrite": (lambda v: isinstance(v, bool), "true or false"),
        "parallel": (lambda v: isinstance(v, bool), "true or false"),
        "cache": (lambda v: isinstance(v, bool), "true or false"),
        "retries": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (extra attempts)"),
        "max_retries": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (attempts in all)"),
        "max_concurrent": (
            lambda v: v is None or (_is_int(v) and v >= 1),
            "an integer >= 1, or null for no bound",
        ),
        "wait": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
        "retry_wait": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
        "backoff": (lambda v: _is_number(v) and v >= 1, "a number >= 1"),
        "max_wait": (lambda v: v is None or (_is_number(v) and v >= 0), "seconds >= 0 or null"),
        "jitter": (lambda v: _is_number(v) and 0 <= v <= 1, "a fraction between 0 and 1"),
        "timeout": (lambda v: v is None or (_is_number(v) and v > 0), "seconds > 0 or null"),
        "per_second": (lambda v: v is None or (_is_number(v) and v > 0), "a rate > 0 or null"),
        "workers": (lambda v: v in _WORKERS, " or ".join(map(repr, _WORKERS))),
        "error_handling": (lambda v: v in _ERRORS, "'fail_fast' or 'continue'"),
        "merge": (lambda v: v in ("update", "append"), "'update' or 'append'"),
    }
    ok, what = rules[name]
    if not ok(value):
        raise checker.fail(path, f"must be {what}, got {_json_name(value)} {value!r:.60}")


# -- building a flow ---------------------------------------------------------------------


def from_ir(document: Mapping[str, Any] | str | os.PathLike[str], *, nodes: Registry) -> Flow[Any]:
    """Build a :class:`Flow` from a workflow document (a dict, or the path of a .json file).

    Each node's ``type`` names an entry of ``nodes``: a function decorated with ``@node``,
    ``@batch`` or ``@parallel_batch`` (its attached ``prep``/``post``/``fallback`` come
    along; its options come from the document), a plain function, or a node class (built
    with no arguments). ``"flow"`` and ``"parallel"`` are built in. The document is checked
    whole before anything is built: a problem is a :class:`FlowError` with its JSON path
    and the fix. The flow carries the document's canonical hash as ``flow.ir_hash``.
    """
    source, doc = _load(document)
    registry = _check_registry(nodes)
    checker = _Checker(source, registry)
    checker.document(doc)
    builder = _Builder(source, registry, checker.stores)
    flow = builder.flow(doc, "$")
    if isinstance(doc.get("name"), str):
        flow.name = doc["name"]
    flow.ir_hash = document_hash(doc)  # type: ignore[attr-defined]
    return flow


def _load(document: Any) -> tuple[str, Any]:
    if isinstance(document, Mapping):
        return "workflow document", copy.deepcopy(dict(document))
    if not isinstance(document, (str, os.PathLike)):
        raise TypeError(
            f"from_ir(document): a dict or the path of a .json file, got {type(document).__name__}"
        )
    path = Path(document)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowError(f"cannot read workflow {str(path)!r}: {exc.strerror or exc}") from None
    try:
        return str(path), json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlowError(
            f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); fix the "
            f"file's syntax"
        ) from None


def _check_registry(nodes: Any) -> dict[str, Any]:
    if not isinstance(nodes, Mapping):
        raise TypeError(f"from_ir(nodes=...): a dict of type name -> node, got {nodes!r:.60}")
    for name, entry in nodes.items():
        if not isinstance(name, str) or name in _RESERVED_TYPES:
            raise FlowError(
                f"from_ir(nodes=...): {name!r} cannot be a type name (a str other than "
                f"{' and '.join(map(repr, _RESERVED_TYPES))}); rename the entry"
            )
        usable = (
            isinstance(entry, (FunctionNode, FunctionBatchFlow))
            or (isinstance(entry, type) and issubclass(entry, BaseNode))
            or (callable(entry) and not isinstance(entry, BaseNode))
        )
        if not usable:
            raise FlowError(
                f"from_ir(nodes=...): entry {name!r} is {type(entry).__name__}; register a "
                f"function decorated with @node/@batch/@parallel_batch, a plain function or a "
                f"node class (not an instance: the document builds its own)"
            )
    return dict(nodes)


class _Builder:
    """Builds the nodes of a checked document."""

    def __init__(self, source: str, registry: Registry, stores: dict[str, str | None]) -> None:
        self.source, self.registry, self.stores = source, registry, stores

    def flow(self, scope: Mapping[str, Any], path: str, name: str | None = None) -> Flow[Any]:
        built = {n["id"]: self.built(n, f"{path}.nodes[{i}]") for i, n in enumerate(scope["nodes"])}
        for edge in scope.get("edges", []):
            target = None if edge["to"] is None else built[edge["to"]]
            built[edge["from"]].next(target, edge.get("action", "default"))
        start = built[scope.get("start_node", scope["nodes"][0]["id"])]
        return Flow(start, name=name)

    def built(self, spec: Mapping[str, Any], path: str) -> BaseNode:
        """The node ``spec`` describes; what its code refuses (a function whose signature
        does not fit, a class that cannot be built) is a FlowError with the node's path."""
        try:
            return self.node(spec, path)
        except FlowError:
            raise
        except (TypeError, ValueError) as exc:
            raise FlowError(f"{self.source}: {path}: {exc}") from None

    def node(self, spec: Mapping[str, Any], path: str) -> BaseNode:
        if spec["type"] == "flow":
            return self.flow(spec["flow"], f"{path}.flow", name=spec["id"])
        if spec["type"] == "parallel":
            branches = spec["branches"]
            return Parallel(
                *(self.flow(b, f"{path}.branches[{i}]") for i, b in enumerate(branches)),
                merge=spec.get("merge"),
                limit=spec.get("max_concurrent", DEFAULT_LIMIT),
                errors=_ERRORS[spec.get("error_handling", "fail_fast")],  # type: ignore[arg-type]
                into=spec.get("into"),
                name=spec["id"],
            )
        entry = self.registry[spec["type"]]
        if isinstance(entry, type):
            built: BaseNode = entry()
            built.name = spec["id"]
        else:
            built = self.function_node(spec, entry, path)
        built._ir_spec = spec  # type: ignore[attr-defined]  # to_ir gives it back
        return built

    def function_node(self, spec: Mapping[str, Any], entry: Any, path: str) -> BaseNode:
        batch = spec.get("batch")
        alias = None if batch is None else batch.get("as", "item")
        fn = _function_of(entry)
        if spec.get("params"):
            fn = _with_params(fn, spec["params"], alias, self.stores, spec["id"])
        options: dict[str, Any] = {"name": spec["id"]}
        for key in _FUNCTION_KEYS[4:]:
            if key in spec:
                options[key] = spec[key]
        if batch is None:
            built: FunctionNode[..., Any] | FunctionBatchFlow[..., Any] = FunctionNode(
                fn, **options
            )
        else:
            if "max_retries" in batch:
                options["retries"] = batch["max_retries"] - 1
            if "retry_wait" in batch:
                options["wait"] = batch["retry_wait"]
            built = self.batch_node(fn, batch, options, f"{path}.batch", spec["id"])
        _attach_phases(built, entry)
        return built

    def batch_node(
        self,
        fn: Callable[..., Any],
        batch: Mapping[str, Any],
        options: dict[str, Any],
        path: str,
        node_id: str,
    ) -> FunctionNode[..., Any] | FunctionBatchFlow[..., Any]:
        parallel = batch.get("parallel", False)
        if parallel:
            options["limit"] = batch.get("max_concurrent", DEFAULT_LIMIT)
            options["errors"] = _ERRORS[batch.get("error_handling", "fail_fast")]
        if "flow" in batch:
            sub = self.flow(batch["flow"], f"{path}.flow")
            return FunctionBatchFlow(fn, flow=sub, parallel=parallel, **options)
        items = _items_of(batch.get("items"), self.stores, node_id)
        if parallel:
            return FunctionParallelBatchNode(fn, items=items, **options)
        return FunctionBatchNode(fn, items=items, **options)


def _attach_phases(built: Any, entry: Any) -> None:
    """The registered node's prep, post and fallback are code: they come with its type."""
    for phase in ("_prep", "_post", "_fallback"):
        bound = getattr(entry, phase, None)
        if bound is not None:
            getattr(built, phase[1:])(bound.fn)


def _function_of(entry: Any) -> Callable[..., Any]:
    fn = entry.fn if isinstance(entry, (FunctionNode, FunctionBatchFlow)) else entry
    return cast("Callable[..., Any]", fn)


def _batch_kind(entry: Any) -> str:
    """What a registry entry runs: once ("node"), per item ("items"), per param dict
    ("flow"), or anything the document says ("any": a plain function)."""
    if isinstance(entry, FunctionBatchFlow):
        return "flow"
    if isinstance(entry, (FunctionBatchNode, FunctionParallelBatchNode)):
        return "items"
    if isinstance(entry, FunctionNode):
        return "node"
    return "any"


def _items_of(items: Any, stores: dict[str, str | None], owner: str) -> Any:
    if items is None:
        return None
    if isinstance(items, list):
        fixed = list(items)
        return lambda shared: list(fixed)
    match = _TEMPLATE.match(items)
    if match and match.group(1) == "shared" and match.group(2).count(".") == 1:
        return match.group(2)[1:]  # a plain store key, as items="key" in Python
    return lambda shared: _resolve(items, shared, None, None, stores, owner)


def _with_params(
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    alias: str | None,
    stores: dict[str, str | None],
    owner: str,
) -> Callable[..., Any]:
    """``fn`` with the document's params (their templates resolved per call) passed by name."""
    signature = inspect.signature(fn)
    takes_shared = "shared" in signature.parameters
    kept = [p for n, p in signature.parameters.items() if n not in params]
    if not takes_shared:
        kept.append(inspect.Parameter("shared", inspect.Parameter.KEYWORD_ONLY))
    n_data = 1 if alias is not None else 0

    def arguments(data: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        shared = kwargs["shared"] if takes_shared else kwargs.pop("shared")
        item = data[0] if n_data and data else None
        for name, value in params.items():
            kwargs[name] = _resolve(value, shared, item, alias, stores, owner)
        return kwargs

    if is_async_callable(fn):

        async def call_async(*data: Any, **kwargs: Any) -> Any:
            return await fn(*data, **arguments(data, kwargs))

        wrapper: Callable[..., Any] = call_async
    else:

        def call(*data: Any, **kwargs: Any) -> Any:
            return fn(*data, **arguments(data, kwargs))

        wrapper = call
    functools.update_wrapper(wrapper, fn)
    wrapper.__signature__ = signature.replace(parameters=_ordered(kept))  # type: ignore[attr-defined]
    return wrapper


def _ordered(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    return sorted(parameters, key=lambda p: p.kind)  # stable: keeps order within a kind


def _resolve(
    value: Any,
    shared: Any,
    item: Any,
    alias: str | None,
    stores: dict[str, str | None],
    owner: str = "items",
) -> Any:
    """``value`` with its templates filled in from the store and the item; a string that
    is one template becomes the value itself (a list stays a list)."""
    if isinstance(value, dict):
        return {k: _resolve(v, shared, item, alias, stores, owner) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, shared, item, alias, stores, owner) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(match: re.Match[str]) -> Any:
        root, rest = match.group(1), match.group(2)
        parts = rest.split(".")[1:]
        if root == "shared":
            target, start = shared, match.group(0)
        elif alias is not None and root in (alias, "item"):
            target, start = item, "the item"
        else:
            key = stores[root]
            if key not in shared:
                raise FlowError(
                    f"node {owner!r}: template {match.group(0)} reads shared[{key!r}], which "
                    f"node {root!r} has not stored (yet): run {root!r} before {owner!r}"
                )
            target, start = shared[key], f"shared[{key!r}]"
        for part in parts:
            target = _step(target, part, owner, match.group(0), start)
        return target

    if _WHOLE_TEMPLATE.match(value):
        return lookup(cast(re.Match[str], _TEMPLATE.match(value)))
    return _TEMPLATE.sub(lambda m: str(lookup(m)), value)


def _step(target: Any, part: str, owner: str, template: str, start: str) -> Any:
    try:
        if isinstance(target, Mapping):
            return target[part]
        if isinstance(target, (list, tuple)) and part.isdigit():
            return target[int(part)]
        return getattr(target, part)
    except (KeyError, IndexError, AttributeError):
        raise FlowError(
            f"node {owner!r}: template {template}: {start} has no {part!r} "
            f"({type(target).__name__}); check the node that should have stored it"
        ) from None


# -- writing a document ------------------------------------------------------------------


def to_ir(flow: BaseNode, *, nodes: Registry | None = None) -> dict[str, Any]:
    """The workflow document of ``flow``, such that ``from_ir(doc, nodes=...)`` runs as it.

    A node's ``type`` is its name in ``nodes`` (found by identity or by function), else its
    function's ``__name__`` (its class's name for a class node). What a document cannot hold
    is refused with a :class:`FlowError` naming the node: ``items=`` as a function, a
    ``limiter=``, an ``Executor`` as ``workers=``, a ``Cache`` with settings, ``merge=`` as a
    function, flow subclasses of your own.
    """
    if not isinstance(flow, Flow) or type(flow) not in (Flow, AsyncFlow):
        raise FlowError(
            f"to_ir: {node_name(flow)} is a {type(flow).__name__}; a document describes a "
            f"Flow (or AsyncFlow): wrap the node as Flow(node)"
        )
    if flow.start_node is None:
        raise flow._no_start()
    writer = _Writer(nodes or {})
    doc: dict[str, Any] = {"ir_version": IR_VERSION, **writer.scope(flow.start_node)}
    if "name" in vars(flow):
        doc["name"] = flow.name
    return doc


class _Writer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.used: set[str] = set()

    def new_id(self, node: BaseNode) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", node_name(node)) or "node"
        if not re.match(_ID, base) or base in _RESERVED_IDS:
            base = f"n_{base}"
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name

    def scope(self, start: BaseNode) -> dict[str, Any]:
        ids: dict[int, str] = {}
        order: list[BaseNode] = []
        todo = [start]
        while todo:
            node = todo.pop(0)
            if id(node) in ids:
                continue
            ids[id(node)] = self.new_id(node)
            order.append(node)
            todo.extend(n for n in node.successors.values() if n is not None)
        specs = [self.node(node, ids[id(node)]) for node in order]
        edges = []
        for node in order:
            for action, successor in node.successors.items():
                edge: dict[str, Any] = {"from": ids[id(node)]}
                edge["to"] = None if successor is None else ids[id(successor)]
                if action != "default":
                    edge["action"] = action
                edges.append(edge)
        out: dict[str, Any] = {"nodes": specs}
        if edges:
            out["edges"] = edges
        return out

    def node(self, node: BaseNode, node_id: str) -> dict[str, Any]:
        if isinstance(node, Parallel):
            return self.parallel(node, node_id)
        if isinstance(node, (FunctionNode, FunctionBatchFlow)):
            return self.function(node, node_id)
        if type(node) in (Flow, AsyncFlow):
            flow = cast(Flow[Any], node)
            if flow.start_node is None:
                raise flow._no_start()
            return {"id": node_id, "type": "flow", "flow": self.scope(flow.start_node)}
        cls = type(node)
        done = getattr(node, "_ir_spec", None)
        name = done["type"] if done is not None else self.name_of(cls, cls.__name__)
        if isinstance(node, Flow) or not _built_bare(cls):
            raise FlowError(
                f"to_ir: node {node_name(node)!r} is a {cls.__name__}, which a document cannot "
                f"describe (it is built with no arguments); use @node functions, Flow and "
                f"Parallel, or a node class whose __init__ takes no arguments"
            )
        return {"id": node_id, "type": name}

    def name_of(self, entry: Any, default: str) -> str:
        for name, registered in self.registry.items():
            if registered is entry:
                return name
        fn = getattr(entry, "fn", None)
        for name, registered in self.registry.items():
            if fn is not None and getattr(registered, "fn", registered) is fn:
                return name
        return default

    def parallel(self, node: Parallel, node_id: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"id": node_id, "type": "parallel"}
        spec["branches"] = [self.scope(_inner(b)) for b in node.branches]
        if node.merge is not None:
            if not isinstance(node.merge, str):
                raise _cannot(node, "merge=", "a function", 'merge="update" or "append"')
            spec["merge"] = node.merge
        if node.limit != DEFAULT_LIMIT:
            spec["max_concurrent"] = node.limit
        if node.errors == "collect":
            spec["error_handling"] = "continue"
        if node.into is not None:
            spec["into"] = node.into
        return spec

    def function(self, node: Any, node_id: str) -> dict[str, Any]:
        done = getattr(node, "_ir_spec", None)
        spec: dict[str, Any] = {"id": node_id}
        if done is not None:  # built from a document: its type and params as written
            spec["type"] = done["type"]
            if "params" in done:
                spec["params"] = copy.deepcopy(done["params"])
        else:
            spec["type"] = self.name_of(node, str(getattr(node.fn, "__name__", node_name(node))))
        spec.update(_options(node))
        if node.kind != "node":
            spec["batch"] = self.batch(node, done)
        return spec

    def batch(self, node: Any, done: Mapping[str, Any] | None) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        given = {} if done is None else done.get("batch", {})
        if isinstance(node, FunctionBatchFlow):
            # A batch flow walks from its start node, successors included.
            start = cast(BaseNode, node.start_node)
            batch["flow"] = self.scope(_inner(start) if type(start) in (Flow, AsyncFlow) else start)
        elif "items" in given:
            batch["items"] = copy.deepcopy(given["items"])
        elif isinstance(node._items, str):
            batch["items"] = "${shared." + node._items + "}"
        elif node._items is not None:
            raise _cannot(node, "items=", "a function", "items='key' or an attached @prep")
        if "as" in given:
            batch["as"] = given["as"]
        if node.kind == "parallel_batch":
            batch["parallel"] = True
            if node.limit != DEFAULT_LIMIT:
                batch["max_concurrent"] = node.limit
            if node.errors == "collect":
                batch["error_handling"] = "continue"
        return batch


def _options(node: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.into is not None:
        out["into"] = node.into
    if node.overwrite:
        out["overwrite"] = True
    if node.max_retries > 1:
        out["retries"] = node.max_retries - 1
    if node.wait:
        out["wait"] = node.wait
    for key, default in (("backoff", 1.0), ("max_wait", None), ("jitter", 0.0), ("timeout", None)):
        value = getattr(node, key, default)
        if value != default:
            out[key] = value
    rate = getattr(node, "rate_limit", None)
    if rate is not None:
        out["per_second"] = rate.per_second
    cache = getattr(node, "_cache", None)
    if cache is not None:
        if (cache.key, cache.ttl, cache.version) != (None, None, None):
            raise _cannot(node, "cache=", "a Cache(...) with settings", "cache=True")
        out["cache"] = True
    if getattr(node, "limiter", None) is not None:
        raise _cannot(node, "limiter=", "a shared limiter object", "per_second= or limit=")
    if node.workers != "thread":
        if node.workers not in _WORKERS:
            raise _cannot(node, "workers=", "an executor", "workers='thread'/'process'/'inline'")
        out["workers"] = node.workers
    return out


def _cannot(node: BaseNode, option: str, what: str, instead: str) -> FlowError:
    return FlowError(
        f"to_ir: node {node_name(node)!r} has {option} {what}, which a document cannot hold "
        f"(it is data only); use {instead}"
    )


def _inner(node: BaseNode) -> BaseNode:
    """Where a sub-flow written as ``Flow(start)`` starts; a lone node stands alone."""
    if type(node) in (Flow, AsyncFlow):
        start = cast(Flow[Any], node).start_node
        if start is not None:
            return start
    return _alone(node)


def _alone(node: BaseNode) -> BaseNode:
    """A branch that is a single node: its successors are not part of the branch."""
    if not node.successors:
        return node
    alone = copy.copy(node)
    alone.successors = {}
    return alone


def _built_bare(cls: type) -> bool:
    try:
        inspect.signature(cls).bind()
    except TypeError:
        return False
    except ValueError:
        return True
    return True


# -- small helpers -----------------------------------------------------------------------


def _named_parameters(fn: Callable[..., Any], skip: int) -> list[str] | None:
    """The parameters ``fn`` can take by name after its ``skip`` data parameters (the item)
    (``None``: any, it takes ``**kwargs``)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _RESERVED_NAMES
    ]


_RESERVED_NAMES = ("shared", "params", "local")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _strings(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _strings(inner, f"{path}[{i}]")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _json_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _one_of(ids: list[str]) -> str:
    return f"its nodes: {', '.join(ids)}"

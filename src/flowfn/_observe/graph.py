"""Pictures of a flow: Mermaid and Graphviz DOT text of its nodes, actions and nested flows.

The walk follows what a run would follow: from a flow's ``start_node`` through each node's
``successors`` by action. A flow used as a node, and a batch flow (whose ``start_node`` is
what it runs per item), is drawn as a box holding its own graph: a Mermaid ``subgraph``, a
DOT ``cluster``. Each node object is drawn once per flow that holds it, so loops point back
to the node they loop to, and a node shared by two flows appears in both. An action that
leads to ``None`` ends at an "end" circle. Nothing is run or copied.

Labels are node names (:func:`flowfn._engine.errors.node_name`) with a mark for batches:
``"⟳ batch"``, or ``"⇉ parallel"`` and the limit after a multiplication sign (∞ for none).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from .._dsl.branches import Parallel
from .._engine.errors import node_name
from .._engine.flows import AsyncParallelBatchFlow, BatchFlow, Flow
from .._engine.nodes import AsyncParallelBatchNode, BaseNode, BatchNode

__all__ = [
    "TIMES",
    "Box",
    "Edge",
    "Scope",
    "dot_string",
    "kind_of",
    "layout",
    "mark",
    "mermaid_string",
    "to_dot",
    "to_mermaid",
]

Kind = Literal["node", "batch", "parallel"]
TIMES = "\N{MULTIPLICATION SIGN}"  # before a parallel batch's limit
#: "node" a step, "end" where an action leads to None, "again" a flow drawn inside itself.
Shape = Literal["node", "end", "again"]


@dataclass
class Box:
    """One thing drawn: a node, a flow (``inside`` holds its graph), or the end of a flow."""

    id: str
    label: str
    kind: Kind = "node"
    shape: Shape = "node"
    inside: Scope | None = None


@dataclass
class Edge:
    """``src`` leads to ``dst`` when ``src`` returns ``action``."""

    src: str
    dst: str
    action: str


@dataclass
class Scope:
    """The boxes and edges of one flow's graph, boxes in the order the walk found them."""

    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def kind_of(node: BaseNode) -> tuple[Kind, int | None]:
    """``("parallel", limit)``, ``("batch", None)`` or ``("node", None)`` for ``node``.

    Class nodes and flows are told apart by class; the DSL's ``FunctionBatchFlow`` by its
    ``parallel`` attribute, and any other DSL node by its ``kind``.
    """
    parallel_flow = isinstance(node, BatchFlow) and getattr(node, "parallel", False) is True
    dsl_kind = getattr(node, "kind", None)
    if (
        parallel_flow
        or isinstance(node, (AsyncParallelBatchNode, AsyncParallelBatchFlow))
        or dsl_kind == "parallel_batch"
    ):
        limit = getattr(node, "limit", None)
        return "parallel", limit if isinstance(limit, int) else None
    if isinstance(node, (BatchNode, BatchFlow)) or dsl_kind == "batch":
        return "batch", None
    return "node", None


def mark(kind: Kind, limit: int | None) -> str:
    """The suffix a label gets for its kind: none, ``" ⟳ batch"``, or for a parallel batch
    ``" ⇉ parallel"``, a multiplication sign and the limit (``∞`` for none)."""
    if kind == "batch":
        return " ⟳ batch"
    if kind == "parallel":
        return f" ⇉ parallel {TIMES}{'∞' if limit is None else limit}"
    return ""


class _Walk:
    """Numbers boxes ``n0``, ``n1``, ... in the order it finds them, across all flows."""

    def __init__(self) -> None:
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return f"n{self.count - 1}"

    def scope(self, start: BaseNode, open_flows: tuple[int, ...]) -> Scope:
        """What one flow draws: ``start`` and every node reachable from it by successors.

        ``open_flows`` are the ids of the flows being drawn around this one.
        """
        scope = Scope()
        ids: dict[int, str] = {}  # id(node) -> its box's id, in this flow
        todo: deque[BaseNode] = deque()
        end: list[str] = []  # the id of this flow's end circle, once an action needs it

        def see(node: BaseNode) -> str:
            if id(node) not in ids:
                box = self.box(node, open_flows)
                ids[id(node)] = box.id
                scope.boxes.append(box)
                todo.append(node)
            return ids[id(node)]

        see(start)
        while todo:
            node = todo.popleft()
            for action, successor in node.successors.items():
                if successor is None:
                    if not end:
                        end.append(self.new_id())
                        scope.boxes.append(Box(end[0], "end", shape="end"))
                    dst = end[0]
                else:
                    dst = see(successor)
                scope.edges.append(Edge(ids[id(node)], dst, action))
        return scope

    def box(self, node: BaseNode, open_flows: tuple[int, ...]) -> Box:
        """``node``'s box; a flow's box holds its own graph (an empty flow's holds none),
        parallel branches' box holds each branch, side by side."""
        kind, limit = kind_of(node)
        label = node_name(node) + mark(kind, limit)
        if isinstance(node, Parallel):
            box = Box(self.new_id(), f"{node_name(node)} ⫴ branches", "parallel")
            box.inside = Scope([self.box(branch, open_flows) for branch in node.branches])
            return box
        if not isinstance(node, Flow):
            return Box(self.new_id(), label, kind)
        if id(node) in open_flows:  # a flow that runs itself again: no endless picture
            return Box(self.new_id(), f"↻ {label}", kind, shape="again")
        if node.start_node is None:
            return Box(self.new_id(), f"{label} (empty flow)", kind)
        box = Box(self.new_id(), label, kind)
        box.inside = self.scope(node.start_node, (*open_flows, id(node)))
        return box


def layout(root: BaseNode) -> Scope:
    """The top level of ``root``'s picture.

    A plain flow (``Flow``, ``AsyncFlow`` or a subclass, not a batch flow) is drawn as its
    graph, without a box around it. Anything else (a node, a batch flow) is drawn as the
    start of a flow: its own box, then what follows it.
    """
    walk = _Walk()
    if isinstance(root, Flow) and kind_of(root)[0] == "node":
        if root.start_node is None:
            return Scope()
        return walk.scope(root.start_node, (id(root),))
    return walk.scope(root, ())


# -- Mermaid ----------------------------------------------------------------------------

_MERMAID_ESCAPES = frozenset('"#&<>|`')


def mermaid_string(text: str) -> str:
    """``text`` as a quoted Mermaid string: markup characters as ``#code;``, no line breaks."""
    out = []
    for char in text:
        if char in _MERMAID_ESCAPES:
            out.append(f"#{ord(char)};")
        elif char < " " or char == "\x7f":
            out.append(" ")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _mermaid_node(box: Box) -> str:
    text = mermaid_string(box.label)
    if box.shape == "end":
        return f"{box.id}(({text}))"
    if box.shape == "again":
        return f"{box.id}({text})"
    if box.kind == "batch":
        return f"{box.id}[[{text}]]"  # a "subroutine" box
    if box.kind == "parallel":
        return f"{box.id}[/{text}/]"  # a parallelogram
    return f"{box.id}[{text}]"


def _mermaid_scope(scope: Scope, indent: str) -> list[str]:
    lines = []
    for box in scope.boxes:
        if box.inside is None:
            lines.append(indent + _mermaid_node(box))
            continue
        lines.append(f"{indent}subgraph {box.id} [{mermaid_string(box.label)}]")
        lines.extend(_mermaid_scope(box.inside, indent + "    "))
        lines.append(f"{indent}end")
    for edge in scope.edges:
        label = "" if edge.action == "default" else f"|{mermaid_string(edge.action)}|"
        lines.append(f"{indent}{edge.src} -->{label} {edge.dst}")
    return lines


def to_mermaid(root: BaseNode) -> str:
    """``root``'s graph as Mermaid ``flowchart TD`` text (see :func:`layout`).

    One line per node (``n0["name"]``; batch nodes ``[[...]]``, parallel batch nodes
    ``[/.../]``, ends ``(("end"))``), a ``subgraph nX ["name"]`` ... ``end`` block per nested
    or batch flow, and ``src -->|"action"| dst`` per successor (no label for ``"default"``).
    """
    return "\n".join(["flowchart TD", *_mermaid_scope(layout(root), "    ")]) + "\n"


# -- Graphviz DOT -----------------------------------------------------------------------


def dot_string(text: str) -> str:
    """``text`` as a quoted DOT string: backslashes and quotes escaped, line breaks as spaces."""
    text = "".join(" " if char < " " or char == "\x7f" else char for char in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DOT_NODE = {
    "node": "",
    "batch": ", peripheries=2",  # a double border
    "parallel": ", shape=parallelogram",
}
_DOT_CLUSTER = {"node": "rounded", "batch": "rounded,dashed", "parallel": "rounded,bold"}


def _dot_node(box: Box) -> str:
    if box.shape == "end":
        return f"{box.id} [label={dot_string(box.label)}, shape=circle, style=bold]"
    if box.shape == "again":
        return f"{box.id} [label={dot_string(box.label)}, style=dotted]"
    return f"{box.id} [label={dot_string(box.label)}{_DOT_NODE[box.kind]}]"


def _anchor(box: Box, *, tail: bool) -> str:
    """The node an edge to or from ``box`` is drawn with: the box itself, or for a cluster
    its first node (where an edge into it points) or its last (where an edge leaves)."""
    while box.inside is not None:
        box = box.inside.boxes[-1 if tail else 0]
    return box.id


def _dot_edge(edge: Edge, boxes: dict[str, Box]) -> str:
    src, dst = boxes[edge.src], boxes[edge.dst]
    attrs = [] if edge.action == "default" else [f"label={dot_string(edge.action)}"]
    if src is not dst:  # clipping a loop of a cluster to itself would lose the loop
        if dst.inside is not None:
            attrs.append(f"lhead=cluster_{dst.id}")
        if src.inside is not None:
            attrs.append(f"ltail=cluster_{src.id}")
        if src.inside is not None or dst.inside is not None:
            attrs.append("minlen=2")  # room for the arrow between the cluster borders
    suffix = f" [{', '.join(attrs)}]" if attrs else ""
    return f"{_anchor(src, tail=True)} -> {_anchor(dst, tail=False)}{suffix}"


def _dot_scope(scope: Scope, indent: str) -> list[str]:
    lines, boxes = [], {box.id: box for box in scope.boxes}
    for box in scope.boxes:
        if box.inside is None:
            lines.append(f"{indent}{_dot_node(box)};")
            continue
        lines.append(f"{indent}subgraph cluster_{box.id} {{")
        lines.append(f"{indent}    label={dot_string(box.label)};")
        lines.append(f'{indent}    style="{_DOT_CLUSTER[box.kind]}";')
        lines.extend(_dot_scope(box.inside, indent + "    "))
        lines.append(f"{indent}}}")
    lines.extend(f"{indent}{_dot_edge(edge, boxes)};" for edge in scope.edges)
    return lines


def to_dot(root: BaseNode) -> str:
    """``root``'s graph as Graphviz DOT text (see :func:`layout`), for ``dot -Tpng``.

    One ``nX [label="name"]`` per node (batch nodes with a double border, parallel batch
    nodes as parallelograms, ends as circles), a ``subgraph cluster_nX`` per nested or batch
    flow (dashed for batch, bold for parallel), and ``nA -> nB [label="action"]`` per
    successor; an edge to or from a flow is drawn to its first node and clipped at its
    cluster (``lhead``/``ltail``).
    """
    head = [
        "digraph flowfn {",
        "    compound=true;",
        '    node [shape=box, style=rounded, fontname="DejaVu Sans"];',
        '    edge [fontname="DejaVu Sans", fontsize=10];',
        '    graph [fontname="DejaVu Sans"];',
    ]
    return "\n".join([*head, *_dot_scope(layout(root), "    "), "}"]) + "\n"

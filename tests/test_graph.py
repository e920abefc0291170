"""Pictures of flows: Mermaid and DOT text, parsed back into boxes, edges and nesting.

Both renderers draw one ``Scope`` (see ``flowfn._observe.graph``), so each test parses the Mermaid
text and the DOT text into the same ``Picture`` and compares the two, then checks the
picture itself: labels, kinds, which flow each box sits in, and the edges with their actions.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flowfn import (
    AsyncBatchNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchNode,
    Flow,
    Node,
    batch,
    node,
    parallel_batch,
)
from flowfn._observe.graph import layout, to_dot, to_mermaid

ROOT = Path(__file__).resolve().parent.parent
TIMES = "\N{MULTIPLICATION SIGN}"


# -- parsing the pictures back ----------------------------------------------------------


@dataclass
class Picture:
    """What a picture says: each box's label, kind and enclosing flow, and the edges."""

    labels: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # node/batch/parallel/end/again, flow-*
    parent: dict[str, str | None] = field(default_factory=dict)
    edges: list[tuple[str, str, str | None]] = field(default_factory=list)  # src, dst, action

    def label_edges(self) -> Counter[tuple[str, str, str | None]]:
        return Counter((self.labels[s], self.labels[d], a) for s, d, a in self.edges)

    def ids(self, label: str) -> list[str]:
        return [box for box, text in self.labels.items() if text == label]

    def one(self, label: str) -> str:
        (box,) = self.ids(label)
        return box

    def children(self, box: str | None) -> list[str]:
        return [self.labels[child] for child, up in self.parent.items() if up == box]


MERMAID_SHAPES = {
    ("[[", "]]"): "batch",
    ("[/", "/]"): "parallel",
    ("((", "))"): "end",
    ("[", "]"): "node",
    ("(", ")"): "again",
}
MERMAID_NODE = re.compile(r'^(n\d+)(\[\[|\[/|\(\(|\[|\()"([^"]*)"(\]\]|/\]|\)\)|\]|\))$')
MERMAID_SUBGRAPH = re.compile(r'^subgraph (n\d+) \["([^"]*)"\]$')
MERMAID_EDGE = re.compile(r'^(n\d+) -->(?:\|"([^"]*)"\|)? (n\d+)$')


def mermaid_text(quoted: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), quoted)


def parse_mermaid(text: str) -> Picture:
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert text.endswith("\n")
    picture, stack = Picture(), [None]
    for line in lines[1:]:
        depth = (len(line) - len(line.lstrip(" "))) // 4
        line = line.strip()
        assert depth == len(stack) - (line == "end"), f"bad indentation: {line!r}"
        if match := MERMAID_SUBGRAPH.match(line):
            box, label = match.groups()
            picture.labels[box], picture.parent[box] = mermaid_text(label), stack[-1]
            stack.append(box)
        elif line == "end":
            stack.pop()
        elif match := MERMAID_NODE.match(line):
            box, opening, label, closing = match.groups()
            picture.labels[box], picture.parent[box] = mermaid_text(label), stack[-1]
            picture.kinds[box] = MERMAID_SHAPES[opening, closing]
        elif match := MERMAID_EDGE.match(line):
            src, action, dst = match.groups()
            assert picture.parent[src] == picture.parent[dst] == stack[-1]
            picture.edges.append((src, dst, None if action is None else mermaid_text(action)))
        else:
            raise AssertionError(f"not a Mermaid line flowfn writes: {line!r}")
    assert stack == [None], "unclosed subgraph"
    for box in picture.labels:  # a subgraph's kind: from its label's mark
        if box not in picture.kinds:
            label = picture.labels[box]
            mark = "parallel" if " ⇉ parallel " in label else "batch" if "⟳ batch" in label else ""
            picture.kinds[box] = f"flow-{mark or 'node'}"
    return picture


DOT_STRING = r'"((?:[^"\\]|\\.)*)"'
DOT_NODE = re.compile(rf"^(n\d+) \[label={DOT_STRING}(.*)\];$")
DOT_EDGE = re.compile(r"^(n\d+) -> (n\d+)(?: \[(.*)\])?;$")
DOT_ATTR = re.compile(rf"(\w+)=({DOT_STRING}|[\w.]+)")
DOT_KINDS = {
    "": "node",
    ", peripheries=2": "batch",
    ", shape=parallelogram": "parallel",
    ", shape=circle, style=bold": "end",
    ", style=dotted": "again",
}
DOT_CLUSTER_KINDS = {"rounded": "node", "rounded,dashed": "batch", "rounded,bold": "parallel"}


def dot_text(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted)


def parse_dot(text: str) -> Picture:
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "digraph flowfn {"
    assert lines[-1] == "}"
    picture, stack = Picture(), [None]
    for line in lines[1:-1]:
        if match := re.match(r"^subgraph cluster_(n\d+) \{$", line):
            box = match.group(1)
            picture.parent[box] = stack[-1]
            stack.append(box)
        elif line == "}":
            stack.pop()
        elif match := re.match(rf"^label={DOT_STRING};$", line):
            picture.labels[stack[-1]] = dot_text(match.group(1))  # type: ignore[index]
        elif match := re.match(r'^style="([\w,]+)";$', line):
            picture.kinds[stack[-1]] = f"flow-{DOT_CLUSTER_KINDS[match.group(1)]}"  # type: ignore[index]
        elif match := DOT_NODE.match(line):
            box, label, rest = match.groups()
            picture.labels[box], picture.parent[box] = dot_text(label), stack[-1]
            picture.kinds[box] = DOT_KINDS[rest]
        elif match := DOT_EDGE.match(line):
            src, dst, attr_text = match.groups()
            attrs = {k: v for k, v, _ in DOT_ATTR.findall(attr_text or "")}
            src = attrs.pop("ltail", "cluster_" + src).removeprefix("cluster_")
            dst = attrs.pop("lhead", "cluster_" + dst).removeprefix("cluster_")
            if "minlen" in attrs:
                assert attrs.pop("minlen") == "2"
                assert picture.kinds[src].startswith("flow") or picture.kinds[dst].startswith(
                    "flow"
                )
            action = attrs.pop("label", None)
            assert not attrs, attrs
            picture.edges.append((src, dst, None if action is None else dot_text(action[1:-1])))
        elif not re.match(r"^(compound=true|node \[.*\]|edge \[.*\]|graph \[.*\]);$", line):
            raise AssertionError(f"not a DOT line flowfn writes: {line!r}")
    assert stack == [None], "unclosed cluster"
    for src, dst, _ in picture.edges:
        assert picture.parent[src] == picture.parent[dst], "an edge across flows"
    return picture


def pictures(flow: Any) -> Picture:
    """The flow's Mermaid and DOT pictures, parsed, after checking that they agree."""
    mermaid, dot = parse_mermaid(to_mermaid(flow)), parse_dot(to_dot(flow))
    assert mermaid == dot
    if isinstance(flow, Flow):
        assert flow.to_mermaid() == to_mermaid(flow)
        assert flow.to_dot() == to_dot(flow)
    return mermaid


# -- the flows drawn --------------------------------------------------------------------


class Split(BatchNode):
    def prep(self, shared: Any) -> Any:
        raise AssertionError("drawing a flow runs nothing")


def review_flow() -> Flow:
    @node
    def check(shared: dict[str, Any]) -> None:
        pass

    @node
    def fix(shared: dict[str, Any]) -> None:
        pass

    check >> fix
    review = Flow(check)
    review.name = "review"
    return review


def big_flow() -> Flow:
    """Branching, a loop, a nested flow, a DSL parallel batch flow, a class batch node, an end."""

    @node
    def load(shared: dict[str, Any]) -> None:
        pass

    @node
    def route(shared: dict[str, Any]) -> str:
        return "long"

    @node
    def summarize(shared: dict[str, Any]) -> None:
        pass

    @node
    def retry(shared: dict[str, Any]) -> None:
        pass

    @node
    def per_item(item: str) -> None:
        pass

    @parallel_batch(flow=Flow(per_item), limit=3)
    def fan_out(shared: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    load >> route
    route - "long" >> summarize >> Split()
    route - "retry" >> retry >> route  # a loop back to an earlier node
    route - "review" >> review_flow() >> fan_out
    route - "stop" >> None
    return Flow(load)


BIG_MERMAID = f"""\
flowchart TD
    n0["load"]
    n1["route"]
    n2["summarize"]
    n3["retry"]
    subgraph n4 ["review"]
        n5["check"]
        n6["fix"]
        n5 --> n6
    end
    n7(("end"))
    n8[["Split ⟳ batch"]]
    subgraph n9 ["fan_out ⇉ parallel {TIMES}3"]
        subgraph n10 ["Flow"]
            n11["per_item"]
        end
    end
    n0 --> n1
    n1 -->|"long"| n2
    n1 -->|"retry"| n3
    n1 -->|"review"| n4
    n1 -->|"stop"| n7
    n2 --> n8
    n3 --> n1
    n4 --> n9
"""


# -- the tests --------------------------------------------------------------------------


def test_mermaid_text_of_a_flow_with_branches_a_loop_nesting_and_batches() -> None:
    assert big_flow().to_mermaid() == BIG_MERMAID


def test_the_picture_has_one_box_per_node_and_one_edge_per_action() -> None:
    picture = pictures(big_flow())
    assert list(picture.labels) == [f"n{i}" for i in range(12)]  # numbered in discovery order
    assert picture.children(None) == [
        "load",
        "route",
        "summarize",
        "retry",
        "review",
        "end",
        "Split ⟳ batch",
        f"fan_out ⇉ parallel {TIMES}3",
    ]
    assert picture.label_edges() == Counter(
        [
            ("load", "route", None),  # "default": no label
            ("route", "summarize", "long"),
            ("route", "retry", "retry"),
            ("retry", "route", None),  # the loop points back to the same box
            ("route", "review", "review"),
            ("route", "end", "stop"),  # `>> None`
            ("summarize", "Split ⟳ batch", None),
            ("review", f"fan_out ⇉ parallel {TIMES}3", None),  # flow to flow
            ("check", "fix", None),  # inside the nested flow
        ]
    )
    assert picture.kinds[picture.one("Split ⟳ batch")] == "batch"
    assert picture.kinds[picture.one("end")] == "end"
    assert picture.kinds[picture.one("review")] == "flow-node"
    fan_out = picture.one(f"fan_out ⇉ parallel {TIMES}3")
    assert picture.kinds[fan_out] == "flow-parallel"
    assert picture.children(fan_out) == ["Flow"]  # the sub-flow it runs per item
    assert picture.children(picture.one("Flow")) == ["per_item"]
    assert picture.children(picture.one("review")) == ["check", "fix"]


def test_every_kind_of_batch_is_marked() -> None:
    @batch(items="xs")
    def each(x: int) -> int:
        return x

    @parallel_batch(items="xs", limit=7)
    def at_once(x: int) -> int:
        return x

    @batch(flow=Flow(Node()))
    def flows_one_by_one(shared: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    class Chunks(AsyncBatchNode):
        pass

    class Calls(AsyncParallelBatchNode):
        pass

    class Orders(AsyncParallelBatchFlow):
        pass

    start = Node()
    (
        start
        >> each
        >> at_once
        >> flows_one_by_one
        >> Chunks()
        >> Calls(limit=None)
        >> Orders(Flow(Node()), limit=5)
        >> BatchFlow(Node())
    )
    picture = pictures(Flow(start))
    assert [(picture.labels[box], picture.kinds[box]) for box in picture.ids("Node")] == [
        ("Node", "node")
    ] * 4
    top = {picture.labels[box]: picture.kinds[box] for box, up in picture.parent.items() if not up}
    assert top == {
        "Node": "node",
        "each ⟳ batch": "batch",
        f"at_once ⇉ parallel {TIMES}7": "parallel",
        "flows_one_by_one ⟳ batch": "flow-batch",
        "Chunks ⟳ batch": "batch",
        f"Calls ⇉ parallel {TIMES}∞": "parallel",  # limit=None: no bound
        f"Orders ⇉ parallel {TIMES}5": "flow-parallel",
        "BatchFlow ⟳ batch": "flow-batch",
    }


def test_labels_are_escaped() -> None:
    first, second = Node(), Node()
    first.name = 'say "hi" <b>#1;</b> | a & b `x`\nnext line \\ done'
    second.name = "[weird] (name) {x}; end"
    first - 'go "now" | #2;' >> second
    picture = pictures(Flow(first))
    assert picture.label_edges() == Counter(
        [
            (
                'say "hi" <b>#1;</b> | a & b `x` next line \\ done',  # the line break: a space
                "[weird] (name) {x}; end",
                'go "now" | #2;',
            )
        ]
    )
    mermaid = to_mermaid(Flow(first))
    for unsafe in ('""', "<b>", "#1;", "| a", "`x`"):
        assert unsafe not in mermaid
    assert 'label="say \\"hi\\" <b>#1;</b> | a & b `x` next line \\\\ done"' in to_dot(Flow(first))


def test_a_node_in_two_flows_is_drawn_in_each_and_self_loops_stay_put() -> None:
    shared_step, again = Node(), Node()
    shared_step.name, again.name = "shared_step", "again"
    shared_step >> again
    again - "more" >> again
    first, second = Flow(shared_step), Flow(shared_step)
    first.name, second.name = "first", "second"
    first >> second
    picture = pictures(Flow(first))
    assert len(picture.ids("shared_step")) == 2
    for flow in ("first", "second"):
        assert picture.children(picture.one(flow)) == ["shared_step", "again"]
    assert picture.label_edges() == Counter(
        [("first", "second", None)]
        + [("shared_step", "again", None), ("again", "again", "more")] * 2
    )


def test_a_flow_inside_itself_is_drawn_once_then_referred_to() -> None:
    step = Node()
    outer = Flow(step)
    outer.name = "outer"
    step - "deeper" >> outer  # legal: the flow runs itself again
    picture = pictures(Flow(outer))
    assert picture.children(picture.one("outer")) == ["Node", "↻ outer"]
    assert picture.kinds[picture.one("↻ outer")] == "again"
    assert picture.label_edges() == Counter([("Node", "↻ outer", "deeper")])


def test_what_the_top_level_of_a_picture_is() -> None:
    assert to_mermaid(Flow()) == "flowchart TD\n"  # an empty flow: nothing to draw
    empty = Flow()
    empty.name = "later"
    assert pictures(Flow(empty)).labels == {"n0": "later (empty flow)"}

    lone = Node()
    lone >> Node()  # a node is drawn as the start of a flow: itself and what follows
    assert pictures(lone).label_edges() == Counter([("Node", "Node", None)])

    per_item = BatchFlow(Node())  # a batch flow keeps its box, so its mark shows
    picture = pictures(per_item)
    assert picture.children(None) == ["BatchFlow ⟳ batch"]
    assert picture.children(picture.one("BatchFlow ⟳ batch")) == ["Node"]


def every_node(root: Any) -> list[Any]:
    """Every node reachable from ``root``: successors, and the start of every flow."""
    found: dict[int, Any] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in found:
            found[id(node)] = node
            todo.extend(node.successors.values())
            todo.append(getattr(node, "start_node", None))
    return list(found.values())


def test_drawing_changes_nothing() -> None:
    flow = big_flow()
    nodes = every_node(flow)
    assert len(nodes) == 12  # the flow, its 7 nodes, review's 2, fan_out's flow and node
    before = [(dict(n.successors), dict(n.params), dict(vars(n))) for n in nodes]
    first = layout(flow)
    pictures(flow)
    assert layout(flow) == first
    assert [(dict(n.successors), dict(n.params), dict(vars(n))) for n in nodes] == before


def test_the_pictures_page_shows_the_cake_factory() -> None:
    from test_examples import example

    page = (ROOT / "docs" / "pictures.md").read_text()
    (block,) = re.findall(r"^```mermaid\n(.*?)^```", page, re.DOTALL | re.MULTILINE)
    assert block == example("cake_factory").flow.to_mermaid()
    assert "](cake_factory.png)" in page
    png = (ROOT / "docs" / "cake_factory.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def need_dot() -> str:
    """The path of Graphviz's dot: only a developer's machine without it may skip."""
    dot = shutil.which("dot")
    if dot is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz's dot is missing in CI: .ci/run must install graphviz")
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    return dot


def test_dot_text_renders_to_a_png_with_graphviz() -> None:
    image = pytest.importorskip("PIL.Image")
    done = subprocess.run(
        [need_dot(), "-Tpng"], input=big_flow().to_dot().encode(), capture_output=True, check=True
    )
    assert done.stderr == b""  # no warning: every lhead/ltail names a real cluster
    assert done.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    with image.open(io.BytesIO(done.stdout)) as picture:
        assert picture.format == "PNG"
        width, height = picture.size
        assert width > 300
        assert height > 400  # load, route, its branches, and the flows below them
        assert len(picture.convert("L").getcolors(maxcolors=1 << 16) or ()) > 2  # not blank

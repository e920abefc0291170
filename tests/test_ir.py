"""Flows as data (issue 24): ``from_ir``, ``Flow.to_ir``, ``ir_schema`` and the CLI's
``workflow.json --nodes MODULE``.

Every example flow that a document can hold goes Python -> document -> flow and runs as the
Python flow does; bad documents are refused before anything runs, each with its JSON path
and the fix; a document's hash is part of a durable run's shape.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import flowfn
from flowfn import (
    Flow,
    FlowError,
    FunctionBatchFlow,
    FunctionNode,
    Node,
    Parallel,
    SQLiteStore,
    from_ir,
    ir_schema,
    node,
    parallel_batch,
)
from flowfn._cli import main as cli_main
from flowfn._durable.journal import shape_of

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ir_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registry_of(module: ModuleType) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, (FunctionNode, FunctionBatchFlow))
    }


def check_against_schema(document: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(ir_schema()).validate(document)


# -- round trips over the examples ----------------------------------------------------------


def _summarize_files_shared(module: ModuleType, tmp: Path) -> dict[str, Any]:
    for name, text in module.DOCS.items():
        (tmp / name).write_text(text, encoding="utf-8")
    return {"folder": str(tmp), "texts": {}, "routes": {}, "summaries": {}}


# name -> (the flow, a fresh shared store in a folder, the keys both runs must leave alike)
CASES: dict[str, tuple[Callable[[ModuleType], Flow[Any]], Callable[..., Any], list[str]]] = {
    "branches": (lambda m: m.flow, lambda m, tmp: {}, ["briefing", "news", "weather"]),
    "cake_factory": (
        lambda m: m.flow,
        lambda m, tmp: {"cakes": {"parallel": {}, "one_by_one": {}}, "seconds": {}},
        ["cakes"],
    ),
    "parallel_squares": (
        lambda m: Flow(m.square),
        lambda m, tmp: {"numbers_to_square": [3, 1, 5, 2, 4]},
        ["squared_numbers", "numbers_to_square"],
    ),
    "resume_batch": (lambda m: m.flow, lambda m, tmp: {}, ["docs", "summaries", "report"]),
    "summarize_files": (
        lambda m: Flow(m.each_file),
        _summarize_files_shared,
        ["files", "routes", "summaries", "texts"],
    ),
    "translate": (
        lambda m: m.flow,
        lambda m, tmp: {"text": "Hi", "languages": list(m.CANNED), "out_dir": str(tmp)},
        ["translations"],
    ),
    "cpu_bound": (
        lambda m: m.flow,
        lambda m, tmp: {"ranges": [(0, 500), (500, 1000)]},
        ["counts"],
    ),
    "image_filters": (
        lambda m: Flow(m.draw_inputs),
        lambda m, tmp: {"out_dir": str(tmp), "work": {}, "outputs": {}},
        ["images", "work"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.anyio
async def test_every_expressible_example_round_trips_and_runs_alike(
    name: str, anyio_backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if name == "image_filters":
        pytest.importorskip("PIL")
    module = example(name)
    make_flow, make_shared, keys = CASES[name]
    flow = make_flow(module)
    document = flow.to_ir()
    assert json.loads(json.dumps(document)) == document  # plain JSON data
    check_against_schema(document)
    rebuilt = from_ir(document, nodes=registry_of(module))
    assert rebuilt.to_ir() == document  # and back: the same document
    results = []
    for which, run in (("python", flow), ("document", rebuilt)):
        (tmp_path / which).mkdir()
        shared = make_shared(module, tmp_path / which)
        action = await run.run_async(shared)
        if name == "cpu_bound":  # each count comes with the pid of the process that made it
            shared["counts"] = [count for count, _pid in shared["counts"]]
        results.append((action, {k: shared.get(k) for k in keys}))
    assert results[0][1][keys[0]] is not None
    assert results[0] == results[1]


def test_the_round_trip_keeps_batch_settings_and_branches() -> None:
    squares = example("parallel_squares").square
    cakes = example("cake_factory")
    assert Flow(squares).to_ir()["nodes"][0]["batch"] == {"parallel": True}
    in_parallel = cakes.flow.to_ir()["nodes"][0]
    assert in_parallel["batch"]["max_concurrent"] == 4
    assert [n["id"] for n in in_parallel["batch"]["flow"]["nodes"]] == ["mix", "bake", "decorate"]
    briefing = example("branches").flow.to_ir()["nodes"][0]
    assert briefing["type"] == "parallel"
    assert [[n["id"] for n in b["nodes"]] for b in briefing["branches"]] == [
        ["news"],
        ["weather"],
        ["scores", "headline"],
    ]


@pytest.mark.parametrize(
    ("name", "node_name", "says"),
    [
        ("stream_tokens", "answer", "limiter= a shared limiter object"),
        ("typed_store", "measure", "items= a function"),
    ],
)
def test_what_a_document_cannot_hold_is_refused_naming_the_node(
    name: str, node_name: str, says: str
) -> None:
    with pytest.raises(FlowError, match="which a document cannot hold") as info:
        example(name).flow.to_ir()
    assert f"node {node_name!r}" in str(info.value)
    assert says in str(info.value)


# -- a document written by hand: templates, batch settings ----------------------------------


@node(into="listing")
def fetch(folder: str) -> dict[str, Any]:
    return {"files": [{"name": f"{folder}/a", "size": 1}, {"name": f"{folder}/b", "size": 2}]}


@parallel_batch(items="unused")
async def describe(item: Any, text: str, size: int) -> str:
    return f"{text}={size}"


@node
def report(shared: dict[str, Any], lines: list[str], title: str = "") -> None:
    shared["report"] = title + " | ".join(lines)


NODES = {"fetch": fetch, "describe": describe, "report": report}


def workflow() -> dict[str, Any]:
    return {
        "ir_version": "1.0",
        "nodes": [
            {
                "id": "fetch",
                "type": "fetch",
                "into": "listing",
                "params": {"folder": "${shared.dir}"},
            },
            {
                "id": "describe",
                "type": "describe",
                "into": "lines",
                "batch": {"items": "${fetch.files}", "as": "file", "parallel": True},
                "params": {"text": "file ${file.name}", "size": "${file.size}"},
            },
            {
                "id": "report",
                "type": "report",
                "params": {"lines": "${describe}", "title": "${shared.title}: "},
            },
        ],
        "edges": [{"from": "fetch", "to": "describe"}, {"from": "describe", "to": "report"}],
    }


@pytest.mark.anyio
async def test_templates_read_the_store_what_nodes_stored_and_the_item(anyio_backend: str) -> None:
    flow = from_ir(workflow(), nodes=NODES)
    shared: dict[str, Any] = {"dir": "docs", "title": "Files"}
    await flow.run_async(shared)
    assert shared["lines"] == ["file docs/a=1", "file docs/b=2"]  # ${file.size} stays an int
    assert shared["report"] == "Files: file docs/a=1 | file docs/b=2"
    check_against_schema(workflow())
    assert flow.to_ir(nodes=NODES) == {**workflow(), "nodes": flow.to_ir()["nodes"]}
    assert flow.to_ir()["nodes"][1]["params"] == workflow()["nodes"][1]["params"]


def test_a_sync_document_runs_without_an_event_loop() -> None:
    @node
    def add(shared: dict[str, Any], n: int) -> None:
        shared["total"] = shared.get("total", 0) + n

    document = {
        "ir_version": "1",
        "nodes": [
            {"id": "one", "type": "add", "params": {"n": 1}},
            {"id": "two", "type": "add", "params": {"n": "${shared.step}"}},
        ],
        "edges": [{"from": "one", "to": "two"}],
    }
    shared: dict[str, Any] = {"step": 41}
    from_ir(document, nodes={"add": add}).run(shared)
    assert shared["total"] == 42


def test_inline_items_and_a_sequential_batch() -> None:
    from flowfn import batch

    @batch(items="unused")
    def double(x: int) -> int:
        return 2 * x

    document = {
        "ir_version": "1.0",
        "nodes": [{"id": "d", "type": "double", "into": "out", "batch": {"items": [1, 2, 3]}}],
    }
    shared: dict[str, Any] = {}
    flow = from_ir(document, nodes={"double": double})
    flow.run(shared)
    assert shared["out"] == [2, 4, 6]
    assert flow.to_ir() == document


# -- parallel: true, max_concurrent: 10 runs as @parallel_batch(limit=10) ------------------


class Gauge:
    def __init__(self) -> None:
        self.now = self.most = 0


def make_batch(gauge: Gauge, **options: Any) -> Any:
    async def work(n: int) -> int:
        gauge.now += 1
        gauge.most = max(gauge.most, gauge.now)
        for _ in range((37 * n) % 7):  # items finish out of input order
            await anyio.sleep(0)
        gauge.now -= 1
        return n * n

    return parallel_batch(items="numbers", into="squares", **options)(work)


@pytest.mark.anyio
async def test_max_concurrent_10_bounds_and_orders_as_parallel_batch_limit_10(
    anyio_backend: str,
) -> None:
    by_python, by_document = Gauge(), Gauge()
    python_flow = Flow(make_batch(by_python, limit=10))
    document = {
        "ir_version": "1.0",
        "nodes": [
            {
                "id": "work",
                "type": "work",
                "into": "squares",
                "batch": {"items": "${shared.numbers}", "parallel": True, "max_concurrent": 10},
            }
        ],
    }
    document_flow = from_ir(document, nodes={"work": make_batch(by_document)})
    assert document_flow.start_node.limit == 10  # type: ignore[union-attr]
    stores = []
    for flow in (python_flow, document_flow):
        shared: dict[str, Any] = {"numbers": list(range(40))}
        await flow.run_async(shared)
        stores.append(shared)
    assert stores[0] == stores[1]
    assert stores[1]["squares"] == [n * n for n in range(40)]  # input order
    assert by_python.most == by_document.most == 10  # the same bound, reached
    assert python_flow.to_ir() == document


@pytest.mark.anyio
async def test_error_handling_continue_collects_failures(anyio_backend: str) -> None:
    @parallel_batch(items="unused")
    async def check(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    document = {
        "ir_version": "1.0",
        "nodes": [
            {
                "id": "check",
                "type": "check",
                "into": "out",
                "batch": {
                    "items": [1, 2, 3],
                    "parallel": True,
                    "error_handling": "continue",
                    "max_retries": 2,
                },
            }
        ],
    }
    flow = from_ir(document, nodes={"check": check})
    shared: dict[str, Any] = {}
    await flow.run_async(shared)
    assert shared["out"][0] == 1
    assert shared["out"][2] == 3
    assert isinstance(shared["out"][1], ValueError)
    assert flow.start_node.max_retries == 2  # type: ignore[union-attr]


# -- nested flows, Parallel, class nodes, actions --------------------------------------------


class Shout(Node):
    def exec(self, prep_res: Any) -> str:
        return "loud"

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared.setdefault("said", []).append(exec_res)
        return "again" if len(shared["said"]) < 2 else "done"


@node
def one(shared: dict[str, Any]) -> None:
    shared["one"] = 1


@node
def two(shared: dict[str, Any]) -> None:
    shared["two"] = 2


def test_class_nodes_actions_loops_nested_flows_and_parallel() -> None:
    shout = Shout()
    shout - "again" >> shout
    shout - "done" >> Flow(one)
    inner = shout.successors["done"]
    inner >> Parallel(Flow(one), two, merge="update", name="both")
    flow = Flow(shout)
    nodes = {"Shout": Shout, "one": one, "two": two}
    document = flow.to_ir(nodes=nodes)
    assert document["edges"][:2] == [
        {"from": "Shout", "to": "Shout", "action": "again"},
        {"from": "Shout", "to": "Flow", "action": "done"},
    ]
    check_against_schema(document)
    rebuilt = from_ir(document, nodes=nodes)
    assert rebuilt.to_ir(nodes=nodes) == document
    stores = []
    for run in (flow, rebuilt):
        shared: dict[str, Any] = {}
        anyio.run(run.run_async, shared)
        stores.append(shared)
    assert stores[0] == stores[1] == {"said": ["loud", "loud"], "one": 1, "two": 2}


# -- bad documents: refused before anything runs, with the JSON path and the fix ------------


def edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = copy.deepcopy(workflow())
    change(document)
    return document


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "unknown top field",
        lambda d: d.update(start="fetch"),
        "$.start",
        "did you mean 'start_node'?",
    ),
    (
        "unknown node field",
        lambda d: d["nodes"][0].update(retry=2),
        "$.nodes[0].retry",
        "did you mean 'retries'?",
    ),
    (
        "unknown batch field",
        lambda d: d["nodes"][1]["batch"].update(max_concurent=3),
        "$.nodes[1].batch.max_concurent",
        "did you mean 'max_concurrent'?",
    ),
    (
        "unknown type",
        lambda d: d["nodes"][2].update(type="reprot"),
        "$.nodes[2].type",
        "unknown type 'reprot': did you mean 'report'? register it",
    ),
    (
        "dangling edge",
        lambda d: d["edges"][1].update(to="summary"),
        "$.edges[1].to",
        "'summary' is not a node of this flow; its nodes: fetch, describe, report",
    ),
    (
        "duplicate id",
        lambda d: d["nodes"][2].update(id="fetch"),
        "$.nodes[2].id",
        "duplicate id 'fetch' (also at $.nodes[0]); ids are unique in the whole document",
    ),
    (
        "template naming no node",
        lambda d: d["nodes"][1]["batch"].update(items="${fetcher.files}"),
        "$.nodes[1].batch.items",
        "${fetcher.files} names no node: a template starts with a node id or 'shared.'",
    ),
    (
        "template in params naming no node",
        lambda d: d["nodes"][1]["params"].update(text="${fil.name}"),
        "$.nodes[1].params.text",
        "${fil.name} names no node",
    ),
    (
        "template reading a node that stores nothing",
        lambda d: d["nodes"][2]["params"].update(lines="${report.x}"),
        "$.nodes[2].params.lines",
        "reads what node 'report' stores, but it stores nothing: give node 'report' \"into\"",
    ),
    (
        "the item outside a batch",
        lambda d: d["nodes"][0]["params"].update(folder="${item}"),
        "$.nodes[0].params.folder",
        "${item} names no node",
    ),
    (
        "unknown parameter",
        lambda d: d["nodes"][1]["params"].update(txt="x"),
        "$.nodes[1].params.txt",
        "has no parameter 'txt'; its parameters: text, size",
    ),
    (
        "bad max_concurrent",
        lambda d: d["nodes"][1]["batch"].update(max_concurrent=0),
        "$.nodes[1].batch.max_concurrent",
        "must be an integer >= 1, or null for no bound, got a number 0",
    ),
    (
        "continue without parallel",
        lambda d: d["nodes"][1]["batch"].update(parallel=False, error_handling="continue"),
        "$.nodes[1].batch.error_handling",
        'add "parallel": true',
    ),
    (
        "a batch on a @node function",
        lambda d: d["nodes"][0].update(batch={"items": [1]}),
        "$.nodes[0].batch",
        "type 'fetch' is a @node function",
    ),
    (
        "a batch function without batch",
        lambda d: d["nodes"][1].pop("batch"),
        "$.nodes[1]",
        "type 'describe' is a batch function: add \"batch\"",
    ),
    (
        "items not a template",
        lambda d: d["nodes"][1]["batch"].update(items="fetch.files"),
        "$.nodes[1].batch.items",
        'must be a template such as "${shared.key}"',
    ),
    (
        "dangling start node",
        lambda d: d.update(start_node="begin"),
        "$.start_node",
        "'begin' is not a node of this flow",
    ),
    (
        "two edges for one action",
        lambda d: d["edges"].append({"from": "fetch", "to": "report"}),
        "$.edges[2]",
        "node 'fetch' already has an edge for action 'default'",
    ),
    ("no version", lambda d: d.pop("ir_version"), "$", 'missing "ir_version": add'),
    (
        "newer major version",
        lambda d: d.update(ir_version="2.0"),
        "$.ir_version",
        "the document is format 2.0, newer than this flowfn reads (1.0); upgrade flowfn",
    ),
    (
        "reserved id",
        lambda d: d["nodes"][0].update(id="shared"),
        "$.nodes[0].id",
        "'shared' is not a usable id",
    ),
    (
        "retries twice",
        lambda d: d["nodes"][1].update(retries=1) or d["nodes"][1]["batch"].update(max_retries=2),
        "$.nodes[1].batch.max_retries",
        'the node also gives "retries": keep one of them',
    ),
]


@pytest.mark.parametrize(("case", "change", "path", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_documents_are_refused_with_the_path_and_the_fix(
    case: str, change: Callable[[dict[str, Any]], None], path: str, message: str
) -> None:
    with pytest.raises(FlowError) as info:
        from_ir(edit(change), nodes=NODES)
    assert str(info.value).startswith(f"workflow document: {path}: ")
    assert message in str(info.value)


def test_a_bad_file_names_the_file_and_a_json_syntax_error_its_line(tmp_path: Path) -> None:
    path = tmp_path / "workflow.json"
    path.write_text('{\n  "ir_version": "1.0",\n  "nodes": [,]\n}')
    with pytest.raises(FlowError, match=r"workflow.json: line 3 column 13: not valid JSON"):
        from_ir(path, nodes=NODES)
    path.write_text(json.dumps(edit(lambda d: d["nodes"][0].update(type="fech"))))
    with pytest.raises(FlowError, match=r"workflow.json: \$\.nodes\[0\]\.type: unknown type"):
        from_ir(str(path), nodes=NODES)


def test_a_newer_minor_version_is_read() -> None:
    flow = from_ir(edit(lambda d: d.update(ir_version="1.9.3")), nodes=NODES)
    assert isinstance(flow, Flow)


def test_what_the_registry_holds_is_checked() -> None:
    with pytest.raises(FlowError, match="'flow' cannot be a type name"):
        from_ir(workflow(), nodes={**NODES, "flow": fetch})
    with pytest.raises(FlowError, match=r"entry .shout. is Shout; register .* a node class"):
        from_ir(workflow(), nodes={**NODES, "shout": Shout()})


def test_loading_imports_nothing_the_registry_does_not_name(tmp_path: Path) -> None:
    document = {"ir_version": "1.0", "nodes": [{"id": "a", "type": "http.server.test"}]}
    script = (
        "import sys, flowfn\n"
        "try:\n"
        f"    flowfn.from_ir({document!r}, nodes={{}})\n"
        "except flowfn.FlowError as exc:\n"
        "    print(exc)\n"
        "print('http.server' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert "unknown type 'http.server.test'" in out[0]
    assert out[1] == "False"


# -- the schema, the version, the hash ---------------------------------------------------------


def test_the_schema_ships_with_the_package_and_rejects_what_from_ir_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = ir_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(workflow())
    for case, change, _, _ in BAD:
        if case in ("unknown top field", "unknown node field", "unknown batch field"):
            assert not validator.is_valid(edit(change)), case
    schema["title"] = "changed"
    assert ir_schema()["title"] == "flowfn workflow document"  # a copy each call


def test_the_hash_ignores_key_order_and_sees_every_change() -> None:
    flow = from_ir(workflow(), nodes=NODES)
    reordered = json.loads(json.dumps(workflow(), sort_keys=True))
    assert from_ir(reordered, nodes=NODES).ir_hash == flow.ir_hash  # type: ignore[attr-defined]
    changed = edit(lambda d: d["nodes"][1]["batch"].update(max_concurrent=3))
    assert from_ir(changed, nodes=NODES).ir_hash != flow.ir_hash  # type: ignore[attr-defined]
    assert shape_of(flow).startswith(f"ir:{flow.ir_hash} ")  # type: ignore[attr-defined]
    assert "ir:" not in shape_of(Flow(fetch))


ATTEMPTS: list[str] = []


@node
def flaky(shared: dict[str, Any], label: str) -> None:
    ATTEMPTS.append(label)
    if len(ATTEMPTS) == 1:
        raise RuntimeError("the first run fails")
    shared["label"] = label


@pytest.mark.anyio
async def test_a_checkpoint_refuses_a_changed_document(anyio_backend: str, tmp_path: Path) -> None:
    ATTEMPTS.clear()
    store_path = str(tmp_path / "runs.db")

    def document(label: str) -> dict[str, Any]:
        return {
            "ir_version": "1.0",
            "nodes": [
                {"id": "first", "type": "one"},
                {"id": "flaky", "type": "flaky", "params": {"label": label}},
            ],
            "edges": [{"from": "first", "to": "flaky"}],
        }

    nodes = {"one": one, "flaky": flaky}
    with pytest.raises(RuntimeError, match="the first run fails"):
        await from_ir(document("a"), nodes=nodes).run_async(
            {}, checkpoint=SQLiteStore(store_path), run_id="r"
        )
    with pytest.raises(FlowError, match=r"shape|changed"):
        await from_ir(document("b"), nodes=nodes).run_async(
            {}, checkpoint=SQLiteStore(store_path), run_id="r"
        )
    shared: dict[str, Any] = {}
    await from_ir(document("a"), nodes=nodes).run_async(
        shared, checkpoint=SQLiteStore(store_path), run_id="r"
    )
    assert shared == {"one": 1, "label": "a"}
    assert ATTEMPTS == ["a", "a"]


# -- the command line ---------------------------------------------------------------------------


def test_flowfn_run_and_graph_take_a_workflow_and_a_nodes_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ir_cli_nodes.py").write_text(
        "from flowfn import node\n"
        "@node\n"
        "def greet(shared, who):\n"
        "    shared['greeting'] = 'hello ' + who\n"
    )
    (tmp_path / "workflow.json").write_text(
        json.dumps(
            {
                "ir_version": "1.0",
                "nodes": [{"id": "hi", "type": "greet", "params": {"who": "${shared.name}"}}],
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["run", "workflow.json", "--nodes", "ir_cli_nodes", "--shared", '{"name": "ada"}']
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out)["shared"]["greeting"] == "hello ada"
    assert cli_main(["graph", "workflow.json", "--nodes", "ir_cli_nodes.py"]) == 0
    assert '"hi"' in capsys.readouterr().out
    assert cli_main(["run", "workflow.json"]) == 2
    assert "add --nodes MODULE" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"ir_version": "1.0", "nodes": [{"id": "x"}]}))
    assert cli_main(["run", "bad.json", "--nodes", "ir_cli_nodes"]) == 2
    assert 'bad.json: $.nodes[0]: missing "type"' in capsys.readouterr().err


def test_public_names() -> None:
    assert flowfn.from_ir is from_ir
    assert flowfn.ir_schema is ir_schema
    assert "from_ir" in flowfn.__all__
    assert "ir_schema" in flowfn.__all__


def test_the_docs_show_what_to_ir_writes_and_the_schema_it_ships() -> None:
    page = (EXAMPLES.parent / "docs" / "ir.md").read_text()
    blocks = re.findall(r"^```(json|python)\n(.*?)^```", page, re.DOTALL | re.MULTILINE)
    json_blocks = [json.loads(text) for kind, text in blocks if kind == "json"]
    namespace: dict[str, Any] = {"__name__": "docs_ir"}
    exec(next(text for kind, text in blocks if kind == "python"), namespace)
    assert namespace["flow"].to_ir(nodes=namespace["nodes"]) == json_blocks[0]
    assert json_blocks[-1] == ir_schema()


def test_what_the_code_refuses_when_built_gets_the_node_path_too() -> None:
    def takes_nothing(shared: Any) -> None:  # a plain function whose first parameter is shared
        return None

    document = {
        "ir_version": "1.0",
        "nodes": [
            {"id": "a", "type": "one"},
            {"id": "b", "type": "plain", "batch": {"items": [1, 2]}},
        ],
    }
    with pytest.raises(
        FlowError, match=r"^workflow document: \$\.nodes\[1\]: b: .* receives the item"
    ):
        from_ir(document, nodes={"one": one, "plain": takes_nothing})


def test_a_batch_flow_takes_only_the_options_of_batch_flow() -> None:
    cakes = example("cake_factory")
    document = cakes.flow.to_ir()
    document["nodes"][0]["timeout"] = 3
    with pytest.raises(FlowError) as info:
        from_ir(document, nodes=registry_of(cakes))
    assert str(info.value).startswith("workflow document: $.nodes[0].timeout: a batch with a ")
    assert "give 'timeout' to the sub-flow's nodes" in str(info.value)


def test_a_template_reading_a_node_that_has_not_run_says_so() -> None:
    document = edit(lambda d: d.update(start_node="report"))
    shared: dict[str, Any] = {"dir": "x", "title": "t"}
    with pytest.raises(FlowError, match="node 'describe' has not stored"):
        from_ir(document, nodes=NODES).run(shared)

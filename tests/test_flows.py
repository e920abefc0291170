"""Flows: walking by action, nesting, params, batch flows, sync and async nodes mixed."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowfn import (
    AsyncBatchFlow,
    AsyncFlow,
    AsyncNode,
    BatchFlow,
    Flow,
    FlowEndsWarning,
    FlowError,
    Node,
    node,
    parallel_batch,
)


class Add(Node):
    """Adds ``amount`` to ``shared["n"]`` and logs its name and params."""

    def __init__(self, amount: int = 1, action: str | None = None) -> None:
        super().__init__()
        self.amount, self.action = amount, action

    def prep(self, shared: Any) -> int:
        return int(shared.get("n", 0))

    def exec(self, n: int) -> int:
        return n + self.amount

    def post(self, shared: Any, prep_res: Any, exec_res: int) -> str | None:
        shared["n"] = exec_res
        shared.setdefault("log", []).append((type(self).__name__, self.amount, dict(self.params)))
        return self.action


class AsyncAdd(AsyncNode):
    def __init__(self, amount: int = 1) -> None:
        super().__init__()
        self.amount = amount

    async def prep_async(self, shared: Any) -> int:
        return int(shared.get("n", 0))

    async def exec_async(self, n: int) -> int:
        await anyio.sleep(0)
        return n + self.amount

    async def post_async(self, shared: Any, prep_res: Any, exec_res: int) -> None:
        shared["n"] = exec_res
        shared.setdefault("log", []).append(("AsyncAdd", self.amount, dict(self.params)))


class Route(Node):
    """Returns ``shared["route"]`` as the action."""

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        return shared["route"]


class Loop(Node):
    """Returns "again" until ``shared["n"]`` reaches ``shared["until"]``."""

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["n"] = shared.get("n", 0) + 1
        return "again" if shared["n"] < shared["until"] else "stop"


def test_chain_runs_in_order_and_returns_last_action() -> None:
    a, b, c = Add(1), Add(10), Add(100, action="finished")
    a >> b >> c
    shared: dict[str, Any] = {}
    assert Flow(start=a).run(shared) == "finished"
    assert shared["n"] == 111
    assert [entry[1] for entry in shared["log"]] == [1, 10, 100]


@pytest.mark.parametrize(("route", "expected"), [("left", 2), ("right", 20)])
def test_actions_pick_the_branch(route: str, expected: int) -> None:
    router = Route()
    router - "left" >> Add(2)
    router - "right" >> Add(20)
    shared: dict[str, Any] = {"route": route}
    Flow(router).run(shared)
    assert shared["n"] == expected


def test_unknown_action_ends_the_flow_with_a_warning() -> None:
    router = Route()
    router - "left" >> Add(2)
    shared: dict[str, Any] = {"route": "up"}
    with pytest.warns(FlowEndsWarning, match=r"Flow ends: node 'Route' returned 'up'"):
        assert Flow(router).run(shared) == "up"
    assert "n" not in shared


def test_a_node_can_loop_back_to_itself() -> None:
    loop = Loop()
    loop - "again" >> loop
    shared: dict[str, Any] = {"until": 50}
    with pytest.warns(FlowEndsWarning, match="Flow ends: node 'Loop' returned 'stop'"):
        Flow(loop).run(shared)
    assert shared["n"] == 50


def test_start_sets_the_start_node_and_returns_it() -> None:
    flow = Flow()
    node = Add(5)
    assert flow.start(node) is node
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert shared["n"] == 5


def test_flow_params_reach_every_node_but_not_the_originals() -> None:
    a, b = Add(1), Add(2)
    a >> b
    flow = Flow(a)
    flow.set_params({"user": "ada"})
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert [entry[2] for entry in shared["log"]] == [{"user": "ada"}, {"user": "ada"}]
    assert a.params == {}
    assert b.params == {}


def test_nested_flow_runs_as_a_node_and_routes_on_its_action() -> None:
    inner_start = Add(1)
    inner_start >> Add(2, action="inner_done")
    inner = Flow(inner_start)
    after = Add(100)
    inner - "inner_done" >> after
    shared: dict[str, Any] = {}
    Flow(Add(1000) >> inner).run(shared)  # (>> returns inner; the flow starts at inner)
    assert shared["n"] == 103


def test_flow_prep_and_post_wrap_the_walk() -> None:
    class Outer(Flow):
        def prep(self, shared: Any) -> str:
            shared["prepped"] = True
            return "p"

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["post"] = (prep_res, exec_res)
            return "outer-action"

    shared: dict[str, Any] = {}
    assert Outer(Add(1, action="last")).run(shared) == "outer-action"
    assert shared["post"] == ("p", "last")
    assert shared["prepped"] is True


def test_batch_flow_runs_the_flow_per_param_dict_with_merged_params() -> None:
    class PerUser(BatchFlow):
        def prep(self, shared: Any) -> list[dict[str, Any]]:
            return [{"user": "ada"}, {"user": "bob", "tier": "gold"}]

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["post_exec_res"] = exec_res
            return "all-users"

    flow = PerUser(Add(1))
    flow.set_params({"tier": "free", "region": "eu"})
    shared: dict[str, Any] = {}
    assert flow.run(shared) == "all-users"
    assert [entry[2] for entry in shared["log"]] == [
        {"tier": "free", "region": "eu", "user": "ada"},
        {"tier": "gold", "region": "eu", "user": "bob"},
    ]
    assert shared["n"] == 2
    assert shared["post_exec_res"] is None


def test_batch_flow_items_must_be_dicts() -> None:
    class Bad(BatchFlow):
        def prep(self, shared: Any) -> list[str]:
            return ["not-a-dict"]

    with pytest.raises(TypeError, match="Bad: a batch flow's prep must return an iterable of"):
        Bad(Add()).run({})


def test_sync_flow_with_async_nodes_runs_in_an_event_loop() -> None:
    a = Add(1)
    a >> AsyncAdd(10) >> Add(100)
    shared: dict[str, Any] = {}
    Flow(a).run(shared, backend="trio")
    assert shared["n"] == 111
    shared = {}
    Flow(a).run(shared)  # asyncio by default
    assert shared["n"] == 111


def test_sync_walk_refuses_async_nodes_like_pocketflow() -> None:
    with pytest.raises(RuntimeError, match=r"Use run_async\."):
        Flow(AsyncAdd())._run({})


@pytest.mark.anyio
async def test_async_flow_mixes_sync_nodes_async_nodes_and_nested_flows(
    anyio_backend: str,
) -> None:
    inner = Flow(AsyncAdd(10))  # a plain Flow holding an async node, nested in an AsyncFlow
    start = AsyncAdd(1)
    start >> Add(2) >> inner >> AsyncAdd(1000)

    class Outer(AsyncFlow):
        async def prep_async(self, shared: Any) -> None:
            shared["n"] = 0

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            return f"total {shared['n']}"

    shared: dict[str, Any] = {}
    assert await Outer(start).run_async(shared) == "total 1013"
    assert [entry[1] for entry in shared["log"]] == [1, 2, 10, 1000]


@pytest.mark.anyio
async def test_async_batch_flow_runs_param_sets_one_after_another(anyio_backend: str) -> None:
    class Files(AsyncBatchFlow):
        async def prep_async(self, shared: Any) -> list[dict[str, str]]:
            return [{"file": f} for f in ("a.txt", "b.txt", "c.txt")]

    class Read(AsyncNode):
        async def exec_async(self, prep_res: Any) -> str:
            await anyio.sleep(0.001)
            return str(self.params["file"])

        async def post_async(self, shared: Any, prep_res: Any, exec_res: str) -> None:
            shared.setdefault("read", []).append(exec_res)

    shared: dict[str, Any] = {}
    await Files(Read()).run_async(shared)
    assert shared["read"] == ["a.txt", "b.txt", "c.txt"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_flow_runs_from_plain_asyncio_and_trio_entry_points(backend: str) -> None:
    start = AsyncAdd(1)
    start >> AsyncAdd(2)
    shared: dict[str, Any] = {}
    if backend == "asyncio":
        import asyncio

        asyncio.run(AsyncFlow(start).run_async(shared))
    else:
        import trio

        trio.run(AsyncFlow(start).run_async, shared)
    assert shared["n"] == 3


def test_one_flow_object_runs_many_times_without_keeping_state() -> None:
    flow = Flow(Add(1) >> Add(2))
    for _ in range(3):
        shared: dict[str, Any] = {}
        flow.run(shared)
        assert shared["n"] == 2  # (>> returned the second node, so the flow starts there)


def test_error_in_a_node_reaches_the_caller_with_the_node_and_flow_in_notes() -> None:
    class Boom(Node):
        def exec(self, prep_res: Any) -> None:
            raise ZeroDivisionError("no oven")

    class Outer(Flow):
        pass

    inner = Flow(Add(1) >> Boom())
    inner.name = "bakery"
    with pytest.raises(ZeroDivisionError, match="no oven") as info:
        Outer(inner).run({})
    assert info.value.__notes__ == [
        "flowfn: in node 'Boom' of flow 'bakery'",
        "flowfn: in node 'bakery' of flow 'Outer'",
    ]


# -- what the walk copies -------------------------------------------------------------------


def test_a_function_of_shared_alone_runs_as_is_and_keeps_its_params() -> None:
    """A node function that takes only ``shared`` runs without a per-step copy; the node's
    own params stay what the user set, as they do for copied nodes."""

    @node
    def count(shared: Any) -> None:
        shared["n"] = shared.get("n", 0) + 1

    count.set_params({"mine": 1})
    flow = Flow(count)
    flow.set_params({"flow": 2})
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert shared == {"n": 1}
    assert count.params == {"mine": 1}


@pytest.mark.anyio
async def test_functions_taking_params_still_get_each_runs_params(anyio_backend: str) -> None:
    seen: list[int] = []

    @node
    async def record(shared: Any, order: int) -> None:
        await anyio.sleep(0.01 * (order % 3))  # runs interleave
        seen.append(order)

    @parallel_batch(flow=Flow(record))
    def orders(shared: Any) -> list[dict[str, int]]:
        return [{"order": i} for i in range(12)]

    await Flow(orders).run_async({})
    assert sorted(seen) == list(range(12))
    assert record.params == {}


def test_the_walk_calls_a_subclass_set_params_and_copy() -> None:
    calls: list[str] = []

    class Step(Node):
        def set_params(self, params: dict[str, Any]) -> None:
            calls.append("set_params")
            super().set_params(params)

        def __copy__(self) -> Step:
            calls.append("copy")
            return super().__copy__()  # type: ignore[return-value]

    Flow(Step()).run({})
    assert calls == ["copy", "set_params"]


def test_the_walk_calls_a_mixins_set_params_and_copy() -> None:
    calls: list[str] = []

    class Traced:
        def set_params(self, params: dict[str, Any]) -> None:
            calls.append("set_params")
            self.params = {**params, "seen": True}

        def __copy__(self) -> Any:
            calls.append("copy")
            return Node.__copy__(self)  # type: ignore[arg-type]

    class Step(Traced, Node):
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["params"] = self.params

    flow = Flow(Step())
    flow.set_params({"a": 1})
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert calls == ["copy", "set_params"]
    assert shared["params"] == {"a": 1, "seen": True}


@pytest.mark.anyio
@pytest.mark.parametrize("observed", [False, True])
async def test_nested_plain_flows_walk_as_if_nested(observed: bool) -> None:
    # A plain nested Flow is walked by the flow around it (no walk of its own): actions,
    # params, successors and notes must be exactly those of a nested walk.
    from flowfn import AsyncFlow, Flow, node

    trail: list[str] = []

    @node
    def a(shared: dict[str, Any], tag: str = "?") -> str:
        trail.append(f"a:{tag}")
        return "left" if shared["go"] == "left" else "right"

    @node
    def b(shared: dict[str, Any]) -> str:
        trail.append("b")
        if shared.get("fail"):
            raise KeyError("b failed")
        return "out"

    @node
    def c(shared: dict[str, Any]) -> None:
        trail.append("c")

    @node
    def after_out(shared: dict[str, Any]) -> None:
        trail.append("after_out")

    @node
    def after_default(shared: dict[str, Any]) -> None:
        trail.append("after_default")

    a - "left" >> b
    a - "right" >> c
    inner = Flow(a)
    deeper = AsyncFlow(inner)
    deeper - "out" >> after_out
    deeper >> after_default
    outer = Flow(deeper)
    outer.set_params({"tag": "T"})
    seen: list[object] = []
    on_event = seen.append if observed else None

    assert await outer.run_async({"go": "left"}, on_event=on_event) is None
    assert trail == ["a:T", "b", "after_out"]
    trail.clear()
    assert await outer.run_async({"go": "right"}, on_event=on_event) is None
    assert trail == ["a:T", "c", "after_default"]
    with pytest.raises(KeyError) as caught:
        await outer.run_async({"go": "left", "fail": True}, on_event=on_event)
    assert caught.value.__notes__ == [
        "flowfn: in node 'b' of flow 'Flow'",
        "flowfn: in node 'Flow' of flow 'AsyncFlow'",
        "flowfn: in node 'AsyncFlow' of flow 'Flow'",
    ]
    assert bool(seen) is observed


@pytest.mark.anyio
async def test_a_flow_named_when_made_shows_its_name_in_notes_events_and_pictures() -> None:
    from flowfn import AsyncFlow, AsyncParallelBatchFlow, Flow, node

    @node
    def fails(shared: dict[str, Any]) -> None:
        raise KeyError("x")

    ingest = AsyncFlow(fails, name="ingest")
    seen: list[Any] = []
    with pytest.raises(KeyError) as caught:
        await ingest.run_async({}, on_event=seen.append)
    assert caught.value.__notes__ == ["flowfn: in node 'fails' of flow 'ingest'"]
    assert seen[0].node == "ingest"
    assert "ingest" in repr(ingest)
    assert Flow(Flow(fails, name="inner")).to_mermaid().splitlines()[1] == (
        '    subgraph n0 ["inner"]'
    )
    assert AsyncParallelBatchFlow(fails, name="fan", limit=2).name == "fan"
    with pytest.raises(TypeError, match="a flow's name is a non-empty str"):
        Flow(fails, name="")


# --- when a node's action has no successor -------------------------------------------


def _route(action: str | None) -> Any:
    @node
    def route(shared: Any) -> str | None:
        return action

    @node
    def search(shared: Any) -> None:
        shared["searched"] = True

    route - "search" >> search
    route - "answer" >> node(lambda shared: None)
    return route


def test_the_warning_names_node_action_flow_and_the_close_match() -> None:
    with pytest.warns(FlowEndsWarning) as caught:
        assert Flow(_route("serach"), name="agent").run({}) == "serach"
    (warning,) = caught
    assert str(warning.message) == (
        "Flow ends: node 'route' returned 'serach' and has no successor for it in flow "
        "'agent' (its actions: 'search', 'answer'). Did you mean 'search'? To end the flow "
        'there on purpose, write `route - "serach" >> None`; Flow(..., strict=True) makes '
        "this an error."
    )
    assert issubclass(FlowEndsWarning, UserWarning)  # filters written for PocketFlow match


def test_the_default_action_is_called_default_and_gets_no_random_suggestion() -> None:
    with pytest.warns(FlowEndsWarning) as caught:
        Flow(_route(None)).run({})
    message = str(caught[0].message)
    assert "returned the default action (None)" in message
    assert "Did you mean" not in message
    assert "write `route >> None`" in message


def test_the_warning_points_at_the_users_run_call_not_at_flowfn() -> None:
    with pytest.warns(FlowEndsWarning) as caught:
        Flow(_route("nowhere")).run({})  # this line
    assert caught[0].filename == __file__
    assert "# this line" in Path(__file__).read_text().splitlines()[caught[0].lineno - 1]


@pytest.mark.anyio
async def test_an_async_run_warns_at_the_awaiting_line(anyio_backend: str) -> None:
    @node
    async def slow(shared: Any) -> str:
        await anyio.sleep(0)
        return "nowhere"

    slow - "somewhere" >> node(lambda shared: None)
    with pytest.warns(FlowEndsWarning) as caught:
        await Flow(slow).run_async({})  # this line
    assert caught[0].filename == __file__
    assert "# this line" in Path(__file__).read_text().splitlines()[caught[0].lineno - 1]


def test_a_strict_flow_raises_with_the_same_advice_and_runs_no_further() -> None:
    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match=r"returned 'serach'.*Did you mean 'search'\?.*strict"):
        Flow(_route("serach"), strict=True).run(shared)
    assert shared == {}
    # A strict flow that finds its successor runs as any other.
    Flow(_route("search"), strict=True).run(shared)
    assert shared == {"searched": True}


def test_strictness_belongs_to_the_flow_that_walks_the_node() -> None:
    inner = Flow(_route("serach"), name="inner")  # not strict: warns
    with pytest.warns(FlowEndsWarning, match="in flow 'inner'"):
        Flow(inner, strict=True).run({})
    strict_inner = Flow(_route("serach"), strict=True, name="inner")
    with pytest.raises(FlowError, match="in flow 'inner'"):
        Flow(strict_inner).run({})


def test_a_batch_flow_takes_strict_too() -> None:
    class Items(BatchFlow):
        def prep(self, shared: Any) -> list[dict[str, Any]]:
            return [{"i": 1}]

    with pytest.raises(FlowError, match="Did you mean 'search'"):
        Items(_route("serach"), strict=True).run({})


def test_warnings_as_errors_make_every_flow_strict() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowEndsWarning)
        with pytest.raises(FlowEndsWarning, match="returned 'serach'"):
            Flow(_route("serach")).run({})


@pytest.mark.parametrize("make", [lambda: Flow(), lambda: Flow(None, name="empty")])
def test_running_a_flow_without_a_start_node_is_an_error(make: Any) -> None:
    flow = make()
    with pytest.raises(FlowError, match=r"has no start node.*flow\.start\(node\)"):
        flow.run({})
    flow.start(_route("search"))
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert shared == {"searched": True}


@pytest.mark.anyio
async def test_a_nested_flow_without_a_start_node_names_itself(anyio_backend: str) -> None:
    empty = Flow(name="empty")
    with pytest.raises(FlowError, match="empty has no start node") as info:
        await AsyncFlow(empty).run_async({})
    assert any("'empty'" in note for note in info.value.__notes__)


def test_compat_flows_keep_pocketflows_text_and_empty_flow_no_op() -> None:
    from flowfn import compat

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.Flow(_route("serach")).run({})
        assert compat.Flow().run({}) is None
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "Flow ends: 'serach' not found in ['search', 'answer']")
    ]
    assert issubclass(compat.AsyncParallelBatchFlow, compat.AsyncFlow)
    assert issubclass(compat.AsyncBatchFlow, compat.BatchFlow)
    assert issubclass(compat.AsyncFlow, Flow)

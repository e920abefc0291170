"""Side by side: the same flows on ``pocketflow`` 0.0.3 and on ``flowfn.compat``.

Every scenario is written once, as ``build(mod)`` (``build(mod, sleep)`` when async) that
subclasses ``mod.Node`` and friends, and is run on both modules; the test then asserts that
the return values, the shared stores (which record the calls made) and the warnings are
equal, and that PocketFlow's own result is the expected one, so an empty run cannot pass.

PocketFlow runs under ``asyncio.run``; flowfn must give the same result under
``asyncio.run``, ``trio.run`` and ``anyio.run`` on either backend. Async scenarios take the
``sleep`` to use (``asyncio.sleep`` for PocketFlow, ``anyio.sleep`` for flowfn).

The tests marked ``xfail(strict=True)`` at the end pin down the places where flowfn does
*not* behave as PocketFlow does; the ones named ``test_extension_*`` pin down where flowfn
runs code that PocketFlow rejects.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pocketflow
import pytest
import trio

import flowfn.compat as compat

MODS = [pytest.param(pocketflow, id="pocketflow"), pytest.param(compat, id="flowfn")]

RUNNERS: dict[str, Callable[[Callable[[], Any]], Any]] = {
    "asyncio.run": lambda fn: asyncio.run(fn()),
    "trio.run": trio.run,
    "anyio.run-asyncio": partial(anyio.run, backend="asyncio"),
    "anyio.run-trio": partial(anyio.run, backend="trio"),
}

# Seeded random durations, so parallel items finish out of input order.
_rng = random.Random(20240611)
DELAYS = [round(_rng.uniform(0.0002, 0.004), 4) for _ in range(12)]


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Callable[[Callable[[], Any]], Any]:
    """How flowfn's async flows are started; PocketFlow's always use ``asyncio.run``."""
    return RUNNERS[request.param]


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def _messages(caught: list[warnings.WarningMessage]) -> list[tuple[str, str]]:
    return [(w.category.__name__, str(w.message)) for w in caught]


def _raised(exc: BaseException) -> tuple[str, str, str]:
    return ("raised", type(exc).__name__, str(exc))


def run_sync(flow: Any, shared: dict[str, Any]) -> tuple[Any, dict[str, Any], list[Any]]:
    """``flow.run(shared)``: (return value or exception, shared store, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ret = flow.run(shared)
        except Exception as exc:
            ret = _raised(exc)
    return ret, shared, _messages(caught)


async def run_async(flow: Any, shared: dict[str, Any]) -> tuple[Any, dict[str, Any], list[Any]]:
    """``await flow.run_async(shared)``: (return value or exception, shared store, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ret = await flow.run_async(shared)
        except Exception as exc:
            ret = _raised(exc)
    return ret, shared, _messages(caught)


def side_by_side(scenario: Callable[..., Any], *args: Any) -> Any:
    """Run ``scenario(mod, *args)`` on both modules, assert equal results, return PocketFlow's."""
    expected = scenario(pocketflow, *args)
    got = scenario(compat, *args)
    assert got == expected
    return expected


def side_by_side_async(scenario: Callable[..., Any], runner: Any, *args: Any) -> Any:
    """Await ``scenario(mod, sleep, *args)``: PocketFlow under asyncio, flowfn under ``runner``."""
    expected = asyncio.run(scenario(pocketflow, asyncio.sleep, *args))
    got = runner(partial(scenario, compat, anyio.sleep, *args))
    assert got == expected
    return expected


def sync_flow(build: Callable[..., Any], initial: dict[str, Any]) -> Callable[..., Any]:
    """A scenario that runs ``build(mod, *args)`` on a fresh copy of ``initial``."""

    def scenario(mod: Any, *args: Any) -> Any:
        return run_sync(build(mod, *args), copy.deepcopy(initial))

    return scenario


def async_flow(build: Callable[..., Any], initial: dict[str, Any]) -> Callable[..., Any]:
    """An async scenario that runs ``build(mod, sleep, *args)`` on a fresh copy of ``initial``."""

    async def scenario(mod: Any, sleep: Any, *args: Any) -> Any:
        return await run_async(build(mod, sleep, *args), copy.deepcopy(initial))

    return scenario


# ----------------------------------------------------------------------------------------
# Sync flows: chains, routing, branching, loops
# ----------------------------------------------------------------------------------------


def build_chain(mod: Any) -> Any:
    class Load(mod.Node):
        def prep(self, shared):
            shared["log"].append("load.prep")
            return shared["text"]

        def exec(self, text):
            return text.split()

        def post(self, shared, prep_res, exec_res):
            shared["log"].append(("load.post", prep_res, exec_res))
            shared["words"] = exec_res

    class Count(mod.Node):
        def prep(self, shared):
            shared["log"].append("count.prep")
            return shared["words"]

        def exec(self, words):
            return len(words)

        def post(self, shared, prep_res, exec_res):
            shared["log"].append(("count.post", exec_res))
            shared["count"] = exec_res
            return "default"

    class Report(mod.Node):
        def prep(self, shared):
            return shared["count"]

        def exec(self, count):
            return f"{count} words"

        def post(self, shared, prep_res, exec_res):
            shared["report"] = exec_res
            return "reported"  # no successors: the flow ends quietly and returns it

    flow = mod.Flow()
    flow.start(Load()) >> Count() >> Report()
    return flow


def test_sync_chain_prep_exec_post() -> None:
    ret, shared, caught = side_by_side(sync_flow(build_chain, {"text": "a b c", "log": []}))
    assert ret == "reported"
    assert caught == []
    assert shared == {
        "text": "a b c",
        "log": [
            "load.prep",
            ("load.post", "a b c", ["a", "b", "c"]),
            "count.prep",
            ("count.post", 3),
        ],
        "words": ["a", "b", "c"],
        "count": 3,
        "report": "3 words",
    }


def build_branch(mod: Any) -> Any:
    class Check(mod.Node):
        def prep(self, shared):
            return shared["n"]

        def exec(self, n):
            return "even" if n % 2 == 0 else "odd"

        def post(self, shared, prep_res, exec_res):
            shared["log"].append(f"check:{exec_res}")
            return exec_res

    class Say(mod.Node):
        def __init__(self, word):
            super().__init__()
            self.word = word

        def post(self, shared, prep_res, exec_res):
            shared["log"].append(self.word)

    check = Check()
    check - "even" >> Say("even")
    check - "odd" >> Say("odd") >> Say("after-odd")
    return mod.Flow(start=check)


@pytest.mark.parametrize(
    ("n", "log"),
    [(2, ["check:even", "even"]), (3, ["check:odd", "odd", "after-odd"])],
)
def test_sync_branching_on_actions(n: int, log: list[str]) -> None:
    ret, shared, caught = side_by_side(sync_flow(build_branch, {"n": n, "log": []}))
    assert (ret, shared["log"], caught) == (None, log, [])


def build_loop(mod: Any, limit: int) -> Any:
    class Tick(mod.Node):
        def prep(self, shared):
            return shared["count"]

        def exec(self, count):
            return count + 1

        def post(self, shared, prep_res, exec_res):
            shared["count"] = exec_res
            shared["seen"].append(exec_res)
            return "again" if exec_res < limit else "done"

    class Finish(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["finished"] = shared["count"]
            return "finished"

    tick = Tick()
    tick - "again" >> tick
    tick - "done" >> Finish()
    return mod.Flow(tick)


@pytest.mark.parametrize("limit", [1, 5, 40])
def test_sync_loop_back_to_itself_until_counter(limit: int) -> None:
    ret, shared, caught = side_by_side(sync_flow(build_loop, {"count": 0, "seen": []}), limit)
    assert ret == "finished"
    assert caught == []
    assert shared == {"count": limit, "seen": list(range(1, limit + 1)), "finished": limit}


def build_missing_action(mod: Any, action: Any) -> Any:
    class Pick(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["picked"] = action
            return action

    class Side(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["side"] = "ran"

    pick = Pick()
    pick - "left" >> Side()
    pick - "right" >> Side()
    return mod.Flow(pick)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("up", "Flow ends: 'up' not found in ['left', 'right']"),
        (None, "Flow ends: 'None' not found in ['left', 'right']"),
        ("", "Flow ends: '' not found in ['left', 'right']"),
    ],
)
def test_sync_missing_action_warns_flow_ends(action: Any, message: str) -> None:
    ret, shared, caught = side_by_side(sync_flow(build_missing_action, {}), action)
    assert ret == action
    assert shared == {"picked": action}
    assert caught == [("UserWarning", message)]


@pytest.mark.parametrize("mod", MODS)
def test_missing_action_with_pytest_warns(mod: Any) -> None:
    shared: dict[str, Any] = {}
    with pytest.warns(UserWarning, match=r"^Flow ends: 'up' not found in \['left', 'right'\]$"):
        assert build_missing_action(mod, "up").run(shared) == "up"
    assert shared == {"picked": "up"}


def test_falsy_action_takes_default_successor() -> None:
    def build(mod: Any) -> Any:
        class Start(mod.Node):
            def post(self, shared, prep_res, exec_res):
                return shared["action"]

        class Mark(mod.Node):
            def post(self, shared, prep_res, exec_res):
                shared["marked"] = True

        start = Start()
        start >> Mark()
        return mod.Flow(start)

    results = [side_by_side(sync_flow(build, {"action": a})) for a in (None, "", "default")]
    assert [shared.get("marked") for _, shared, _ in results] == [True, True, True]
    assert all(caught == [] for _, _, caught in results)


def wire_twice(mod: Any) -> tuple[list[tuple[str, str]], dict[str, int], list[bool]]:
    a, b, c, d = (mod.Node() for _ in range(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returned = [a >> b is b, a >> c is c]
        a - "x" >> b
        returned.append((a - "x" >> d) is d)
        returned.append(a.next(b, "y") is b)
        a.next(c, "y")
    targets = [b, c, d]
    return _messages(caught), {k: targets.index(v) for k, v in a.successors.items()}, returned


def test_overwriting_successor_warns_and_replaces() -> None:
    caught, successors, returned = side_by_side(wire_twice)
    assert caught == [
        ("UserWarning", "Overwriting successor for action 'default'"),
        ("UserWarning", "Overwriting successor for action 'x'"),
        ("UserWarning", "Overwriting successor for action 'y'"),
    ]
    assert successors == {"default": 1, "x": 2, "y": 1}
    assert returned == [True, True, True, True]


@pytest.mark.parametrize("mod", MODS)
def test_overwriting_successor_with_pytest_warns(mod: Any) -> None:
    a, b, c = mod.Node(), mod.Node(), mod.Node()
    a >> b
    with pytest.warns(UserWarning, match="^Overwriting successor for action 'default'$"):
        a >> c
    assert a.successors == {"default": c}


def build_node_with_successor(mod: Any) -> Any:
    class Hello(mod.Node):
        def prep(self, shared):
            return shared["name"]

        def exec(self, name):
            return f"hello {name}"

        def post(self, shared, prep_res, exec_res):
            shared.setdefault("log", []).append(exec_res)
            return "next"

    hello = Hello()
    hello - "next" >> Hello()
    return hello


def test_node_run_with_successors_warns_and_runs_only_itself() -> None:
    ret, shared, caught = side_by_side(sync_flow(build_node_with_successor, {"name": "ann"}))
    assert ret == "next"
    assert shared == {"name": "ann", "log": ["hello ann"]}
    assert caught == [("UserWarning", "Node won't run successors. Use Flow.")]


def test_flow_run_with_successors_warns_and_runs_only_itself() -> None:
    def build(mod: Any) -> Any:
        flow = mod.Flow(build_node_with_successor(mod))
        flow >> mod.Flow(build_node_with_successor(mod))
        return flow

    ret, shared, caught = side_by_side(sync_flow(build, {"name": "bo"}))
    assert ret == "next"
    # The inner "next" successor runs (the flow's own), the flow's successor does not.
    assert shared == {"name": "bo", "log": ["hello bo", "hello bo"]}
    assert caught == [("UserWarning", "Node won't run successors. Use Flow.")]


@pytest.mark.parametrize("mod", MODS)
@pytest.mark.parametrize("action", [5, None, 1.5, b"x"])
def test_non_string_action_in_transition_raises_type_error(mod: Any, action: Any) -> None:
    node = mod.Node()
    with pytest.raises(TypeError, match=r"^Action must be a string"):
        node - action
    assert node.successors == {}


def test_flow_without_start_node_does_nothing() -> None:
    ret, shared, caught = side_by_side(sync_flow(lambda mod: mod.Flow(), {"k": 1}))
    assert (ret, shared, caught) == (None, {"k": 1}, [])


def test_flow_post_overrides_its_return_value_and_routes_outer_flow() -> None:
    def build(mod: Any) -> Any:
        class Inner(mod.Flow):
            def prep(self, shared):
                shared["log"].append("inner.prep")
                return "inner-prep-res"

            def post(self, shared, prep_res, exec_res):
                shared["log"].append(("inner.post", prep_res, exec_res))
                return "from-inner-post"

        class Step(mod.Node):
            def __init__(self, tag, action=None):
                super().__init__()
                self.tag, self.action = tag, action

            def post(self, shared, prep_res, exec_res):
                shared["log"].append(self.tag)
                return self.action

        inner = Inner(Step("inner-step", "last"))
        inner - "from-inner-post" >> Step("routed", "end")
        inner - "last" >> Step("wrong")
        return mod.Flow(inner)

    ret, shared, caught = side_by_side(sync_flow(build, {"log": []}))
    assert ret == "end"
    assert shared["log"] == [
        "inner.prep",
        "inner-step",
        ("inner.post", "inner-prep-res", "last"),
        "routed",
    ]
    assert caught == []


def test_exception_in_a_node_propagates_with_store_so_far() -> None:
    def build(mod: Any) -> Any:
        class Ok(mod.Node):
            def post(self, shared, prep_res, exec_res):
                shared["ok"] = True

        class Fail(mod.Node):
            def exec(self, prep_res):
                raise ZeroDivisionError("boom")

            def post(self, shared, prep_res, exec_res):
                shared["unreachable"] = True

        ok = Ok()
        ok >> Fail() >> Ok()
        return mod.Flow(ok)

    assert side_by_side(sync_flow(build, {})) == (
        ("raised", "ZeroDivisionError", "boom"),
        {"ok": True},
        [],
    )


# ----------------------------------------------------------------------------------------
# Retries: max_retries, cur_retry, exec_fallback, wait
# ----------------------------------------------------------------------------------------


def build_flaky(mod: Any, failures: int, max_retries: int, fallback: bool, wait: float = 0) -> Any:
    class Flaky(mod.Node):
        def prep(self, shared):
            return shared["calls"]

        def exec(self, calls):
            calls.append(("exec", self.cur_retry))
            if sum(c[0] == "exec" for c in calls) <= failures:
                raise ValueError(f"fail {len(calls)}")
            return "ok"

        def exec_fallback(self, calls, exc):
            calls.append(("fallback", self.cur_retry, str(exc)))
            if not fallback:
                return super().exec_fallback(calls, exc)
            return f"fallback after {exc}"

        def post(self, shared, prep_res, exec_res):
            shared["result"] = exec_res
            return "done"

    return Flaky(max_retries=max_retries, wait=wait)


@pytest.mark.parametrize("in_flow", [False, True], ids=["node.run", "in-flow"])
@pytest.mark.parametrize(
    ("failures", "max_retries", "fallback", "ret", "shared"),
    [
        (0, 1, False, "done", {"calls": [("exec", 0)], "result": "ok"}),
        (2, 3, False, "done", {"calls": [("exec", 0), ("exec", 1), ("exec", 2)], "result": "ok"}),
        (
            3,
            3,
            True,
            "done",
            {
                "calls": [("exec", 0), ("exec", 1), ("exec", 2), ("fallback", 2, "fail 3")],
                "result": "fallback after fail 3",
            },
        ),
        (
            1,
            1,
            True,
            "done",
            {"calls": [("exec", 0), ("fallback", 0, "fail 1")], "result": "fallback after fail 1"},
        ),
        (
            5,
            2,
            False,
            ("raised", "ValueError", "fail 2"),
            {"calls": [("exec", 0), ("exec", 1), ("fallback", 1, "fail 2")]},
        ),
    ],
)
def test_sync_retries_cur_retry_and_fallback(
    in_flow: bool, failures: int, max_retries: int, fallback: bool, ret: Any, shared: Any
) -> None:
    def build(mod: Any) -> Any:
        node = build_flaky(mod, failures, max_retries, fallback)
        return mod.Flow(node) if in_flow else node

    assert side_by_side(sync_flow(build, {"calls": []})) == (ret, shared, [])


@pytest.mark.parametrize(
    ("failures", "max_retries", "fallback", "sleeps"),
    [(2, 3, False, [0.001, 0.001]), (3, 3, True, [0.001, 0.001]), (0, 3, False, [])],
)
def test_sync_retry_wait_sleeps_between_attempts_only(
    monkeypatch: pytest.MonkeyPatch, failures: int, max_retries: int, fallback: bool, sleeps: Any
) -> None:
    real_sleep = time.sleep

    def scenario(mod: Any) -> Any:
        slept: list[float] = []

        def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            real_sleep(seconds)

        monkeypatch.setattr(time, "sleep", fake_sleep)
        node = build_flaky(mod, failures, max_retries, fallback, wait=0.001)
        outcome = run_sync(node, {"calls": []})
        monkeypatch.undo()
        return outcome, slept

    (ret, _, _), slept = side_by_side(scenario)
    assert ret == "done"
    assert slept == sleeps


def test_sync_retry_with_real_wait_takes_at_least_the_waits() -> None:
    def scenario(mod: Any) -> Any:
        began = time.perf_counter()
        outcome = run_sync(build_flaky(mod, 2, 3, False, wait=0.002), {"calls": []})
        return outcome, time.perf_counter() - began >= 0.004

    (ret, shared, _), waited = side_by_side(scenario)
    assert (ret, shared["result"], waited) == ("done", "ok", True)


# ----------------------------------------------------------------------------------------
# Params and per-step copies
# ----------------------------------------------------------------------------------------


class Observer:
    """Node class body shared by the params scenarios: records the params it sees."""

    @staticmethod
    def make(mod: Any) -> Any:
        class Show(mod.Node):
            def __init__(self, tag):
                super().__init__()
                self.tag = tag

            def prep(self, shared):
                shared["seen"].append((self.tag, dict(self.params)))

            def post(self, shared, prep_res, exec_res):
                # In place: PocketFlow hands one dict to every node of one run.
                self.params[self.tag] = True

        return Show


def test_set_params_on_a_node() -> None:
    def scenario(mod: Any) -> Any:
        node = Observer.make(mod)("n")
        node.set_params({"x": 1})
        return run_sync(node, {"seen": []}), node.params

    (ret, shared, caught), params = side_by_side(scenario)
    assert (ret, shared, caught) == (None, {"seen": [("n", {"x": 1})]}, [])
    assert params == {"x": 1, "n": True}


def test_flow_params_reach_nodes_and_do_not_leak_onto_originals() -> None:
    def scenario(mod: Any) -> Any:
        show = Observer.make(mod)
        a, b = show("a"), show("b")
        a >> b
        flow = mod.Flow(a)
        flow.set_params({"user": "ann"})
        outcome = run_sync(flow, {"seen": []})
        return outcome, flow.params, [a.params, b.params], a.successors == {"default": b}

    (ret, shared, caught), flow_params, node_params, wired = side_by_side(scenario)
    assert shared == {"seen": [("a", {"user": "ann"}), ("b", {"user": "ann", "a": True})]}
    assert (ret, caught) == (None, [])
    # The run worked on a copy of the flow's params, set on copies of the nodes.
    assert flow_params == {"user": "ann"}
    assert (node_params, wired) == ([{}, {}], True)


def test_each_step_runs_a_fresh_copy_of_the_node() -> None:
    def scenario(mod: Any) -> Any:
        class Visit(mod.Node):
            def exec(self, prep_res):
                self.cur_retry_seen = self.cur_retry

            def post(self, shared, prep_res, exec_res):
                self.visits = getattr(self, "visits", 0) + 1
                shared["visits"].append(self.visits)
                return "again" if len(shared["visits"]) < 3 else None

        visit = Visit()
        visit - "again" >> visit
        outcome = run_sync(mod.Flow(visit), {"visits": []})
        leaked = [hasattr(visit, n) for n in ("visits", "cur_retry", "cur_retry_seen")]
        return outcome, leaked, visit.params

    (ret, shared, caught), leaked, params = side_by_side(scenario)
    assert shared == {"visits": [1, 1, 1]}
    assert (ret, caught) == (None, [("UserWarning", "Flow ends: 'None' not found in ['again']")])
    assert leaked == [False, False, False]
    assert params == {}


def build_nested(mod: Any) -> Any:
    """Flow -> BatchFlow -> Flow -> nodes, with params at the outer flow and per batch item."""
    show = Observer.make(mod)

    class Items(mod.BatchFlow):
        def prep(self, shared):
            return shared["items"]

        def post(self, shared, prep_res, exec_res):
            shared["batch_post"] = (prep_res, exec_res)
            return "batched"

    class Done(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["done_params"] = dict(self.params)

    inner_start = show("inner1")
    inner_start >> show("inner2")
    items = Items(mod.Flow(inner_start))
    head = show("head")
    head >> items
    items - "batched" >> Done()
    outer = mod.Flow(head)
    outer.set_params({"a": 0, "b": 0})
    return outer


def test_nested_flows_and_batch_flow_params_merge() -> None:
    initial = {"seen": [], "items": [{"b": 1}, {"b": 2, "c": 3}, {}]}
    ret, shared, caught = side_by_side(sync_flow(build_nested, initial))
    assert (ret, caught) == (None, [])
    assert shared["seen"] == [
        ("head", {"a": 0, "b": 0}),
        ("inner1", {"a": 0, "b": 1, "head": True}),
        ("inner2", {"a": 0, "b": 1, "head": True, "inner1": True}),
        ("inner1", {"a": 0, "b": 2, "c": 3, "head": True}),
        ("inner2", {"a": 0, "b": 2, "c": 3, "head": True, "inner1": True}),
        ("inner1", {"a": 0, "b": 0, "head": True}),
        ("inner2", {"a": 0, "b": 0, "head": True, "inner1": True}),
    ]
    assert shared["batch_post"] == (initial["items"], None)
    # The batch items' params never reach the outer flow's dict, so Done sees it as it was.
    assert shared["done_params"] == {"a": 0, "b": 0, "head": True}


@pytest.mark.parametrize("prep_res", [None, []])
def test_batch_flow_with_no_items_runs_nothing(prep_res: Any) -> None:
    def build(mod: Any) -> Any:
        class Never(mod.Node):
            def post(self, shared, p, e):
                shared["ran"] = True

        class Empty(mod.BatchFlow):
            def prep(self, shared):
                return prep_res

            def post(self, shared, p, e):
                shared["post"] = (p, e)
                return "empty"

        return Empty(Never())

    assert side_by_side(sync_flow(build, {})) == ("empty", {"post": ([], None)}, [])


# ----------------------------------------------------------------------------------------
# BatchNode and BatchFlow (sync)
# ----------------------------------------------------------------------------------------


def build_batch_node(mod: Any) -> Any:
    class Chunks(mod.BatchNode):
        def prep(self, shared):
            return shared["items"]

        def exec(self, item):
            self.log.append((item, self.cur_retry))
            if item == "bad" or (item == "flaky" and self.cur_retry == 0):
                raise RuntimeError(f"no {item}")
            return item.upper()

        def exec_fallback(self, item, exc):
            self.log.append(("fallback", item, str(exc)))
            return None

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res
            shared["log"] = self.log
            return "chunked"

    node = Chunks(max_retries=2)
    node.log = []
    return mod.Flow(node)


def test_batch_node_retries_and_falls_back_per_item() -> None:
    initial = {"items": ["a", "flaky", "bad", "b"]}
    ret, shared, caught = side_by_side(sync_flow(build_batch_node, initial))
    assert (ret, caught) == ("chunked", [])
    assert shared["results"] == ["A", "FLAKY", None, "B"]
    assert shared["log"] == [
        ("a", 0),
        ("flaky", 0),
        ("flaky", 1),
        ("bad", 0),
        ("bad", 1),
        ("fallback", "bad", "no bad"),
        ("b", 0),
    ]


@pytest.mark.parametrize(
    ("make_items", "expected"),
    [
        (lambda: None, []),
        (lambda: [], []),
        (lambda: (), []),
        (lambda: (c for c in "gh"), ["G", "H"]),
        (lambda: {"k": 1}, ["K"]),
    ],
    ids=["None", "empty-list", "empty-tuple", "generator", "dict"],
)
def test_batch_node_item_shapes(make_items: Callable[[], Any], expected: list[str]) -> None:
    def build(mod: Any) -> Any:
        class Upper(mod.BatchNode):
            def prep(self, shared):
                return make_items()

            def exec(self, item):
                return item.upper()

            def post(self, shared, prep_res, exec_res):
                shared["results"] = exec_res

        return Upper()

    assert side_by_side(sync_flow(build, {})) == (None, {"results": expected}, [])


def build_batch_flow(mod: Any) -> Any:
    class Double(mod.Node):
        def prep(self, shared):
            return shared["data"][self.params["key"]]

        def exec(self, value):
            return value * self.params["factor"]

        def post(self, shared, prep_res, exec_res):
            shared["data"][self.params["key"]] = exec_res
            shared["log"].append(dict(self.params))
            return "again" if exec_res < 10 else None

    class Keys(mod.BatchFlow):
        def prep(self, shared):
            return [{"key": k} for k in sorted(shared["data"])]

    double = Double()
    double - "again" >> double
    flow = Keys(double)
    flow.set_params({"factor": 3, "key": "overridden"})
    return flow


def test_batch_flow_runs_whole_flow_per_item() -> None:
    initial = {"data": {"x": 1, "y": 4}, "log": []}
    ret, shared, caught = side_by_side(sync_flow(build_batch_flow, initial))
    assert ret is None
    assert shared["data"] == {"x": 27, "y": 12}
    assert shared["log"] == [{"factor": 3, "key": "x"}] * 3 + [{"factor": 3, "key": "y"}]
    assert caught == [("UserWarning", "Flow ends: 'None' not found in ['again']")] * 2


# ----------------------------------------------------------------------------------------
# Async flows: the same results on asyncio (PocketFlow) and asyncio/trio/anyio (flowfn)
# ----------------------------------------------------------------------------------------


def build_async_chain(mod: Any, sleep: Any) -> Any:
    class Fetch(mod.AsyncNode):
        async def prep_async(self, shared):
            await sleep(0)
            shared["log"].append("fetch.prep")
            return shared["url"]

        async def exec_async(self, url):
            await sleep(0.001)
            return f"<{url}>"

        async def post_async(self, shared, prep_res, exec_res):
            shared["page"] = exec_res
            shared["log"].append(("fetch.post", prep_res, exec_res))
            return "parse"

    class Parse(mod.Node):  # a sync node inside an async flow
        def prep(self, shared):
            shared["log"].append("parse.prep")
            return shared["page"]

        def exec(self, page):
            return page.strip("<>")

        def post(self, shared, prep_res, exec_res):
            shared["parsed"] = exec_res
            return "store"

    class Store(mod.AsyncNode):
        async def exec_async(self, prep_res):
            await sleep(0)
            return self.params

        async def post_async(self, shared, prep_res, exec_res):
            shared["log"].append(("store.post", exec_res))
            return "stored"

    fetch, parse = Fetch(), Parse()
    fetch - "parse" >> parse
    parse - "store" >> Store()
    flow = mod.AsyncFlow(start=fetch)
    flow.set_params({"run": 1})
    return flow


def test_async_chain_mixing_sync_nodes(runner: Any) -> None:
    initial = {"url": "x.org", "log": []}
    ret, shared, caught = side_by_side_async(async_flow(build_async_chain, initial), runner)
    assert (ret, caught) == ("stored", [])
    assert shared == {
        "url": "x.org",
        "page": "<x.org>",
        "parsed": "x.org",
        "log": [
            "fetch.prep",
            ("fetch.post", "x.org", "<x.org>"),
            "parse.prep",
            ("store.post", {"run": 1}),
        ],
    }


def build_async_nesting(mod: Any, sleep: Any) -> Any:
    """AsyncFlow -> (AsyncFlow whose post_async picks the action, sync Flow, loops)."""

    class Step(mod.AsyncNode):
        def __init__(self, tag, action=None):
            super().__init__()
            self.tag, self.action = tag, action

        async def post_async(self, shared, prep_res, exec_res):
            await sleep(0)
            shared["log"].append(self.tag)
            return self.action

    class SyncStep(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["log"].append("sync")
            shared["n"] += 1
            return "loop" if shared["n"] < 3 else "out"

    class Inner(mod.AsyncFlow):
        async def prep_async(self, shared):
            shared["log"].append("inner.prep_async")
            return "inner-prep"

        async def post_async(self, shared, prep_res, exec_res):
            shared["log"].append(("inner.post_async", prep_res, exec_res))
            return f"after-{exec_res}"

    sync_step = SyncStep()
    sync_step - "loop" >> sync_step
    sync_flow_ = mod.Flow(sync_step)

    inner = Inner(Step("inner-step", "x"))
    inner - "after-x" >> sync_flow_
    sync_flow_ - "out" >> Step("tail", "finished")
    return mod.AsyncFlow(inner)


def test_async_nested_flows_post_async_return_is_the_action(runner: Any) -> None:
    initial = {"log": [], "n": 0}
    ret, shared, caught = side_by_side_async(async_flow(build_async_nesting, initial), runner)
    assert ret == "finished"
    # The sync sub-flow ends on "out" (its node only knows "loop"); the outer flow routes it.
    assert caught == [("UserWarning", "Flow ends: 'out' not found in ['loop']")]
    assert shared == {
        "n": 3,
        "log": [
            "inner.prep_async",
            "inner-step",
            ("inner.post_async", "inner-prep", "x"),
            "sync",
            "sync",
            "sync",
            "tail",
        ],
    }


def build_async_flaky(mod: Any, sleep: Any, failures: int, fallback: bool) -> Any:
    class Flaky(mod.AsyncNode):
        async def prep_async(self, shared):
            return shared["calls"]

        async def exec_async(self, calls):
            await sleep(0)
            calls.append("exec")
            if len(calls) <= failures:
                raise ValueError(f"fail {len(calls)}")
            return "ok"

        async def exec_fallback_async(self, calls, exc):
            calls.append(("fallback", str(exc)))
            if not fallback:
                return await super().exec_fallback_async(calls, exc)
            await sleep(0)
            return f"fallback after {exc}"

        async def post_async(self, shared, prep_res, exec_res):
            shared["result"] = exec_res
            return exec_res

    return mod.AsyncFlow(Flaky(max_retries=3, wait=0.001))


@pytest.mark.parametrize(
    ("failures", "fallback", "expected"),
    [
        (2, False, ("ok", {"calls": ["exec"] * 3, "result": "ok"}, [])),
        (
            3,
            True,
            (
                "fallback after fail 3",
                {
                    "calls": ["exec"] * 3 + [("fallback", "fail 3")],
                    "result": "fallback after fail 3",
                },
                [],
            ),
        ),
        (
            4,
            False,
            (
                ("raised", "ValueError", "fail 3"),
                {"calls": ["exec"] * 3 + [("fallback", "fail 3")]},
                [],
            ),
        ),
    ],
)
def test_async_retries_and_exec_fallback_async(
    runner: Any, failures: int, fallback: bool, expected: Any
) -> None:
    async def scenario(mod: Any, sleep: Any) -> Any:
        began = time.perf_counter()
        outcome = await run_async(build_async_flaky(mod, sleep, failures, fallback), {"calls": []})
        # Two waits of 0.001 s between three attempts (minus timer slack).
        return outcome, time.perf_counter() - began >= 0.0018

    assert side_by_side_async(scenario, runner) == (expected, True)


def build_async_batch_node(mod: Any, sleep: Any) -> Any:
    class Sequential(mod.AsyncBatchNode):
        async def prep_async(self, shared):
            return shared["items"]

        async def exec_async(self, item):
            self.log.append(("start", item))
            await sleep(DELAYS[item])
            self.log.append(("end", item))
            if item == 3:
                raise KeyError(item)
            return item * 10

        async def exec_fallback_async(self, item, exc):
            return ("fallback", item, repr(exc))

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"], shared["log"] = exec_res, self.log
            return "batched"

    node = Sequential()
    node.log = []
    return mod.AsyncFlow(node)


def test_async_batch_node_runs_items_in_order(runner: Any) -> None:
    initial = {"items": list(range(6))}
    ret, shared, caught = side_by_side_async(async_flow(build_async_batch_node, initial), runner)
    assert (ret, caught) == ("batched", [])
    assert shared["results"] == [0, 10, 20, ("fallback", 3, "KeyError(3)"), 40, 50]
    assert shared["log"] == [(e, i) for i in range(6) for e in ("start", "end")]


def build_async_parallel_node(mod: Any, sleep: Any) -> Any:
    state: dict[str, Any] = {"active": 0, "peak": 0, "done": []}

    class Squares(mod.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(enumerate(shared["delays"]))

        async def exec_async(self, item):
            i, delay = item
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            await sleep(delay)
            state["active"] -= 1
            state["done"].append(i)
            if i == 5:
                raise LookupError(i)
            return i * i

        async def exec_fallback_async(self, item, exc):
            return -1

        async def post_async(self, shared, prep_res, exec_res):
            shared["squares"] = exec_res
            shared["peak"] = state["peak"]
            shared["all_done"] = sorted(state["done"])
            shared["finished_out_of_order"] = state["done"] != sorted(state["done"])
            return "squared"

    return Squares(max_retries=2)


def test_async_parallel_batch_node_keeps_input_order(runner: Any) -> None:
    assert sorted(DELAYS) != DELAYS
    n = len(DELAYS)
    initial = {"delays": DELAYS}
    ret, shared, caught = side_by_side_async(async_flow(build_async_parallel_node, initial), runner)
    assert (ret, caught) == ("squared", [])
    assert shared["squares"] == [-1 if i == 5 else i * i for i in range(n)]
    # Every item (and item 5's retry) ran; all n were in flight at once.
    assert shared["all_done"] == sorted([*range(n), 5])
    assert shared["peak"] == n
    assert shared["finished_out_of_order"] is True


def build_async_batch_flow(mod: Any, sleep: Any) -> Any:
    class Visit(mod.AsyncNode):
        async def prep_async(self, shared):
            shared["log"].append(("prep", dict(self.params)))
            return self.params["page"]

        async def exec_async(self, page):
            await sleep(DELAYS[page])
            return f"page {page} of {self.params['book']}"

        async def post_async(self, shared, prep_res, exec_res):
            shared["log"].append(("post", exec_res))
            return "count"

    class Count(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["count"] += 1

    class Pages(mod.AsyncBatchFlow):
        async def prep_async(self, shared):
            return [{"page": p} for p in shared["pages"]]

        async def post_async(self, shared, prep_res, exec_res):
            shared["post"] = (len(prep_res), exec_res)
            return "paged"

    visit = Visit()
    visit - "count" >> Count()
    flow = Pages(visit)
    flow.set_params({"book": "B", "page": -1})
    return flow


def test_async_batch_flow_merges_params_and_runs_sequentially(runner: Any) -> None:
    initial = {"pages": [3, 0, 2], "log": [], "count": 0}
    ret, shared, caught = side_by_side_async(async_flow(build_async_batch_flow, initial), runner)
    assert (ret, caught) == ("paged", [])
    assert shared["log"] == [
        entry
        for p in (3, 0, 2)
        for entry in (("prep", {"book": "B", "page": p}), ("post", f"page {p} of B"))
    ]
    assert (shared["count"], shared["post"]) == (3, (3, None))


def build_async_parallel_flow(mod: Any, sleep: Any) -> Any:
    class Download(mod.AsyncNode):
        async def prep_async(self, shared):
            return self.params["name"]

        async def exec_async(self, name):
            await sleep(self.params["delay"])
            return f"{self.params['prefix']}:{name}"

        async def post_async(self, shared, prep_res, exec_res):
            shared[f"raw:{prep_res}"] = exec_res
            return "parse"

    class Parse(mod.Node):
        def prep(self, shared):
            return shared[f"raw:{self.params['name']}"]

        def exec(self, raw):
            return raw.upper()

        def post(self, shared, prep_res, exec_res):
            shared[f"parsed:{self.params['name']}"] = exec_res
            return "letters"

    class Letters(mod.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(shared[f"parsed:{self.params['name']}"])

        async def exec_async(self, letter):
            await sleep(self.params["delay"] / (ord(letter) % 7 + 1))
            return ord(letter)

        async def post_async(self, shared, prep_res, exec_res):
            shared[f"codes:{self.params['name']}"] = exec_res

    class Files(mod.AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"name": f"f{i}", "delay": d} for i, d in enumerate(DELAYS)]

        async def post_async(self, shared, prep_res, exec_res):
            shared["post"] = ([p["name"] for p in prep_res], exec_res)
            return "all-done"

    download, parse = Download(), Parse()
    download - "parse" >> parse
    parse - "letters" >> Letters()
    flow = Files(download)
    flow.set_params({"prefix": "p", "name": "never"})
    return flow


def test_async_parallel_batch_flow_sub_flows_write_per_item_keys(runner: Any) -> None:
    ret, shared, caught = side_by_side_async(async_flow(build_async_parallel_flow, {}), runner)
    names = [f"f{i}" for i in range(len(DELAYS))]
    assert (ret, caught) == ("all-done", [])
    assert shared.pop("post") == (names, None)
    expected: dict[str, Any] = {}
    for name in names:
        expected[f"raw:{name}"] = f"p:{name}"
        expected[f"parsed:{name}"] = f"P:{name.upper()}"
        expected[f"codes:{name}"] = [ord(c) for c in f"P:{name.upper()}"]
    assert shared == expected


@pytest.mark.anyio
async def test_async_parallel_batch_flow_awaited_in_a_running_loop(anyio_backend: str) -> None:
    scenario = async_flow(build_async_parallel_flow, {})
    expected = await anyio.to_thread.run_sync(
        lambda: asyncio.run(scenario(pocketflow, asyncio.sleep))
    )
    assert expected[0] == "all-done"
    assert await scenario(compat, anyio.sleep) == expected


def build_parallel_failure(mod: Any, sleep: Any) -> Any:
    class Boom(mod.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2, 3]

        async def exec_async(self, i):
            await sleep(0.001 * i)
            if i == 2:
                raise KeyError(f"item {i}")
            return i

        async def post_async(self, shared, prep_res, exec_res):
            shared["unreachable"] = True

    class Ok(mod.AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["ok"] = True

    ok = Ok()
    ok >> Boom()
    return mod.AsyncFlow(ok)


def test_async_parallel_failure_raises_the_item_exception(runner: Any) -> None:
    expected = (("raised", "KeyError", "'item 2'"), {"ok": True}, [])
    assert side_by_side_async(async_flow(build_parallel_failure, {}), runner) == expected


def test_async_node_run_async_with_successors_warns(runner: Any) -> None:
    def build(mod: Any, sleep: Any) -> Any:
        class Hello(mod.AsyncNode):
            async def post_async(self, shared, prep_res, exec_res):
                await sleep(0)
                shared.setdefault("log", []).append("hello")
                return "next"

        hello = Hello()
        hello - "next" >> Hello()
        return hello

    assert side_by_side_async(async_flow(build, {}), runner) == (
        "next",
        {"log": ["hello"]},
        [("UserWarning", "Node won't run successors. Use AsyncFlow.")],
    )


def test_async_missing_action_warns_flow_ends(runner: Any) -> None:
    def build(mod: Any, sleep: Any) -> Any:
        class Pick(mod.AsyncNode):
            async def post_async(self, shared, prep_res, exec_res):
                await sleep(0)
                return "up"

        pick = Pick()
        pick - "left" >> Pick()
        return mod.AsyncFlow(pick)

    assert side_by_side_async(async_flow(build, {}), runner) == (
        "up",
        {},
        [("UserWarning", "Flow ends: 'up' not found in ['left']")],
    )


@pytest.mark.parametrize("mod", MODS)
@pytest.mark.parametrize("cls", ["AsyncNode", "AsyncBatchNode", "AsyncParallelBatchNode"])
def test_sync_run_of_async_node_raises(mod: Any, cls: str) -> None:
    node = getattr(mod, cls)()
    with pytest.raises(RuntimeError, match=r"^Use run_async\.$"):
        node._run({})


@pytest.mark.parametrize("mod", MODS)
def test_async_node_inside_sync_flow_raises(mod: Any) -> None:
    class Step(mod.AsyncNode):
        pass

    with pytest.raises(RuntimeError, match=r"^Use run_async\.") as raised:
        mod.Flow(Step())._run({})
    # flowfn adds a note naming the node and the flow; the message itself is PocketFlow's.
    assert str(raised.value) == "Use run_async."


# ----------------------------------------------------------------------------------------
# Where flowfn runs what PocketFlow rejects (deliberate extensions)
# ----------------------------------------------------------------------------------------


def test_extension_async_node_run_starts_an_event_loop() -> None:
    def build(mod: Any) -> Any:
        class Hello(mod.AsyncNode):
            async def exec_async(self, prep_res):
                await anyio.sleep(0)
                return "hi"

            async def post_async(self, shared, prep_res, exec_res):
                shared["said"] = exec_res
                return "done"

        return Hello()

    assert run_sync(build(pocketflow), {}) == (("raised", "RuntimeError", "Use run_async."), {}, [])
    assert run_sync(build(compat), {}) == ("done", {"said": "hi"}, [])
    assert build(compat).run({}, backend="trio") == "done"


def test_extension_async_batch_nodes_accept_none_items() -> None:
    def scenario(mod: Any, cls: str) -> Any:
        class Nothing(getattr(mod, cls)):
            async def post_async(self, shared, prep_res, exec_res):
                shared["results"] = exec_res

        return asyncio.run(run_async(Nothing(), {}))

    for cls in ("AsyncBatchNode", "AsyncParallelBatchNode"):
        pf_ret, pf_shared, _ = scenario(pocketflow, cls)
        assert (pf_ret[:2], pf_shared) == (("raised", "TypeError"), {})
        assert scenario(compat, cls) == (None, {"results": []}, [])


def test_extension_async_node_sets_cur_retry() -> None:
    def scenario(mod: Any) -> Any:
        class Peek(mod.AsyncNode):
            async def exec_async(self, prep_res):
                if getattr(self, "cur_retry", "unset") == 0:
                    raise ValueError
                return getattr(self, "cur_retry", "unset")

            async def post_async(self, shared, prep_res, exec_res):
                shared["cur_retry"] = exec_res

        return asyncio.run(run_async(Peek(max_retries=2), {}))

    assert scenario(pocketflow) == (None, {"cur_retry": "unset"}, [])
    assert scenario(compat) == (None, {"cur_retry": 1}, [])


def test_extension_sync_flow_holding_async_node_inside_async_flow() -> None:
    def scenario(mod: Any) -> Any:
        class Step(mod.AsyncNode):
            async def post_async(self, shared, prep_res, exec_res):
                shared["ran"] = True

        return asyncio.run(run_async(mod.AsyncFlow(mod.Flow(Step())), {}))

    assert scenario(pocketflow) == (("raised", "RuntimeError", "Use run_async."), {}, [])
    assert scenario(compat) == (None, {"ran": True}, [])


# ----------------------------------------------------------------------------------------
# Known differences: PocketFlow's behaviour asserted on both; flowfn's run is xfail(strict)
# ----------------------------------------------------------------------------------------


def differs(reason: str) -> list[Any]:
    """``MODS`` with the flowfn run marked as a known, strict failure."""
    return [
        pytest.param(pocketflow, id="pocketflow"),
        pytest.param(compat, id="flowfn", marks=pytest.mark.xfail(strict=True, reason=reason)),
    ]


@pytest.mark.parametrize("mod", [pocketflow, compat], ids=["pocketflow", "flowfn"])
def test_same_slots_survive_the_per_step_copy(mod: Any) -> None:
    class Slotted(mod.Node):
        __slots__ = ("model",)

        def __init__(self):
            super().__init__()
            self.model = "gpt"

        def post(self, shared, prep_res, exec_res):
            shared["model"] = getattr(self, "model", "MISSING")

    assert run_sync(mod.Flow(Slotted()), {}) == (None, {"model": "gpt"}, [])


@pytest.mark.parametrize("mod", [pocketflow, compat], ids=["pocketflow", "flowfn"])
def test_same_per_step_copy_honours_getstate(mod: Any) -> None:
    class WithClient(mod.Node):
        def __init__(self):
            super().__init__()
            self.client = "connection"

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k != "client"}

        def post(self, shared, prep_res, exec_res):
            shared["client"] = getattr(self, "client", "dropped by __getstate__")

    assert run_sync(mod.Flow(WithClient()), {})[1] == {"client": "dropped by __getstate__"}


@pytest.mark.parametrize("mod", [pocketflow, compat], ids=["pocketflow", "flowfn"])
def test_same_falsy_node_ends_the_flow(mod: Any) -> None:
    class Empty(mod.Node):
        def __len__(self):
            return 0

        def post(self, shared, prep_res, exec_res):
            shared["ran"] = True

    class First(mod.Node):
        pass

    first = First()
    first >> Empty()
    assert run_sync(mod.Flow(Empty()), {}) == (None, {}, [])
    assert run_sync(mod.Flow(first), {}) == (
        None,
        {},
        [("UserWarning", "Flow ends: 'None' not found in ['default']")],
    )


@pytest.mark.parametrize("mod", [pocketflow, compat], ids=["pocketflow", "flowfn"])
@pytest.mark.parametrize("items", [0, False])
def test_same_batch_node_falsy_prep_result(mod: Any, items: Any) -> None:
    class Batch(mod.BatchNode):
        def prep(self, shared):
            return items

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    assert run_sync(Batch(), {}) == (None, {"results": []}, [])


@pytest.mark.parametrize("mod", [pocketflow, compat], ids=["pocketflow", "flowfn"])
def test_same_batch_flow_mapping_like_items(mod: Any) -> None:
    class Row:  # e.g. a database row object
        def keys(self):
            return ["id"]

        def __getitem__(self, key):
            return 7

    class Show(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["params"] = dict(self.params)

    class Rows(mod.BatchFlow):
        def prep(self, shared):
            return [Row()]

    assert run_sync(Rows(Show()), {}) == (None, {"params": {"id": 7}}, [])


@pytest.mark.parametrize("text", ["", "xy"])
@pytest.mark.parametrize(
    "mod",
    differs(
        "PocketFlow iterates a str returned as a batch's items character by character (and "
        "runs none for ''); flowfn raises TypeError asking for a list"
    ),
)
def test_difference_str_items(mod: Any, text: str) -> None:
    class Upper(mod.BatchNode):
        def prep(self, shared):
            return text

        def exec(self, item):
            return item.upper()

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    assert run_sync(Upper(), {}) == (None, {"results": list(text.upper())}, [])


@pytest.mark.parametrize(
    "mod",
    differs(
        "PocketFlow accepts max_retries=0 (exec is never called, exec_res is None); "
        "flowfn's Node.__init__ raises ValueError"
    ),
)
def test_difference_max_retries_zero(mod: Any) -> None:
    class Never(mod.Node):
        def exec(self, prep_res):
            return "called"

        def post(self, shared, prep_res, exec_res):
            shared["exec_res"] = exec_res

    assert run_sync(Never(max_retries=0), {}) == (None, {"exec_res": None}, [])


@pytest.mark.parametrize(
    "mod",
    differs(
        "PocketFlow's next() takes any hashable action and any successor object; flowfn's "
        "raises TypeError for a non-str action or a successor that is not a BaseNode"
    ),
)
def test_difference_next_accepts_non_string_actions(mod: Any) -> None:
    class Pick(mod.Node):
        def post(self, shared, prep_res, exec_res):
            return 2

    class Two(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["two"] = True

    pick = Pick()
    pick.next(Two(), 2)
    assert run_sync(mod.Flow(pick), {}) == (None, {"two": True}, [])


@pytest.mark.parametrize(
    "mod",
    differs(
        "AsyncFlow.run() (sync entry) in PocketFlow is Flow._run: it calls prep/post and "
        "ignores prep_async/post_async; flowfn starts an event loop and calls the async ones"
    ),
)
def test_difference_async_flow_sync_run_uses_sync_hooks(mod: Any) -> None:
    class Step(mod.Node):
        def post(self, shared, prep_res, exec_res):
            shared["step"] = True
            return "stepped"

    class Hooks(mod.AsyncFlow):
        async def prep_async(self, shared):
            shared["prep_async"] = True

        async def post_async(self, shared, prep_res, exec_res):
            return "from post_async"

    assert run_sync(Hooks(Step()), {}) == ("stepped", {"step": True}, [])

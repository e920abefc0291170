"""Nodes: the three phases, retries and fallback, wiring with >> and - "action" >>."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from flowfn import (
    AsyncBatchNode,
    AsyncNode,
    BaseNode,
    BatchNode,
    Flow,
    FlowError,
    Node,
)


class Flaky(Node):
    """Fails ``fails`` times, then returns the attempt number it succeeded on."""

    def __init__(self, fails: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fails = fails
        self.attempts: list[int] = []

    def exec(self, prep_res: Any) -> int:
        self.attempts.append(self.cur_retry)
        if len(self.attempts) <= self.fails:
            raise ValueError(f"attempt {self.cur_retry} failed")
        return self.cur_retry

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        shared["result"] = exec_res


def test_phases_pass_results_along_and_post_returns_the_action() -> None:
    calls: list[tuple[str, Any]] = []

    class Double(Node):
        def prep(self, shared: Any) -> int:
            calls.append(("prep", shared["x"]))
            return int(shared["x"])

        def exec(self, prep_res: int) -> int:
            calls.append(("exec", prep_res))
            return prep_res * 2

        def post(self, shared: Any, prep_res: int, exec_res: int) -> str:
            calls.append(("post", (prep_res, exec_res)))
            shared["y"] = exec_res
            return "doubled"

    shared = {"x": 21}
    assert Double().run(shared) == "doubled"
    assert shared == {"x": 21, "y": 42}
    assert calls == [("prep", 21), ("exec", 21), ("post", (21, 42))]


def test_retries_until_success_and_counts_attempts() -> None:
    node = Flaky(fails=2, max_retries=3)
    shared: dict[str, Any] = {}
    node.run(shared)
    assert node.attempts == [0, 1, 2]
    assert shared["result"] == 2


def test_last_failure_goes_to_fallback_whose_value_stands_for_exec() -> None:
    class WithFallback(Flaky):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            return f"fallback after {exc}"

    node = WithFallback(fails=5, max_retries=2)
    shared: dict[str, Any] = {}
    node.run(shared)
    assert node.attempts == [0, 1]
    assert shared["result"] == "fallback after attempt 1 failed"


def test_default_fallback_reraises_the_last_error() -> None:
    node = Flaky(fails=5, max_retries=2)
    with pytest.raises(ValueError, match="attempt 1 failed"):
        node.run({})
    assert node.attempts == [0, 1]


def test_wait_sleeps_between_attempts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("flowfn._engine.nodes.time.sleep", sleeps.append)
    Flaky(fails=2, max_retries=3, wait=0.25).run({})
    assert sleeps == [0.25, 0.25]


def test_max_retries_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        Node(max_retries=0)


@pytest.mark.anyio
async def test_async_retries_wait_with_anyio_sleep(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr("flowfn._engine.nodes.anyio.sleep", fake_sleep)

    class AsyncFlaky(AsyncNode):
        attempts = 0

        async def exec_async(self, prep_res: Any) -> int:
            self.attempts += 1
            if self.attempts < 3:
                raise OSError("try again")
            return self.cur_retry

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["ok_on"] = exec_res
            return "done"

    shared: dict[str, Any] = {}
    assert await AsyncFlaky(max_retries=4, wait=0.5).run_async(shared) == "done"
    assert shared == {"ok_on": 2}
    assert sleeps == [0.5, 0.5]


@pytest.mark.anyio
async def test_async_fallback_receives_prep_result_and_error(anyio_backend: str) -> None:
    class Fails(AsyncNode):
        async def prep_async(self, shared: Any) -> str:
            return "input"

        async def exec_async(self, prep_res: Any) -> Any:
            raise KeyError(prep_res)

        async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
            return (prep_res, type(exc).__name__)

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["got"] = exec_res

    shared: dict[str, Any] = {}
    await Fails(max_retries=3).run_async(shared)
    assert shared == {"got": ("input", "KeyError")}


def test_batch_node_runs_exec_per_item_in_order() -> None:
    class Upper(BatchNode):
        def prep(self, shared: Any) -> list[str]:
            return list(shared["words"])

        def exec(self, word: str) -> str:
            return word.upper()

        def post(self, shared: Any, prep_res: Any, exec_res: list[str]) -> None:
            shared["upper"] = exec_res

    shared: dict[str, Any] = {"words": ["apple", "banana", "cherry"]}
    Upper().run(shared)
    assert shared["upper"] == ["APPLE", "BANANA", "CHERRY"]


def test_batch_node_with_non_iterable_items_names_the_node() -> None:
    class Bad(BatchNode):
        def prep(self, shared: Any) -> int:
            return 42

    with pytest.raises(TypeError, match=r"Bad: a batch node's prep must return an iterable"):
        Bad().run({})


@pytest.mark.anyio
async def test_async_batch_node_runs_items_one_after_another(anyio_backend: str) -> None:
    import anyio

    log: list[str] = []

    class Seq(AsyncBatchNode):
        async def prep_async(self, shared: Any) -> range:
            return range(3)

        async def exec_async(self, item: int) -> int:
            log.append(f"start {item}")
            await anyio.sleep(0)
            log.append(f"end {item}")
            return item * 10

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["out"] = exec_res

    shared: dict[str, Any] = {}
    await Seq().run_async(shared)
    assert shared["out"] == [0, 10, 20]
    assert log == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]


def test_rshift_and_action_transitions_wire_successors() -> None:
    a, b, c = Node(), Node(), Node()
    assert (a >> b) is b
    assert (a - "other" >> c) is c
    assert a.successors == {"default": b, "other": c}
    assert a.next(c, "third") is c
    assert a.successors["third"] is c


def test_action_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="Action must be a string"):
        Node() - 5  # type: ignore[operator]
    with pytest.raises(TypeError, match="Action must be a string"):
        Node().next(Node(), 5)  # type: ignore[arg-type]


def test_successor_must_be_a_node() -> None:
    with pytest.raises(TypeError, match=r"Node >> 'text': a successor must be a node"):
        Node() >> "text"  # type: ignore[type-var]
    node = Node()
    assert (node >> None) is None  # explicit end, as in PocketFlow
    assert node.successors == {"default": None}


def test_overwriting_a_successor_warns() -> None:
    a = Node()
    a >> Node()
    with pytest.warns(UserWarning, match="Overwriting successor for action 'default'"):
        a >> Node()


def test_running_a_node_with_successors_warns_and_runs_only_that_node() -> None:
    ran: list[str] = []

    class Record(Node):
        def exec(self, prep_res: Any) -> None:
            ran.append(self.params.get("tag", "untagged"))

    a = Record()
    a >> Record()
    with pytest.warns(UserWarning, match="Node won't run successors. Use Flow."):
        a.run({})
    assert ran == ["untagged"]


def test_async_node_private_sync_run_says_use_run_async() -> None:
    with pytest.raises(RuntimeError, match=r"Use run_async\."):
        AsyncNode()._run({})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_node_run_starts_its_own_event_loop(backend: str) -> None:
    class Hello(AsyncNode):
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["hello"] = backend
            return "said"

    shared: dict[str, Any] = {}
    assert Hello().run(shared, backend=backend) == "said"
    assert shared == {"hello": backend}


@pytest.mark.anyio
async def test_run_inside_a_running_loop_says_await_run_async(anyio_backend: str) -> None:
    with pytest.raises(FlowError, match=r"await AsyncNode.run_async\(shared\)"):
        AsyncNode().run({})


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        AsyncNode().run({}, backend="curio")


def test_sync_node_runs_without_event_loop_even_inside_one() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Flow(Node()).run({}) is None


def test_name_and_repr_tell_what_the_node_is() -> None:
    class Summarize(Node):
        pass

    node = Summarize()
    node >> Node()
    assert repr(node) == "<Summarize successors=['default']>"
    node.name = "summary"
    assert repr(node) == "<Summarize 'summary' successors=['default']>"
    assert repr(BaseNode()) == "<BaseNode successors=[]>"

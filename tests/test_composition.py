"""Composition asks from users of this kind of library (issue 13): batch flows that pull
async iterables, and into= nodes re-visited by a loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from flowfn import (
    AsyncFlow,
    AsyncParallelBatchFlow,
    BatchFlow,
    Flow,
    FlowError,
    node,
    parallel_batch,
)


@pytest.mark.anyio
async def test_batch_flows_pull_async_iterables_lazily() -> None:
    pulled: list[int] = []
    done: list[int] = []

    @node
    async def square(shared: dict[str, Any], n: int) -> None:
        await anyio.sleep(0.001)
        shared["squares"][n] = n * n
        done.append(n)

    async def numbers() -> AsyncIterator[dict[str, int]]:
        for n in range(12):
            pulled.append(n)
            assert len(pulled) - len(done) <= 3 + 1  # never more than limit ahead
            yield {"n": n}

    @parallel_batch(flow=Flow(square), limit=3)
    def fan(shared: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
        shared["squares"] = {}
        return numbers()

    shared: dict[str, Any] = {}
    await AsyncFlow(fan).run_async(shared)
    assert shared["squares"] == {n: n * n for n in range(12)}

    class Pages(AsyncParallelBatchFlow):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            shared["squares"] = {}
            return numbers()

    pulled.clear()
    done.clear()
    classy: dict[str, Any] = {}
    await Pages(square, limit=3).run_async(classy)
    assert classy["squares"] == shared["squares"]


def test_a_sync_batch_flow_refuses_an_async_iterable_clearly() -> None:
    async def params() -> AsyncIterator[dict[str, int]]:
        yield {"n": 1}

    class Sync(BatchFlow):
        def prep(self, shared: dict[str, Any]) -> Any:
            return params()

    @node
    def noop(shared: dict[str, Any]) -> None:
        pass

    with pytest.raises(TypeError, match="a sync batch flow cannot pull"):
        Sync(noop).run({})


@pytest.mark.anyio
async def test_an_into_node_in_a_loop_replaces_its_own_value_only() -> None:
    @node(into="guess")
    def guess(shared: dict[str, Any]) -> int:
        shared["tries"] = shared.get("tries", 0) + 1
        return shared["tries"] * 10

    @node
    def check(shared: dict[str, Any]) -> str:
        return "done" if shared["guess"] >= 30 else "again"

    guess >> check
    check - "again" >> guess
    check - "done" >> None
    shared: dict[str, Any] = {}
    await AsyncFlow(guess).run_async(shared)
    assert shared == {"tries": 3, "guess": 30}

    with pytest.raises(FlowError, match=r"shared\['guess'\] already exists"):
        await AsyncFlow(guess).run_async({"guess": 5})  # the user's value stays protected

    @node(into="guess")
    def first(shared: dict[str, Any]) -> int:
        return 1

    @node(into="guess")
    def other(shared: dict[str, Any]) -> int:
        return 99

    first >> other  # another node writing the same key is still refused
    with pytest.raises(FlowError, match=r"node 'other': shared\['guess'\] already exists"):
        await Flow(first).run_async({})


@pytest.mark.anyio
async def test_into_and_post_together_post_branches_on_the_stored_value() -> None:
    @node(into="score")
    def score(shared: dict[str, Any]) -> int:
        return len(shared["text"])

    @score.post
    def route(shared: dict[str, Any], prep_res: Any, value: int) -> str:
        assert shared["score"] == value
        return "long" if value > 5 else "short"

    @node
    def long(shared: dict[str, Any]) -> None:
        shared["kind"] = "long"

    @node
    def short(shared: dict[str, Any]) -> None:
        shared["kind"] = "short"

    score - "long" >> long
    score - "short" >> short
    shared = {"text": "hello world"}
    await Flow(score).run_async(shared)
    assert shared == {"text": "hello world", "score": 11, "kind": "long"}

"""Parallel batches: order, real overlap, the limit, lazy pulling, errors and cancellation."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from flowfn import (
    DEFAULT_LIMIT,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    ParallelBatchFlow,
    ParallelBatchNode,
    map_ordered,
)

pytestmark = pytest.mark.anyio


class Tracker:
    """Counts items in flight and records (event, item, time) stamps."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.stamps: list[tuple[str, Any, float]] = []

    async def run(self, item: Any, delay: float) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.stamps.append(("start", item, anyio.current_time()))
        try:
            await anyio.sleep(delay)
        finally:
            self.in_flight -= 1
        self.stamps.append(("end", item, anyio.current_time()))
        return item


class Squares(AsyncParallelBatchNode):
    def __init__(self, tracker: Tracker, delays: dict[int, float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker, self.delays = tracker, delays

    async def prep_async(self, shared: Any) -> Any:
        return shared["numbers"]

    async def exec_async(self, n: int) -> int:
        await self.tracker.run(n, self.delays.get(n, 0))
        return n * n

    async def post_async(self, shared: Any, prep_res: Any, exec_res: list[int]) -> str:
        shared["squares"] = exec_res
        return "done"


async def test_results_keep_input_order_under_random_delays(anyio_backend: str) -> None:
    rng = random.Random(7)
    numbers = list(range(40))
    delays = {n: rng.uniform(0, 0.02) for n in numbers}
    tracker = Tracker()
    shared: dict[str, Any] = {"numbers": numbers}
    assert await Squares(tracker, delays).run_async(shared) == "done"
    assert shared["squares"] == [n * n for n in numbers]
    finish_order = [item for event, item, _ in tracker.stamps if event == "end"]
    assert finish_order != numbers  # they did finish out of order...
    assert sorted(finish_order) == numbers  # ...and every one finished


async def test_items_really_overlap(anyio_backend: str) -> None:
    tracker = Tracker()
    await Squares(tracker, dict.fromkeys(range(5), 0.01)).run_async({"numbers": range(5)})
    starts = [t for event, _, t in tracker.stamps if event == "start"]
    ends = [t for event, _, t in tracker.stamps if event == "end"]
    assert max(starts) < min(ends)  # every item started before any finished
    assert tracker.peak == 5


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_limit_is_never_exceeded(anyio_backend: str, limit: int) -> None:
    tracker = Tracker()
    delays = {n: (n % 4) * 0.002 for n in range(30)}
    shared: dict[str, Any] = {"numbers": range(30)}
    await Squares(tracker, delays, limit=limit).run_async(shared)
    assert tracker.peak == limit
    assert shared["squares"] == [n * n for n in range(30)]


async def test_items_are_pulled_lazily_at_most_limit_ahead(anyio_backend: str) -> None:
    pulled: list[int] = []
    tracker = Tracker()

    def numbers() -> Iterator[int]:
        for n in range(20):
            pulled.append(n)
            # never more than `limit` items pulled beyond those finished
            finished = sum(1 for event, *_ in tracker.stamps if event == "end")
            assert len(pulled) - finished <= 4
            yield n

    shared: dict[str, Any] = {"numbers": numbers()}
    await Squares(tracker, dict.fromkeys(range(20), 0.001), limit=4).run_async(shared)
    assert pulled == list(range(20))
    assert shared["squares"] == [n * n for n in range(20)]


async def test_no_limit_runs_every_item_at_once(anyio_backend: str) -> None:
    tracker = Tracker()
    n = DEFAULT_LIMIT + 50
    # Items wait long enough for the pool to start every worker (1050 task starts, which
    # took over 0.1 s on a loaded 2-core machine).
    await Squares(tracker, dict.fromkeys(range(n), 0.5), limit=None).run_async(
        {"numbers": range(n)}
    )
    assert tracker.peak == n


async def test_default_limit_bounds_huge_batches(anyio_backend: str) -> None:
    tracker = Tracker()
    n = DEFAULT_LIMIT + 50
    await Squares(tracker, dict.fromkeys(range(n), 0.1)).run_async({"numbers": range(n)})
    assert tracker.peak == DEFAULT_LIMIT


def test_bad_limit_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Squares: limit must be a positive int or None"):
        Squares(Tracker(), {}, limit=0)


async def test_empty_and_none_batches_give_empty_results(anyio_backend: str) -> None:
    for numbers in ([], None):
        shared: dict[str, Any] = {"numbers": numbers}
        await Squares(Tracker(), {}).run_async(shared)
        assert shared["squares"] == []


async def test_a_failing_item_cancels_its_siblings_and_raises_the_original_error(
    anyio_backend: str,
) -> None:
    cancelled: list[int] = []
    finished: list[int] = []

    class Fragile(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> range:
            return range(10)

        async def exec_async(self, n: int) -> int:
            try:
                await anyio.sleep(0.001 if n == 3 else 5)
            except anyio.get_cancelled_exc_class():
                cancelled.append(n)
                raise
            if n == 3:
                raise ValueError("item three broke")
            finished.append(n)
            return n

    with pytest.raises(ValueError, match="item three broke") as info:
        with anyio.fail_after(3):  # a sibling left running would trip this
            await Fragile().run_async({})
    assert info.value.__notes__ == ["flowfn: item 3 of parallel batch node 'Fragile'"]
    assert sorted(cancelled) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert finished == []


async def test_retries_and_fallback_apply_per_item(anyio_backend: str) -> None:
    attempts: dict[int, int] = {}

    class Retrying(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> list[int]:
            return [1, 2, 3]

        async def exec_async(self, n: int) -> str:
            attempts[n] = attempts.get(n, 0) + 1
            await anyio.sleep(0)
            if n == 2 or attempts[n] < 2:
                raise RuntimeError(f"{n} failed")
            return f"ok {n}"

        async def exec_fallback_async(self, n: int, exc: Exception) -> str:
            return f"fallback {n}: {exc}"

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["out"] = exec_res

    shared: dict[str, Any] = {}
    await Retrying(max_retries=3).run_async(shared)
    assert shared["out"] == ["ok 1", "fallback 2: 2 failed", "ok 3"]
    assert attempts == {1: 2, 2: 3, 3: 2}


async def test_cancelling_the_caller_stops_every_item(anyio_backend: str) -> None:
    tracker = Tracker()
    with anyio.move_on_after(0.05) as scope:
        await Squares(tracker, dict.fromkeys(range(20), 10.0)).run_async({"numbers": range(20)})
    assert scope.cancelled_caught
    assert tracker.in_flight == 0  # every item unwound before run_async returned
    assert not [event for event, *_ in tracker.stamps if event == "end"]


class Factory(AsyncNode):
    """One step of a cake line: records params and overlaps in time."""

    def __init__(self, step: str, tracker: Tracker) -> None:
        super().__init__()
        self.step, self.tracker = step, tracker

    async def exec_async(self, prep_res: Any) -> None:
        await self.tracker.run((self.params["order"], self.step), 0.01)

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        shared["steps"].setdefault(self.params["order"], []).append(
            (self.step, self.params["shop"])
        )


async def test_parallel_batch_flow_runs_sub_flows_concurrently_with_own_params(
    anyio_backend: str,
) -> None:
    tracker = Tracker()

    class Orders(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> list[dict[str, int]]:
            shared["steps"] = {}
            return [{"order": i} for i in range(6)]

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["orders"] = len(prep_res)
            return "all-baked"

    mix = Factory("mix", tracker)
    mix >> Factory("bake", tracker) >> Factory("decorate", tracker)
    flow = Orders(AsyncFlow(mix))
    flow.set_params({"shop": "main street"})
    shared: dict[str, Any] = {}
    assert await flow.run_async(shared) == "all-baked"
    assert shared["orders"] == 6
    assert shared["steps"] == {
        i: [("mix", "main street"), ("bake", "main street"), ("decorate", "main street")]
        for i in range(6)
    }
    assert tracker.peak == 6  # all six orders were in flight at once
    assert mix.params == {}  # params went to copies, never to the shared node object


async def test_parallel_batch_flow_limit_and_failure(anyio_backend: str) -> None:
    tracker = Tracker()

    class Limited(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> list[dict[str, int]]:
            shared["steps"] = {}
            return [{"order": i, "shop": "x"} for i in range(10)]

    await Limited(Factory("only", tracker), limit=2).run_async({})
    assert tracker.peak == 2

    class Burns(AsyncNode):
        async def exec_async(self, prep_res: Any) -> None:
            await anyio.sleep(0.001 * self.params["order"])
            if self.params["order"] == 4:
                raise OSError("oven on fire")

    with pytest.raises(OSError, match="oven on fire") as info:
        await Limited(Burns()).run_async({})
    assert info.value.__notes__ == [
        "flowfn: in node 'Burns' of flow 'Limited'",
        "flowfn: item 4 of parallel batch flow 'Limited'",
    ]


def test_typescript_names_are_aliases() -> None:
    assert ParallelBatchFlow is AsyncParallelBatchFlow
    assert ParallelBatchNode is AsyncParallelBatchNode


async def test_map_ordered_on_many_items(anyio_backend: str) -> None:
    async def triple(x: int) -> int:
        if x % 1000 == 0:
            await anyio.sleep(0)
        return 3 * x

    assert await map_ordered(triple, range(20_000), limit=50) == [3 * x for x in range(20_000)]


async def test_map_ordered_reports_errors_from_the_iterable(anyio_backend: str) -> None:
    def items() -> Iterator[int]:
        yield 1
        raise LookupError("source broke")

    async def same(x: int) -> int:
        await anyio.sleep(0)
        return x

    with pytest.raises(LookupError, match="source broke") as info:
        await map_ordered(same, items(), limit=1, where="test pool")
    assert info.value.__notes__ == ["flowfn: iterating the items (after item 0) of test pool"]


async def test_items_that_never_wait_need_one_worker(anyio_backend: str) -> None:
    """The pool starts workers only while every running one waits inside an item."""
    tasks: set[object] = set()

    async def where(item: int) -> int:
        tasks.add(anyio.get_current_task().id)
        return item

    assert await map_ordered(where, range(5000), limit=100) == list(range(5000))
    assert len(tasks) == 1


async def test_items_that_wait_get_every_worker_up_to_the_limit(anyio_backend: str) -> None:
    tracker = Tracker()
    await Squares(tracker, dict.fromkeys(range(300), 0.05), limit=100).run_async(
        {"numbers": range(300)}
    )
    assert tracker.peak == 100

"""The benchmark workloads: one function per (case, implementation), each timing itself.

Every workload builds its flow first and returns the seconds its run took, so start-up and
construction are not measured. ``bench.py`` runs each in a fresh process (for peak RSS).
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

warnings.simplefilter("ignore")  # "Flow ends: ..." on every loop exit is not what we time

TRANSITIONS = 100_000
NOOP_ITEMS = 100_000
SUB_FLOWS = 5_000
MILLION = 1_000_000
SLEEPERS = 10_000
SLEEP = 0.01
LIMIT = 1000
RESTARTS = 1


#: ``BENCH_CLOCK=cpu`` times the workloads in CPU seconds (``time.process_time``): steadier
#: than wall time on a busy machine, and the same for workloads that never sleep.
_CLOCK = time.process_time if os.environ.get("BENCH_CLOCK") == "cpu" else time.perf_counter


def _timed(run: Callable[[], object]) -> float:
    started = _CLOCK()
    run()
    return _CLOCK() - started


def _run_async(backend: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    if backend == "asyncio-raw":  # PocketFlow's own way: asyncio.run
        asyncio.run(fn(*args))  # type: ignore[arg-type]
    else:
        anyio.run(fn, *args, backend=backend)


# -- class layer: PocketFlow itself, or flowfn.compat (same code, other import) ----------


def class_sync_chain(mod: Any, backend: str) -> float:
    class Step(mod.Node):  # type: ignore[name-defined,misc]
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["n"] += 1
            return "again" if shared["n"] < TRANSITIONS else "stop"

    step = Step()
    step - "again" >> step
    flow = mod.Flow(step)
    return _timed(lambda: flow.run({"n": 0}))


def class_async_chain(mod: Any, backend: str) -> float:
    class Step(mod.AsyncNode):  # type: ignore[name-defined,misc]
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["n"] += 1
            return "again" if shared["n"] < TRANSITIONS else "stop"

    step = Step()
    step - "again" >> step
    flow = mod.AsyncFlow(step)
    return _timed(lambda: _run_async(backend, flow.run_async, {"n": 0}))


def _class_parallel(mod: Any, backend: str, items: Iterable[int], sleep: float) -> float:
    pause = _sleep_of(backend, sleep)

    class Items(mod.AsyncParallelBatchNode):  # type: ignore[name-defined,misc]
        async def prep_async(self, shared: Any) -> Any:
            return items

        async def exec_async(self, item: int) -> int:
            if sleep:
                await pause()
            return item

    node = Items()
    if hasattr(node, "limit"):
        node.limit = LIMIT
    return _timed(lambda: _run_async(backend, node.run_async, {}))


def class_parallel_noop(mod: Any, backend: str) -> float:
    return _class_parallel(mod, backend, range(NOOP_ITEMS), 0)


def class_million(mod: Any, backend: str) -> float:
    return _class_parallel(mod, backend, range(MILLION), 0)


def class_sleepers(mod: Any, backend: str) -> float:
    return _class_parallel(mod, backend, range(SLEEPERS), SLEEP)


def _sleep0(backend: str) -> Callable[[], Awaitable[None]]:
    """``sleep(0)`` of the loop the run is on, as a user who knows it writes it: asyncio's on
    asyncio (PocketFlow's ``asyncio.run`` too), trio's on trio. Every implementation of a
    workload awaits the same one (``anyio.sleep(0)`` costs more than either: see
    docs/performance.md), so that the table compares the libraries, not the sleeps."""
    return _sleep_of(backend, 0)


def _sleep_of(backend: str, seconds: float) -> Callable[[], Awaitable[None]]:
    if backend in ("asyncio", "asyncio-raw"):
        return lambda: asyncio.sleep(seconds)
    import trio

    return lambda: trio.sleep(seconds)


def class_parallel_flows(mod: Any, backend: str) -> float:
    sleep0 = _sleep0(backend)

    class Step(mod.AsyncNode):  # type: ignore[name-defined,misc]
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            await sleep0()  # each step does a little async work
            shared["done"] += 1

    class Orders(mod.AsyncParallelBatchFlow):  # type: ignore[name-defined,misc]
        async def prep_async(self, shared: Any) -> list[dict[str, int]]:
            return [{"order": i} for i in range(SUB_FLOWS)]

    first = Step()
    first >> Step() >> Step()
    flow = Orders(mod.AsyncFlow(first))
    shared = {"done": 0}
    seconds = _timed(lambda: _run_async(backend, flow.run_async, shared))
    assert shared["done"] == 3 * SUB_FLOWS
    return seconds


# -- the DSL -------------------------------------------------------------------------


def dsl_sync_chain(backend: str) -> float:
    from flowfn import Flow, node

    @node
    def step(shared: Any) -> str:
        shared["n"] += 1
        return "again" if shared["n"] < TRANSITIONS else "stop"

    step - "again" >> step
    flow = Flow(step)
    return _timed(lambda: flow.run({"n": 0}))


class _Ignore:
    """An observer that does nothing with the events a progress bar draws from (declared in
    ``kinds``, as flowfn.Progress does): what watching itself costs. ``BENCH_EVERY_EVENT=1``
    takes every event instead (a plain function observer)."""

    kinds = frozenset(
        ("run_start", "run_end", "batch_start", "batch_end", "item_end", "item_error")
    ) | {"retry", "node_error"}

    def __call__(self, event: object) -> None:
        pass


def _every(event: object) -> None:
    """An observer of every event, doing nothing with them."""


_ignore = _every if os.environ.get("BENCH_EVERY_EVENT") else _Ignore()


def dslobs_async_chain(backend: str) -> float:
    return dsl_async_chain(backend, observe=True)


def dslobs_parallel_noop(backend: str) -> float:
    return _dsl_parallel(backend, NOOP_ITEMS, 0, observe=True)


def dsl_async_chain(backend: str, observe: bool = False) -> float:
    from flowfn import Flow, node

    @node
    async def step(shared: Any) -> str:
        shared["n"] += 1
        return "again" if shared["n"] < TRANSITIONS else "stop"

    step - "again" >> step
    flow = Flow(step)
    on_event = _ignore if observe else None
    return _timed(lambda: flow.run({"n": 0}, backend=backend, on_event=on_event))


def _dsl_parallel(backend: str, count: int, sleep: float, observe: bool = False) -> float:
    from flowfn import Flow, parallel_batch

    pause = _sleep_of(backend, sleep)

    @parallel_batch(items=lambda shared: range(count), into="out", limit=LIMIT)
    async def each(item: int) -> int:
        if sleep:
            await pause()
        return item

    flow = Flow(each)
    on_event = _ignore if observe else None
    return _timed(lambda: flow.run({}, backend=backend, on_event=on_event))


def dsl_parallel_noop(backend: str) -> float:
    return _dsl_parallel(backend, NOOP_ITEMS, 0)


def dsl_million(backend: str) -> float:
    return _dsl_parallel(backend, MILLION, 0)


def dsl_sleepers(backend: str) -> float:
    return _dsl_parallel(backend, SLEEPERS, SLEEP)


def dsl_parallel_flows(backend: str) -> float:
    from flowfn import Flow, node, parallel_batch

    sleep0 = _sleep0(backend)

    @node
    async def step(shared: Any) -> None:
        await sleep0()
        shared["done"] += 1

    second = node(step.fn)
    third = node(step.fn)
    step >> second >> third

    @parallel_batch(flow=Flow(step), limit=LIMIT)
    def orders(shared: Any) -> list[dict[str, int]]:
        return [{"order": i} for i in range(SUB_FLOWS)]

    shared = {"done": 0}
    seconds = _timed(lambda: Flow(orders).run(shared, backend=backend))
    assert shared["done"] == 3 * SUB_FLOWS
    return seconds


# -- the baseline: a bare anyio pool of LIMIT workers pulling from an iterator ----------


async def _bare_pool(items: Iterable[int], sleep: float, backend: str) -> list[Any]:
    """The least a bounded pool can do: LIMIT workers, one shared iterator, one slot per
    item, and one call of the item's async function (what exec_async is elsewhere)."""
    source = enumerate(items)
    results: list[Any] = []
    pause = _sleep_of(backend, sleep)

    async def work(item: int) -> int:
        if sleep:
            await pause()
        return item

    async def worker() -> None:
        for index, item in source:
            results.append(None)
            results[index] = await work(item)

    async with anyio.create_task_group() as tg:
        for _ in range(LIMIT):
            tg.start_soon(worker)
    return results


def anyio_parallel_noop(backend: str) -> float:
    return _timed(lambda: anyio.run(_bare_pool, range(NOOP_ITEMS), 0, backend, backend=backend))


def anyio_million(backend: str) -> float:
    return _timed(lambda: anyio.run(_bare_pool, range(MILLION), 0, backend, backend=backend))


def anyio_sleepers(backend: str) -> float:
    return _timed(lambda: anyio.run(_bare_pool, range(SLEEPERS), SLEEP, backend, backend=backend))


# -- the peers a user would pick instead -----------------------------------------------


async def _noop(item: int) -> int:
    return item


def _sub_flow_by_hand(
    shared: dict[str, int], sleep0: Callable[[], Awaitable[None]]
) -> Callable[[dict[str, int]], Awaitable[None]]:
    """One run of the benchmark's 3-step sub-flow, written by hand."""

    async def run(params: dict[str, int]) -> None:
        for _ in range(3):
            await sleep0()
            shared["done"] += 1

    return run


def _by_hand(backend: str, run: Callable[[Any], Awaitable[Any]], items: Iterable[Any]) -> float:
    """One task per item, at most LIMIT at once: asyncio's TaskGroup + Semaphore, or a trio
    nursery + CapacityLimiter, as their docs show. Results are kept in order."""
    items = list(items)
    results: list[Any] = [None] * len(items)
    if backend == "asyncio":

        async def main() -> None:
            semaphore = asyncio.Semaphore(LIMIT)

            async def one(index: int, item: Any) -> None:
                async with semaphore:
                    results[index] = await run(item)

            async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
                for index, item in enumerate(items):
                    tg.create_task(one(index, item))

        return _timed(lambda: asyncio.run(main()))
    import trio

    async def trio_main() -> None:
        limiter = trio.CapacityLimiter(LIMIT)

        async def one(index: int, item: Any) -> None:
            async with limiter:
                results[index] = await run(item)

        async with trio.open_nursery() as nursery:
            for index, item in enumerate(items):
                nursery.start_soon(one, index, item)

    return _timed(lambda: trio.run(trio_main))


def _aiometer(backend: str, run: Callable[[Any], Awaitable[Any]], items: Iterable[Any]) -> float:
    import functools

    import aiometer

    jobs = [functools.partial(run, item) for item in items]
    main = functools.partial(aiometer.run_all, jobs, max_at_once=LIMIT)
    return _timed(lambda: anyio.run(main, backend=backend))


def byhand_parallel_noop(backend: str) -> float:
    return _by_hand(backend, _noop, range(NOOP_ITEMS))


def byhand_sleepers(backend: str) -> float:
    pause = _sleep_of(backend, SLEEP)

    async def sleeper(item: int) -> int:
        await pause()
        return item

    return _by_hand(backend, sleeper, range(SLEEPERS))


def byhand_parallel_flows(backend: str) -> float:
    shared = {"done": 0}
    run = _sub_flow_by_hand(shared, _sleep0(backend))
    seconds = _by_hand(backend, run, [{"order": i} for i in range(SUB_FLOWS)])
    assert shared["done"] == 3 * SUB_FLOWS
    return seconds


def aiometer_parallel_noop(backend: str) -> float:
    return _aiometer(backend, _noop, range(NOOP_ITEMS))


def aiometer_parallel_flows(backend: str) -> float:
    shared = {"done": 0}
    run = _sub_flow_by_hand(shared, _sleep0(backend))
    seconds = _aiometer(backend, run, [{"order": i} for i in range(SUB_FLOWS)])
    assert shared["done"] == 3 * SUB_FLOWS
    return seconds


async def _asyncio_pool(items: Iterable[int]) -> list[Any]:
    """The bare pool of ``_bare_pool`` on asyncio itself: LIMIT tasks, one iterator."""
    source = enumerate(items)
    results: list[Any] = []

    async def worker() -> None:
        for index, item in source:
            results.append(None)
            results[index] = await _noop(item)

    async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
        for _ in range(LIMIT):
            tg.create_task(worker())
    return results


def asynciopool_parallel_noop(backend: str) -> float:
    return _timed(lambda: asyncio.run(_asyncio_pool(range(NOOP_ITEMS))))


def asynciopool_million(backend: str) -> float:
    return _timed(lambda: asyncio.run(_asyncio_pool(range(MILLION))))


def dsl_process_restart(backend: str) -> float:
    import process_jobs

    return process_jobs.first_item_after_restart(backend)

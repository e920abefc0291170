"""What the event loops' own primitives cost, through anyio and without it.

    python benchmarks/primitives.py [--repeat 7]

``sleep(0)`` (the step of the sub-flow workload) as ``anyio.sleep(0)`` and as the loop's
own (``asyncio.sleep(0)``, ``trio.sleep(0)``), and starting 1000 tasks that return at once
through anyio's task group and through the loop's own (``asyncio.TaskGroup``, a trio
nursery). CPU time, medians of fresh rounds in one process; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import trio

TASKS = 1000
SLEEPS = 100_000


async def _noop() -> None:
    pass


async def anyio_tasks() -> float:
    started = time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(_noop)
    return (time.process_time() - started) / TASKS


async def asyncio_tasks() -> float:
    started = time.process_time()
    async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
        for _ in range(TASKS):
            tg.create_task(_noop())
    return (time.process_time() - started) / TASKS


async def trio_tasks() -> float:
    started = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(TASKS):
            nursery.start_soon(_noop)
    return (time.process_time() - started) / TASKS


async def sleeps(sleep: Callable[[float], Awaitable[Any]]) -> float:
    started = time.process_time()
    for _ in range(SLEEPS):
        await sleep(0)
    return (time.process_time() - started) / SLEEPS


ROWS: dict[str, Callable[[], float]] = {
    "anyio.sleep(0) on asyncio": lambda: anyio.run(sleeps, anyio.sleep),
    "asyncio.sleep(0)": lambda: anyio.run(sleeps, asyncio.sleep),
    "anyio.sleep(0) on trio": lambda: anyio.run(sleeps, anyio.sleep, backend="trio"),
    "trio.sleep(0)": lambda: anyio.run(sleeps, trio.sleep, backend="trio"),
    "a task through anyio on asyncio": lambda: anyio.run(anyio_tasks),
    "a task through asyncio.TaskGroup": lambda: asyncio.run(asyncio_tasks()),
    "a task through anyio on trio": lambda: anyio.run(anyio_tasks, backend="trio"),
    "a task through a trio nursery": lambda: trio.run(trio_tasks),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(args.repeat):
        for name, measure in ROWS.items():
            samples[name].append(measure())
    print("| primitive | CPU time |\n|---|---:|")
    for name, runs in samples.items():
        print(f"| {name} | {statistics.median(runs) * 1e6:.2f} us |")


if __name__ == "__main__":
    main()

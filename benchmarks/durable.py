"""What a checkpoint costs: the same run with and without ``checkpoint=``, side by side.

    python benchmarks/durable.py [--repeat 5]

Two workloads, on asyncio and trio, each measured in a fresh process (alternating without a
checkpoint, with ``durability="async"`` and with ``durability="sync"``; medians), the event
loop warmed up before timing:

* 100,000 no-op items in a parallel batch (limit 1000): time and peak memory;
* 5,000 runs of a 3-step sub-flow in a parallel batch flow, each step awaiting
  ``anyio.sleep(0)`` (limit 1000).

The checkpoint is a new SQLite file in a temporary folder for each run (creating it is
part of the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio

from flowfn import Flow, node, parallel_batch


def items_flow() -> Flow:
    @parallel_batch(items=lambda shared: range(100_000), into="out", limit=1000)
    async def noop(x: int) -> int:
        return x

    return Flow(noop)


def subflows_flow() -> Flow:
    @node
    async def a(shared: Any, i: int) -> None:
        await anyio.sleep(0)

    @node
    async def b(shared: Any, i: int) -> None:
        await anyio.sleep(0)

    @node
    async def c(shared: Any, i: int) -> None:
        await anyio.sleep(0)
        shared["out"][i] = i

    a >> b >> c

    @parallel_batch(flow=Flow(a), limit=1000)
    def fan(shared: Any) -> list[dict[str, int]]:
        shared["out"] = {}
        return [{"i": i} for i in range(5000)]

    return Flow(fan)


def measure_one(workload: str, mode: str, backend: str) -> dict[str, float]:
    """Runs in the child: one timed run, its seconds and the process's peak memory.
    ``mode``: "none" (no checkpoint), or the run's ``durability=`` ("async", "sync")."""
    flow = items_flow() if workload == "items" else subflows_flow()

    async def main() -> float:
        await anyio.sleep(0)
        folder = tempfile.mkdtemp()
        started = time.perf_counter()
        if mode != "none":
            await flow.run_async(
                {},
                checkpoint=os.path.join(folder, "runs.db"),
                durability=mode,  # type: ignore[arg-type]
            )
        else:
            await flow.run_async({})
        return time.perf_counter() - started

    anyio.run(main, backend=backend)  # warm up: imports, first loop, first SQLite file
    seconds = anyio.run(main, backend=backend)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"seconds": seconds, "mb": peak}


def measure(workload: str, mode: str, backend: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", workload, mode, backend]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workload, mode, backend = args.child
        print(json.dumps(measure_one(workload, mode, backend)))
        return
    print(f"checkpoint cost, median of {args.repeat} fresh processes each\n")
    print(
        '| workload | backend | without | durability="async" | ratio | '
        'durability="sync" | ratio | peak memory with |'
    )
    print("|---|---|---|---|---|---|---|---|")
    for workload, label in (
        ("items", "100k no-op items, parallel batch"),
        ("subflows", "5k x 3-step sub-flows, parallel batch flow"),
    ):
        for backend in ("asyncio", "trio"):
            times: dict[str, list[float]] = {"none": [], "async": [], "sync": []}
            memory = []
            for _ in range(args.repeat):  # alternating, so drift hits all alike
                for mode, seconds in times.items():
                    result = measure(workload, mode, backend)
                    seconds.append(result["seconds"])
                    if mode != "none":
                        memory.append(result["mb"])
            p, a, s = (statistics.median(times[mode]) for mode in ("none", "async", "sync"))
            print(
                f"| {label} | {backend} | {p * 1000:.0f} ms | {a * 1000:.0f} ms | "
                f"{a / p:.2f}x | {s * 1000:.0f} ms | {s / p:.2f}x | {max(memory):.0f} MB |"
            )


if __name__ == "__main__":
    main()

"""Scale-out figures: flowfn batches on Ray, on Dask and on local processes, 2 workers each.

    python benchmarks/scale_out.py [--backend asyncio|trio] [--quick]

Three measurements per engine, in one run (medians of --repeat runs):

* throughput: 10,000 trivial items with chunksize=100 (items/s);
* submission cost: 500 trivial items with chunksize=1, the CPU time the event loop's
  thread spends per item (``time.thread_time`` around the run: submitting, waking,
  collecting; the engines' own threads are not counted);
* CPU work: 200 items of 50 ms pure-Python work each, against the ideal
  200 x 50 ms / 2 workers = 5 s.

The clusters are started (and warmed up) before anything is timed: flowfn never starts one.
Needs pip install -e '.[ray,dask]'.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import anyio

from flowfn import AsyncFlow, parallel_batch

WORKERS = 2


def trivial(x: int) -> int:
    return x + 1


def burn(x: int, seconds: float = 0.05) -> int:
    """Pure-Python CPU work for ``seconds`` of CPU time."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return x


def measure(
    workers: Any, fn: Callable[[int], int], items: int, chunksize: int, limit: int, backend: str
) -> tuple[float, float]:
    """Wall seconds and loop-thread CPU seconds of one batch of ``items``."""
    options: dict[str, Any] = {"workers": workers}
    if not hasattr(workers, "grace"):  # an executor: the chunk size goes beside it
        options["chunksize"] = chunksize
    step = parallel_batch(items="xs", into="out", limit=limit, **options)(fn)
    shared: dict[str, Any] = {"xs": range(items)}

    async def main() -> tuple[float, float]:
        cpu, wall = time.thread_time(), time.perf_counter()
        await AsyncFlow(step).run_async(shared)
        return time.perf_counter() - wall, time.thread_time() - cpu

    wall, cpu = anyio.run(main, backend=backend)
    assert shared["out"] == [fn(x) if fn is trivial else x for x in range(items)]
    return wall, cpu


def engines(quick: bool) -> list[tuple[str, Callable[[int], Any], Callable[[], None]]]:
    """(name, make workers for a chunk size, shut down) for each engine."""
    import ray
    from distributed import Client, LocalCluster

    from flowfn.ray import RayWorkers

    pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=WORKERS, threads_per_worker=1, dashboard_address=":0"
    )
    client = Client(cluster, set_as_default=False)  # type: ignore[no-untyped-call]
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    return [
        ("processes", lambda chunksize: pool, lambda: pool.shutdown()),
        (
            "dask",
            lambda chunksize: client.get_executor(),
            lambda: (client.close(), cluster.close()),
        ),
        ("ray", lambda chunksize: RayWorkers(chunksize=chunksize), ray.shutdown),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rows = []
    for name, make, stop in engines(args.quick):
        measure(make(10), trivial, 200, 10, 100, args.backend)  # warm up: workers, imports
        measure(make(1), burn, 2 * WORKERS, 1, 8, args.backend)
        through, submit, cpu_work = [], [], []
        for _ in range(args.repeat):
            n = 10_000 // scale
            wall, _ = measure(make(100), trivial, n, 100, 1000, args.backend)
            through.append(n / wall)
            n = 500 // scale
            _, cpu = measure(make(1), trivial, n, 1, 100, args.backend)
            submit.append(cpu / n * 1000)
            n = 200 // scale
            wall, _ = measure(make(1), burn, n, 1, 2 * WORKERS, args.backend)
            cpu_work.append(wall / (n * 0.05 / WORKERS))
        stop()
        rows.append(
            (
                name,
                statistics.median(through),
                statistics.median(submit),
                statistics.median(cpu_work),
            )
        )
    print(f"\nscale-out on {WORKERS} local workers, {args.backend}, median of {args.repeat}\n")
    print(
        "| engine | 10k trivial items, chunksize=100 | loop CPU per item, chunksize=1 "
        "| 200 x 50 ms CPU vs ideal |"
    )
    print("|---|---|---|---|")
    for name, through, submit, ratio in rows:
        print(f"| {name} | {through:,.0f} items/s | {submit:.3f} ms | {ratio:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

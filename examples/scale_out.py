"""The same parallel batch on local processes, on a Dask cluster or on a Ray cluster.

Each item is a small Monte Carlo simulation (pure CPU: estimate pi from 100k random points
with the item's own seed), sent two at a time (chunksize=2), eight in flight (limit=8).
flowfn never starts a cluster: this script starts a local one in one line; to use a real
cluster, connect to it instead (docs/scale-out.md); a local Ray takes a few seconds to
start. Needs pip install 'flowfn[ray,dask]'.
Run: python examples/scale_out.py [processes|dask|ray] [asyncio|trio]
"""

from __future__ import annotations

import logging
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from flowfn import Flow, node, parallel_batch


def simulate(seed: int, points: int = 100_000) -> float:
    """Estimate pi from ``points`` random points in the unit square (runs on a worker)."""
    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(points))
    return 4 * inside / points


@node
def report(shared: dict[str, Any]) -> None:
    estimates = shared["estimates"]
    shared["pi"] = sum(estimates) / len(estimates)
    print(f"pi ~ {shared['pi']:.4f} from {len(estimates)} simulations")


def run(workers: Any, backend: str, runs: int, **options: Any) -> dict[str, Any]:
    step = parallel_batch(items="seeds", into="estimates", limit=8, workers=workers, **options)(
        simulate
    )
    step >> report
    shared: dict[str, Any] = {"seeds": list(range(runs))}
    started = time.perf_counter()
    Flow(step).run(shared, backend=backend)
    print(f"took {time.perf_counter() - started:.2f} s on {backend}")
    return shared


def main(backend: str = "asyncio", engine: str = "processes", runs: int = 16) -> dict[str, Any]:
    print(f"{runs} simulations on {engine}")
    if engine == "processes":
        with ProcessPoolExecutor(2) as pool:
            return run(pool, backend, runs, chunksize=2)
    if engine == "dask":
        from distributed import Client, LocalCluster

        local = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")  # type: ignore[no-untyped-call]
        with local as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            return run(client.get_executor(), backend, runs, chunksize=2)
    if engine == "ray":
        import ray

        from flowfn.ray import RayWorkers

        print("starting a local Ray: the first start takes a few seconds")
        # Ray logs its start-up on stderr (a token-authentication warning, "Started a local
        # Ray instance"): only its errors are shown, so that the output is the example's.
        quiet = logging.ERROR
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=quiet)
        try:
            return run(RayWorkers(chunksize=2), backend, runs)
        finally:
            ray.shutdown()
    raise SystemExit(f"unknown engine {engine!r}: choose processes, dask or ray")


if __name__ == "__main__":
    engine = sys.argv[1] if len(sys.argv) > 1 else "processes"
    main(sys.argv[2] if len(sys.argv) > 2 else "asyncio", engine)

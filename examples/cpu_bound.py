"""CPU-bound work in worker processes: ``workers="process"`` sidesteps the GIL.

Counting primes is pure CPU work: threads would take turns on the GIL, processes run side
by side on every core. Each item runs in a worker process (one pool for the interpreter,
ready again for the next run); the function is found there by name, so it lives at module
level and takes only picklable arguments.
Run: python examples/cpu_bound.py [asyncio|trio]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from flowfn import Flow, node, parallel_batch


@parallel_batch(items="ranges", into="counts", workers="process", limit=os.cpu_count() or 2)
def count_primes(bounds: tuple[int, int]) -> tuple[int, int]:
    """Count the primes in [low, high); also say which process did it."""
    low, high = bounds
    count = sum(
        1 for n in range(max(low, 2), high) if all(n % d for d in range(2, int(n**0.5) + 1))
    )
    return count, os.getpid()


@node
def report(shared: dict[str, Any]) -> None:
    total = sum(count for count, _ in shared["counts"])
    workers = {pid for _, pid in shared["counts"]}
    print(f"{total} primes below {shared['ranges'][-1][1]}, counted by {len(workers)} processes")
    shared["total"] = total


count_primes >> report
flow = Flow(count_primes)


def main(backend: str = "asyncio", limit: int = 200_000, chunks: int = 8) -> dict[str, Any]:
    step = limit // chunks
    shared: dict[str, Any] = {"ranges": [(i, i + step) for i in range(0, limit, step)]}
    started = time.perf_counter()
    flow.run(shared, backend=backend)
    print(f"took {time.perf_counter() - started:.2f} s on {backend}")
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")

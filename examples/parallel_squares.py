"""The seeds' parallel squares: one ``@parallel_batch`` node squares every number at once.

The DSL equivalent of PocketFlow's ``AsyncParallelBatchNode``: ``@square.prep`` returns the
items, the decorated function runs once per item (all at once here; ``limit=`` would bound
that), and ``@square.post`` receives the results in input order, whatever order they finish
in. Each squaring waits ``n * 0.02`` s with ``anyio.sleep`` (the seed's ``n * 0.1``, scaled
down), standing in for a slow remote call; the answers are deterministic.
Run: python examples/parallel_squares.py [asyncio|trio]
"""

import sys
import time
from typing import Any

import anyio

from flowfn import Flow, parallel_batch

DELAY = 0.02  # seconds of simulated work per unit of the number


@parallel_batch
async def square(number: int) -> int:
    delay = number * DELAY
    print(f"  Starting squaring {number} with {delay:.2f}s delay...")
    await anyio.sleep(delay)  # stands in for an API call
    print(f"  Finished squaring {number}. Result: {number * number}")
    return number * number


@square.prep
def read_numbers(shared: dict[str, Any]) -> list[int]:
    numbers: list[int] = shared["numbers_to_square"]
    print(f"Prep: read {len(numbers)} numbers for parallel batch processing.")
    shared["started"] = time.perf_counter()
    return numbers


@square.post
def store_squares(shared: dict[str, Any], numbers: list[int], squares: list[int]) -> str:
    elapsed, one_by_one = time.perf_counter() - shared.pop("started"), sum(numbers) * DELAY
    print(f"Post: {len(numbers)} squares in {elapsed:.2f} s (one by one: {one_by_one:.2f} s)")
    print(f"Post: results in input order: {squares}")
    shared["squared_numbers"] = squares
    return "done"


def main(backend: str = "asyncio") -> dict[str, Any]:
    # Shuffled, so the finishing order (by delay) differs from the input order.
    shared: dict[str, Any] = {"numbers_to_square": [3, 1, 5, 2, 4]}
    print(f"--- Running the parallel squares flow on {backend} ---")
    action = Flow(square).run(shared, backend=backend)
    print(f"--- Finished with action {action!r} ---")
    print(f"Shared data after run: {shared}")
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")

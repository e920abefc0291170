"""The seeds' cake factory in the flowfn DSL: four orders baked at once, then one by one.

Steps get each order's params (``flavor``, ...) by name; ``@parallel_batch(flow=...)`` bakes the
orders at once (logs interleave), ``@batch(flow=...)`` one by one. The oven is simulated with
``anyio.sleep`` (deterministic cakes). Run: python examples/cake_factory.py [asyncio|trio]
"""

import sys
import time
from typing import Any

import anyio

from flowfn import Flow, batch, node, parallel_batch

Shared = dict[str, Any]
ORDERS = [
    {"factory": 1, "flavor": "Chocolate", "decoration": "Sprinkles"},
    {"factory": 2, "flavor": "Vanilla", "decoration": "Roses"},
    {"factory": 3, "flavor": "Red Velvet", "decoration": "Cream Cheese"},
    {"factory": 4, "flavor": "Strawberry", "decoration": "Hearts"},
]


@node
async def mix(flavor: str, factory: int) -> None:
    print(f"  [Factory-{factory} Mix] Mixing {flavor} batter.")
    await anyio.sleep(0.07 if flavor == "Chocolate" else 0.04)


@node
async def bake(shared: Shared, flavor: str, factory: int) -> None:
    print(f"  [Factory-{factory} Bake] Baking {flavor} cake.")
    await anyio.sleep(0.1)


@node
async def decorate(shared: Shared, flavor: str, decoration: str, factory: int, mode: str) -> None:
    print(f"  [Factory-{factory} Decorate] Using {decoration}.")
    await anyio.sleep(0.06 if decoration == "Sprinkles" else 0.03)
    cake = shared["cakes"][mode][factory] = f"{flavor} cake with {decoration}"  # key per order
    print(f"  [Factory-{factory} Ready!] {cake} ready!")


mix >> bake >> decorate


@parallel_batch(flow=Flow(mix), limit=4)
def in_parallel(shared: Shared) -> list[Shared]:
    print(f"--- Parallel factories: {len(ORDERS)} orders at once ---")
    shared["clock"] = time.perf_counter()
    return [{**order, "mode": "parallel"} for order in ORDERS]


@batch(flow=Flow(mix))
def one_by_one(shared: Shared) -> list[Shared]:
    print(f"--- The same {len(ORDERS)} orders, one after another ---")
    shared["clock"] = time.perf_counter()
    return [{**order, "mode": "one_by_one"} for order in ORDERS]


@in_parallel.post
@one_by_one.post
def stop_clock(shared: Shared, orders: list[Shared], exec_res: None) -> None:
    shared["seconds"][orders[0]["mode"]] = time.perf_counter() - shared.pop("clock")


def main(backend: str = "asyncio") -> dict[str, Any]:
    shared: Shared = {"cakes": {"parallel": {}, "one_by_one": {}}, "seconds": {}}
    flow.run(shared, backend=backend)
    par, seq = shared["seconds"]["parallel"], shared["seconds"]["one_by_one"]
    print(f"Total time: parallel {par:.2f} s, one by one {seq:.2f} s: {seq / par:.1f}x faster")
    return shared


in_parallel >> one_by_one  # in_parallel's post returns None: the "default" action
flow = Flow(in_parallel)  # main runs it; so can `flowfn run examples/cake_factory.py:flow`
if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")

"""The seeds' cake factory with the PocketFlow-compatible classes (``AsyncNode``, ...).

The same factory as ``cake_factory.py``, written as PocketFlow-style node classes instead of
the decorator DSL. Each order runs the whole mix -> bake -> decorate flow; the four runs
overlap, so the total time is close to the slowest cake, not the sum of all four. Work is
simulated with ``anyio.sleep`` (no real oven here).
Run: python examples/compat_cake_factory.py [asyncio|trio]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio

from flowfn import AsyncBatchFlow, AsyncFlow, AsyncNode, AsyncParallelBatchFlow

ORDERS = [
    {"factory": 1, "flavor": "Chocolate", "decoration": "Sprinkles"},
    {"factory": 2, "flavor": "Vanilla", "decoration": "Roses"},
    {"factory": 3, "flavor": "Red Velvet", "decoration": "Cream Cheese"},
    {"factory": 4, "flavor": "Strawberry", "decoration": "Hearts"},
]


class Mix(AsyncNode):
    async def exec_async(self, prep_res: Any) -> None:
        print(f"  [Factory-{self.params['factory']} Mix] Mixing {self.params['flavor']} batter.")
        await anyio.sleep(0.07 if self.params["flavor"] == "Chocolate" else 0.04)


class Bake(AsyncNode):
    async def exec_async(self, prep_res: Any) -> None:
        print(f"  [Factory-{self.params['factory']} Bake] Baking {self.params['flavor']} cake.")
        await anyio.sleep(0.1)


class Decorate(AsyncNode):
    async def exec_async(self, prep_res: Any) -> str:
        print(f"  [Factory-{self.params['factory']} Decorate] Using {self.params['decoration']}.")
        await anyio.sleep(0.06 if self.params["decoration"] == "Sprinkles" else 0.03)
        return f"{self.params['flavor']} cake with {self.params['decoration']}"

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        print(f"  [Factory-{self.params['factory']} Ready!] {exec_res} ready!")
        shared["cakes"][self.params["factory"]] = exec_res  # a key per order: no race


class Orders:
    async def prep_async(self, shared: Any) -> list[dict[str, Any]]:
        shared["cakes"] = {}
        return ORDERS


class ParallelFactories(Orders, AsyncParallelBatchFlow):
    pass


class OneByOne(Orders, AsyncBatchFlow):
    pass


def cake_line() -> AsyncFlow:
    mix = Mix()
    mix >> Bake() >> Decorate()
    return AsyncFlow(start=mix)


async def bake_all(flow_cls: type[AsyncFlow]) -> tuple[dict[str, Any], float]:
    shared: dict[str, Any] = {}
    started = time.perf_counter()
    await flow_cls(start=cake_line()).run_async(shared)
    return shared, time.perf_counter() - started


async def main() -> None:
    print("--- Parallel cake factories ---")
    shared, parallel = await bake_all(ParallelFactories)
    print(f"Cakes: {shared['cakes']}")
    print("--- The same orders, one after another ---")
    _, sequential = await bake_all(OneByOne)
    print(
        f"Total time: parallel {parallel * 1000:.0f} ms, sequential {sequential * 1000:.0f} ms "
        f"({sequential / parallel:.1f}x faster)"
    )


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")

"""Parallel branches, then a join: a morning briefing fetched from three places at once.

News, weather and sports are fetched by three branches running at the same time (fake
APIs: anyio.sleep and fixed answers stand in for the calls), the sports branch being a
small flow of its own; the summary runs once all three are done. Each branch writes keys
of its own: two branches writing one key would be an error naming both.
Run: python examples/branches.py [asyncio|trio]
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio

from flowfn import Flow, Parallel, node


@node
async def news(shared: dict[str, Any]) -> None:
    await anyio.sleep(0.2)  # the news API
    shared["news"] = "Markets calm, rain expected"


@node
async def weather(shared: dict[str, Any]) -> None:
    await anyio.sleep(0.2)  # the weather API
    shared["weather"] = "14 degrees, showers"


@node
async def scores(shared: dict[str, Any]) -> None:
    await anyio.sleep(0.2)  # the sports API
    shared["scores"] = {"home": 2, "away": 1}


@node
def headline(shared: dict[str, Any]) -> None:
    s = shared["scores"]
    shared["sports"] = f"Home wins {s['home']}-{s['away']}"


@node
def summarise(shared: dict[str, Any]) -> None:
    shared["briefing"] = " | ".join(shared[k] for k in ("news", "weather", "sports"))


scores >> headline
briefing = Parallel(news, weather, Flow(scores), name="fetch")
briefing >> summarise
flow = Flow(briefing)


def main(backend: str = "asyncio") -> dict[str, Any]:
    shared: dict[str, Any] = {}
    started = time.perf_counter()
    flow.run(shared, backend=backend)
    took = time.perf_counter() - started
    print(shared["briefing"])
    print(f"three 0.2 s calls at once took {took:.2f} s on {backend}")
    print(flow.to_mermaid())
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")

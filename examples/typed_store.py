"""A typed shared store: mypy --strict checks the keys and value types every step uses.

The store is a TypedDict (a dataclass works the same way); the flow is declared
``Flow[Store]``, so ``flow.run(...)`` only takes a Store, and each node function takes
``shared: Store``, so a misspelt key or a wrong value type inside it is a type error, found
before anything runs (``mypy --strict examples/typed_store.py``). Plain dicts keep working
untyped.
Run: python examples/typed_store.py [asyncio|trio]
"""

from __future__ import annotations

import sys
from typing import TypedDict

import anyio
from typing_extensions import Required

from flowfn import Flow, node, parallel_batch


class Store(TypedDict, total=False):
    text: Required[str]  # given by the caller; the rest is written by the steps
    words: list[str]
    lengths: list[int]
    longest: str


@node
def split(shared: Store) -> None:
    shared["words"] = shared["text"].split()  # shared["wrods"] would not type-check


@parallel_batch(items=lambda shared: shared["words"], into="lengths")
async def measure(word: str) -> int:
    await anyio.sleep(0)  # stands in for an API call per word
    return len(word)


@node
def pick(shared: Store) -> None:
    pairs = zip(shared["words"], shared["lengths"], strict=True)
    shared["longest"] = max(pairs, key=lambda pair: pair[1])[0]


split >> measure >> pick
flow: Flow[Store] = Flow(split)


def main(backend: str = "asyncio") -> Store:
    shared: Store = {"text": "typed stores catch typos early"}
    flow.run(shared, backend=backend)
    print(f"longest word: {shared['longest']} ({max(shared['lengths'])} letters)")
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")

"""Async iterable sources, and stream(): results handed over as they finish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from flowfn import (
    AsyncBatchNode,
    AsyncParallelBatchNode,
    BatchNode,
    Flow,
    map_ordered,
    parallel_batch,
    stream,
)

pytestmark = pytest.mark.anyio


async def numbers(n: int, pulled: list[int] | None = None) -> AsyncIterator[int]:
    for i in range(n):
        await anyio.sleep(0)
        if pulled is not None:
            pulled.append(i)
        yield i


async def slow_double(x: int) -> int:
    await anyio.sleep(0.002 * (x % 4))
    return 2 * x


async def test_map_ordered_pulls_async_iterables_lazily(anyio_backend: str) -> None:
    pulled: list[int] = []
    in_flight, peak = 0, 0

    async def tracked(x: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        assert len(pulled) - x <= 3 + 1  # never far ahead of the item being worked on
        try:
            return await slow_double(x)
        finally:
            in_flight -= 1

    assert await map_ordered(tracked, numbers(30, pulled), limit=3) == [2 * i for i in range(30)]
    assert peak == 3


async def test_an_async_source_that_fails_names_the_position(anyio_backend: str) -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ConnectionResetError("source gone")

    with pytest.raises(ConnectionResetError) as info:
        await map_ordered(slow_double, broken(), limit=2, where="test")
    assert info.value.__notes__ == ["flowfn: iterating the items (after item 1) of test"]


async def test_async_batch_classes_and_decorators_take_async_iterables(anyio_backend: str) -> None:
    class Parallel(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> AsyncIterator[int]:
            return numbers(5)

        async def exec_async(self, x: int) -> int:
            return await slow_double(x)

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["parallel"] = exec_res

    class Sequential(AsyncBatchNode):
        async def prep_async(self, shared: Any) -> AsyncIterator[int]:
            return numbers(4)

        async def exec_async(self, x: int) -> int:
            return x + 1

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["sequential"] = exec_res

    @parallel_batch(items=lambda shared: numbers(6), into="dsl", limit=2)
    async def square(x: int) -> int:
        await anyio.sleep(0)
        return x * x

    shared: dict[str, Any] = {}
    for step in (Parallel(), Sequential(), square):
        await Flow(step).run_async(shared)
    assert shared == {
        "parallel": [0, 2, 4, 6, 8],
        "sequential": [1, 2, 3, 4],
        "dsl": [0, 1, 4, 9, 16, 25],
    }


def test_a_sync_batch_node_refuses_an_async_iterable() -> None:
    class Sync(BatchNode):
        def prep(self, shared: Any) -> AsyncIterator[int]:
            return numbers(3)

    with pytest.raises(TypeError, match="only async batch nodes"):
        Sync().run({})


async def test_stream_hands_over_results_as_they_finish(anyio_backend: str) -> None:
    seen: list[tuple[int, int]] = []
    async with stream(slow_double, [3, 0, 2, 1], limit=4) as results:
        async for index, value in results:
            seen.append((index, value))
    assert sorted(seen) == [(0, 6), (1, 0), (2, 4), (3, 2)]
    assert seen[0] == (1, 0)  # the quickest item came first, not item 0


async def test_stream_keeps_at_most_limit_results_waiting(anyio_backend: str) -> None:
    pulled: list[int] = []
    consumed = 0
    async with stream(slow_double, numbers(40, pulled), limit=4) as results:
        async for _ in results:
            consumed += 1
            await anyio.sleep(0.001)  # a slow reader
            assert len(pulled) - consumed <= 4 + 1
    assert consumed == 40


async def test_stream_errors_are_raised_as_they_are(anyio_backend: str) -> None:
    async def fails_on_5(x: int) -> int:
        await anyio.sleep(0)
        if x == 5:
            raise ValueError("five")
        return x

    with pytest.raises(ValueError, match="five") as info:  # noqa: PT012
        async with stream(fails_on_5, range(20), limit=3) as results:
            async for _ in results:
                pass
    assert info.value.__notes__ == ["flowfn: item 5 of stream"]

    with pytest.raises(KeyError, match="reader"):  # noqa: PT012
        async with stream(fails_on_5, range(20), limit=3) as results:
            async for _ in results:
                raise KeyError("reader")

    collected: dict[int, Any] = {}
    async with stream(fails_on_5, range(8), limit=3, errors="collect") as results:
        async for index, value in results:
            collected[index] = value
    assert isinstance(collected.pop(5), ValueError)
    assert collected == {i: i for i in range(8) if i != 5}


async def test_leaving_a_stream_early_cancels_the_rest(anyio_backend: str) -> None:
    finished: list[int] = []

    async def work(x: int) -> int:
        await anyio.sleep(0.001 if x < 2 else 10)
        finished.append(x)
        return x

    with anyio.fail_after(5):
        async with stream(work, range(10), limit=5) as results:
            async for index, _ in results:
                if index < 2:
                    break
    assert finished in ([0], [1], [0, 1], [1, 0])

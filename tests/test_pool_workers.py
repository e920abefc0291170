"""How the pool starts its workers: on asyncio as plain tasks of the anyio group (no scope
nor handle per task), on trio in the group's nursery. Either way they keep anyio's contract:
a failure cancels the siblings, a shield inside an item holds, a scope around the batch
stops every worker, and no worker outlives the batch."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from flowfn import map_ordered
from flowfn._engine import pool

pytestmark = pytest.mark.anyio


async def test_the_installed_anyio_takes_the_cheap_start(anyio_backend: str) -> None:
    """If a new anyio lays out its task groups otherwise, the pool falls back to
    ``start_soon`` (correct, slower): this test says so, so the layout gets looked at."""
    async with anyio.create_task_group() as tg:
        spawn = pool._spawner(tg)
    assert spawn is not tg.start_soon


async def test_a_failure_cancels_the_siblings_but_not_their_shields(anyio_backend: str) -> None:
    finished: list[str] = []

    async def item(i: int) -> int:
        if i == 0:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)
            finished.append("shielded part")
            await anyio.sleep(10)  # cancelled here, at the first checkpoint after the shield
            finished.append("after the shield")
        elif i == 1:
            await anyio.sleep(0.01)
            raise ValueError("item 1")
        else:
            await anyio.sleep(10)
            finished.append(f"item {i}")
        return i

    with pytest.raises(ValueError, match="item 1") as caught:
        await map_ordered(item, range(5), limit=5)
    assert finished == ["shielded part"]
    assert any("item 1" in note for note in getattr(caught.value, "__notes__", []))


async def test_a_scope_around_the_batch_stops_every_worker(anyio_backend: str) -> None:
    started: list[int] = []
    stopped: list[int] = []

    async def item(i: int) -> int:
        started.append(i)
        try:
            await anyio.sleep(10)
        finally:
            stopped.append(i)
        return i

    with anyio.move_on_after(0.05) as scope:
        await map_ordered(item, range(20), limit=8)
    assert scope.cancelled_caught
    assert sorted(started) == list(range(8))
    assert sorted(stopped) == sorted(started)  # every worker ended inside the scope


async def test_no_worker_outlives_the_batch(anyio_backend: str) -> None:
    async def item(i: int) -> int:
        await anyio.sleep(0)
        return i * 2

    before = _tasks(anyio_backend)
    assert await map_ordered(item, range(500), limit=100) == [i * 2 for i in range(500)]
    assert _tasks(anyio_backend) == before


def _tasks(backend: str) -> Any:
    if backend == "asyncio":
        import asyncio

        return len(asyncio.all_tasks())
    import trio

    return len(trio.lowlevel.current_root_task().child_nurseries)

"""How the pool starts its workers: on asyncio as plain tasks of the anyio group (no scope
nor handle per task), on trio in the group's nursery. Either way they keep anyio's contract:
a failure cancels the siblings, a shield inside an item holds, a scope around the batch
stops every worker, and no worker outlives the batch."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from flowfn import FlowError, map_ordered
from flowfn._engine import pool

pytestmark = pytest.mark.anyio


async def test_the_installed_anyio_takes_the_cheap_start(anyio_backend: str) -> None:
    """If a new anyio lays out its task groups otherwise, the pool falls back to
    ``start_soon`` (correct, slower): this test says so, so the layout gets looked at."""
    async with anyio.create_task_group() as tg:
        spawn = pool._spawner(tg)
    # ``!=``, not ``is not``: each ``tg.start_soon`` is a new bound method, never the same
    # object, so ``is not`` held even when the pool fell back to it.
    assert spawn != tg.start_soon


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


def _ends(batch: Any, backend: str) -> BaseException | Any:
    """The outcome of ``anyio.run(batch)`` (its result or what it raised), run in a thread
    of its own: a batch that never ends fails the test instead of hanging it (its thread
    is a daemon, left behind)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(anyio.run(batch, backend=backend))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)  # a hang guard, far beyond the few milliseconds the batch takes
    assert outcome, "the batch never ended"
    return outcome[0]


def test_an_item_that_leaves_a_cancel_scope_open_does_not_hang_the_batch(
    anyio_backend: str,
) -> None:
    """A scope entered in an item and never exited is still the worker's innermost scope
    when the worker ends. ``start_soon`` reports it (asyncio: the task's own scope cannot
    exit, RuntimeError; trio tolerates it); the pool's bookkeeping of its plain tasks must
    not trip on it, or the group waits forever for a worker it never forgets (even a
    deadline cannot end that wait, shielded in the group's exit)."""

    async def item(i: int) -> int:
        if i == 1:
            anyio.CancelScope().__enter__()  # never exited
        await anyio.sleep(0)
        return i

    async def batch() -> list[int]:
        return await map_ordered(item, range(3), limit=3)

    outcome = _ends(batch, anyio_backend)
    if anyio_backend == "asyncio":
        assert isinstance(outcome, RuntimeError), outcome
        assert "cancel scope" in str(outcome)
    else:
        assert outcome == [0, 1, 2]


async def test_a_worker_cancelled_before_it_ran_leaves_no_hole_in_the_results(
    anyio_backend: str,
) -> None:
    """asyncio: a ``task.cancel()`` from outside the flow on a worker that has not run yet
    ends its task without running a line of it, so its item is neither done nor failed.
    The batch must not return a hole (``None``) for it as if it were a result."""
    if anyio_backend != "asyncio":
        pytest.skip("trio has no foreign cancellation: a trio task always starts")
    import asyncio
    import inspect

    cancelled: list[object] = []

    def cancel_the_workers_not_yet_started() -> None:
        for task in asyncio.all_tasks():
            if inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED:
                task.cancel()
                cancelled.append(task)

    async def item(i: int) -> int:
        if i == 0:  # the first worker runs alone; the pool starts the others as it awaits
            asyncio.get_running_loop().call_soon(cancel_the_workers_not_yet_started)
        await anyio.sleep(0)
        return i

    with pytest.raises(FlowError, match="never started") as caught:
        await map_ordered(item, range(4), limit=4)
    assert len(cancelled) == 3
    assert "3 items of parallel batch" in str(caught.value)

"""The cancellation contract: every step a checkpoint, no cancellation turned into a success,
nothing a cancelled run took kept, the first failure raised as itself and the others kept.

Hang guards: steps that loop count themselves and raise after far more steps than the test
needs, so a broken checkpoint fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest

from flowfn import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchResults,
    Flow,
    FlowError,
    Node,
    batch,
    map_ordered,
    node,
    other_errors,
    parallel_batch,
    stream,
)

pytestmark = pytest.mark.anyio

# asyncio can tell a stray cancellation from a real one with Task.cancelling() (3.11+)
needs_cancelling = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10's asyncio cannot tell a stray cancellation"
)

GUARD = 2_000_000  # far more steps than any test here needs to see a checkpoint


class Runaway(RuntimeError):
    """A loop went on far past the point where it should have been cancelled."""


def looping_pair() -> tuple[Flow, list[int]]:
    """``a >> b >> a``: two async steps that never await, looping forever."""
    steps = [0]

    @node
    async def a(shared: Any) -> None:
        steps[0] += 1
        if steps[0] > GUARD:
            raise Runaway

    @node
    async def b(shared: Any) -> None:
        pass

    a >> b >> a
    return Flow(a), steps


# -- 1. a flow is a checkpoint ------------------------------------------------------------


async def test_a_loop_of_steps_that_never_await_stops_at_move_on_after(
    anyio_backend: str,
) -> None:
    flow, steps = looping_pair()
    with anyio.move_on_after(0.05) as scope:
        await flow.run_async({})
    assert scope.cancelled_caught
    assert 0 < steps[0] < GUARD


async def test_a_loop_of_steps_that_never_await_stops_at_fail_after(anyio_backend: str) -> None:
    flow, steps = looping_pair()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.05):
            await flow.run_async({})
    assert 0 < steps[0] < GUARD


async def test_sync_class_nodes_inside_an_event_loop_stop_at_cancellation(
    anyio_backend: str,
) -> None:
    steps = [0]

    class Step(Node):
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            steps[0] += 1
            if steps[0] > GUARD:
                raise Runaway
            return "again"

    step = Step()
    step - "again" >> step
    with anyio.move_on_after(0.05) as scope:
        await AsyncFlow(step).run_async({})
    assert scope.cancelled_caught
    assert 0 < steps[0] < GUARD


async def test_run_async_in_a_cancelled_scope_runs_no_step(anyio_backend: str) -> None:
    ran: list[str] = []

    @node
    async def first(shared: Any) -> None:
        ran.append("first")

    @node
    def second(shared: Any) -> None:
        ran.append("second")

    first >> second
    with anyio.CancelScope() as scope:
        scope.cancel()
        await Flow(first).run_async({})
        ran.append("after run_async")  # run_async is a checkpoint: never reached
    assert scope.cancelled_caught
    assert ran == []


async def test_run_async_of_a_single_node_is_a_checkpoint(anyio_backend: str) -> None:
    ran: list[str] = []

    class One(AsyncNode):
        async def exec_async(self, prep_res: Any) -> None:
            ran.append("exec")

    with anyio.CancelScope() as scope:
        scope.cancel()
        await One().run_async({})
    assert scope.cancelled_caught
    assert ran == []


async def test_no_step_starts_after_a_step_cancelled_the_flow(anyio_backend: str) -> None:
    ran: list[str] = []
    scope = anyio.CancelScope()

    @node
    async def first(shared: Any) -> None:
        ran.append("first")
        scope.cancel()  # no await after this: the walk must notice before the next step

    @node
    async def second(shared: Any) -> None:
        ran.append("second")

    first >> second
    with scope:
        await Flow(first).run_async({})
    assert scope.cancelled_caught
    assert ran == ["first"]


async def test_no_step_starts_after_a_thread_step_outlived_the_deadline(
    anyio_backend: str,
) -> None:
    ran: list[str] = []

    @node
    def blocking(shared: Any) -> None:
        time.sleep(0.2)  # in a worker thread, which cannot be interrupted
        ran.append("blocking")

    @node
    async def after(shared: Any) -> None:
        ran.append("after")

    blocking >> after
    with anyio.move_on_after(0.05) as scope:
        await Flow(blocking).run_async({})
    assert scope.cancelled_caught
    assert ran == ["blocking"]  # the thread finished; the next step never started


async def test_other_tasks_run_while_a_long_walk_never_awaits(anyio_backend: str) -> None:
    ticks = [0]
    steps = [0]

    @node
    async def count(shared: Any) -> str:
        steps[0] += 1
        return "again" if steps[0] < 20_000 else "done"

    count - "again" >> count
    count - "done" >> None

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0)
        before = ticks[0]
        await Flow(count).run_async({})
        during = ticks[0] - before
        tg.cancel_scope.cancel()
    assert steps[0] == 20_000
    assert during > 1  # the walk yielded to the event loop on its way


def instant_batches() -> list[Any]:
    """Builders of a flow whose batch counts its runs in ``done`` and never awaits."""

    def sequential(done: list[int]) -> Flow:
        @batch(items=lambda shared: range(GUARD))
        async def each(item: int) -> None:
            done[0] += 1

        return Flow(each)

    def parallel(done: list[int]) -> Flow:
        @parallel_batch(items=lambda shared: range(GUARD), limit=10)
        async def each(item: int) -> None:
            done[0] += 1

        return Flow(each)

    def parallel_flow(done: list[int]) -> Flow:
        @node
        async def step(shared: Any) -> None:
            done[0] += 1

        @parallel_batch(flow=Flow(step), limit=10)
        def runs(shared: Any) -> Any:
            return ({"i": i} for i in range(GUARD))

        return Flow(runs)

    return [sequential, parallel, parallel_flow]


@pytest.mark.parametrize("build", instant_batches(), ids=lambda b: b.__name__)
async def test_a_batch_of_instant_items_stops_at_cancellation(
    anyio_backend: str, build: Any
) -> None:
    done = [0]
    with anyio.move_on_after(0.05) as scope:
        await build(done).run_async({})
    assert scope.cancelled_caught
    assert 0 < done[0] < GUARD


# -- 2. a cancellation flowfn did not ask for is an error, never a success -----------------


def stray_cancellation(anyio_backend: str) -> BaseException:
    """A cancellation exception raised by something other than a cancel scope around us:
    on asyncio, what awaiting a future that someone else cancelled raises."""
    if anyio_backend == "asyncio":
        return asyncio.CancelledError()
    import trio

    return trio.Cancelled._create()  # type: ignore[attr-defined,no-any-return]


@needs_cancelling
async def test_a_stray_cancellation_in_a_parallel_item_is_an_error_naming_the_item(
    anyio_backend: str,
) -> None:
    @parallel_batch(items=lambda shared: [0, 1, 2], into="out")
    async def each(item: int) -> int:
        await anyio.sleep(0)
        if item == 1:
            raise stray_cancellation(anyio_backend)
        return item

    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match="cancelled, but not by") as caught:
        await Flow(each).run_async(shared)
    assert "out" not in shared  # no results with holes
    assert "flowfn: item 1 of parallel batch node 'each'" in caught.value.__notes__
    assert isinstance(caught.value.__cause__, anyio.get_cancelled_exc_class())


@needs_cancelling
async def test_an_awaited_future_cancelled_by_someone_else_fails_the_batch(
    anyio_backend: str,
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("asyncio futures: trio has no foreign cancellation to receive")
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    class Wait(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return [0, 1]

        async def exec_async(self, item: int) -> int:
            if item == 0:
                loop.call_later(0.01, future.cancel)
                return await future
            return item

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["out"] = exec_res

    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match="cancelled") as caught:
        await AsyncFlow(Wait()).run_async(shared)
    assert shared == {}
    assert "flowfn: item 0 of parallel batch node 'Wait'" in caught.value.__notes__


@needs_cancelling
async def test_a_stray_cancellation_is_collected_as_an_error(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: [0, 1], into="out", errors="collect")
    async def each(item: int) -> int:
        if item == 0:
            raise stray_cancellation(anyio_backend)
        return item

    shared: dict[str, Any] = {}
    await Flow(each).run_async(shared)
    results = shared["out"]
    assert isinstance(results, BatchResults)
    assert isinstance(results[0], FlowError)
    assert results[1] == 1


@needs_cancelling
async def test_a_stray_cancellation_in_a_step_is_an_error_naming_the_node(
    anyio_backend: str,
) -> None:
    ran: list[str] = []

    @node
    async def first(shared: Any) -> None:
        raise stray_cancellation(anyio_backend)

    @node
    async def second(shared: Any) -> None:
        ran.append("second")

    first >> second
    with pytest.raises(FlowError, match="node 'first' was cancelled, but not by") as caught:
        await Flow(first).run_async({})
    assert ran == []
    assert "flowfn: in node 'first' of flow 'Flow'" in caught.value.__notes__


@needs_cancelling
async def test_a_stray_cancellation_in_a_sequential_batch_item_is_an_error(
    anyio_backend: str,
) -> None:
    @batch(items=lambda shared: [0, 1], into="out")
    async def each(item: int) -> int:
        if item == 1:
            raise stray_cancellation(anyio_backend)
        return item

    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match="cancelled") as caught:
        await Flow(each).run_async(shared)
    assert "out" not in shared
    assert "flowfn: item 1 of batch node 'each'" in caught.value.__notes__


async def test_a_real_cancellation_still_propagates_as_cancellation(anyio_backend: str) -> None:
    started = anyio.Event()

    @parallel_batch(items=lambda shared: range(4))
    async def each(item: int) -> None:
        started.set()
        await anyio.sleep(10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(Flow(each).run_async, {})
        await started.wait()
        tg.cancel_scope.cancel()
    assert tg.cancel_scope.cancelled_caught


# -- 3. timeout= on sync functions -------------------------------------------------------


def slow_node(**options: Any) -> tuple[Any, list[str]]:
    calls: list[str] = []

    @node(timeout=0.05, into="result", **options)
    def slow(shared: Any) -> str:
        calls.append("call")
        time.sleep(0.15)
        return "late result"

    @slow.fallback
    def too_slow(exc: BaseException) -> str:
        return f"fallback after {type(exc).__name__}"

    return slow, calls


def test_a_sync_function_overrunning_its_timeout_times_out_under_run() -> None:
    slow, calls = slow_node(retries=1)
    shared: dict[str, Any] = {}
    Flow(slow).run(shared)
    assert shared["result"] == "fallback after TimeoutError"
    assert calls == ["call", "call"]  # the timed-out attempt was retried


async def test_a_sync_function_overrunning_its_timeout_times_out_under_run_async(
    anyio_backend: str,
) -> None:
    slow, calls = slow_node(retries=1)
    shared: dict[str, Any] = {}
    await Flow(slow).run_async(shared)
    assert shared["result"] == "fallback after TimeoutError"
    assert calls == ["call", "call"]


def test_a_sync_class_node_with_a_timeout_times_out_under_run() -> None:
    class Slow(Node):
        def exec(self, prep_res: Any) -> str:
            time.sleep(0.15)
            return "late"

        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            return type(exc).__name__

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["result"] = exec_res

    shared: dict[str, Any] = {}
    Slow(timeout=0.05).run(shared)
    assert shared["result"] == "TimeoutError"


async def test_sync_parallel_items_overrunning_their_timeout_time_out(anyio_backend: str) -> None:
    @parallel_batch(items="delays", into="out", timeout=0.1, errors="collect")
    def each(delay: float) -> str:
        time.sleep(delay)
        return "ok"

    shared: dict[str, Any] = {"delays": [0, 0.3, 0]}
    await Flow(each).run_async(shared)
    out = shared["out"]
    assert out[0] == out[2] == "ok"
    assert isinstance(out[1], TimeoutError)


async def test_an_async_attempt_returning_after_its_deadline_times_out(
    anyio_backend: str,
) -> None:
    @node(timeout=0.05, into="result")
    async def hog(shared: Any) -> str:
        time.sleep(0.15)  # blocks the loop: the deadline passes, nothing can interrupt it
        return "late"

    with pytest.raises(TimeoutError):
        await Flow(hog).run_async({})


# -- 4. a cancelled run gives back what it took ------------------------------------------


async def test_a_cancelled_run_gives_back_its_rate_limit_slots(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: range(40), per_second=20)
    async def call(item: int) -> None:
        pass

    limit = call.rate_limit
    assert limit is not None
    with anyio.move_on_after(0.1):
        await Flow(call).run_async({})
    # 40 slots at 20/s were booked up to 2 s ahead; the cancelled ones are free again.
    assert limit.pending == 0
    assert limit.delay() <= 1 / 20


async def test_a_failed_run_gives_back_its_rate_limit_slots(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: range(40), per_second=20)
    async def call(item: int) -> None:
        if item == 2:
            raise ValueError("boom")

    limit = call.rate_limit
    assert limit is not None
    with pytest.raises(ValueError, match="boom"):
        await Flow(call).run_async({})
    assert limit.pending == 0
    assert limit.delay() <= 1 / 20


async def test_a_cancelled_retry_wait_gives_back_its_slot(anyio_backend: str) -> None:
    attempts = [0]

    @node(per_second=5, retries=3)
    async def flaky(shared: Any) -> None:
        attempts[0] += 1
        raise ConnectionError

    limit = flaky.rate_limit
    assert limit is not None
    with anyio.move_on_after(0.1):
        await Flow(flaky).run_async({})
    assert attempts[0] == 1
    assert limit.pending == 0
    assert limit.delay() <= 1 / 5


# -- 5. KeyboardInterrupt and SystemExit reach the caller as themselves -----------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
async def test_keyboard_interrupt_and_system_exit_from_an_item_are_raised_as_themselves(
    anyio_backend: str, error: type[BaseException]
) -> None:
    @parallel_batch(items=lambda shared: range(6), limit=3)
    async def each(item: int) -> None:
        await anyio.sleep(0.01 * item)
        if item == 2:
            raise error

    with pytest.raises(error) as caught:
        await Flow(each).run_async({})
    assert type(caught.value) is error


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("limit", [3, None])
async def test_keyboard_interrupt_while_the_pool_starts_is_raised_as_itself(
    anyio_backend: str, error: type[BaseException], limit: int | None
) -> None:
    """Ctrl-C that lands while the pool is still starting workers (pulling items in the
    task that owns the task group): on trio that task group wrapped it in a group."""
    started: list[int] = []

    def source() -> Any:
        yield 0
        yield 1
        raise error

    @parallel_batch(items=lambda shared: source(), limit=limit)
    async def each(item: int) -> None:
        started.append(item)
        await anyio.sleep(10)

    with pytest.raises(error) as caught:
        await Flow(each).run_async({})
    assert type(caught.value) is error


# -- 6. every failure stays reachable ------------------------------------------------------


async def test_a_failure_during_the_cancellation_of_siblings_is_kept(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: [0, 1, 2])
    async def each(item: int) -> None:
        if item == 0:
            await anyio.sleep(0.01)
            raise ValueError("first")
        try:
            await anyio.sleep(10)
        finally:
            if item == 1:
                raise KeyError("second, while being cancelled")

    with pytest.raises(ValueError, match="first") as caught:
        await Flow(each).run_async({})
    first = caught.value
    others = other_errors(first)
    assert [type(e) for e in others] == [KeyError]
    assert "flowfn: item 1 of parallel batch node 'each'" in others[0].__notes__
    assert any("1 more failure" in n and "item 1" in n for n in first.__notes__)


async def test_keyboard_interrupt_after_a_failure_is_raised_and_the_failure_kept(
    anyio_backend: str,
) -> None:
    @parallel_batch(items=lambda shared: [0, 1])
    async def each(item: int) -> None:
        if item == 0:
            await anyio.sleep(0.01)
            raise ValueError("first")
        try:
            await anyio.sleep(10)
        finally:
            raise KeyboardInterrupt  # Ctrl-C while the siblings are being cancelled

    with pytest.raises(KeyboardInterrupt) as caught:
        await Flow(each).run_async({})
    assert [str(e) for e in other_errors(caught.value)] == ["first"]


async def test_items_failing_at_once_in_threads_are_all_reachable(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: [0, 1, 2], limit=3)
    def fail(item: int) -> None:
        time.sleep(0.05)  # in threads, which the first failure cannot stop
        raise ValueError(f"item {item}")

    with pytest.raises(ValueError, match="item") as caught:
        await Flow(fail).run_async({})
    others = other_errors(caught.value)  # the threads may end in any order
    assert sorted(str(e) for e in (caught.value, *others)) == ["item 0", "item 1", "item 2"]
    assert any("2 more failures" in n for n in caught.value.__notes__)


async def test_no_item_starts_after_the_first_failure(anyio_backend: str) -> None:
    started: list[int] = []

    async def fail(item: int) -> None:
        started.append(item)
        raise ValueError(f"item {item}")

    with pytest.raises(ValueError, match="item") as caught:
        await map_ordered(fail, range(10), limit=10)
    assert len(started) == 1  # trio may start any of the ten first
    assert str(caught.value) == f"item {started[0]}"


async def test_other_errors_of_a_lone_failure_is_empty(anyio_backend: str) -> None:
    async def fail(item: int) -> None:
        raise ValueError(f"item {item}")

    with pytest.raises(ValueError, match="item 0") as caught:
        await map_ordered(fail, [0], limit=1)
    assert other_errors(caught.value) == ()
    assert other_errors(ValueError()) == ()


async def test_a_stream_keeps_every_failure_reachable(anyio_backend: str) -> None:
    async def fail(item: int) -> int:
        await anyio.to_thread.run_sync(time.sleep, 0.05)  # cannot be stopped by the first
        raise ValueError(f"item {item}")

    async def drain() -> None:
        async with stream(fail, [0, 1], limit=2) as results:
            async for _ in results:
                pass

    with pytest.raises(ValueError, match="item") as caught:
        await drain()
    others = other_errors(caught.value)
    assert sorted(str(e) for e in (caught.value, *others)) == ["item 0", "item 1"]


# -- the checks themselves -----------------------------------------------------------------


@pytest.fixture
def public_checks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make flowfn read cancellation through anyio's public API only (its fallback for
    when the backends' internals change shape)."""
    from flowfn._engine import checkpoints as _checkpoints

    monkeypatch.setattr(_checkpoints, "_use_internals", False)


@pytest.mark.usefixtures("public_checks_only")
async def test_the_public_fallback_stops_a_loop_that_never_awaits(anyio_backend: str) -> None:
    flow, steps = looping_pair()
    with anyio.move_on_after(0.05) as scope:
        await flow.run_async({})
    assert scope.cancelled_caught
    assert 0 < steps[0] < GUARD


@pytest.mark.usefixtures("public_checks_only")
async def test_the_public_fallback_starts_no_step_after_cancellation(anyio_backend: str) -> None:
    ran: list[str] = []
    scope = anyio.CancelScope()

    @node
    async def first(shared: Any) -> None:
        ran.append("first")

    @node
    async def second(shared: Any) -> None:
        ran.append("second")
        scope.cancel()

    @node
    async def third(shared: Any) -> None:
        ran.append("third")

    first >> second >> third
    with scope:
        await Flow(first).run_async({})
    assert ran == ["first", "second"]


@needs_cancelling
def test_plain_asyncio_wait_for_stops_a_loop_that_never_awaits() -> None:
    """PocketFlow's way, without anyio around the flow: asyncio.run and asyncio.wait_for."""
    flow, steps = looping_pair()

    async def main() -> None:
        await asyncio.wait_for(flow.run_async({}), 0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert 0 < steps[0] < GUARD


def test_plain_asyncio_run_runs_a_flow_to_its_end() -> None:
    ran: list[int] = []

    @node
    async def step(shared: Any) -> str:
        ran.append(len(ran))
        return "again" if len(ran) < 3000 else "done"

    step - "again" >> step
    step - "done" >> None
    assert asyncio.run(Flow(step).run_async({})) == "done"
    assert len(ran) == 3000


# -- found in review: the pool, retries, observers, rate limits --------------------------


async def test_a_cancelled_parallel_batch_flow_of_endless_instant_runs_stops_soon(
    anyio_backend: str,
) -> None:
    """Each worker stopped only at its own checkpoint: a million items and more ran after
    the deadline (limit x 4096)."""
    import itertools

    done = [0]

    @node
    async def step(shared: Any) -> None:
        done[0] += 1

    @parallel_batch(flow=Flow(step))
    def runs(shared: Any) -> Any:
        return ({"i": i} for i in itertools.count())

    with anyio.move_on_after(0.05) as scope:
        await Flow(runs).run_async({})
    assert scope.cancelled_caught
    assert 0 < done[0] < 1_000_000


async def test_items_stop_within_a_chunk_after_an_item_cancels_the_batch(
    anyio_backend: str,
) -> None:
    ran: list[int] = []
    scope = anyio.CancelScope()

    async def each(item: int) -> None:
        ran.append(item)
        if item == 0:
            scope.cancel()  # no await: the other items never await either

    with scope:
        await map_ordered(each, range(100_000), limit=1)
    assert scope.cancelled_caught
    assert len(ran) <= 64


async def test_results_of_thread_items_are_never_returned_after_a_cancellation(
    anyio_backend: str,
) -> None:
    @parallel_batch(items=lambda shared: [0.2, 0.2], into="out")
    def blocking(delay: float) -> float:
        time.sleep(delay)
        return delay

    shared: dict[str, Any] = {}
    with anyio.move_on_after(0.05) as scope:
        await Flow(blocking).run_async(shared)
    assert scope.cancelled_caught  # on trio the results came back and were stored
    assert shared == {}


async def test_an_outside_cancellation_is_no_timeout_for_the_fallback(anyio_backend: str) -> None:
    seen: list[str] = []

    @node(timeout=0.1, into="out")
    def blocking(shared: Any) -> str:
        time.sleep(0.2)
        return "late"

    @blocking.fallback
    def fallback(exc: BaseException) -> str:
        seen.append(type(exc).__name__)
        return "fallback"

    shared: dict[str, Any] = {}
    with anyio.move_on_after(0.05) as scope:
        await Flow(blocking).run_async(shared)
    assert scope.cancelled_caught
    assert seen == []
    assert shared == {}


async def test_retries_without_a_wait_stop_at_cancellation(anyio_backend: str) -> None:
    attempts: list[int] = []

    @node(retries=4)
    async def flaky(shared: Any) -> None:
        attempts.append(1)
        await anyio.to_thread.run_sync(time.sleep, 0.05)  # the deadline passes meanwhile
        raise OSError("down")

    with anyio.move_on_after(0.01) as scope:
        await Flow(flaky).run_async({})
    assert scope.cancelled_caught
    assert attempts == [1]


async def test_an_observer_error_does_not_hide_the_items_failure(anyio_backend: str) -> None:
    def observer(event: Any) -> None:
        if event.kind == "item_error":
            raise RuntimeError("observer broke")

    @parallel_batch(items=lambda shared: [0, 1])
    async def each(item: int) -> None:
        if item == 0:
            raise ValueError("item 0")
        await anyio.sleep(1)

    with pytest.raises(ValueError, match="item 0") as caught:
        await Flow(each).run_async({}, on_event=observer)
    assert "flowfn: item 0 of parallel batch node 'each'" in caught.value.__notes__
    assert [type(e) for e in other_errors(caught.value)] == [RuntimeError]

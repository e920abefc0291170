"""Edge cases a review found: each test pins a promise the docs make."""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from flowfn import (
    AsyncFlow,
    Event,
    Flow,
    FlowError,
    Node,
    batch,
    map_ordered,
    node,
    parallel_batch,
    stream,
)
from flowfn._engine import events

pytestmark = pytest.mark.anyio


async def test_timeout_and_rate_limit_apply_to_plain_single_function_nodes(
    anyio_backend: str,
) -> None:
    @node(timeout=0.05)
    async def slow(shared: Any) -> None:
        await anyio.sleep(5)

    with anyio.fail_after(3), pytest.raises(TimeoutError):
        await Flow(slow).run_async({})

    starts: list[float] = []

    @node(per_second=50)
    async def tick(shared: Any) -> None:
        starts.append(time.monotonic())

    for _ in range(3):
        await Flow(tick).run_async({})
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.015


async def test_an_observer_failing_at_run_start_leaves_nothing_behind(anyio_backend: str) -> None:
    def bad(event: Event) -> None:
        if event.kind == "run_start":
            raise RuntimeError("bad observer")

    @node
    async def step(shared: Any) -> None:
        pass

    with pytest.raises(RuntimeError, match="bad observer"):
        await Flow(step).run_async({}, on_event=bad)
    assert events._active == 0
    assert events.current() is None


async def test_pool_arguments_are_checked(anyio_backend: str) -> None:
    async def same(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="limit must be a positive int"):
        await map_ordered(same, [1, 2], limit=0)
    with pytest.raises(ValueError, match="errors must be 'fail_fast' or 'collect'"):
        await map_ordered(same, [1], errors="collcet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be a positive int"):
        async with stream(same, [1], limit=-1):
            pass


async def test_an_observer_failing_inside_a_parallel_batch_is_raised_as_itself(
    anyio_backend: str,
) -> None:
    def breaks(event: Event) -> None:
        if event.kind == "item_end":
            raise RuntimeError("observer broke")

    @parallel_batch(items=lambda shared: range(4))
    async def each(i: int) -> int:
        await anyio.sleep(0)
        return i

    with pytest.raises(RuntimeError, match="observer broke"):
        await Flow(each).run_async({}, on_event=breaks)


async def test_base_exceptions_from_items_are_raised_as_themselves(anyio_backend: str) -> None:
    ran: list[int] = []

    async def exits(x: int) -> int:
        ran.append(x)
        if x == 0:
            raise SystemExit(3)
        await anyio.sleep(1)
        return x

    with anyio.fail_after(3), pytest.raises(SystemExit) as info:
        await map_ordered(exits, range(2), limit=2)
    assert info.value.code == 3


async def test_an_async_source_is_closed_when_the_pool_stops_early(anyio_backend: str) -> None:
    log: list[str] = []

    async def pages() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            log.append("cleanup started")
            await anyio.sleep(0)
            log.append("closed")

    async def fails_on_3(x: int) -> int:
        await anyio.sleep(0)
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        await map_ordered(fails_on_3, pages(), limit=2)
    assert log == ["cleanup started", "closed"]  # before map_ordered returned


async def test_a_missing_param_fails_at_once_not_through_retries_or_collect(
    anyio_backend: str,
) -> None:
    fallbacks: list[str] = []

    @node(retries=2, into="reply")
    async def ask(shared: Any, model: str) -> str:
        return model

    @ask.fallback
    def never(exc: Exception, shared: Any) -> str:
        fallbacks.append(repr(exc))
        return "fallback"

    with pytest.raises(FlowError, match="takes a parameter 'model'"):
        await Flow(ask).run_async({})
    assert fallbacks == []

    @parallel_batch(items="xs", into="out", errors="collect")
    async def translate(x: str, lang: str) -> str:
        return x

    for on_event in (None, lambda event: None):
        with pytest.raises(FlowError, match="takes a parameter 'lang'"):
            await Flow(translate).run_async({"xs": ["a"]}, on_event=on_event)


async def test_sync_flow_hooks_overridden_by_a_subclass_run_inside_async_flows(
    anyio_backend: str,
) -> None:
    class Step(Node):
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["log"].append("step")

    class Logged(Flow):
        def _run(self, shared: Any) -> Any:
            shared["log"].append("Logged._run")
            return super()._run(shared)

    shared: dict[str, Any] = {"log": []}
    await AsyncFlow(Logged(Step())).run_async(shared)
    assert shared["log"] == ["Logged._run", "step"]  # as in PocketFlow


async def test_a_batch_node_run_alone_has_a_plain_path(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: [1], retries=1)
    async def fetch(i: int) -> int:
        return i

    seen: list[Event] = []
    await fetch.run_async({}, on_event=seen.append)
    assert {e.where for e in seen} == {"fetch"}


async def test_a_failing_source_is_named_even_on_its_first_item(anyio_backend: str) -> None:
    async def broken() -> AsyncIterator[int]:
        raise ConnectionError("no first page")
        yield 0  # pragma: no cover

    async def same(x: int) -> int:
        return x

    with pytest.raises(ConnectionError) as info:
        await map_ordered(same, broken(), where="test")
    assert info.value.__notes__ == ["flowfn: iterating the items of test"]


async def test_sequential_batches_pull_async_sources_one_item_at_a_time(
    anyio_backend: str,
) -> None:
    log: list[str] = []

    async def source() -> AsyncIterator[int]:
        for i in range(3):
            log.append(f"pulled {i}")
            yield i

    @batch(items=lambda shared: source(), into="out")
    async def work(i: int) -> int:
        log.append(f"ran {i}")
        return i

    shared: dict[str, Any] = {}
    await Flow(work).run_async(shared)
    assert shared["out"] == [0, 1, 2]
    assert log == ["pulled 0", "ran 0", "pulled 1", "ran 1", "pulled 2", "ran 2"]


def test_wiring_warnings_point_at_the_users_line() -> None:
    a, b, c = Node(), Node(), Node()
    a >> b
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a >> c
        a - "x" >> b
        a - "x" >> c
    assert [w.filename for w in caught] == [__file__, __file__]


def test_a_half_imported_trio_is_no_running_trio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread may be importing trio when a run starts: its module is there, half
    made (no ``lowlevel`` yet), and this thread is inside no trio run."""
    import sys
    import types

    from flowfn._engine.backend import running_async_library

    monkeypatch.setitem(sys.modules, "trio", types.ModuleType("trio"))
    assert running_async_library() is None
    shared: dict[str, Any] = {}
    Flow(node(lambda shared: shared.update(ran=True), name="step")).run(shared)
    assert shared == {"ran": True}

"""The walk's fast paths (issue 22) keep the engine's promises: function steps awaited
directly, batch-flow walks awaited by the pool's workers with their flag, nested flows walked
in place, and observers that declare the event kinds they want, on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from flowfn import Event, Flow, FlowError, Progress, RunSummary, local, node, parallel_batch
from flowfn import compat as pf
from flowfn._engine import events

pytestmark = pytest.mark.anyio


class Kinds:
    """An observer of the kinds it declares."""

    def __init__(self, *kinds: str) -> None:
        self.kinds = frozenset(kinds)
        self.seen: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.seen.append(event)


async def test_a_direct_step_returning_no_action_is_an_error_naming_it(
    anyio_backend: str,
) -> None:
    @node
    async def counts(shared: Any) -> int:
        return 3

    with pytest.raises(FlowError, match="counts") as caught:
        await Flow(counts).run_async({})
    assert any("counts" in note for note in caught.value.__notes__)


async def test_steps_of_parallel_sub_flows_each_have_their_own_local(anyio_backend: str) -> None:
    @node
    async def first(shared: Any) -> None:
        await anyio.sleep(0)
        local()["mine"] = id(local())

    @node
    async def second(shared: Any) -> None:
        await anyio.sleep(0)
        shared["ok"] += local()["mine"] == id(local())

    first >> second

    @parallel_batch(flow=Flow(first), into="runs", limit=7)
    def orders(shared: Any) -> list[dict[str, int]]:
        return [{"order": i} for i in range(50)]

    shared = {"ok": 0}
    await Flow(orders).run_async(shared)
    assert shared["ok"] == 50
    assert len(shared["runs"]) == 50
    assert all(set(r) == {"mine"} for r in shared["runs"])


async def test_a_cancelled_batch_of_sub_flows_of_direct_steps_starts_no_further_step(
    anyio_backend: str,
) -> None:
    """The flag a worker hands the walk is the one that sees the batch cancelled."""
    ran: list[int] = []

    @node
    async def one(shared: Any) -> None:
        ran.append(1)

    @node
    async def cancel(shared: Any) -> None:
        ran.append(2)
        if len(ran) > 30:
            scope.cancel()

    @node
    async def three(shared: Any) -> None:
        ran.append(3)

    one >> cancel >> three

    @parallel_batch(flow=Flow(one), limit=4)
    def runs(shared: Any) -> Any:
        return ({"i": i} for i in range(10_000))

    with anyio.CancelScope() as scope:
        await Flow(runs).run_async({})
    assert scope.cancel_called
    cancelled_at = next(i for i, what in enumerate(ran) if what == 2 and i > 30)
    assert 3 not in ran[cancelled_at + 1 :]
    assert len(ran) < 100


async def test_a_nested_flow_walked_in_place_keeps_pocketflows_params_copy(
    anyio_backend: str,
) -> None:
    """The inner flow's nodes get a copy of the outer params (PocketFlow's params merge)."""
    seen: list[dict[str, Any]] = []

    class Writes(pf.AsyncNode):  # type: ignore[misc]
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            self.params["inner"] = True
            seen.append(self.params)

    class Reads(pf.AsyncNode):  # type: ignore[misc]
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            seen.append(self.params)

    inner = pf.AsyncFlow(Writes())
    inner >> Reads()
    outer = pf.AsyncFlow(inner)
    outer.set_params({"x": 1})
    await outer.run_async({})
    assert seen[0] == {"x": 1, "inner": True}
    assert seen[1] == {"x": 1}


async def test_an_observer_gets_only_the_kinds_it_declares(anyio_backend: str) -> None:
    @node
    async def step(shared: Any) -> None:
        await anyio.sleep(0)

    @parallel_batch(flow=Flow(step), limit=2)
    def runs(shared: Any) -> list[dict[str, int]]:
        return [{"i": i} for i in range(3)]

    ends, everything = Kinds("item_end", "run_end"), []
    await Flow(runs).run_async({}, on_event=[ends, everything.append])
    assert [e.kind for e in ends.seen] == ["item_end"] * 3 + ["run_end"]
    assert {e.kind for e in everything} >= {"node_start", "node_end", "item_start"}


async def test_a_quiet_step_still_reports_its_error_with_its_path(anyio_backend: str) -> None:
    @node
    async def breaks(shared: Any) -> None:
        raise ValueError("no")

    errors = Kinds("node_error")
    with pytest.raises(ValueError, match="no"):
        await Flow(breaks, name="outer").run_async({}, on_event=errors)
    (event,) = errors.seen
    assert (event.kind, event.where) == ("node_error", "outer/breaks")
    assert isinstance(event.error, ValueError)
    assert event.duration is not None
    assert event.duration >= 0


def test_an_unknown_event_kind_is_refused_naming_it() -> None:
    @node
    def step(shared: Any) -> None:
        pass

    with pytest.raises(TypeError, match="'node_done'"):
        Flow(step).run({}, on_event=Kinds("node_done"))
    with pytest.raises(TypeError, match="collection of event kinds"):
        events.kinds_of(type("Bad", (), {"kinds": "node_end"})())


async def test_progress_and_summary_declare_kinds_and_still_count(anyio_backend: str) -> None:
    @node(retries=1)
    async def flaky(shared: Any) -> None:
        shared["n"] += 1
        if shared["n"] == 1:
            raise ValueError("once")

    summary = RunSummary()
    assert "node_start" not in summary.kinds
    assert "node_start" not in Progress.kinds
    await Flow(flaky).run_async({"n": 0}, on_event=summary)
    stats = summary.nodes["Flow/flaky"]
    assert (stats.calls, stats.retries) == (1, 1)


def test_a_node_class_overriding_exec_or_run_runs_through_its_override() -> None:
    """The walk runs a plain Node's phases itself; an override is still what runs."""
    calls: list[str] = []

    class Plain(pf.Node):  # type: ignore[misc]
        def exec(self, prep_res: Any) -> str:
            calls.append("exec")
            raise ValueError("once")

        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            calls.append(f"fallback {exc}")
            return "fell"

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            calls.append(f"post {exec_res}")

    class OwnExec(pf.Node):  # type: ignore[misc]
        def _exec(self, prep_res: Any) -> str:
            calls.append("own _exec")
            return "mine"

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            calls.append(f"post {exec_res}")

    assert Plain._inline_phases
    assert not OwnExec._inline_phases
    first = Plain()
    first >> OwnExec()
    pf.Flow(first).run({})
    assert calls == ["exec", "fallback once", "post fell", "own _exec", "post mine"]


async def test_an_async_node_class_runs_its_phases_once_each(anyio_backend: str) -> None:
    calls: list[str] = []

    class Step(pf.AsyncNode):  # type: ignore[misc]
        async def prep_async(self, shared: Any) -> int:
            calls.append(f"prep {self.params}")
            return 1

        async def exec_async(self, prep_res: int) -> int:
            calls.append(f"exec {self.cur_retry}")
            return prep_res + 1

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            calls.append(f"post {exec_res}")
            return "done"

    flow = pf.AsyncFlow(Step())
    flow.set_params({"k": 1})
    assert await flow.run_async({}) == "done"
    assert calls == ["prep {'k': 1}", "exec 0", "post 2"]


def test_a_sync_exec_returning_a_coroutine_is_still_refused() -> None:
    class Wrong(pf.Node):  # type: ignore[misc]
        async def _later(self) -> None:
            pass

        def exec(self, prep_res: Any) -> Any:
            return self._later()

    with pytest.raises(FlowError, match="coroutine"):
        pf.Flow(Wrong()).run({})


async def test_the_pool_runs_instant_items_in_one_worker_and_waiting_ones_up_to_limit(
    anyio_backend: str,
) -> None:
    """Workers start only while every running one waits inside an item."""
    from flowfn import map_ordered

    tasks: set[int] = set()

    async def instant(item: int) -> int:
        tasks.add(anyio.get_current_task().id)
        return item

    assert await map_ordered(instant, range(10_000), limit=50) == list(range(10_000))
    assert len(tasks) == 1

    running, peak = [0], [0]

    async def waits(item: int) -> int:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await anyio.sleep(0.005)
        running[0] -= 1
        return item

    assert await map_ordered(waits, range(40), limit=7) == list(range(40))
    assert peak[0] == 7


async def test_a_stream_of_waiting_items_grows_to_its_limit(anyio_backend: str) -> None:
    from flowfn import stream

    running, peak = [0], [0]

    async def waits(item: int) -> int:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await anyio.sleep(0.005)
        running[0] -= 1
        return item

    async def pages() -> Any:
        for i in range(30):
            yield i

    async with stream(waits, pages(), limit=6) as results:
        got = sorted([index async for index, _ in results])
    assert got == list(range(30))
    assert peak[0] == 6

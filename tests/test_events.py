"""Watching runs: the event stream, summaries, logging and progress, on both backends."""

from __future__ import annotations

import io
import logging
import re
import sys
from typing import Any

import anyio
import pytest
from terminal import Terminal

from flowfn import (
    AsyncNode,
    AsyncParallelBatchNode,
    Event,
    Flow,
    FlowError,
    LogObserver,
    Progress,
    RunSummary,
    batch,
    node,
    parallel_batch,
)
from flowfn._engine import events

pytestmark = pytest.mark.anyio


def build_bakery() -> Flow:
    """A parallel batch flow of 3 orders; each runs mix (fails once for plum) >> layer."""
    failed: set[str] = set()

    @node(retries=1)
    async def mix(flavor: str) -> None:
        await anyio.sleep(0.001)
        if flavor == "plum" and flavor not in failed:
            failed.add(flavor)
            raise OSError("spilled")

    @batch(items=lambda shared: [1, 2])
    def layer(i: int) -> int:
        return i

    mix >> layer

    @parallel_batch(flow=Flow(mix), limit=2)
    def orders(shared: Any) -> list[dict[str, str]]:
        return [{"flavor": f} for f in ("lemon", "plum", "fig")]

    flow = Flow(orders)
    flow.name = "bakery"
    return flow


async def test_the_event_stream_of_a_nested_parallel_flow(anyio_backend: str) -> None:
    seen: list[Event] = []
    await build_bakery().run_async({}, on_event=seen.append)
    kinds = [(e.kind, e.where) for e in seen]

    assert kinds[0] == ("run_start", "bakery")
    assert kinds[1] == ("node_start", "bakery/orders")
    assert kinds[2] == ("batch_start", "bakery/orders")
    assert seen[2].total == 3
    assert kinds[-3:] == [
        ("batch_end", "bakery/orders"),
        ("node_end", "bakery/orders"),
        ("run_end", "bakery"),
    ]
    # every order ran its sub-flow with its index in the path, in order within the order
    for i in range(3):
        prefix = f"bakery/orders[{i}]/"
        steps = [(k, w.removeprefix(prefix)) for k, w in kinds if w.startswith(prefix)]
        retry = [("retry", "Flow/mix")] if i == 1 else []
        assert steps == [
            ("node_start", "Flow"),
            ("node_start", "Flow/mix"),
            *retry,
            ("node_end", "Flow/mix"),
            ("node_start", "Flow/layer"),
            ("batch_start", "Flow/layer"),
            ("item_start", "Flow/layer"),
            ("item_end", "Flow/layer"),
            ("item_start", "Flow/layer"),
            ("item_end", "Flow/layer"),
            ("batch_end", "Flow/layer"),
            ("node_end", "Flow/layer"),
            ("node_end", "Flow"),
        ]
    items = [e.item for e in seen if e.kind == "item_end" and e.where == "bakery/orders"]
    assert sorted(items) == [0, 1, 2]
    retry = next(e for e in seen if e.kind == "retry")
    assert retry.attempt == 0
    assert isinstance(retry.error, OSError)
    assert all(e.duration is not None and e.duration >= 0 for e in seen if e.kind == "node_end")
    assert events._active == 0  # the observer is gone after the run


async def test_unobserved_runs_emit_nothing(anyio_backend: str) -> None:
    assert events.current() is None
    seen: list[Event] = []
    await build_bakery().run_async({})
    await build_bakery().run_async({}, on_event=seen.append)
    await build_bakery().run_async({})
    assert {e.kind for e in seen} >= {"run_start", "run_end"}
    assert len([e for e in seen if e.kind == "run_start"]) == 1


async def test_errors_and_fallbacks_are_events(anyio_backend: str) -> None:
    class Fails(AsyncNode):
        async def exec_async(self, prep_res: Any) -> None:
            raise ValueError("no")

    seen: list[Event] = []
    with pytest.raises(ValueError, match="no"):
        await Flow(Fails(max_retries=2)).run_async({}, on_event=seen.append)
    assert [(e.kind, e.attempt) for e in seen if e.kind in ("retry", "fallback")] == [
        ("retry", 0),
        ("fallback", 1),
    ]
    assert [e.kind for e in seen][-2:] == ["node_error", "run_end"]
    assert isinstance(seen[-1].error, ValueError)


async def test_parallel_item_errors_are_events(anyio_backend: str) -> None:
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> range:
            return range(4)

        async def exec_async(self, i: int) -> int:
            await anyio.sleep(0)
            if i == 2:
                raise KeyError(i)
            return i

    seen: list[Event] = []
    await Items(errors="collect").run_async({}, on_event=seen.append)
    errors = [e for e in seen if e.kind == "item_error"]
    assert [e.item for e in errors] == [2]
    assert sorted(e.item for e in seen if e.kind == "item_end") == [0, 1, 3]


async def test_run_summary_counts_per_node(anyio_backend: str) -> None:
    summary = RunSummary()
    await build_bakery().run_async({}, on_event=summary)
    mix = summary.nodes["bakery/orders/Flow/mix"]
    assert (mix.calls, mix.retries, mix.failures) == (3, 1, 0)
    assert summary.nodes["bakery/orders/Flow/layer"].items == 6
    assert summary.nodes["bakery/orders"].items == 3
    assert mix.max_time <= mix.total_time
    table = str(summary)
    assert "bakery/orders/Flow/mix" in table
    assert table.splitlines()[0].split()[:4] == ["node", "calls", "retries", "failures"]
    assert summary.duration is not None


def test_log_observer_logs_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    @node(into="x")
    def step(shared: Any) -> int:
        return 1

    with caplog.at_level(logging.DEBUG, logger="flowfn"):
        Flow(step).run({}, on_event=LogObserver())
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("run_start Flow")
    assert any(m.startswith("node_end Flow/step") and "took=" in m for m in messages)
    assert caplog.records[-1].levelno == logging.INFO


async def test_progress_shows_done_total_failures_and_rate(anyio_backend: str) -> None:
    out = io.StringIO()

    @parallel_batch(items=lambda shared: range(10), errors="collect", limit=3)
    async def work(i: int) -> int:
        await anyio.sleep(0.001)
        if i == 7:
            raise ValueError(i)
        return i

    await Flow(work).run_async({}, on_event=Progress(out, per_second=1000))
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("Flow/work: 100% 10/10 done, 1 failed, ")
    assert lines[-1].endswith(" items/s")
    done = [int(line.split()[2].split("/")[0]) for line in lines]
    assert done == sorted(done)  # counts only go up, even with 3 items at once


def test_progress_true_draws_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    @batch(items="xs", into="ys")
    def double(x: int) -> int:
        return 2 * x

    shared: dict[str, Any] = {"xs": [1, 2, 3]}
    Flow(double).run(shared, progress=True)
    assert shared["ys"] == [2, 4, 6]
    assert "Flow/double: 100% 3/3 done, 0 failed" in capsys.readouterr().err


async def test_an_observer_that_raises_stops_the_run(anyio_backend: str) -> None:
    def picky(event: Event) -> None:
        if event.kind == "node_end":
            raise RuntimeError("observer says no")

    @node
    async def step(shared: Any) -> None:
        shared["ran"] = True

    shared: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="observer says no"):
        await Flow(step).run_async(shared, on_event=picky)
    assert shared == {"ran": True}
    assert events._active == 0


def test_observers_must_be_callable() -> None:
    with pytest.raises(TypeError, match="observers must be callables"):
        Flow(node(lambda shared: None)).run({}, on_event=["not callable"])  # type: ignore[list-item]


async def test_echo_prints_above_the_bars_and_a_stopped_batch_gets_its_last_line(
    anyio_backend: str,
) -> None:
    from flowfn import echo

    screen = Terminal()

    @parallel_batch(items=lambda shared: range(6), limit=1)
    async def work(i: int) -> None:
        await anyio.sleep(0)
        if i == 2:
            echo("halfway there")
        if i == 4:
            raise ValueError("item 4")

    with pytest.raises(ValueError, match="item 4"):
        await Flow(work).run_async({}, on_event=Progress(screen, per_second=1e9, renderer="text"))
    text = screen.getvalue()
    assert "\r\x1b[Khalfway there\n\r" in text  # the bar's line cleared, the text, the bar again
    assert text.endswith(" (stopped)\x1b[K\n")  # the line cleared past its end
    assert "Flow/work:  83% 5/6 done, 1 failed" in text.splitlines()[-1]  # 4 done + the failure

    plain = io.StringIO()  # not a terminal: one line per batch, at its end
    shared: dict[str, Any] = {"xs": [1, 2, 3]}

    @batch(items="xs", into="ys")
    def double(x: int) -> int:
        return 2 * x

    await Flow(double).run_async(shared, on_event=Progress(plain, per_second=1e9))
    assert plain.getvalue().count("\n") == 1
    assert plain.getvalue().startswith("Flow/double: 100% 3/3 done, 0 failed")


def test_echo_without_bars_is_print(capsys: pytest.CaptureFixture[str]) -> None:
    from flowfn import echo

    echo("no bars", 42)
    assert capsys.readouterr().out == "no bars 42\n"


async def test_rich_draws_the_bars_on_a_terminal_when_installed(anyio_backend: str) -> None:
    """rich comes with the test extra, so "auto" picks it on a terminal; prints and log lines
    go above its bars, a failed item is counted and the stopped bar keeps its last frame."""
    pytest.importorskip("rich")
    from flowfn import EchoHandler, echo
    from flowfn._observe import progress as _progress

    screen = Terminal()
    logger = logging.getLogger("test_events.rich")
    logger.addHandler(EchoHandler(screen))
    logger.propagate = False

    @parallel_batch(items=lambda shared: range(6), limit=1)
    async def work(i: int) -> None:
        await anyio.sleep(0)
        if i == 2:
            echo("halfway [there]")  # not rich markup: printed as it is
        if i == 3:
            logger.warning("three is a crowd")
        if i == 4:
            raise ValueError("item 4")

    bars = Progress(screen, per_second=1e9)
    assert bars.renderer == "rich"
    with pytest.raises(ValueError, match="item 4"):
        await Flow(work).run_async({}, on_event=bars)
    rows = screen.screen()
    assert "halfway [there]" in rows
    assert "three is a crowd" in rows
    assert rows.index("halfway [there]") < rows.index("three is a crowd")
    assert rows[-1].startswith("Flow/work (stopped)")  # its last line stays
    assert "5/6" in rows[-1]  # 4 done and the failure
    assert "1 failed" in rows[-1]
    assert screen.cursor_shown()
    assert bars._display is None  # its display ended with the run
    assert _progress._showing == []
    logger.warning("after the run")  # no bars: straight to the handler's stream
    assert screen.getvalue().endswith("after the run\n")


async def test_rich_bars_of_several_batches(anyio_backend: str) -> None:
    pytest.importorskip("rich")
    screen = Terminal()

    @batch(items="xs", into="ys")
    def double(x: int) -> int:
        return 2 * x

    @parallel_batch(items="ys", into="zs", limit=2)
    async def triple(y: int) -> int:
        await anyio.sleep(0)
        return 3 * y

    shared: dict[str, Any] = {"xs": [1, 2, 3, 4]}
    double >> triple
    await Flow(double).run_async(shared, on_event=Progress(screen, renderer="rich"))
    assert shared["zs"] == [6, 12, 18, 24]
    text = screen.getvalue()
    assert re.search(r"Flow/double .*100%.*4/4.* 0 failed", text)
    assert re.search(r"Flow/triple .*100%.*4/4.* 0 failed", text)


def test_progress_picks_its_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Progress(io.StringIO()).renderer == "text"  # no terminal: one line per batch
    assert Progress(io.StringIO(), renderer="text").renderer == "text"
    monkeypatch.setitem(sys.modules, "rich", None)  # as if rich were not installed
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert Progress(Terminal()).renderer == "text"
    with pytest.raises(ImportError, match=r"pip install 'flowfn\[rich\]'"):
        Progress(Terminal(), renderer="rich")
    with pytest.raises(ImportError, match=r"pip install 'flowfn\[progress\]'"):
        Progress(Terminal(), renderer="tqdm")
    with pytest.raises(ValueError, match="renderer must be 'auto', 'rich', 'tqdm' or 'text'"):
        Progress(renderer="fancy")  # type: ignore[arg-type]


async def test_echo_handler_logs_above_text_bars(anyio_backend: str) -> None:
    from flowfn import EchoHandler

    screen = Terminal()
    logger = logging.getLogger("test_events.text")
    handler = EchoHandler(screen)
    handler.setFormatter(logging.Formatter("log: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False

    @parallel_batch(items=lambda shared: range(3), limit=1)
    async def work(i: int) -> None:
        await anyio.sleep(0)
        if i == 1:
            logger.warning("item %d", i)

    await Flow(work).run_async({}, on_event=Progress(screen, per_second=1e9, renderer="text"))
    assert "\r\x1b[Klog: item 1\n\rFlow/work: " in screen.getvalue()
    assert repr(handler) == "EchoHandler(level=NOTSET)"


async def test_tqdm_bars_when_asked_for(anyio_backend: str) -> None:
    pytest.importorskip("tqdm")
    from flowfn import echo

    screen = Terminal()

    @parallel_batch(items=lambda shared: range(5), limit=1)
    async def work(i: int) -> None:
        await anyio.sleep(0)
        if i == 2:
            echo("hello")
        if i == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        await Flow(work).run_async({}, on_event=Progress(screen, renderer="tqdm"))
    text = screen.getvalue()
    assert "\rhello\n" in text  # through tqdm.write: the bar cleared, the line, the bar again
    last_frame = text.rsplit("\r", 1)[-1]
    assert last_frame.startswith("Flow/work (stopped):  80%")
    assert "4/5" in last_frame
    assert "failed=1" in last_frame


async def test_a_failed_inner_batch_gets_its_last_line_when_it_stops(anyio_backend: str) -> None:
    """Not at the end of the run: the batch flow collects the failure and goes on."""

    @batch(items=lambda shared: range(3))
    def work(i: int, run: int) -> int:
        if i == 1 and run == 0:
            raise ValueError("bad")
        return i

    @parallel_batch(flow=Flow(work), errors="collect", limit=1)
    def fan(shared: dict[str, Any]) -> list[dict[str, int]]:
        return [{"run": 0}, {"run": 1}]

    out = io.StringIO()
    await Flow(fan).run_async({}, on_event=Progress(out))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Flow/fan[0]/Flow/work:  67% 2/3 done, 1 failed")
    assert lines[0].endswith(" (stopped)")
    assert lines[1].startswith("Flow/fan[1]/Flow/work: 100% 3/3 done, 0 failed")
    assert lines[2].startswith("Flow/fan: 100% 2/2 done, 1 failed")


async def test_rich_bars_of_nested_batches_leave_one_line_each(anyio_backend: str) -> None:
    """A finished batch's bar leaves the live area as one line: bars do not pile up, and
    echo() from worker threads (sync steps) lands above them, whole."""
    pytest.importorskip("rich")
    from flowfn import echo

    screen = Terminal()

    @batch(items=lambda shared: range(3))
    def inner(i: int, run: int) -> int:
        echo(f"run {run} item {i}")  # a sync step: it runs in a worker thread
        return i

    @parallel_batch(flow=Flow(inner), limit=3)
    def fan(shared: dict[str, Any]) -> list[dict[str, int]]:
        return [{"run": run} for run in range(6)]

    await Flow(fan).run_async({}, on_event=Progress(screen, per_second=1e9, renderer="rich"))
    rows = screen.screen()
    assert sorted(r for r in rows if r.startswith("run ")) == sorted(
        f"run {run} item {i}" for run in range(6) for i in range(3)
    )
    bars = [r for r in rows if r.startswith("Flow/")]
    assert len(bars) == 7  # six inner batches and the outer one, once each
    assert all(re.search(r"100% +3/3 +0 failed", r) for r in bars[:-1])
    assert bars[-1].startswith("Flow/fan ")
    assert re.search(r"100% +6/6 +0 failed", bars[-1])
    assert rows[-1] == bars[-1]
    assert screen.cursor_shown()


async def test_a_cancelled_run_ends_its_rich_bars_and_shows_the_cursor(
    anyio_backend: str,
) -> None:
    pytest.importorskip("rich")
    screen = Terminal()

    @parallel_batch(items=lambda shared: range(4), limit=2)
    async def work(i: int) -> None:
        await anyio.sleep(0 if i == 0 else 5)

    bars = Progress(screen, renderer="rich")
    with anyio.move_on_after(0.2):
        await Flow(work).run_async({}, on_event=bars)
    rows = screen.screen()
    assert rows[-1].startswith("Flow/work (stopped)")
    assert re.search(r"1/4 +0 failed", rows[-1])
    assert screen.cursor_shown()
    assert bars._display is None


async def test_an_observer_that_raises_does_not_leave_bars_behind(anyio_backend: str) -> None:
    """Every observer gets every event: a Progress after a broken observer still ends."""
    pytest.importorskip("rich")
    from flowfn._observe import progress as _progress

    screen = Terminal()
    seen: list[str] = []

    def broken(event: Event) -> None:
        seen.append(event.kind)
        if event.kind == "run_end":
            raise RuntimeError("observer broke")

    @parallel_batch(items=lambda shared: range(3), limit=3)
    async def work(i: int) -> None:
        await anyio.sleep(5)

    bars = Progress(screen, renderer="rich")
    with pytest.raises(RuntimeError, match="observer broke"), anyio.move_on_after(0.1):
        await Flow(work).run_async({}, on_event=[broken, bars])
    assert seen[-1] == "run_end"
    assert screen.cursor_shown()
    assert bars._display is None
    assert _progress._showing == []


async def test_two_runs_at_once_share_one_rich_display(anyio_backend: str) -> None:
    pytest.importorskip("rich")
    screen = Terminal()

    def make(name: str) -> Flow:
        @parallel_batch(items=lambda shared: range(4), limit=2, name=name)
        async def work(i: int) -> int:
            await anyio.sleep(0.01)
            return i

        return Flow(work)

    async with anyio.create_task_group() as tg:
        for name in ("left", "right"):
            tg.start_soon(lambda flow: flow.run_async({}, on_event=Progress(screen)), make(name))
    rows = screen.screen()
    assert len(rows) == 2  # one final line per run's batch, neither erased by the other
    assert {row.split()[0] for row in rows} == {"Flow/left", "Flow/right"}
    assert all(re.search(r"100% +4/4 +0 failed", row) for row in rows)
    assert screen.cursor_shown()


async def test_echo_handler_keeps_to_its_stream_when_no_bars_are_drawn(
    anyio_backend: str,
) -> None:
    from flowfn import EchoHandler

    log_file, not_a_terminal = io.StringIO(), io.StringIO()
    logger = logging.getLogger("test_events.stream")
    logger.addHandler(EchoHandler(log_file))
    logger.propagate = False

    @batch(items=lambda shared: range(2))
    def work(i: int) -> None:
        logger.warning("inside the run")

    await Flow(work).run_async({}, on_event=Progress(not_a_terminal))
    assert log_file.getvalue() == "inside the run\ninside the run\n"
    assert not_a_terminal.getvalue().startswith("Flow/work: 100% 2/2 done")


def test_progress_and_a_thread_in_tqdm_write_do_not_deadlock() -> None:
    """A worker thread inside tqdm.write (holding tqdm's lock) prints through flowfn while
    the flow's thread hands an event to the tqdm bars: both take tqdm's lock first."""
    tqdm = pytest.importorskip("tqdm")
    import threading
    import time

    from flowfn._observe.progress import LinesAboveBars

    screen = Terminal()
    bars = Progress(screen, renderer="tqdm")
    bars(Event("run_start", "Flow"))
    holding, go_on = threading.Event(), threading.Event()

    def user_thread() -> None:
        with tqdm.tqdm.get_lock():  # what tqdm.write holds while it prints
            holding.set()
            go_on.wait(5)
            LinesAboveBars(screen).write("from a thread\n")

    def flow_thread() -> None:
        bars(Event("batch_start", "work", ("Flow",), total=3))  # makes a tqdm bar

    user = threading.Thread(target=user_thread, daemon=True)
    user.start()
    assert holding.wait(5)
    flow = threading.Thread(target=flow_thread, daemon=True)
    flow.start()
    time.sleep(0.1)  # the flow's thread now waits for a lock
    go_on.set()
    user.join(5)
    flow.join(5)
    assert not user.is_alive()
    assert not flow.is_alive()
    bars(Event("run_end", "Flow"))
    assert "from a thread" in screen.getvalue()


async def test_one_progress_shows_one_run_at_a_time(anyio_backend: str) -> None:
    """A second run that starts while the Progress shows one is refused, and the first
    run's bars go on as if nothing happened."""
    out = io.StringIO()
    bars = Progress(out)

    @parallel_batch(items=lambda shared: range(2))
    async def work(i: int) -> None:
        await anyio.sleep(0.05)

    refused: list[FlowError] = []

    async def run() -> None:
        try:
            await Flow(work).run_async({}, on_event=bars)
        except FlowError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.01)
        tg.start_soon(run)
    assert len(refused) == 1  # the second run, at its start: the first one went on
    assert "already shows another run that has not ended" in str(refused[0])
    assert "Give each run its own Progress() (progress=True does)" in str(refused[0])
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("Flow/work: 100% 2/2 done, 0 failed")  # not stopped
    await Flow(work).run_async({}, on_event=bars)  # one after the other is fine
    assert bars.bars == {}


def test_a_nested_run_with_the_same_progress_is_told_to_leave_on_event_out() -> None:
    out = io.StringIO()
    bars = Progress(out)

    @batch(items=lambda shared: range(2))
    def inner(i: int) -> int:
        return i

    @node
    def step(shared: dict[str, Any]) -> None:
        Flow(inner).run({}, on_event=bars)

    with pytest.raises(FlowError, match="a run nested in a step of that run reports to it"):
        Flow(step).run({}, on_event=bars)

    @node
    def quiet(shared: dict[str, Any]) -> None:
        Flow(inner).run({})  # no on_event: its events reach the run around it

    Flow(quiet).run({}, on_event=bars)
    assert out.getvalue().startswith("Flow/inner: 100% 2/2 done, 0 failed")


def test_tqdm_bars_with_a_plain_lock_do_not_hang() -> None:
    """tqdm lets users swap in a non-reentrant lock: flowfn never holds it around tqdm."""
    tqdm = pytest.importorskip("tqdm")
    import threading

    original = tqdm.tqdm.get_lock()
    tqdm.tqdm.set_lock(threading.Lock())
    finished = threading.Event()

    @batch(items=lambda shared: range(3))
    def work(i: int) -> int:
        return i

    def run() -> None:
        Flow(work).run({}, on_event=Progress(Terminal(), renderer="tqdm"))
        finished.set()

    try:
        threading.Thread(target=run, daemon=True).start()
        assert finished.wait(10)
    finally:
        tqdm.tqdm.set_lock(original)


def test_echo_with_tqdm_imported_leaves_multiprocessing_alone() -> None:
    import subprocess
    import sys

    code = (
        "import multiprocessing, tqdm, flowfn\n"
        "flowfn.echo('x')\n"
        "multiprocessing.set_start_method('spawn')\n"
        "print('start method free')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["x", "start method free"]


def test_the_item_index_does_not_outlive_an_interrupted_item() -> None:
    seen: list[int | None] = []

    @batch(items="xs")
    def stop(x: int) -> None:
        raise SystemExit(3)

    @node(retries=1)
    def flaky(shared: dict[str, Any]) -> None:
        if not seen:
            seen.append(events.current_item())
            raise ValueError("once")

    with pytest.raises(SystemExit):
        Flow(stop).run({"xs": [1]}, on_event=lambda event: None)
    assert events.current_item() is None
    retries: list[Event] = []
    Flow(flaky).run({}, on_event=lambda event: retries.append(event))
    assert seen == [None]
    assert [(e.kind, e.item) for e in retries if e.kind == "retry"] == [("retry", None)]

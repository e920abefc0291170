"""What a new user stumbled on in their first hour (issue 21, and issue 20's item 20): failing
parallel branches named by name, asyncio-only code under trio, process workers in a script
without a ``__main__`` guard, the command line's ``--shared`` and error objects, and
progress bars with rate, ETA, failures and retries."""

from __future__ import annotations

import io
import re
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from terminal import Terminal

from flowfn import Event, Flow, LogObserver, Parallel, Progress, node, parallel_batch
from flowfn.otel import OTelObserver

# -- 21.6: a failing branch of Parallel(...) is named by its name ----------------------------


def briefing(fail: str = "weather", **options: Any) -> Flow:
    """``Parallel(news, weather, sports, name="fetch", **options)`` whose ``fail`` branch
    raises."""

    def branch(name: str) -> Any:
        async def fetch(shared: dict[str, Any]) -> None:
            await anyio.sleep(0)
            if name == fail:
                raise ConnectionError(f"{name} is down")
            shared[name] = "ok"

        fetch.__name__ = name
        return node(fetch)

    branches = (branch(n) for n in ("news", "weather", "sports"))
    flow = Flow(Parallel(*branches, name="fetch", **options))
    flow.name = "briefing"
    return flow


@pytest.mark.anyio
async def test_a_failing_branch_is_named_in_its_note(anyio_backend: str) -> None:
    with pytest.raises(ConnectionError) as caught:
        await briefing().run_async({})
    assert "flowfn: branch 'weather' of parallel branches 'fetch'" in caught.value.__notes__
    assert not any("item 1" in note for note in caught.value.__notes__)


@pytest.mark.anyio
async def test_collected_branch_failures_are_named_too(anyio_backend: str) -> None:
    shared: dict[str, Any] = {}
    await briefing("sports", errors="collect", into="actions").run_async(shared)
    failed = shared["actions"][2]
    assert isinstance(failed, ConnectionError)
    assert failed.__notes__ == ["flowfn: branch 'sports' of parallel branches 'fetch'"]


def test_branches_sharing_a_name_are_told_apart_by_position() -> None:
    @node
    def same(shared: dict[str, Any]) -> None:
        pass

    other = node(lambda shared: None, name="other")
    assert Parallel(same, other, same).branch_names() == ["same[0]", "other", "same[2]"]


@pytest.mark.anyio
async def test_item_events_of_branches_carry_the_branch_name(anyio_backend: str) -> None:
    seen: list[Event] = []
    with pytest.raises(ConnectionError):
        await briefing().run_async({}, on_event=seen.append)
    items = {(e.kind, e.item, e.branch) for e in seen if e.kind.startswith("item_")}
    assert ("item_error", 1, "weather") in items
    assert ("item_start", 0, "news") in items
    assert all(e.branch is None for e in seen if not e.kind.startswith("item_"))


def test_the_log_observer_names_the_branch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="flowfn")
    with pytest.raises(ConnectionError):
        briefing().run({}, on_event=LogObserver())
    assert any(
        r.getMessage().startswith("item_error briefing/fetch item=1 branch=weather")
        for r in caplog.records
    )


@pytest.mark.anyio
async def test_otel_spans_of_branches_are_named_by_branch(anyio_backend: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with pytest.raises(ConnectionError):
        await briefing().run_async({}, on_event=OTelObserver(provider.get_tracer("test")))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    weather = spans["branch briefing/fetch/weather"]
    assert weather.attributes is not None
    assert weather.attributes["flowfn.branch"] == "weather"
    assert weather.attributes["flowfn.item"] == 1
    assert not any(name.startswith("item briefing/fetch") for name in spans)


@pytest.mark.anyio
async def test_progress_names_the_failed_branch(anyio_backend: str) -> None:
    out = io.StringIO()
    with pytest.raises(ConnectionError):
        await briefing().run_async({}, on_event=Progress(out))
    assert "1 failed (weather)" in out.getvalue().splitlines()[-1]


# -- 21.12: progress bars show items/s, ETA, failures and retries ----------------------------


def flaky_batch(items: int = 6, fail_at: int = 4) -> Flow:
    """A parallel batch (one at a time) whose item 1 fails once and is retried, and whose
    item ``fail_at`` fails for good (the batch stops there)."""
    tried: set[int] = set()

    @parallel_batch(items=lambda shared: range(items), limit=1, retries=1)
    async def work(i: int) -> None:
        await anyio.sleep(0)
        if i == 1 and i not in tried:
            tried.add(i)
            raise OSError("once")
        if i == fail_at:
            raise ValueError(f"item {i}")

    return Flow(work)


RATE = r"\d+\.\d items/s"


@pytest.mark.anyio
async def test_text_bars_show_rate_eta_failures_and_retries(anyio_backend: str) -> None:
    screen = Terminal()
    bars = Progress(screen, per_second=1e9, renderer="text")
    with pytest.raises(ValueError, match="item 4"):
        await flaky_batch().run_async({}, on_event=bars)
    frames = screen.getvalue().replace("\n", "\r").split("\r")
    running = [f for f in frames if re.search(rf"/6 done, .*{RATE}, ETA \d+:\d\d$", f)]
    assert running  # once the first item is done, a rate and the time left
    assert any("0 failed, 1 retry" in frame for frame in running)
    last = screen.screen()[-1]
    assert re.fullmatch(rf"Flow/work:  83% 5/6 done, 1 failed, 2 retries, {RATE} \(stopped\)", last)


@pytest.mark.anyio
async def test_a_bar_before_its_first_item_shows_no_rate_and_no_eta(anyio_backend: str) -> None:
    screen = Terminal()
    bars = Progress(screen, per_second=1e9, renderer="text")
    first: list[str] = []

    @parallel_batch(items=lambda shared: range(2), limit=1)
    async def work(i: int) -> None:
        if i == 0:
            first.append(bars.line("Flow/work", bars.bars["Flow/work"]))

    await Flow(work).run_async({}, on_event=bars)
    assert first == ["Flow/work:   0% 0/2 done, 0 failed, 0 retries, ? items/s"]


@pytest.mark.anyio
async def test_rich_bars_show_rate_eta_failures_and_retries(anyio_backend: str) -> None:
    pytest.importorskip("rich")
    screen = Terminal()
    bars = Progress(screen, per_second=1e9, renderer="rich")
    with pytest.raises(ValueError, match="item 4"):
        await flaky_batch().run_async({}, on_event=bars)
    text = screen.getvalue()
    assert re.search(rf"0 failed, 1 retry +{RATE}, ETA \d+:\d\d", text)
    last = screen.screen()[-1]
    assert last.startswith("Flow/work (stopped)")
    assert re.search(rf"5/6 +1 failed, 2 retries +{RATE}$", last)


@pytest.mark.anyio
async def test_tqdm_bars_show_rate_eta_failures_and_retries(anyio_backend: str) -> None:
    pytest.importorskip("tqdm")
    screen = Terminal()
    with pytest.raises(ValueError, match="item 4"):
        await flaky_batch().run_async({}, on_event=Progress(screen, renderer="tqdm"))
    last = screen.getvalue().rsplit("\r", 1)[-1]
    assert last.startswith("Flow/work (stopped):  83%")
    # tqdm's own elapsed<ETA and rate, then flowfn's counts
    assert re.search(r"5/6 \[\d\d:\d\d<\d\d:\d\d, +\d+\.\d+ items/s, failed=1, retries=2\]", last)


@pytest.mark.anyio
async def test_retries_in_a_batch_flow_count_for_its_bar(anyio_backend: str) -> None:
    tried: set[int] = set()

    @node(retries=1)
    async def step(shared: dict[str, Any], i: int) -> None:
        if i not in tried:
            tried.add(i)
            raise OSError("once")

    @parallel_batch(flow=Flow(step), limit=2)
    def fan(shared: dict[str, Any]) -> list[dict[str, int]]:
        return [{"i": i} for i in range(3)]

    out = io.StringIO()
    await Flow(fan).run_async({}, on_event=Progress(out))
    assert out.getvalue().startswith("Flow/fan: 100% 3/3 done, 0 failed, 3 retries, ")

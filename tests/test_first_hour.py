"""What a new user stumbled on in their first hour (issue 21, and issue 20's item 20): failing
parallel branches named by name, asyncio-only code under trio, process workers in a script
without a ``__main__`` guard, the command line's ``--shared`` and error objects, and
progress bars with rate, ETA, failures and retries."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from terminal import Terminal

from flowfn import Event, Flow, LogObserver, Parallel, Progress, node, parallel_batch
from flowfn._cli import main
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

    other = node(name="other")(lambda shared: None)
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
    frames = screen.getvalue().replace("\x1b[K", "").replace("\n", "\r").split("\r")
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


# -- 21.9 and 21.10: the command line's --shared, and failures in its result JSON -----------

COLLECTING = """
from flowfn import Flow, Parallel, node, parallel_batch


class QuotaError(Exception):
    pass


@parallel_batch(items="questions", into="answers", errors="collect")
async def ask(question):
    if question == 5:
        raise ValueError(f"model refused question {question}")
    if question == 6:
        raise QuotaError("out of tokens")
    return f"answer {question}"


flow = Flow(ask)


@node
def news(shared):
    shared["news"] = "calm"


@node
def weather(shared):
    raise KeyError("weather")


branches = Flow(Parallel(news, weather, errors="collect", into="actions", name="fetch"))
"""


@pytest.fixture
def collecting(tmp_path: Path, restore_import_state: None) -> Path:
    path = tmp_path / "collecting.py"
    path.write_text(COLLECTING, encoding="utf-8")
    return path


@pytest.fixture
def restore_import_state() -> Iterator[None]:
    """Loading a TARGET puts its folder on sys.path and its module in sys.modules: undo it."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_shared_from_a_file_with_at(
    collecting: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "input.json").write_text('{"questions": [1, 2]}', encoding="utf-8")
    target = f"{collecting}:flow"
    result = run_cli(capsys, "run", target, "--shared", f"@{tmp_path / 'input.json'}")
    assert result["shared"]["answers"] == ["answer 1", "answer 2"]


def test_shared_from_standard_input_with_a_dash(collecting: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowfn", "run", f"{collecting}:flow", "--shared", "-"],
        input='{"questions": [3]}',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shared"] == {"questions": [3], "answers": ["answer 3"]}


def test_params_read_a_file_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_import_state: None
) -> None:
    (tmp_path / "greet.py").write_text(
        "from flowfn import Flow, node\n"
        "@node\n"
        "def greet(shared, greeting):\n"
        "    shared['message'] = greeting\n"
        "flow = Flow(greet)\n",
        encoding="utf-8",
    )
    (tmp_path / "params.json").write_text('{"greeting": "Hi"}', encoding="utf-8")
    target = f"{tmp_path / 'greet.py'}:flow"
    result = run_cli(capsys, "run", target, "--params", f"@{tmp_path / 'params.json'}")
    assert result["shared"] == {"message": "Hi"}


def test_a_missing_or_bad_shared_file_is_one_line_naming_it(
    collecting: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{collecting}:flow"
    assert main(["run", target, "--shared", "@nowhere.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowfn: error: --shared @nowhere.json: no file 'nowhere.json'")
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    assert main(["run", target, "--shared", f"@{tmp_path / 'bad.json'}"]) == 2
    err = capsys.readouterr().err
    assert f"--shared @{tmp_path / 'bad.json'} must be a JSON object" in err
    assert main(["run", target, "--shared", "-", "--params", "-"]) == 2
    assert "both read standard input" in capsys.readouterr().err


def test_collected_failures_are_objects_in_the_result(
    collecting: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = '{"questions": [4, 5, 6]}'
    result = run_cli(capsys, "run", f"{collecting}:flow", "--shared", shared)
    assert result["shared"]["answers"] == [
        "answer 4",
        {"error": "ValueError", "message": "model refused question 5", "node": "ask", "item": 1},
        {"error": "collecting.QuotaError", "message": "out of tokens", "node": "ask", "item": 2},
    ]


def test_a_collected_branch_failure_names_its_branch(
    collecting: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, "run", f"{collecting}:branches")
    assert result["shared"]["actions"] == [
        None,
        {
            "error": "KeyError",
            "message": "'weather'",
            "node": "fetch",
            "item": None,
            "branch": "weather",
        },
    ]


# -- 21.7: asyncio-only code under trio gets a note saying what to do, and no retries -------

ASYNCIO_HINT = "Await anyio.sleep(...)"


def asyncio_hint(exc: BaseException) -> bool:
    return any(ASYNCIO_HINT in note for note in getattr(exc, "__notes__", ()))


@pytest.mark.anyio
async def test_a_ported_node_awaiting_asyncio_sleep_under_trio(anyio_backend: str) -> None:
    from flowfn.compat import AsyncFlow, AsyncNode

    attempts: list[int] = []

    class Wait(AsyncNode):  # a PocketFlow node, ported by its import
        async def exec_async(self, prep_res: Any) -> None:
            attempts.append(self.cur_retry)
            await asyncio.sleep(0.001)

    flow = AsyncFlow(start=Wait(max_retries=3, wait=0.01))
    if anyio_backend == "asyncio":
        await flow.run_async({})  # asyncio code runs on asyncio
        assert attempts == [0]
        return
    with pytest.raises(RuntimeError, match="no running event loop") as caught:
        await flow.run_async({})
    assert attempts == [0]  # not retried: every attempt would fail the same way
    assert asyncio_hint(caught.value)
    assert "docs/compat.md" in caught.value.__notes__[0]


def test_the_hint_when_run_starts_trio_itself() -> None:
    seen: list[Event] = []

    @node(retries=3, wait=0)
    async def wait(shared: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # no loop needed: a bare yield, which trio refuses (TypeError)

    with pytest.raises(TypeError, match="unrecognized yield message") as caught:
        Flow(wait).run({}, backend="trio", on_event=seen.append)
    assert asyncio_hint(caught.value)
    assert [e.kind for e in seen if e.kind in ("retry", "fallback")] == ["fallback"]
    Flow(wait).run({}, backend="asyncio")


def test_an_asyncio_only_item_of_a_parallel_batch_gets_the_hint() -> None:
    @parallel_batch(items=lambda shared: range(3))
    async def each(i: int) -> None:
        asyncio.get_running_loop()

    with pytest.raises(RuntimeError) as caught:
        Flow(each).run({}, backend="trio")
    assert asyncio_hint(caught.value)
    assert caught.value.__notes__.count(caught.value.__notes__[0]) == 1  # the hint once


@pytest.mark.anyio
async def test_other_runtime_errors_are_retried_without_the_hint(anyio_backend: str) -> None:
    attempts: list[int] = []

    @node(retries=2, wait=0)
    async def flaky(shared: dict[str, Any]) -> None:
        attempts.append(1)
        raise RuntimeError("the service said no")

    with pytest.raises(RuntimeError, match="the service said no") as caught:
        await Flow(flaky).run_async({})
    assert len(attempts) == 3  # the first attempt and two retries
    assert not asyncio_hint(caught.value)


# -- 21.8: workers="process" in a script without `if __name__ == "__main__":` -------------

SCRIPT = """
from flowfn import Flow, parallel_batch


@parallel_batch(items=lambda shared: [1, 2, 3], into="squares", workers="process")
def square(x):
    return x * x


shared = {}
RUN
print(shared["squares"])
"""


def run_script(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_process_workers_in_a_script_without_a_main_guard_fail_at_once(tmp_path: Path) -> None:
    done = run_script(tmp_path, "squares.py", SCRIPT.replace("RUN", "Flow(square).run(shared)"))
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1  # one error, not one per worker
    assert "flowfn.FlowError: workers='process' starts fresh Python processes" in done.stderr
    assert "line 11 of it" in done.stderr
    assert 'under `if __name__ == "__main__":` at the end of squares.py' in done.stderr
    assert "flowfn: item 0 of parallel batch node 'square'" in done.stderr
    assert "BrokenProcessPool" not in done.stderr
    assert "bootstrapping phase" not in done.stderr


def test_process_workers_in_a_script_with_a_main_guard_run(tmp_path: Path) -> None:
    guarded = SCRIPT.replace("RUN", 'if __name__ == "__main__":\n    Flow(square).run(shared)')
    guarded = guarded.replace('print(shared["squares"])', '    print(shared["squares"])')
    done = run_script(tmp_path, "guarded.py", guarded)
    assert (done.returncode, done.stdout) == (0, "[1, 4, 9]\n"), done.stderr
    in_main = SCRIPT.replace("RUN", "def main():\n    Flow(square).run(shared)\n")
    in_main = in_main.replace('print(shared["squares"])', 'if "__main__" == __name__:\n    main()')
    in_main += '    print(shared["squares"])\n'
    done = run_script(tmp_path, "in_main.py", in_main)
    assert (done.returncode, done.stdout) == (0, "[1, 4, 9]\n"), done.stderr


def test_which_lines_are_under_the_main_guard(tmp_path: Path) -> None:
    from flowfn._workers.processes import _under_main_guard

    script = tmp_path / "script.py"
    script.write_text(
        "import os\n"  # 1
        "run()\n"  # 2
        "if __name__ == '__main__':\n"  # 3
        "    try:\n"  # 4
        "        run()\n"  # 5
        "    finally:\n"  # 6
        "        pass\n"  # 7
        "else:\n"  # 8
        "    run()\n"  # 9
        "with open(os.devnull) as f:\n"  # 10
        "    if __name__ == '__main__':\n"  # 11
        "        run()\n",  # 12
        encoding="utf-8",
    )
    guarded = {line: _under_main_guard(str(script), line) for line in (2, 5, 7, 9, 12)}
    assert guarded == {2: False, 5: True, 7: True, 9: False, 12: True}
    assert _under_main_guard(str(tmp_path / "gone.py"), 1) is None


# -- 20.20: a dead process worker fails each job in flight with an exception of its own ------


@parallel_batch(items="codes", workers="process")
def dies(code: int) -> None:
    """Kills the worker process that runs it."""
    os._exit(code)


@pytest.mark.anyio
async def test_jobs_failed_by_one_dead_worker_get_exceptions_of_their_own(
    anyio_backend: str,
) -> None:
    """The executor sets one BrokenProcessPool on every job in flight, as here."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from flowfn._workers.processes import _wait

    shared_by_all = BrokenProcessPool("A process in the process pool was terminated abruptly")
    jobs: list[Future[Any]] = [Future(), Future()]
    for job in jobs:
        job.set_exception(shared_by_all)
    raised = []
    for job in jobs:
        with pytest.raises(BrokenProcessPool) as caught:
            await _wait(job)
        raised.append(caught.value)
    assert raised[0] is not raised[1]
    assert all(exc is not shared_by_all and exc.__cause__ is shared_by_all for exc in raised)
    assert str(raised[0]) == str(shared_by_all)
    raised[0].add_note("flowfn: item 0 of parallel batch node 'left'")
    assert getattr(raised[1], "__notes__", []) == []  # another flow's notes stay its own


def test_a_dead_worker_fails_its_job_with_a_broken_pool_error_of_its_own() -> None:
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool) as caught:
        Flow(dies).run({"codes": [1]})
    assert isinstance(caught.value.__cause__, BrokenProcessPool)  # the pool's, chained
    assert caught.value.__notes__[0] == "flowfn: item 0 of parallel batch node 'dies'"
    shared: dict[str, Any] = {}
    Flow(square_in_process).run(shared)  # the next job gets a new pool
    assert shared["squares"] == [1, 4]


@parallel_batch(items=lambda shared: [1, 2], into="squares", workers="process")
def square_in_process(x: int) -> int:
    return x * x

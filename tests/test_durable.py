"""Durable runs: checkpoints in a real SQLite file, resumed after SIGKILL, exceptions and in
other processes, on asyncio and trio."""

from __future__ import annotations

import json
import pickle
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowfn import (
    AsyncFlow,
    Event,
    Flow,
    FlowError,
    JSONSerializer,
    SQLiteStore,
    batch,
    node,
    parallel_batch,
)

CHILD = Path(__file__).with_name("durable_child.py")
CALLS = 27  # start, 12 squares, 12 cubes, add, double
EXPECTED = {
    "n": 12,
    "squares": [i * i for i in range(12)],
    "cubes": {str(i): i**3 for i in range(12)},
    "sum": sum(i * i for i in range(12)) + sum(i**3 for i in range(12)),
}
EXPECTED["double"] = EXPECTED["sum"] * 2
backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


def child(tmp: Path, backend: str, *extra: str, run_id: str = "run-1", wait: bool = True) -> Any:
    command = [
        sys.executable, str(CHILD), str(tmp / "runs.db"), run_id, str(tmp / "calls.log"),
        backend, *extra,
    ]  # fmt: skip
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def calls(tmp: Path) -> list[str]:
    path = tmp / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def recorded(tmp: Path) -> set[str]:
    """What the checkpoint holds as finished: step node names and batch items."""
    with sqlite3.connect(tmp / "runs.db") as db:
        steps = {row[0] for row in db.execute("SELECT node FROM steps WHERE done=1")}
        chunks = db.execute("SELECT batch, results FROM items").fetchall()
    done = {name for name in ("start", "add", "double") if name in steps}
    for name, kind in (("square", "square"), ("cubes", "cube")):
        if name in steps:  # a finished batch step: every item of it is done
            done |= {f"{kind} {i}" for i in range(12)}
    for place, results in chunks:  # the batch's place: step 1 is square, step 2 cubes
        for item in pickle.loads(results)[0]:
            done.add(f"{'square' if json.loads(place) == [1] else 'cube'} {item}")
    return done


# -- killed, then resumed in a new process ---------------------------------------------


def killed_then_resumed(tmp: Path, backend: str, kill_at: int) -> None:
    first = child(tmp, backend, "--kill-at", str(kill_at))
    assert first.returncode == -9, first.stdout + first.stderr
    before = calls(tmp)
    assert len(before) == kill_at
    done_at_kill = recorded(tmp)

    second = child(tmp, backend)
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout) == EXPECTED  # what an uninterrupted run gives
    counts = Counter(calls(tmp))
    # Every call happened, none more than twice, and nothing recorded ran again.
    assert set(counts) == {"start", "add", "double"} | {
        f"{kind} {i}" for kind in ("square", "cube") for i in range(12)
    }
    assert max(counts.values()) <= 2
    for name in done_at_kill:
        assert counts[name] == 1, f"{name} was recorded, yet ran again"


@backends
@pytest.mark.parametrize(
    "kill_at",
    [6, 20, 26],  # in the parallel batch; in the batch flow's runs; in the last step
)
def test_a_run_killed_with_sigkill_resumes_without_redoing_recorded_work(
    tmp_path: Path, backend: str, kill_at: int
) -> None:
    killed_then_resumed(tmp_path, backend, kill_at)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kill_at=st.integers(min_value=1, max_value=CALLS), backend=st.sampled_from(["asyncio", "trio"])
)
def test_any_kill_point_resumes_to_the_uninterrupted_result(
    tmp_path_factory: pytest.TempPathFactory, kill_at: int, backend: str
) -> None:
    killed_then_resumed(tmp_path_factory.mktemp("kill"), backend, kill_at)


@backends
def test_an_exception_stops_the_run_and_running_again_resumes_it(
    tmp_path: Path, backend: str
) -> None:
    failed = child(tmp_path, backend, "--fail-at", "22")  # in the batch flow's runs
    assert failed.returncode == 1
    assert "RuntimeError: failed at call 22" in failed.stdout
    done = recorded(tmp_path)
    assert {"start"} | {f"square {i}" for i in range(12)} <= done

    resumed = child(tmp_path, backend)
    assert json.loads(resumed.stdout) == EXPECTED
    counts = Counter(calls(tmp_path))
    assert counts["start"] == 1
    assert all(counts[f"square {i}"] == 1 for i in range(12))

    again = child(tmp_path, backend)  # a finished run: nothing runs, same result
    assert json.loads(again.stdout) == EXPECTED
    assert Counter(calls(tmp_path)) == counts


def test_two_processes_resuming_one_run_one_proceeds_the_other_is_refused(
    tmp_path: Path,
) -> None:
    slow = child(tmp_path, "asyncio", "--slow", wait=False)
    deadline = time.monotonic() + 60
    while not any(c.startswith("square") for c in calls(tmp_path)):
        assert time.monotonic() < deadline, "the first process never started its items"
        time.sleep(0.05)
    second = child(tmp_path, "trio")
    assert second.returncode == 1
    assert "FlowError: run 'run-1'" in second.stdout
    assert "is running in another process" in second.stdout
    (tmp_path / "release").touch()
    out, _ = slow.communicate(timeout=120)
    assert slow.returncode == 0
    assert json.loads(out) == EXPECTED
    other = child(tmp_path, "trio", run_id="run-2")  # another run of the same file: free
    assert json.loads(other.stdout) == EXPECTED


# -- in this process ----------------------------------------------------------------------


def build(log: list[str], fail: set[str]) -> Flow:
    @node
    def load(shared: dict[str, Any]) -> None:
        log.append("load")
        shared["docs"] = ["a", "bb", "ccc", "dddd"]

    @batch(items="docs", into="lengths")
    def length(doc: str) -> int:
        log.append(f"length {doc}")
        if doc in fail:
            raise ValueError(f"cannot measure {doc}")
        return len(doc)

    @node
    async def report(shared: dict[str, Any]) -> str:
        log.append("report")
        shared["report"] = f"{sum(shared['lengths'])} letters"
        return "done"

    load >> length >> report
    return Flow(load)


@pytest.mark.anyio
async def test_a_sequential_batch_resumes_at_its_first_unfinished_item(tmp_path: Path) -> None:
    log: list[str] = []
    fail = {"ccc"}
    flow = build(log, fail)
    with pytest.raises(ValueError, match="cannot measure ccc") as caught:
        await flow.run_async({}, checkpoint=tmp_path / "runs.db", run_id="a")
    assert "run again with run_id='a' to resume it" in caught.value.__notes__[-1]
    assert log == ["load", "length a", "length bb", "length ccc"]

    fail.clear()
    seen: list[Event] = []
    shared: dict[str, Any] = {}
    action = await flow.run_async(
        shared, checkpoint=tmp_path / "runs.db", run_id="a", on_event=seen.append
    )
    assert action == "done"
    assert log[4:] == ["length ccc", "length dddd", "report"]
    assert shared == {"docs": ["a", "bb", "ccc", "dddd"], "lengths": [1, 2, 3, 4],
                      "report": "10 letters"}  # fmt: skip
    # Resumed items still count, so progress bars reach the end.
    assert sorted(e.item for e in seen if e.kind == "item_end") == [0, 1, 2, 3]


@pytest.mark.anyio
async def test_nested_flows_resume_inside_the_inner_flow(tmp_path: Path) -> None:
    log: list[str] = []
    broken = {"yes"}

    @node
    def one(shared: dict[str, Any]) -> None:
        log.append("one")

    @node
    def two(shared: dict[str, Any]) -> None:
        log.append("two")
        if broken:
            raise OSError("disk full")
        shared["two"] = True

    @node
    def three(shared: dict[str, Any]) -> None:
        log.append("three")

    @node
    def first(shared: dict[str, Any]) -> None:
        log.append("first")

    one >> two >> three
    inner = Flow(one)
    first >> inner
    outer = AsyncFlow(first)
    with pytest.raises(OSError, match="disk full"):
        await outer.run_async({}, checkpoint=tmp_path / "runs.db", run_id="n")
    broken.clear()
    shared: dict[str, Any] = {}
    await outer.run_async(shared, checkpoint=tmp_path / "runs.db", run_id="n")
    assert log == ["first", "one", "two", "two", "three"]
    assert shared == {"two": True}
    steps = SQLiteStore(tmp_path / "runs.db").steps("n")
    assert [(position, name) for _, position, name, _, _ in steps] == [
        ((0,), "first"), ((1, 0), "one"), ((1, 1), "two"), ((1, 2), "three"), ((1,), "Flow"),
    ]  # fmt: skip


@pytest.mark.anyio
async def test_a_new_run_id_starts_afresh_and_runs_are_listed(tmp_path: Path) -> None:
    log: list[str] = []
    flow = build(log, set())
    db = tmp_path / "runs.db"
    await flow.run_async({}, checkpoint=db, run_id="first")
    await flow.run_async({}, checkpoint=db, run_id="second")
    assert log.count("load") == 2
    runs = SQLiteStore(db).runs()
    assert [(r.run_id, r.status, r.steps, r.flow) for r in runs] == [
        ("first", "done", 3, "Flow"),
        ("second", "done", 3, "Flow"),
    ]


def test_a_checkpoint_of_another_flow_shape_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    build([], set()).run({}, checkpoint=db, run_id="x")

    @node
    def other(shared: dict[str, Any]) -> None:
        shared["touched"] = True

    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match="made by a flow of another shape"):
        Flow(other).run(shared, checkpoint=db, run_id="x")
    assert shared == {}  # nothing half-applied


def test_resuming_with_another_input_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    flow = build([], {"a"})
    with pytest.raises(ValueError, match="cannot measure a"):
        flow.run({"user": 1}, checkpoint=db, run_id="x")
    with pytest.raises(FlowError, match="started from another shared store"):
        flow.run({"user": 2}, checkpoint=db, run_id="x")


def test_corrupt_and_foreign_files_are_refused(tmp_path: Path) -> None:
    flow = build([], set())
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(FlowError, match="is not a flowfn checkpoint: SQLite cannot read it"):
        flow.run({}, checkpoint=garbage)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(
        FlowError, match=r"SQLite database of something else \(tables \['invoices'\]"
    ):
        flow.run({}, checkpoint=foreign)
    with sqlite3.connect(foreign) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]


def test_a_value_that_cannot_be_saved_names_the_key_and_node(tmp_path: Path) -> None:
    handle = (tmp_path / "f").open("w")

    @node
    def opens(shared: dict[str, Any]) -> None:
        shared["fine"] = 1
        shared["handle"] = handle

    with (
        handle,
        pytest.raises(
            FlowError, match=r"node 'opens': shared\['handle'\] \(TextIOWrapper\) cannot be saved"
        ),
    ):
        Flow(opens).run({}, checkpoint=tmp_path / "runs.db")


def test_the_json_serializer_saves_plain_data(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db", serializer=JSONSerializer())
    log: list[str] = []
    fail = {"dddd"}
    flow = build(log, fail)
    with pytest.raises(ValueError, match="cannot measure dddd"):
        flow.run({}, checkpoint=store, run_id="j")
    fail.clear()
    shared: dict[str, Any] = {}
    flow.run(shared, checkpoint=store, run_id="j")
    assert shared["lengths"] == [1, 2, 3, 4]
    assert log.count("length a") == 1
    with pytest.raises(FlowError, match="saved with the 'json' serializer"):
        flow.run({}, checkpoint=tmp_path / "runs.db", run_id="j")  # pickle by default


def test_bad_arguments_are_refused() -> None:
    flow = build([], set())
    with pytest.raises(TypeError, match="pass checkpoint= too"):
        flow.run({}, run_id="x")
    with pytest.raises(TypeError, match="needs a dict-like shared store"):
        flow.run([], checkpoint="unused.db")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="checkpoint= must be a file path"):
        flow.run({}, checkpoint=42)


@pytest.mark.anyio
async def test_a_parallel_batch_flow_keeps_each_finished_run(tmp_path: Path) -> None:
    ran: list[int] = []
    broken = {5}

    @node
    async def work(shared: dict[str, Any], i: int) -> None:
        ran.append(i)
        if i in broken:
            raise KeyError("five")
        await anyio.sleep(0.001 * (i % 3))
        shared["out"][str(i)] = i * 10

    @parallel_batch(flow=Flow(work), limit=2)
    def fan(shared: dict[str, Any]) -> list[dict[str, int]]:
        shared.setdefault("out", {})
        return [{"i": i} for i in range(8)]

    db = tmp_path / "runs.db"
    with pytest.raises(KeyError):
        await Flow(fan).run_async({}, checkpoint=db, run_id="p")
    first = list(ran)
    broken.clear()
    shared: dict[str, Any] = {}
    await Flow(fan).run_async(shared, checkpoint=db, run_id="p")
    assert shared["out"] == {str(i): i * 10 for i in range(8)}
    again = Counter(ran[len(first) :])
    assert 5 in again
    # A run recorded as finished did not run again (runs 0 and 1 finished before 5 failed).
    assert again[0] == 0


# -- the command line ---------------------------------------------------------------------

FLAKY = """
from pathlib import Path

from flowfn import Flow, batch, node

HERE = Path(__file__).parent


@node
def start(shared):
    shared["n"] = 3


@batch(items=lambda shared: range(shared["n"]), into="out")
def work(i):
    with (HERE / "calls.log").open("a") as log:
        log.write(f"{i}\\n")
    if i == 2 and (HERE / "broken").exists():
        raise RuntimeError("broken at 2")
    return i * 10


start >> work
flow = Flow(start)
"""


def flowfn(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowfn", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_list_show_and_resume_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "broken").touch()
    failed = flowfn(tmp_path, "run", "flaky.py:flow", "--checkpoint", "runs.db", "--run-id", "r1")
    assert failed.returncode == 1
    assert "RuntimeError: broken at 2" in failed.stderr
    assert "run again with run_id='r1' to resume it" in failed.stderr

    listed = flowfn(tmp_path, "runs", "list", "runs.db")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1].startswith("r1      failed ")
    assert listed.stdout.rstrip().endswith("RuntimeError: broken at 2")

    shown = flowfn(tmp_path, "runs", "show", "runs.db", "r1")
    lines = shown.stdout.splitlines()
    # The batch's node and item count come from the record written as it starts.
    assert lines[4] == "  batch 1       work: 2 of 3 items recorded"
    assert lines == [
        lines[0],
        "target: flaky.py:flow (serializer pickle, backend asyncio, durability async)",
        "error: RuntimeError: broken at 2",
        "  step 0        start -> default",
        lines[4],
        "resume with: flowfn runs resume runs.db r1 --target flaky.py:flow --serializer pickle "
        "--backend asyncio --durability async",
    ]
    assert shown.stdout.startswith("run r1: failed, flow Flow, started ")

    (tmp_path / "broken").unlink()
    resumed = flowfn(tmp_path, "runs", "resume", "runs.db", "r1", "--backend", "trio", "--trust")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"action": None, "shared": {"n": 3, "out": [0, 10, 20]}}
    assert (tmp_path / "calls.log").read_text().split() == ["0", "1", "2", "2"]

    missing = flowfn(tmp_path, "runs", "show", "runs.db", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "flowfn: error: no run 'nope' in 'runs.db' (its runs: r1)"
    absent = flowfn(tmp_path, "runs", "list", "other.db")
    assert absent.stderr.startswith("flowfn: error: no checkpoint file 'other.db'")


# -- caching --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cached_results_are_reused_by_later_runs_per_item(tmp_path: Path) -> None:
    from flowfn import Cache

    asked: list[str] = []

    @parallel_batch(items="words", into="upper", cache=Cache(ttl=3600))
    async def shout(word: str) -> str:
        asked.append(word)
        await anyio.sleep(0)
        return word.upper()

    db = tmp_path / "runs.db"
    first: dict[str, Any] = {"words": ["a", "b", "a"]}
    await Flow(shout).run_async(first, checkpoint=db, run_id="one")
    assert first["upper"] == ["A", "B", "A"]
    assert sorted(asked) in (["a", "a", "b"], ["a", "b"])  # a may be asked twice at once
    asked.clear()
    second: dict[str, Any] = {"words": ["b", "c", "a"]}
    await Flow(shout).run_async(second, checkpoint=db, run_id="two")
    assert second["upper"] == ["B", "C", "A"]
    assert asked == ["c"]  # only the new word was asked for

    asked.clear()
    third: dict[str, Any] = {"words": ["b"]}
    await Flow(shout).run_async(third)  # no checkpoint: no store to cache in
    assert asked == ["b"]


def test_a_cache_key_function_and_time_to_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowfn._durable.cache
    from flowfn import Cache

    now = [1000.0]
    monkeypatch.setattr(flowfn._durable.cache.time, "time", lambda: now[0])
    fetched: list[str] = []
    failing = {"boom"}

    @batch(
        items="urls",
        into="pages",
        cache=Cache(key=lambda url: None if url == "skip" else url.lower(), ttl=60),
    )
    def fetch(url: str) -> str:
        fetched.append(url)
        if url in failing:
            raise ConnectionError(url)
        return f"<{url.lower()}>"

    @fetch.fallback
    def offline(url: str, exc: Exception) -> str:
        return "offline"

    db = tmp_path / "runs.db"

    def run(urls: list[str], run_id: str) -> list[str]:
        shared: dict[str, Any] = {"urls": urls}
        Flow(fetch).run(shared, checkpoint=db, run_id=run_id)
        return list(shared["pages"])

    assert run(["A", "skip", "boom"], "1") == ["<a>", "<skip>", "offline"]
    failing.clear()
    assert run(["a", "skip", "boom"], "2") == ["<a>", "<skip>", "<boom>"]
    assert fetched == ["A", "skip", "boom", "skip", "boom"]  # 'a' came from the cache
    now[0] += 61  # past the time to live
    assert run(["a"], "3") == ["<a>"]
    assert fetched[-1] == "a"


def test_bad_cache_options_are_refused() -> None:
    from flowfn import Cache

    with pytest.raises(TypeError, match=r"cache= takes True or flowfn\.Cache"):
        node(cache="yes")(lambda shared: None)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"Cache\(ttl=...\) must be a number of seconds > 0"):
        Cache(ttl=0)
    with pytest.raises(AttributeError, match="Cache is immutable"):
        Cache().ttl = 5  # type: ignore[misc]


# -- pausing for input ----------------------------------------------------------------------

APPROVAL = """
import json, sys
from flowfn import Flow, Paused, ask, node

@node
def draft(shared):
    shared["draft"] = "Dear team, ..."

@node(retries=2)
def approve(shared):
    verdict = ask({"question": "send this?", "draft": shared["draft"]})
    shared["sent"] = verdict == "yes"

@approve.fallback
def not_sent(shared, exc):
    raise AssertionError("a pause is not a failure")

draft >> approve
flow = Flow(draft)

if __name__ == "__main__":
    answers = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    shared = {}
    result = flow.run(shared, checkpoint=sys.argv[1], run_id="mail", answers=answers)
    if isinstance(result, Paused):
        q = result.questions[0]
        out = {"paused": result.run_id, "id": q.id, "payload": q.payload, "node": q.node}
        print(json.dumps(out))
    else:
        print(json.dumps(shared))
"""


def test_a_step_pauses_and_another_process_resumes_it_with_the_answer(tmp_path: Path) -> None:
    script = tmp_path / "approval.py"
    script.write_text(APPROVAL)
    db = str(tmp_path / "runs.db")

    def run(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, str(script), db, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    paused = run()
    assert paused["paused"] == "mail"
    assert paused["payload"] == {"question": "send this?", "draft": "Dear team, ..."}
    assert paused["node"] == "approve"
    assert run() == paused  # no answer yet: it asks again
    assert SQLiteStore(db).runs()[0].status == "paused"
    done = run(json.dumps({paused["id"]: "yes"}))
    assert done == {"draft": "Dear team, ...", "sent": True}


@pytest.mark.anyio
async def test_items_of_a_batch_pause_independently(tmp_path: Path) -> None:
    from flowfn import Paused, ask

    ran: list[int] = []

    @parallel_batch(items="xs", into="out", limit=4)
    async def check(x: int) -> str:
        ran.append(x)
        await anyio.sleep(0)
        if x % 3 == 1:
            return f"{x}:{ask(f'is {x} fine?')}"
        return f"{x}:auto"

    db = tmp_path / "runs.db"
    result = await Flow(check).run_async({"xs": list(range(6))}, checkpoint=db, run_id="b")
    assert isinstance(result, Paused)
    assert sorted((q.item, q.payload, q.node) for q in result.questions) == [
        (1, "is 1 fine?", "check"),
        (4, "is 4 fine?", "check"),
    ]
    assert sorted(ran) == [0, 1, 2, 3, 4, 5]
    answers = {q.id: "ok" if q.item == 1 else "no" for q in result.questions}
    ran.clear()
    shared: dict[str, Any] = {}
    await Flow(check).run_async(shared, checkpoint=db, run_id="b", answers=answers)
    assert shared["out"] == ["0:auto", "1:ok", "2:auto", "3:auto", "4:no", "5:auto"]
    assert sorted(ran) == [1, 4]  # the others were recorded before the pause


def test_ask_outside_a_durable_run_says_what_to_do() -> None:
    from flowfn import ask

    @node
    def needs_input(shared: dict[str, Any]) -> None:
        ask("continue?")

    with pytest.raises(FlowError, match=r"run the flow with checkpoint="):
        Flow(needs_input).run({})


def test_a_paused_run_is_answered_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "approval.py").write_text(APPROVAL)
    first = flowfn(tmp_path, "run", "approval.py:flow", "--checkpoint", "runs.db", "--run-id", "m")
    paused = json.loads(first.stdout)
    assert paused["paused"] == "m"
    (question,) = paused["questions"]
    assert question["node"] == "approve"
    assert question["question"] == {"question": "send this?", "draft": "Dear team, ..."}
    shown = flowfn(tmp_path, "runs", "show", "runs.db", "m")
    assert "run m: paused" in shown.stdout
    assert f"  question {question['id']} (approve): " in shown.stdout
    assert (
        "waiting for answers: flowfn runs resume runs.db m --target approval.py:flow "
        "--serializer pickle --backend asyncio --durability async --answers" in shown.stdout
    )
    answer = json.dumps({question["id"]: "yes"})
    done = flowfn(tmp_path, "runs", "resume", "runs.db", "m", "--answers", answer, "--trust")
    assert json.loads(done.stdout)["shared"] == {"draft": "Dear team, ...", "sent": True}


@pytest.mark.anyio
async def test_runs_of_a_batch_flow_pause_independently(tmp_path: Path) -> None:
    from flowfn import Paused, ask

    ran: list[str] = []

    @node
    async def review(shared: dict[str, Any], name: str) -> None:
        ran.append(name)
        verdict = ask(f"publish {name}?") if name.startswith("draft") else "auto"
        shared["verdicts"][name] = verdict

    @parallel_batch(flow=Flow(review), limit=2)
    def each_page(shared: dict[str, Any]) -> list[dict[str, str]]:
        shared.setdefault("verdicts", {})
        return [{"name": n} for n in ("home", "draft-a", "about", "draft-b")]

    db = tmp_path / "runs.db"
    paused = await Flow(each_page).run_async({}, checkpoint=db, run_id="pages")
    assert isinstance(paused, Paused)
    assert sorted((q.item, q.payload) for q in paused.questions) == [
        (1, "publish draft-a?"),
        (3, "publish draft-b?"),
    ]
    ran.clear()
    shared: dict[str, Any] = {}
    answers = {q.id: q.payload.endswith("a?") for q in paused.questions}
    await Flow(each_page).run_async(shared, checkpoint=db, run_id="pages", answers=answers)
    assert shared["verdicts"] == {
        "home": "auto",
        "about": "auto",
        "draft-a": True,
        "draft-b": False,
    }
    assert sorted(ran) == ["draft-a", "draft-b"]


def test_a_checkpoint_of_another_format_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    build([], set()).run({}, checkpoint=db, run_id="x")
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE meta SET value='999' WHERE key='format'")
    with pytest.raises(FlowError, match="written in checkpoint format 999, and this flowfn reads"):
        build([], set()).run({}, checkpoint=db, run_id="x")


# -- what the review found ------------------------------------------------------------------


@pytest.mark.anyio
async def test_items_that_write_shared_keep_their_writes_on_resume(tmp_path: Path) -> None:
    broken = {4}

    @batch(items="xs", into="out")
    def log(x: int, shared: dict[str, Any]) -> int:
        if x in broken:
            raise ValueError(f"item {x}")
        shared["log"].append(x)
        return x

    @node
    def start(shared: dict[str, Any]) -> None:
        shared["log"] = []

    start >> log
    db = tmp_path / "runs.db"
    with pytest.raises(ValueError, match="item 4"):
        await Flow(start).run_async({"xs": list(range(6))}, checkpoint=db, run_id="w")
    broken.clear()
    shared: dict[str, Any] = {}
    await Flow(start).run_async(shared, checkpoint=db, run_id="w")
    assert shared["log"] == [0, 1, 2, 3, 4, 5]
    assert shared["out"] == [0, 1, 2, 3, 4, 5]


def test_a_flow_with_its_own_walk_is_recorded_as_a_whole(tmp_path: Path) -> None:
    from flowfn import BatchNode

    broken = {"yes"}

    class Letters(BatchNode):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def prep(self, shared: dict[str, Any]) -> list[int]:
            return [1, 2, 3]

        def exec(self, i: int) -> str:
            if self.tag == "B" and broken:
                raise RuntimeError("B fails")
            return f"{self.tag}{i}"

        def post(self, shared: dict[str, Any], p: Any, e: list[str]) -> None:
            shared[self.tag] = e

    class Custom(Flow):
        def _orch(self, shared: Any, params: Any = None) -> Any:  # PocketFlow's hook
            return super()._orch(shared, params)

    a = Letters("A")
    a >> Letters("B")
    db = tmp_path / "runs.db"
    with pytest.raises(RuntimeError, match="B fails"):
        Custom(a).run({}, checkpoint=db, run_id="c")
    broken.clear()
    shared: dict[str, Any] = {}
    Custom(a).run(shared, checkpoint=db, run_id="c")
    assert shared == {"A": ["A1", "A2", "A3"], "B": ["B1", "B2", "B3"]}


def test_cache_refuses_a_function_that_reads_shared_without_a_key() -> None:
    from flowfn import Cache

    with pytest.raises(TypeError, match="reads 'shared', which the key cannot see"):
        node(cache=True)(lambda shared: None)

    @node(cache=Cache(key=lambda: "fixed"))
    def summary(shared: dict[str, Any]) -> None:  # with a key: its author's choice
        pass


@pytest.mark.anyio
async def test_a_pause_inside_a_collecting_batch_of_a_batch_flow_is_not_collected(
    tmp_path: Path,
) -> None:
    from flowfn import Paused, ask

    @parallel_batch(items=lambda shared: [1, 2], into="inner", errors="collect")
    def checks(x: int, name: str) -> str:
        return f"{name}{x}:{ask(f'ok {name}?')}" if name == "b" else f"{name}{x}"

    @parallel_batch(flow=Flow(checks), limit=2)
    def each(shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"name": "a"}, {"name": "b"}]

    result = await Flow(each).run_async({}, checkpoint=tmp_path / "runs.db", run_id="p")
    assert isinstance(result, Paused)
    assert [(q.payload, q.item) for q in result.questions] == [("ok b?", 1)]


@pytest.mark.anyio
async def test_a_stray_cancellation_in_a_durable_step_is_an_error(
    tmp_path: Path, anyio_backend: str
) -> None:
    if anyio_backend != "asyncio" or sys.version_info < (3, 11):
        pytest.skip("asyncio futures (3.11+ tells who cancelled): trio has no such thing")
    import asyncio

    @node
    async def waits(shared: dict[str, Any]) -> None:
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        await future

    with pytest.raises(FlowError, match="node 'waits'"):
        await Flow(waits).run_async({}, checkpoint=tmp_path / "runs.db", run_id="s")


def test_running_a_finished_run_again_gives_its_final_store_and_result(tmp_path: Path) -> None:
    class Reporting(Flow):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["report"] = "written by post"
            return 42

    @node
    def one(shared: dict[str, Any]) -> None:
        shared["one"] = 1

    db = tmp_path / "runs.db"
    first: dict[str, Any] = {}
    assert Reporting(one).run(first, checkpoint=db, run_id="f") == 42
    again: dict[str, Any] = {}
    assert Reporting(one).run(again, checkpoint=db, run_id="f") == 42
    assert again == first == {"one": 1, "report": "written by post"}

    class Unsaveable(Flow):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            return lambda: None  # a result pickle cannot save

    Unsaveable(one).run({}, checkpoint=db, run_id="u")
    with pytest.raises(FlowError, match="could not be saved, so it cannot be given again"):
        Unsaveable(one).run({}, checkpoint=db, run_id="u")


def test_json_refuses_keys_it_would_change_and_a_pause_payload_that_cannot_be_saved(
    tmp_path: Path,
) -> None:
    from flowfn import Paused, ask

    with pytest.raises(TypeError, match="JSON keys must be str, got int 1"):
        JSONSerializer().dumps({"a": {1: "x"}})

    @node
    def asks(shared: dict[str, Any]) -> None:
        shared["answer"] = ask({"lock": object()})  # a payload pickle cannot save

    store = SQLiteStore(tmp_path / "runs.db", serializer=JSONSerializer())
    paused = Flow(asks).run({}, checkpoint=store, run_id="j")
    assert isinstance(paused, Paused)
    assert SQLiteStore(tmp_path / "runs.db").runs()[0].status == "paused"
    shared: dict[str, Any] = {}
    answers = {paused.questions[0].id: "yes"}
    Flow(asks).run(shared, checkpoint=store, run_id="j", answers=answers)
    assert shared == {"answer": "yes"}


@pytest.mark.anyio
async def test_each_cache_hit_is_a_copy(tmp_path: Path) -> None:
    @parallel_batch(items="xs", into="out", cache=True, limit=1)
    def box(x: int) -> dict[str, int]:
        return {"x": x}

    shared: dict[str, Any] = {"xs": [1, 1]}
    await Flow(box).run_async(shared, checkpoint=tmp_path / "runs.db", run_id="c")
    shared["out"][0]["x"] = 99
    assert shared["out"][1] == {"x": 1}


@pytest.mark.anyio
async def test_a_resumed_run_reports_what_it_skips(tmp_path: Path) -> None:
    log: list[str] = []
    fail = {"ccc"}
    flow = build(log, fail)
    db = tmp_path / "runs.db"
    with pytest.raises(ValueError, match="cannot measure ccc"):
        await flow.run_async({}, checkpoint=db, run_id="e")
    fail.clear()
    seen: list[Event] = []
    await flow.run_async({}, checkpoint=db, run_id="e", on_event=seen.append)
    kinds = [(e.kind, e.node) for e in seen]
    # It goes back into the batch 'length' (its start is recorded), with no action yet.
    assert kinds[:3] == [("run_start", "Flow"), ("resume", "Flow"), ("step_skipped", "length")]
    assert [e.action for e in seen if e.kind == "step_skipped"] == [None]

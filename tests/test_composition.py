"""Composition asks from users of this kind of library (issue 13): batch flows that pull
async iterables, and into= nodes re-visited by a loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowfn import (
    AsyncFlow,
    AsyncParallelBatchFlow,
    BatchFlow,
    Flow,
    FlowError,
    node,
    parallel_batch,
)


@pytest.mark.anyio
async def test_batch_flows_pull_async_iterables_lazily() -> None:
    pulled: list[int] = []
    done: list[int] = []

    @node
    async def square(shared: dict[str, Any], n: int) -> None:
        await anyio.sleep(0.001)
        shared["squares"][n] = n * n
        done.append(n)

    async def numbers() -> AsyncIterator[dict[str, int]]:
        for n in range(12):
            pulled.append(n)
            assert len(pulled) - len(done) <= 3 + 1  # never more than limit ahead
            yield {"n": n}

    @parallel_batch(flow=Flow(square), limit=3)
    def fan(shared: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
        shared["squares"] = {}
        return numbers()

    shared: dict[str, Any] = {}
    await AsyncFlow(fan).run_async(shared)
    assert shared["squares"] == {n: n * n for n in range(12)}

    class Pages(AsyncParallelBatchFlow):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            shared["squares"] = {}
            return numbers()

    pulled.clear()
    done.clear()
    classy: dict[str, Any] = {}
    await Pages(square, limit=3).run_async(classy)
    assert classy["squares"] == shared["squares"]


def test_a_sync_batch_flow_refuses_an_async_iterable_clearly() -> None:
    async def params() -> AsyncIterator[dict[str, int]]:
        yield {"n": 1}

    class Sync(BatchFlow):
        def prep(self, shared: dict[str, Any]) -> Any:
            return params()

    @node
    def noop(shared: dict[str, Any]) -> None:
        pass

    with pytest.raises(TypeError, match="a sync batch flow cannot pull"):
        Sync(noop).run({})


@pytest.mark.anyio
async def test_an_into_node_in_a_loop_replaces_its_own_value_only() -> None:
    @node(into="guess")
    def guess(shared: dict[str, Any]) -> int:
        shared["tries"] = shared.get("tries", 0) + 1
        return shared["tries"] * 10

    @node
    def check(shared: dict[str, Any]) -> str:
        return "done" if shared["guess"] >= 30 else "again"

    guess >> check
    check - "again" >> guess
    check - "done" >> None
    shared: dict[str, Any] = {}
    await AsyncFlow(guess).run_async(shared)
    assert shared == {"tries": 3, "guess": 30}

    with pytest.raises(FlowError, match=r"shared\['guess'\] already exists"):
        await AsyncFlow(guess).run_async({"guess": 5})  # the user's value stays protected

    @node(into="guess")
    def first(shared: dict[str, Any]) -> int:
        return 1

    @node(into="guess")
    def other(shared: dict[str, Any]) -> int:
        return 99

    first >> other  # another node writing the same key is still refused
    with pytest.raises(FlowError, match=r"node 'other': shared\['guess'\] already exists"):
        await Flow(first).run_async({})


@pytest.mark.anyio
async def test_into_and_post_together_post_branches_on_the_stored_value() -> None:
    @node(into="score")
    def score(shared: dict[str, Any]) -> int:
        return len(shared["text"])

    @score.post
    def route(shared: dict[str, Any], prep_res: Any, value: int) -> str:
        assert shared["score"] == value
        return "long" if value > 5 else "short"

    @node
    def long(shared: dict[str, Any]) -> None:
        shared["kind"] = "long"

    @node
    def short(shared: dict[str, Any]) -> None:
        shared["kind"] = "short"

    score - "long" >> long
    score - "short" >> short
    shared = {"text": "hello world"}
    await Flow(score).run_async(shared)
    assert shared == {"text": "hello world", "score": 11, "kind": "long"}


# -- one limit shared across nodes and flows ------------------------------------------------


class InFlight:
    def __init__(self) -> None:
        self.now = self.most = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await anyio.sleep(seconds)
        finally:
            self.now -= 1


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["flowfn", "anyio"])
async def test_one_limiter_bounds_every_node_it_is_given_to(kind: str) -> None:
    from flowfn import AsyncParallelBatchNode, Limiter

    api = Limiter(3, name="api") if kind == "flowfn" else anyio.CapacityLimiter(3)
    seen = InFlight()

    @parallel_batch(items="xs", into="a", limit=10, limiter=api)
    async def translate(x: int) -> int:
        await seen.hold(0.01)
        return x

    class Summarise(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return shared["xs"]

        async def exec_async(self, x: int) -> int:
            await seen.hold(0.01)
            return -x

    summarise = Summarise(limit=10, limiter=api)
    results: dict[str, Any] = {}

    async def run(flow: AsyncFlow, key: str) -> None:
        shared: dict[str, Any] = {"xs": list(range(12))}
        await flow.run_async(shared)
        results[key] = shared

    async with anyio.create_task_group() as tg:  # two flows at once, one quota
        tg.start_soon(run, AsyncFlow(translate), "t")
        tg.start_soon(run, AsyncFlow(summarise), "s")
    assert seen.most == 3
    assert results["t"]["a"] == list(range(12))


@pytest.mark.anyio
async def test_limiter_slots_come_back_after_cancellation_and_failure() -> None:
    from flowfn import Limiter

    api = Limiter(2)

    @parallel_batch(items="xs", limit=5, limiter=api)
    async def hang(x: int) -> None:
        if x == 4:
            raise ValueError("item 4 fails")
        await anyio.sleep(60)

    with anyio.move_on_after(0.05):
        await AsyncFlow(hang).run_async({"xs": [0, 1, 2]})
    with pytest.raises(ValueError, match="item 4 fails"):
        await AsyncFlow(hang).run_async({"xs": [4, 0, 1]})
    capacity = api._limiter()
    assert capacity is not None
    assert capacity.borrowed_tokens == 0

    seen = InFlight()

    @parallel_batch(items="xs", into="out", limit=5, limiter=api)
    async def work(x: int) -> int:
        await seen.hold(0.01)
        return x

    shared: dict[str, Any] = {"xs": list(range(6))}
    await AsyncFlow(work).run_async(shared)
    assert shared["out"] == list(range(6))
    assert seen.most == 2  # both slots are free again, and the bound holds


@pytest.mark.anyio
async def test_a_shared_rate_spaces_the_starts_of_every_node() -> None:
    from flowfn import Limiter

    api = Limiter(per_second=50)
    starts: list[float] = []

    @parallel_batch(items="xs", limit=10, limiter=api)
    async def one(x: int) -> None:
        starts.append(anyio.current_time())

    @parallel_batch(items="xs", limit=10, limiter=api)
    async def two(x: int) -> None:
        starts.append(anyio.current_time())

    one >> two
    await AsyncFlow(one).run_async({"xs": list(range(5))})
    assert len(starts) == 10
    assert max(starts) - min(starts) >= 9 / 50 * 0.9  # 10 starts, 1/50 s apart at least


def test_limiters_that_would_be_ignored_are_refused() -> None:
    from flowfn import Limiter, Node

    with pytest.raises(TypeError, match=r"limiter= holds a slot .* needs an async node"):
        Node(limiter=Limiter(2))
    with pytest.raises(TypeError, match=r"limiter= takes a flowfn\.Limiter"):
        node(limiter=3)(lambda shared: None)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="give concurrency=, per_second=, or both"):
        Limiter()
    with pytest.raises(TypeError, match=r"runs a sub-flow per param dict and takes only"):
        parallel_batch(flow=Flow(node(lambda shared: None)), limiter=Limiter(1))  # type: ignore[call-overload]


def test_a_sync_flow_with_a_limiter_runs_in_an_event_loop() -> None:
    from flowfn import Limiter

    @node(limiter=Limiter(1), into="out")
    def plain(shared: dict[str, Any]) -> int:
        return 42

    shared: dict[str, Any] = {}
    Flow(plain).run(shared)
    assert shared["out"] == 42


# -- streaming from inside a node -----------------------------------------------------------


@pytest.mark.anyio
async def test_steps_stream_partial_output_with_backpressure() -> None:
    from flowfn import emit

    trail: list[str] = []

    @node
    async def reply(shared: dict[str, Any]) -> str:
        for token in ["Hel", "lo", "!"]:
            trail.append(f"emit {token}")
            await emit(token)
        shared["reply"] = "Hello!"
        return "done"

    shared: dict[str, Any] = {}
    async with AsyncFlow(reply).stream(shared) as output:
        async for token in output:
            trail.append(f"got {token}")
    assert output.result == "done"
    assert shared == {"reply": "Hello!"}
    assert [t for t in trail if t.startswith("got")] == ["got Hel", "got lo", "got !"]
    # buffer=0: an emit returns once the consumer has taken the value, so the step is never
    # more than the token in hand ahead of the consumer
    lead = [
        sum(t.startswith("emit") for t in trail[:i]) - sum(t.startswith("got") for t in trail[:i])
        for i in range(len(trail) + 1)
    ]
    assert max(lead) <= 2


@pytest.mark.anyio
async def test_items_of_a_batch_stream_and_sync_steps_emit_from_threads() -> None:
    from flowfn import emit, emit_sync

    @parallel_batch(items="xs", into="out", limit=4)
    async def square(x: int) -> int:
        await emit(("square", x))
        return x * x

    @node
    def report(shared: dict[str, Any]) -> None:  # a sync step: runs in a worker thread
        emit_sync(("total", sum(shared["out"])))

    square >> report
    got: list[Any] = []
    async with AsyncFlow(square).stream({"xs": [1, 2, 3]}, buffer=2) as output:
        async for value in output:
            got.append(value)
    assert sorted(got[:3]) == [("square", 1), ("square", 2), ("square", 3)]
    assert got[3:] == [("total", 14)]


@pytest.mark.anyio
async def test_leaving_the_stream_early_or_with_an_error() -> None:
    from flowfn import emit

    finished: list[str] = []

    @node
    async def count(shared: dict[str, Any]) -> None:
        try:
            for i in range(5):
                await emit(i)
            finished.append("all emitted")
        finally:
            finished.append("cleaned up")

    async with AsyncFlow(count).stream({}) as output:
        async for i in output:
            if i == 1:
                break  # a normal exit: the flow finishes, its later output dropped
    assert finished == ["all emitted", "cleaned up"]

    async def consume_and_fail() -> None:
        async with AsyncFlow(count).stream({}) as output:
            async for i in output:
                if i == 1:
                    raise LookupError("consumer failed")

    finished.clear()
    with pytest.raises(LookupError, match="consumer failed"):
        await consume_and_fail()
    assert finished == ["cleaned up"]  # cancelled at its next emit, and cleaned up

    @node
    async def broken(shared: dict[str, Any]) -> None:
        await emit("partial")
        raise ValueError("flow failed")

    got: list[str] = []

    async def consume() -> None:
        async with AsyncFlow(broken).stream({}) as output:
            async for value in output:
                got.append(value)

    with pytest.raises(ValueError, match="flow failed") as caught:
        await consume()
    assert got == ["partial"]
    assert type(caught.value) is ValueError  # not an exception group


@pytest.mark.anyio
async def test_emit_without_a_consumer_does_nothing() -> None:
    from flowfn import emit

    @node(into="out")
    async def quiet(shared: dict[str, Any]) -> int:
        await emit("nobody listens")
        return 1

    shared: dict[str, Any] = {}
    await AsyncFlow(quiet).run_async(shared)
    assert shared == {"out": 1}


# -- retries and fallback for a whole sub-flow run ------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("parallel", [False, True])
async def test_a_failed_sub_flow_run_is_run_again_from_its_start(parallel: bool) -> None:
    from flowfn import Event, batch, local

    calls: list[str] = []
    flaky = {"b": 2}  # "b" fails its first two runs

    @node
    def fetch(shared: dict[str, Any], name: str) -> None:
        calls.append(f"fetch {name}")
        assert "fetched" not in local()  # a retry starts with a fresh local dict
        local()["fetched"] = name

    @node
    def parse(shared: dict[str, Any], name: str) -> None:
        calls.append(f"parse {name}")
        if flaky.get(name, 0) > 0:
            flaky[name] -= 1
            raise ConnectionError(f"{name} dropped")
        shared["parsed"][name] = local()["fetched"].upper()

    fetch >> parse
    decorate = parallel_batch if parallel else batch

    @decorate(flow=Flow(fetch), retries=2, wait=0.001)
    def pages(shared: dict[str, Any]) -> list[dict[str, str]]:
        shared["parsed"] = {}
        return [{"name": "a"}, {"name": "b"}]

    seen: list[Event] = []
    shared: dict[str, Any] = {}
    await AsyncFlow(pages).run_async(shared, on_event=seen.append)
    assert shared["parsed"] == {"a": "A", "b": "B"}
    assert calls.count("fetch b") == 3  # from the start, each time
    assert sum(e.kind == "retry" for e in seen) == 2


@pytest.mark.anyio
async def test_a_sub_flow_fallback_stands_for_the_run_and_classes_retry_too() -> None:
    from flowfn import BatchResults

    @node
    async def always_fails(shared: dict[str, Any], n: int) -> None:
        raise TimeoutError(f"run {n}")

    @parallel_batch(flow=Flow(always_fails), retries=1, errors="collect")
    def runs(shared: dict[str, Any]) -> list[dict[str, int]]:
        return [{"n": 1}, {"n": 2}]

    @runs.fallback
    def gave_up(params: dict[str, int], exc: Exception, shared: dict[str, Any]) -> str:
        shared.setdefault("gave_up", []).append(params["n"])
        return f"fallback for {params['n']}: {exc}"

    @runs.post
    def keep(shared: dict[str, Any], prep_res: Any, results: Any) -> None:
        shared["results"] = list(results)

    shared: dict[str, Any] = {}
    await AsyncFlow(runs).run_async(shared)
    assert shared["results"] == ["fallback for 1: run 1", "fallback for 2: run 2"]
    assert sorted(shared["gave_up"]) == [1, 2]

    tries: list[int] = []

    @node
    async def second_time_lucky(shared: dict[str, Any], n: int) -> None:
        tries.append(n)
        if tries.count(n) < 2:
            raise OSError("first run fails")

    class Runs(AsyncParallelBatchFlow):
        async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, int]]:
            return [{"n": 1}, {"n": 2}]

        def run_fallback(self, params: dict[str, Any], exc: Exception) -> str:
            return "never needed"

    await Runs(second_time_lucky, max_retries=2, errors="collect").run_async({})
    assert sorted(tries) == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="max_retries is the number of runs"):
        Runs(second_time_lucky, max_retries=0)
    assert BatchResults  # the collected results type, re-exported


# -- parallel branches, then a join ---------------------------------------------------------


@pytest.mark.anyio
async def test_branches_run_at_once_then_the_flow_goes_on_at_the_join() -> None:
    from flowfn import AsyncNode, Parallel

    running = InFlight()

    @node
    async def news(shared: dict[str, Any]) -> str:
        await running.hold(0.02)
        shared["news"] = "quiet day"
        return "ignored: a branch's action ends the branch"

    class Weather(AsyncNode):  # a class node as a branch
        async def exec_async(self, prep_res: Any) -> str:
            await running.hold(0.02)
            return "sunny"

        async def post_async(self, shared: Any, prep_res: Any, exec_res: str) -> None:
            shared["weather"] = exec_res

    @node
    async def sports_fetch(shared: dict[str, Any]) -> None:
        await running.hold(0.02)
        shared["scores"] = [3, 1]

    @node
    def sports_sum(shared: dict[str, Any]) -> None:
        shared["sports"] = f"{sum(shared['scores'])} goals"

    sports_fetch >> sports_sum

    @node
    def summarise(shared: dict[str, Any]) -> None:
        shared["summary"] = f"{shared['news']}, {shared['weather']}, {shared['sports']}"

    fan = Parallel(news, Weather(), Flow(sports_fetch), name="morning")
    fan >> summarise
    shared: dict[str, Any] = {}
    assert await AsyncFlow(fan).run_async(shared) is None
    assert shared["summary"] == "quiet day, sunny, 4 goals"
    assert running.most == 3  # all three at once


@pytest.mark.anyio
async def test_two_branches_writing_one_key_is_an_error_naming_both() -> None:
    from flowfn import Parallel

    @node
    async def left(shared: dict[str, Any]) -> None:
        shared["answer"] = "left"
        await anyio.sleep(0.05)

    @node
    async def right(shared: dict[str, Any]) -> None:
        await anyio.sleep(0.01)
        shared["answer"] = "right"

    with pytest.raises(
        FlowError, match=r"branches 'left' and 'right' both write shared\['answer'\]"
    ):
        await AsyncFlow(Parallel(left, right)).run_async({})


@pytest.mark.anyio
async def test_branches_on_copies_are_merged_by_the_declared_rule() -> None:
    from flowfn import Parallel

    @node
    async def a(shared: dict[str, Any]) -> None:
        shared["found"].append("a1")
        shared["score"] = 1
        shared["seen"]["a"] = True

    @node
    async def b(shared: dict[str, Any]) -> None:
        shared["found"].extend(["b1", "b2"])
        shared["score"] = 2
        shared["seen"]["b"] = True

    def start() -> dict[str, Any]:
        return {"found": ["x"], "score": 0, "seen": {}}

    updated = start()
    await AsyncFlow(Parallel(a, b, merge="update")).run_async(updated)
    assert updated["score"] == 2  # the last branch in the list wins, as declared
    assert updated["found"] == ["x", "b1", "b2"]

    appended = start()
    with pytest.raises(FlowError, match="merge='append' appends what each branch added"):
        await AsyncFlow(Parallel(a, b, merge="append")).run_async(appended)

    def reduce(key: str, original: Any, values: list[Any]) -> Any:
        if key == "found":
            return original + [x for v in values for x in v[len(original) :]]
        if key == "seen":
            return {k: v for d in values for k, v in d.items()}
        return sum(values)

    reduced = start()
    await AsyncFlow(Parallel(a, b, merge=reduce)).run_async(reduced)
    assert reduced == {"found": ["x", "a1", "b1", "b2"], "score": 3, "seen": {"a": True, "b": True}}


@pytest.mark.anyio
async def test_a_failing_branch_cancels_the_others_unless_collecting() -> None:
    from flowfn import Parallel

    finished: list[str] = []

    @node
    async def slow(shared: dict[str, Any]) -> None:
        await anyio.sleep(5)
        finished.append("slow")

    @node
    async def boom(shared: dict[str, Any]) -> None:
        raise KeyError("boom")

    with anyio.fail_after(2), pytest.raises(KeyError) as caught:
        await AsyncFlow(Parallel(slow, boom, name="pair")).run_async({})
    assert finished == []
    assert "flowfn: branch 'boom' of parallel branches 'pair'" in caught.value.__notes__

    @node
    async def quick(shared: dict[str, Any]) -> str:
        return "fine"

    shared: dict[str, Any] = {}
    await AsyncFlow(Parallel(quick, boom, errors="collect", into="outcomes")).run_async(shared)
    fine, error = shared["outcomes"]
    assert fine == "fine"
    assert isinstance(error, KeyError)


def test_parallel_branches_are_drawn_side_by_side_before_the_join() -> None:
    from flowfn import Parallel

    @node
    def a(shared: dict[str, Any]) -> None: ...

    @node
    def b(shared: dict[str, Any]) -> None: ...

    @node
    def join(shared: dict[str, Any]) -> None: ...

    fan = Parallel(a, Flow(b), name="fan")
    fan >> join
    text = Flow(fan).to_mermaid()
    assert text.splitlines()[1:] == [
        '    subgraph n0 ["fan ⫴ branches"]',
        '        n1["a"]',
        '        subgraph n2 ["Flow"]',
        '            n3["b"]',
        "        end",
        "    end",
        '    n4["join"]',
        "    n0 --> n4",
    ]
    assert "subgraph cluster_n0" in Flow(fan).to_dot()
    with pytest.raises(TypeError, match="two or more branches"):
        Parallel(a)


# -- a typed shared store -------------------------------------------------------------------

TYPED_BAD = """
from typing import TypedDict

from flowfn import AsyncParallelBatchNode, Flow, node


class Store(TypedDict):
    text: str
    words: int


@node
def count(shared: Store) -> None:
    shared["wrods"] = len(shared["text"].split())
    shared["words"] = "many"


class Typed(AsyncParallelBatchNode[Store]):
    pass


flow: Flow[Store] = Flow(count)
flow.run({"txt": "a b c", "words": 0})
Typed().run({"text": "x", "words": "one"})
untyped = Flow(count)
untyped.run({"anything": 1})  # a plain flow keeps taking any store
"""


def test_mypy_flags_typos_and_wrong_types_in_a_typed_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "bad.py").write_text(TYPED_BAD)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "c"), "bad.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [e.split(":")[1] for e in errors] == ["14", "15", "23", "23", "24"], done.stdout
    assert 'TypedDict "Store" has no key "wrods"' in errors[0]
    assert 'Value of "words" has incompatible type "str"; expected "int"' in errors[1]
    assert 'Extra key "txt" for TypedDict "Store"' in "\n".join(errors[2:4])
    assert 'TypedDict item "words" has type "int"' in errors[4]


# -- what the review found ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_loop_back_to_an_into_node_does_not_overwrite_another_writer() -> None:
    @node(into="k")
    def a(shared: dict[str, Any]) -> None:
        shared["visits"] = shared.get("visits", 0) + 1

    @node
    def b(shared: dict[str, Any]) -> str:
        shared["k"] = "USER VALUE"  # someone else writes the key the into= node wrote
        return "again" if shared["visits"] < 2 else "done"

    a >> b
    b - "again" >> a
    b - "done" >> None
    with pytest.raises(FlowError, match=r"node 'a': shared\['k'\] already exists"):
        await AsyncFlow(a).run_async({})


@pytest.mark.anyio
@pytest.mark.parametrize("parallel", [False, True])
async def test_a_retried_sub_flow_run_may_replace_what_its_failed_attempt_stored(
    parallel: bool,
) -> None:
    from flowfn import batch

    failures = {"x": 1}

    @node(into="res")
    def w(shared: dict[str, Any], name: str) -> str:
        return f"result of {name}"

    @node
    def fail_once(shared: dict[str, Any], name: str) -> None:
        if failures.get(name):
            failures[name] -= 1
            raise ConnectionError("first attempt fails")

    w >> fail_once
    decorate = parallel_batch if parallel else batch

    @decorate(flow=Flow(w), retries=2)
    def one(shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"name": "x"}]

    shared: dict[str, Any] = {}
    await AsyncFlow(one).run_async(shared)
    assert shared == {"res": "result of x"}


@pytest.mark.anyio
async def test_merged_branches_refuse_a_replaced_list_and_skip_failed_branches() -> None:
    from flowfn import Parallel

    @node
    async def replaces(shared: dict[str, Any]) -> None:
        shared["lst"] = [9]

    @node
    async def appends(shared: dict[str, Any]) -> None:
        shared["lst"].append(3)

    with pytest.raises(FlowError, match="a branch replaced that list"):
        await AsyncFlow(Parallel(replaces, appends, merge="append")).run_async({"lst": [1, 2]})

    @node
    async def half(shared: dict[str, Any]) -> None:
        shared["half"] = "partial write of a failed branch"
        raise KeyError("failed")

    shared: dict[str, Any] = {"lst": [1]}
    await AsyncFlow(Parallel(appends, half, merge="update", errors="collect")).run_async(shared)
    assert shared == {"lst": [1, 3]}

    seen: list[Any] = []

    @node
    async def deletes(shared: dict[str, Any]) -> None:
        del shared["lst"]

    def merge(key: str, original: Any, values: list[Any]) -> Any:
        seen.append((key, values))
        return next(v for v in values if v is not Parallel.DELETED)

    merged: dict[str, Any] = {"lst": [1]}
    await AsyncFlow(Parallel(appends, deletes, merge=merge)).run_async(merged)
    assert seen == [("lst", [[1, 3], Parallel.DELETED])]
    assert merged == {"lst": [1, 3]}


def test_durable_branches_with_merge_all_run_again_on_resume(tmp_path: Path) -> None:
    from flowfn import Parallel

    broken = {"b"}

    @node
    async def a(shared: dict[str, Any]) -> None:
        shared["a"] = 1

    @node
    async def b(shared: dict[str, Any]) -> None:
        if broken:
            raise ValueError("b fails first")
        shared["b"] = 1

    @node
    def join(shared: dict[str, Any]) -> None:
        shared["j"] = 1

    fan = Parallel(a, b, merge="update")
    fan >> join
    db = tmp_path / "runs.db"
    with pytest.raises(ValueError, match="b fails first"):
        Flow(fan).run({}, checkpoint=db, run_id="r1")
    broken.clear()
    shared: dict[str, Any] = {}
    Flow(fan).run(shared, checkpoint=db, run_id="r1")
    assert shared == {"a": 1, "b": 1, "j": 1}

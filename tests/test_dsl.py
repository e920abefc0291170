"""The functional DSL: decorated functions as nodes, on asyncio and trio."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import anyio
import pytest

from flowfn import (
    AsyncNode,
    Flow,
    FlowEndsWarning,
    FlowError,
    FunctionBatchFlow,
    FunctionNode,
    Node,
    batch,
    node,
    parallel_batch,
)

pytestmark = pytest.mark.anyio


async def test_node_function_reads_and_writes_shared_and_returns_the_action(
    anyio_backend: str,
) -> None:
    @node
    async def load(shared: dict[str, Any]) -> None:
        shared["text"] = "x" * shared["size"]

    @node
    def route(shared: dict[str, Any]) -> str:
        return "long" if len(shared["text"]) > 3 else "short"

    @node
    def long(shared: dict[str, Any]) -> None:
        shared["kind"] = "long"

    @node
    def short(shared: dict[str, Any]) -> None:
        shared["kind"] = "short"

    load >> route
    route - "long" >> long
    route - "short" >> short
    flow = Flow(load)
    for size, kind in ((10, "long"), (2, "short")):
        shared: dict[str, Any] = {"size": size}
        await flow.run_async(shared)
        assert shared["kind"] == kind


async def test_retries_are_extra_attempts_and_fallback_takes_the_last_error(
    anyio_backend: str,
) -> None:
    attempts: list[int] = []

    @node(retries=2, wait=0.001, into="answer")
    async def ask(shared: dict[str, Any]) -> str:
        attempts.append(len(attempts))
        raise TimeoutError(f"attempt {len(attempts)}")

    @ask.fallback
    def give_up(exc: Exception, shared: dict[str, Any]) -> str:
        return f"gave up after {exc} with {sorted(shared)}"

    shared: dict[str, Any] = {}
    await Flow(ask).run_async(shared)
    assert attempts == [0, 1, 2]
    assert shared["answer"] == "gave up after attempt 3 with []"


async def test_three_phase_form_retries_only_the_pure_part(anyio_backend: str) -> None:
    calls: list[str] = []

    @node(retries=2)
    async def summarize(text: str) -> str:
        calls.append("exec")
        if calls.count("exec") < 3:
            raise ConnectionError("flaky model")
        return text.upper()

    @summarize.prep
    def read(shared: dict[str, Any]) -> str:
        calls.append("prep")
        return str(shared["text"])

    @summarize.post
    async def write(shared: dict[str, Any], prep_res: str, exec_res: str) -> str:
        calls.append("post")
        shared["summary"] = (prep_res, exec_res)
        return "summarized"

    shared: dict[str, Any] = {"text": "hi"}
    assert await Flow(summarize).run_async(shared) == "summarized"
    assert shared["summary"] == ("hi", "HI")
    assert calls == ["prep", "exec", "exec", "exec", "post"]
    assert read({"text": "plain"}) == "plain"  # attaching returns the plain function


async def test_params_are_injected_by_name(anyio_backend: str) -> None:
    @node
    def bake(shared: dict[str, Any], flavor: str, size: int = 8, params: Any = None) -> None:
        shared.setdefault("cakes", []).append((flavor, size, dict(params)))

    flow = Flow(bake)
    flow.set_params({"flavor": "lemon"})
    shared: dict[str, Any] = {}
    await flow.run_async(shared)
    assert shared["cakes"] == [("lemon", 8, {"flavor": "lemon"})]


async def test_a_missing_param_names_the_node_and_the_parameter(anyio_backend: str) -> None:
    @node
    def bake(shared: dict[str, Any], flavor: str) -> None:
        pass

    with pytest.raises(FlowError, match=r"node 'bake': .*bake\(\) takes a parameter 'flavor'"):
        await Flow(bake).run_async({})


async def test_into_stores_the_result_but_never_silently_overwrites(anyio_backend: str) -> None:
    @node(into="total")
    def add(shared: dict[str, Any]) -> int:
        return int(sum(shared["numbers"]))

    shared: dict[str, Any] = {"numbers": [1, 2, 3]}
    await Flow(add).run_async(shared)
    assert shared["total"] == 6

    with pytest.raises(FlowError, match=r"node 'add': shared\['total'\] already exists"):
        await Flow(add).run_async(shared)
    assert shared["total"] == 6  # untouched

    add_again = node(into="total", overwrite=True)(add.fn)
    shared["numbers"] = [10]
    await Flow(add_again).run_async(shared)
    assert shared["total"] == 10


async def test_returning_a_value_without_into_is_a_clear_error(anyio_backend: str) -> None:
    @node
    def compute(shared: dict[str, Any]) -> int:
        return 42

    with pytest.raises(FlowError, match=r"node 'compute': .* returned int 42.*into='key'"):
        await Flow(compute).run_async({})


async def test_batch_runs_items_in_order_one_at_a_time(anyio_backend: str) -> None:
    active: list[int] = []
    peak = 0

    @batch(items="words", into="upper")
    async def shout(word: str, shared: dict[str, Any]) -> str:
        nonlocal peak
        active.append(1)
        peak = max(peak, len(active))
        await anyio.sleep(0.001)
        active.pop()
        return word.upper() + shared["mark"]

    shared: dict[str, Any] = {"words": ["a", "b", "c"], "mark": "!"}
    await Flow(shout).run_async(shared)
    assert shared["upper"] == ["A!", "B!", "C!"]
    assert peak == 1


async def test_batch_items_from_a_prep_and_results_to_a_post(anyio_backend: str) -> None:
    @batch
    def square(n: int) -> int:
        return n * n

    @square.prep
    def numbers(shared: dict[str, Any]) -> range:
        return range(shared["n"])

    @square.post
    def total(shared: dict[str, Any], items: range, squares: list[int]) -> str:
        shared["sum"] = sum(squares)
        return "summed"

    shared: dict[str, Any] = {"n": 4}
    assert await Flow(square).run_async(shared) == "summed"
    assert shared["sum"] == 0 + 1 + 4 + 9


async def test_batch_without_items_says_how_to_give_them(anyio_backend: str) -> None:
    @batch
    def orphan(item: Any) -> None:
        pass

    with pytest.raises(FlowError, match=r"batch node 'orphan' has no items: pass items="):
        await Flow(orphan).run_async({})


async def test_batch_items_that_are_not_iterable_name_the_node(anyio_backend: str) -> None:
    @parallel_batch(items=lambda shared: 7)
    async def each(item: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"each: a batch node's prep must return an iterable"):
        await Flow(each).run_async({})


async def test_parallel_batch_overlaps_async_items_and_keeps_order(anyio_backend: str) -> None:
    stamps: list[tuple[str, str]] = []

    @parallel_batch(items=lambda shared: shared["languages"], into="translations", limit=8)
    async def translate(lang: str, shared: dict[str, Any]) -> str:
        stamps.append(("start", lang))
        await anyio.sleep(0.02 if lang == "fr" else 0.005)
        stamps.append(("end", lang))
        return f"{lang}: {shared['text']}"

    shared: dict[str, Any] = {"languages": ["fr", "de", "ja"], "text": "hi"}
    await Flow(translate).run_async(shared)
    assert shared["translations"] == ["fr: hi", "de: hi", "ja: hi"]
    assert [event for event, _ in stamps[:3]] == ["start"] * 3  # all started before any ended
    assert stamps[-1] == ("end", "fr")


async def test_parallel_batch_over_a_sync_function_uses_threads_up_to_the_limit(
    anyio_backend: str,
) -> None:
    lock = threading.Lock()
    in_flight, peak, threads = 0, 0, set()
    release = threading.Event()

    @parallel_batch(items="items", into="out", limit=3)
    def work(item: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            threads.add(threading.get_ident())
            if peak == 3:
                release.set()
        release.wait(timeout=5)  # blocks this thread, never the event loop
        with lock:
            in_flight -= 1
        return item * 2

    shared: dict[str, Any] = {"items": list(range(9))}
    await Flow(work).run_async(shared)
    assert shared["out"] == [i * 2 for i in range(9)]
    assert peak == 3
    assert threading.get_ident() not in threads


async def test_workers_inline_keeps_sync_functions_on_the_loop_thread(anyio_backend: str) -> None:
    seen: list[int] = []

    @node(workers="inline")
    def here(shared: Any) -> None:
        seen.append(threading.get_ident())

    @node
    def elsewhere(shared: Any) -> None:
        seen.append(threading.get_ident())

    here >> elsewhere
    await Flow(here).run_async({})
    assert seen[0] == threading.get_ident()
    assert seen[1] != threading.get_ident()


async def test_a_failing_parallel_item_cancels_the_rest(anyio_backend: str) -> None:
    cancelled = 0

    @parallel_batch(items=lambda shared: range(6))
    async def fetch(i: int) -> int:
        nonlocal cancelled
        try:
            await anyio.sleep(0.001 if i == 2 else 10)
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise
        raise PermissionError(f"item {i} forbidden")

    with anyio.fail_after(5), pytest.raises(PermissionError, match="item 2 forbidden") as info:
        await Flow(fetch).run_async({})
    assert cancelled == 5
    assert info.value.__notes__ == [
        "flowfn: item 2 of parallel batch node 'fetch'",
        "flowfn: in node 'fetch' of flow 'Flow'",
    ]


async def test_batch_flows_run_a_sub_flow_per_param_dict(anyio_backend: str) -> None:
    log: list[tuple[str, str]] = []

    @node
    async def mix(shared: dict[str, Any], flavor: str) -> None:
        log.append(("mix", flavor))
        await anyio.sleep(0.01)

    @node
    def bake(shared: dict[str, Any], flavor: str, factory: int) -> None:
        shared["cakes"][factory] = flavor
        log.append(("bake", flavor))

    mix >> bake

    @parallel_batch(flow=Flow(mix), limit=4)
    def orders(shared: dict[str, Any]) -> list[dict[str, Any]]:
        shared["cakes"] = {}
        return [{"factory": i, "flavor": f} for i, f in enumerate(["lemon", "plum", "fig"])]

    @orders.post
    def done(shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared["count"] = len(prep_res)
        return "served"

    @batch(flow=Flow(mix))
    def one_by_one(shared: dict[str, Any]) -> list[dict[str, Any]]:
        shared["cakes"] = {}
        return [{"factory": i, "flavor": f} for i, f in enumerate(["lemon", "plum"])]

    shared: dict[str, Any] = {}
    assert await Flow(orders).run_async(shared) == "served"
    assert shared == {"cakes": {0: "lemon", 1: "plum", 2: "fig"}, "count": 3}
    assert [step for step, _ in log[:3]] == ["mix"] * 3  # the three orders overlapped
    assert isinstance(orders, FunctionBatchFlow)

    log.clear()
    shared = {}
    await Flow(one_by_one).run_async(shared)
    assert shared["cakes"] == {0: "lemon", 1: "plum"}
    assert log == [("mix", "lemon"), ("bake", "lemon"), ("mix", "plum"), ("bake", "plum")]


async def test_dsl_nodes_and_class_nodes_mix_in_one_flow(anyio_backend: str) -> None:
    class Double(AsyncNode):
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["n"] *= 2
            return "check"

    class Count(Node):
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["n"] += 1

    @node
    def start(shared: dict[str, Any]) -> None:
        shared["n"] = 1

    @node
    def check(shared: dict[str, Any]) -> str | None:
        return "again" if shared["n"] < 20 else None

    double = Double()
    start >> double
    double - "check" >> check
    check - "again" >> Count() >> double
    shared: dict[str, Any] = {}
    with pytest.warns(FlowEndsWarning, match=r"node 'check' returned the default action \(None\)"):
        await Flow(start).run_async(shared)
    assert shared["n"] == 30  # 1 -> 2 -> 3 -> 6 -> 7 -> 14 -> 15 -> 30


async def test_one_flow_runs_concurrently_without_sharing_state(anyio_backend: str) -> None:
    @node
    async def greet(shared: dict[str, Any], who: str) -> None:
        await anyio.sleep(0.01)
        shared["greeting"] = f"hello {who}"

    flow = Flow(greet)
    stores: list[dict[str, Any]] = [{} for _ in range(5)]

    async def run(i: int) -> None:
        copy = Flow(flow.start_node)
        copy.set_params({"who": f"user{i}"})
        await copy.run_async(stores[i])

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(run, i)
    assert [s["greeting"] for s in stores] == [f"hello user{i}" for i in range(5)]
    assert greet.params == {}


def test_sync_only_dsl_flows_run_without_an_event_loop() -> None:
    @node
    def one(shared: dict[str, Any]) -> None:
        shared["thread"] = threading.get_ident()

    @node(into="two")
    def two(shared: dict[str, Any]) -> int:
        return 2

    one >> two
    shared: dict[str, Any] = {}
    assert not Flow(one)._needs_loop()
    Flow(one).run(shared)
    assert shared == {"thread": threading.get_ident(), "two": 2}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_flow_run_starts_the_chosen_backend(backend: str) -> None:
    @node(into="library")
    async def detect(shared: Any) -> str:
        from flowfn._engine.backend import running_async_library

        return str(running_async_library())

    shared: dict[str, Any] = {}
    Flow(detect).run(shared, backend=backend)
    assert shared["library"] == backend


async def test_flow_run_inside_a_loop_says_to_await_run_async(anyio_backend: str) -> None:
    @node
    async def step(shared: Any) -> None:
        pass

    with pytest.raises(FlowError, match=r"use `await Flow.run_async\(shared\)`"):
        Flow(step).run({})


def test_decorated_functions_stay_plain_functions() -> None:
    @parallel_batch(items="languages", into="translations", limit=8)
    def translate(lang: str, shared: dict[str, Any]) -> str:
        """Translate the text."""
        return f"{lang}: {shared['text']}"

    assert translate("fr", shared={"text": "hi"}) == "fr: hi"
    assert translate.__name__ == "translate"
    assert translate.__doc__ == "Translate the text."
    assert str(inspect.signature(translate)) == "(lang: 'str', shared: 'dict[str, Any]') -> 'str'"
    assert repr(translate) == "<@parallel_batch 'translate' successors=[] limit=8>"
    assert isinstance(node(lambda shared: None), FunctionNode)


def test_wiring_errors_are_clear() -> None:
    @node
    def a(shared: Any) -> None:
        pass

    def not_decorated(shared: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"a >> <function .*not_decorated.*decorated with @node"):
        a >> not_decorated  # type: ignore[operator]
    with pytest.raises(TypeError, match="Action must be a string"):
        a - 1 >> a  # type: ignore[operator]


def test_signatures_that_cannot_work_fail_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"first parameter of .* receives the item"):

        @batch(items="xs")
        def wrong(shared: Any, item: Any) -> None:
            pass

    with pytest.raises(TypeError, match=r"must take 1 positional parameter\(s\) for the item"):

        @parallel_batch(items="xs")
        def no_item() -> None:
            pass

    with pytest.raises(TypeError, match=r"parameter 'shared' is positional-only"):

        @node
        def positional(shared: Any, /) -> None:
            pass

    with pytest.raises(
        TypeError,
        match=r"takes only into, name, overwrite, retries, wait, workers; not \[.items.\]",
    ):
        batch(flow=Flow(), items="xs")

    with pytest.raises(TypeError, match=r"not \['limit'\] \(limit= and errors= are for @parallel"):
        batch(flow=Flow(), limit=3)

    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        node(retries=-1)(len)


async def test_into_in_concurrent_sub_flows_fails_instead_of_losing_a_write(
    anyio_backend: str,
) -> None:
    @node(into="text")
    async def load(name: str) -> str:
        await anyio.sleep(0.01)
        return f"contents of {name}"

    @parallel_batch(flow=Flow(load))
    def each(shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"name": "a"}, {"name": "b"}]

    shared: dict[str, Any] = {}
    with pytest.raises(FlowError, match=r"shared\['text'\] already exists"):
        await Flow(each).run_async(shared)
    assert shared["text"] in ("contents of a", "contents of b")  # the first write stands


async def test_batch_flow_function_runs_in_a_worker_thread(anyio_backend: str) -> None:
    seen: list[int] = []

    @node
    def leaf(shared: Any) -> None:
        pass

    @batch(flow=Flow(leaf))
    def listing(shared: Any) -> list[dict[str, int]]:
        seen.append(threading.get_ident())
        return [{"i": 1}]

    await Flow(listing).run_async({})
    assert seen
    assert seen[0] != threading.get_ident()


async def test_each_sub_flow_run_has_its_own_local_scratch_dict(anyio_backend: str) -> None:
    @node
    async def load(local: dict[str, Any], name: str) -> None:
        await anyio.sleep(0.01 if name == "a" else 0.001)  # runs overlap, b finishes first
        local["text"] = f"contents of {name}"

    @node
    def measure(local: dict[str, Any]) -> None:
        local["size"] = len(local["text"])

    load >> measure

    @parallel_batch(flow=Flow(load), into="files")
    def each(shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"name": "a"}, {"name": "bb"}]

    shared: dict[str, Any] = {}
    await Flow(each).run_async(shared)
    assert shared == {
        "files": [
            {"text": "contents of a", "size": 13},
            {"text": "contents of bb", "size": 14},
        ]
    }


async def test_local_reaches_class_nodes_and_batch_flow_posts(anyio_backend: str) -> None:
    from flowfn import AsyncNode, local

    class Remember(AsyncNode):
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            local()["seen"] = self.params["n"] * 10

    @batch(flow=Remember())
    def runs(shared: Any) -> list[dict[str, int]]:
        return [{"n": 1}, {"n": 2}]

    @runs.post
    def total(shared: Any, prep_res: Any, scratch: list[dict[str, int]]) -> str:
        shared["total"] = sum(s["seen"] for s in scratch)
        return "summed"

    shared: dict[str, Any] = {}
    assert await Flow(runs).run_async(shared) == "summed"
    assert shared == {"total": 30}


def test_local_outside_a_run_is_a_clear_error() -> None:
    from flowfn import local

    with pytest.raises(FlowError, match=r"flowfn.local\(\) is the scratch dict of a running flow"):
        local()

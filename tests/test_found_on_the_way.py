"""Issue 20, "found on the way" (items 17-22): a failed merge, a consumer's exception from a
stream, an unpicklable result on Dask, option errors of batch flows, OpenTelemetry spans."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

import anyio
import cloudpickle
import pytest

from flowfn import AsyncFlow, Flow, FlowError, Parallel, node, parallel_batch

# The Dask workers cannot import this module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# -- 17: a merge= that fails changes nothing --------------------------------------------------


@node
async def sets_a(shared: dict[str, Any]) -> None:
    shared["a"] = 1
    shared["log"].append("a")


@node
async def sets_b(shared: dict[str, Any]) -> None:
    shared["b"] = 2
    shared["log"].append("b")


@pytest.mark.anyio
async def test_a_merge_function_that_raises_leaves_the_store_as_it_was() -> None:
    def merge(key: str, original: Any, values: list[Any]) -> Any:
        if key == "log":
            original.extend(x for v in values for x in v[len(original) :])  # in place
            return original
        if key == "b":
            raise ValueError("no rule for b")
        return values[-1]

    shared: dict[str, Any] = {"a": 0, "b": 0, "log": ["start"]}
    with pytest.raises(ValueError, match="no rule for b") as caught:
        await AsyncFlow(Parallel(sets_a, sets_b, merge=merge, into="actions")).run_async(shared)
    assert shared == {"a": 0, "b": 0, "log": ["start"]}
    assert any("merging shared['b']" in n for n in getattr(caught.value, "__notes__", []))


def test_a_refused_append_merge_leaves_the_store_as_it_was_in_a_sync_flow() -> None:
    @node
    def scores(shared: dict[str, Any]) -> None:
        shared["log"].append("scores")
        shared["score"] = 3

    shared: dict[str, Any] = {"log": [], "score": 0}
    with pytest.raises(FlowError, match="merge='append'"):
        Flow(Parallel(sets_a, scores, merge="append")).run(shared)
    assert shared == {"log": [], "score": 0}


# -- 18: the consumer's exception is what `async with flow.stream(...)` raises ----------------


@pytest.mark.anyio
async def test_a_consumers_exception_survives_a_failing_clean_up_of_the_flow() -> None:
    from flowfn import emit, other_errors

    @node
    async def talk(shared: dict[str, Any]) -> None:
        try:
            await emit("hello")
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("clean-up failed")

    async def consume() -> None:
        async with AsyncFlow(talk).stream({}) as output:
            async for value in output:
                assert value == "hello"
                raise ValueError("the consumer failed")

    with pytest.raises(ValueError, match="the consumer failed") as caught:
        await consume()
    (other,) = other_errors(caught.value)
    assert isinstance(other, RuntimeError)
    assert str(other) == "clean-up failed"
    assert any("RuntimeError: clean-up failed" in n for n in caught.value.__notes__)


@pytest.mark.anyio
async def test_a_flows_own_failure_is_still_raised_from_a_stream() -> None:
    from flowfn import emit, other_errors

    @node
    async def fails(shared: dict[str, Any]) -> None:
        await emit(1)
        raise KeyError("the flow failed")

    seen: list[Any] = []

    async def consume() -> None:
        async with AsyncFlow(fails).stream({}) as output:
            async for value in output:
                seen.append(value)

    with pytest.raises(KeyError, match="the flow failed") as caught:
        await consume()
    assert seen == [1]
    assert other_errors(caught.value) == ()


# -- 19: on Dask, a result that cannot be pickled fails its own item ------------------------


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Executor]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


def lock_for_two(x: int) -> Any:
    return threading.Lock() if x == 2 else x


@pytest.mark.anyio
@pytest.mark.parametrize("chunksize", [1, 3])
async def test_a_result_dask_cannot_send_back_fails_only_its_item(
    dask_executor: Executor, chunksize: int
) -> None:
    step = parallel_batch(
        items="xs", into="out", errors="collect", workers=dask_executor, chunksize=chunksize
    )(lock_for_two)
    shared: dict[str, Any] = {"xs": [0, 1, 2, 3]}
    with anyio.fail_after(120):  # today's bug is a hang: fail instead of waiting for ever
        await AsyncFlow(step).run_async(shared)
    out = shared["out"]
    assert [out[0], out[1], out[3]] == [0, 1, 3]
    assert isinstance(out[2], FlowError)
    assert "node 'lock_for_two': the function returned a lock" in str(out[2])
    assert "cannot be pickled" in str(out[2])


# -- 21: the option errors of @batch(flow=...) and @parallel_batch(flow=...) name the function


@node
def cook(shared: dict[str, Any]) -> None:
    pass


def make_orders(shared: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"order": i} for i in range(3)]


@pytest.mark.parametrize("decorator", ["batch", "parallel_batch"])
@pytest.mark.parametrize(
    ("option", "error", "says"),
    [
        ({"wait": -1}, ValueError, "wait must be a finite number >= 0, got -1"),
        ({"wait": "1s"}, TypeError, "wait must be a finite number >= 0, got '1s'"),
        ({"retries": -1}, ValueError, "retries must be an int >= 0, got -1"),
        ({"retries": "2"}, TypeError, "retries must be an int >= 0, got '2'"),
        ({"into": 3}, TypeError, "into= must be a key"),
        ({"overwrite": "yes"}, TypeError, "overwrite= is True"),
        ({"name": 3}, TypeError, "name= is the node's name"),
        ({"workers": "gpu"}, ValueError, "workers must be 'thread'"),
        ({"workers": "process"}, TypeError, "runs the function returning the param dicts"),
    ],
)
def test_batch_flow_option_errors_name_the_decorated_function(
    decorator: str, option: dict[str, Any], error: type[Exception], says: str
) -> None:
    import flowfn

    decorate = getattr(flowfn, decorator)(flow=Flow(cook), **option)
    with pytest.raises(error, match=f"^make_orders: .*{says}"):
        decorate(make_orders)


@pytest.mark.parametrize(
    ("option", "error", "says"),
    [
        ({"limit": 0}, ValueError, "limit must be a positive int"),
        ({"errors": "ignore"}, ValueError, "errors must be 'fail_fast' or 'collect'"),
    ],
)
def test_parallel_batch_flow_option_errors_name_the_decorated_function(
    option: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=f"^make_orders: {says}"):
        parallel_batch(flow=Flow(cook), **option)(make_orders)


# -- 22: OTelObserver makes each step's and item's span current while its code runs ---------


def otel_tracer() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def parents_and_traces(exporter: Any) -> tuple[dict[str, str | None], set[int]]:
    """Each span's name with its parent's name, and the trace ids of all spans."""
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    parents = {s.name: (by_id[s.parent.span_id].name if s.parent else None) for s in spans}
    return parents, {span.context.trace_id for span in spans}


@pytest.mark.anyio
async def test_spans_a_step_or_item_starts_nest_under_its_span() -> None:
    from opentelemetry import trace

    from flowfn.otel import OTelObserver

    tracer, exporter = otel_tracer()

    @node
    async def load(shared: dict[str, Any]) -> None:
        with tracer.start_as_current_span("user load"):
            await anyio.sleep(0)
        shared["xs"] = [0, 1]

    @node
    def check(shared: dict[str, Any]) -> None:  # sync: runs in a worker thread
        with tracer.start_as_current_span("user check"):
            pass

    @parallel_batch(items="xs", into="ys")
    async def fetch(x: int) -> int:
        with tracer.start_as_current_span(f"user fetch {x}"):
            await anyio.sleep(0.001 * (2 - x))  # the items overlap
        return x

    @node
    async def cook(shared: dict[str, Any], order: int) -> None:
        with tracer.start_as_current_span(f"user cook {order}"):
            await anyio.sleep(0)

    @parallel_batch(flow=Flow(cook))
    def orders(shared: dict[str, Any]) -> list[dict[str, int]]:
        with tracer.start_as_current_span("user orders"):
            return [{"order": 0}, {"order": 1}]

    load >> check >> fetch >> orders
    flow = AsyncFlow(load)
    flow.name = "shop"
    with tracer.start_as_current_span("caller") as caller:
        await flow.run_async({}, on_event=OTelObserver(tracer))
        assert trace.get_current_span() is caller  # the run leaves nothing current behind
    assert not trace.get_current_span().get_span_context().is_valid

    parents, traces = parents_and_traces(exporter)
    assert len(traces) == 1
    assert parents["flowfn run shop"] == "caller"
    assert parents["user load"] == "node shop/load"
    assert parents["user check"] == "node shop/check"
    assert parents["user fetch 0"] == "item shop/fetch[0]"
    assert parents["user fetch 1"] == "item shop/fetch[1]"
    assert parents["user orders"] == "node shop/orders"
    assert parents["user cook 1"] == "node shop/orders[1]/Flow/cook"


def test_spans_a_step_starts_nest_under_it_in_a_sync_flow() -> None:
    from opentelemetry import trace

    from flowfn import batch
    from flowfn.otel import OTelObserver

    tracer, exporter = otel_tracer()

    @node
    def load(shared: dict[str, Any]) -> None:
        with tracer.start_as_current_span("user load"):
            shared["xs"] = [0, 1]

    @batch(items="xs", into="ys")
    def double(x: int) -> int:
        with tracer.start_as_current_span(f"user double {x}"):
            return 2 * x

    load >> double
    Flow(load).run({}, on_event=OTelObserver(tracer))
    assert not trace.get_current_span().get_span_context().is_valid

    parents, traces = parents_and_traces(exporter)
    assert len(traces) == 1
    assert parents["user load"] == "node Flow/load"
    assert parents["user double 1"] == "item Flow/double[1]"


@pytest.mark.anyio
async def test_a_failed_run_leaves_no_span_current(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry import trace

    from flowfn.otel import OTelObserver

    tracer, exporter = otel_tracer()

    waiting: list[int] = []

    @parallel_batch(items="xs", into="ys")
    async def fails(x: int) -> int:
        if x == 0:
            while len(waiting) < 2:  # the others are running: the failure cancels them
                await anyio.sleep(0)
            raise KeyError("item 0")
        waiting.append(x)
        await anyio.sleep_forever()
        return x

    with pytest.raises(KeyError):
        await AsyncFlow(fails).run_async({"xs": [0, 1, 2]}, on_event=OTelObserver(tracer))
    assert not trace.get_current_span().get_span_context().is_valid
    assert "Failed to detach context" not in caplog.text
    parents, _ = parents_and_traces(exporter)
    assert parents["item AsyncFlow/fails[1]"] == "batch AsyncFlow/fails"  # ended by the run

"""Batch items on real remote workers: a process pool, a Dask cluster, a Ray cluster.

One cluster of each per test session (see the fixtures), each with two single-threaded
workers. The functions sent to Ray and Dask travel by value: this module is registered
with cloudpickle, since the workers cannot import the test modules.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import cloudpickle
import pytest
import ray.cloudpickle as ray_cloudpickle

from flowfn import (
    AsyncFlow,
    AsyncParallelBatchNode,
    Event,
    Flow,
    FlowError,
    Node,
    batch,
    node,
    parallel_batch,
)
from flowfn.ray import RayWorkers

cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

KINDS = ["process", "dask", "ray"]


# -- the clusters: one of each per session ---------------------------------------------


@pytest.fixture(scope="session")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="session")
def dask_executor() -> Iterator[Executor]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def workers(kind: str, request: pytest.FixtureRequest, chunksize: int = 1) -> dict[str, Any]:
    """The node options that send items to ``kind``'s workers, ``chunksize`` per task."""
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
        return {"workers": RayWorkers(chunksize=chunksize)}
    executor = request.getfixturevalue("process_pool" if kind == "process" else "dask_executor")
    return {"workers": executor, "chunksize": chunksize}


# -- functions the workers run (module level: the process pool imports them by name) ---


def square_or_fail(x: int) -> int:
    if x % 7 == 3:
        raise ValueError(f"item {x} is unlucky")
    return x * x


def scaled(x: int, factor: int = 1) -> int:
    return x * factor


def fail_first_attempt(job: tuple[str, int]) -> int:
    folder, x = job
    marker = Path(folder, f"tried-{x}")
    if not marker.exists():
        marker.touch()
        raise ConnectionError(f"flaky {x}")
    return x + 100


def beat_forever(job: tuple[str, int]) -> None:
    """Append to a heartbeat file every 20 ms until stopped (item 0: fail once a sibling
    beats, or after 0.3 s when it has none; a busy machine may start siblings late)."""
    folder, x = job
    if x == 0:
        deadline = time.monotonic() + 20
        time.sleep(0.3)
        while not list(Path(folder).glob("beat-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyError("item 0 failed")
    path = Path(folder, f"beat-{x}")
    for _ in range(3000):  # a minute at most, should nothing stop it
        with path.open("a") as f:
            f.write(".")
        time.sleep(0.02)


def started_and_ended(job: tuple[str, int]) -> int:
    """Item 0 fails at once; the others mark their start, work 0.5 s and mark their end."""
    folder, x = job
    if x == 0:
        raise KeyError("item 0 failed")
    Path(folder, f"start-{x}").touch()
    time.sleep(0.5)
    Path(folder, f"end-{x}").touch()
    return x


def quiet_for(folder: Path, seconds: float = 0.4) -> bool:
    """True if no heartbeat file grows during ``seconds``."""
    sizes = {p: p.stat().st_size for p in folder.glob("beat-*")}
    time.sleep(seconds)
    return all(p.stat().st_size == size for p, size in sizes.items())


# -- results, errors, events ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("chunksize", [1, 5])
@pytest.mark.parametrize("kind", KINDS)
async def test_each_item_keeps_its_result_error_and_events(
    kind: str, chunksize: int, request: pytest.FixtureRequest
) -> None:
    step = parallel_batch(
        items="xs", into="out", errors="collect", limit=8, **workers(kind, request, chunksize)
    )(square_or_fail)
    seen: list[Event] = []
    shared: dict[str, Any] = {"xs": list(range(23))}
    await AsyncFlow(step).run_async(shared, on_event=seen.append)

    out = shared["out"]
    for x in range(23):
        if x % 7 == 3:
            assert isinstance(out[x], ValueError)
            assert str(out[x]) == f"item {x} is unlucky"
            assert out[x].__notes__ == [f"flowfn: item {x} of parallel batch node 'square_or_fail'"]
            remote = out[x].__cause__
            assert type(remote).__name__ == "RemoteTraceback"
            assert "in square_or_fail" in remote.text
            assert "ValueError" in remote.text
        else:
            assert out[x] == x * x
    ends = sorted(e.item for e in seen if e.kind in ("item_end", "item_error"))
    assert ends == list(range(23))
    assert sorted(e.item for e in seen if e.kind == "item_error") == [3, 10, 17]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_fail_fast_raises_the_original_exception_with_notes(
    kind: str, request: pytest.FixtureRequest
) -> None:
    step = parallel_batch(items="xs", into="out", limit=4, **workers(kind, request, 2))(
        square_or_fail
    )
    with pytest.raises(ValueError, match="item 3 is unlucky") as caught:
        await AsyncFlow(step).run_async({"xs": [0, 1, 2, 3, 4, 5]})
    assert type(caught.value) is ValueError  # not Ray's RayTaskError(ValueError)
    assert "flowfn: item 3 of parallel batch node 'square_or_fail'" in caught.value.__notes__


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_params_by_name_single_nodes_and_sequential_batches(
    kind: str, request: pytest.FixtureRequest
) -> None:
    options = workers(kind, request)
    each = batch(items="xs", into="seq", **options)(scaled)
    one = node(into="one", name="one", **options)(scaled)
    one.prep(lambda shared: shared["x"])
    flow = AsyncFlow(each)
    each >> one
    flow.set_params({"factor": 3})
    shared: dict[str, Any] = {"xs": [1, 2, 3], "x": 5}
    await flow.run_async(shared)
    assert shared["seq"] == [3, 6, 9]
    assert shared["one"] == 15


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_retries_run_each_attempt_again(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Dask's executor caches results by arguments (pure=True): each attempt must be new.
    step = parallel_batch(items="jobs", into="out", retries=1, **workers(kind, request, 3))(
        fail_first_attempt
    )
    seen: list[Event] = []
    shared: dict[str, Any] = {"jobs": [(str(tmp_path), x) for x in range(6)]}
    await AsyncFlow(step).run_async(shared, on_event=seen.append)
    assert shared["out"] == [100, 101, 102, 103, 104, 105]
    assert sum(e.kind == "retry" for e in seen) == 6
    assert all(isinstance(e.error, ConnectionError) for e in seen if e.kind == "retry")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_limit_bounds_items_in_flight_and_the_pull_stays_lazy(
    kind: str, request: pytest.FixtureRequest
) -> None:
    in_flight, most, pulled_ahead = 0, 0, 0
    pulled = 0
    ended = 0

    def watch(event: Event) -> None:
        nonlocal in_flight, most, ended
        if event.kind == "item_start":
            in_flight += 1
            most = max(most, in_flight)
        elif event.kind in ("item_end", "item_error"):
            in_flight -= 1
            ended += 1

    def source(shared: Any) -> Iterator[int]:
        nonlocal pulled, pulled_ahead
        for x in range(30):
            pulled += 1
            pulled_ahead = max(pulled_ahead, pulled - ended)
            yield x

    step = parallel_batch(items=source, into="out", limit=4, **workers(kind, request, 2))(scaled)
    shared: dict[str, Any] = {}
    await AsyncFlow(step).run_async(shared, on_event=watch)
    assert shared["out"] == list(range(30))
    assert 1 <= most <= 4
    assert pulled_ahead <= 4


# -- cancellation reaches the remote work -----------------------------------------------


@pytest.mark.anyio
async def test_fail_fast_cancels_running_ray_tasks(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    step = parallel_batch(items="jobs", limit=4, **workers("ray", request))(beat_forever)
    shared = {"jobs": [(str(tmp_path), x) for x in range(6)]}
    with anyio.fail_after(30), pytest.raises(KeyError, match="item 0 failed"):
        await AsyncFlow(step).run_async(shared)
    assert list(tmp_path.glob("beat-*")), "a sibling ran before the failure"
    assert quiet_for(tmp_path), "a Ray task still runs after the flow returned"


@pytest.mark.anyio
async def test_outside_cancellation_stops_ray_tasks(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    step = parallel_batch(items="jobs", limit=2, **workers("ray", request))(beat_forever)
    shared = {"jobs": [(str(tmp_path), x) for x in range(1, 5)]}
    with anyio.move_on_after(1.5) as scope:
        await AsyncFlow(step).run_async(shared)
    assert scope.cancelled_caught
    assert list(tmp_path.glob("beat-*"))
    assert quiet_for(tmp_path), "a Ray task still runs after the cancelled flow returned"


@pytest.mark.anyio
async def test_timeout_cancels_the_ray_attempt_then_the_fallback_decides(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    step = parallel_batch(items="jobs", into="out", timeout=0.5, **workers("ray", request))(
        beat_forever
    )

    @step.fallback
    def late(job: tuple[str, int], exc: Exception) -> str:
        return f"gave up: {type(exc).__name__}"

    shared: dict[str, Any] = {"jobs": [(str(tmp_path), 1)]}
    with anyio.fail_after(30):
        await AsyncFlow(step).run_async(shared)
    assert shared["out"] == ["gave up: TimeoutError"]
    assert quiet_for(tmp_path), "the timed-out Ray task still runs"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["process", "dask"])
async def test_fail_fast_withdraws_executor_jobs_that_have_not_started(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    step = parallel_batch(items="jobs", limit=12, **workers(kind, request))(started_and_ended)
    shared = {"jobs": [(str(tmp_path), x) for x in range(12)]}
    with pytest.raises(KeyError, match="item 0 failed"):
        await AsyncFlow(step).run_async(shared)
    started = {p.name.split("-")[1] for p in tmp_path.glob("start-*")}
    assert len(started) < 11, "the jobs that had not started were not withdrawn"
    if kind == "process":
        # A process pool's running jobs cannot be stopped: the flow waited for them.
        ended = {p.name.split("-")[1] for p in tmp_path.glob("end-*")}
        assert ended == started


# -- nothing blocks the loop, no thread per item ----------------------------------------


@pytest.mark.anyio
async def test_items_in_flight_hold_no_thread_and_the_loop_keeps_running(
    request: pytest.FixtureRequest,
) -> None:
    step = parallel_batch(items="xs", into="out", limit=40, **workers("ray", request))(
        slow_identity
    )
    await AsyncFlow(step).run_async({"xs": [0]})  # warm the workers up
    before = threading.active_count()
    most_threads, ticks = before, 0

    async def tick() -> None:
        nonlocal most_threads, ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1
            most_threads = max(most_threads, threading.active_count())

    shared: dict[str, Any] = {"xs": list(range(40))}
    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await AsyncFlow(step).run_async(shared)
        tg.cancel_scope.cancel()
    assert shared["out"] == list(range(40))
    assert most_threads - before < 10  # 40 items in flight, no thread each
    assert ticks >= 5  # the loop ran other tasks meanwhile


def slow_identity(x: int) -> int:
    time.sleep(0.05)
    return x


# -- class nodes ------------------------------------------------------------------------


class Scale(AsyncParallelBatchNode):
    async def prep_async(self, shared: Any) -> Any:
        return shared["xs"]

    def exec(self, x: int) -> int:  # runs on the workers
        return x * self.params["factor"]

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        shared["out"] = exec_res


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_class_nodes_run_exec_on_the_workers(
    kind: str, request: pytest.FixtureRequest
) -> None:
    step = Scale(**workers(kind, request, 4))
    flow = AsyncFlow(step)
    flow.set_params({"factor": 10})
    shared: dict[str, Any] = {"xs": list(range(9))}
    await flow.run_async(shared)
    assert shared["out"] == [x * 10 for x in range(9)]


def test_class_nodes_refuse_workers_they_would_not_use() -> None:
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match="needs an async node"):
            Node(workers=pool)

        class Both(AsyncParallelBatchNode):
            def exec(self, x: Any) -> Any:
                return x

            async def exec_async(self, x: Any) -> Any:
                return x

        with pytest.raises(TypeError, match="defines exec_async"):
            Both(workers=pool)
        with pytest.raises(ValueError, match=r"must be a concurrent\.futures\.Executor"):
            Scale(workers="thread")


# -- bad input is refused before anything is sent ---------------------------------------


def test_functions_reading_shared_are_refused_for_remote_workers() -> None:
    def reads_shared(x: int, shared: Any) -> int:
        return x

    with ThreadPoolExecutor(1) as pool:
        for chosen in (pool, RayWorkers()):
            with pytest.raises(TypeError, match="take the values it needs as parameters"):
                parallel_batch(items="xs", workers=chosen)(reads_shared)


def test_lambdas_are_refused_for_a_process_pool_when_decorated() -> None:
    with ProcessPoolExecutor(1) as pool, pytest.raises(TypeError, match="module level"):
        parallel_batch(items="xs", workers=pool)(lambda x: x)


def test_bad_workers_and_chunksize_are_refused() -> None:
    with pytest.raises(ValueError, match=r"concurrent\.futures\.Executor"):
        parallel_batch(items="xs", workers="cluster")(scaled)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="chunksize= groups calls sent to an executor"):
        parallel_batch(items="xs", chunksize=10)(scaled)
    with pytest.raises(ValueError, match="chunksize must be an int >= 1"):
        parallel_batch(items="xs", workers=ThreadPoolExecutor(1), chunksize=0)(scaled)
    with pytest.raises(TypeError, match=r"RayWorkers\(chunksize=4\)"):
        parallel_batch(items="xs", workers=RayWorkers(), chunksize=4)(scaled)
    with pytest.raises(ValueError, match="chunksize must be an int >= 1"):
        RayWorkers(chunksize=0)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["dask", "ray"])
async def test_closures_travel_and_unpicklable_ones_fail_naming_the_node(
    kind: str, request: pytest.FixtureRequest
) -> None:
    offset = 1000
    step = parallel_batch(items="xs", into="out", **workers(kind, request))(lambda x: x + offset)
    shared: dict[str, Any] = {"xs": [1, 2]}
    await AsyncFlow(step).run_async(shared)
    assert shared["out"] == [1001, 1002]

    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    step = parallel_batch(items="xs", into="out", name="locked", **workers(kind, request))(
        holds_a_lock
    )
    with pytest.raises(FlowError, match=r"node 'locked'.*holds_a_lock\(\).*cannot pickle"):
        await AsyncFlow(step).run_async({"xs": [1]})


def test_ray_workers_never_start_a_cluster(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import ray
        from flowfn import Flow, parallel_batch
        from flowfn.ray import RayWorkers

        step = parallel_batch(items="xs", workers=RayWorkers())(lambda x: x)
        try:
            Flow(step).run({"xs": [1]})
        except Exception as exc:
            print(type(exc).__name__, exc)
        print("initialized:", ray.is_initialized())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert "FlowError RayWorkers: Ray is not connected. Call ray.init() first" in result.stdout
    assert "initialized: False" in result.stdout


def test_ray_task_errors_are_unwrapped(request: pytest.FixtureRequest) -> None:
    import ray

    request.getfixturevalue("ray_cluster")

    @ray.remote
    def boom() -> None:
        raise LookupError("remote boom")

    try:
        ray.get(boom.remote())
    except Exception as exc:
        wrapped = exc
    assert type(wrapped) is not LookupError
    unwrapped = RayWorkers().unwrap(wrapped)
    assert type(unwrapped) is LookupError
    assert str(unwrapped) == "remote boom"
    assert "remote boom" in str(unwrapped.__cause__)


def test_a_sync_flow_runs_remote_items_in_an_event_loop(request: pytest.FixtureRequest) -> None:
    step = parallel_batch(items="xs", into="out", **workers("dask", request, 2))(scaled)
    shared: dict[str, Any] = {"xs": [4, 5, 6]}
    Flow(step).run(shared, backend="trio")
    assert shared["out"] == [4, 5, 6]


# -- what the review found --------------------------------------------------------------


class Unlucky(Exception):
    """An exception class the workers only know by value (as one in a script would be)."""


SHARED_ERROR = ValueError("the same object, raised by every item")


def raise_unlucky(x: int) -> int:
    raise Unlucky(f"unlucky {x}")


def raise_shared(x: int) -> int:
    raise SHARED_ERROR


def lock_for_two(x: int) -> Any:
    return threading.Lock() if x == 2 else x


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["dask", "ray"])
async def test_exception_classes_sent_by_value_come_back_as_themselves(
    kind: str, request: pytest.FixtureRequest
) -> None:
    step = parallel_batch(items="xs", into="out", errors="collect", **workers(kind, request, 2))(
        raise_unlucky
    )
    shared: dict[str, Any] = {"xs": [1, 2]}
    await AsyncFlow(step).run_async(shared)
    assert [type(e).__name__ for e in shared["out"]] == ["Unlucky", "Unlucky"]
    assert [str(e) for e in shared["out"]] == ["unlucky 1", "unlucky 2"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_items_of_a_chunk_get_their_own_exception_and_notes(
    kind: str, request: pytest.FixtureRequest
) -> None:
    step = parallel_batch(items="xs", into="out", errors="collect", **workers(kind, request, 3))(
        raise_shared
    )
    shared: dict[str, Any] = {"xs": [0, 1, 2]}
    await AsyncFlow(step).run_async(shared)
    errors = shared["out"]
    assert len({id(e) for e in errors}) == 3
    for i, error in enumerate(errors):
        assert error.__notes__ == [f"flowfn: item {i} of parallel batch node 'raise_shared'"]


@pytest.mark.anyio
async def test_a_result_that_cannot_travel_fails_only_its_own_item(
    request: pytest.FixtureRequest,
) -> None:
    step = parallel_batch(
        items="xs", into="out", errors="collect", **workers("process", request, 4)
    )(lock_for_two)
    shared: dict[str, Any] = {"xs": [0, 1, 2, 3]}
    await AsyncFlow(step).run_async(shared)
    out = shared["out"]
    assert [out[0], out[1], out[3]] == [0, 1, 3]
    assert isinstance(out[2], Exception)
    assert "pickle" in str(out[2]).lower()


@pytest.mark.anyio
async def test_a_thread_executor_hands_exceptions_over_untouched() -> None:
    class ApiError(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.lock = threading.Lock()  # cannot be pickled: no need, it stays here

    def call_api(x: int) -> int:
        try:
            raise KeyError(x)
        except KeyError as exc:
            raise ApiError(f"api failed for {x}") from exc

    with ThreadPoolExecutor(2) as pool:
        step = parallel_batch(items="xs", into="out", errors="collect", workers=pool)(call_api)
        shared: dict[str, Any] = {"xs": [7]}
        await AsyncFlow(step).run_async(shared)
    error = shared["out"][0]
    assert type(error) is ApiError
    assert isinstance(error.__cause__, KeyError)


class Flaky(AsyncParallelBatchNode):
    async def prep_async(self, shared: Any) -> Any:
        return shared["xs"]

    def exec(self, x: int) -> str:  # runs on the workers, with the node as it is now
        if self.cur_retry == 0:
            raise ConnectionError("first attempt fails")
        return f"{x}{self.params['suffix']}@{self.cur_retry}"

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        shared["out"] = exec_res


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_class_nodes_send_their_current_params_and_attempt(
    kind: str, request: pytest.FixtureRequest
) -> None:
    step = Flaky(max_retries=2, **workers(kind, request, 2))
    for suffix in ("a", "b"):  # the same node object, run twice, params changed between
        step.set_params({"suffix": suffix})
        shared: dict[str, Any] = {"xs": [1, 2, 3]}
        await step.run_async(shared)
        assert shared["out"] == [f"1{suffix}@1", f"2{suffix}@1", f"3{suffix}@1"]
    assert "_batcher" not in vars(step)


def test_async_functions_and_timeouts_on_chunks_are_refused_when_decorated() -> None:
    async def fetch(x: int) -> int:
        return x

    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match=r"is async and would run on the event loop"):
            parallel_batch(items="xs", workers=pool)(fetch)
        with pytest.raises(ValueError, match=r"with chunksize=4 an item's result only arrives"):
            parallel_batch(items="xs", workers=pool, chunksize=4, timeout=1.0)(scaled)
        with pytest.raises(ValueError, match=r"with chunksize=4 an item's result only arrives"):
            Scale(workers=pool, chunksize=4, timeout=1.0)

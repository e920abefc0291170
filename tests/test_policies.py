"""Retry policies, timeouts, rate limits and error collection, on classes and decorators."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowfn import (
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchResults,
    Flow,
    Node,
    map_ordered,
    node,
    parallel_batch,
)
from flowfn._engine.retry import RateLimit, retry_delay

pytestmark = pytest.mark.anyio


class FakeSleep:
    """Records the delays asked of anyio.sleep / time.sleep without sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    def sync(self, seconds: float) -> None:
        self.delays.append(seconds)


class AlwaysFails(AsyncNode):
    async def exec_async(self, prep_res: Any) -> None:
        raise OSError("down")

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> str:
        return "fallback"


async def test_backoff_waits_grow_up_to_max_wait(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleep = FakeSleep()
    monkeypatch.setattr("flowfn._engine.nodes.anyio.sleep", sleep)
    node_ = AlwaysFails(max_retries=6, wait=0.1, backoff=2, max_wait=1.0)
    await node_.run_async({})
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_sync_nodes_back_off_too(monkeypatch: pytest.MonkeyPatch) -> None:
    sleep = FakeSleep()
    monkeypatch.setattr("flowfn._engine.nodes.time.sleep", sleep.sync)

    class Fails(Node):
        def exec(self, prep_res: Any) -> None:
            raise OSError("down")

        def exec_fallback(self, prep_res: Any, exc: Exception) -> None:
            return None

    Fails(max_retries=4, wait=1, backoff=3).run({})
    assert sleep.delays == [1, 3, 9]


@given(
    attempt=st.integers(0, 20),
    wait=st.floats(0, 10),
    backoff=st.floats(1, 4),
    max_wait=st.none() | st.floats(0, 30),
    jitter=st.floats(0, 1),
)
def test_retry_delay_stays_within_its_bounds(
    attempt: int, wait: float, backoff: float, max_wait: float | None, jitter: float
) -> None:
    delay = retry_delay(attempt, wait, backoff, max_wait, jitter)
    base = wait * backoff**attempt
    if max_wait is not None:
        base = min(base, max_wait)
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


def test_bad_policy_values_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="Node: backoff must be a finite number >= 1"):
        Node(backoff=0.5)
    with pytest.raises(ValueError, match="Node: jitter must be a number from 0 to 1"):
        Node(jitter=2)
    with pytest.raises(ValueError, match="Node: timeout must be a finite number > 0"):
        Node(timeout=0)
    with pytest.raises(ValueError, match="Node: per_second must be a finite number > 0"):
        Node(per_second=0)


async def test_timeout_fails_the_attempt_and_retries(anyio_backend: str) -> None:
    attempts: list[int] = []

    class Slow(AsyncNode):
        async def exec_async(self, prep_res: Any) -> str:
            attempts.append(self.cur_retry)
            if self.cur_retry == 0:
                await anyio.sleep(10)
            return "fast enough"

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["result"] = exec_res

    shared: dict[str, Any] = {}
    with anyio.fail_after(5):
        await Slow(max_retries=2, timeout=0.05).run_async(shared)
    assert attempts == [0, 1]
    assert shared["result"] == "fast enough"


async def test_timeout_per_item_reaches_the_fallback(anyio_backend: str) -> None:
    @parallel_batch(items="delays", into="out", timeout=0.05)
    async def wait_for(delay: float) -> str:
        await anyio.sleep(delay)
        return "done"

    @wait_for.fallback
    def too_slow(delay: float, exc: Exception) -> str:
        return type(exc).__name__

    shared: dict[str, Any] = {"delays": [0, 10, 0]}
    with anyio.fail_after(5):
        await Flow(wait_for).run_async(shared)
    assert shared["out"] == ["done", "TimeoutError", "done"]


def test_a_sync_exec_within_its_timeout_keeps_its_result() -> None:
    class Sync(Node):
        def exec(self, prep_res: Any) -> str:
            return "in time"

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["result"] = exec_res

    shared: dict[str, Any] = {}
    Sync(timeout=1).run(shared)
    assert shared == {"result": "in time"}


async def test_rate_limit_spaces_attempts(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    sleep = FakeSleep()
    monkeypatch.setattr("flowfn._engine.retry.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("flowfn._engine.retry.anyio.sleep", sleep)
    limit = RateLimit(per_second=4)
    for _ in range(4):
        await limit.wait()
    assert sleep.delays == pytest.approx([0.25, 0.5, 0.75])  # the first starts at once
    clock[0] = 200.0  # long after: no waiting
    sleep.delays.clear()
    await limit.wait()
    assert sleep.delays == []


async def test_per_second_is_shared_by_all_items_of_a_node(anyio_backend: str) -> None:
    starts: list[float] = []

    @parallel_batch(items=lambda shared: range(5), per_second=50)
    async def call_api(i: int) -> None:
        starts.append(anyio.current_time())

    began = anyio.current_time()
    await Flow(call_api).run_async({})
    assert len(starts) == 5
    # Slots 1/50 s apart from the first attempt: the fifth cannot start before 80 ms. Only
    # a lower bound holds on a busy machine, which starts an attempt late, never early (so
    # one late start may leave a short gap before the next: gaps are not checked).
    assert sorted(starts)[-1] - began >= 0.079
    assert sorted(starts)[1] - began >= 0.019


async def test_collect_runs_every_item_and_returns_errors_in_place(anyio_backend: str) -> None:
    class Mixed(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> range:
            return range(6)

        async def exec_async(self, i: int) -> int:
            await anyio.sleep(0.001 * (6 - i))
            if i % 3 == 1:
                raise ValueError(f"bad {i}")
            return i * 10

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["results"] = exec_res

    shared: dict[str, Any] = {}
    await Mixed(errors="collect").run_async(shared)
    results = shared["results"]
    assert isinstance(results, BatchResults)
    assert [type(r).__name__ for r in results] == ["int", "ValueError", "int"] * 2
    assert results.values() == [0, 20, 30, 50]
    assert sorted(results.errors) == [1, 4]
    assert results.summary() == "4 of 6 items succeeded, 2 failed"
    assert results[4].__notes__ == ["flowfn: item 4 of parallel batch node 'Mixed'"]


async def test_collect_on_parallel_flows_and_decorators(anyio_backend: str) -> None:
    class Step(AsyncNode):
        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            if self.params["n"] == 2:
                raise KeyError("two")
            return f"ok {self.params['n']}"

    class Runs(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> list[dict[str, int]]:
            return [{"n": n} for n in range(4)]

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["runs"] = exec_res

    shared: dict[str, Any] = {}
    await Runs(Step(), errors="collect").run_async(shared)
    assert shared["runs"][:2] == ["ok 0", "ok 1"]
    assert isinstance(shared["runs"][2], KeyError)
    assert shared["runs"].failed == 1

    @parallel_batch(items="xs", into="ys", errors="collect")
    def invert(x: float) -> float:
        return 1 / x

    shared = {"xs": [1, 0, 4]}
    await Flow(invert).run_async(shared)
    assert shared["ys"][0] == 1
    assert shared["ys"][2] == 0.25
    assert isinstance(shared["ys"][1], ZeroDivisionError)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    outcomes=st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40),
    limit=st.integers(1, 8),
)
def test_order_and_limit_hold_under_random_delays_and_failures(
    outcomes: list[tuple[int, bool]], limit: int
) -> None:
    """Property: with errors="collect", result i belongs to item i and at most `limit` run."""
    in_flight, peak = 0, 0

    async def work(item: tuple[int, tuple[int, bool]]) -> int:
        nonlocal in_flight, peak
        index, (ticks, fails) = item
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            for _ in range(ticks):
                await anyio.sleep(0)
        finally:
            in_flight -= 1
        if fails:
            raise RuntimeError(index)
        return index

    for backend in ("asyncio", "trio"):
        peak = 0
        results = anyio.run(
            lambda: map_ordered(work, enumerate(outcomes), limit=limit, errors="collect"),
            backend=backend,
        )
        assert peak <= limit
        for index, ((_, fails), result) in enumerate(zip(outcomes, results, strict=True)):
            if fails:
                assert isinstance(result, RuntimeError)
                assert result.args == (index,)
            else:
                assert result == index


@settings(max_examples=30, deadline=None)
@given(failures=st.integers(0, 5), retries=st.integers(0, 4))
def test_retry_counts_match_failures(failures: int, retries: int) -> None:
    """Property: a node failing `failures` times is tried min(failures+1, retries+1) times."""
    for backend in ("asyncio", "trio"):
        calls = 0

        @node(retries=retries, into="result")
        async def flaky(shared: Any) -> str:
            nonlocal calls
            calls += 1
            if calls <= failures:
                raise OSError(calls)
            return "ok"

        shared: dict[str, Any] = {}
        if failures > retries:
            with pytest.raises(OSError, match=str(retries + 1)):
                Flow(flaky).run(shared, backend=backend)
            assert calls == retries + 1
        else:
            Flow(flaky).run(shared, backend=backend)
            assert calls == failures + 1
            assert shared["result"] == "ok"


async def test_cancellation_waits_for_thread_jobs_and_leaves_none_behind(
    anyio_backend: str,
) -> None:
    running = 0
    finished = 0
    lock = threading.Lock()
    started = threading.Event()

    @parallel_batch(items=lambda shared: range(8), limit=4)
    def blocking(i: int) -> None:
        nonlocal running, finished
        with lock:
            running += 1
        started.set()
        threading.Event().wait(0.05)  # a blocking call that cannot be interrupted
        with lock:
            running -= 1
            finished += 1

    with anyio.move_on_after(0.01):
        await Flow(blocking).run_async({})
    assert started.is_set()
    assert running == 0  # every thread job had ended before run_async returned
    assert finished == 4  # the four running jobs completed; no new item started after cancel

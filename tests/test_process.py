"""workers="process": CPU-bound functions run in worker processes, on both backends."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowfn import Flow, FlowError, node, parallel_batch

pytestmark = pytest.mark.anyio

# Loaded by path under a name no worker process can import: workers find it by its file.
_spec = importlib.util.spec_from_file_location(
    "cpu_bound_example", Path(__file__).parent.parent / "examples" / "cpu_bound.py"
)
assert _spec is not None
assert _spec.loader is not None
cpu_bound = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_bound)


@node(into="pid", workers="process")
def which_process(offset: int = 0) -> int:
    return os.getpid() + offset


async def test_process_workers_run_items_in_other_processes(anyio_backend: str) -> None:
    shared: dict[str, Any] = {"ranges": [(0, 100), (100, 200), (0, 10)]}
    await Flow(cpu_bound.count_primes).run_async(shared)
    assert [count for count, _ in shared["counts"]] == [25, 21, 4]
    assert os.getpid() not in {pid for _, pid in shared["counts"]}


def test_the_cpu_bound_example_counts_primes() -> None:
    assert cpu_bound.main("trio", limit=10_000, chunks=4)["total"] == 1229


async def test_a_process_node_gets_params_by_name(anyio_backend: str) -> None:
    flow = Flow(which_process)
    flow.set_params({"offset": 0})
    shared: dict[str, Any] = {}
    await flow.run_async(shared)
    assert isinstance(shared["pid"], int)
    assert shared["pid"] != os.getpid()


def test_process_nodes_need_an_event_loop_even_in_sync_flows() -> None:
    assert Flow(which_process)._needs_loop()
    shared: dict[str, Any] = {}
    Flow(which_process).run(shared)
    assert shared["pid"] != os.getpid()


def test_process_functions_cannot_take_the_shared_store() -> None:
    with pytest.raises(TypeError, match=r"workers='process'.*writes to 'shared'"):

        @node(workers="process")
        def writes(shared: Any) -> None:
            pass


@parallel_batch(items="locks", into="out", workers="process")
def echo(x: Any) -> Any:
    return x


async def test_an_unpicklable_argument_is_a_clear_error(anyio_backend: str) -> None:
    import threading

    with pytest.raises(FlowError, match=r"workers='process'.*pickl"):
        await Flow(echo).run_async({"locks": [threading.Lock()]})


@parallel_batch(items=lambda shared: range(4), into="pids", workers="process", limit=4)
def pid_of(item: int) -> int:
    return os.getpid()


async def test_worker_processes_outlive_a_run(anyio_backend: str) -> None:
    """One pool per interpreter: a second run finds the worker processes of the first."""
    from flowfn._workers import processes as _processes

    first: dict[str, Any] = {}
    await Flow(pid_of).run_async(first)
    pool = _processes._pool
    second: dict[str, Any] = {}
    await Flow(pid_of).run_async(second)
    assert _processes._pool is pool
    # The pool's workers ran both runs (which of them took which items is up to the pool).
    workers = set(pool._processes)  # type: ignore[union-attr]
    assert set(first["pids"]) | set(second["pids"]) <= workers
    assert os.getpid() not in workers


def test_a_new_event_loop_reuses_the_worker_processes() -> None:
    from flowfn._workers import processes as _processes

    first: dict[str, Any] = {}
    Flow(pid_of).run(first, backend="trio")
    pool = _processes._pool
    second: dict[str, Any] = {}
    Flow(pid_of).run(second, backend="asyncio")  # another loop, another backend: same pool
    assert _processes._pool is pool
    assert set(first["pids"]) | set(second["pids"]) <= set(pool._processes)  # type: ignore[union-attr]


@parallel_batch(items="paths", workers="process", limit=8)
def mark_slowly(path: str) -> None:
    import time

    with open(path, "w") as file:
        file.write("ran")
    time.sleep(0.3)


async def test_cancelled_process_jobs_that_had_not_started_never_run(
    anyio_backend: str, tmp_path: Path
) -> None:
    from flowfn._workers import processes as _processes

    paths = [str(tmp_path / f"{i}.txt") for i in range(12)]
    await Flow(pid_of).run_async({})  # the workers are up: the batch below is not waiting
    with anyio.move_on_after(0.1) as scope:
        await Flow(mark_slowly).run_async({"paths": paths})
    assert scope.cancelled_caught
    ran = [p for p in paths if os.path.exists(p)]
    # One job per worker had started (the executor queues more ahead, and could not have
    # withdrawn those); they finished (run_async waited for them) ...
    assert 0 < len(ran) <= _processes._workers()
    await anyio.sleep(0.5)  # ... and nothing withdrawn ran later
    assert [p for p in paths if os.path.exists(p)] == ran


class ApiError(Exception):
    """An exception pickle cannot rebuild: its __init__ takes two arguments."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@node(into="result", workers="process")
def call_api() -> None:
    raise ApiError(503, "busy")


async def test_an_exception_that_cannot_come_back_leaves_the_pool_working(
    anyio_backend: str,
) -> None:
    from flowfn._workers import processes as _processes

    await Flow(pid_of).run_async({})
    pool = _processes._pool
    with pytest.raises(FlowError, match=r"raised ApiError: busy, which cannot be sent back"):
        await Flow(call_api).run_async({})
    shared: dict[str, Any] = {}
    await Flow(pid_of).run_async(shared)
    assert _processes._pool is pool  # not broken: the same workers go on
    assert len(shared["pids"]) == 4

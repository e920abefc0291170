"""Worker processes that outlive a run: ``workers="process"`` on one pool per interpreter.

anyio's process workers belong to one event loop, so every ``Flow.run()`` (a new loop each
time) started new worker processes, a few hundred milliseconds before its first item. flowfn
keeps one ``ProcessPoolExecutor`` (spawned fresh interpreters, one per core) for the life of
the interpreter instead: the first run starts the workers, the next ones find them ready.
It is shut down at interpreter exit, and replaced if a worker dies (the pool is broken: a
worker that crashes fails every job in flight on the pool with ``BrokenProcessPool``).

A job is awaited without a thread of its own: the executor's completion callback wakes the
event loop thread-safely (asyncio's ``call_soon_threadsafe``, trio's ``run_sync_soon``).
On cancellation a job that has not started is withdrawn; one that runs cannot be stopped,
so the cancellation waits for it (shielded) and then goes on: no job outlives its flow.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from ._remote import _waker

__all__ = ["run_in_process"]

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _process_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or getattr(_pool, "_broken", False):
            # spawn: fresh interpreters, safe whatever threads this process runs
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(max_workers=_workers(), mp_context=context)
        return _pool


@atexit.register
def _shut_down() -> None:
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)


# The executor queues jobs to its workers ahead of time and then cannot withdraw them: at
# most one job per worker goes in, per event loop, so that the others wait here, where a
# cancellation withdraws them.
_slots: RunVar[anyio.CapacityLimiter] = RunVar("flowfn_process_slots")


def _workers() -> int:
    return min(os.cpu_count() or 1, 61)  # 61: the most Windows allows


async def run_in_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker process of the interpreter-wide pool; its result, or its
    exception (the original type, with the worker's traceback as ``__cause__``)."""
    try:
        slots = _slots.get()
    except LookupError:
        slots = anyio.CapacityLimiter(_workers())
        _slots.set(slots)
    async with slots:
        try:
            future = _process_pool().submit(fn, *args)
        except BrokenProcessPool:  # a worker died since (Ctrl-C, a crash): a new pool, once
            future = _process_pool().submit(fn, *args)
        return await _wait(future)


async def _wait(future: Future[Any]) -> Any:
    done = anyio.Event()
    wake = _waker()
    future.add_done_callback(lambda _: wake(done.set))
    try:
        await done.wait()
    except anyio.get_cancelled_exc_class():
        if not future.cancel():  # it runs already: Python cannot stop it, so wait for it
            with anyio.CancelScope(shield=True):
                await done.wait()
        raise
    return future.result()

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

import ast
import atexit
import functools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from .._engine.backend import waker as _waker
from .._engine.errors import FlowError

__all__ = ["run_in_process"]

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _process_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or getattr(_pool, "_broken", False):
            _refuse_unguarded_script()
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


def _refuse_unguarded_script() -> None:
    """A ``FlowError`` now, if the workers would run this run again, instead of a
    ``BrokenProcessPool`` and a screen of multiprocessing errors later.

    A spawned worker imports the script that ``python script.py`` runs (as ``__mp_main__``),
    so it runs the script's top-level code again; if the statement that started this run
    is not under ``if __name__ == "__main__":``, each worker would start the run again, and
    multiprocessing refuses to start processes from a worker that is still starting.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if main is None or not isinstance(path, str) or name in ("__main__", "__mp_main__"):
        return  # python -c, a REPL, a notebook, or a worker: nothing is imported again
    if name is not None and name.endswith(".__main__"):
        return  # python -m package: multiprocessing does not import it again either
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (
        frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if frame is None:  # started from another thread: the script's own code is not on it
        return
    guarded = _under_main_guard(path, frame.f_lineno)
    if guarded is None or guarded:
        return
    script = os.path.basename(path)
    raise FlowError(
        f"workers='process' starts fresh Python processes, and each one imports {script} "
        f"again, which would run line {frame.f_lineno} of it, the one that started this "
        f"run, in every worker (then crash them all). Put the code that runs the flow under "
        f'`if __name__ == "__main__":` at the end of {script} (see "Threads and '
        f'processes" in docs/scaling.md)'
    )


@functools.lru_cache(maxsize=8)
def _under_main_guard(path: str, line: int) -> bool | None:
    """Whether ``line`` of the script at ``path`` lies in the body of an ``if __name__ ==
    "__main__":`` block (``None`` when the script cannot be read)."""
    try:
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read(), path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    body: list[ast.stmt] = tree.body
    while True:
        here = next(
            (s for s in body if s.lineno <= line <= (s.end_lineno or s.lineno)),
            None,
        )
        if here is None or isinstance(here, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return False
        if isinstance(here, ast.If) and _is_main_guard(here.test):
            return any(s.lineno <= line <= (s.end_lineno or s.lineno) for s in here.body)
        inner = [getattr(here, field, None) or [] for field in ("body", "orelse", "finalbody")] + [
            handler.body for handler in getattr(here, "handlers", [])
        ]
        body = [s for block in inner for s in block]
        if not body:
            return False


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not isinstance(test, ast.Compare) or len(test.ops) != 1:
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


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
    try:
        return future.result()
    except BrokenProcessPool as exc:
        # The executor gives every job in flight one and the same exception: each job its
        # own, chained to it, so that each carries its own notes (node, item) and no other.
        raise BrokenProcessPool(*exc.args) from exc

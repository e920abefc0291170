"""Checkpoints: where flowfn's own loops notice cancellation, cheaply enough for every step.

trio and anyio promise that cancellation is noticed at every checkpoint, but a loop of
steps that never await (async functions that return at once, sync nodes run inline) never
reaches one. So every loop of the engine (the walk of a flow, a sequential batch, the
parallel pool) asks a :func:`pacer` before each step or item. The pacer answers from a
flag the backend already keeps (no coroutine, no event-loop round trip), and once every
``YIELD_EVERY`` steps it asks for a real yield so deadlines fire and other tasks run.

The flag is read from the backend's internals (trio's cancel status, anyio's asyncio cancel
scopes). If those ever change shape, the pacer falls back to anyio's public
``current_effective_deadline()``: slower, never wrong.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import anyio

from ._errors import FlowError

__all__ = ["YIELD_EVERY", "pacer", "stray_cancellation"]

#: Steps (or items) between real yields to the event loop in a loop that never awaits.
YIELD_EVERY = 128

Pacer = Callable[[], bool]


def _public_flag() -> Callable[[], bool]:
    deadline = anyio.current_effective_deadline
    return lambda: deadline() == -math.inf


def _trio_flag() -> Callable[[], bool] | None:
    import trio

    task = trio.lowlevel.current_task()
    if not hasattr(getattr(task, "_cancel_status", None), "effectively_cancelled"):
        return None
    return lambda: task._cancel_status.effectively_cancelled


def _asyncio_flag() -> Callable[[], bool] | None:
    import asyncio

    try:
        from anyio._backends._asyncio import _task_states
    except ImportError:  # pragma: no cover - anyio moved its internals
        return None
    task = asyncio.current_task()
    state = _task_states.get(task) if task is not None else None
    if state is None:  # not run by anyio: no cancel scope can be around us
        return lambda: False
    # The scopes around this loop stay the same while it runs (a step's own scopes are
    # gone by the time it returns): collect them once, up to the first shield.
    scopes: list[Any] = []
    scope: Any = state.cancel_scope
    while scope is not None:
        if not hasattr(scope, "_cancel_called"):  # pragma: no cover - anyio changed
            return None
        scopes.append(scope)
        if scope._shield:
            break
        scope = scope._parent_scope
    if not scopes:
        return lambda: False
    if len(scopes) == 1:
        (only,) = scopes
        return lambda: only._cancel_called
    return lambda: any(s._cancel_called for s in scopes)


_use_internals = True  # tests turn this off to check the public fallback


def cancelled_flag() -> Callable[[], bool]:
    """A callable telling, cheaply, whether the calling task sits in a cancelled scope.

    Build it in the task that will call it, at the level of the loop that calls it.
    """
    if _use_internals:
        flag = _trio_flag() if "trio" in sys.modules and _in_trio() else _asyncio_flag()
        if flag is not None:
            return flag
    return _public_flag()


def _in_trio() -> bool:
    import trio

    return trio.lowlevel.in_trio_run()


def pacer() -> Pacer:
    """A callable for a loop's head: True when the loop must ``await checkpoint()`` now.

    That is when the task has been cancelled (then the checkpoint raises the cancellation)
    or when ``YIELD_EVERY`` steps ran since the last yield (then it lets the event loop run
    timers and other tasks). The first call answers for the first step.
    """
    flag = cancelled_flag()
    count = 0

    def due() -> bool:
        nonlocal count
        count += 1
        if count == YIELD_EVERY:
            count = 0
            return True
        return flag()

    return due


def stray_cancellation(exc: BaseException, what: str) -> FlowError | None:
    """A FlowError for ``exc`` if it is a cancellation nobody around this task asked for.

    On asyncio, awaiting a future that another task cancelled raises ``CancelledError``
    in a task that nobody cancelled; passing it on would let a task group swallow it and
    the flow go on with a hole in its results. Returns ``None`` for a real cancellation
    (and for anything that is not a cancellation), which must propagate as it is.
    """
    if not isinstance(exc, anyio.get_cancelled_exc_class()):
        return None
    if _really_cancelled():
        return None
    return FlowError(
        f"{what} was cancelled, but not by a cancel scope around the flow nor by a failing "
        f"sibling: something it awaited was cancelled by someone else (on asyncio, a future "
        f"or task cancelled by another task). flowfn treats that as an error, not a "
        f"result; catch the cancellation in your function if it is expected there."
    )


def _really_cancelled() -> bool:
    import asyncio

    if asyncio._get_running_loop() is not None:
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        if cancelling is None or cancelling():  # Python 3.10 cannot tell: assume it is real
            return True  # task.cancel(): asyncio's own timeouts, or anyio's scopes
    return cancelled_flag()()

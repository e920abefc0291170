"""Checkpoints: where flowfn's own loops notice cancellation, cheaply enough for every step.

trio and anyio promise that cancellation is noticed at every checkpoint, but a loop of
steps that never await (async functions that return at once, sync nodes run inline) never
reaches one. So the loops of the engine test a :func:`cancelled_flag` between steps or
items: the walk of a flow before every step after its first, a sequential batch (through
:func:`pacer`) before every item, the parallel pool when a worker starts and every 64
items. The flag answers from state the backend already keeps (no coroutine, no event-loop
round trip), and every ``YIELD_EVERY`` steps the loops yield for real, so that deadlines
fire and other tasks run.

The flag reads the backend's internals (trio's cancel status, anyio's asyncio cancel
scopes). If those ever change shape, it falls back to anyio's public
``current_effective_deadline()``: slower, never wrong. A cancellation exception that no
scope asked for is told apart by :func:`stray_cancellation`.
"""

from __future__ import annotations

import asyncio
import math
import sys
import weakref
from collections.abc import Callable
from typing import Any

import anyio

from .errors import FlowError

try:  # the running task of each asyncio loop: asyncio.current_task() without its checks
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a Python that moved it

    class _CurrentTasks:
        def get(self, loop: Any) -> Any:
            return asyncio.current_task(loop)

    _current_tasks = _CurrentTasks()

__all__ = ["YIELD_EVERY", "YIELD_MASK", "cancelled_flag", "pacer", "stray_cancellation"]

#: Steps (or items) between real yields to the event loop in a loop that never awaits:
#: about a millisecond of the cheapest steps, so deadlines fire and other tasks run, for
#: well under 1% of a step's cost. A power of two, so that ``YIELD_MASK`` tests it.
YIELD_EVERY = 1024
YIELD_MASK = YIELD_EVERY - 1

Pacer = Callable[[], bool]
Ref = Callable[[], Any]  # a weak reference


def _public_flag() -> Callable[[], bool]:
    deadline = anyio.current_effective_deadline
    return lambda: deadline() == -math.inf


_trio_shape_ok: bool | None = None  # trio tasks have the cancel status we read (checked once)


def _trio_flag() -> Callable[[], bool] | None:
    global _trio_shape_ok
    try:
        task: Any = sys.modules["trio"].lowlevel.current_task()
    except RuntimeError:  # pragma: no cover - not in trio either: let anyio say
        return None
    if _trio_shape_ok is None:
        status = getattr(task, "_cancel_status", None)
        _trio_shape_ok = isinstance(getattr(status, "effectively_cancelled", None), bool)
    if not _trio_shape_ok:  # pragma: no cover - trio changed
        return None
    # The task's cancel status here: its scopes stay the same while the loop that asks runs
    # (and the children of a task group share the status of the group's body).
    return _cached(task._cancel_status, _status_flag)


def _status_flag(status: Ref) -> Callable[[], bool]:
    return lambda: status().effectively_cancelled


_task_states: Any = None  # anyio's record of each asyncio task's cancel scopes, once loaded


def _asyncio_flag(loop: Any) -> Callable[[], bool] | None:
    global _task_states
    if _task_states is None:
        backend = sys.modules.get("anyio._backends._asyncio")
        _task_states = getattr(backend, "_task_states", None)
        if _task_states is None:  # pragma: no cover - anyio moved its internals
            return None
    state = _task_states.get(_current_tasks.get(loop))
    if state is None or state.cancel_scope is None:  # not run by anyio: no scope around us
        return _never
    return _cached(state.cancel_scope, _scopes_flag)


def _scopes_flag(scope: Ref) -> Callable[[], bool] | None:
    """The test for anyio's asyncio scopes from ``scope`` out to the first shield. They stay
    the same while the loop that asks runs (a step's own scopes are gone when it returns).
    Most loops sit in one or two scopes: those get a test without a loop."""
    refs: list[Ref] = []
    try:
        inner: Any = scope()
        while inner is not None:
            refs.append(weakref.ref(inner))
            inner = None if inner._shield else inner._parent_scope
        if len(refs) == 1:
            (first,) = refs
            return lambda: first()._cancel_called
        if len(refs) == 2:
            first, second = refs
            return lambda: first()._cancel_called or second()._cancel_called
    except AttributeError:  # pragma: no cover - anyio changed its scopes
        return None
    return lambda: any(ref()._cancel_called for ref in refs)


# The flags made so far, by the scope (asyncio: anyio gives each task a scope of its own) or
# the cancel status (trio) they test: the runs of a batch flow and the walks of one task
# reuse them, so that a walk makes no object of its own (objects kept alive across awaits
# cost the garbage collector more than the flag saves). Flags hold their scopes weakly,
# and an entry goes when its scope goes: the cache keeps no task alive.
_flags: dict[int, tuple[Ref, Callable[[], bool] | None]] = {}


def _cached(
    key: object, make: Callable[[Ref], Callable[[], bool] | None]
) -> Callable[[], bool] | None:
    number = id(key)
    entry = _flags.get(number)
    if entry is not None and entry[0]() is key:
        return entry[1]
    ref = weakref.ref(key, lambda _: _flags.pop(number, None))
    flag = make(ref)
    _flags[number] = (ref, flag)
    return flag


def _never() -> bool:
    return False


_use_internals = True  # tests turn this off to check the public fallback


def cancelled_flag() -> Callable[[], bool]:
    """A callable telling, cheaply, whether the calling task sits in a cancelled scope.

    Build it in the task that will call it, at the level of the loop that calls it.
    """
    if _use_internals:
        loop = asyncio._get_running_loop()
        if loop is not None:
            flag = _asyncio_flag(loop)
        elif "trio" in sys.modules:
            flag = _trio_flag()
        else:  # pragma: no cover - neither asyncio nor trio: let anyio say
            flag = None
        if flag is not None:
            return flag
    return _public_flag()


def pacer() -> Pacer:
    """A callable for a loop's head: True when the loop must ``await checkpoint()`` now.

    That is when the task has been cancelled (then the checkpoint raises the cancellation)
    or when ``YIELD_EVERY`` steps ran since the last yield (then it lets the event loop run
    timers and other tasks). The walk of a flow, the hottest loop, inlines the same test.
    """
    cancelled, count = cancelled_flag(), 0

    def due() -> bool:
        nonlocal count
        count += 1
        return cancelled() or not count & YIELD_MASK

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
    if asyncio._get_running_loop() is not None:
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        if cancelling is None or cancelling():  # Python 3.10 cannot tell: assume it is real
            return True  # task.cancel(): asyncio's own timeouts, or anyio's scopes
    return cancelled_flag()()

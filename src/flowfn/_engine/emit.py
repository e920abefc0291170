"""Streaming partial output out of a running flow: ``await flowfn.emit(value)`` in a step,
``async with flow.stream(shared) as output: async for value in output: ...`` outside.

The flow runs in a task of the ``async with`` block; what its steps emit reaches the
consumer in order, through a memory stream with ``buffer`` places (0 by default: each
``emit`` waits until the consumer takes the value, so a slow consumer slows the flow
down instead of letting output pile up). Leaving the block normally (the output ended, or
a ``break``) waits for the flow to finish, dropping what it emits after; leaving it with
an exception or a cancellation cancels the flow and waits for it. Either way nothing runs
on after the block. An exception raised by the flow is raised when the block ends, as
itself (not in an exception group). An exception raised by the consumer is raised as itself
even when the flow, being stopped for it, fails too (in a ``finally``, say): the flow's
failure is then in ``flowfn.other_errors(exc)`` and named in a note. Without a consumer (a
plain ``run``), ``emit`` does nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
from anyio.abc import ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from .errors import FlowError, keep_others, node_name

if sys.version_info >= (3, 11):
    _GROUP: type[BaseException] = BaseExceptionGroup  # noqa: F821 - a builtin since 3.11
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup as _GROUP  # type: ignore[import-not-found]

__all__ = ["FlowOutput", "emit", "emit_sync", "stream_run"]

_output: ContextVar[ObjectSendStream[Any] | None] = ContextVar("flowfn_output", default=None)


async def emit(value: Any) -> None:
    """Hand ``value`` (a token, a row, a progress note) to whoever streams this flow,
    waiting while the consumer is not ready for it. Does nothing in a run nobody streams."""
    send = _output.get()
    if send is not None:
        # A consumer that stopped reading: the flow goes on without it.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await send.send(value)


def emit_sync(value: Any) -> None:
    """:func:`emit` for a sync step running in a worker thread (the default for sync
    functions inside an event loop)."""
    send = _output.get()
    if send is None:
        return
    try:
        anyio.from_thread.run(emit, value)
    except RuntimeError as exc:
        raise FlowError(
            "flowfn.emit_sync() hands values to the event loop from a worker thread; in an "
            "async step, `await flowfn.emit(value)` instead (and a sync step that runs "
            "inline on the loop cannot wait for the consumer: give it workers='thread')"
        ) from exc


class FlowOutput:
    """What ``flow.stream(shared)`` yields: iterate it for the emitted values; once the
    ``async with`` block has ended, ``result`` holds what the run returned."""

    __slots__ = ("_receive", "result")

    def __init__(self, receive: MemoryObjectReceiveStream[Any]) -> None:
        self._receive = receive
        self.result: Any = None

    def __aiter__(self) -> FlowOutput:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        return f"<FlowOutput result={self.result!r}>"


@asynccontextmanager
async def stream_run(
    node: Any, shared: Any, buffer: float, run_options: dict[str, Any]
) -> AsyncIterator[FlowOutput]:
    """Run ``node`` in a task while the caller consumes what its steps emit."""
    if not (buffer == float("inf") or (isinstance(buffer, int) and buffer >= 0)):
        raise ValueError(
            f"{node_name(node)}.stream(): buffer must be an int >= 0 or math.inf, got {buffer!r}"
        )
    send, receive = anyio.create_memory_object_stream[Any](buffer)
    output = FlowOutput(receive)

    async def run() -> None:
        async with send:
            _output.set(send)  # this task's context: the flow's tasks inherit it
            output.result = await node.run_async(shared, **run_options)

    consumer_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                yield output
            except BaseException as exc:
                consumer_error = exc
                tg.cancel_scope.cancel()  # the consumer failed or was cancelled: stop
                raise
            finally:
                receive.close()  # what the flow emits from now on is dropped
    except _GROUP as group:
        raise _single(group, consumer_error) from None


def _single(group: BaseException, consumer_error: BaseException | None) -> BaseException:
    """The one failure to raise for a task group's exception group: the consumer's own
    exception if it raised one (the caller's code failed first: the flow only failed while
    being stopped for it), else the first real failure; the others are kept on it (see
    :func:`flowfn.other_errors`)."""
    leaves = []
    todo = [group]
    while todo:
        exc = todo.pop()
        if isinstance(exc, _GROUP):
            todo.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    real = [e for e in leaves if not isinstance(e, anyio.get_cancelled_exc_class())]
    if consumer_error is not None and consumer_error in real:
        first = consumer_error
    else:
        first = (real or leaves)[0]
    keep_others(first, [e for e in real if e is not first])
    return first

"""Batch items on workers elsewhere: any ``concurrent.futures.Executor``, or Ray.

``workers=`` takes, besides ``"thread"``, ``"process"`` and ``"inline"``, an executor
(``ProcessPoolExecutor``, a Dask ``Client.get_executor()``, loky, ...) or a
:class:`flowfn.ray.RayWorkers`. Each attempt of each item is one call of the node's
function over there; everything around the call (retries, ``timeout=``, ``per_second=``,
the fallback, events, ``limit=`` and ordering) stays in the flow, on its event loop.

How a call travels:

* **Chunks.** Items that are waiting for the workers at the same moment go out together,
  up to ``chunksize`` per remote task: a chunk is sent once it is full or once a pass of
  the event loop added nothing to it. Each item keeps its own result or exception, so a
  chunk is only a cheaper way to travel. With ``chunksize=1`` (the default) every call is
  one task.
* **No thread per call.** A chunk's future wakes the event loop through its done-callback
  (asyncio's ``call_soon_threadsafe``, trio's ``run_sync_soon``); nothing blocks the loop.
* **Cancellation.** An item cancelled before its chunk left is withdrawn from it. Once
  every item waiting on a sent chunk is cancelled (fail-fast, an outside cancellation, a
  ``timeout=``), the remote task is cancelled: ``Future.cancel()`` for executors (a task
  that has not started never runs), ``ray.cancel`` for Ray (a running task is interrupted).
  Then the cancellation waits, shielded, until the task is over if it was already running
  and can still be watched, so no task outlives its flow; a Dask task that already runs
  finishes on its worker (Dask reports it cancelled at once).
* **Errors.** An exception raised by the function reaches the caller as itself, with the
  remote traceback (as text) in its ``__cause__``; Ray's ``RayTaskError`` is unwrapped.
  A result that cannot be pickled to travel back fails only its own item, with a
  ``FlowError`` (on Dask, whose task would never report back, the worker checks it first).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import itertools
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from .._engine.backend import waker as _waker
from .._engine.errors import FlowError, node_name

__all__ = [
    "Batcher",
    "ExecutorWorkers",
    "RemoteTraceback",
    "RemoteWorkers",
    "remote_workers",
    "run_chunk",
]

# A call withdrawn from its chunk before the chunk left: the worker skips it.
_WITHDRAWN = None
_nonces = itertools.count()


class RemoteTraceback(Exception):
    """The traceback of an exception as it was raised on a remote worker (as text).

    flowfn sets it as the ``__cause__`` of the exception that reaches the caller, as
    ``concurrent.futures`` does for process pools, so the remote frames show up in the
    printed traceback.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class _Failure:
    """An exception raised by the function on the worker, with its traceback as text."""

    __slots__ = ("exc", "text")

    def __init__(self, exc: BaseException, text: str) -> None:
        self.exc, self.text = exc, text

    def __reduce__(self) -> Any:
        return (_Failure, (self.exc, self.text))


def run_chunk(
    target: Any,
    kwargs: dict[str, Any],
    chunk: list[Any],
    nonce: int,
    pickler: str = "pickle",
    check_results: bool = False,
) -> list[Any]:
    """Run on the worker: ``fn(*data, **kwargs)`` for each call of ``chunk``.

    Returns one entry per call: ``(True, result)``, ``(False, _Failure)``, ``(False,
    _Unsendable)`` or ``None`` for a withdrawn call. ``nonce`` makes every attempt a
    distinct task for executors that cache results by their arguments (Dask's
    ``pure=True``). ``pickler`` is how the outcome travels back ("pickle", "cloudpickle", or
    "" in the same process: nothing to check). ``check_results`` pickles each result here
    first, for executors whose task never ends when its result cannot travel (Dask's): such
    a result fails its own call instead.
    """
    fn = _resolve(target)
    dumps = importlib.import_module(pickler).dumps if check_results and pickler else None
    outcomes: list[Any] = []
    for data in chunk:
        if data is _WITHDRAWN:
            outcomes.append(None)
            continue
        try:
            result = fn(*data, **kwargs)
        except Exception as exc:
            outcomes.append((False, _failure(exc, pickler) if pickler else exc))
            continue
        if dumps is not None:
            try:
                dumps(result)
            except Exception as why:
                outcomes.append((False, _Unsendable(type(result).__qualname__, repr(why))))
                continue
        outcomes.append((True, result))
    return outcomes


class _Unsendable:
    """A result the worker could not pickle to send back: the caller raises a FlowError."""

    __slots__ = ("kind", "why")

    def __init__(self, kind: str, why: str) -> None:
        self.kind, self.why = kind, why

    def __reduce__(self) -> Any:
        return (_Unsendable, (self.kind, self.why))


def _resolve(target: Any) -> Callable[..., Any]:
    if isinstance(target, tuple):  # a reference (module, qualname, file): see function_ref
        from .._engine.binding import resolve_ref

        return resolve_ref(target)
    return target  # type: ignore[no-any-return]


def _failure(exc: Exception, pickler: str) -> _Failure:
    text = "".join(traceback.format_exception(exc))
    try:
        dumps = importlib.import_module(pickler).dumps
        import pickle

        pickle.loads(dumps(exc))
    except Exception as why:  # the caller could not rebuild it: send what it said instead
        exc = FlowError(
            f"the function raised {type(exc).__qualname__}: {exc}, which cannot be sent back "
            f"from the worker ({why})"
        )
    exc.__traceback__ = None  # the text keeps it; frames are not picklable
    return _Failure(exc, text)


class RemoteWorkers:
    """Where a node's sync function runs when ``workers=`` names something else than this
    process: the base of :class:`ExecutorWorkers` and :class:`flowfn.ray.RayWorkers`.

    A subclass says how a chunk is submitted, stopped and how its failures read.
    """

    #: How many calls may travel in one remote task.
    chunksize: int = 1
    #: True if the target function is sent by value (cloudpickle), so lambdas and closures
    #: work; False if it must be importable by name on the worker.
    by_value: bool = True
    #: How results travel back: "pickle", "cloudpickle", or "" (threads: they do not).
    pickler: str = "cloudpickle"

    def submit(
        self, target: Any, kwargs: dict[str, Any], chunk: list[Any]
    ) -> tuple[Future[Any], Any]:
        """Send one chunk; return its future and what :meth:`stop` needs to cancel it."""
        raise NotImplementedError

    async def stop(self, future: Future[Any], handle: Any, done: anyio.Event) -> None:
        """Cancel a sent chunk; return once it is over, or once nothing more can be done."""
        raise NotImplementedError

    def unwrap(self, exc: BaseException) -> BaseException:
        """The exception to raise for a chunk that failed as a whole."""
        return exc

    def calls(self, fn: Callable[..., Any] | None, node: object, *, target: Any = None) -> Batcher:
        """The calls of ``fn`` (or of ``target``) for one run of ``node``, in chunks."""
        return Batcher(self, fn, node, target=target)

    def check_function(self, fn: Callable[..., Any], owner: str) -> Any:
        """What to send for ``fn``: the function itself, or a reference to it. Raises a
        ``FlowError`` naming ``owner`` if it cannot be sent."""
        checked = self.__dict__.setdefault("_checked", {})
        known = checked.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        target = self._check_function(fn, owner)
        checked[id(fn)] = (fn, target)  # keeps fn alive: its id stays its own
        return target

    def _check_function(self, fn: Callable[..., Any], owner: str) -> Any:
        if not self.by_value:
            from .._engine.binding import function_ref

            return function_ref(fn)
        try:
            cloudpickle = importlib.import_module(self.pickler)
        except ImportError:  # pragma: no cover - Ray and Dask both depend on it
            return fn
        try:
            cloudpickle.dumps(fn)
        except Exception as exc:
            raise FlowError(
                f"node {owner!r}: workers={self!r} sends {_label(fn)} to its workers by "
                f"pickling it (cloudpickle), and this failed: {exc}. Make sure what the "
                f"function uses from outside (globals, closure variables) can be pickled, "
                f"or create such things inside the function."
            ) from exc
        return fn

    def check_target(self, target: Any, owner: str) -> Any:
        """``target`` (a picklable callable, such as a class node's ``exec``), checked."""
        try:
            if self.by_value:
                importlib.import_module(self.pickler).dumps(target)
            else:
                importlib.import_module("pickle").dumps(target)
        except Exception as exc:
            raise FlowError(
                f"node {owner!r}: workers={self!r} sends the node (its exec, params and "
                f"attributes) to its workers by pickling it, and this failed: {exc}. Keep "
                f"unpicklable things (clients, locks, files) out of the node's attributes, "
                f"or create them inside exec."
            ) from exc
        return target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(chunksize={self.chunksize})"


class ExecutorWorkers(RemoteWorkers):
    """Calls submitted to a ``concurrent.futures.Executor`` the user made (and shuts down)."""

    def __init__(self, executor: Executor, chunksize: int = 1) -> None:
        self.executor, self.chunksize = executor, chunksize
        kind = type(executor)
        self._in_threads = issubclass(kind, concurrent.futures.ThreadPoolExecutor)
        # The standard library's executors cancel at once; another's cancel() may block for
        # a round trip (Dask's), so it is called from a worker thread.
        self._quick_cancel = kind.__module__.startswith("concurrent.futures")
        # Dask and loky pickle with cloudpickle: functions go by value. The standard process
        # pool pickles by name, so a decorated function goes as a reference to it.
        self.by_value = self._in_threads or kind.__module__.split(".")[0] in (
            "distributed",
            "loky",
            "joblib",
        )
        self.pickler = "" if self._in_threads else "cloudpickle" if self.by_value else "pickle"
        # A Dask task whose result cannot be pickled never reports back (its future waits
        # for ever): the worker checks each result first, so only that item fails.
        self._check_results = kind.__module__.split(".")[0] == "distributed"

    def _check_function(self, fn: Callable[..., Any], owner: str) -> Any:
        if self._in_threads:
            return fn
        return super()._check_function(fn, owner)

    def check_target(self, target: Any, owner: str) -> Any:
        if self._in_threads:
            return target
        return super().check_target(target, owner)

    def submit(
        self, target: Any, kwargs: dict[str, Any], chunk: list[Any]
    ) -> tuple[Future[Any], Any]:
        future = self.executor.submit(
            run_chunk, target, kwargs, chunk, next(_nonces), self.pickler, self._check_results
        )
        return future, None

    async def stop(self, future: Future[Any], handle: Any, done: anyio.Event) -> None:
        if self._quick_cancel:
            cancelled = future.cancel()
        else:
            cancelled = await anyio.to_thread.run_sync(future.cancel)
        if not cancelled:  # it runs already and cannot be stopped: wait for its end
            await done.wait()

    def __repr__(self) -> str:
        return f"{type(self.executor).__name__}(...)"


def remote_workers(workers: object, chunksize: object, name: str) -> RemoteWorkers | None:
    """The remote workers ``workers=`` names (None for "thread", "process", "inline")."""
    if chunksize is not None and (
        not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1
    ):
        raise ValueError(f"{name}: chunksize must be an int >= 1, got {chunksize!r}")
    if isinstance(workers, str) and workers in ("thread", "process", "inline"):
        if chunksize is not None:
            raise TypeError(
                f"{name}: chunksize= groups calls sent to an executor (workers=executor); "
                f"with workers={workers!r} every call runs on its own"
            )
        return None
    if isinstance(workers, RemoteWorkers):
        if chunksize is not None:
            raise TypeError(
                f"{name}: give the chunk size to the workers themselves, "
                f"e.g. RayWorkers(chunksize={chunksize}), not as chunksize="
            )
        return workers
    if isinstance(workers, Executor):
        return ExecutorWorkers(workers, chunksize or 1)
    raise ValueError(
        f"{name}: workers must be 'thread', 'process', 'inline', a concurrent.futures.Executor "
        f"(ProcessPoolExecutor, Dask's client.get_executor(), ...) or flowfn.ray.RayWorkers(), "
        f"got {workers!r}"
    )


def _is_pickling(failure: BaseException | None, future: Future[Any] | None) -> bool:
    """True if a whole chunk failed because something in it could not be pickled."""
    if failure is None and future is not None and future.done() and not future.cancelled():
        failure = future.exception()
    if failure is None:
        return False
    text = f"{type(failure).__name__} {failure}".lower()
    return "pickl" in text or "serializ" in text  # PicklingError included


def _current_loop() -> object:
    if "trio" in sys.modules:
        import trio

        if trio.lowlevel.in_trio_run():
            return trio.lowlevel.current_trio_token()
    return asyncio.get_running_loop()


def _fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` with notes of its own (``copy.copy`` may share them: tblib,
    which Dask installs, makes exceptions copy their ``__dict__`` by reference)."""
    try:
        new = type(exc).__new__(type(exc), *exc.args)
        new.args = exc.args
        new.__dict__.update(exc.__dict__)
    except Exception:
        return exc
    notes = exc.__dict__.get("__notes__")
    if isinstance(notes, list):
        new.__notes__ = list(notes)  # type: ignore[attr-defined]
    new.__cause__, new.__traceback__ = exc.__cause__, exc.__traceback__
    return new


def _label(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__qualname__', fn)!s}()"


class _Chunk:
    """Calls travelling together, and what came back for them."""

    __slots__ = ("calls", "done", "failure", "future", "handle", "kwargs", "outcomes", "waiting")

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.calls: list[Any] = []
        self.kwargs = kwargs
        self.future: Future[Any] | None = None
        self.handle: Any = None
        self.done = anyio.Event()
        self.waiting = 0  # calls of this chunk still awaited by their item
        self.outcomes: list[Any] | None = None
        self.failure: BaseException | None = None


class Batcher:
    """The calls of one node run (a batch: its items) to ``workers``, in chunks.

    Made per run, on the event loop; ``call`` may be awaited by many items at once.
    """

    __slots__ = ("forming", "loop", "owner", "target", "wake", "workers")

    def __init__(
        self,
        workers: RemoteWorkers,
        fn: Callable[..., Any] | None,
        node: object,
        *,
        target: Any = None,
    ) -> None:
        self.workers = workers
        self.owner = node_name(node)
        if fn is not None:
            self.target = workers.check_function(fn, self.owner)
        else:
            self.target = workers.check_target(target, self.owner)
        self.forming: _Chunk | None = None
        self.wake = _waker()
        self.loop = _current_loop()

    def is_current(self) -> bool:
        """True if this batcher belongs to the running event loop."""
        return self.loop is _current_loop()

    async def call(self, data: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``fn(*data, **kwargs)`` on the workers: its result, or its exception raised here."""
        chunk = self.forming
        if chunk is None or chunk.kwargs is not kwargs:
            if chunk is not None:
                self._send(chunk)
            chunk = self.forming = _Chunk(kwargs)
        position = len(chunk.calls)
        chunk.calls.append(data)
        chunk.waiting += 1
        try:
            if len(chunk.calls) >= self.workers.chunksize:
                self._send(chunk)
            # Wait for company: the chunk leaves after a pass of the loop that added nobody.
            while chunk.future is None and chunk.failure is None:
                size = len(chunk.calls)
                await checkpoint()
                if chunk.future is None and chunk.failure is None and len(chunk.calls) == size:
                    self._send(chunk)
            await chunk.done.wait()
            if len(chunk.calls) > 1 and _is_pickling(chunk.failure, chunk.future):
                # One call's data or result could not travel: each goes alone, so that only
                # that one fails.
                chunk.waiting -= 1
                return await self._alone(data, kwargs)
        except BaseException:
            chunk.waiting -= 1
            if chunk.future is None and chunk.failure is None:
                chunk.calls[position] = _WITHDRAWN  # it never left: withdraw the call
                if chunk.waiting == 0 and chunk is self.forming:
                    self.forming = None
            elif chunk.waiting == 0 and chunk.future is not None and not chunk.done.is_set():
                with anyio.CancelScope(shield=True):
                    await self.workers.stop(chunk.future, chunk.handle, chunk.done)
            raise
        chunk.waiting -= 1
        return self._outcome(chunk, position)

    async def _alone(self, data: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        chunk = _Chunk(kwargs)
        chunk.calls.append(data)
        chunk.waiting = 1
        self._send(chunk)
        try:
            await chunk.done.wait()
        except BaseException:
            chunk.waiting = 0
            if chunk.future is not None and not chunk.done.is_set():
                with anyio.CancelScope(shield=True):
                    await self.workers.stop(chunk.future, chunk.handle, chunk.done)
            raise
        chunk.waiting = 0
        return self._outcome(chunk, 0)

    def _send(self, chunk: _Chunk) -> None:
        if chunk is self.forming:
            self.forming = None
        if chunk.waiting == 0:
            return
        try:
            chunk.future, chunk.handle = self.workers.submit(self.target, chunk.kwargs, chunk.calls)
        except Exception as exc:  # not sent (not picklable, no cluster, shut down): all fail
            chunk.failure = exc
            chunk.done.set()
            return
        done, wake = chunk.done, self.wake
        chunk.future.add_done_callback(lambda _: wake(done.set))

    def _outcome(self, chunk: _Chunk, position: int) -> Any:
        if chunk.outcomes is None and chunk.failure is None:
            assert chunk.future is not None
            try:
                chunk.outcomes = chunk.future.result()
            except BaseException as exc:
                chunk.failure = self.workers.unwrap(exc)
        if chunk.failure is not None:
            raise _fresh(chunk.failure)  # each item's own copy, for its own notes
        assert chunk.outcomes is not None
        ok, value = chunk.outcomes[position]
        if ok:
            return value
        if isinstance(value, _Unsendable):
            raise FlowError(
                f"node {self.owner!r}: the function returned a {value.kind} on the worker, "
                f"which cannot be pickled to send it back ({value.why}); return plain data "
                f"(numbers, strings, lists, dicts, dataclasses) and keep clients, locks and "
                f"files on the worker"
            )
        if not isinstance(value, _Failure):  # a thread's exception, as it was raised
            raise value
        # Pickling shares one object between the items that raised the same one: a copy
        # each, so that each carries its own notes.
        error = _fresh(value.exc) if len(chunk.calls) > 1 else value.exc
        error.__cause__ = RemoteTraceback(value.text)
        raise error

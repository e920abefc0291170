"""The node classes: PocketFlow 0.0.3's ``BaseNode`` .. ``AsyncParallelBatchNode`` on anyio.

A node runs in three phases: ``prep(shared)`` reads the shared store, ``exec(prep_res)`` does
the work (retried ``max_retries`` times in all, then ``exec_fallback``), and
``post(shared, prep_res, exec_res)`` writes results and returns the *action* that picks the
next node. The async classes do the same with ``*_async`` methods and run on asyncio or trio.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
import warnings
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import CoroutineType, EllipsisType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled
from typing_extensions import TypeVar, Unpack

from . import events, hooks
from .backend import start_event_loop
from .errors import FlowError, asyncio_under_trio, node_name
from .hooks import PauseRequest, RemoteCalls, Workers, check_chunk_timeout
from .limiter import Limiter, check_limiter, limited
from .local import fresh_local
from .pool import DEFAULT_LIMIT, Errors, check_errors, check_limit, each, each_sync, map_ordered
from .retry import RateLimit, RetryOptions, check_policy, retry_delay

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchNode",
    "Node",
]

if TYPE_CHECKING:
    from .emit import FlowOutput

_Successor = TypeVar("_Successor", bound="BaseNode | None")
#: The type of the shared store a node or flow runs on (Any unless given: Flow[MyStore]).
S = TypeVar("S", default=Any)
_NO_KWARGS: dict[str, Any] = {}
_batchers: weakref.WeakKeyDictionary[BaseNode, RemoteCalls] = weakref.WeakKeyDictionary()
_checkpoint = checkpoint  # run_async's own parameter is called checkpoint


if TYPE_CHECKING:
    from typing import Generic as _Generic
else:

    class _Generic:
        """``Flow[Store]`` is ``Flow`` at run time: the store's type is for type checkers
        (a real ``typing.Generic`` base would cost every step a few percent)."""

        __slots__ = ()

        def __class_getitem__(cls, item: Any) -> Any:
            return cls


class BaseNode(_Generic[S]):
    """A step of a flow, with ``params`` and the ``successors`` that actions lead to.

    Generic over the type of the shared store (``Flow[MyStore]``, a TypedDict or a
    dataclass), so that a type checker checks what ``run`` is given; unparameterized, the
    store is ``Any``.

    ``a >> b`` makes ``b`` follow ``a`` on the ``"default"`` action, ``a - "x" >> b`` on
    action ``"x"``; both return ``b`` so chains read left to right.
    """

    #: Shown in notes, errors and reprs; defaults to the class name.
    name: str | None = None

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.successors: dict[str, BaseNode | None] = {}

    def set_params(self, params: dict[str, Any]) -> None:
        """Replace ``self.params``. A flow calls this on each node it runs, with its own params."""
        self.params = params

    def next(
        self, node: _Successor, action: str = "default", *, _stacklevel: int = 2
    ) -> _Successor:
        """Run ``node`` after this one when ``post`` returns ``action``; returns ``node``."""
        if not isinstance(action, str):
            raise TypeError(
                f"Action must be a string: {node_name(self)}.next(..., action={action!r})"
            )
        if node is not None and not isinstance(node, BaseNode):
            raise TypeError(
                f"{node_name(self)} >> {node!r}: a successor must be a node or a flow "
                f"(a BaseNode, or a function decorated with @node), not {type(node).__name__}"
            )
        if action in self.successors:
            warnings.warn(f"Overwriting successor for action '{action}'", stacklevel=_stacklevel)
        self.successors[action] = node
        return node

    def prep(self, shared: Any) -> Any:
        """Read what ``exec`` needs from the shared store; the result is passed to ``exec``."""

    def exec(self, prep_res: Any) -> Any:
        """Do the work on ``prep_res``, without touching the shared store (it may be retried)."""

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Write results to the shared store; return the action that picks the next node.

        ``None`` is the default action (the successor wired with plain ``>>``).
        """

    def _exec(self, prep_res: Any) -> Any:
        return self.exec(prep_res)

    def _run(self, shared: Any) -> Any:
        p = self.prep(shared)
        e = self._exec(p)
        return self.post(shared, p, e)

    async def _run_async(self, shared: Any) -> Any:
        # A sync node inside an async flow runs inline, as in PocketFlow.
        return self._run(shared)

    def _needs_loop(self) -> bool:
        """True if running this node needs an event loop (it or a node it contains is async)."""
        return False

    def run(
        self,
        shared: S,
        *,
        backend: str | None = None,
        on_event: events.Observer | Sequence[events.Observer] | None = None,
        progress: bool = False,
        checkpoint: Any = None,
        run_id: str | None = None,
        answers: Mapping[str, Any] | None = None,
        durability: hooks.Durability | None = None,
        share: bool = False,
    ) -> Any:
        """Run this node (a flow: the whole flow) and return its action.

        Sync nodes run right here. A node that needs an event loop (an async node, or a flow
        containing one) runs in a new one of ``backend`` (``"asyncio"`` by default, or
        ``"trio"``); inside a running event loop, ``await run_async(shared)`` instead.
        ``on_event`` receives every :class:`~flowfn.Event` of the run; ``progress=True`` adds
        a progress bar for batches (on stderr).

        ``checkpoint`` (an SQLite file path, or a :class:`~flowfn.CheckpointStore`) makes the
        run durable: each finished step and batch item is recorded there, and running again
        with the same ``run_id`` resumes the run where it stopped (see docs/durable.md). If a
        step asks for input (``flowfn.ask``), the run pauses and returns
        :class:`~flowfn.Paused`; ``answers`` ({question id: answer}) resumes it.
        ``durability`` says when a finished step or item counts as recorded: ``"async"`` (the
        default) commits records in groups as they come, off the event loop; ``"sync"`` lets
        a step or item count as finished only once its record is committed, so that after a
        crash only what was running runs again (docs/durable.md). ``share=True`` (with a
        ``postgresql://`` checkpoint) shares the run's parallel batches with helpers in other
        processes (:func:`flowfn.work`; docs/durable.md, "Across machines").
        """
        if self.successors:
            warnings.warn("Node won't run successors. Use Flow.", stacklevel=2)
        try:
            with events.observing(_observers(on_event, progress), self), fresh_local():
                if (
                    checkpoint is not None
                    or run_id is not None
                    or answers is not None
                    or durability
                    or share
                ):
                    return start_event_loop(
                        self._run_durable,
                        shared,
                        checkpoint,
                        run_id,
                        answers,
                        durability,
                        share,
                        backend=backend,
                        who=node_name(self),
                    )
                # A run started inside a step of a durable run is not part of that run.
                with hooks.detached():
                    if backend is None and not self._needs_loop():
                        return self._run(shared)
                    return start_event_loop(
                        self._run_async, shared, backend=backend, who=node_name(self)
                    )
        except (RuntimeError, TypeError) as exc:
            asyncio_under_trio(exc, on_trio=backend == "trio")
            raise

    async def _run_durable(
        self,
        shared: Any,
        checkpoint: Any,
        run_id: str | None,
        answers: Mapping[str, Any] | None = None,
        durability: hooks.Durability | None = None,
        share: bool = False,
    ) -> Any:
        if checkpoint is None:
            raise TypeError(
                f"{node_name(self)}: run_id=, answers=, durability= and share= are about a run "
                f"in a checkpoint; pass checkpoint= too"
            )
        return await hooks.run_durable(
            self,
            shared,
            checkpoint,
            run_id,
            answers=answers,
            durability=durability or "async",
            share=share,
        )

    async def run_async(
        self,
        shared: S,
        *,
        on_event: events.Observer | Sequence[events.Observer] | None = None,
        progress: bool = False,
        checkpoint: Any = None,
        run_id: str | None = None,
        answers: Mapping[str, Any] | None = None,
        durability: hooks.Durability | None = None,
        share: bool = False,
    ) -> Any:
        """Run this node (a flow: the whole flow) in the current event loop; see :meth:`run`."""
        await _checkpoint()  # as every async call of trio and anyio is: cancelled, nothing runs
        if self.successors:
            warnings.warn("Node won't run successors. Use AsyncFlow.", stacklevel=2)
        try:
            with events.observing(_observers(on_event, progress), self), fresh_local():
                if (
                    checkpoint is not None
                    or run_id is not None
                    or answers is not None
                    or durability
                    or share
                ):
                    return await self._run_durable(
                        shared, checkpoint, run_id, answers, durability, share
                    )
                if not hooks.active:
                    return await self._run_async(shared)
                with hooks.detached():
                    return await self._run_async(shared)
        except (RuntimeError, TypeError) as exc:
            asyncio_under_trio(exc)
            raise

    def stream(
        self,
        shared: S,
        *,
        buffer: float = 0,
        **run_options: Any,
    ) -> AbstractAsyncContextManager[FlowOutput]:
        """Run this flow in the background of an ``async with`` block, handing out what its
        steps ``await flowfn.emit(...)``::

            async with flow.stream(shared) as output:
                async for token in output:
                    print(token, end="")
            action = output.result

        ``buffer`` values may wait for the consumer (0: each emit waits until it is taken).
        Leaving the block with an exception or a cancellation cancels the flow; leaving it
        normally waits for the flow to end. ``run_options`` go to :meth:`run_async`
        (``on_event=``, ``checkpoint=``, ...).
        """
        from .emit import stream_run

        return stream_run(self, shared, buffer, run_options)

    def __rshift__(self, other: _Successor) -> _Successor:
        return self.next(other, _stacklevel=3)  # warnings point at the user's `a >> b`

    def __sub__(self, action: str) -> _ConditionalTransition:
        if isinstance(action, str):
            return _ConditionalTransition(self, action)
        raise TypeError(
            f"Action must be a string, got {type(action).__name__} {action!r}: "
            f'write `{node_name(self)} - "action" >> next_node`'
        )

    #: False for subclasses with ``__slots__`` or custom pickling state, which copy.copy honours.
    _plain_copy = True
    #: True only for Flow and AsyncFlow themselves: a flow walking them walks their steps.
    _walked_inline = False
    #: Which phases the walk may call itself, instead of ``_run``/``_run_async``: SYNC for
    #: a Node class, ASYNC for an AsyncNode class, that overrides none of ``_run``,
    #: ``_run_async`` and ``_exec`` (0 for every other class). Checked once per class.
    _inline_phases = 0
    #: A step the walk awaits as ``await node._direct(shared=shared)``, with no copy, no
    #: params and no ``_run_async`` around it (an ``async def f(shared)`` function node
    #: with nothing else to do: see FunctionNode); ``None`` for every other node.
    _direct: Callable[..., Awaitable[Any]] | None = None
    #: The same for a sync flow's walk: ``node._direct_sync(shared=shared)`` (a ``def
    #: f(shared)`` function node with nothing else to do).
    _direct_sync: Callable[..., Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._walked_inline = False
        cls._inline_phases = _phases_of(cls)
        if not hasattr(cls, "prep_async"):  # a sync node class (not an AsyncNode's)
            _refuse_async_phases(cls)
        cls._plain_copy = not any(vars(k).get("__slots__") for k in cls.__mro__[:-1]) and all(
            getattr(cls, hook, None) is getattr(object, hook, None)
            for hook in ("__getstate__", "__setstate__", "__reduce__", "__reduce_ex__")
        )
        # A subclass's __copy__ or set_params (PocketFlow hooks, its own or a mixin's) is
        # what the walk calls. (A method patched onto the class later is not seen.)
        if cls.__copy__ is not BaseNode.__copy__:
            cls._step_copy = cls.__copy__
        if cls.set_params is not BaseNode.set_params:
            cls._step_params = cls.set_params
        cls._plain_step = (
            cls._plain_copy
            and cls._step_copy is BaseNode.__copy__
            and cls._step_params is BaseNode.set_params
        )

    def __copy__(self) -> BaseNode:
        # Flows copy every node they step into: this is copy.copy's result, several times faster.
        cls = self.__class__
        if cls._plain_copy:
            new = cls.__new__(cls)
            new.__dict__ = self.__dict__.copy()
            return new
        return copy._reconstruct(self, None, *self.__reduce_ex__(4))  # type: ignore[attr-defined,no-any-return]

    # What a flow's walk calls for each step: the node to run (PocketFlow's per-step copy) and
    # the params to give it. Aliases, not wrappers, so the walk pays nothing for them; nodes
    # whose run depends on nothing but the shared store run as they are (see FunctionNode).
    _step_copy = __copy__
    _step_params = set_params
    #: Neither hook overridden, a plain ``__dict__``: the walk makes the step's copy itself.
    _plain_step = True

    def __repr__(self) -> str:
        cls, name = type(self).__name__, node_name(self)
        label = cls if name == cls else f"{cls} {name!r}"
        return f"<{label} successors={list(self.successors)}>"


SYNC, ASYNC = 1, 2


def _phases_of(cls: type[BaseNode]) -> int:
    """``_inline_phases`` of a subclass of Node or AsyncNode (set on those two below)."""
    node, async_node = globals().get("Node"), globals().get("AsyncNode")
    if async_node is not None and issubclass(cls, async_node):
        same = ("_run_async", "_exec", "_run")
        return ASYNC if all(getattr(cls, m) is getattr(async_node, m) for m in same) else 0
    if node is not None and issubclass(cls, node):
        same = ("_run_async", "_exec", "_run")
        plain = (BaseNode._run_async, node._exec, BaseNode._run)
        return SYNC if all(getattr(cls, m) is f for m, f in zip(same, plain, strict=True)) else 0
    return 0


def _refuse_async_phases(cls: type[BaseNode]) -> None:
    """A sync node's phases are called without await: an ``async def`` there would hand a
    coroutine object on (PocketFlow stores it in the shared store). Say so at once."""
    for phase in ("prep", "exec", "post", "exec_fallback"):
        fn = vars(cls).get(phase)
        if fn is not None and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{cls.__name__}.{phase} is an async def, but {cls.__name__} is a sync node "
                f"that would never await it. Derive {cls.__name__} from AsyncNode (or "
                f"AsyncFlow, AsyncBatchNode, ...) and name the method {phase}_async."
            )


def call_exec(node: Any, prep_res: Any) -> Any:
    """Run on the worker: a class node's sync ``exec`` (see ``AsyncNode(workers=...)``)."""
    return node.exec(prep_res)


def _observers(
    on_event: events.Observer | Sequence[events.Observer] | None, progress: bool
) -> events.Observer | Sequence[events.Observer] | None:
    if not progress:
        return on_event
    given = () if on_event is None else on_event if isinstance(on_event, Sequence) else (on_event,)
    return (*given, hooks.progress())


class _ConditionalTransition:
    """The ``node - "action"`` half of ``node - "action" >> successor``."""

    def __init__(self, src: BaseNode, action: str) -> None:
        self.src, self.action = src, action

    def __rshift__(self, tgt: _Successor) -> _Successor:
        return self.src.next(tgt, self.action, _stacklevel=3)

    def __repr__(self) -> str:
        return f"<transition {node_name(self.src)} - {self.action!r} >> ?>"


class Node(BaseNode[S]):
    """A node whose ``exec`` is tried ``max_retries`` times in all, ``wait`` seconds apart.

    ``cur_retry`` holds the 0-based attempt during ``exec``. When the last attempt raises,
    ``exec_fallback(prep_res, exc)`` decides: its return value stands for ``exec``'s, and
    by default it re-raises ``exc``.
    """

    cur_retry: int
    #: Wait ``wait * backoff**attempt`` seconds after a failed attempt, at most ``max_wait``,
    #: spread by ``jitter`` (0.1 = +-10%). The defaults give PocketFlow's constant ``wait``.
    backoff: float = 1.0
    max_wait: float | None = None
    jitter: float = 0.0
    #: Seconds one attempt of ``exec_async`` may take (async nodes; then TimeoutError).
    timeout: float | None = None
    #: Shared by every copy of the node: at most ``per_second`` attempts start per second.
    rate_limit: RateLimit | None = None
    #: Async nodes only: an Executor or RayWorkers on which ``exec`` runs (see AsyncNode).
    workers: Any = None
    _remote: Workers | None = None
    #: Async nodes only: a Limiter (or anyio CapacityLimiter) shared with other nodes.
    limiter: Limiter | anyio.CapacityLimiter | None = None

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        backoff: float = 1.0,
        max_wait: float | None = None,
        jitter: float = 0.0,
        timeout: float | None = None,
        per_second: float | None = None,
        workers: Any = None,
        chunksize: int | None = None,
        limiter: Limiter | anyio.CapacityLimiter | None = None,
    ) -> None:
        super().__init__()
        owner = node_name(self)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool):
            raise TypeError(
                f"{owner}: max_retries is the number of attempts and must be an int >= 1, "
                f"got {max_retries!r}"
            )
        if max_retries < 1:
            raise ValueError(
                f"{owner}: max_retries is the number of attempts and must be an int >= 1, "
                f"got {max_retries!r}"
            )
        check_policy(
            owner,
            wait=wait,
            backoff=backoff,
            max_wait=max_wait,
            jitter=jitter,
            timeout=timeout,
            per_second=per_second,
        )
        self.max_retries, self.wait = max_retries, wait
        if (backoff, max_wait, jitter, timeout) != (1.0, None, 0.0, None):
            self.backoff, self.max_wait, self.jitter, self.timeout = (
                backoff,
                max_wait,
                jitter,
                timeout,
            )
        if per_second is not None:
            self.rate_limit = RateLimit(per_second)
        if workers is not None or chunksize is not None:
            self._use_workers(workers, chunksize)
        if limiter is not None:
            if not hasattr(self, "prep_async"):  # never silently ignored: refused
                raise TypeError(
                    f"{owner}: limiter= holds a slot around each attempt in an event loop, "
                    f"which needs an async node: derive {type(self).__name__} from AsyncNode "
                    f"(or use @node)"
                )
            self.limiter = check_limiter(limiter, owner)

    def _use_workers(self, workers: Any, chunksize: int | None) -> None:
        owner, cls = node_name(self), type(self)
        if not hasattr(self, "prep_async"):
            raise TypeError(
                f"{owner}: workers= sends exec to other workers and awaits it, which needs an "
                f"async node: derive {cls.__name__} from AsyncNode (or AsyncBatchNode, "
                f"AsyncParallelBatchNode) and keep exec a plain def"
            )
        if isinstance(workers, str) or workers is None:
            raise ValueError(
                f"{owner}: a node class's workers= must be a concurrent.futures.Executor or "
                f"flowfn.ray.RayWorkers(), got {workers!r} (the strings are for @node)"
            )
        remote = hooks.remote_workers(workers, chunksize, owner)
        assert remote is not None  # not a string, so remote workers (or an error)
        if cls.exec_async is not AsyncNode.exec_async:  # type: ignore[attr-defined]
            raise TypeError(
                f"{owner}: with workers= the node's sync exec runs on the workers in place "
                f"of exec_async, but {cls.__name__} defines exec_async; move that work "
                f"into exec (a plain def), or drop workers="
            )
        if cls.exec is BaseNode.exec:
            raise TypeError(f"{owner}: workers= runs the node's exec there; define exec")
        check_chunk_timeout(remote, self.timeout, owner)
        self.workers, self._remote = workers, remote

    def _retry_delay(self, failed_attempt: int) -> float:
        return retry_delay(failed_attempt, self.wait, self.backoff, self.max_wait, self.jitter)

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        """Called with the last exception once every attempt of ``exec`` has failed.

        What it returns is used as ``exec``'s result. The default re-raises ``exc``.
        """
        raise exc

    def _plain_attempt(self) -> bool:
        """One attempt of ``exec`` does all ``_exec`` would: the walk may call it itself."""
        return self.max_retries == 1 and self.timeout is None and self.rate_limit is None

    def _refuse_coroutine(self, result: Any) -> None:
        result.close()
        raise _coroutine_from_sync_exec(self)

    def _exec_failed(self, prep_res: Any, exc: Exception) -> Any:
        """The only attempt of ``exec`` raised ``exc`` (not a PauseRequest): as ``_exec``."""
        _observe_failure(self, 0, exc)
        return self.exec_fallback(prep_res, exc)

    def _exec(self, prep_res: Any) -> Any:
        for i in range(self.max_retries):
            self.cur_retry = i
            try:
                if self.rate_limit is not None:
                    self.rate_limit.wait_sync()
                if self.timeout is None:
                    result = self.exec(prep_res)
                else:
                    started = time.monotonic()
                    result = self.exec(prep_res)
                    if time.monotonic() - started > self.timeout:
                        raise _late(self)
            except PauseRequest:
                raise  # a step asking for input: not a failure to retry or fall back from
            except Exception as e:
                _observe_failure(self, i, e)
                if i == self.max_retries - 1:
                    return self.exec_fallback(prep_res, e)
                if self.wait > 0:
                    time.sleep(self._retry_delay(i))
                continue
            if result.__class__ is CoroutineType:  # a mistake to fix, not a failure to retry
                result.close()
                raise _coroutine_from_sync_exec(self)
            return result
        return None  # unreachable: max_retries >= 1


def _late(node: Node) -> TimeoutError:
    """The error of an attempt that returned after its ``timeout``: its result is dropped."""
    return TimeoutError(
        f"node {node_name(node)!r}: the attempt took longer than timeout={node.timeout} s. "
        f"It could not be interrupted (sync code, a worker thread or a blocking call), so it "
        f"ran to its end, and its result was dropped"
    )


def _coroutine_from_sync_exec(node: Node) -> FlowError:
    return FlowError(
        f"node {node_name(node)!r}: exec returned a coroutine, which a sync Node would store "
        f"unawaited. Derive the class from AsyncNode and implement exec_async (awaiting what "
        f"it calls), or await the call inside an async function."
    )


def _observe_failure(node: Node, attempt: int, exc: Exception, last: bool | None = None) -> None:
    """A failed attempt: a ``retry`` event, or ``fallback`` after the last one (``last``:
    by default, the attempt ``max_retries`` allows last)."""
    watch = events.current()
    if watch is not None:
        if last is None:
            last = attempt == node.max_retries - 1
        kind: events.EventKind = "fallback" if last else "retry"
        watch.emit(kind, node, attempt=attempt, error=exc, item=events.current_item())


def _batch_items(node: BaseNode, items: Any, *, allow_async: bool = False) -> Iterable[Any]:
    if items is None:
        return ()
    if isinstance(items, (list, tuple)):
        return items
    if isinstance(items, (str, bytes, bytearray)):
        raise TypeError(
            f"{node_name(node)}: a batch's items must be an iterable of items such as a list, "
            f"got {type(items).__name__} {items!r:.80}, which would be iterated character by "
            f"character; return [value] for a single item"
        )
    if isinstance(items, AsyncIterable):
        if allow_async:
            return items  # type: ignore[return-value]  # the async batches pull it themselves
        raise TypeError(
            f"{node_name(node)}: prep returned an async iterable; only async batch nodes "
            f"(AsyncBatchNode, AsyncParallelBatchNode, @batch/@parallel_batch) can pull it"
        )
    try:
        iter(items)
    except TypeError:
        if not items:  # PocketFlow's `items or []`: 0 and False mean no items
            return ()
        raise TypeError(
            f"{node_name(node)}: a batch node's prep must return an iterable of items "
            f"(or None for none), got {type(items).__name__} {items!r:.80}"
        ) from None
    return items  # type: ignore[no-any-return]


class BatchNode(Node[S]):
    """A node whose ``exec`` runs once per item of what ``prep`` returns, one after another.

    ``post`` receives the list of results in item order.
    """

    def _exec(self, items: Any) -> Any:
        where = f"batch node {node_name(self)!r}"
        return each_sync(super()._exec, _batch_items(self, items), where=where, node=self)


class AsyncNode(Node[S]):
    """A node with async phases: ``prep_async``, ``exec_async``, ``post_async``.

    Retries wait with ``anyio.sleep``, so they can be cancelled. Runs under asyncio or trio.
    """

    async def prep_async(self, shared: Any) -> Any:
        """The async ``prep``: read what ``exec_async`` needs from the shared store."""

    async def exec_async(self, prep_res: Any) -> Any:
        """The async ``exec``: do the work, retried up to ``max_retries`` attempts in all.

        With ``workers=`` set, the default runs the node's ``exec`` there instead.
        """
        if self._remote is not None:
            return await self._exec_remote(prep_res)

    async def _exec_remote(self, prep_res: Any) -> Any:
        # The node travels with each call, as it is at that moment (params, attributes,
        # cur_retry), without what only makes sense here: its successors, its workers.
        shipped = copy.copy(self)
        shipped.successors = {}
        for local_only in ("workers", "_remote", "rate_limit"):
            shipped.__dict__.pop(local_only, None)
        # One batcher per node and event loop, so that the items of a batch travel together.
        batcher = _batchers.get(self)
        if batcher is None or not batcher.is_current():
            assert self._remote is not None
            self._remote.check_target(shipped, node_name(self))  # a clear error, at once
            batcher = self._remote.calls(None, self, target=call_exec)
            with contextlib.suppress(TypeError):  # a node class that is not hashable
                _batchers[self] = batcher
        return await batcher.call((shipped, prep_res), _NO_KWARGS)

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        """The async ``exec_fallback``: the default re-raises ``exc``.

        Never called for a cancellation: that always propagates.
        """
        raise exc

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """The async ``post``: write results to the shared store and return the action."""

    async def _exec(self, prep_res: Any) -> Any:
        if (
            self.max_retries == 1
            and self.timeout is None
            and self.rate_limit is None
            and self.limiter is None
        ):  # one plain attempt, the common case: no loop to set up
            self.cur_retry = 0
            try:
                return await self.exec_async(prep_res)
            except PauseRequest:
                raise
            except Exception as e:
                asyncio_under_trio(e)
                _observe_failure(self, 0, e)
                return await self.exec_fallback_async(prep_res, e)
        for i in range(self.max_retries):
            self.cur_retry = i
            try:
                if self.rate_limit is not None:
                    await self.rate_limit.wait()
                if self.limiter is not None:  # a limit shared with other nodes: one slot
                    async with limited(self.limiter):
                        return await self._attempt(prep_res)
                if self.timeout is None:
                    return await self.exec_async(prep_res)
                return await self._attempt(prep_res)
            except PauseRequest:
                raise  # a step asking for input: not a failure to retry or fall back from
            except Exception as e:
                # asyncio-only code under trio fails the same way every time: no retry.
                last = asyncio_under_trio(e) or i == self.max_retries - 1
                _observe_failure(self, i, e, last)
                if last:
                    return await self.exec_fallback_async(prep_res, e)
                # Between attempts: a checkpoint, so that a cancelled flow retries no more.
                await (anyio.sleep(self._retry_delay(i)) if self.wait > 0 else checkpoint())
        return None  # unreachable: max_retries >= 1

    def _plain_attempt(self) -> bool:
        return (
            self.max_retries == 1
            and self.timeout is None
            and self.rate_limit is None
            and self.limiter is None
        )

    async def _exec_failed_async(self, prep_res: Any, exc: Exception) -> Any:
        """The only attempt of ``exec_async`` raised ``exc`` (no PauseRequest): as ``_exec``."""
        asyncio_under_trio(exc)
        _observe_failure(self, 0, exc)
        return await self.exec_fallback_async(prep_res, exc)

    async def _attempt(self, prep_res: Any) -> Any:
        """One attempt of ``exec_async``, within ``timeout``."""
        if self.timeout is None:
            return await self.exec_async(prep_res)
        with anyio.fail_after(self.timeout) as scope:
            result = await self.exec_async(prep_res)
        # A thread job is shielded and a blocking call cannot be interrupted: an attempt
        # that comes back after its deadline timed out all the same, unless the flow
        # itself was cancelled meanwhile (then that cancellation goes on).
        if anyio.current_time() >= scope.deadline:
            await checkpoint_if_cancelled()
            raise _late(self)
        return result

    async def _run_async(self, shared: Any) -> Any:
        p = await self.prep_async(shared)
        e = await self._exec(p)
        return await self.post_async(shared, p, e)

    def _run(self, shared: Any) -> Any:
        raise RuntimeError("Use run_async.")

    def _single_plain_attempt(self) -> bool:
        """True when ``exec_async`` alone does what the retry loop would: one attempt, no
        timeout, rate limit or fallback to apply, and nobody watching for retry events."""
        return (
            self.max_retries == 1
            and self.timeout is None
            and self.rate_limit is None
            and self.limiter is None
            and type(self).exec_fallback_async is AsyncNode.exec_fallback_async
            and events.current() is None
        )

    def _needs_loop(self) -> bool:
        return True


class AsyncBatchNode(AsyncNode[S], BatchNode[S]):
    """An async batch node: ``exec_async`` runs once per item, one after another."""

    async def _exec(self, items: Any) -> Any:
        items = _batch_items(self, items, allow_async=True)
        where = f"batch node {node_name(self)!r}"
        return await each(super()._exec, items, where=where, node=self)


class AsyncParallelBatchNode(AsyncNode[S], BatchNode[S]):
    """An async batch node whose items run concurrently, at most ``limit`` at once.

    Items are pulled lazily from what ``prep_async`` returns by a pool of ``limit`` workers
    (default ``DEFAULT_LIMIT``; ``None`` for no bound), and ``post_async`` gets the results in
    item order. If an item raises (after its retries and fallback), the items still running
    are cancelled and the exception reaches the caller with a note naming the node and the
    item index. ``cur_retry`` is shared by all items, so read it only in sequential nodes.
    """

    limit: int | None = DEFAULT_LIMIT
    #: "fail_fast" (default), or "collect": every item runs and ``post_async`` gets a
    #: :class:`BatchResults` with each failed item's exception in its place.
    errors: Errors = "fail_fast"

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        limit: int | EllipsisType | None = ...,
        errors: Errors | EllipsisType = ...,
        workers: Any = None,
        chunksize: int | None = None,
        **policy: Unpack[RetryOptions],
    ) -> None:
        super().__init__(max_retries, wait, workers=workers, chunksize=chunksize, **policy)
        if not isinstance(limit, EllipsisType):
            self.limit = check_limit(limit, type(self).__name__)
        if not isinstance(errors, EllipsisType):
            self.errors = check_errors(errors, type(self).__name__)

    async def _exec(self, items: Any) -> Any:
        name = node_name(self)
        if self._single_plain_attempt():  # one frame less per item on the hot path
            self.cur_retry = 0
            run_item = self.exec_async
        else:
            run_item = super()._exec
        return await map_ordered(
            run_item,
            _batch_items(self, items, allow_async=True),
            limit=self.limit,
            where=f"parallel batch node {name!r}",
            errors=self.errors,
            node=self,
        )


Node._inline_phases, AsyncNode._inline_phases = SYNC, ASYNC

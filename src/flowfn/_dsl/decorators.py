"""The functional DSL: ``@node``, ``@batch`` and ``@parallel_batch`` turn functions into nodes.

A decorated function is a node of the engine (it composes with ``>>`` and ``- "action" >>``
and mixes with class nodes in any flow) and stays callable as the plain function, so steps
can be unit-tested without a flow. Sync functions run inline when the whole flow is sync,
and in a worker thread inside an event loop (``workers="inline"`` keeps them on the loop).
"""

from __future__ import annotations

import functools
import math
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    MutableMapping,
    Sized,
)
from concurrent.futures import Executor
from typing import Any, Generic, Literal, TypeVar, cast, overload

import anyio
from typing_extensions import ParamSpec, Unpack

from .._durable.cache import Cache, as_cache, cached_call, is_missing, keep
from .._engine import events, hooks
from .._engine.binding import _RESERVED, Bound
from .._engine.errors import FlowError, node_name
from .._engine.flows import BatchFlow
from .._engine.hooks import check_chunk_timeout
from .._engine.limiter import Limiter
from .._engine.local import note_written, wrote_it
from .._engine.nodes import (
    AsyncBatchNode,
    AsyncNode,
    AsyncParallelBatchNode,
    BaseNode,
    BatchNode,
    Node,
    _batch_items,
)
from .._engine.pool import DEFAULT_LIMIT, Errors, check_errors, check_limit, map_ordered
from .._engine.retry import RetryOptions
from .._workers.remote import RemoteWorkers, remote_workers

__all__ = [
    "FunctionBatchFlow",
    "FunctionBatchNode",
    "FunctionNode",
    "FunctionParallelBatchNode",
    "batch",
    "node",
    "parallel_batch",
]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
Workers = Literal["thread", "process", "inline"] | Executor | RemoteWorkers
Items = str | Callable[[Any], Iterable[Any]]

_RETRY_KEYS = ("backoff", "max_wait", "jitter", "timeout", "per_second", "limiter")


class NodeOptions(RetryOptions, total=False):
    """The keyword options of ``@node``, ``@batch`` and ``@parallel_batch``."""

    retries: int  # extra attempts after the first (PocketFlow's max_retries - 1)
    wait: float  # seconds to wait between attempts
    into: str | None  # store the return value (the list of results) in shared[into]
    overwrite: bool  # let into= replace a key that is already in shared
    name: str | None  # the node's name in notes, errors and pictures
    workers: Workers  # where sync functions run in event loops: "thread", "process", "inline",
    # a concurrent.futures.Executor or flowfn.ray.RayWorkers(...)
    chunksize: int | None  # calls per remote task, for an Executor (RayWorkers takes its own)
    cache: Cache | bool | None  # keep results in the checkpoint store, per call (or item)
    limiter: Limiter | anyio.CapacityLimiter | None  # a limit shared with other nodes


# What a step's retry loop hands to exec: the shared store, the function's data, the
# thread limiter (or the batcher of remote calls) and the function's named arguments.
_Job = tuple[Any, tuple[Any, ...], anyio.CapacityLimiter | hooks.RemoteCalls | None, dict[str, Any]]


def _check_action(owner: BaseNode, action: Any, where: str) -> str | None:
    if action is None or isinstance(action, str):
        return action
    raise FlowError(
        f"node {node_name(owner)!r}: {where} returned {type(action).__name__} {action!r:.60}, "
        f"but that return value is the node's action (a string, or None for 'default'). "
        f"Write results to shared, or pass into='key' to store the return value there."
    )


class _Steps(BaseNode):
    """What the decorated function and the attached phases share: config, binding, calls."""

    kind = "node"
    n_data = 0
    role = "node function"

    def _setup(
        self,
        fn: Callable[..., Any],
        *,
        into: str | None,
        overwrite: bool,
        name: str | None,
        workers: Workers,
        chunksize: int | None = None,
    ) -> None:
        _check_name_and_overwrite(fn, name, overwrite)
        # __name__, __doc__ and __wrapped__ (so inspect.signature) of the function
        functools.update_wrapper(cast(Any, self), fn)
        self.name = name or getattr(fn, "__name__", None) or type(self).__name__
        self._remote: hooks.Workers | None = remote_workers(workers, chunksize, self.name)
        if into is not None and not isinstance(into, str):
            raise TypeError(f"{self.name}: into= must be a key (str), got {into!r}")
        self.fn: Callable[..., Any] = fn
        self.into, self.overwrite, self.workers = into, overwrite, workers
        # Where the function runs: "thread", "process", "inline", or the remote workers.
        self._where: str | hooks.Workers = self._remote or cast(str, workers)
        self._work = Bound(fn, self.n_data, role=self.role, owner=node_name(self))
        elsewhere = workers == "process" or self._remote is not None
        if elsewhere and any(n in _RESERVED for n, _ in self._work.inject):
            raise TypeError(
                f"{self.name}: with workers={_show(workers)} the function runs in another "
                f"process, where writes to 'shared', 'params' or 'local' would be lost; take "
                f"the values it needs as parameters (params by name) and return its result "
                f"(into= or post)"
            )
        if workers == "process" or (self._remote is not None and not self._remote.by_value):
            _check_importable(fn, self.name, workers)
        if elsewhere and self._work.is_async:
            raise TypeError(
                f"{self.name}: workers={_show(workers)} runs sync functions elsewhere, but "
                f"{self._work.label} is async and would run on the event loop; make it a plain "
                f"def, or drop workers="
            )
        if self._remote is not None:
            check_chunk_timeout(self._remote, getattr(self, "timeout", None), self.name)
        self._prep: Bound | None = None
        self._post: Bound | None = None
        self._fallback: Bound | None = None
        self._refresh()

    def _phases(self) -> Iterator[Bound]:
        yield from (b for b in (self._work, self._prep, self._post, self._fallback) if b)

    def _check_into(self, shared: Any) -> None:
        if self.into is None:
            return
        if not isinstance(shared, MutableMapping):
            raise TypeError(
                f"node {self.name!r}: into={self.into!r} needs a dict-like shared store, "
                f"got {type(shared).__name__}"
            )
        if (
            self.into in shared
            and not self.overwrite
            and not wrote_it(self.into, self._work, shared[self.into])
        ):
            raise FlowError(
                f"node {self.name!r}: shared[{self.into!r}] already exists and into= would "
                f"overwrite it. Pass overwrite=True to replace it, or choose another key."
            )

    def _finish(self, shared: Any, p: Any, e: Any) -> Any:
        if self._post is not None:
            if self.into is not None:  # stored first: post sees it there too
                self._store(shared, e)
            return _check_action(self, self._post.call(self, shared, (shared, p, e)), "post")
        return self._store(shared, e)

    async def _finish_async(self, shared: Any, p: Any, e: Any) -> Any:
        if self._post is not None:
            if self.into is not None:
                self._store(shared, e)
            action = await self._post.acall(self, shared, (shared, p, e))
            return _check_action(self, action, "post")
        return self._store(shared, e)

    def _store(self, shared: Any, e: Any) -> Any:
        if self.into is not None:
            # Checked again here: a concurrent run may have written the key meanwhile.
            self._check_into(shared)
            shared[self.into] = e
            note_written(self.into, self._work, e)  # a loop back here may replace it
            return None
        if self.kind != "node":
            return None
        if e is None or e.__class__ is str:
            return e
        return _check_action(self, e, self._work.label)

    def _refresh(self) -> None:
        # One plain attempt (nothing to retry, time, rate-limit or fall back on) lets a run
        # skip the retry machinery when nobody observes it; with no prep or post either,
        # a single-function node is just a call.
        self._plain = (
            getattr(self, "_cache", None) is None
            and getattr(self, "limiter", None) is None
            and getattr(self, "max_retries", 1) == 1
            and getattr(self, "timeout", None) is None
            and getattr(self, "rate_limit", None) is None
            and self._fallback is None
        )
        self._simple = self._plain and self.kind == "node" and not (self._prep or self._post)
        # A single function that takes nothing but `shared` (or `local`) depends on nothing
        # a flow's params or a copy would give it: the walk runs the node itself, as is.
        self._as_is = self._simple and all(n in ("shared", "local") for n, _ in self._work.inject)
        # `async def f(shared)` whose result is the action: the walk awaits it itself.
        work = self._work
        direct = self._as_is and work.only_shared and self.into is None
        self._direct = work.fn if direct and work.is_async else None
        # `def f(shared)` in a sync walk (in an async one, it runs where workers= says).
        self._direct_sync = work.fn if direct and not work.is_async else None

    def post(self, fn: F) -> F:  # type: ignore[override]
        """Attach ``post(shared, prep_res, exec_res)``; its return value is the action.
        With ``into=``, the result is stored first, and post may branch on it."""
        self._post = Bound(fn, 3, role="post", owner=node_name(self))
        self._refresh()
        return fn

    def fallback(self, fn: F) -> F:
        """Attach ``fallback(*data, exc)``: called after the last failed attempt, its return
        value stands for the function's (by default the exception propagates)."""
        self._fallback = Bound(fn, self.n_data + 1, role="fallback", owner=node_name(self))
        self._refresh()
        return fn

    def __repr__(self) -> str:
        return f"<@{self.kind} {self.name!r} successors={list(self.successors)}>"


class FunctionNode(_Steps, AsyncNode, Generic[P, R]):
    """A node made by ``@node``: see :func:`node`."""

    _exec_sync = Node._exec

    def __init__(self, fn: Callable[P, R], **options: Unpack[NodeOptions]) -> None:
        retries = options.pop("retries", 0)
        # Named before the options are checked, so that errors name the function.
        self.name = options.get("name") or getattr(fn, "__name__", None) or type(self).__name__
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise TypeError(f"{self.name}: retries must be an int >= 0, got {retries!r}")
        if retries < 0:
            raise ValueError(f"{self.name}: retries must be an int >= 0, got {retries!r}")
        self._cache = as_cache(options.pop("cache", None), self.name)
        AsyncNode.__init__(
            self,
            max_retries=retries + 1,
            wait=options.pop("wait", 0),
            **{k: options.pop(k) for k in _RETRY_KEYS if k in options},  # type: ignore[misc]
        )
        self._setup(
            fn,
            into=options.pop("into", None),
            overwrite=options.pop("overwrite", False),
            name=options.pop("name", None),
            workers=options.pop("workers", "thread"),
            chunksize=options.pop("chunksize", None),
        )
        if options:
            known: tuple[str, ...] = _NODE_OPTIONS
            if self.kind != "parallel_batch":
                known = tuple(o for o in known if o not in ("limit", "errors"))
            raise _unknown_options(self.name, options, known)
        reads = [n for n, _ in self._work.inject if n in ("shared", "local")]
        if self._cache is not None and self._cache.key is None and reads:
            raise TypeError(
                f"{self.name}: cache= keys each call by the function's arguments, but it also "
                f"reads {reads[0]!r}, which the key cannot see (a cached result could be "
                f"wrong for another store); give Cache(key=...) a function of its data, or "
                f"take the values it needs as parameters"
            )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the plain function, as if it were not decorated."""
        return cast(R, self.fn(*args, **kwargs))

    def prep(self, fn: F) -> F:
        """Attach ``prep(shared)``; the decorated function then receives its result first."""
        self._prep = Bound(fn, 1, role="prep", owner=node_name(self))
        if self.kind == "node":
            self.n_data = 1
            self._work = Bound(self.fn, 1, role="exec function", owner=node_name(self))
            if self._fallback is not None:  # it now receives prep's result too
                self.fallback(self._fallback.fn)
        self._refresh()
        return fn

    # -- the engine hooks -------------------------------------------------------------
    # A job carries what one attempt needs; the named arguments are bound once per node
    # run, so a missing param fails the step at once: never retried, collected or
    # handed to the fallback.
    def exec(self, job: _Job) -> Any:
        """One attempt: call the decorated function (or return its cached result)."""
        shared, data, _, kwargs = job
        if self._cache is None:
            return self._work.call(self, shared, data, kwargs)
        key, kept = cached_call(self._cache, self, self.fn, data, kwargs)
        if not is_missing(kept):
            return kept
        result = self._work.call(self, shared, data, kwargs)
        keep(self._cache, key, result)
        return result

    def exec_fallback(self, job: _Job, exc: Exception) -> Any:
        """Call the attached ``@fn.fallback``, or re-raise ``exc`` if there is none."""
        if self._fallback is None:
            raise exc
        shared, data, _, _ = job
        return self._fallback.call(self, shared, (*data, exc))

    async def exec_async(self, job: _Job) -> Any:
        """One attempt: await the function, or run a sync one where ``workers=`` says."""
        shared, data, limiter, kwargs = job
        if self._cache is None:
            return await self._work.acall(
                self, shared, data, workers=self._where, limiter=limiter, kwargs=kwargs
            )
        key, kept = cached_call(self._cache, self, self.fn, data, kwargs)
        if not is_missing(kept):
            return kept
        result = await self._work.acall(
            self, shared, data, workers=self._where, limiter=limiter, kwargs=kwargs
        )
        keep(self._cache, key, result)
        return result

    def _single_plain_attempt(self) -> bool:
        return self._plain and events.current() is None

    def _step_copy(self) -> BaseNode:
        return self if self._as_is else BaseNode.__copy__(self)

    def _step_params(self, params: dict[str, Any]) -> None:
        if not self._as_is:
            self.params = params

    async def exec_fallback_async(self, job: _Job, exc: Exception) -> Any:
        """Call (or await) the attached ``@fn.fallback``, or re-raise ``exc``."""
        if self._fallback is None:
            raise exc
        shared, data, _, _ = job
        return await self._fallback.acall(self, shared, (*data, exc))

    def _needs_loop(self) -> bool:
        return (
            self._where == "process"
            or self._remote is not None
            or self.limiter is not None  # its slots are held in an event loop
            or any(bound.is_async for bound in self._phases())
        )

    def _default_prep(self, shared: Any) -> Any:
        return None

    def _jobs(
        self, shared: Any, p: Any, limiter: anyio.CapacityLimiter | hooks.RemoteCalls | None
    ) -> Any:
        kwargs = self._work.kwargs(self, shared)
        return (shared, (p,) if self._prep is not None else (), limiter, kwargs)

    def _limiter(self) -> anyio.CapacityLimiter | hooks.RemoteCalls | None:
        if self._remote is not None:  # the calls of this run travel together
            return self._remote.calls(self._work.fn, self)
        return None

    async def _exec_items(self, shared: Any, p: Any) -> Any:
        return await self._exec(self._jobs(shared, p, self._limiter()))

    def _run(self, shared: Any) -> Any:
        if self._simple and (not events._active or events.current() is None):
            if self.into is not None:
                self._check_into(shared)
            action = self._work.call(self, shared, ())
            if self.into is None and (action is None or action.__class__ is str):
                return action  # the common case, without the call to _store
            return self._store(shared, action)
        self._check_into(shared)
        p = (
            self._default_prep(shared)
            if self._prep is None
            else self._prep.call(self, shared, (shared,))
        )
        e = self._exec_sync(self._jobs(shared, p, None))
        return self._finish(shared, p, e)

    async def _run_async(self, shared: Any) -> Any:
        if self._simple and (not events._active or events.current() is None):
            if self.into is not None:
                self._check_into(shared)
            work = self._work
            if work.is_async and work.only_shared:  # `async def f(shared)`: the common case
                return self._store(shared, await work.fn(shared=shared))
            return self._store(shared, await work.acall(self, shared, (), workers=self._where))
        self._check_into(shared)
        if self._prep is None:
            p = self._default_prep(shared)
        else:
            p = await self._prep.acall(self, shared, (shared,))
        e = await self._exec_items(shared, p)
        return await self._finish_async(shared, p, e)


class _ItemSteps(_Steps):
    """What batch nodes add: items from ``items=`` or a prep, and one job per item."""

    n_data = 1
    role = "item function"
    _items: Bound | str | None

    def _bind_items(self, items: Items | None) -> None:
        if items is None or isinstance(items, str):
            self._items = items
            return
        if not callable(items):
            raise TypeError(
                f"{self.name}: items= must be a shared-store key (a str, e.g. items='docs') "
                f"or a function of the shared store (items=lambda shared: ...), got "
                f"{type(items).__name__} {items!r:.60}; to use fixed items, write "
                f"items=lambda shared: {items!r:.40}"
            )
        bound = Bound(items, 1, role="items", owner=node_name(self))
        if bound.is_async:
            raise TypeError(
                f"{self.name}: items= must be a sync function (it runs on the event loop "
                f"before the items); to pull items from an async source, return an async "
                f"iterable from it, or attach an async @{self.name}.prep"
            )
        self._items = bound

    def prep(self, fn: F) -> F:
        """Attach ``prep(shared)`` returning the items (instead of ``items=``)."""
        self._prep = Bound(fn, 1, role="prep", owner=node_name(self))
        return fn

    def _phases(self) -> Iterator[Bound]:
        yield from super()._phases()
        if isinstance(self._items, Bound):
            yield self._items

    def _default_prep(self, shared: Any) -> Any:
        items = self._items
        if items is None:
            raise FlowError(
                f"{self.kind} node {self.name!r} has no items: pass items='key' or "
                f"items=lambda shared: ..., or attach a prep with @{self.name}.prep"
            )
        if isinstance(items, str):
            try:
                value = shared[items]
            except (KeyError, TypeError):
                raise FlowError(
                    f"{self.kind} node {self.name!r}: items={items!r}, but the shared store "
                    f"has no key {items!r}"
                ) from None
            if isinstance(value, (str, bytes, bytearray)):
                raise TypeError(
                    f"{self.name}: the items of a batch must be an iterable of items such as "
                    f"a list, and items={items!r} names shared[{items!r}], which is not: got "
                    f"{type(value).__name__} {value!r:.60} (it would be iterated character by "
                    f"character). Store a list there, e.g. [{value!r:.40}]"
                )
            return value
        return items.call(self, shared, (shared,))

    @staticmethod
    def _item_of(job: Any) -> Any:
        """The item in a job (or the item itself, as the fast path hands it to the pool):
        what a durable run fingerprints, never the shared store the job carries."""
        if job.__class__ is tuple and len(job) == 4 and job[1].__class__ is tuple:
            return job[1][0] if len(job[1]) == 1 else job[1]
        return job

    def _jobs(
        self, shared: Any, p: Any, limiter: anyio.CapacityLimiter | hooks.RemoteCalls | None
    ) -> Any:
        items = _batch_items(self, p, allow_async=True)
        kwargs = self._work.kwargs(self, shared)
        if isinstance(items, AsyncIterable):
            return _async_jobs(shared, items, limiter, kwargs)
        if isinstance(items, Sized):
            return _SizedJobs(shared, items, limiter, kwargs)
        return ((shared, (item,), limiter, kwargs) for item in items)


def _show(workers: object) -> str:
    return repr(workers) if isinstance(workers, str) else type(workers).__name__ + "(...)"


# What the decorators take besides items= (and, for @parallel_batch, limit= and errors=).
_NODE_OPTIONS = (
    "retries", "wait", "backoff", "max_wait", "jitter", "timeout", "per_second", "limiter",
    "into", "overwrite", "name", "workers", "chunksize", "cache", "items", "limit", "errors",
)  # fmt: skip


def _check_name_and_overwrite(fn: Callable[..., Any], name: object, overwrite: object) -> None:
    """Refuse a ``name=`` that is no non-empty str and an ``overwrite=`` that is no bool,
    naming the decorated function (the name cannot name itself)."""
    label = str(getattr(fn, "__name__", fn))
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(
            f"{label}: name= is the node's name in notes, events and pictures, a non-empty "
            f"str, got {name!r}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(
            f"{label}: overwrite= is True (let into= replace a value already in the store) or "
            f"False, got {overwrite!r}"
        )


def _unknown_options(name: str, options: Any, known: Any) -> TypeError:
    """The error for options a decorator does not take, with what was probably meant."""
    import difflib

    hints = []
    for option in sorted(options):
        if option == "max_retries":
            hints.append(
                "the decorators take retries= (extra attempts after the first: "
                "max_retries=3 is retries=2); max_retries= is the node classes' option "
                "(attempts in all)"
            )
            continue
        if option in ("limit", "errors"):
            hints.append(f"{option}= is for @parallel_batch (items run at once)")
            continue
        close = difflib.get_close_matches(option, known, n=1)
        hints.append(f"{option}=: did you mean {close[0]}=?" if close else f"{option}=: unknown")
    return TypeError(f"{name}: unexpected options {sorted(options)}; " + "; ".join(hints))


def _check_importable(fn: Callable[..., Any], name: str, workers: object = "process") -> None:
    """Process pools find the function in the worker by module and name: refuse, when
    decorating, a function that has none (a lambda, a function defined in another)."""
    qualname = str(getattr(fn, "__qualname__", ""))
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"{name} ({qualname}): with workers={_show(workers)} the function runs in a worker "
            f"process, which imports it by name, so it must be a plain `def` at module "
            f"level, not a lambda or a function defined inside another; or use "
            f"workers='thread' (Ray and Dask take lambdas and closures)"
        )


class _SizedJobs:
    """The jobs for items that have a length, made lazily, keeping the length (for events)."""

    __slots__ = ("items", "kwargs", "limiter", "shared")

    def __init__(
        self,
        shared: Any,
        items: Any,
        limiter: anyio.CapacityLimiter | hooks.RemoteCalls | None,
        kwargs: dict[str, Any],
    ) -> None:
        self.shared, self.items, self.limiter, self.kwargs = shared, items, limiter, kwargs

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[_Job]:
        shared, limiter, kwargs = self.shared, self.limiter, self.kwargs
        return ((shared, (item,), limiter, kwargs) for item in self.items)


async def _async_jobs(
    shared: Any,
    items: AsyncIterable[Any],
    limiter: anyio.CapacityLimiter | hooks.RemoteCalls | None,
    kwargs: dict[str, Any],
) -> AsyncIterator[_Job]:
    async for item in items:
        yield (shared, (item,), limiter, kwargs)


class FunctionBatchNode(_ItemSteps, FunctionNode[P, R], AsyncBatchNode):
    """A node made by ``@batch(items=...)``: the function runs once per item, in order."""

    kind = "batch"
    _exec_sync = BatchNode._exec  # type: ignore[assignment]

    def __init__(
        self, fn: Callable[P, R], *, items: Items | None = None, **options: Unpack[NodeOptions]
    ) -> None:
        FunctionNode.__init__(self, fn, **options)
        self._bind_items(items)


class FunctionParallelBatchNode(_ItemSteps, FunctionNode[P, R], AsyncParallelBatchNode):
    """A node made by ``@parallel_batch(items=...)``: items run at most ``limit`` at once."""

    kind = "parallel_batch"

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        items: Items | None = None,
        limit: int | None = DEFAULT_LIMIT,
        errors: Errors = "fail_fast",
        **options: Unpack[NodeOptions],
    ) -> None:
        FunctionNode.__init__(self, fn, **options)
        self._bind_items(items)
        self.limit = check_limit(limit, node_name(self))
        self.errors = check_errors(errors, node_name(self))

    def _needs_loop(self) -> bool:
        return True

    def _run(self, shared: Any) -> Any:
        raise RuntimeError(f"Use run_async. (parallel batch node {self.name!r} needs a loop)")

    async def _exec_items(self, shared: Any, p: Any) -> Any:
        work = self._work
        if not (work.is_async and self._single_plain_attempt()):
            return await super()._exec_items(shared, p)
        # Nothing to retry or catch: the pool awaits the function itself, its named
        # arguments bound once for the whole batch (the hot path of a parallel batch).
        self.cur_retry = 0
        name = node_name(self)
        kwargs = work.kwargs(self, shared)  # none (the item only): no partial to go through
        return await map_ordered(
            functools.partial(work.fn, **kwargs) if kwargs else work.fn,
            _batch_items(self, p, allow_async=True),
            limit=self.limit,
            where=f"parallel batch node {name!r}",
            errors=self.errors,
            node=self,
        )

    def _limiter(self) -> anyio.CapacityLimiter | hooks.RemoteCalls | None:
        # Sync items run in threads: let as many run as the limit allows, not anyio's 40.
        if self._work.is_async or self.workers != "thread":
            return super()._limiter()
        return anyio.CapacityLimiter(math.inf if self.limit is None else self.limit)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} limit={self.limit}>"


class FunctionBatchFlow(_Steps, BatchFlow, Generic[P, R]):  # type: ignore[misc]
    """A batch flow made by ``@batch(flow=...)`` or ``@parallel_batch(flow=...)``.

    The function returns the param dicts; the sub-flow runs once per dict with the params
    ``{**flow.params, **item}``, one after another or (parallel) at most ``limit`` at once.
    Each run has its own ``local`` scratch dict; the list of them, in item order, goes to
    ``shared[into]`` and to an attached ``post`` as ``exec_res``.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        flow: BaseNode,
        parallel: bool,
        limit: int | None = DEFAULT_LIMIT,
        errors: Errors = "fail_fast",
        into: str | None = None,
        overwrite: bool = False,
        name: str | None = None,
        workers: Workers = "thread",
        retries: int = 0,
        wait: float = 0,
    ) -> None:
        _check_name_and_overwrite(fn, name, overwrite)
        label = name or str(getattr(fn, "__name__", fn))
        if not isinstance(flow, BaseNode):
            raise TypeError(
                f"{label}: flow= must be a flow or node to run per item, got {type(flow).__name__}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise TypeError(f"{label}: retries must be an int >= 0, got {retries!r}")
        if retries < 0:
            raise ValueError(f"{label}: retries must be an int >= 0, got {retries!r}")
        # Named before BatchFlow checks wait=, so that its error names the function.
        self.name = label
        BatchFlow.__init__(self, start=flow, max_retries=retries + 1, wait=wait)
        self.kind = "parallel_batch" if parallel else "batch"
        self._setup(fn, into=into, overwrite=overwrite, name=name, workers=workers)
        self.parallel, self.limit = parallel, check_limit(limit, node_name(self))
        self.errors = check_errors(errors, node_name(self))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the plain function, as if it were not decorated."""
        return cast(R, self.fn(*args, **kwargs))

    def prep(self, fn: Any) -> Any:
        """Always a :class:`TypeError`: the decorated function is already the batch flow's prep."""
        raise TypeError(
            f"{self.name}: a batch flow's decorated function is already its prep (it returns "
            f"the param dicts); attach only @{self.name}.post"
        )

    def fallback(self, fn: F) -> F:
        """Attach ``fallback(params, exc)``: called after the last failed run for one param
        dict; its return value stands for that run's result (by default ``exc``
        propagates)."""
        self._fallback = Bound(fn, 2, role="fallback", owner=node_name(self))
        return fn

    def _retrying(self) -> bool:
        return self.max_retries > 1 or self._fallback is not None

    async def _fallback_run(self, shared: Any, bp: Any, exc: Exception) -> Any:
        if self._fallback is None:
            raise exc
        return await self._fallback.acall(self, shared, (bp, exc), workers=self._where)

    def _fallback_run_sync(self, shared: Any, bp: Any, exc: Exception) -> Any:
        if self._fallback is None:
            raise exc
        return self._fallback.call(self, shared, (bp, exc))

    def _needs_loop(self) -> bool:
        return self.parallel or any(b.is_async for b in self._phases()) or super()._needs_loop()

    def _run_result(self, action: Any, scratch: dict[str, Any] | None) -> Any:
        return scratch

    def _run(self, shared: Any) -> Any:
        # (The sub-flow's own async nodes refuse a sync walk themselves: no graph walk here.)
        if self.parallel or self._work.is_async or self._where == "process":
            raise RuntimeError(f"Use run_async. ({self.kind} flow {self.name!r} needs a loop)")
        self._check_into(shared)
        pr = self._work.call(self, shared, ())
        return self._finish(shared, pr, self._orch_each_sync(shared, pr))

    async def _run_async(self, shared: Any) -> Any:
        self._check_into(shared)
        pr = await self._work.acall(self, shared, (), workers=self._where)
        if self.parallel:
            results = await self._orch_parallel(shared, pr, self.limit, self.errors)
        else:
            results = await self._orch_each(shared, pr)
        return await self._finish_async(shared, pr, results)

    def __repr__(self) -> str:
        start = None if self.start_node is None else node_name(self.start_node)
        return f"<@{self.kind} {self.name!r} flow={start!r} successors={list(self.successors)}>"


# -- the decorators ---------------------------------------------------------------------


@overload
def node(fn: Callable[P, R], /) -> FunctionNode[P, R]: ...
@overload
def node(**options: Unpack[NodeOptions]) -> Callable[[Callable[P, R]], FunctionNode[P, R]]: ...
def node(
    fn: Callable[P, R] | None = None, /, **options: Unpack[NodeOptions]
) -> FunctionNode[P, R] | Callable[[Callable[P, R]], FunctionNode[P, R]]:
    """Make a function a node. Use as ``@node`` or ``@node(retries=3, wait=0.5, ...)``.

    The function receives ``shared``, ``params`` or any param by parameter name and returns
    the action (a string, or ``None`` for ``"default"``); with ``into="key"`` its return value
    is stored in ``shared["key"]`` instead (an existing key only with ``overwrite=True``).
    Attach ``@f.prep`` (then ``f`` receives prep's result first), ``@f.post`` (its return value
    is the action) and ``@f.fallback`` (called after the last failed attempt).

    Options: ``retries`` (extra attempts), ``wait`` (seconds between them), ``backoff``,
    ``max_wait``, ``jitter``, ``timeout`` (per attempt), ``per_second`` (rate limit),
    ``into``, ``overwrite``, ``name``, ``workers`` (where a sync function runs inside an event
    loop: "thread" (default), "process" for CPU-bound work, or "inline" on the loop).
    """

    def make(fn: Callable[P, R]) -> FunctionNode[P, R]:
        return FunctionNode(fn, **options)

    return make if fn is None else make(fn)


@overload
def batch(fn: Callable[P, R], /) -> FunctionBatchNode[P, R]: ...
@overload
def batch(
    *,
    flow: BaseNode,
    into: str | None = None,
    overwrite: bool = False,
    name: str | None = None,
    workers: Workers = "thread",
    retries: int = 0,
    wait: float = 0,
) -> Callable[[Callable[P, R]], FunctionBatchFlow[P, R]]: ...
@overload
def batch(
    *, items: Items | None = None, **options: Unpack[NodeOptions]
) -> Callable[[Callable[P, R]], FunctionBatchNode[P, R]]: ...
def batch(
    fn: Callable[P, R] | None = None,
    /,
    *,
    items: Items | None = None,
    flow: BaseNode | None = None,
    **options: Any,
) -> Any:
    """Run a function once per item, one after another (PocketFlow's ``BatchNode``).

    ``items`` is a shared-store key or ``lambda shared: ...`` (or attach ``@f.prep``); the
    function receives each item first, then ``shared``/``params``/params by name. The list of
    results goes to ``shared[into]`` or to an attached ``@f.post``. Takes :func:`node`'s options.

    With ``flow=sub`` instead, the function returns param dicts and the whole sub-flow runs
    once per dict (PocketFlow's ``BatchFlow``); ``retries=``/``wait=`` and an attached
    ``@f.fallback(params, exc)`` apply to each run, which a retry starts again from the
    beginning (with a fresh ``local``).
    """
    return _batch_decorator(fn, False, items, flow, options)


@overload
def parallel_batch(fn: Callable[P, R], /) -> FunctionParallelBatchNode[P, R]: ...
@overload
def parallel_batch(
    *,
    flow: BaseNode,
    limit: int | None = DEFAULT_LIMIT,
    errors: Errors = "fail_fast",
    into: str | None = None,
    overwrite: bool = False,
    name: str | None = None,
    workers: Workers = "thread",
    retries: int = 0,
    wait: float = 0,
) -> Callable[[Callable[P, R]], FunctionBatchFlow[P, R]]: ...
@overload
def parallel_batch(
    *,
    items: Items | None = None,
    limit: int | None = DEFAULT_LIMIT,
    errors: Errors = "fail_fast",
    **options: Unpack[NodeOptions],
) -> Callable[[Callable[P, R]], FunctionParallelBatchNode[P, R]]: ...
def parallel_batch(
    fn: Callable[P, R] | None = None,
    /,
    *,
    items: Items | None = None,
    flow: BaseNode | None = None,
    **options: Any,
) -> Any:
    """Like :func:`batch`, but items (or sub-flow runs) overlap, at most ``limit`` at once.

    Results keep item order. With ``errors="fail_fast"`` (default), an item that fails after
    its retries and fallback cancels the items still running and its exception reaches the
    caller with a note naming the node and the item; with ``errors="collect"`` every item
    runs and the results (a :class:`BatchResults`) hold each failure's exception in its place.
    Sync functions run in worker threads, up to ``limit`` at once.
    """
    return _batch_decorator(fn, True, items, flow, options)


def _batch_decorator(
    fn: Callable[..., Any] | None,
    parallel: bool,
    items: Items | None,
    flow: BaseNode | None,
    options: dict[str, Any],
) -> Any:
    kind = "parallel_batch" if parallel else "batch"
    if flow is not None:
        allowed = {"name", "workers", "into", "overwrite", "retries", "wait"} | (
            {"limit", "errors"} if parallel else set()
        )
        extra = sorted(set(options) - allowed | ({"items"} if items else set()))
        if extra:
            raise TypeError(
                f"@{kind}(flow=...) runs a sub-flow per param dict and takes only "
                f"{', '.join(sorted(allowed))}; not {extra}"
                + ("" if parallel else " (limit= and errors= are for @parallel_batch)")
            )

    def make(fn: Callable[..., Any]) -> Any:
        if flow is not None:
            chosen = options.get("workers")
            if chosen == "process" or isinstance(chosen, (Executor, RemoteWorkers)):
                label = options.get("name") or getattr(fn, "__name__", fn)
                raise TypeError(
                    f"{label}: @{kind}(flow=...) runs the function returning the param dicts "
                    f"in a thread or inline, not in a process or on remote workers (those "
                    f"are for the steps: give workers= to the sub-flow's nodes)"
                )
            return FunctionBatchFlow(fn, flow=flow, parallel=parallel, **options)
        if parallel:
            return FunctionParallelBatchNode(fn, items=items, **options)
        return FunctionBatchNode(fn, items=items, **options)

    return make if fn is None else make(fn)

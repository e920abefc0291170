"""The bounded worker pool every parallel batch runs on.

``limit`` workers pull ``(index, item)`` pairs from one shared iterator and write each
result into its slot, so results come back in input order while at most ``limit`` items
are in flight and at most ``limit`` items have been pulled ahead. No coroutine is created
before a worker is free for it, so a million-item batch costs memory in proportion to
``limit``, not to the number of items.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled
from anyio.streams.memory import MemoryObjectReceiveStream

from . import events, hooks
from .checkpoints import YIELD_EVERY, cancelled_flag, pacer, stray_cancellation
from .errors import FlowError, add_note, keep_others
from .hooks import PauseRequest

if sys.version_info >= (3, 11):
    _GROUP: type[BaseException] = BaseExceptionGroup  # noqa: F821 - a builtin since 3.11
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup as _GROUP  # type: ignore[import-not-found]

__all__ = [
    "DEFAULT_LIMIT",
    "BatchResults",
    "Errors",
    "check_errors",
    "check_limit",
    "each",
    "each_sync",
    "map_ordered",
    "stream",
]

Errors = Literal["fail_fast", "collect"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LIMIT = 1000
"""Default number of items a parallel batch runs at once.

Batches of up to ``DEFAULT_LIMIT`` items behave exactly as PocketFlow's ``asyncio.gather``
(every item may run at once); larger batches are streamed through that many workers
instead of starting one task per item. Pass ``limit=None`` for no bound at all.
"""

# The pool makes room for results _CHUNK items at a time; at each chunk a worker that went
# from item to item without waiting tests whether the batch is cancelled, and every
# _YIELD_ITEMS items it yields to the event loop (no-op items cost a fifth of a flow's
# steps, hence four times YIELD_EVERY).
_CHUNK = 64
_SLOTS = (None,) * _CHUNK
_CHUNK_MASK = _CHUNK - 1
_YIELD_ITEMS_MASK = 4 * YIELD_EVERY - 1


def check_limit(limit: object, owner: str) -> int | None:
    """Return ``limit`` if it is a valid concurrency limit, else raise a ``ValueError``."""
    if limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1):
        return limit
    raise ValueError(f"{owner}: limit must be a positive int or None (no bound), got {limit!r}")


class BatchResults(list[Any]):
    """The results of a batch run with ``errors="collect"``: one entry per item, in order,
    where a failed item's entry is its exception. ``errors`` maps index -> exception."""

    @property
    def errors(self) -> dict[int, BaseException]:
        """Item index -> the exception it failed with, for the failed items only."""
        return {i: r for i, r in enumerate(self) if isinstance(r, BaseException)}

    @property
    def failed(self) -> int:
        """How many items failed."""
        return sum(isinstance(r, BaseException) for r in self)

    @property
    def succeeded(self) -> int:
        """How many items succeeded."""
        return len(self) - self.failed

    def values(self) -> list[Any]:
        """The results of the items that succeeded, in order."""
        return [r for r in self if not isinstance(r, BaseException)]

    def summary(self) -> str:
        """One line for a log: ``"3 of 4 items succeeded, 1 failed"``."""
        return f"{self.succeeded} of {len(self)} items succeeded, {self.failed} failed"


def check_errors(errors: object, owner: str) -> Errors:
    if errors in ("fail_fast", "collect"):
        return errors
    raise ValueError(f"{owner}: errors must be 'fail_fast' or 'collect', got {errors!r}")


def _batch_events(
    node: object | None, items: object, branches: Sequence[str] | None = None
) -> events.ItemEvents | None:
    """Item events for ``node``'s batch when the run is observed (and batch_start now)."""
    watch = events.current() if node is not None else None
    if watch is None:
        return None
    total = len(items) if isinstance(items, Sized) else None
    watch.emit("batch_start", node, total=total)
    return watch.items(node, branches)


def _batch_done(node: object | None, started: float) -> None:
    watch = events.current() if node is not None else None
    if watch is not None:
        watch.emit("batch_end", node, duration=time.perf_counter() - started)


def each_sync(
    fn: Callable[[T], R], items: Iterable[T], *, where: str, node: object | None = None
) -> list[R]:
    """``[fn(item) for item in items]`` with a note naming the failing item, and events."""
    if hooks.active and node is not None and (run := hooks.current()) is not None:
        return run.run_batch_sync(node, fn, items, _each_sync_plain(where, node))
    return _each_sync_plain(where, node)(fn, items)


def _each_sync_plain(where: str, node: object | None) -> Callable[[Any, Any], list[Any]]:
    return lambda fn, items: _each_sync(fn, items, where, node)


def _each_sync(
    fn: Callable[[T], R], items: Iterable[T], where: str, node: object | None
) -> list[R]:
    seen, started = _batch_events(node, items), time.perf_counter()
    results = []
    for index, item in enumerate(_noting(items, where)):
        token = None if seen is None else seen.start(index)
        try:
            results.append(fn(item))
        except Exception as exc:
            add_note(exc, f"flowfn: item {index} of {where}")
            if seen is not None:
                seen.end(index, token, exc)
            raise
        except BaseException:
            if token is not None:  # KeyboardInterrupt, SystemExit: no event, but no leak
                token.var.reset(token)
            raise
        if seen is not None:
            seen.end(index, token)
    _batch_done(node, started)
    return results


async def each(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    where: str,
    node: object | None = None,
) -> list[R]:
    """The async :func:`each_sync`: one item after another; async iterables are pulled
    one item at a time too (and closed if the batch stops early). Each item is a
    checkpoint: once the batch is cancelled, no further item starts."""
    if hooks.active and node is not None and (run := hooks.current()) is not None:

        async def one_by_one(fn: Any, items: Any, *hooks: Any) -> list[Any]:
            return await _each(fn, items, where, node)

        return await run.run_batch(node, fn, items, one_by_one, reports=False)
    return await _each(fn, items, where, node)


async def _each(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    where: str,
    node: object | None,
) -> list[R]:
    if isinstance(items, AsyncIterable):
        return await _map_ordered(fn, items, 1, where, "fail_fast", node)
    seen, started = _batch_events(node, items), time.perf_counter()
    results = []
    due = pacer()
    for index, item in enumerate(_noting(items, where)):
        if due():
            await checkpoint()
        token = None if seen is None else seen.start(index)
        try:
            results.append(await fn(item))
        except Exception as exc:
            add_note(exc, f"flowfn: item {index} of {where}")
            if seen is not None:
                seen.end(index, token, exc)
            raise
        except BaseException as exc:
            stray = stray_cancellation(exc, f"item {index} of {where}")
            if stray is None:
                if token is not None:
                    token.var.reset(token)
                raise
            add_note(stray, f"flowfn: item {index} of {where}")
            if seen is not None:
                seen.end(index, token, stray)
            raise stray from exc
        if seen is not None:
            seen.end(index, token)
    _batch_done(node, started)
    return results


def _noting(items: Iterable[T], where: str) -> Iterator[T]:
    """``items``, with a note on an exception raised while iterating them: after which item."""
    pending = iter(items)
    pulled = 0
    while True:
        try:
            item = next(pending)
        except StopIteration:
            return
        except Exception as exc:
            after = f" (after item {pulled - 1})" if pulled else ""
            add_note(exc, f"flowfn: iterating the items{after} of {where}")
            raise
        yield item
        pulled += 1


async def map_ordered(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int | None = DEFAULT_LIMIT,
    where: str = "parallel batch",
    errors: Errors = "fail_fast",
    node: object | None = None,
    branches: Sequence[str] | None = None,
    walk: Callable[[Callable[[], bool]], Callable[[T], Awaitable[R]]] | None = None,
) -> list[R]:
    """Await ``fn(item)`` for every item, at most ``limit`` at once, results in input order.

    ``items`` may be any iterable or async iterable; it is pulled lazily, at most ``limit``
    items ahead of the results. On error: the first exception raised by ``fn`` (or by
    iterating ``items``) cancels every other item still running and is re-raised as it is,
    not wrapped in an exception group, with a note ``"flowfn: item <i> of <where>"``. On
    cancellation from outside, every worker is cancelled and the cancellation propagates;
    no task outlives this call. With ``errors="collect"`` every item runs: a failing item's
    exception (with its note) takes its place in the results, returned as
    :class:`BatchResults`. ``node``, if given, is the node whose batch events observers
    get (see ``run(on_event=...)``). ``branches`` names the items when they are the branches
    of a :class:`~flowfn.Parallel` node: notes and events then say ``branch 'weather'``.
    ``walk``, if given, makes the ``fn`` of a run that is not durable from the cancellation
    flag of the pool's workers (a batch flow's walk then tests the flag its worker has).
    """
    limit, errors = check_limit(limit, where), check_errors(errors, where)
    if hooks.active and node is not None and (run := hooks.current()) is not None:

        async def pool(
            fn: Any, items: Any, record: Any, paused: Any, track: Any, wrap: Any
        ) -> list[Any]:
            # A batch flow's walk, made per worker, goes through the journal's wrapper too.
            per_worker = None if walk is None or wrap is None else _wrapped_walk(walk, wrap)
            return await _map_ordered(
                fn, items, limit, where, errors, node, record, paused, track, branches, per_worker
            )

        return await run.run_batch(node, fn, items, pool, reports=True)
    return await _map_ordered(fn, items, limit, where, errors, node, branches=branches, walk=walk)


def _wrapped_walk(
    walk: Callable[[Callable[[], bool]], Callable[[Any], Awaitable[Any]]],
    wrap: Callable[[Callable[[Any], Awaitable[Any]]], Callable[[Any], Awaitable[Any]]],
) -> Callable[[Callable[[], bool]], Callable[[Any], Awaitable[Any]]]:
    return lambda cancelled: wrap(walk(cancelled))


async def _map_ordered(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    limit: int | None,
    where: str,
    errors: Errors,
    node: object | None,
    record: Callable[[int, Any, Any], object] | None = None,
    paused: Callable[[int, Any], None] | None = None,
    track: Callable[[int], list[Any]] | None = None,
    branches: Sequence[str] | None = None,
    walk: Callable[[Callable[[], bool]], Callable[[T], Awaitable[R]]] | None = None,
) -> list[R]:
    results: list[Any] = []
    started = time.perf_counter()
    seen = _batch_events(node, items, branches)
    await _run_pool(
        fn, items, limit, where, errors, results, None, seen, record, paused, track, branches,
        walk,
    )  # fmt: skip
    _batch_done(node, started)
    return BatchResults(results) if errors == "collect" else results


async def _run_pool(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    limit: int | None,
    where: str,
    errors: Errors,
    results: list[Any] | None,
    emit: Callable[[int, Any], Awaitable[None]] | None = None,
    seen: events.ItemEvents | None = None,
    record: Callable[[int, Any, Any], object] | None = None,
    paused: Callable[[int, Any], None] | None = None,
    track: Callable[[int], list[Any]] | None = None,
    branches: Sequence[str] | None = None,
    walk: Callable[[Callable[[], bool]], Callable[[T], Awaitable[R]]] | None = None,
) -> None:
    """The pool behind :func:`map_ordered` and :func:`stream`. Each result goes to its
    slot in ``results`` (slots are made as items are pulled) or, without ``results``, to
    ``await emit(index, result)`` (the stream's backpressure); ``record(index, item,
    result)`` is told of each item that succeeded (a durable run records it), ``paused(index,
    request)`` of each item that asked for input (the batch goes on without it), and
    ``track(index)``, called once per worker, gives a cell whose second place the worker
    keeps at the index of the item it runs (``flowfn.item_key()`` reads it); ``branches``
    names the items in notes (``branch 'weather'`` instead of ``item 1``); ``walk`` makes
    ``fn`` from the workers' cancellation flag (see :func:`map_ordered`).

    Workers start only when they are needed: the task that owns the task group starts
    one, and the rest (up to ``limit``) once every running worker waits inside an item.
    Items that never await are run by one worker, one after another (no task started
    for nothing); items that wait for I/O get up to ``limit`` workers, as in ``gather``.
    A worker that goes from item to item without waiting tests, every 64 items pulled,
    whether the batch is cancelled (then it stops), and yields to the event loop every
    4096 items; a worker that starts once the batch is stopping takes no item.
    """
    pool = _Pool(fn, limit, where, errors, results, emit, seen, record, paused, track, branches)
    escaped: BaseException | None = None
    try:
        await pool.run(items, walk)
    except BaseException as exc:
        # On trio, Ctrl-C reaches the task waiting for the workers, and the task group
        # wraps it in an exception group: raise it as itself, keeping what else failed.
        escaped = _one_of(exc, pool.failure)
        if escaped is exc:
            raise
    if escaped is not None:  # raised out here, so that its __context__ stays its own
        raise escaped
    await pool.finish()


class _Pool:
    """One run of the bounded pool (see :func:`_run_pool`): its state, the workers' twin
    loops (one for an iterable, one for an async iterable) and what they do on a failure.

    The loops keep the pool's shared counters on ``self`` (slots) and what never changes
    in locals. Measured against the closures over one 300-line function's cells that they
    were (items that never await: 100k or a million no-op items, alternated fresh
    processes, CPU time), the split alone cost 1.04-1.13x; counting the workers between
    items at their rare awaits, instead of the busy ones at every item, took that back:
    0.82-0.94x the closures' time on a million no-op items.
    """

    __slots__ = (
        "branches", "emit", "errors", "exhausted", "failure", "fn", "halt", "idle",
        "limit", "lock", "paused", "pool_cancelled", "pulled", "record", "reserved", "results",
        "running", "seen", "source", "spawn", "tg", "track", "wake", "where",
    )  # fmt: skip

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        limit: int | None,
        where: str,
        errors: Errors,
        results: list[Any] | None,
        emit: Callable[[int, Any], Awaitable[None]] | None,
        seen: events.ItemEvents | None,
        record: Callable[[int, Any, Any], object] | None,
        paused: Callable[[int, Any], None] | None,
        track: Callable[[int], list[Any]] | None,
        branches: Sequence[str] | None,
    ) -> None:
        self.fn, self.limit, self.where, self.errors = fn, limit, where, errors
        self.results, self.emit, self.seen, self.record = results, emit, seen, record
        self.paused, self.track, self.branches = paused, track, branches
        self.failure: list[BaseException] = []  # the first one is raised; the others kept on it
        # Why workers take no further item: the failures (fail-fast) and the items that a
        # cancellation stopped (their index). Workers test it before every item.
        self.halt: list[object] = []
        self.pulled = 0  # items taken from the source so far
        self.reserved = 0  # result slots made so far, _CHUNK at a time (trimmed at the end)
        self.running = 0  # workers started and not yet ended
        # Workers not inside an item: started and not yet running, or at one of the loops'
        # awaits between items (a checkpoint, emit, an async pull). Counted there, not at
        # every item: between those awaits a worker is inside an item whenever the owner
        # of the pool can look (it only runs when every worker awaits something).
        self.idle = 0
        self.exhausted = False  # the source has no more items
        self.wake: anyio.Event | None = None  # set when the pool may need another worker
        self.pool_cancelled: Callable[[], bool] = _never
        self.source: Any = None
        self.spawn: Callable[..., object] = _no_spawn
        self.lock: anyio.Lock | None = None

    async def run(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        walk: Callable[[Callable[[], bool]], Callable[[Any], Awaitable[Any]]] | None,
    ) -> None:
        """Start the workers in a task group and wait for them all."""
        if not isinstance(items, AsyncIterable):
            self.source = iter(items)
            pull, work = self.pull, self.work
        else:
            self.source, self.lock = aiter(items), anyio.Lock()
            pull, work = self.apull, self.awork
        try:
            async with anyio.create_task_group() as self.tg:
                # The workers' scopes: the group's. (anyio gives each task a scope of its
                # own, which only its TaskHandle cancels, and the pool keeps no handle.)
                self.pool_cancelled = cancelled_flag()
                self.spawn = _spawner(self.tg)
                if walk is not None:
                    self.fn = walk(self.pool_cancelled)
                await self.grow(pull, work)
        finally:
            aclose = getattr(self.source, "aclose", None)
            if aclose is not None:  # stopped early: let the source clean up, here and now
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def finish(self) -> None:
        """After the workers: raise the failure, or the cancellation, or trim the slots."""
        failure = self.failure
        if failure:
            first = _most_urgent(failure)
            keep_others(first, [e for e in failure if e is not first])
            raise first
        # Workers stopped by a cancellation return quietly; a task group need not notice (on
        # trio, when every worker had ended): the cancellation is raised here, never results.
        await checkpoint_if_cancelled()
        if self.halt:  # stopped, yet nobody around is cancelled: a cancellation nobody asked for
            stopped = sorted(i for i in self.halt if isinstance(i, int))
            raise FlowError(
                f"items {stopped} of {self.where} were cancelled, but not by a cancel scope "
                f"around the flow nor by a failing sibling (on Python 3.10, asyncio cannot tell "
                f"such a cancellation from a real one); the batch has no result for them"
            )
        if self.running:  # asyncio: a task cancelled before its first step never runs guarded
            items = "1 item" if self.running == 1 else f"{self.running} items"
            raise FlowError(
                f"{items} of {self.where} never started: the task of their worker was "
                f"cancelled before it ran, but not by a cancel scope around the flow nor by a "
                f"failing sibling (a task.cancel() from outside flowfn); the batch has no "
                f"result for them"
            )
        if self.results is not None:
            del self.results[self.pulled :]  # the slots reserved beyond the last item

    # -- failures -------------------------------------------------------------------------

    def item(self, index: int) -> str:
        return f"item {index}" if self.branches is None else f"branch {self.branches[index]!r}"

    def reserve(self) -> None:
        self.reserved += _CHUNK
        if self.results is not None:
            self.results.extend(_SLOTS)

    def fail(self, exc: BaseException, what: str) -> None:
        add_note(exc, f"flowfn: {what} of {self.where}")
        self.failure.append(exc)
        self.halt.append(exc)
        if len(self.failure) == 1:
            self.tg.cancel_scope.cancel()

    def source_failed(self, exc: BaseException) -> None:
        after = f" (after item {self.pulled - 1})" if self.pulled else ""
        self.fail(exc, "iterating the items" + after)

    def failed(self, index: int, token: Any, exc: Exception) -> tuple[bool, Any]:
        """An item raised: (go on?, the value to keep). Fails the pool unless collecting.
        The failure is recorded before observers hear of it: an observer's own error
        comes second."""
        seen = self.seen
        if exc.__class__ is PauseRequest:
            if self.paused is not None:
                self.paused(index, exc)  # the item asked for input: the others go on
                if seen is not None:
                    seen.end(index, token)
                return True, None
            collected = False  # a pause is no failure to collect: it stops the batch
        else:
            collected = self.errors == "collect"
        if not collected:
            self.fail(exc, self.item(index))
            if seen is not None:
                seen.end(index, token, exc)
            return False, None
        add_note(exc, f"flowfn: {self.item(index)} of {self.where}")
        if seen is not None:
            seen.end(index, token, exc)
        return True, exc

    def cancelled(self, index: int, token: Any, exc: BaseException) -> tuple[bool, Any]:
        """An item raised a cancellation: a real one goes on up; one that nobody around
        the pool asked for is an error of that item, never a hole in the results."""
        stray = stray_cancellation(exc, f"{self.item(index)} of {self.where}")
        if stray is None:
            self.halt.append(index)
            raise exc
        stray.__cause__ = exc
        return self.failed(index, token, stray)

    # -- workers --------------------------------------------------------------------------

    async def guarded(
        self, work: Callable[[int, Any], Awaitable[None]], index: int, item: Any
    ) -> None:
        # Whatever escapes a worker (an observer's error, KeyboardInterrupt, SystemExit)
        # fails the pool and is re-raised as itself below, never inside an exception group.
        # A worker that starts once the pool is stopping or cancelled takes no item.
        self.idle -= 1  # started
        try:
            if self.halt or self.pool_cancelled():
                self.halt.append(index)
                return
            self.busy_again()
            await work(index, item)
        except anyio.get_cancelled_exc_class():
            self.halt.append(None)  # the other workers stop too, without waiting for a checkpoint
            raise
        except BaseException as exc:
            self.fail(exc, "running the items")
        finally:
            self.running -= 1
            if self.wake is not None:  # the pool's owner waits to see what comes next
                self.wake.set()
                self.wake = None

    def busy_again(self) -> None:
        """A worker goes back into items: if that makes every worker busy, the owner of the
        pool, waiting to see, may start another."""
        if not self.idle and self.wake is not None:
            self.wake.set()
            self.wake = None

    async def grow(self, pull: Callable[[], Awaitable[tuple[int, Any] | None]], work: Any) -> None:
        """Start workers when they are needed: one at first; then, as soon as every running
        worker waits inside an item, the rest up to ``limit`` (items that wait for I/O
        overlap as in ``gather``); until then, wait for that to happen."""
        limit, halt = self.limit, self.halt
        while not halt and not self.exhausted:
            if self.running and self.idle:  # a worker is free to take the next item itself
                self.wake = anyio.Event()
                await self.wake.wait()
                continue
            while limit is None or self.running < limit:
                pair = await pull()
                if pair is None:
                    return
                self.running += 1
                self.idle += 1
                self.spawn(self.guarded, work, *pair)
                if self.running == 1 or not self.running & 16383:
                    break  # the first worker alone first; and a checkpoint now and then
            if limit is not None and self.running >= limit:
                return  # at the limit: the workers pull every item that is left
            await checkpoint()  # let them start before deciding again

    # -- the twin loops: an iterable's, an async iterable's --------------------------------

    async def pull(self) -> tuple[int, Any] | None:
        try:
            item = next(self.source)
        except StopIteration:
            self.exhausted = True
            return None
        except Exception as exc:
            self.source_failed(exc)
            return None
        self.pulled += 1
        if self.pulled > self.reserved:
            self.reserve()
        return self.pulled - 1, item

    async def work(self, index: int, item: Any) -> None:
        # The hot path of every parallel batch: the same loop as ``awork``, with the pull
        # inlined. Sharing one loop (a pull function per item) measured 1.45x slower on a
        # million no-op items, so the two stay apart on purpose.
        fn, seen, record, results, emit = self.fn, self.seen, self.record, self.results, self.emit
        halt, pending, pool_cancelled = self.halt, self.source, self.pool_cancelled
        cell = None if self.track is None else self.track(index)
        while True:
            token = None if seen is None else seen.start(index)
            try:
                value: Any = await fn(item)
            except Exception as exc:
                go_on, value = self.failed(index, token, exc)
                if not go_on:
                    return
            except BaseException as exc:
                go_on, value = self.cancelled(index, token, exc)
                if not go_on:
                    return
            else:
                if seen is not None:
                    seen.end(index, token)
                if record is not None:
                    record(index, item, value)
            if results is not None:
                results[index] = value
            elif emit is not None:
                self.idle += 1
                await emit(index, value)
                self.idle -= 1
                self.busy_again()
            if halt:
                return
            try:
                item = next(pending)
            except StopIteration:
                self.exhausted = True
                return
            except Exception as exc:
                self.source_failed(exc)
                return
            index = self.pulled
            self.pulled = index + 1
            if cell is not None:
                cell[1] = index
            # Once per _CHUNK items (items are pulled one by one, and the slots are made at
            # each multiple of _CHUNK): slots for the next ones.
            if not index & _CHUNK_MASK:
                self.reserve()
                if pool_cancelled() or not index & _YIELD_ITEMS_MASK:
                    self.idle += 1
                    await checkpoint()
                    self.idle -= 1
                    self.busy_again()

    async def apull(self) -> tuple[int, Any] | None:
        assert self.lock is not None
        async with self.lock:  # one anext() at a time: async generators are not reentrant
            if self.exhausted or self.halt:
                return None
            try:
                item = await anext(self.source)
            except StopAsyncIteration:
                self.exhausted = True
                return None
            except Exception as exc:
                self.source_failed(exc)
                return None
        self.pulled += 1
        if self.results is not None:
            self.results.append(None)
        return self.pulled - 1, item

    async def awork(self, index: int, item: Any) -> None:
        fn, seen, record, results, emit = self.fn, self.seen, self.record, self.results, self.emit
        halt, pool_cancelled = self.halt, self.pool_cancelled
        cell = None if self.track is None else self.track(index)
        while True:
            token = None if seen is None else seen.start(index)
            try:
                value: Any = await fn(item)
            except Exception as exc:
                go_on, value = self.failed(index, token, exc)
                if not go_on:
                    return
            except BaseException as exc:
                go_on, value = self.cancelled(index, token, exc)
                if not go_on:
                    return
            else:
                if seen is not None:
                    seen.end(index, token)
                if record is not None:
                    record(index, item, value)
            if results is not None:
                results[index] = value
            elif emit is not None:
                self.idle += 1
                await emit(index, value)
                self.idle -= 1
                self.busy_again()
            if halt:
                return
            self.idle += 1
            pair = await self.apull()
            self.idle -= 1
            if pair is None:
                return
            self.busy_again()
            index, item = pair
            if cell is not None:
                cell[1] = index
            if not index & 63 and (pool_cancelled() or not index & _YIELD_ITEMS_MASK):
                self.idle += 1
                await checkpoint()  # as in ``work``
                self.idle -= 1
                self.busy_again()


def _no_spawn(*args: Any) -> None:  # pragma: no cover - replaced before the first worker
    raise RuntimeError("the pool starts workers only inside its task group")


def _never() -> bool:
    return False


def _spawner(tg: anyio.abc.TaskGroup) -> Callable[..., object]:
    """How the pool starts a worker in ``tg``: on trio, in the trio nursery under anyio's
    group (5 us a task against 20 us through ``start_soon``, which wraps each task in a
    cancel scope and a TaskHandle of its own, that the pool never uses); the workers then
    share the group's cancel status. On asyncio, see :func:`_asyncio_spawner`. Elsewhere,
    ``start_soon``."""
    nursery = getattr(tg, "_nursery", None)
    if nursery is not None and type(nursery).__module__.startswith("trio"):
        return nursery.start_soon  # type: ignore[no-any-return]
    fast = _asyncio_spawner(tg)
    return tg.start_soon if fast is None else fast


def _asyncio_spawner(tg: anyio.abc.TaskGroup) -> Callable[..., object] | None:
    """On asyncio, a worker started in ``tg`` as anyio before 4.14 started every task: an
    asyncio task in the group's cancel scope, with the group's bookkeeping, and no cancel
    scope nor TaskHandle of its own (the pool keeps no handle, and a worker ends only by
    returning or by a cancellation of the group: ``guarded`` catches the rest). What anyio
    4.14 added per task cost 40% of a 5k sub-flow batch (benchmarks/: 17.3 against 10.6
    us a sub-flow), as every resumption of a worker went through its scope.

    Relies on the group's internals as anyio 4.9-4.16 lay them out (checked here, and by
    tests/test_pool_workers.py on the installed anyio); None (``start_soon``) if they differ,
    or if the loop has a task factory of its own."""
    import asyncio

    backend = sys.modules.get("anyio._backends._asyncio")
    group: Any = tg
    scope: Any = getattr(group, "cancel_scope", None)
    if (
        backend is None
        or type(tg) is not getattr(backend, "TaskGroup", None)
        or not hasattr(backend, "_task_states")
        or not hasattr(backend, "TaskState")
        or not all(hasattr(group, a) for a in ("_tasks", "_exceptions", "_on_completed_fut"))
        or not all(hasattr(scope, a) for a in ("_tasks", "_host_task", "_effectively_cancelled"))
    ):
        return None
    loop = asyncio.get_running_loop()
    if loop.get_task_factory() is not None:
        return None
    states, task_state, tasks, scope_tasks = (
        backend._task_states,
        backend.TaskState,
        group._tasks,
        scope._tasks,
    )
    create, parent_id = loop.create_task, id(scope._host_task)

    def done(task: asyncio.Task[Any]) -> None:
        # anyio's own task_done, for a task with no start status and no handle. The task
        # leaves the scope it ended in: the group's, unless an item left a scope of its
        # own open, which start_soon's scope per task reports (it cannot exit) and so
        # does this, as a failure of the worker.
        innermost = states.pop(task).cancel_scope
        innermost._tasks.discard(task)
        tasks.remove(task)
        if group._on_completed_fut is not None and not tasks:
            with contextlib.suppress(asyncio.InvalidStateError):
                group._on_completed_fut.set_result(None)
        if not task.cancelled():
            exc = task.exception()
            if exc is None and innermost is not scope:
                exc = RuntimeError(
                    "an item of a parallel batch entered a cancel scope and never exited "
                    "it (the worker ended inside it): exit every scope an item enters, "
                    "in the task that entered it (a `with` block does)"
                )
            if exc is None:
                return
            if not isinstance(exc, asyncio.CancelledError):
                group._exceptions.append(exc)
        if not scope._effectively_cancelled:
            scope.cancel()

    def spawn(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        task = create(fn(*args))
        states[task] = task_state(parent_id, scope)
        scope_tasks.add(task)
        tasks.add(task)
        task.add_done_callback(done)

    return spawn


def _most_urgent(failure: list[BaseException]) -> BaseException:
    """The failure to raise: the first KeyboardInterrupt or SystemExit, else the first."""
    for exc in failure:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
    return failure[0]


def _one_of(exc: BaseException, failure: list[BaseException]) -> BaseException:
    """The exception to raise for ``exc`` escaping the pool: itself, unless it is an
    exception group, which gives way to the first KeyboardInterrupt or SystemExit in it or
    in the pool's failures, else to the pool's first failure, else to its first leaf that
    is no cancellation; the others are kept on it (see ``other_errors``)."""
    leaves = list(_leaves(exc))
    if len(leaves) == 1 and leaves[0] is exc:
        return exc
    cancel = anyio.get_cancelled_exc_class()
    real = [*failure, *(e for e in leaves if not isinstance(e, cancel) and e not in failure)]
    if not real:
        return exc  # nothing but cancellations: a real cancellation, let it through
    first = _most_urgent(real)
    keep_others(first, [e for e in real if e is not first])
    return first


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    nested = getattr(exc, "exceptions", None)
    if isinstance(exc, _GROUP) and isinstance(nested, tuple):
        for inner in nested:
            yield from _leaves(inner)
    else:
        yield exc


@asynccontextmanager
async def stream(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int | None = DEFAULT_LIMIT,
    errors: Errors = "fail_fast",
    where: str = "stream",
) -> AsyncIterator[MemoryObjectReceiveStream[tuple[int, Any]]]:
    """Run ``fn`` over ``items`` like :func:`map_ordered`, but hand each ``(index, result)``
    over as soon as it is ready, and keep none of them::

        async with flowfn.stream(fetch, urls, limit=10) as results:
            async for index, page in results:
                ...

    Memory stays proportional to ``limit`` however many items there are: at most ``limit``
    results wait for the reader. Leaving the block early cancels the items still running.
    Errors as in :func:`map_ordered`: the first failure cancels the rest and is raised from
    the ``async with`` (with ``errors="collect"``, failures arrive as exception values).
    """
    limit, errors = check_limit(limit, where), check_errors(errors, where)
    send, receive = anyio.create_memory_object_stream[tuple[int, Any]]()
    failure: list[BaseException] = []

    async def emit(index: int, value: Any) -> None:
        await send.send((index, value))

    async def produce() -> None:
        async with send:
            try:
                await _run_pool(fn, items, limit, where, errors, None, emit)
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # re-raised below, not as an exception group
                failure.append(exc)
                tg.cancel_scope.cancel()

    reader_error: list[BaseException] = []
    escaped: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(produce)
            try:
                yield receive
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # the reader's own: raised as it is, not in a group
                reader_error.append(exc)
            finally:
                tg.cancel_scope.cancel()  # the reader is done: stop what is still running
    except BaseException as exc:  # Ctrl-C on trio, in a group: as itself (see _run_pool)
        escaped = _one_of(exc, reader_error + failure)
        if escaped is exc:
            raise
    if escaped is not None:
        raise escaped
    raised = reader_error + failure
    if raised:
        first = _most_urgent(raised)
        keep_others(first, [e for e in raised if e is not first])
        raise first

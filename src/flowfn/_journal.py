"""Durable runs: ``run(shared, checkpoint=..., run_id=...)`` records a run as it goes and
resumes it after a crash, an exception or Ctrl-C without redoing finished work.

What is recorded, and when:

* **Steps.** After each step of a flow's walk (nested flows included): its place (the
  step counters of the walks around it), the node, the action it returned and the shared
  store after it.
* **Batch items.** Each finished item of a batch node (sequential or parallel) with its
  result. The runs of a batch *flow* write to the shared store, so their results are
  recorded together with a copy of the shared store taken after them (at most every
  ``PROGRESS_EVERY`` seconds, and when the batch ends): a resumed run never counts a run
  as finished whose writes it does not have.
* Inside an item (a batch node's function, a batch flow's sub-flow run) nothing is
  recorded: an item that had not finished runs again from its start.

Values are serialised on the event loop's thread (the shared store may change right
after), and written by one writer thread per run in batched transactions, so the steps
and items never wait for the disk. A crash loses at most the records not yet written;
their work is redone on resume.

Resuming restores the shared store of the latest record, goes down the nested walks to
the step after it (or back into the batch it was in), and gives the items recorded as
finished their recorded results without running them; results come back in item order.
A flow's own prep and post run again when the walk re-enters it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
import warnings
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
)
from contextvars import ContextVar
from typing import Any, Literal

import anyio

from . import _events as events
from ._cache import caching
from ._errors import FlowError, add_note, node_name
from ._pause import Paused, PauseRequest, PauseRun, Question
from ._store import CheckpointStore, Record, Saved, load_saved

__all__ = ["Durability", "Journal", "current", "run_durable"]

#: When a finished step or item counts as recorded (``run(durability=...)``).
Durability = Literal["async", "sync"]

#: Seconds between copies of the shared store while a batch flow's runs finish.
PROGRESS_EVERY = 0.25
#: Finished items of a batch node sent to the writer at a time (and at least every
#: PROGRESS_EVERY seconds).
ITEMS_AT_ONCE = 1024

# Durable runs in progress, process-wide: the engine's one-integer fast check.
_active = 0
_journal: ContextVar[Journal | None] = ContextVar("flowfn_journal", default=None)
# Where the code runs: (step counters, node indices) of the walks around it.
_where: ContextVar[tuple[tuple[int, ...], tuple[int, ...]]] = ContextVar(
    "flowfn_where", default=((), ())
)


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """The code inside is not part of the durable run around it (a run started in a step)."""
    if not _active:
        yield
        return
    token, cache_token = _journal.set(None), caching.set(None)
    try:
        yield
    finally:
        _journal.reset(token)
        caching.reset(cache_token)


def current() -> Journal | None:
    """The journal of the durable run this code is part of (None outside one, and inside
    batch items, which are redone whole)."""
    return _journal.get() if _active else None


class _Graph:
    """A flow's nodes in a fixed order (breadth first from the start, successors in the
    order they were added), so that a node has the same index in every process."""

    __slots__ = ("index", "nodes")

    def __init__(self, start: Any) -> None:
        self.nodes: list[Any] = []
        self.index: dict[int, int] = {}
        todo = [start]
        while todo:
            node = todo.pop(0)
            if node is None or id(node) in self.index:
                continue
            self.index[id(node)] = len(self.nodes)
            self.nodes.append(node)
            todo.extend(node.successors.values())


def shape_of(flow: Any) -> str:
    """The flow's structure as text: node classes and names, their successors by action,
    nested flows. A checkpoint only resumes a flow of the same shape."""
    parts: list[str] = []
    inside: set[int] = set()

    def describe(start: Any) -> None:
        graph = _Graph(start)
        parts.append("[")
        for node in graph.nodes:
            successors = {
                a: graph.index[id(n)] if n is not None else None for a, n in node.successors.items()
            }
            parts.append(f"{type(node).__qualname__}:{node_name(node)}:{successors}")
            sub = getattr(node, "start_node", None)
            if sub is not None and id(node) not in inside:
                inside.add(id(node))
                describe(sub)
                inside.discard(id(node))
        parts.append("]")

    describe(flow.start_node)
    return " ".join(parts)


class _Writer:
    """The run's writer thread: saves what the loop hands it, in one transaction per batch
    of records, and every ``PROGRESS_EVERY`` seconds collects the items that the batches
    it watches finished meanwhile."""

    _STOP = object()

    def __init__(self, store: CheckpointStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.watched: set[_Batch] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._loop, name=f"flowfn-checkpoint-{run_id}", daemon=True
        )
        self.thread.start()

    def put(self, record: Record) -> None:
        if self.error is not None:
            raise FlowError(
                f"run {self.run_id!r}: saving the checkpoint failed: {self.error}"
            ) from self.error
        self.queue.put(record)

    def watch(self, batch: _Batch) -> None:
        with self.lock:
            self.watched.add(batch)

    def unwatch(self, batch: _Batch) -> None:
        with self.lock:
            self.watched.discard(batch)

    def _loop(self) -> None:
        while True:
            records = []
            with contextlib.suppress(queue.Empty):
                records.append(self.queue.get(timeout=PROGRESS_EVERY))
                while len(records) < 4096:
                    records.append(self.queue.get_nowait())
            stop = bool(records) and records[-1] is self._STOP
            if stop:
                records.pop()
            with self.lock:
                for batch in self.watched:
                    record = batch.drain()
                    if record is not None:
                        records.append(record)
            if records and self.error is None:
                try:
                    self.store.save(self.run_id, records)
                except BaseException as exc:
                    self.error = exc
            if stop:
                close = getattr(self.store, "close", None)
                if close is not None:
                    close()
                return

    def close(self) -> None:
        """Save what is queued and end the thread (blocks: call from a worker thread)."""
        self.queue.put(self._STOP)
        self.thread.join()


class Journal:
    """One durable run, as the walk and the batches see it (event loop thread only)."""

    def __init__(
        self, store: CheckpointStore, run_id: str, saved: Saved | None, shared: Any
    ) -> None:
        self.store, self.run_id, self.shared = store, run_id, shared
        self.dumps, self.loads = store.serializer.dumps, store.serializer.loads
        self.writer = _Writer(store, run_id)
        last = saved.last if saved is not None else None
        self.seq = 1 if last is None else last.seq + 1
        self.resume: Record | None = last
        self.finished_items = saved.items if saved is not None else {}
        # Items of batches that ended, not serialised yet: the step around each batch is
        # about to be recorded, which makes them moot; they are saved only if it fails.
        self.unsaved: dict[tuple[int, ...], _Batch] = {}
        self._cached: dict[str, tuple[float | None, bytes]] = {}  # kept during this run
        self.answers: dict[str, Any] = {}  # to the questions of flowfn.ask(), by id
        self.names: dict[tuple[int, ...], str] = {}  # the node of each step, by place
        self._graphs: dict[int, _Graph] = {}

    # -- the walk --------------------------------------------------------------------------

    def graph(self, start: Any) -> _Graph:
        graph = self._graphs.get(id(start))
        if graph is None:
            graph = self._graphs[id(start)] = _Graph(start)
        return graph

    def resume_at(self, base: tuple[int, ...]) -> tuple[int, int, bool, str | None] | None:
        """Where a walk at ``base`` starts when resuming: (step counter, node index, whether
        that step is finished, its action), or None to start at the beginning."""
        last = self.resume
        if last is None or len(last.position) <= len(base) or last.position[: len(base)] != base:
            return None
        level = len(base)
        deepest = len(last.position) == level + 1
        if deepest:
            self.resume = None  # below here, everything starts afresh
        finished = deepest and last.done
        return last.position[level], last.nodes[level], finished, last.action

    def step_done(
        self,
        position: tuple[int, ...],
        nodes: tuple[int, ...],
        node: Any,
        action: Any,
        shared: Any,
    ) -> None:
        blob = self.snapshot(shared, node)
        self.unsaved.pop(position, None)  # the finished step makes its items moot
        self.writer.put(
            Record(
                "step",
                self._next(),
                position,
                nodes,
                action if action is None or isinstance(action, str) else repr(action),
                blob,
                node=node_name(node),
            )
        )

    def snapshot(self, shared: Any, node: Any) -> bytes:
        for _ in range(3):
            try:
                return self.dumps(shared)
            except RuntimeError:  # changed while copied (by a step in a worker thread)
                continue
            except Exception as exc:
                raise _unsaveable(self, shared, node, exc) from exc
        return self.dumps(shared)

    def step_name(self, position: tuple[int, ...]) -> str:
        return self.names.get(position, "?")

    def cache_get(self, key: str, now: float) -> Any:
        """The result kept under ``key`` (this run's first, then the store's), or missing."""
        from ._cache import _MISSING

        kept = self._cached.get(key)
        if kept is not None and (kept[0] is None or kept[0] > now):
            return self.loads(kept[1])  # a copy per hit, as from the store
        blob = self.store.cache_get(key, now)
        return _MISSING if blob is None else self.loads(blob)

    def cache_put(self, key: str, value: Any, expires: float | None) -> None:
        try:
            blob = self.dumps(value)
        except Exception:
            return  # a result that cannot be saved is simply not cached
        self._cached[key] = (expires, blob)
        self.writer.put(Record("cache", 0, (), shared=blob, node=key, expires=expires))

    def save_unsaved(self) -> None:
        """The run stops: save the items of batches whose step did not finish."""
        for batch in self.unsaved.values():
            with contextlib.suppress(Exception):
                record = batch.drain(last=True)
                if record is not None:
                    self.writer.put(record)
        self.unsaved.clear()

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    # -- batches ---------------------------------------------------------------------------

    def batch(self, node: Any) -> _Batch:
        position, nodes = _where.get()
        return _Batch(self, node, position, nodes)


class _Batch:
    """The items of one batch of a durable run: which are finished, and recording more.

    A batch of functions queues each finished item; the writer thread collects the queue
    every ``PROGRESS_EVERY`` seconds, and the batch's end collects the rest (on the loop's
    thread, before post sees the results). A batch flow's finished runs are recorded with a
    copy of the shared store, taken on the loop's thread.
    """

    __slots__ = (
        "__weakref__",
        "asked",
        "done",
        "error",
        "flows",
        "journal",
        "last_flush",
        "node",
        "nodes",
        "pending",
        "position",
        "queue",
    )  # fmt: skip

    def __init__(
        self, journal: Journal, node: Any, position: tuple[int, ...], nodes: tuple[int, ...]
    ) -> None:
        self.journal, self.node, self.position, self.nodes = journal, node, position, nodes
        self.done: dict[int, Any] = {}
        for chunk in journal.finished_items.get(position, ()):
            indices, results = journal.loads(chunk)
            self.done.update(zip(indices, results, strict=True))
        # A batch flow's runs, and item functions that take `shared`, write to the shared
        # store: their items are recorded with a copy of it.
        self.flows = hasattr(node, "start_node") or _takes_shared(node)
        self.pending: list[tuple[int, Any]] = []  # a batch flow's finished runs
        self.queue: collections.deque[tuple[int, Any]] = collections.deque()
        self.last_flush = time.monotonic()
        self.error: Exception | None = None  # raised when the batch ends
        self.asked: list[Question] = []  # questions of items that paused
        if not self.flows:
            journal.writer.watch(self)

    def finished(self, index: int, result: Any) -> None:
        """Item ``index`` succeeded with ``result`` (never raises: errors wait for the end)."""
        if not self.flows:
            self.queue.append((index, result))
            return
        self.pending.append((index, result))
        if time.monotonic() - self.last_flush >= PROGRESS_EVERY:
            try:
                self.flush()
            except Exception as exc:
                if self.error is None:
                    self.error = exc

    def paused(self, index: int, request: PauseRequest) -> None:
        """Item ``index`` asked for input: the batch goes on, the run pauses at its end."""
        q = request.question
        self.asked.append(Question(q.id, q.payload, node_name(self.node), index))

    def drain(self, last: bool = False) -> Record | None:
        """The items finished since the last drain, as a record: by the writer thread while
        the batch runs, by the loop's thread (``last``) once nothing else drains it."""
        queue = self.queue
        if last:
            pairs = list(queue)
            queue.clear()
        else:  # the loop may append meanwhile: take only what is there now
            take = queue.popleft
            pairs = [take() for _ in range(len(queue))]
        if not pairs:
            return None
        blob, count = self._serialise(pairs)
        if not count:
            return None
        return Record("items", 0, self.position, items=blob, count=count)

    def _serialise(self, pairs: list[tuple[int, Any]]) -> tuple[bytes, int]:
        """The finished items as one blob, and how many it holds: an item whose result
        cannot be saved is left out (it runs again on resume), with a warning."""
        try:
            return self.journal.dumps(_columns(pairs)), len(pairs)
        except Exception as exc:
            kept = [(i, result) for i, result in pairs if _saveable(self.journal, result)]
            left = sorted({i for i, _ in pairs} - {i for i, _ in kept})
            warnings.warn(
                f"{node_name(self.node)!r}: the results of items {left[:10]} cannot be saved "
                f"in the checkpoint ({type(exc).__name__}: {exc}), so a resumed run runs "
                f"them again",
                RuntimeWarning,
                stacklevel=2,
            )
            if not kept:
                return b"", 0
            return self.journal.dumps(_columns(kept)), len(kept)

    def flush(self) -> None:
        """Send a batch flow's finished runs to the writer, with the shared store."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        journal = self.journal
        items, count = self._serialise(pending)
        blob = journal.snapshot(journal.shared, self.node)
        journal.writer.put(
            Record(
                "progress",
                journal._next(),
                self.position,
                self.nodes,
                None,
                blob,
                done=False,
                items=items if count else None,
                count=count,
                node=node_name(self.node),
            )
        )

    def end(self, failed: bool) -> None:
        """Record what finished (on the loop's thread, before post sees the results); after
        a failure, without hiding that failure. Items that asked for input pause the run."""
        if self.asked and not failed:
            self.end(failed=True)  # record what finished, as when the batch stops
            raise PauseRun(self.asked)
        try:
            if self.flows:
                self.flush()
            else:
                self.journal.writer.unwatch(self)
                if failed:
                    record = self.drain(last=True)
                    if record is not None:
                        self.journal.writer.put(record)
                else:  # left for the step's record, which makes them moot
                    self.journal.unsaved[self.position] = self
        except Exception:
            if not failed:
                raise
        if not failed and self.error is not None:
            raise self.error


def _takes_shared(node: Any) -> bool:
    if getattr(node, "_writes_shared", False):  # parallel branches, for one
        return True
    work = getattr(node, "_work", None)
    return work is not None and any(name == "shared" for name, _ in work.inject)


def _columns(pairs: list[tuple[int, Any]]) -> list[list[Any]]:
    """``[[indices], [results]]``: half the size and time of a list of pairs."""
    return [[index for index, _ in pairs], [result for _, result in pairs]]


def _saveable(journal: Journal, value: Any) -> bool:
    try:
        journal.dumps(value)
    except Exception:
        return False
    return True


def wrap_batch(
    batch: _Batch, fn: Callable[[Any], Awaitable[Any]], items: Iterable[Any] | AsyncIterable[Any]
) -> tuple[Callable[[tuple[int, Any]], Awaitable[Any]], Any]:
    """``fn`` and ``items`` for a durable batch: items numbered, finished ones skipped."""
    done, finished = batch.done, batch.finished

    if not batch.flows:  # the items are functions: nothing inside them walks a flow

        async def run_function(pair: tuple[int, Any]) -> Any:
            index, item = pair
            if done and index in done:  # finished before: its recorded result
                return done[index]
            try:
                result = await fn(item)
            except PauseRequest as request:
                batch.paused(index, request)
                return None
            finished(index, result)
            return result

        return run_function, _numbered(items)

    async def run_flow(pair: tuple[int, Any]) -> Any:
        index, item = pair
        if done and index in done:
            return done[index]
        token = _journal.set(None)  # a run is redone whole: nothing inside is recorded
        try:
            result = await fn(item)
        except PauseRequest as request:
            batch.paused(index, request)
            return None
        finally:
            _journal.reset(token)
        finished(index, result)
        return result

    return run_flow, _numbered(items)


def wrap_batch_sync(
    journal: Journal, node: Any, fn: Callable[[Any], Any], items: Iterable[Any]
) -> tuple[Callable[[tuple[int, Any]], Any], Iterable[tuple[int, Any]], _Batch]:
    batch = journal.batch(node)

    def run(pair: tuple[int, Any]) -> Any:
        index, item = pair
        if index in batch.done:
            return batch.done[index]
        token = _journal.set(None)
        try:
            result = fn(item)
        except PauseRequest as request:
            batch.paused(index, request)
            return None
        finally:
            _journal.reset(token)
        batch.finished(index, result)
        return result

    return run, enumerate(items), batch


async def durable(
    journal: Journal,
    node: Any,
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    runner: Callable[[Any, Any, Any, Any], Awaitable[list[Any]]],
    *,
    reports: bool,
) -> list[Any]:
    """``runner(fn, items, record)`` (the batch), with finished items recorded and, on
    resume, the recorded ones not run again. A runner that ``reports`` calls
    ``record(index, result)`` for each item that succeeded (the pool does), so a fresh
    batch of functions needs no wrapper around each item."""
    batch = journal.batch(node)
    try:
        if reports and not batch.done and not batch.flows:
            results = await runner(fn, items, batch.queue.append, batch.paused)
        else:
            run, numbered = wrap_batch(batch, fn, items)
            results = await runner(run, numbered, None, None)
    except BaseException:
        batch.end(failed=True)
        raise
    batch.end(failed=False)
    return results


def durable_sync(
    journal: Journal,
    node: Any,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    runner: Callable[[Any, Any], list[Any]],
) -> list[Any]:
    """The sync :func:`durable`."""
    run, numbered, batch = wrap_batch_sync(journal, node, fn, items)
    try:
        results = runner(run, numbered)
    except BaseException:
        batch.end(failed=True)
        raise
    batch.end(failed=False)
    return results


def _numbered(items: Iterable[Any] | AsyncIterable[Any]) -> Any:
    if isinstance(items, AsyncIterable):
        return _anumbered(items)
    sized = hasattr(items, "__len__")
    return _Numbered(items) if sized else enumerate(items)


class _Numbered:
    """``enumerate(items)`` that keeps ``len(items)`` (for batch events and progress)."""

    __slots__ = ("items",)

    def __init__(self, items: Any) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return enumerate(self.items)


async def _anumbered(items: AsyncIterable[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


def _unsaveable(journal: Journal, shared: Any, node: Any, exc: Exception) -> FlowError:
    """The error for a shared store that cannot be saved: which key, after which node."""
    culprit = ""
    if isinstance(shared, MutableMapping):
        for key, value in shared.items():
            try:
                journal.dumps(value)
            except Exception:
                culprit = f"shared[{key!r}] ({type(value).__name__}) "
                break
    return FlowError(
        f"node {node_name(node)!r}: {culprit or 'the shared store '}cannot be saved in the "
        f"checkpoint ({type(exc).__name__}: {exc}). Keep such values out of the shared store "
        f"(in flowfn.local() or a param), or use a serializer that can save them; the run "
        f"stopped after the last step that could be saved"
    )


# -- running -------------------------------------------------------------------------------


async def run_durable(
    root: Any,
    shared: Any,
    checkpoint: Any,
    run_id: str | None,
    *,
    target: str | None = None,
    answers: Mapping[str, Any] | None = None,
    durability: Durability = "async",
) -> Any:
    """Run ``root`` recording into ``checkpoint``; resume ``run_id`` if it is there.

    Returns what the flow returns, or :class:`Paused` if a step asked for input."""
    global _active
    from ._flows import Flow

    store = _store(checkpoint, root)
    if not isinstance(shared, MutableMapping):
        raise TypeError(
            f"{node_name(root)}: a run with checkpoint= needs a dict-like shared store (it is "
            f"saved and restored by key), got {type(shared).__name__}"
        )
    if run_id is None:
        import uuid

        run_id = uuid.uuid4().hex[:12]
    elif not isinstance(run_id, str) or not run_id:
        raise TypeError(f"{node_name(root)}: run_id must be a non-empty str, got {run_id!r}")
    if durability not in ("async", "sync"):
        raise ValueError(
            f"{node_name(root)}: durability must be 'async' (records committed in groups as "
            f"they come) or 'sync' (a step or item counts as finished once its record is "
            f"committed), got {durability!r}"
        )
    flow = root if isinstance(root, Flow) else Flow(root)
    shape = shape_of(flow)
    try:
        initial = store.serializer.dumps(dict(shared))
    except Exception as exc:
        raise FlowError(
            f"{node_name(root)}: the shared store you passed cannot be saved in the checkpoint "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    target = target or getattr(store, "target", None) or _target_of(root)
    meta = {"backend": backend_name(), "durability": durability}
    saved = await anyio.to_thread.run_sync(
        lambda: store.begin(
            run_id, flow=node_name(root), shape=shape, initial=initial, target=target, meta=meta
        )
    )
    journal: Journal | None = None
    try:
        if saved is not None:
            restored = _restore(store, saved, shape, shared, initial, root)
            shared.clear()
            shared.update(restored)
            if saved.status == "done":  # nothing left to do: the store and result it gave
                return _finished(store, saved, shared)
        journal = Journal(store, run_id, saved, shared)
        watch = events.current()
        if saved is not None and watch is not None:
            watch.emit("resume", root)  # this run goes on from a saved one
        if saved is not None and saved.status == "paused" and saved.detail is not None:
            journal.answers.update(_answers(store, saved))
        journal.answers.update(answers or {})
        token, cache_token = _journal.set(journal), caching.set(journal)
        _active += 1
        try:
            result = await flow._run_async(shared)
        finally:
            _active -= 1
            _journal.reset(token)
            caching.reset(cache_token)
        # A plain flow ends with its last step, whose record holds the final store: only a
        # flow with a prep/post of its own may have changed it since.
        detail = _saveable_end(store, None if type(flow) in _plain_flows() else shared, result)
        with anyio.CancelScope(shield=True):
            await _end(store, run_id, journal, "done", None, detail)
        return result
    except (PauseRequest, PauseRun) as pause:
        assert journal is not None
        journal.save_unsaved()
        questions = pause.questions if isinstance(pause, PauseRun) else [pause.question]
        with anyio.CancelScope(shield=True):
            waiting = _waiting(store, questions, journal.answers)
            await _end(store, run_id, journal, "paused", None, waiting)
        return Paused(run_id, questions)
    except BaseException as exc:
        if journal is not None:
            journal.save_unsaved()
            status = "failed" if isinstance(exc, Exception) else "interrupted"
            with anyio.CancelScope(shield=True):
                await _end(store, run_id, journal, status, f"{type(exc).__name__}: {exc}", None)
            add_note(
                exc,
                f"flowfn: run {run_id!r} is saved in {_where_saved(store)}; fix the cause and "
                f"run again with run_id={run_id!r} to resume it",
            )
        raise
    finally:
        store.release(run_id)


async def _end(
    store: CheckpointStore,
    run_id: str,
    journal: Journal | None,
    status: str,
    error: str | None,
    detail: bytes | None,
) -> None:
    def end() -> None:
        if journal is not None:
            journal.writer.close()
            if journal.writer.error is not None and status == "done":
                raise FlowError(
                    f"run {run_id!r}: saving the checkpoint failed: {journal.writer.error}"
                ) from journal.writer.error
        store.finish(run_id, status, error, detail)
        close = getattr(store, "close", None)
        if close is not None:
            close()

    await anyio.to_thread.run_sync(end)


def _store(checkpoint: Any, root: Any) -> CheckpointStore:
    from ._store import SQLiteStore

    if isinstance(checkpoint, (str, os.PathLike)):
        return SQLiteStore(checkpoint)
    if isinstance(checkpoint, CheckpointStore):
        return checkpoint
    raise TypeError(
        f"{node_name(root)}: checkpoint= must be a file path (an SQLite file) or a checkpoint "
        f"store (flowfn.SQLiteStore, or an object with begin/save/finish/release/runs and a "
        f"serializer), got {type(checkpoint).__name__}"
    )


def backend_name() -> str:
    """The backend this run is on: ``"asyncio"`` or ``"trio"``."""
    import asyncio

    return "asyncio" if asyncio._get_running_loop() is not None else "trio"


def _plain_flows() -> tuple[type, ...]:
    from ._flows import AsyncFlow, Flow

    return (Flow, AsyncFlow)


def _saveable_end(store: CheckpointStore, shared: Any, result: Any) -> bytes | None:
    """A finished run's shared store and result, for running it again later."""
    dumps = store.serializer.dumps
    for end in ({"shared": shared, "result": result, "saved": True},
                {"shared": shared, "result": None, "saved": False}):  # fmt: skip
        try:
            return dumps(end)
        except Exception:
            continue
    return None


def _finished(store: CheckpointStore, saved: Saved, shared: Any) -> Any:
    """What running a finished run again gives: its final shared store and its result."""
    end = None
    if saved.detail is not None:
        what = f"the result of run {saved.run_id!r}"
        end = load_saved(store.serializer, saved.detail, what=what, where=_file(store))
    if not isinstance(end, dict) or not end.get("saved"):
        raise FlowError(
            f"run {saved.run_id!r} has finished, but what it returned (or its shared store) "
            f"could not be saved, so it cannot be given again; start a new run_id"
        )
    if end.get("shared") is not None:
        shared.clear()
        shared.update(end["shared"])
    return end["result"]


def _waiting(store: CheckpointStore, questions: list[Question], answers: dict[str, Any]) -> bytes:
    """A paused run's questions and answers so far, as far as they can be saved."""
    dumps = store.serializer.dumps

    def saveable(value: Any) -> Any:
        try:
            dumps(value)
        except Exception:
            return repr(value)  # shown by `flowfn runs show`; the step asks it again
        return value

    kept = {qid: a for qid, a in answers.items() if saveable(a) is a}
    listed = [[q.id, saveable(q.payload), q.node, q.item] for q in questions]
    return dumps({"questions": listed, "answers": kept})


def _where_saved(store: CheckpointStore) -> str:
    return repr(_file(store))


def _file(store: CheckpointStore) -> str:
    path = getattr(store, "path", None)
    return str(path) if path is not None else repr(store)


def _answers(store: CheckpointStore, saved: Saved) -> Any:
    """The answers a paused run had when it paused."""
    assert saved.detail is not None
    what = f"the questions and answers of paused run {saved.run_id!r}"
    waiting = load_saved(store.serializer, saved.detail, what=what, where=_file(store))
    if not isinstance(waiting, dict) or not isinstance(waiting.get("answers"), dict):
        raise FlowError(
            f"checkpoint {_file(store)!r}: {what} cannot be read (not a dict of answers); "
            f"resume from an intact copy, or start a new run_id"
        )
    return waiting["answers"]


def _target_of(root: Any) -> str | None:
    """Where ``root`` can be imported from (``module:name``, or ``path/to/script.py:name``
    for a script run as ``__main__``), for ``flowfn runs resume``; None if it is not at the
    top level of its module."""
    import sys

    candidates = [type(root).__module__]
    for part in (root, getattr(root, "start_node", None)):
        fn = getattr(part, "fn", None)
        candidates.append(getattr(fn, "__module__", None) or type(part).__module__)
    for module_name in dict.fromkeys(candidates):
        if not module_name or module_name.startswith("flowfn"):
            continue
        module = sys.modules.get(module_name)
        if module is None:
            continue
        names = [name for name, value in list(vars(module).items()) if value is root]
        if not names:
            continue
        if module_name != "__main__":
            return f"{module_name}:{names[0]}"
        script = getattr(module, "__file__", None)
        return None if script is None else f"{os.path.abspath(script)}:{names[0]}"
    return None


def _restore(
    store: CheckpointStore, saved: Saved, shape: str, shared: Any, initial: bytes, root: Any
) -> Any:
    """The shared store to resume from, after checking that the run fits this flow."""
    run = repr(saved.run_id)
    if saved.shape != shape:
        raise FlowError(
            f"run {run} in {_where_saved(store)} was made by a flow of another shape (its "
            f"nodes, names or actions differ from {node_name(root)!r}'s now); it cannot "
            f"resume here. Resume it with the flow as it was, or start a new run_id."
        )
    if saved.serializer != store.serializer.name:
        raise FlowError(
            f"run {run} was saved with the {saved.serializer!r} serializer, and this store "
            f"uses {store.serializer.name!r}; open it with the same serializer"
        )

    def loads(blob: bytes, what: str) -> Any:
        return load_saved(store.serializer, blob, what=f"{what} of run {run}", where=_file(store))

    if shared and saved.initial is not None and saved.initial != initial:
        started = loads(saved.initial, "the shared store it started with")
        try:
            same = started == dict(shared)
        except Exception:
            same = False
        if not same:
            raise FlowError(
                f"run {run} started from another shared store than the one passed now; to "
                f"resume it, pass the same shared store it started with, or an empty one "
                f"(the saved state replaces it), or start a new run_id"
            )
    last = saved.last
    if last is not None and last.shared is not None:
        restored = loads(last.shared, f"the shared store after step {last.node!r}")
    else:
        restored = {} if saved.initial is None else loads(saved.initial, "the shared store")
    if not isinstance(restored, dict):
        raise FlowError(
            f"checkpoint {_file(store)!r}: the shared store of run {run} cannot be read (a "
            f"{type(restored).__name__}, not a dict); resume from an intact copy, or start a "
            f"new run_id"
        )
    return restored

"""Durable runs: ``run(shared, checkpoint=..., run_id=...)`` records a run as it goes and
resumes it after a crash, an exception or Ctrl-C, giving what an uninterrupted run gives.

What is recorded, and when:

* **Steps.** After each step of a flow's walk (nested flows included): its place (the
  step counters of the walks around it), the node, the action it returned, the shared
  store after it, and which ``into=`` node wrote which key.
* **Batches.** When a batch starts: the store as its prep left it, and its item count.
  Then each finished item (sequential or parallel) with its result and a fingerprint of
  the item. The runs of a batch *flow* write to the shared store, so they are recorded
  with a copy of it (whenever the writer is free; with ``durability="async"`` at most
  every 3 copy-times): a resumed run never counts a run as finished whose writes it does
  not have.
* Inside an item (a batch node's function, a batch flow's sub-flow run) nothing is
  recorded: an item that had not finished runs again from its start.

One writer thread per run commits in groups: whatever is queued, in one transaction, then
again at once (no timer). With ``durability="sync"`` a step or item counts as finished only
once its record is committed. A crash loses only what was not committed; that work is
redone on resume.

Resuming restores the shared store of the latest record and goes down the nested walks to
the step after it, or back into the batch it was in: there the batch's prep runs again and
the store is put back as the batch's latest record has it; the items recorded as finished
get their recorded results without running (refused if an item moved), and results come
back in item order. A flow's own prep and post run again when the walk re-enters it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import itertools
import os
import pickle
import queue
import threading
import time
import warnings
import zlib
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
    Sized,
)
from contextvars import ContextVar
from typing import Any

import anyio

from .._engine import events, hooks
from .._engine import local as _local
from .._engine.errors import FlowError, add_note, node_name
from .._engine.hooks import Durability
from .._engine.hooks import where as _where
from .cache import caching
from .pause import Paused, PauseRequest, PauseRun, Question
from .store import CheckpointStore, Record, Saved, load_saved

__all__ = ["Durability", "Journal", "current", "item_key", "run_durable"]

# Durable runs in progress, process-wide, are counted in hooks.active: the engine's
# one-integer fast check.
_journal: ContextVar[Journal | None] = ContextVar("flowfn_journal", default=None)
# The batch item whose code runs, for item_key(): a cell [batch, index] (a pool worker keeps
# one, and moves its index from item to item).
_item: ContextVar[list[Any] | None] = ContextVar("flowfn_durable_item", default=None)
# The key of the step around code that is redone whole and not recorded (detached(keep_key)).
_key_base: ContextVar[str | None] = ContextVar("flowfn_durable_key", default=None)


@contextlib.contextmanager
def detached(keep_key: bool = False) -> Iterator[None]:
    """The code inside is not part of the durable run around it (a run started in a step).
    ``keep_key``: it is still part of the step around it, redone whole, and
    :func:`item_key` there gives that step's key (the branches of ``Parallel(merge=...)``)."""
    if not hooks.active:
        yield
        return
    base = _current_key() if keep_key else None
    token, cache_token = _journal.set(None), caching.set(None)
    item_token, base_token = _item.set(None), _key_base.set(base)
    try:
        yield
    finally:
        _journal.reset(token)
        caching.reset(cache_token)
        _item.reset(item_token)
        _key_base.reset(base_token)


def current() -> Journal | None:
    """The journal of the durable run this code is part of (None outside one, and inside
    batch items, which are redone whole)."""
    return _journal.get() if hooks.active else None


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
    nested flows; for a flow built from a document (``from_ir``), the document's hash too.
    A checkpoint only resumes a flow of the same shape."""
    ir_hash = getattr(flow, "ir_hash", None)
    parts: list[str] = [] if ir_hash is None else [f"ir:{ir_hash}"]
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
    """The run's writer thread, committing in groups: it takes everything queued (records,
    and batches whose finished items wait), writes it in one transaction, and goes again at
    once. Under load, commits batch themselves; at low rates each record is on disk within
    one commit of being queued. There is no timer: only a batch flow whose store copies
    cost more than a share of the run waits for its turn (``_Batch.next_flush``).

    Every entry gets a ticket (a counter); ``committed`` is the highest ticket on disk, so a
    step or item of a ``durability="sync"`` run waits until its ticket is committed.
    """

    _STOP = object()

    def __init__(
        self, store: CheckpointStore, run_id: str, wake: Callable[[Callable[[], object]], None]
    ) -> None:
        self.store, self.run_id, self.wake = store, run_id, wake
        self.queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.sent = 0  # tickets handed out (by the loop's thread)
        self.committed = 0  # the highest ticket saved (by the writer thread)
        self.busy = False  # taking entries or saving them
        self.listening = 0  # steps or items of the loop waiting for a commit
        self.woken = False  # the loop has been asked to run on_commit, and has not yet
        # Held while the items of a batch are taken from its queue and serialised, so that
        # the batch's end sees all of them taken or none.
        self.lock = threading.Lock()
        self.done = threading.Condition()  # for sync batches waiting on the loop's thread
        #: Batch flows with finished runs to record once the writer is free (or when due).
        self.wanted: dict[_Batch, None] = {}
        self.on_commit: Callable[[], object] = lambda: None
        self.thread = threading.Thread(
            target=self._loop, name=f"flowfn-checkpoint-{run_id}", daemon=True
        )
        self.thread.start()

    def put(self, entry: Any) -> int:
        """Queue a record (or a batch whose items wait); returns its ticket."""
        if self.error is not None:
            raise self.failed()
        self.sent += 1
        self.queue.put((self.sent, entry))
        return self.sent

    def failed(self) -> FlowError:
        error = FlowError(f"run {self.run_id!r}: saving the checkpoint failed: {self.error}")
        error.__cause__ = self.error
        return error

    def _loop(self) -> None:
        while True:
            try:
                entries = [self.queue.get(timeout=self._due())]
            except queue.Empty:  # a batch flow's turn to record its runs has come
                entries = []
            self.busy = True
            with contextlib.suppress(queue.Empty):
                while len(entries) < 4096:
                    entries.append(self.queue.get_nowait())
            ticket = max((t for t, _ in entries), default=0)  # nudges have ticket 0
            stop = any(entry is self._STOP for _, entry in entries)
            try:
                self._save(entries)
            except BaseException as exc:  # whatever it is, the run hears of it, and no
                if self.error is None:  # step or item waits for a commit forever
                    self.error = exc
            finally:
                if ticket:
                    self.committed = ticket  # (also after an error: the waiters see it)
                self.busy = False
                self._tell(committed=bool(ticket))
            if stop:
                close = getattr(self.store, "close", None)
                if close is not None:
                    close()
                return

    def _save(self, entries: list[tuple[int, Any]]) -> None:
        records = []
        with self.lock:
            for _, entry in entries:
                if entry.__class__ is _Batch:
                    record = entry.drain()
                    if record is not None:
                        records.append(record)
                elif entry.__class__ is Record:
                    records.append(entry)  # (not a nudge, not the end)
        if records and self.error is None:
            self.store.save(self.run_id, records)

    def _due(self) -> float | None:
        """Seconds until the first batch flow waiting for its turn may record, or None (no
        such batch, or the loop has been woken and not yet answered)."""
        wanted = list(self.wanted)
        if not wanted or self.woken:
            return None
        return max(0.0, min(batch.next_flush for batch in wanted) - time.monotonic())

    def _tell(self, committed: bool) -> None:
        """After a pass: wake whoever waits (the loop, sync batches), after a commit, or when
        the turn of a batch flow waiting for it has come. One wake at a time: the loop's
        answer (``on_commit``) sees every commit made until it runs."""
        wake = (committed and (self.listening or self.wanted)) or self._turn_came()
        if wake and not self.woken:
            self.woken = True
            try:
                self.wake(self.on_commit)
            except Exception:  # the loop has ended: nobody waits
                self.woken = False
        with self.done:
            self.done.notify_all()

    def _turn_came(self) -> bool:
        now = time.monotonic()
        return any(batch.next_flush <= now for batch in list(self.wanted))

    def nudge(self) -> None:
        """Make the writer look again at the batch flows waiting for their turn."""
        self.queue.put((0, None))

    def close(self) -> None:
        """Save what is queued and end the thread (blocks: call from a worker thread)."""
        self.sent += 1
        self.queue.put((self.sent, self._STOP))
        self.thread.join()


#: ``share_batches(store, root, run_id)``: how a run with ``share=True`` shares its parallel
#: batches with helpers (``flowfn.persistence._sharing.Sharing``, which builds on the journal:
#: plugged by ``flowfn._durable.work`` so that the journal does not import it back).
share_batches: Callable[[CheckpointStore, Any, str], Any] | None = None


class Journal:
    """One durable run, as the walk and the batches see it (event loop thread only)."""

    #: With ``run(share=True)``: the run's parallel batches, shared with helpers
    #: (``flowfn.persistence._sharing.Sharing``).
    sharing: Any = None

    def __init__(
        self,
        store: CheckpointStore,
        run_id: str,
        saved: Saved | None,
        shared: Any,
        *,
        root: Any,
        durability: Durability = "async",
        wake: Callable[[Callable[[], object]], None],
    ) -> None:
        self.store, self.run_id, self.shared, self.root = store, run_id, shared, root
        self.dumps, self.loads = store.serializer.dumps, store.serializer.loads
        self.sync = durability == "sync"
        self.writer = _Writer(store, run_id, wake)
        self.writer.on_commit = self._committed
        self._commit: anyio.Event | None = None
        last = saved.last if saved is not None else None
        self.seq = 1 if last is None else last.seq + 1
        self.resume: Record | None = last
        self.resumed_from = last
        # Resuming inside a batch: its prep runs again, then the store is put back as the
        # latest record of that batch has it (what finished runs wrote survives the prep).
        self.restore_at = last.position if last is not None and not last.done else None
        self.finished_items = _load_items(store, saved)
        self._cached: dict[str, tuple[float | None, bytes]] = {}  # kept during this run
        self.answers: dict[str, Any] = {}  # to the questions of flowfn.ask(), by id
        self.names: dict[tuple[int, ...], str] = {}  # the node of each step, by place
        self._graphs: dict[int, _Graph] = {}
        # The run's scratch dict, whose `written` says which into= node wrote which key,
        # and where (node indices) each into= node that ran is: recorded with each step.
        self.scratch = _local._scratch.get()
        self.writers: dict[int, tuple[int, ...]] = {}

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
    ) -> int:
        """Record a finished step; returns the record's ticket (see :meth:`until_committed`)."""
        if getattr(node, "into", None) is not None:
            self.writers[id(node._work)] = nodes
        blob = self.snapshot(shared, node)
        return self.writer.put(
            Record(
                "step",
                self._next(),
                position,
                nodes,
                action if action is None or isinstance(action, str) else repr(action),
                blob,
                node=node_name(node),
                owners=self.owners(),
            )
        )

    def owners(self) -> str | None:
        """Which ``into=`` node (by its node indices) wrote which key of the store, as JSON."""
        written = getattr(self.scratch, "written", None)
        if not written:
            return None
        import json

        paths = {
            key: self.writers[id(writer)]
            for key, (writer, _) in written.items()
            if id(writer) in self.writers and isinstance(key, str)
        }
        return json.dumps(paths) if paths else None

    def restore_owners(self, owners: str | None, shared: Any) -> None:
        """After the store was restored: the ``into=`` nodes that wrote its keys may write
        them again (a loop back to them), as in the run that was interrupted."""
        if not owners or not isinstance(self.scratch, _local.Scratch):
            return
        import json

        written: dict[str, tuple[object, object]] = {}
        for key, path in json.loads(owners).items():
            node = self._node_at(path)
            if node is not None and key in shared:
                self.writers[id(node._work)] = tuple(path)
                written[key] = (node._work, shared[key])
        self.scratch.written = written

    def _node_at(self, path: list[int]) -> Any:
        node: Any = None
        start = getattr(self.root, "start_node", None)
        for index in path:
            if start is None:
                return None
            nodes = self.graph(start).nodes
            if index >= len(nodes):
                return None
            node = nodes[index]
            start = getattr(node, "start_node", None)
        return node if getattr(node, "_work", None) is not None else None

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
        from .cache import _MISSING

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

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    # -- waiting for the disk (durability="sync") ------------------------------------------

    def _committed(self) -> None:
        """On the loop's thread, after each commit that someone waits for."""
        self.writer.woken = False
        event, self._commit = self._commit, None
        if event is not None:
            event.set()
        for batch in list(self.writer.wanted):
            batch.flush_when_due(asked=True)

    async def until_committed(self, ticket: int) -> None:
        """Wait until the record with ``ticket`` is on disk."""
        writer = self.writer
        while writer.committed < ticket:
            await self.next_commit(ticket)
        if writer.error is not None:
            raise writer.failed()

    async def next_commit(self, ticket: int | None = None) -> None:
        """Wait for the writer's next commit (at once if ``ticket`` is committed by then)."""
        writer = self.writer
        if self._commit is None:
            self._commit = anyio.Event()
        event = self._commit
        writer.listening += 1  # before the test: a commit after it wakes this wait
        try:
            if ticket is None or writer.committed < ticket:
                await event.wait()
        finally:
            writer.listening -= 1

    def until_committed_sync(self, ticket: int) -> None:
        """:meth:`until_committed`, blocking (sync batches on the loop's thread)."""
        writer = self.writer
        with writer.done:
            writer.done.wait_for(lambda: writer.committed >= ticket)
        if writer.error is not None:
            raise writer.failed()

    # -- batches ---------------------------------------------------------------------------

    async def run_batch(
        self,
        node: Any,
        fn: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any] | AsyncIterable[Any],
        runner: Callable[..., Awaitable[list[Any]]],
        *,
        reports: bool,
    ) -> list[Any]:
        """The engine's hook for a batch (``hooks.RunHooks``): :func:`durable`."""
        return await durable(self, node, fn, items, runner, reports=reports)

    def run_batch_sync(
        self,
        node: Any,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        runner: Callable[[Any, Any], list[Any]],
    ) -> list[Any]:
        """The engine's hook for a sync batch: :func:`durable_sync`."""
        return durable_sync(self, node, fn, items, runner)

    def batch(self, node: Any, items: Any) -> _Batch:
        """The record of the batch starting here. Fresh: its start is recorded (the store
        as the batch's prep left it, how many items). Resumed: the store is put back as
        its latest record has it, whatever the prep, which ran again, did to it."""
        position, nodes = _where.get()
        batch = _Batch(self, node, position, nodes)
        if self.restore_at == position:
            self.restore_at = None
            self.restore(self.shared)
        else:
            total = len(items) if isinstance(items, Sized) else None
            self.writer.put(
                Record(
                    "progress",
                    self._next(),
                    position,
                    nodes,
                    None,
                    self.snapshot(self.shared, node),
                    done=False,
                    node=node_name(node),
                    owners=self.owners(),
                    total=total,
                )
            )
        return batch

    def restore(self, shared: Any) -> None:
        """Put the store back as the record this run resumes from has it."""
        if self.resumed_from is None or self.resumed_from.shared is None:
            return
        restored = load_saved(
            self.store.serializer,
            self.resumed_from.shared,
            what=f"the shared store of run {self.run_id!r}",
            where=_file(self.store),
        )
        shared.clear()
        shared.update(restored)
        self.restore_owners(self.resumed_from.owners, shared)


class _Batch:
    """The items of one batch of a durable run: which are finished, and recording more.

    A batch of functions queues each finished item (index, job, result) and tells the writer
    when its queue was empty, so the writer takes the items in its next commit; the batch's
    end takes the rest (on the loop's thread, before post sees the results, so that post's
    changes to them are never what a resume gets). A batch flow's finished runs write to the
    shared store: they are recorded with a copy of it, taken on the loop's thread whenever
    the writer is free (and, with ``durability="async"``, at most every 3 copy-times).
    Each item is recorded with a fingerprint of it, so that a resume whose items moved is
    refused instead of pairing results with the wrong items.
    """

    __slots__ = (
        "asked",
        "closed",
        "done",
        "error",
        "finished_count",
        "flows",
        "flushes",
        "indices",
        "item_of",
        "jobs",
        "journal",
        "next_flush",
        "node",
        "nodes",
        "pending",
        "position",
        "prints",
        "ran",
        "recorded",
        "results",
        "signalled",
        "ticket",
        "unsaveable",
        "unsaveable_why",
    )  # fmt: skip

    def __init__(
        self, journal: Journal, node: Any, position: tuple[int, ...], nodes: tuple[int, ...]
    ) -> None:
        self.journal, self.node, self.position, self.nodes = journal, node, position, nodes
        self.done, self.prints = journal.finished_items.get(position, ({}, {}))
        # A batch flow's runs, and item functions that take `shared`, write to the shared
        # store: their items are recorded with a copy of it.
        self.flows = hasattr(node, "start_node") or _takes_shared(node)
        self.item_of: Callable[[Any], Any] | None = getattr(node, "_item_of", None)
        # A batch of functions' finished items, not taken by the writer yet.
        self.indices: collections.deque[int] = collections.deque()
        self.jobs: collections.deque[Any] = collections.deque()
        self.results: collections.deque[Any] = collections.deque()
        self.signalled = False  # the writer has been told of the queue (and not taken it yet)
        self.ticket = 0  # the ticket of that entry
        self.closed = False  # ended: the writer takes nothing more from it
        self.pending: list[tuple[int, Any, Any]] = []  # a batch flow's runs, not sent yet
        self.ran: set[int] = set()  # a batch flow's runs finished in this process
        self.finished_count = 0
        self.flushes: collections.deque[tuple[int, int]] = collections.deque()
        self.recorded = 0  # a batch flow's runs known to be on disk
        self.next_flush = 0.0
        self.error: Exception | None = None  # raised when the batch ends
        self.asked: list[Question] = []  # questions of items that paused
        self.unsaveable: list[int] = []  # items whose results cannot be saved
        self.unsaveable_why = ""

    # -- batches of functions --------------------------------------------------------------

    def record(self, index: int, job: Any, result: Any) -> int:
        """Item ``index`` (``job``) succeeded with ``result``: the pool's hot path. Three
        queues rather than a tuple per item: a million live tuples cost the garbage
        collector more than the rest of the recording. The writer is told only when it has
        taken everything queued before; returns the ticket of the entry that takes it."""
        self.indices.append(index)
        self.jobs.append(job)
        self.results.append(result)
        if self.signalled:  # an entry not yet taken by the writer: it takes this item too
            return self.ticket
        self.signalled = True
        self.ticket = self.journal.writer.put(self)
        return self.ticket

    def drain(self) -> Record | None:
        """The items finished since the last drain, as a record (the writer's thread)."""
        self.signalled = False  # before taking: an item queued after this is told again
        if self.closed:
            return None
        return self._items_record(self._take())

    def _take(self) -> list[tuple[Any, ...]]:
        # The loop appends to results last: the other two hold at least as many.
        count = len(self.results)
        return [
            tuple(itertools.starmap(column.popleft, _nothing(count)))
            for column in (self.indices, self.jobs, self.results)
        ]

    def _items_record(self, columns: list[tuple[Any, ...]]) -> Record | None:
        if not columns[0]:
            return None
        blob, count = self._serialise(*columns)
        if not count:
            return None
        return Record("items", 0, self.position, items=blob, count=count)

    def _serialise(
        self, indices: Sequence[int], jobs: Sequence[Any], results: Sequence[Any]
    ) -> tuple[bytes, int]:
        """The finished items as one blob (``[indices, results, fingerprints]``), and how
        many it holds: an item whose result cannot be saved is left out (it runs again on
        resume), with a warning."""
        kinds = set(map(type, jobs))
        if self.item_of is not None and tuple in kinds:  # jobs: the items are inside them
            items: Sequence[Any] = list(map(self.item_of, jobs))
            kinds = set(map(type, items))
        else:
            items = jobs
        # Ints are their own fingerprints: a batch over range(n) costs no hashing.
        prints = items if kinds == {int} else list(map(_fingerprint, items))
        try:
            return self.journal.dumps([indices, results, prints]), len(indices)
        except Exception as exc:
            keep = [n for n, result in enumerate(results) if _saveable(self.journal, result)]
            # Told when the batch ends, on the loop's thread (a warning raised as an error
            # here, on the writer's thread, would be nobody's).
            self.unsaveable.extend(sorted(set(indices) - {indices[n] for n in keep}))
            self.unsaveable_why = f"{type(exc).__name__}: {exc}"
            if not keep:
                return b"", 0
            columns = [[column[n] for n in keep] for column in (indices, results, prints)]
            return self.journal.dumps(columns), len(keep)

    def track(self, index: int) -> list[Any]:
        """A pool worker's cell for :func:`item_key`: ``[batch, index of its item]``."""
        cell = [self, index]
        _item.set(cell)
        return cell

    # -- batch flows -----------------------------------------------------------------------

    def finished_run(self, index: int, item: Any, result: Any) -> int:
        """A batch flow's run ``index`` finished (never raises: errors wait for the end);
        returns how many runs have, to wait for with :meth:`until_recorded`."""
        self.pending.append((index, item, result))
        self.ran.add(index)
        self.finished_count += 1
        try:
            self.flush_when_due()
        except Exception as exc:
            if self.error is None:
                self.error = exc
        return self.finished_count

    def flush_when_due(self, asked: bool = False) -> None:
        """Record the finished runs now if the writer is free (and, with "async", the last
        copy of the store was long enough ago); else once it is: the writer wakes the loop
        after its commit, or when the turn comes (``asked``: this is that wake)."""
        writer = self.journal.writer
        if self.closed or not self.pending:
            writer.wanted.pop(self, None)
            return
        if writer.busy:
            writer.wanted[self] = None
            return
        if not self.journal.sync and time.monotonic() < self.next_flush:
            if asked or self not in writer.wanted:
                writer.wanted[self] = None
                writer.nudge()  # the writer wakes the loop when the turn comes
            return
        self.flush()

    def flush(self) -> None:
        """Send a batch flow's finished runs to the writer, with the shared store."""
        journal = self.journal
        journal.writer.wanted.pop(self, None)
        if not self.pending:
            return
        started = time.monotonic()
        pending, self.pending = self.pending, []
        items, count = self._serialise(*zip(*pending, strict=True))
        view = getattr(self.node, "_recorded_store", None)
        shared = journal.shared if view is None else view(journal.shared, self.ran | set(self.done))
        blob = journal.snapshot(shared, self.node)
        ticket = journal.writer.put(
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
                owners=journal.owners(),
            )
        )
        self.flushes.append((ticket, self.finished_count))
        now = time.monotonic()
        self.next_flush = now + 3 * (now - started)  # copies take at most a quarter

    async def until_recorded(self, count: int) -> None:
        """Wait until the first ``count`` finished runs are on disk (``"sync"``)."""
        journal = self.journal
        while self._recorded() < count:
            self.flush_when_due()
            await journal.next_commit(self.flushes[0][0] if self.flushes else None)
        if journal.writer.error is not None:
            raise journal.writer.failed()

    def until_recorded_sync(self, count: int) -> None:
        self.flush()
        if self.flushes:
            self.journal.until_committed_sync(self.flushes[-1][0])
        self._recorded()

    def _recorded(self) -> int:
        committed, flushes = self.journal.writer.committed, self.flushes
        while flushes and flushes[0][0] <= committed:
            self.recorded = flushes.popleft()[1]
        return self.recorded

    # -- every batch -----------------------------------------------------------------------

    def paused(self, index: int, request: PauseRequest) -> None:
        """Item ``index`` asked for input: the batch goes on, the run pauses at its end."""
        q = request.question
        self.asked.append(Question(q.id, q.payload, node_name(self.node), index))

    def check(self, index: int, job: Any) -> None:
        """Refuse a resume whose item ``index`` is not the one recorded at that index."""
        recorded = self.prints.get(index, _UNKNOWN)
        if recorded is _UNKNOWN or recorded is None:
            return
        item = job if self.item_of is None else self.item_of(job)
        if _fingerprint(item) != recorded:
            error = FlowError(
                f"node {node_name(self.node)!r}: item {index} is not the item that was there "
                f"when the run was recorded (now {_short(item)}); items are matched to their "
                f"saved results by position, so the items moved since (a source that "
                f"changed, or came out in another order). Make the items come out as they "
                f"did (store the list in the shared store in an earlier step), or start a "
                f"new run_id"
            )
            if self.error is None:  # errors="collect" would keep it as an item's failure
                self.error = error
            raise error

    def end(self, failed: bool) -> None:
        """Record what finished (on the loop's thread, before post sees the results); after
        a failure, without hiding that failure. Items that asked for input pause the run."""
        if self.asked and not failed:
            self.end(failed=True)  # record what finished, as when the batch stops
            raise PauseRun(self.asked)
        writer = self.journal.writer
        try:
            if self.flows:
                self.flush()
            else:
                with writer.lock:  # the writer is not serialising any of them now
                    self.closed = True
                    columns = self._take()
                # Saved as they are now, before post may change them in place.
                record = self._items_record(columns)
                if record is not None:
                    writer.put(record)
        except Exception:
            if not failed:
                raise
        finally:
            self.closed = True
            writer.wanted.pop(self, None)
        if self.unsaveable:  # (a warning made an error must not hide the batch's failure)
            with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
                warnings.warn(
                    f"{node_name(self.node)!r}: the results of items "
                    f"{sorted(self.unsaveable)[:10]} cannot be saved in the checkpoint "
                    f"({self.unsaveable_why}), so a resumed run runs them again",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if not failed and self.error is not None:
            raise self.error


_UNKNOWN = object()


def _nothing(count: int) -> Iterator[tuple[()]]:
    """``count`` empty argument tuples: ``starmap(f, _nothing(n))`` calls ``f()`` n times in C."""
    return itertools.repeat((), count)


def _fingerprint(item: Any) -> Any:
    """A value that differs, but for chance, between two different items, and is the same
    for an equal item made again in another process or restored from the checkpoint: ints as
    they are, text by CRC-32, anything else by the CRC-32 of :func:`_stable_bytes` (None if
    it has none)."""
    cls = item.__class__
    if cls is int:
        return item
    if cls is str:
        return zlib.crc32(item.encode("utf-8", "surrogatepass"))
    try:
        return -1 - zlib.crc32(_stable_bytes(item))
    except Exception:
        return None


class _NotPlain(Exception):
    pass


_ATOMS = frozenset({int, float, str, bool, bytes, type(None)})


def _plain(value: Any) -> Any:
    """``value`` as plain data whose repr depends only on the value: tuples as lists (JSON
    gives them back so), sets sorted; ``_NotPlain`` for anything else."""
    cls = value.__class__
    if cls in _ATOMS:
        return value
    if cls is list or cls is tuple:
        return [_plain(v) for v in value]
    if cls is dict:
        return {_key(k): _plain(v) for k, v in value.items()}
    if cls is set or cls is frozenset:
        return sorted(repr(_plain(v)) for v in value)
    raise _NotPlain


def _key(key: Any) -> Any:
    if key.__class__ in _ATOMS:
        return key
    raise _NotPlain


def _stable_bytes(item: Any) -> bytes:
    """The item's value as bytes that do not depend on object identity (two equal strings
    or one shared string), on set order, or on tuple against list."""
    try:
        return repr(_plain(item)).encode("utf-8", "surrogatepass")
    except _NotPlain:
        pass
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True  # no memo: shared and equal sub-objects give the same bytes
    try:
        pickler.dump(item)
    except ValueError:  # it refers to itself: only the memo can pickle it
        return pickle.dumps(item, protocol=5)
    return buffer.getvalue()


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


def _load_items(
    store: CheckpointStore, saved: Saved | None
) -> dict[tuple[int, ...], tuple[dict[int, Any], dict[int, Any]]]:
    """The finished items of every batch, loaded when the run begins (a damaged chunk is
    an error before any step runs): {position: ({index: result}, {index: fingerprint})}."""
    found: dict[tuple[int, ...], tuple[dict[int, Any], dict[int, Any]]] = {}
    if saved is None:
        return found
    for position, chunks in saved.items.items():
        results: dict[int, Any] = {}
        prints: dict[int, Any] = {}
        for chunk in chunks:
            columns = load_saved(
                store.serializer,
                chunk,
                what=f"the items of the batch at step {list(position)} of run {saved.run_id!r}",
                where=_file(store),
            )
            try:
                indices = columns[0]
                results.update(zip(indices, columns[1], strict=True))
                if len(columns) > 2:
                    prints.update(zip(indices, columns[2], strict=True))
            except (TypeError, ValueError, IndexError, KeyError) as exc:
                raise FlowError(
                    f"checkpoint {_file(store)!r}: the items of the batch at step "
                    f"{list(position)} are damaged ({type(exc).__name__}: {exc}); resume it "
                    f"with the flowfn that wrote it, or start a new run_id"
                ) from None
        found[position] = (results, prints)
    return found


def _takes_shared(node: Any) -> bool:
    if getattr(node, "_writes_shared", False):  # parallel branches, for one
        return True
    work = getattr(node, "_work", None)
    return work is not None and any(name == "shared" for name, _ in work.inject)


def _saveable(journal: Journal, value: Any) -> bool:
    try:
        journal.dumps(value)
    except Exception:
        return False
    return True


def item_key(name: str | None = None) -> str:
    """An idempotency key for the step or batch item whose code calls it, to hand to a
    service that deduplicates requests by such a key (payments, many LLM and e-mail APIs).

    The key names the run, the step's place and node, and the item's index:
    ``"nightly/2/summarise/17"``. It is the same for every attempt of that item (retries
    included) and for the same item when the run resumes after a crash, so a call that was
    in flight when the process died is not paid twice where the service deduplicates; it
    differs between items, steps, runs, and visits of a loop to the same node.

    What is redone whole shares one key: the steps of one run of a batch flow (and batches
    inside it), the branches of ``Parallel(merge=...)``. Code there that makes several
    calls tells them apart with ``name``: ``item_key("charge")`` is ``"<key>/charge"``.

    Raises :class:`~flowfn.FlowError` outside a durable run (``checkpoint=``): without a
    run id there is nothing that makes the key stable across crashes.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"flowfn.item_key(name): name must be a str, got {name!r}")
    key = _current_key()
    if key is None:
        raise FlowError(
            "flowfn.item_key() names an item of a durable run, stable across resumes: call "
            "it from a step of a run with checkpoint= (and run_id=)"
        )
    return key if name is None else f"{key}/{name}"


def _current_key() -> str | None:
    cell = _item.get()
    if cell is not None:
        batch, index = cell
        run_id, position, node = batch.journal.run_id, batch.position, node_name(batch.node)
        return f"{run_id}/{'.'.join(map(str, position))}/{node}/{index}"
    journal = _journal.get() if hooks.active else None
    if journal is None:
        return _key_base.get()
    position, _ = _where.get()
    return f"{journal.run_id}/{'.'.join(map(str, position))}/{journal.step_name(position)}"


def wrapped(
    batch: _Batch, fn: Callable[[Any], Awaitable[Any]]
) -> Callable[[tuple[int, Any]], Awaitable[Any]]:
    """``fn`` for the numbered items of a durable batch: finished ones skipped (once their
    fingerprint matches), each finished one recorded."""
    done, journal = batch.done, batch.journal
    sync = journal.sync

    if not batch.flows:  # the items are functions: nothing inside them walks a flow

        async def run_function(pair: tuple[int, Any]) -> Any:
            index, job = pair
            if done and index in done:  # finished before: its recorded result
                batch.check(index, job)
                return done[index]
            token = _item.set([batch, index])
            try:
                result = await fn(job)
            except PauseRequest as request:
                batch.paused(index, request)
                return None
            finally:
                _item.reset(token)
            ticket = batch.record(index, job, result)
            if sync:  # the item counts as finished once its record is on disk
                await journal.until_committed(ticket)
            return result

        return run_function

    async def run_flow(pair: tuple[int, Any]) -> Any:
        index, item = pair
        if done and index in done:
            batch.check(index, item)
            return done[index]
        # A run is redone whole: nothing inside is recorded.
        token, key = _journal.set(None), _item.set([batch, index])
        try:
            result = await fn(item)
        except PauseRequest as request:
            batch.paused(index, request)
            return None
        finally:
            _item.reset(key)
            _journal.reset(token)
        count = batch.finished_run(index, item, result)
        if sync:
            await batch.until_recorded(count)
        return result

    return run_flow


def wrap_batch_sync(
    journal: Journal, node: Any, fn: Callable[[Any], Any], items: Iterable[Any]
) -> tuple[Callable[[tuple[int, Any]], Any], Iterable[tuple[int, Any]], _Batch]:
    batch = journal.batch(node, items)

    def run(pair: tuple[int, Any]) -> Any:
        index, item = pair
        if index in batch.done:
            batch.check(index, item)
            return batch.done[index]
        token, key = _journal.set(None), _item.set([batch, index])
        try:
            result = fn(item)
        except PauseRequest as request:
            batch.paused(index, request)
            return None
        finally:
            _item.reset(key)
            _journal.reset(token)
        if not batch.flows:
            ticket = batch.record(index, item, result)
            if journal.sync:
                journal.until_committed_sync(ticket)
        else:
            count = batch.finished_run(index, item, result)
            if journal.sync:
                batch.until_recorded_sync(count)
        return result

    return run, enumerate(items), batch


async def durable(
    journal: Journal,
    node: Any,
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    runner: Callable[..., Awaitable[list[Any]]],
    *,
    reports: bool,
) -> list[Any]:
    """``runner(fn, items, record, paused, track, wrap)`` (the batch), with finished items
    recorded and, on resume, the recorded ones not run again. A runner that ``reports``
    calls ``record(index, item, result)`` for each item that succeeded (the pool does), so
    a fresh batch of functions needs no wrapper around each item; see ``_run_pool``.
    Otherwise each item goes through ``wrap(fn)``, which a runner that makes its own ``fn``
    per worker (a batch flow's walk) applies to it."""
    if journal.sharing is not None and journal.sharing.takes(node, items):
        return await journal.sharing.batch(journal, node, items)  # type: ignore[no-any-return]
    batch = journal.batch(node, items)
    try:
        if reports and not batch.done and not batch.flows and not journal.sync:
            results = await runner(fn, items, batch.record, batch.paused, batch.track, None)
        else:
            wrap = functools.partial(wrapped, batch)
            results = await runner(wrap(fn), _numbered(items), None, None, None, wrap)
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
    share: bool = False,
) -> Any:
    """Run ``root`` recording into ``checkpoint``; resume ``run_id`` if it is there.
    ``share``: its parallel batches are shared with helpers (a Postgres checkpoint).

    Returns what the flow returns, or :class:`Paused` if a step asked for input."""
    from .._engine.flows import Flow

    store = _store(checkpoint, root)
    run_id = _checked(root, shared, run_id, durability)
    sharing = None
    if share:
        if share_batches is None:  # pragma: no cover - import flowfn plugs it
            raise FlowError("share=True needs flowfn's durable wing: import flowfn first")
        sharing = share_batches(store, root, run_id)
    flow = root if isinstance(root, Flow) else Flow(root)
    shape = shape_of(flow)
    initial = _initial(store, root, shared)
    target = target or getattr(store, "target", None) or _target_of(root)
    meta = {"backend": backend_name(), "durability": durability}
    if sharing is not None:
        meta["share"] = "yes"  # flowfn runs cancel reaches it
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
        journal = _begin_journal(store, run_id, saved, shared, root, durability, answers)
        journal.sharing = sharing
        result = await _walk_recorded(flow, journal, shared)
        # A plain flow ends with its last step, whose record holds the final store: only a
        # flow with a prep/post of its own may have changed it since.
        detail = _saveable_end(store, None if type(flow) in _plain_flows() else shared, result)
        with anyio.CancelScope(shield=True):
            await _end(store, run_id, journal, "done", None, detail)
        return result
    except (PauseRequest, PauseRun) as pause:
        assert journal is not None
        questions = pause.questions if isinstance(pause, PauseRun) else [pause.question]
        with anyio.CancelScope(shield=True):
            waiting = _waiting(store, questions, journal.answers)
            await _end(store, run_id, journal, "paused", None, waiting)
        return Paused(run_id, questions)
    except BaseException as exc:
        if journal is not None:
            status = "failed" if isinstance(exc, Exception) else "interrupted"
            if sharing is not None and getattr(exc, "status", None) == "cancelled":
                status = "cancelled"  # flowfn runs cancel
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


def _initial(store: CheckpointStore, root: Any, shared: Any) -> bytes:
    """The shared store the run starts with, as the checkpoint saves it."""
    try:
        return store.serializer.dumps(dict(shared))
    except Exception as exc:
        raise FlowError(
            f"{node_name(root)}: the shared store you passed cannot be saved in the checkpoint "
            f"({type(exc).__name__}: {exc})"
        ) from exc


async def _walk_recorded(flow: Any, journal: Journal, shared: Any) -> Any:
    """The flow's walk with ``journal`` installed (and its sharing, if it shares)."""
    token, cache_token = _journal.set(journal), caching.set(journal)
    hooks.active += 1
    try:
        if journal.sharing is None:
            return await flow._run_async(shared)
        return await journal.sharing.run(flow._run_async, shared)
    finally:
        hooks.active -= 1
        _journal.reset(token)
        caching.reset(cache_token)


def _checked(root: Any, shared: Any, run_id: str | None, durability: Any) -> str:
    """The run's id (made up if None), once the arguments of a durable run are checked."""
    if not isinstance(shared, MutableMapping):
        raise TypeError(
            f"{node_name(root)}: a run with checkpoint= needs a dict-like shared store (it is "
            f"saved and restored by key), got {type(shared).__name__}"
        )
    if durability not in ("async", "sync"):
        raise ValueError(
            f"{node_name(root)}: durability must be 'async' (records committed in groups as "
            f"they come) or 'sync' (a step or item counts as finished once its record is "
            f"committed), got {durability!r}"
        )
    if run_id is None:
        import uuid

        return uuid.uuid4().hex[:12]
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"{node_name(root)}: run_id must be a non-empty str, got {run_id!r}")
    return run_id


def _begin_journal(
    store: CheckpointStore,
    run_id: str,
    saved: Saved | None,
    shared: Any,
    root: Any,
    durability: Durability,
    answers: Mapping[str, Any] | None,
) -> Journal:
    """The run's journal, with what a resumed run brings back: into= owners, answers."""
    from .._engine.backend import waker as _waker
    from .._engine.flows import Flow

    flow = root if isinstance(root, Flow) else Flow(root)
    journal = Journal(store, run_id, saved, shared, root=flow, durability=durability, wake=_waker())
    if saved is not None and saved.last is not None:
        journal.restore_owners(saved.last.owners, shared)
    watch = events.current()
    if saved is not None and watch is not None:
        watch.emit("resume", root)  # this run goes on from a saved one
    if saved is not None and saved.status == "paused" and saved.detail is not None:
        journal.answers.update(_answers(store, saved))
    journal.answers.update(answers or {})
    return journal


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
    """The store ``checkpoint=`` names: a ``postgresql://`` (or ``postgres://``) URL, a file
    path (an SQLite file), or a store object."""
    from .store import SQLiteStore

    if isinstance(checkpoint, str) and checkpoint.startswith(("postgresql://", "postgres://")):
        from ..persistence.postgres import PostgresStore

        return PostgresStore(checkpoint)
    if isinstance(checkpoint, (str, os.PathLike)):
        return SQLiteStore(checkpoint)
    if isinstance(checkpoint, CheckpointStore):
        return checkpoint
    raise TypeError(
        f"{node_name(root)}: checkpoint= must be a file path (an SQLite file), a postgresql:// "
        f"URL or a checkpoint store (flowfn.SQLiteStore, flowfn.persistence.PostgresStore, or "
        f"an object with begin/save/finish/release/runs and a serializer), got "
        f"{type(checkpoint).__name__}"
    )


def backend_name() -> str:
    """The backend this run is on: ``"asyncio"`` or ``"trio"``."""
    import asyncio

    return "asyncio" if asyncio._get_running_loop() is not None else "trio"


def _plain_flows() -> tuple[type, ...]:
    from .._engine.flows import AsyncFlow, Flow

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

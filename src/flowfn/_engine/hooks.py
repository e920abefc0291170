"""What the wings above the engine plug into it: the engine imports none of them.

Two kinds of plug:

* **Run hooks** (:class:`RunHooks`), installed by a run for its own steps: the durable journal
  (``flowfn._durable``) records each finished step and batch item and, on resume, says where
  the walk starts again and which items are done. The walk, the pool and the node classes test
  ``active`` (one integer, process-wide: durable runs in progress) before they ask
  :func:`current` for the hooks of the code that runs, so a run without them pays one test.
* **Wings** (:func:`plug`), set once when a wing is imported (``import flowfn`` imports them
  all): what ``run(checkpoint=...)``, ``progress=True``, ``workers=``, ``Flow.to_mermaid()``
  and their kin call. Each defaults to a function that says which wing is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Literal, Protocol

from .errors import FlowError

__all__ = [
    "Detach",
    "Durability",
    "PauseRequest",
    "RemoteCalls",
    "RunHooks",
    "StepGraph",
    "Workers",
    "check_chunk_timeout",
    "current",
    "detached",
    "plug",
    "where",
]

#: When a finished step or item counts as recorded (``run(durability=...)``).
Durability = Literal["async", "sync"]

# Runs with hooks installed, process-wide (durable runs in progress): the engine's
# one-integer fast check. The durable wing counts its runs here.
active = 0
# Where the code runs: (step counters, node indices) of the durable walks around it.
where: ContextVar[tuple[tuple[int, ...], tuple[int, ...]]] = ContextVar(
    "flowfn_where", default=((), ())
)


class PauseRequest(Exception):
    """Raised by :func:`flowfn.ask` without an answer: retries and fallbacks let it through,
    and a durable batch keeps the item's question (``question``: a :class:`flowfn.Question`)."""

    def __init__(self, question: Any) -> None:
        super().__init__(f"paused: {question.payload!r:.80}")
        self.question = question


class Detach(Protocol):
    def __call__(self, keep_key: bool = False) -> AbstractContextManager[None]: ...


class StepGraph(Protocol):
    """A flow's nodes in a fixed order, the same in every process (:meth:`RunHooks.graph`)."""

    nodes: list[Any]
    index: dict[int, int]  # id(node) -> its place in nodes


class RunHooks(Protocol):
    """What a run installs to record and restore its steps and batch items (the journal).

    ``position`` is the step counters of the walks around a step (``where``), ``nodes`` their
    nodes' indices in the graphs. A batch runs through ``runner(fn, items, record, paused,
    track, wrap)``: the hooks hand the runner the items still to run (numbered, or as they are
    with ``record``/``paused``/``track`` to report each item to), see ``_run_pool``.
    """

    sync: bool  # a step counts as finished once its record is committed
    names: dict[tuple[int, ...], str]  # position -> the name of the node run there

    def graph(self, start: Any) -> StepGraph: ...

    def resume_at(self, base: tuple[int, ...]) -> tuple[int, int, bool, str | None] | None:
        """(steps, node index, finished, last action) of the walk at ``base`` to go on from."""
        ...

    def step_done(
        self,
        position: tuple[int, ...],
        nodes: tuple[int, ...],
        node: Any,
        action: Any,
        shared: Any,
    ) -> int:
        """Record a finished step; the ticket that :meth:`until_committed` waits for."""
        ...

    async def until_committed(self, ticket: int) -> None: ...

    async def run_batch(
        self,
        node: Any,
        fn: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any] | AsyncIterable[Any],
        runner: Callable[..., Awaitable[list[Any]]],
        *,
        reports: bool,
    ) -> list[Any]:
        """The batch of ``node`` through ``runner``, its items recorded and, on resume, the
        recorded ones not run again (``reports``: the runner reports each item it ran)."""
        ...

    def run_batch_sync(
        self,
        node: Any,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        runner: Callable[[Any, Any], list[Any]],
    ) -> list[Any]:
        """The sync :meth:`run_batch`: ``runner(fn, numbered items)``."""
        ...


class RemoteCalls(Protocol):
    """The calls of one node run to remote workers, in chunks (``Workers.calls``)."""

    def is_current(self) -> bool:
        """True if these calls belong to the running event loop."""
        ...

    async def call(self, data: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


class Workers(Protocol):
    """What a ``workers=`` object is to the engine once the workers wing made it from what
    the user gave (an executor, ``flowfn.ray.RayWorkers``): a place to send calls to."""

    chunksize: int
    by_value: bool  # functions travel by value (cloudpickle): they need not be importable

    def check_target(self, target: Any, owner: str) -> Any: ...

    def calls(
        self, fn: Callable[..., Any] | None, node: object, *, target: Any = None
    ) -> RemoteCalls:
        """The calls of ``fn`` (or of ``target``, a function the workers import) for ``node``."""
        ...


def check_chunk_timeout(remote: Workers, timeout: float | None, owner: str) -> None:
    """Refuse ``timeout=`` with chunks: an item's result arrives when its whole chunk ends."""
    if timeout is not None and remote.chunksize > 1:
        raise ValueError(
            f"{owner}: timeout= bounds each attempt of an item, but with chunksize="
            f"{remote.chunksize} an item's result only arrives when its whole chunk has run; "
            f"use chunksize=1 with timeout=, or drop timeout="
        )


# -- the wings' plugs -------------------------------------------------------------------------


def _missing(wing: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise FlowError(f"flowfn.{wing} is not loaded: import flowfn before running flows")

    return missing


def _no_hooks() -> RunHooks | None:
    return None


@contextlib.contextmanager
def _attached(keep_key: bool = False) -> Iterator[None]:
    yield


#: The hooks of the run this code is part of (None outside one, and inside batch items).
current: Callable[[], RunHooks | None] = _no_hooks
#: The code inside is not part of the run around it (a run started in a step); ``keep_key``:
#: it is still part of the step around it, redone whole (``flowfn.item_key`` names that step).
detached: Detach = _attached
#: ``run_durable(root, shared, checkpoint, run_id, *, answers, durability)``.
run_durable: Callable[..., Awaitable[Any]] = _missing("_durable")
#: The remote workers ``workers=`` names (None for the strings), checked: (workers, chunksize,
#: owner) -> Workers | None.
remote_workers: Callable[[object, object, str], Workers | None] = _missing("_workers")
#: ``await run_in_process(fn, *args)``: ``fn(*args)`` in a worker process.
run_in_process: Callable[..., Awaitable[Any]] = _missing("_workers")
#: A progress bar observer, for ``progress=True``.
progress: Callable[[], Any] = _missing("_observe")
#: ``Flow.to_mermaid()``, ``Flow.to_dot()``: the flow's picture as text.
to_mermaid: Callable[[Any], str] = _missing("_observe")
to_dot: Callable[[Any], str] = _missing("_observe")
#: ``Flow.to_ir(nodes=...)``: the flow as a workflow document.
to_ir: Callable[..., dict[str, Any]] = _missing("_dsl")


def plug(**plugs: Any) -> None:
    """Set the wings' plugs named above (a wing's ``__init__`` calls it once)."""
    unknown = [name for name in plugs if name not in _PLUGS]
    if unknown:
        raise TypeError(f"no such engine plug: {', '.join(unknown)}")
    globals().update(plugs)


_PLUGS = frozenset(
    (
        "current",
        "detached",
        "run_durable",
        "remote_workers",
        "run_in_process",
        "progress",
        "to_mermaid",
        "to_dot",
        "to_ir",
    )
)

"""Watching a run: typed events, delivered to the observers passed to ``run(on_event=...)``.

The engine asks :func:`current` once per flow walk and per batch; with no observer attached
anywhere in the process that is one integer test, so unobserved runs pay nothing that can
be measured. Observers are called synchronously, on the thread that runs the event loop
(or the sync flow), in the order things happen; an exception raised by an observer
propagates into the flow like any other error, once the other observers have the event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Literal, NamedTuple

from .errors import node_name

__all__ = [
    "ALL_KINDS",
    "Event",
    "EventKind",
    "ItemEvents",
    "Observer",
    "Watch",
    "current",
    "kinds_of",
    "observing",
]

EventKind = Literal[
    "run_start",
    "run_end",
    "node_start",
    "node_end",
    "node_error",
    "retry",
    "fallback",
    "batch_start",
    "batch_end",
    "item_start",
    "item_end",
    "item_error",
    "resume",
    "step_skipped",
]
"""What an :class:`Event` reports: a run, node, batch or item starting or ending, a node or
item failing, a retry, a fallback, a durable run resuming, a step skipped on resume."""

#: Every kind of event: what an observer that declares no ``kinds`` gets.
ALL_KINDS: frozenset[str] = frozenset(EventKind.__args__)  # type: ignore[attr-defined]
_STEP_KINDS = frozenset(("node_start", "node_end"))


def kinds_of(observer: object) -> frozenset[str]:
    """The kinds of event ``observer`` wants: its ``kinds`` attribute (a collection of
    :data:`EventKind`), or every kind. A run only makes the events someone wants; a run
    whose observers want neither ``node_start`` nor ``node_end`` walks its steps as an
    unobserved run does (a failing step still makes its ``node_error``)."""
    kinds = getattr(observer, "kinds", None)
    if kinds is None:
        return ALL_KINDS
    if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(
            f"on_event: {observer!r}.kinds must be a collection of event kinds "
            f"(such as {{'node_end', 'item_end'}}), got {kinds!r}"
        )
    unknown = sorted(set(kinds) - ALL_KINDS)
    if unknown:
        raise TypeError(
            f"on_event: {observer!r}.kinds names no event kind: {', '.join(map(repr, unknown))}"
            f" (the kinds: {', '.join(sorted(ALL_KINDS))})"
        )
    return frozenset(kinds)


class Event(NamedTuple):
    """One thing that happened in a run (an immutable tuple, cheap to make).

    ``path`` names the flows around ``node``, outermost first (nested flows add to it).
    ``item`` is the index of a batch item (or sub-flow run of a batch flow), ``attempt`` the
    0-based attempt of a retry, ``duration`` the seconds a node, item, batch or run took,
    ``action`` the action a node returned, ``total`` the number of items of a batch when its
    source has a length, ``error`` the exception of an ``*_error``, ``retry`` or
    ``fallback`` event, ``time`` when it happened (``time.monotonic()``), ``branch`` the name
    of the branch of a :class:`~flowfn.Parallel` node whose item event this is (``item`` is
    its position).
    """

    kind: EventKind
    node: str
    path: tuple[str, ...] = ()
    item: int | None = None
    attempt: int | None = None
    duration: float | None = None
    action: str | None = None
    total: int | None = None
    error: BaseException | None = None
    time: float = 0.0
    branch: str | None = None

    @property
    def where(self) -> str:
        """``"outer/inner/node"``: the node and the flows around it."""
        return "/".join((*self.path, self.node))


Observer = Callable[[Event], object]
"""An ``on_event=`` callback: called with each :class:`Event`, synchronously, on the thread
that runs the flow, in the order things happen. Keep it quick: an exception it raises
propagates into the flow like any other error. What it returns is ignored."""

# Runs with an observer attached, process-wide: the engine's one-integer fast check.
_active = 0
_watch: ContextVar[Watch | None] = ContextVar("flowfn_watch", default=None)
# The index of the batch-node item being worked on, while the run is observed.
_item: ContextVar[int | None] = ContextVar("flowfn_item", default=None)


def current_item() -> int | None:
    """The index of the batch item whose attempt is running (for its retry events)."""
    return _item.get()


def current() -> Watch | None:
    """The watch of the run this code is part of, or ``None`` when nobody observes it."""
    return _watch.get() if _active else None


class Watch:
    """The observers of one run and the flow path at this point of it."""

    __slots__ = ("_kinds", "item", "observers", "owner", "path", "steps", "wants")

    def __init__(
        self,
        observers: tuple[Observer, ...],
        path: tuple[str, ...],
        owner: object = None,
        item: int | None = None,
        kinds: tuple[frozenset[str], ...] | None = None,
    ) -> None:
        # owner: the flow whose name ends ``path`` (its own events do not repeat its name);
        # item: in one run of a batch flow, its index (the retries of that run report it).
        self.observers, self.path, self.owner, self.item = observers, path, owner, item
        # kinds: what each observer wants; wants: what any of them does; steps: whether
        # the walk makes node_start/node_end events (else it runs steps unobserved).
        self._kinds = kinds if kinds is not None else tuple(map(kinds_of, observers))
        self.wants = frozenset().union(*self._kinds)
        self.steps = not self.wants.isdisjoint(_STEP_KINDS)

    def _child(self, path: tuple[str, ...], owner: object, item: int | None = None) -> Watch:
        return Watch(self.observers, path, owner, item, self._kinds)

    def emit(self, kind: EventKind, node: object, **fields: Any) -> None:
        if kind not in self.wants:
            return
        path = self.path
        if node is self.owner and path:
            path = path[:-1]
            if self.item is not None and fields.get("item") is None:
                fields["item"] = self.item
        event = Event(kind, node_name(node), path, time=time.monotonic(), **fields)
        if len(self.observers) == 1:
            self.observers[0](event)
            return
        # Every observer sees every event it wants, even after one of them raised (a Progress
        # after it still ends its bars at run_end); then the first error goes on into the flow.
        failed: BaseException | None = None
        for observer, kinds in zip(self.observers, self._kinds, strict=True):
            if kind not in kinds:
                continue
            try:
                observer(event)
            except BaseException as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def _enter(self, node: object) -> Token[Watch | None] | None:
        # Inside a nested flow, events carry that flow's name in their path.
        if hasattr(node, "start_node"):
            return _watch.set(self._child((*self.path, node_name(node)), node))
        return None

    def run_step(self, node: Any, shared: Any) -> Any:
        """Run one step of a flow's walk (sync), with node_start/end/error events."""
        self.emit("node_start", node)
        started = time.perf_counter()
        token = self._enter(node)
        try:
            action = node._run(shared)
        except Exception as exc:
            self.emit("node_error", node, duration=time.perf_counter() - started, error=exc)
            raise
        finally:
            if token is not None:
                _watch.reset(token)
        self.emit("node_end", node, duration=time.perf_counter() - started, action=_as(action))
        return action

    async def run_step_async(self, node: Any, shared: Any) -> Any:
        """Run one step of a flow's walk (async), with node_start/end/error events."""
        self.emit("node_start", node)
        started = time.perf_counter()
        token = self._enter(node)
        try:
            action = await node._run_async(shared)
        except Exception as exc:
            self.emit("node_error", node, duration=time.perf_counter() - started, error=exc)
            raise
        finally:
            if token is not None:
                _watch.reset(token)
        self.emit("node_end", node, duration=time.perf_counter() - started, action=_as(action))
        return action

    def step_failed(self, node: object, started: float, exc: BaseException) -> None:
        """The ``node_error`` of a step the walk ran without step events."""
        self.emit("node_error", node, duration=time.perf_counter() - started, error=exc)

    def items(self, node: object, branches: Sequence[str] | None = None) -> ItemEvents:
        """Events for the items of ``node``'s batch (a batch node's, or a batch flow's runs);
        ``branches`` names the items when they are the branches of a Parallel node."""
        return ItemEvents(self, node, branches)


class ItemEvents:
    """item_start / item_end / item_error for one batch. The runs of a batch *flow* see the
    item index in their path (``orders[3]/bake``), so concurrent runs stay apart."""

    __slots__ = ("branches", "node", "watch")

    def __init__(self, watch: Watch, node: object, branches: Sequence[str] | None = None) -> None:
        self.watch, self.node, self.branches = watch, node, branches

    def _branch(self, index: int) -> str | None:
        return None if self.branches is None else self.branches[index]

    def start(self, index: int) -> Token[Any]:
        watch = self.watch
        watch.emit("item_start", self.node, item=index, branch=self._branch(index))
        if self.node is not watch.owner or not hasattr(self.node, "start_node"):
            # An item of a batch node: the retries of its attempts report its index.
            return _item.set(index)
        # The runs of a batch *flow* get their index into the path of their steps' events.
        path = (*watch.path[:-1], f"{node_name(self.node)}[{index}]")
        return _watch.set(watch._child(path, self.node, index))

    def end(self, index: int, token: Token[Any] | None, error: BaseException | None = None) -> None:
        if token is not None:
            token.var.reset(token)
        branch = self._branch(index)
        if error is None:
            self.watch.emit("item_end", self.node, item=index, branch=branch)
        else:
            self.watch.emit("item_error", self.node, item=index, error=error, branch=branch)


def _as(action: Any) -> str | None:
    return action if action is None or isinstance(action, str) else repr(action)


@contextmanager
def observing(on_event: Observer | Sequence[Observer] | None, root: object) -> Iterator[None]:
    """Deliver the events of the run inside this block to ``on_event`` (no-op for None)."""
    global _active
    if on_event is None:
        yield
        return
    observers = tuple(on_event) if isinstance(on_event, Sequence) else (on_event,)
    for observer in observers:
        if not callable(observer):
            raise TypeError(
                f"on_event: observers must be callables taking an Event, got {observer!r}"
            )
    path = (node_name(root),) if hasattr(root, "start_node") else ()
    watch = Watch(observers, path, root)
    token, no_item = _watch.set(watch), _item.set(None)
    _active += 1
    started = time.perf_counter()
    try:
        watch.emit("run_start", root)
        yield
    except BaseException as exc:
        watch.emit("run_end", root, duration=time.perf_counter() - started, error=exc)
        raise
    else:
        watch.emit("run_end", root, duration=time.perf_counter() - started)
    finally:
        _active -= 1
        _watch.reset(token)
        _item.reset(no_item)

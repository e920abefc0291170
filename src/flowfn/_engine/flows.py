"""The flow classes: walking from node to node by action, once or once per param set.

A flow is itself a node, so flows nest. Each step runs a *copy* of the node with the
flow's params set on it, so concurrent runs of one flow never see each other's params.
Every flow runs sync nodes and async nodes alike: ``Flow.run`` starts an event loop when
its graph holds an async node, and ``await flow.run_async(shared)`` runs it in yours.
"""

from __future__ import annotations

import difflib
import functools
import threading
import time
import warnings
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import CoroutineType, EllipsisType
from typing import Any, cast

import anyio
from anyio.lowlevel import checkpoint

from . import events, hooks
from .checkpoints import YIELD_MASK, cancelled_flag, stray_cancellation
from .errors import FlowEndsWarning, FlowError, add_note, node_name, warn_at_caller
from .hooks import PauseRequest
from .local import enter_local, leave_local
from .nodes import ASYNC, SYNC, AsyncNode, BaseNode, S, _observe_failure
from .pool import (
    DEFAULT_LIMIT,
    Errors,
    check_errors,
    check_limit,
    each,
    each_sync,
    map_ordered,
)
from .retry import check_policy

__all__ = [
    "AsyncBatchFlow",
    "AsyncFlow",
    "AsyncParallelBatchFlow",
    "BatchFlow",
    "Flow",
]


_visiting = threading.local()


def _copy(node: BaseNode | None) -> BaseNode | None:
    return None if node is None else node._step_copy()


class Flow(BaseNode[S]):
    """Runs ``start_node``, then the successor for each action returned, until there is none.

    The flow's own ``prep`` runs first and its ``post(shared, prep_res, last_action)`` last;
    by default a flow returns the last action. An exception from a node reaches the caller
    unchanged, with a note naming the node and the flow.
    """

    #: Whether a node's action with no successor is an error (``FlowError``) instead of a
    #: :class:`~flowfn.FlowEndsWarning`. Set it with ``Flow(start, strict=True)``.
    strict: bool = False
    # flowfn.compat's flows say what PocketFlow says, in its words: see _ends_without_successor.
    _pocketflow_compatible = False

    def __init__(
        self, start: BaseNode | None = None, *, name: str | None = None, strict: bool = False
    ) -> None:
        super().__init__()
        if start is not None and not isinstance(start, BaseNode):
            raise TypeError(
                f"{type(self).__name__}(start): start must be a node or a flow, "
                f"not {type(start).__name__}"
            )
        if name is not None:
            if not isinstance(name, str) or not name:
                raise TypeError(
                    f"{type(self).__name__}(name=...): a flow's name is a non-empty str "
                    f"(shown in notes, events and pictures), got {name!r}"
                )
            self.name = name
        if strict:
            self.strict = True
        self.start_node = start

    def start(self, start: BaseNode) -> BaseNode:
        """Make ``start`` the first node of the flow; returns it, to chain ``>>`` from it."""
        self.start_node = start
        return start

    def get_next_node(self, curr: BaseNode, action: Any) -> BaseNode | None:
        """The successor of ``curr`` for ``action`` (``None`` meaning ``"default"``), or ``None``.

        When ``curr`` has successors but none for ``action``, the flow ends there with a
        :class:`~flowfn.FlowEndsWarning`, or a :class:`~flowfn.FlowError` if the flow is strict.
        """
        key = action or "default"
        nxt = curr.successors.get(key)
        # An explicit `node - "stop" >> None` ends the flow quietly (PocketFlow warns).
        if not nxt and curr.successors and (key not in curr.successors or nxt is not None):
            self._ends_without_successor(curr, action)
        return nxt

    def _ends_without_successor(self, curr: BaseNode, action: Any) -> None:
        """``curr`` returned ``action`` and has successors, none of them for it."""
        actions = list(curr.successors)
        if self._pocketflow_compatible:
            warnings.warn(f"Flow ends: '{action}' not found in {actions}", stacklevel=3)
            return
        name = node_name(curr)
        said = f"the default action ({action!r})" if not action else repr(action)
        message = (
            f"Flow ends: node {name!r} returned {said} and has no successor for it in flow "
            f"{node_name(self)!r} (its actions: {', '.join(map(repr, actions))})."
        )
        close = difflib.get_close_matches(str(action or "default"), map(str, actions), n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
        wiring = f'{name} - "{action}" >> None' if action else f"{name} >> None"
        if self.strict:
            raise FlowError(
                f"{message} This flow is strict: give the node a successor for that action, "
                f"or end the flow on purpose with `{wiring}`"
            )
        warn_at_caller(
            f"{message} To end the flow there on purpose, write `{wiring}`; "
            f"Flow(..., strict=True) makes this an error.",
            FlowEndsWarning,
            about=curr,
        )

    def _no_start(self) -> FlowError:
        return FlowError(
            f"{node_name(self)} has no start node, so running it would do nothing: pass one "
            f"as {type(self).__name__}(start) or set it with flow.start(node)"
        )

    def _run_result(self, action: Any, scratch: dict[str, Any] | None) -> Any:
        """What one run of the flow contributes to a batch's results: its last action."""
        return action

    def _step_failed(self, exc: BaseException, curr: BaseNode) -> None:
        add_note(exc, f"flowfn: in node {node_name(curr)!r} of flow {node_name(self)!r}")

    def _orch(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        if self.start_node is None and not self._pocketflow_compatible:
            raise self._no_start()
        node, p, last_action = self.start_node, (params or {**self.params}), None
        watch = events.current()
        own_next = type(self).get_next_node is not Flow.get_next_node
        while node:  # PocketFlow's test: a falsy node ends the flow too
            direct = node._direct_sync
            try:
                if direct is not None and watch is None:
                    # A function step that needs no copy nor params: called as it is.
                    curr = node
                    last_action = direct(shared=shared)
                    if last_action is not None and last_action.__class__ is not str:
                        last_action = curr._store(shared, last_action)  # type: ignore[attr-defined]
                else:
                    if node._plain_step:  # BaseNode.__copy__ and set_params, inline
                        curr = node.__class__.__new__(node.__class__)
                        state = node.__dict__.copy()
                        state["params"] = p
                        curr.__dict__ = state
                    else:
                        curr = node._step_copy()
                        curr._step_params(p)
                    last_action = self._sync_step(curr, shared, watch)
            except Exception as exc:
                self._step_failed(exc, node)
                raise
            # The common case inline; get_next_node for overrides and for the warning.
            if own_next:
                nxt = self.get_next_node(curr, last_action)
            elif curr.successors:
                nxt = curr.successors.get(last_action or "default") or self.get_next_node(
                    curr, last_action
                )
            else:
                nxt = None
            node = nxt
        return last_action

    @staticmethod
    def _sync_step(curr: BaseNode, shared: Any, watch: events.Watch | None) -> Any:
        if watch is not None:
            return watch.run_step(curr, shared)
        if (
            curr._inline_phases == SYNC
            and curr.max_retries == 1  # type: ignore[attr-defined]
            and curr.timeout is None  # type: ignore[attr-defined]
            and curr.rate_limit is None  # type: ignore[attr-defined]
        ):
            # Node._run with Node._exec's single attempt, without their frames: a node
            # class that overrides none of them runs its phases here.
            pr = curr.prep(shared)
            curr.cur_retry = 0  # type: ignore[attr-defined]
            try:
                e = curr.exec(pr)
            except PauseRequest:
                raise
            except Exception as exc:
                e = curr._exec_failed(pr, exc)  # type: ignore[attr-defined]
            else:
                if e.__class__ is CoroutineType:
                    curr._refuse_coroutine(e)  # type: ignore[attr-defined]
            return curr.post(shared, pr, e)
        return curr._run(shared)

    async def _orch_async(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        if hooks.active and (journal := hooks.current()) is not None:
            return await self._orch_durable(shared, params, journal)
        return await self._walk(shared, params or {**self.params})

    async def _walk(
        self,
        shared: Any,
        p: dict[str, Any],
        cancelled: Callable[[], bool] | None = None,
        item: bool = False,
    ) -> Any:
        """The walk of a run that is not durable, from the start node to the end.

        ``cancelled``: the flag of the task that awaits the walk directly (a pool's worker
        hands its own), else made here once the walk takes a second step. ``item``: the walk
        is one item of a batch flow, with its own ``local`` scratch dict, and returns what
        :meth:`_run_result` makes of its last action (the pool awaits the walk itself, with
        no frame around it that every resumption would pass through).

        The hottest loop of the engine, and over 80 lines on purpose: every await frame
        between the walk and a step is passed through at each resumption of the step. Its
        inline paths, measured against a call per step (benchmarks/compare.py, CPU time):
        function steps awaited directly 0.50x the time of an async DSL transition, plain
        AsyncNode phases inline 0.91-0.93x of a compat one (through ``_run_async``).
        """
        if self.start_node is None and not self._pocketflow_compatible:
            raise self._no_start()
        token, scratch = enter_local() if item else (None, None)
        watch = events.current()
        # Observers that want no node_start/node_end events: steps run as unobserved ones.
        quiet, started = watch is None or not watch.steps, 0.0
        flow, node, last_action, steps = self, self.start_node, None, 0
        own_next = type(self).get_next_node is not Flow.get_next_node
        # A plain nested Flow is walked here, in this loop, instead of by a walk of its own:
        # the flows entered, innermost last, with the nested flow and what to go back to.
        outer: list[tuple[Flow, BaseNode, dict[str, Any], bool]] | None = None
        try:
            while True:
                if not node:  # PocketFlow's test: a falsy node ends the flow too
                    if not outer:
                        break
                    # The nested flow ended with last_action, which its post returns as is.
                    flow, nested, p, own_next = outer.pop()
                    node = _successor(flow, nested, last_action, own_next)
                    continue
                # No step starts once the flow is cancelled, and a walk that never awaits
                # lets the event loop run now and then. The first step was checked by
                # whoever started the walk (run_async, a batch's pool), so the flag, which
                # costs a little to make, is only made for walks of two steps or more.
                if steps:
                    if cancelled is None:
                        cancelled = cancelled_flag()
                    if cancelled() or not steps & YIELD_MASK:
                        await checkpoint()
                steps += 1
                direct = node._direct
                try:
                    if direct is not None and quiet:
                        # A function step that needs no copy nor params: awaited as it is.
                        curr = node
                        if watch is not None:
                            started = time.perf_counter()
                        last_action = await direct(shared=shared)
                        if last_action is not None and last_action.__class__ is not str:
                            last_action = curr._store(shared, last_action)  # type: ignore[attr-defined]
                    elif node._walked_inline and watch is None and node.start_node is not None:  # type: ignore[attr-defined]
                        if outer is None:
                            outer = []
                        outer.append((flow, node, p, own_next))
                        flow, p, own_next = cast(Flow, node), {**p}, False
                        node = flow.start_node
                        continue
                    else:
                        if node._plain_step:  # BaseNode.__copy__ and set_params, inline
                            curr = node.__class__.__new__(node.__class__)
                            state = node.__dict__.copy()
                            state["params"] = p
                            curr.__dict__ = state
                        else:
                            curr = node._step_copy()
                            curr._step_params(p)
                        if watch is not None:
                            last_action = await watch.run_step_async(curr, shared)
                        elif (
                            curr._inline_phases == ASYNC
                            and curr.max_retries == 1  # type: ignore[attr-defined]
                            and curr.timeout is None  # type: ignore[attr-defined]
                            and curr.rate_limit is None  # type: ignore[attr-defined]
                            and curr.limiter is None  # type: ignore[attr-defined]
                        ):
                            # AsyncNode._run_async with one plain attempt of _exec, inline.
                            pr = await curr.prep_async(shared)  # type: ignore[attr-defined]
                            curr.cur_retry = 0  # type: ignore[attr-defined]
                            try:
                                e = await curr.exec_async(pr)  # type: ignore[attr-defined]
                            except PauseRequest:
                                raise
                            except Exception as exc:
                                e = await curr._exec_failed_async(pr, exc)  # type: ignore[attr-defined]
                            last_action = await curr.post_async(shared, pr, e)  # type: ignore[attr-defined]
                        else:
                            last_action = await curr._run_async(shared)
                except Exception as exc:
                    if watch is not None and quiet and direct is not None:
                        watch.step_failed(node, started, exc)
                    _failed_in(exc, flow, cast(BaseNode, node), outer)
                    raise
                except BaseException as exc:
                    stray = stray_cancellation(exc, f"node {node_name(node)!r}")
                    if stray is None:
                        raise
                    _failed_in(stray, flow, cast(BaseNode, node), outer)
                    raise stray from exc
                # _successor, inline: the walk is the hottest loop there is.
                if own_next:
                    node = flow.get_next_node(curr, last_action)
                elif curr.successors:
                    node = curr.successors.get(last_action or "default") or flow.get_next_node(
                        curr, last_action
                    )
                else:
                    node = None
        finally:
            if token is not None:
                leave_local(token)
        return self._run_result(last_action, scratch) if item else last_action

    async def _orch_durable(
        self, shared: Any, params: dict[str, Any] | None, journal: hooks.RunHooks
    ) -> Any:
        """The walk of a durable run: each finished step is recorded; on resume, the walk
        starts after the last recorded step (or back in the step it was inside)."""
        if self.start_node is None and not self._pocketflow_compatible:
            raise self._no_start()
        p, last_action, steps = (params or {**self.params}), None, 0
        base, base_nodes = hooks.where.get()
        graph = journal.graph(self.start_node)
        node: BaseNode | None = self.start_node
        resume = journal.resume_at(base)
        if resume is not None:
            steps, index, finished, last_action = resume
            node = graph.nodes[index]
            watch = events.current()
            if watch is not None:  # the steps before this place are done: said once
                watch.emit("step_skipped", node, action=last_action if finished else None)
            if finished:  # that step is done: go on from its successor
                steps += 1
                node = self.get_next_node(node, last_action)
        while node:
            if steps:
                await checkpoint()
            curr = node._step_copy()
            curr._step_params(p)
            position, nodes = (*base, steps), (*base_nodes, graph.index[id(node)])
            journal.names[position] = node_name(curr)
            token = hooks.where.set((position, nodes))
            watch = events.current()
            try:
                last_action = await (
                    curr._run_async(shared) if watch is None else watch.run_step_async(curr, shared)
                )
            except Exception as exc:
                self._step_failed(exc, curr)
                raise
            except BaseException as exc:
                stray = stray_cancellation(exc, f"node {node_name(curr)!r}")
                if stray is None:
                    raise
                self._step_failed(stray, curr)
                raise stray from exc
            finally:
                hooks.where.reset(token)
            ticket = journal.step_done(position, nodes, curr, last_action, shared)
            if journal.sync:  # the step counts as finished once its record is on disk
                await journal.until_committed(ticket)
            steps += 1
            node = self.get_next_node(curr, last_action)
        return last_action

    def _run(self, shared: Any) -> Any:
        p = self.prep(shared)
        o = self._orch(shared)
        return self.post(shared, p, o)

    async def _run_async(self, shared: Any) -> Any:
        if self._overrides_sync_hooks(Flow):
            # Its own walk knows nothing of a durable run: it is recorded as one step.
            with hooks.detached():
                return self._run(shared)
        p = self.prep(shared)
        o = await self._orch_async(shared)
        return self.post(shared, p, o)

    def _overrides_sync_hooks(self, base: type[Flow]) -> bool:
        """A sync flow whose subclass overrides ``_run`` or ``_orch`` (PocketFlow hooks) runs
        through them, as PocketFlow does, when nothing in it needs the event loop."""
        cls = type(self)
        return (cls._run is not base._run or cls._orch is not base._orch) and not self._needs_loop()

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Returns ``exec_res``, the last action of the walk, as the flow's own action."""
        return exec_res

    def _needs_loop(self) -> bool:
        visiting = _visiting.__dict__.setdefault("ids", set())
        if id(self) in visiting:  # a flow that contains itself: already being looked at
            return False
        visiting.add(id(self))
        try:
            return self._graph_needs_loop()
        finally:
            visiting.discard(id(self))

    def _graph_needs_loop(self) -> bool:
        seen: set[int] = set()
        todo: list[BaseNode | None] = [self.start_node]
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node._needs_loop():
                return True
            todo.extend(node.successors.values())
        return False

    def __repr__(self) -> str:
        start = None if self.start_node is None else node_name(self.start_node)
        return f"{super().__repr__()[:-1]} start={start!r}>"

    def to_mermaid(self) -> str:
        """This flow's graph as Mermaid ``flowchart TD`` text: nodes, actions, nested flows.

        Paste it into a Markdown ```` ```mermaid ```` block; see docs/pictures.md.
        """
        return hooks.to_mermaid(self)

    def to_dot(self) -> str:
        """This flow's graph as Graphviz DOT text, for ``dot -Tpng -o flow.png``."""
        return hooks.to_dot(self)

    def to_ir(self, *, nodes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """This flow as a workflow document (docs/ir.md): ``from_ir(doc, nodes=...)`` runs as it.

        A node's ``type`` is its name in ``nodes``, else its function's ``__name__``. What a
        document cannot hold (``items=`` or ``merge=`` as functions, a ``limiter=``, an
        executor) is refused with a :class:`~flowfn.FlowError` naming the node.
        """
        return hooks.to_ir(self, nodes=nodes)


def _successor(flow: Flow, curr: BaseNode, action: Any, own_next: bool) -> BaseNode | None:
    """The node after ``curr`` in ``flow`` for ``action``: looked up only where there is
    something to look up (a node without successors ends the walk without a warning)."""
    if own_next:
        return flow.get_next_node(curr, action)
    if not curr.successors:
        return None
    nxt = curr.successors.get(action or "default")
    return nxt if nxt else flow.get_next_node(curr, action)


def _failed_in(
    exc: BaseException,
    flow: Flow,
    node: BaseNode,
    outer: list[tuple[Flow, BaseNode, dict[str, Any], bool]] | None,
) -> None:
    """Notes on a step's exception: its node and flow, then each flow around that one."""
    flow._step_failed(exc, node)
    for around, nested, _, _ in reversed(outer or ()):
        around._step_failed(exc, nested)


class BatchFlow(Flow[S]):
    """Runs the whole flow once per param dict that ``prep`` returns, one after another.

    Each run sees the params ``{**flow.params, **item}``; ``post`` gets ``exec_res=None``.
    A run that raises is run again from its start (with a fresh ``local`` dict) until
    ``max_retries`` runs in all have failed, ``wait`` seconds apart; then
    ``run_fallback(params, exc)`` decides (by default the exception propagates).
    """

    #: Runs of the sub-flow per param dict in all: the first and the retries.
    max_retries: int = 1
    #: Seconds between a failed run and the next.
    wait: float = 0

    def __init__(
        self,
        start: BaseNode | None = None,
        *,
        max_retries: int = 1,
        wait: float = 0,
        name: str | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(start, name=name, strict=strict)
        if max_retries != 1 or wait != 0:
            owner = node_name(self)
            if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 1:
                raise ValueError(
                    f"{owner}: max_retries is the number of runs per param dict in all and "
                    f"must be an int >= 1, got {max_retries!r}"
                )
            check_policy(
                owner, wait=wait, backoff=1.0, max_wait=None, jitter=0.0, timeout=None,
                per_second=None,
            )  # fmt: skip
            self.max_retries, self.wait = max_retries, wait

    def run_fallback(self, params: dict[str, Any], exc: Exception) -> Any:
        """After the last failed run for ``params``: its return value stands for the run's
        result (by default ``exc`` propagates)."""
        raise exc

    async def run_fallback_async(self, params: dict[str, Any], exc: Exception) -> Any:
        """The async ``run_fallback``; by default it calls ``run_fallback``."""
        return self.run_fallback(params, exc)

    def _retrying(self) -> bool:
        cls = type(self)
        return (
            self.max_retries > 1
            or cls.run_fallback is not BatchFlow.run_fallback
            or cls.run_fallback_async is not BatchFlow.run_fallback_async
        )

    async def _fallback_run(self, shared: Any, bp: Any, exc: Exception) -> Any:
        return await self.run_fallback_async(bp, exc)

    def _fallback_run_sync(self, shared: Any, bp: Any, exc: Exception) -> Any:
        return self.run_fallback(bp, exc)

    def _merge(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, Mapping) and not hasattr(item, "keys"):
            raise TypeError(
                f"{node_name(self)}: a batch flow's prep must return an iterable of param "
                f"dicts, got an item of type {type(item).__name__}: {item!r:.80}"
            )
        return {**self.params, **item}

    def _batches(self, pr: Any, *, pull_async: bool = False) -> Iterable[Any]:
        if pr is None or isinstance(pr, (list, tuple)):
            return pr or ()
        if isinstance(pr, AsyncIterable):
            if pull_async:  # pulled lazily, as a parallel batch pulls its items
                return pr  # type: ignore[return-value]
            raise TypeError(
                f"{node_name(self)}: prep returned an async iterable of param dicts, which a "
                f"sync batch flow cannot pull; use AsyncBatchFlow or AsyncParallelBatchFlow "
                f"(or @batch(flow=...) in a flow run with run_async)"
            )
        try:
            iter(pr)
        except TypeError:
            raise TypeError(
                f"{node_name(self)}: a batch flow's prep must return an iterable of param "
                f"dicts (or None), got {type(pr).__name__} {pr!r:.80}"
            ) from None
        return pr  # type: ignore[no-any-return]

    def _run(self, shared: Any) -> Any:
        pr = self.prep(shared) or []
        self._orch_each_sync(shared, pr)
        return self.post(shared, pr, None)

    def _orch_each_sync(self, shared: Any, pr: Any) -> list[Any]:
        def run_once(bp: Any) -> Any:
            token, scratch = enter_local()
            try:
                return self._run_result(self._orch(shared, self._merge(bp)), scratch)
            finally:
                leave_local(token)

        def run_one(bp: Any) -> Any:
            if not self._retrying():
                return run_once(bp)
            written = None  # what the failed attempts' into= nodes wrote: theirs to replace
            for attempt in range(self.max_retries):
                token, scratch = enter_local(written)
                try:
                    return self._run_result(self._orch(shared, self._merge(bp)), scratch)
                except PauseRequest:
                    raise
                except Exception as exc:
                    written = getattr(scratch, "written", written)
                    _observe_failure(self, attempt, exc)  # type: ignore[arg-type]
                    if attempt == self.max_retries - 1:
                        return self._fallback_run_sync(shared, bp, exc)
                    time.sleep(self.wait)
                finally:
                    leave_local(token)
            return None  # unreachable: max_retries >= 1

        where = f"batch flow {node_name(self)!r}"
        return each_sync(run_one, self._batches(pr), where=where, node=self)

    async def _run_async(self, shared: Any) -> Any:
        if self._overrides_sync_hooks(BatchFlow):
            with hooks.detached():
                return self._run(shared)
        pr = self.prep(shared) or []
        await self._orch_each(shared, pr)
        return self.post(shared, pr, None)

    async def _run_one_async(self, shared: Any, bp: Any) -> Any:
        """One run of the flow for param dict ``bp``, with its own ``local`` scratch dict
        (and again, from its start with a fresh one, after a failure, if it retries)."""
        if self._retrying():
            return await self._run_retrying(shared, bp)
        token, scratch = enter_local()
        try:
            return self._run_result(await self._orch_async(shared, self._merge(bp)), scratch)
        finally:
            leave_local(token)

    async def _run_retrying(self, shared: Any, bp: Any) -> Any:
        written = None  # what the failed attempts' into= nodes wrote: theirs to replace
        for attempt in range(self.max_retries):
            token, scratch = enter_local(written)
            try:
                return self._run_result(await self._orch_async(shared, self._merge(bp)), scratch)
            except PauseRequest:
                raise  # waiting for input is no failure to retry
            except Exception as exc:
                written = getattr(scratch, "written", written)
                _observe_failure(self, attempt, exc)  # type: ignore[arg-type]
                if attempt == self.max_retries - 1:
                    return await self._fallback_run(shared, bp, exc)
                # Between runs: a checkpoint, so that a cancelled batch retries no more.
                await (anyio.sleep(self.wait) if self.wait > 0 else checkpoint())
            finally:
                leave_local(token)
        return None  # unreachable: max_retries >= 1

    async def _orch_each(self, shared: Any, pr: Any) -> list[Any]:
        run_one = functools.partial(self._run_one_async, shared)
        where = f"batch flow {node_name(self)!r}"
        return await each(run_one, self._batches(pr, pull_async=True), where=where, node=self)

    async def _orch_parallel(
        self, shared: Any, pr: Any, limit: int | None, errors: Errors = "fail_fast"
    ) -> list[Any]:
        """Run the flow once per param dict, at most ``limit`` at once; every run's result
        in item order (with ``errors="collect"``, a :class:`BatchResults` with failed runs'
        exceptions in place)."""
        name = node_name(self)
        run_one = functools.partial(self._run_one_async, shared)
        walk = None
        if not self._retrying() and (self.start_node is not None or self._pocketflow_compatible):
            # Each worker of the pool awaits the walk itself, with its own cancellation flag
            # (made once per worker, not once per item): see _walk.
            def walk(cancelled: Callable[[], bool]) -> Callable[[Any], Awaitable[Any]]:
                steps, merge = self._walk, self._merge
                return lambda bp: steps(shared, merge(bp), cancelled, True)

        return await map_ordered(
            run_one,
            self._batches(pr, pull_async=True),
            limit=limit,
            where=f"parallel batch flow {name!r}",
            errors=errors,
            node=self,
            walk=walk,
        )


class AsyncFlow(Flow[S], AsyncNode[S]):
    """A flow with async ``prep_async``/``post_async``; by default it returns the last action."""

    async def _run_async(self, shared: Any) -> Any:
        p = await self.prep_async(shared)
        o = await self._orch_async(shared)
        return await self.post_async(shared, p, o)

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Returns ``exec_res``, the last action of the walk, as the flow's own action."""
        return exec_res

    def _needs_loop(self) -> bool:
        return True


class AsyncBatchFlow(AsyncFlow[S], BatchFlow[S]):
    """Runs the flow once per param dict from ``prep_async``, one after another."""

    async def _run_async(self, shared: Any) -> Any:
        pr = await self.prep_async(shared) or []
        await self._orch_each(shared, pr)
        return await self.post_async(shared, pr, None)


class AsyncParallelBatchFlow(AsyncFlow[S], BatchFlow[S]):
    """Runs the flow once per param dict from ``prep_async``, at most ``limit`` at once.

    All runs share the one ``shared`` store (as in PocketFlow): write to keys that are unique
    per item, or collect per-item results in ``post_async``. If a run raises, the others are
    cancelled and the exception reaches the caller with a note naming the flow and the item.
    """

    limit: int | None = DEFAULT_LIMIT
    #: "fail_fast" (default), or "collect": every run goes on and ``post_async`` gets a
    #: :class:`BatchResults` (each run's last action, or its exception) as ``exec_res``.
    errors: Errors = "fail_fast"

    def __init__(
        self,
        start: BaseNode | None = None,
        *,
        limit: int | EllipsisType | None = ...,
        errors: Errors | EllipsisType = ...,
        max_retries: int = 1,
        wait: float = 0,
        name: str | None = None,
    ) -> None:
        super().__init__(start, max_retries=max_retries, wait=wait, name=name)
        if not isinstance(limit, EllipsisType):
            self.limit = check_limit(limit, type(self).__name__)
        if not isinstance(errors, EllipsisType):
            self.errors = check_errors(errors, type(self).__name__)

    async def _run_async(self, shared: Any) -> Any:
        pr = await self.prep_async(shared) or []
        results = await self._orch_parallel(shared, pr, self.limit, self.errors)
        # PocketFlow's post gets None; with errors="collect", what each run did.
        return await self.post_async(shared, pr, results if self.errors == "collect" else None)


# Nested flows whose walk the flow around them takes over (their prep and post do nothing);
# their subclasses are not (BaseNode.__init_subclass__ sets the flag back to False).
Flow._walked_inline = AsyncFlow._walked_inline = True
